"""What a change to a mailbox asks of the apps above accounts.

accounts is the bottom layer of the mailbox apps (sync, sending and sharing import its
models), so it cannot queue their work itself: its services say what happened, and
sync receives it (sync/receivers.py, connected in sync's AppConfig.ready) and queues
the download once the transaction commits.
"""

from django.dispatch import Signal

# The mailbox signs in again (a new password, or "Reconnect"): what stopped for its
# sign-in may go on, now. Sent with `account_id` once the new sign-in is saved.
signed_in_again = Signal()

# The mailbox's emails (or, with `items_only`, its Exchange meetings, tasks and
# contacts) are wanted now rather than at the next scheduled run. Sent with
# `account_id` and `items_only`.
download_wanted = Signal()
