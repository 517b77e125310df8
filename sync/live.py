"""New emails on an open page without a reload (issue 18, point 5).

A page that lists emails (the Email page, a contact's or a company's timeline) or shows a
mailbox's status (its settings page) holds a small poller (`{% new_emails_poller %}`,
sharing/templatetags/live.py) carrying a `PollState`, and which list it watches. Every
few seconds htmx asks `new_emails` (a page: sync/views.py) with that state. What the
list shows, and from which mailboxes, is the page's own rule, from sharing.selectors
(`emails_for_poller`); everything here is read from those mailboxes only:

- `after`: the newest email id among the mailboxes the user may see there (never one of
  anyone else's mailboxes: the answer and the id would tell when and how much mail
  arrives in mailboxes the user may not see).
- `mark`: the sum of the ids of the emails the list shows that are newer than `after`
  less `LOOK_BACK`. Ids are handed out when a batch is inserted and become visible when
  it commits: with several workers, a batch with lower ids may commit after another
  mailbox's higher ones, behind `after`. It still lands in the look-back window and
  changes the sum, so it is seen at the next question.

Each question: the state again (one query for the newest id, through each mailbox's
(account, id) index entry; one for the sum, over the window's index entries only).
Unchanged: 204, and htmx leaves the page alone; the cost is the same with ten emails or
ten million. The newest id moved: the poller comes back with the new state. The sum of
the old window changed (the list has an email it did not show): the response triggers
`new-emails` too; the list reloads itself through its own view (its keyset query), and
so do the mailboxes' statuses. Reloading rather than inserting rows keeps the list in
date order (a new email may be older than those shown), and its count.
"""

from dataclasses import dataclass

from django.db import connection
from django.db.models import QuerySet, Sum

from accounts.models import EmailAccount

from .models import Email

# Seconds between two questions of an open page.
POLL_SECONDS = 3
# How far behind the newest id a late commit is still caught, in ids. A batch holds at
# most sync.engine.BATCH (200) emails; this covers 25 batches of other mailboxes that
# commit while one stays open. The window's cost is its rows of the user's mailboxes.
LOOK_BACK = 5_000


@dataclass(frozen=True)
class PollState:
    after: int
    mark: int


def newest_email_id(mailboxes: list[int]) -> int:
    """The newest email id among `mailboxes`: each one's last (account, id) index entry,
    the largest of them; one query, whatever the number of emails."""
    if not mailboxes:
        return 0
    # Ordered by (account, id), and the mailbox as a range of one: with `account = X`
    # PostgreSQL drops the constant from the order and may walk the primary key
    # backwards until it meets one of the mailbox's emails (it guesses they are spread
    # evenly; a quiet mailbox's newest email may be millions of rows back). This order
    # only the (account, id) index gives: its last entry for the mailbox, always.
    # Written as SQL: every poller and every poll asks it, and the ORM took 0.9 ms of
    # CPU to build the query against 0.1 ms to run it (B6, at 300,000 emails).
    ids = [int(pk) for pk in mailboxes]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT MAX((SELECT e.id FROM {Email._meta.db_table} e"  # noqa: S608 - our tables, ints
            " WHERE e.account_id >= a.id AND e.account_id <= a.id"
            " ORDER BY e.account_id DESC, e.id DESC LIMIT 1))"
            f" FROM {EmailAccount._meta.db_table} a"
            f" WHERE a.id IN ({', '.join(['%s'] * len(ids))})",
            ids,
        )  # fmt: skip
        return cursor.fetchone()[0] or 0


def window_mark(shown: QuerySet[Email], mailboxes: list[int], after: int) -> int:
    """The sum of the ids of the shown emails newer than `after` - LOOK_BACK: a range of
    the mailboxes' (account, id) index, not the emails before it."""
    if not mailboxes:
        return 0
    window = shown.filter(account__in=mailboxes, pk__gt=after - LOOK_BACK).order_by()
    return window.aggregate(mark=Sum("pk"))["mark"] or 0


def poll_state(shown: QuerySet[Email], mailboxes: list[int]) -> PollState:
    after = newest_email_id(mailboxes)
    return PollState(after, window_mark(shown, mailboxes, after))
