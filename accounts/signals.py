"""What accounts tells the apps above it, which it must not import.

`mailbox_deleting(sender=EmailAccount, account=...)`: sent by account_remove inside its
transaction, just before a mailbox is deleted with its emails (not when its emails are
kept). The rows are still there: a receiver reads what it owns of the mailbox (sync: the
attachment and original files its rows name) and arranges its own clean-up, for after
the commit (transaction.on_commit), so a removal that rolls back loses nothing.
"""

from django.dispatch import Signal

mailbox_deleting = Signal()
