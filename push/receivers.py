"""push's answers to what accounts' services say happened to a mailbox
(accounts/signals.py)."""

from django.db.models.functions import Now

from .models import MailboxWatch


def protocol_changed(sender, *, account_id: int, **kwargs) -> None:
    """The mailbox is read through another protocol now: the listener holding its watch
    loses the lease (its next renewal finds it gone and closes the old connection), and
    a listener claims it afresh with the new protocol's watcher, or finds it cannot be
    watched."""
    MailboxWatch.objects.filter(account_id=account_id).update(
        holder="", lease_expires_at=None, state=MailboxWatch.State.STOPPED, state_since=Now(),
        error="", error_kind="",
    )  # fmt: skip
