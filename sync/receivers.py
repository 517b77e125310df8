"""sync's answers to what accounts' services say happened to a mailbox
(accounts/signals.py): accounts is below sync and cannot queue its downloads itself; and
to what crm says of its contacts (crm/signals.py)."""

from .services import (
    contacts_link_soon,
    download_forget,
    download_queue,
    mailbox_attention_clear,
)


def signed_in_again(sender, *, account_id: int, **kwargs) -> None:
    """A new password or a reconnect works: a mailbox stopped for its sign-in may be
    queued again, and its download starts now."""
    mailbox_attention_clear(account_id=account_id)
    download_queue(account_id=account_id)


def download_wanted(sender, *, account_id: int, items_only: bool = False, **kwargs) -> None:
    download_queue(account_id=account_id, items_only=items_only)


def protocol_changed(sender, *, account_id: int, **kwargs) -> None:
    download_forget(account_id=account_id)


def contacts_addressed(sender, *, contact_ids: list[int], **kwargs) -> None:
    """crm.signals: contacts got addresses after their emails were downloaded."""
    contacts_link_soon(contact_ids=contact_ids)
