"""Every mailbox's health for an operator: the "Mailbox health" page and /metrics.

The classification is sync's own (`sync.selectors.mailbox_health`), fed in bulk: the
mailboxes with their sync rows in one query, the problems of all of them in four
(`problem_lines_for`), the heartbeat and the interval once. So the number of queries does
not depend on the number of mailboxes, and the work done in Python is one pass over them
(hundreds or thousands of rows, not their emails). Filtering and sorting by state and lag
happen on that pass; only the shown page reads its folders' counts.
"""

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from accounts.models import EmailAccount
from mail.errors import PROVIDER_KINDS
from sync.engine import folders_to_sync
from sync.models import EmailLocation, Folder, MailboxSync
from sync.selectors import (
    Health,
    mailboxes_health,
)

from . import listener

# The page's states, most urgent first (the "state" sort follows this order). Each but
# "ok" names its cause and what to do on the page.
STATES = {
    "needs_owner": "Needs the owner",
    "failing": "Failing",
    "stuck": "Stuck",
    "blocked_folder": "Blocked folder",
    "sending_failed": "Sending failed",
    "listener": "Disconnected listener",
    "syncing": "Syncing",
    # Added, its first download not due yet (past due it is "Stuck"): not yet "OK".
    "first_download": "Not downloaded yet",
    "off": "Automatic download off",
    # Healthy, but its server cannot be watched (no IDLE): new mail at the interval only.
    "interval": "OK, new mail at the interval",
    "ok": "OK",
}
_RANK = {key: rank for rank, key in enumerate(STATES)}
_BY_LEVEL = {
    "attention": "needs_owner",
    "failing": "failing",
    "stuck": "stuck",
    "problems": "blocked_folder",
    "sending": "sending_failed",
    "off": "off",
    "ok": "ok",
}

# Lag: how long since the last successful download. Buckets for the metrics, each the
# upper bound of those below it ("never": no download has succeeded yet).
LAG_BUCKETS = [
    (timedelta(minutes=5), "under_5m"),
    (timedelta(minutes=15), "under_15m"),
    (timedelta(hours=1), "under_1h"),
    (timedelta(hours=6), "under_6h"),
    (timedelta(days=1), "under_1d"),
]
LAG_OVER, LAG_NEVER = "over_1d", "never"
LAG_LABELS = [label for _, label in LAG_BUCKETS] + [LAG_OVER, LAG_NEVER]

LISTENER_ADVICE = (
    "New mail still arrives at the download interval. Check that the mail listener "
    "service (manage.py mail_listener) runs, and start it if none does (the compose "
    "file's `listener` service): it reconnects by itself. A deployment that runs none "
    "on purpose sets PUSH_ENABLED=false."
)


@dataclass
class MailboxRow:
    account: EmailAccount
    sync: MailboxSync | None
    health: Health
    key: str
    cause: str
    advice: str
    lag: timedelta | None
    # Filled for the shown page only (`with_counts`): what the server counted at the last
    # run in the downloaded folders, beside what is stored from them.
    on_server: int | None = None
    stored: int | None = None
    unread_folders: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return STATES[self.key]

    @property
    def last_success_at(self):
        return self.sync.last_success_at if self.sync else None

    @property
    def last_error(self) -> str:
        return self.sync.last_error if self.sync else ""

    @property
    def lag_bucket(self) -> str:
        return lag_bucket(self.lag)


def lag_bucket(lag: timedelta | None) -> str:
    if lag is None:
        return LAG_NEVER
    for bound, label in LAG_BUCKETS:
        if lag < bound:
            return label
    return LAG_OVER


def mailboxes(search: str = "") -> QuerySet[EmailAccount]:
    """The mailboxes an operator looks after: every one not removed by its owner (a
    removed one neither syncs nor sends), with what a row shows, in one query."""
    rows = (
        EmailAccount.objects.filter(removed_at__isnull=True)
        .select_related("owner", "provider", "sync")
        # The row needs none of these, and the signature can be long.
        .defer(
            "password_encrypted",
            "oauth_refresh_token_encrypted",
            "oauth_access_token_encrypted",
            "signature_html",
            "contacts_folders",
        )
        .order_by("pk")
    )
    if search:
        rows = rows.filter(
            Q(address__icontains=search)
            | Q(owner__username__icontains=search)
            | Q(owner__email__icontains=search)
            | Q(provider__name__icontains=search)
        )
    return rows


