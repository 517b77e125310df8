"""What the push listener (issue 18, app `push/`) knows, as this app reads it: the points
where health asks push (push.selectors), and nothing else in this app knows about the
listener."""

from django.conf import settings

from push.selectors import watch_counts, watch_notes, watches_down


def enabled() -> bool:
    """Whether this deployment runs the listener (PUSH_ENABLED): while it does not, no
    mailbox reads disconnected, and the page says push is off."""
    return settings.PUSH_ENABLED


def disconnected(account_ids: list[int]) -> dict[int, str]:
    """{mailbox id: why its listener is not watching it} for the mailboxes among
    `account_ids` that should be watched and are not (one with no listener at all
    included). One query, whatever the number of mailboxes (the page and the metrics
    pass them all)."""
    return watches_down(account_ids)


def on_interval(account_ids: list[int]) -> dict[int, str]:
    """{mailbox id: why} for the mailboxes whose server cannot be watched: healthy, but
    new mail comes at the download interval only. One query."""
    return {pk: note.cause for pk, note in watch_notes(account_ids).items() if not note.down}


def connection_counts() -> dict[str, int]:
    """{connection state: how many listener connections are in it}."""
    return watch_counts()
