"""What the push listener (issue 18, app `push/`) knows, as this app reads it.

THE TWO WIRING POINTS FOR THE LISTENER. Until `push` is merged they report nothing: no
mailbox reads "disconnected listener" and the connections metric has no samples. At the
merge each becomes one call:

- `disconnected(account_ids)` -> from `push.selectors.watch_states(account_ids)`: the
  mailboxes whose watch is down, each with its cause as a person should read it.
- `connection_counts()` -> `push.selectors.watch_counts()`: listener connections by state.

Nothing else in this app knows about the listener.
"""


def disconnected(account_ids: list[int]) -> dict[int, str]:
    """{mailbox id: why its listener is not watching it} for the mailboxes among
    `account_ids` that should be watched and are not. One query at most, whatever the
    number of mailboxes (the page and the metrics pass them all)."""
    # WIRE AT MERGE: push.selectors.watch_states(account_ids), keeping the watched-but-down
    # states and their causes.
    return {}


def connection_counts() -> dict[str, int]:
    """{connection state: how many listener connections are in it}."""
    # WIRE AT MERGE: return dict(push.selectors.watch_counts())
    return {}