def classify(accounts=None) -> list[MailboxRow]:
    """Each mailbox's state, cause and what to do, and its lag; a fixed number of
    queries for any number of mailboxes."""
    accounts = list(mailboxes() if accounts is None else accounts)
    healths = mailboxes_health(accounts)
    ids = [account.pk for account in accounts]
    down = listener.disconnected(ids)
    interval = listener.on_interval(ids)
    now = timezone.now()
    rows = []
    for account in accounts:
        state = getattr(account, "sync", None)  # the reverse one-to-one, selected
        running = bool(state and state.claimed_until and state.claimed_until > now)
        health = healths[account.pk]
        key = _BY_LEVEL[health.level]
        cause, advice = health.headline, health.advice
        if key == "needs_owner":
            cause, advice = _for_the_operator(account, state, cause, advice)
        if key in {"ok", "off"} and account.pk in down:
            key, cause, advice = "listener", down[account.pk], LISTENER_ADVICE
        elif key in {"ok", "off"} and running:
            key, cause, advice = "syncing", "A download is running.", ""
        elif key == "ok" and not (state and state.last_success_at):
            key, cause, advice = "first_download", "Its first download is due soon.", ""
        elif key == "ok" and account.pk in interval:
            key, cause, advice = "interval", interval[account.pk], ""
        last = state.last_success_at if state else None
        rows.append(
            MailboxRow(
                account=account,
                sync=state,
                health=health,
                key=key,
                cause=cause,
                advice=advice,
                lag=None if last is None else max(now - last, timedelta(0)),
                problems=[*health.problems, *health.sending],
            )
        )
    return rows


def _for_the_operator(account, state, cause: str, advice: str) -> tuple[str, str]:
    """The owner's words ("Needs your attention", "Enter the new one under ...") said to
    whoever runs the mailboxes: the state already says who must act."""
    cause = cause.removeprefix("Needs your attention: ")
    if state is not None and state.last_error_kind in PROVIDER_KINDS:
        return cause, (
            f"The provider {account.provider.name}'s settings or its server: change them on "
            "the provider's page; saving it starts its stopped mailboxes again."
        )
    return cause, f"{_owner_or_setup(account)} can do this. What they are told: {advice}"


def _owner_or_setup(account) -> str:
    owner = account.owner.get_full_name() or account.owner.get_username()
    if account.shared_access:
        # A colleague granted "Set up mailbox" can, too.
        return f"Its owner, {owner}, or a colleague granted “Setup mailbox” (if any),"
    return f"Only its owner, {owner},"


SORTS = {
    # Most urgent first; within a state, the longest without a download first.
    "state": lambda row: (_RANK[row.key], -_lag_seconds(row)),
    "lag": lambda row: (-_lag_seconds(row), _RANK[row.key]),
    "-lag": lambda row: (_lag_seconds(row), _RANK[row.key]),
    "address": lambda row: (row.account.address.lower(), row.account.pk),
    "owner": lambda row: (row.account.owner.get_username().lower(), row.account.address),
}


def _lag_seconds(row: MailboxRow) -> float:
    # Never downloaded counts as the longest lag of all.
    return float("inf") if row.lag is None else row.lag.total_seconds()


def health_rows(*, state: str = "", sort: str = "state", search: str = "") -> dict:
    """The page's rows, filtered by state and sorted; with each state's count (before
    the state filter) for the filter's choices."""
    rows = classify(mailboxes(search))
    counts = {key: 0 for key in STATES}
    for row in rows:
        counts[row.key] += 1
    if state in STATES:
        rows = [row for row in rows if row.key == state]
    rows.sort(key=SORTS.get(sort, SORTS["state"]))
    return {"rows": rows, "counts": counts}


def with_counts(rows: list[MailboxRow]) -> list[MailboxRow]:
    """The shown page's server and stored counts, in the folders each mailbox downloads:
    two queries for the page, whose cost is that of the page's own emails (an index-only
    count of their folders' locations), never of all mailboxes'."""
    by_pk = {row.account.pk: row for row in rows}
    folders: dict[int, list[Folder]] = {pk: [] for pk in by_pk}
    for folder in Folder.objects.filter(account__in=list(by_pk), exists_on_server=True).defer(
        "sync_state"
    ):
        folders[folder.account_id].append(folder)
    owner_of: dict[int, int] = {}
    for pk, its_folders in folders.items():
        row = by_pk[pk]
        synced = folders_to_sync(row.account, its_folders)
        row.on_server = sum(folder.messages or 0 for folder in synced)
        row.unread_folders = sum(1 for folder in synced if folder.messages is None)
        row.stored = 0
        owner_of.update({folder.pk: pk for folder in synced})
    stored = (
        EmailLocation.objects.filter(folder__in=list(owner_of))
        .values("folder")
        .annotate(count=Count("pk"))
        .values_list("folder", "count")
    )
    for folder_pk, count in stored:
        by_pk[owner_of[folder_pk]].stored += count
    return rows
