import time
from datetime import timedelta

from .definitions import (
    ALLOW_INTERNAL_MAIL_SERVERS,
    CREATE_CONTACTS_FOR_UNKNOWN_SENDERS,
    MAILBOX_SYNC_INTERVAL,
    MAX_MESSAGE_PARTS,
    MAX_MESSAGE_SIZE,
    MAX_MIME_DEPTH,
    Definition,
)
from .models import SystemSetting

# Settings are read on every sync run and sign-in, and change rarely: each process keeps
# what it read for a few seconds. A save in this process clears it at once (see
# apps.py); other processes see a change within CACHE_SECONDS.
CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, int | bool | str]] = {}


def cache_clear() -> None:
    _cache.clear()


def setting_value(definition: Definition) -> int | bool | str:
    """The admin's value, or the default while no row exists.

    A malformed stored value raises ValidationError rather than silently falling back:
    an admin would otherwise never learn that their setting is ignored.
    """
    now = time.monotonic()
    cached = _cache.get(definition.code)
    if cached is not None and cached[0] > now:
        return cached[1]
    row = SystemSetting.objects.filter(code=definition.code).first()
    value = definition.default if row is None else row.typed_value()
    _cache[definition.code] = (now + CACHE_SECONDS, value)
    return value


def mailbox_sync_interval() -> timedelta:
    return timedelta(minutes=int(setting_value(MAILBOX_SYNC_INTERVAL)))


def internal_mail_servers_allowed() -> bool:
    return bool(setting_value(ALLOW_INTERNAL_MAIL_SERVERS))


def create_contacts_for_unknown_senders() -> bool:
    return bool(setting_value(CREATE_CONTACTS_FOR_UNKNOWN_SENDERS))


def message_size_limit() -> int:
    """In bytes: above it an email's attachments are listed, not downloaded."""
    return int(setting_value(MAX_MESSAGE_SIZE)) * 1_000_000


def message_parts_limit() -> int:
    return int(setting_value(MAX_MESSAGE_PARTS))


def message_depth_limit() -> int:
    return int(setting_value(MAX_MIME_DEPTH))
