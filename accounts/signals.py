"""What accounts tells the apps above it, which it must not import.

accounts is the bottom layer of the mailbox apps (sync, sending and sharing import its
models), so it cannot do their work itself: its services say what happened, and sync
receives it (connected in sync's AppConfig.ready).
"""

from django.dispatch import Signal

# `mailbox_deleting(sender=EmailAccount, account=...)`: sent by account_remove inside its
# transaction, just before a mailbox is deleted with its emails (not when its emails are
# kept). The rows are still there: a receiver reads what it owns of the mailbox (sync: the
# attachment and original files its rows name) and arranges its own clean-up, for after
# the commit (transaction.on_commit), so a removal that rolls back loses nothing.
mailbox_deleting = Signal()

# The mailbox signs in again (a new password, or "Reconnect"): what stopped for its
# sign-in may go on, now. Sent with `account_id` once the new sign-in is saved; sync
# (sync/receivers.py) lets its download go on and queues it once the transaction commits.
signed_in_again = Signal()

# The mailbox's emails (or, with `items_only`, its Exchange meetings, tasks and
# contacts) are wanted now rather than at the next scheduled run. Sent with
# `account_id` and `items_only`; sync queues the download on commit.
download_wanted = Signal()

# The mailbox moved to another provider card that signs in to the same account with
# another protocol (Exchange to Microsoft Graph, IMAP to Graph): where its emails sit on
# the server is known afresh by the new protocol. Sent with `account_id` inside the
# transaction that moves it; sync forgets its folders' download state and locations
# (the emails stay, found again by their Message-ID).
protocol_changed = Signal()
