"""What the push listener (issue 18, app `push/`) knows, as this app reads it: the two
points where health asks push (push.selectors), and nothing else in this app knows about
the listener."""

from push.selectors import watch_counts, watches_down


def disconnected(account_ids: list[int]) -> dict[int, str]:
    """{mailbox id: why its listener is not watching it} for the mailboxes among
    `account_ids` that should be watched and are not. One query, whatever the number of
    mailboxes (the page and the metrics pass them all)."""
    return watches_down(account_ids)


def connection_counts() -> dict[str, int]:
    """{connection state: how many listener connections are in it}."""
    return watch_counts()
