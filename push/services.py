"""The push listener's writes: leases on mailboxes (claim, renew, release), its states,
and queueing a mailbox's sync when its server reports a change. Synchronous; the
listener calls them from its one database thread."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import BooleanField, Case, F, Q, When
from django.db.models.functions import Now
from django.views.decorators.debug import sensitive_variables

from accounts.models import EmailAccount
from accounts.oauth import access_token
from mail.errors import MailError
from sync.engine import folders_to_sync
from sync.models import Folder, MailboxSync
from sync.services import download_queue, mailbox_failure_record
from systemsettings.selectors import internal_mail_servers_allowed

from .models import MailboxWatch

State = MailboxWatch.State

# Mailboxes a listener watches: present, downloading automatically, not waiting for
# their owner (a failed sign-in, a revoked OAuth grant).
ELIGIBLE = Q(
    account__removed_at__isnull=True,
    account__auto_sync=True,
    account__reconnect_needed_at__isnull=True,
) & (Q(account__sync__isnull=True) | Q(account__sync__health=MailboxSync.Health.OK))


OWNER_NEEDED = Q(account__reconnect_needed_at__isnull=False) | Q(
    account__sync__health=MailboxSync.Health.NEEDS_ATTENTION
)


def _lease() -> timedelta:
    return timedelta(seconds=settings.PUSH_LEASE_SECONDS)


# Leases are given and compared in the database's time, not each machine's: listeners
# on machines whose clocks differ would otherwise take each other's mailboxes early, or
# leave a dead one's late.


def _claimable() -> Q:
    # Free, or left by a listener that stopped renewing; a server found unable to be
    # watched is asked again only after a while (it may have been upgraded).
    recheck = Now() - timedelta(seconds=settings.PUSH_UNSUPPORTED_RECHECK_SECONDS)
    free = Q(holder="") | Q(lease_expires_at__lt=Now())
    return free & ~Q(state=State.NOT_SUPPORTED, state_since__gt=recheck)


def watches_claim(*, holder: str, limit: int) -> list[tuple[int, bool]]:
    """Take up to `limit` mailboxes no live listener holds: [(account id, whether it
    was taken over from another listener)]. On PostgreSQL the candidates are locked
    with SKIP LOCKED, so listeners claiming at once take different mailboxes; the
    conditional update keeps that true on SQLite too."""
    if limit <= 0:
        return []
    missing = EmailAccount.objects.filter(
        removed_at__isnull=True, auto_sync=True, watch__isnull=True
    ).values_list("pk", flat=True)
    MailboxWatch.objects.bulk_create(
        [MailboxWatch(account_id=pk) for pk in missing], ignore_conflicts=True
    )
    with transaction.atomic():
        candidates = dict(
            MailboxWatch.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(ELIGIBLE, _claimable())
            .order_by("lease_expires_at", "pk")
            .values_list("account_id", "holder")[:limit]
        )
        MailboxWatch.objects.filter(account_id__in=candidates).filter(_claimable()).update(
            holder=holder, lease_expires_at=Now() + _lease(), state=State.CONNECTING,
            state_since=Now(), error="", error_kind="",
        )  # fmt: skip
        taken = MailboxWatch.objects.filter(account_id__in=candidates, holder=holder)
        return [(pk, bool(candidates[pk])) for pk in taken.values_list("account_id", flat=True)]


def watches_renew(*, holder: str) -> set[int]:
    """Extend the leases this listener holds; returns the mailboxes it still holds (one
    missing was taken by another listener while this one could not renew, or removed)."""
    rows = MailboxWatch.objects.filter(holder=holder)
    rows.update(lease_expires_at=Now() + _lease())
    return set(rows.values_list("account_id", flat=True))


def watches_drop_ineligible(*, holder: str) -> set[int]:
    """Give up the mailboxes held that must no longer be watched (removed, automatic
    download turned off, waiting for the owner); returns them."""
    rows = MailboxWatch.objects.filter(holder=holder).exclude(ELIGIBLE)
    dropped = set(rows.values_list("account_id", flat=True))
    # Waiting for the owner reads as such, not as merely stopped.
    owner = set(rows.filter(OWNER_NEEDED).values_list("account_id", flat=True))
    for ids, state in ((owner, State.NEEDS_OWNER), (dropped - owner, State.STOPPED)):
        if ids:
            MailboxWatch.objects.filter(account_id__in=ids, holder=holder).update(
                holder="", lease_expires_at=None, state=state, state_since=Now()
            )
    return dropped


def watch_state_set(
    *, account_id: int, holder: str, state: str, error: str | None = "", error_kind: str = ""
) -> None:
    """The state now, and since when (kept if unchanged). `error` None keeps the last
    one: a mailbox connecting again still says why its connection broke."""
    fields = {
        "state": state,
        "state_since": Case(When(state=state, then=F("state_since")), default=Now()),
    }
    if error is not None:
        fields |= {"error": error[:2000], "error_kind": error_kind}
    MailboxWatch.objects.filter(account_id=account_id, holder=holder).update(**fields)


def watch_release(
    *, account_id: int, holder: str, state: str, error: str = "", error_kind: str = ""
) -> None:
    """The listener stops watching the mailbox and says why (`state`)."""
    MailboxWatch.objects.filter(account_id=account_id, holder=holder).update(
        holder="", lease_expires_at=None, state=state, state_since=Now(),
        error=error[:2000], error_kind=error_kind,
    )  # fmt: skip


def watches_release(*, holder: str) -> int:
    """A listener shutting down frees its mailboxes for the others at once."""
    rows = MailboxWatch.objects.filter(holder=holder)
    active = (State.CONNECTING, State.WATCHING, State.BACKOFF)
    rows.filter(state__in=active).update(state=State.STOPPED, state_since=Now())
    return rows.update(holder="", lease_expires_at=None)


def watch_owner_needed(*, account_id: int, holder: str, failure: MailError) -> None:
    """The server refused the mailbox's sign-in for good: recorded on the mailbox as a
    sync records it (the owner is asked to act), and the mailbox is no longer watched."""
    with transaction.atomic():
        mailbox_failure_record(account_id=account_id, failure=failure)
        # Also a row already free: the leases' thread may have dropped the mailbox as
        # waiting for its owner first (an OAuth refresh records that itself); the why
        # is this listener's to say. A row another listener took is left alone.
        MailboxWatch.objects.filter(account_id=account_id, holder__in=[holder, ""]).update(
            holder="", lease_expires_at=None, state=State.NEEDS_OWNER, state_since=Now(),
            error=str(failure)[:2000], error_kind=failure.kind,
        )  # fmt: skip


QUEUED, WAITING, BUSY, QUEUE_DOWN = "queued", "waiting", "busy", "queue_down"


def watch_sync_queue(*, account_id: int) -> str:
    """The server reported a change: queue the mailbox's sync now (the claim still
    keeps one run at a time); QUEUED. WAITING when the sync queued last has not been
    started by a worker yet (the task queue is backed up): that one will see this
    change, and a busy mailbox does not add a task every debounce window. After
    PUSH_SYNC_QUEUED_WAIT_SECONDS it is queued again (a task lost with its broker).
    QUEUE_DOWN when the task queue is down: the dispatcher then queues the mailbox at
    its interval. BUSY when a run holds the mailbox's claim now: the task would end at
    once, and its mark would stand for a start that already happened; the listener
    queues after that run."""
    wait = timedelta(seconds=settings.PUSH_SYNC_QUEUED_WAIT_SECONDS)
    rows = MailboxWatch.objects.filter(account_id=account_id)
    running = Case(
        When(claimed_until__gt=Now(), then=True), default=False, output_field=BooleanField()
    )
    with transaction.atomic():
        # One statement: the last start and whether a run holds the claim, together.
        started, busy = (
            MailboxSync.objects.filter(account_id=account_id)
            .annotate(running=running)
            .values_list("last_started_at", "running")
            .first()
        ) or (None, False)
        if busy:
            return BUSY
        recent = Case(
            When(sync_queued_at__gt=Now() - wait, then=True),
            default=False, output_field=BooleanField(),
        )  # fmt: skip
        mark = (
            rows.select_for_update()
            .annotate(recent=recent)
            .values_list("recent", "sync_queued_after")
            .first()
        )
        if mark is not None and mark[0] and mark[1] == started:
            rows.update(last_event_at=Now())
            return WAITING
        rows.update(last_event_at=Now(), sync_queued_at=Now(), sync_queued_after=started)
    if download_queue(account_id=account_id, now=True):
        return QUEUED
    rows.update(sync_queued_at=None, sync_queued_after=None)
    return QUEUE_DOWN


@sensitive_variables("secret")
def watch_sign_in(*, account_id: int, force_refresh: bool = False) -> tuple | None:
    """(provider, whether it signs in with OAuth, the backend's watcher arguments) for
    the mailbox as it is now: the password as saved now, or an OAuth access token,
    refreshed if it is about to run out (`force_refresh`: the server refused it). None
    for a mailbox that is gone or no longer downloads automatically. Raises
    ReconnectNeeded or TokenError."""
    from providers.addresses import normalize_address

    account = (
        EmailAccount.objects.select_related("provider")
        .filter(pk=account_id, removed_at__isnull=True, auto_sync=True)
        .first()
    )
    if account is None:
        return None
    # The other folders the sync reads, where the server can report on them too (NOTIFY);
    # before the first sync lists them, every folder.
    known = list(Folder.objects.filter(account=account, exists_on_server=True))
    folders = tuple(f.path for f in folders_to_sync(account, known)) if known else None
    if account.uses_oauth:
        secret = {"access_token": access_token(account_id=account_id, force_refresh=force_refresh)}
    else:
        secret = {"password": account.get_password()}
    return (
        account.provider,
        account.uses_oauth,
        {
            "provider": account.provider,
            "address": normalize_address(account.address),
            "login": account.login,
            "allow_internal": internal_mail_servers_allowed(),
            "folders": folders,
            **secret,
        },
    )
