from datetime import timedelta

from .definitions import (
    ALLOW_INTERNAL_MAIL_SERVERS,
    CREATE_CONTACTS_FOR_UNKNOWN_SENDERS,
    MAILBOX_SYNC_INTERVAL,
    Definition,
)
from .models import SystemSetting


def setting_value(definition: Definition) -> int | bool | str:
    """The admin's value, or the default while no row exists.

    A malformed stored value raises ValidationError rather than silently falling back:
    an admin would otherwise never learn that their setting is ignored.
    """
    row = SystemSetting.objects.filter(code=definition.code).first()
    if row is None:
        return definition.default
    return row.typed_value()


def mailbox_sync_interval() -> timedelta:
    return timedelta(minutes=int(setting_value(MAILBOX_SYNC_INTERVAL)))


def internal_mail_servers_allowed() -> bool:
    return bool(setting_value(ALLOW_INTERNAL_MAIL_SERVERS))


def create_contacts_for_unknown_senders() -> bool:
    return bool(setting_value(CREATE_CONTACTS_FOR_UNKNOWN_SENDERS))
