"""Running syncs: the claim that keeps one sync per mailbox, the run record, and the
dispatcher that beat calls every minute."""

import contextlib
import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import EmailAccount
from accounts.services import account_change_record, account_settings_update
from mail.errors import PROVIDER_KINDS, MailError, Retry
from mail.registry import backend_for
from mailsetup.queue import publish, publish_on_commit
from systemsettings.selectors import mailbox_sync_interval

from .engine import folders_refresh
from .links import emails_link_to_contacts
from .models import EmailLocation, Folder, MailboxSync, SyncRun, UnstoredMessage, WorkerHeartbeat
from .readers import READERS, session_open
from .search import vectors_fill_soon
from .store import locations_forget, ours

logger = logging.getLogger(__name__)


def _lease() -> timedelta:
    # A claim outlives a killed worker by this much at most; a live sync renews it
    # after every batch, so the lease only has to cover one batch.
    return timedelta(seconds=settings.SYNC_CLAIM_LEASE_SECONDS)


INTERRUPTED = (
    "This download stopped before it finished (its worker stopped, or the database went "
    "away); the next one went on from where it stopped."
)


# The longest a server's Retry-After holds a mailbox back (a day: a larger one is a
# server's mistake, not a plan).
MAX_WAIT = 24 * 3600


class TransientSyncError(Exception):
    """Worth another try later: the network, a timeout, a server that was busy, our own
    database. The task retries it with backoff, or after `wait` seconds where the server
    said how long to wait."""

    def __init__(self, message: str = "", wait: float | None = None):
        super().__init__(message)
        self.wait = wait


def heartbeat_record(*, hostname: str) -> WorkerHeartbeat:
    beat, _ = WorkerHeartbeat.objects.update_or_create(
        name="worker", defaults={"beat_at": timezone.now(), "hostname": hostname[:255]}
    )
    return beat


def _claim(account_id: int, token: str | None = None) -> tuple[str | None, bool]:
    """Take the mailbox's claim with one conditional update: (the token, or None if
    someone else holds it; whether the claim was left by a run that did not end, whose
    record may then still say "running"). A retry of the same task brings the token it
    claimed with: a claim its first attempt could not release (the database was gone)
    is its own to take again."""
    now = timezone.now()
    token = token or str(uuid.uuid4())
    taken = {
        "claimed_until": now + _lease(), "claim_token": token, "last_started_at": now,
        # The download someone asked for is this one.
        "download_requested_at": None,
    }  # fmt: skip
    rows = MailboxSync.objects.filter(account_id=account_id)
    # Almost always free: one statement. Else one left by a dead run, or our own.
    if rows.filter(claimed_until__isnull=True).update(**taken):
        return token, False
    if rows.filter(Q(claimed_until__lt=now) | Q(claim_token=token)).update(**taken):
        return token, True
    if not rows.exists():
        # A mailbox's first sync: its row is made here, then claimed like any other.
        MailboxSync.objects.get_or_create(account_id=account_id)
        if rows.filter(claimed_until__isnull=True).update(**taken):
            return token, False
    return None, False


class ClaimLost(Exception):
    """The run no longer holds its mailbox's claim: it outlived its lease (a stalled
    worker, a fetch longer than the lease) and another run took the mailbox. Two runs
    must not store into one mailbox at once: this one stops where it is."""


def _renew(account_id: int, token: str) -> None:
    """Extend the claim, if this run still holds it; else raise ClaimLost."""
    renewed = MailboxSync.objects.filter(account_id=account_id, claim_token=token).update(
        claimed_until=timezone.now() + _lease()
    )
    if not renewed:
        raise ClaimLost(f"mailbox {account_id}: the claim {token} is held by another run")


CLAIM_LOST = (
    "This download stopped: it ran past its time limit and another download of the "
    "mailbox took over. What it stored is kept; the other download goes on from there."
)


def _release(account_id: int, token: str, **fields) -> None:
    MailboxSync.objects.filter(account_id=account_id, claim_token=token).update(
        claimed_until=None, claim_token="", **fields
    )


def runs_interrupted_close(*, account_id: int | None = None) -> int:
    """Close run records that say "running" although nobody holds their mailbox's claim:
    their worker died, or lost the database before it could write how the run ended.
    Called with the claim held (every running record of the mailbox is then dead) and by
    the dispatcher for every mailbox whose claim ran out."""
    runs = SyncRun.objects.filter(state=SyncRun.State.RUNNING)
    if account_id is not None:
        runs = runs.filter(account_id=account_id)
    else:
        held = MailboxSync.objects.filter(claimed_until__gte=timezone.now())
        runs = runs.exclude(account_id__in=held.values("account_id"))
    return runs.update(
        state=SyncRun.State.INTERRUPTED, finished_at=timezone.now(), error=INTERRUPTED
    )


# Deleted a slice at a time: one short transaction each, however long the backlog.
PRUNE_BATCH = 5_000


def sync_runs_prune(*, now=None) -> int:
    """Delete the sync-run history older than SYNC_RUN_HISTORY_DAYS (a run a minute is
    8,640 rows a mailbox a month), keeping each mailbox's latest run (its status reads
    it) and any run still marked running (the dispatcher closes those). Returns how many
    were deleted."""
    from django.db.models import OuterRef, Subquery

    cutoff = (now or timezone.now()) - timedelta(days=settings.SYNC_RUN_HISTORY_DAYS)
    latest = (
        SyncRun.objects.filter(account=OuterRef("account")).order_by("-started_at").values("pk")[:1]
    )
    old = (
        SyncRun.objects.filter(started_at__lt=cutoff)
        .exclude(state=SyncRun.State.RUNNING)
        .exclude(pk=Subquery(latest))
    )
    deleted = 0
    while True:
        batch = list(old.order_by().values_list("pk", flat=True)[:PRUNE_BATCH])
        if not batch:
            return deleted
        deleted += SyncRun.objects.filter(pk__in=batch).delete()[0]


@contextlib.contextmanager
def _commits_without_waiting_for_disk():
    """A sync's commits do not wait for PostgreSQL to flush them to disk (about 0.4 ms
    each here, several per idle run). A database crash can lose only the last commits,
    never one in the middle (the log is replayed in order): the claim lapses by itself
    and the next run fetches what the lost batches held, as after any interruption."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    try:
        yield
    finally:
        with contextlib.suppress(Exception), connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


# Our own database going away (a restart, a failover, a cut connection): no fault of
# the mailbox's, retried like the network.
DATABASE_GONE = (OperationalError, InterfaceError)


def mailbox_sync(
    *, account_id: int, items_only: bool = False, claim_token: str | None = None
) -> SyncRun | None:
    """Download what is new in one mailbox. Safe to run twice: the second waits out.
    `items_only`: an Exchange mailbox's meetings, tasks and contacts, asked for now.
    `claim_token`: the task's own id, the same on its retries (see `_claim`)."""
    try:
        with _commits_without_waiting_for_disk():
            return _mailbox_sync(account_id, items_only, claim_token)
    except DATABASE_GONE as error:
        # The run's record could not be written: the next claim of this mailbox, or the
        # dispatcher, closes it as interrupted.
        connection.close()
        raise TransientSyncError(
            f"The app's database could not be reached ({type(error).__name__})."
        ) from None


def _mailbox_sync(
    account_id: int, items_only: bool = False, claim_token: str | None = None
) -> SyncRun | None:
    account = (
        EmailAccount.objects.select_related("provider", "sync")
        .filter(pk=account_id, removed_at__isnull=True)
        .first()
    )
    if account is None:
        return None
    if not account.provider.receive_enabled:
        # Sending only (its health says so): a "Download emails now" asked before the
        # provider changed finds nothing to do.
        MailboxSync.objects.filter(account_id=account_id).update(download_requested_at=None)
        return None
    known = getattr(account, "sync", None)  # (none before the mailbox's first run)
    not_before = known.not_before if known is not None else None
    if not_before is not None and not_before > timezone.now():
        # The server's own wait is not over: asked for nothing now, tried when it is.
        wait = (not_before - timezone.now()).total_seconds()
        raise TransientSyncError(f"The server asked to wait until {not_before:%H:%M:%S}.", wait)
    token, left_behind = _claim(account_id, claim_token)
    if token is None:
        # Another run holds the mailbox: a download asked for meanwhile is that one.
        MailboxSync.objects.filter(
            account_id=account_id, download_requested_at__isnull=False
        ).update(download_requested_at=None)
        return None
    if left_behind:
        runs_interrupted_close(account_id=account_id)
    run = SyncRun(account=account)
    try:
        return _read_and_end(account, run, account_id, token, items_only)
    finally:
        if run.new_emails:
            # The store asks for the search vectors after each batch, at most once in
            # FILL_QUEUED_SECONDS per process: the run's last batches may fall in that
            # window after the fill it queued ran, and would wait for beat's.
            vectors_fill_soon(again=True)


def _read_and_end(
    account: EmailAccount, run: SyncRun, account_id: int, token: str, items_only: bool
) -> SyncRun:
    try:
        # Looked up with the claim taken, so inside: whatever fails here ends the run
        # and releases the mailbox like any other failure.
        reader = _reader_of(account)
        _read(reader, account, run, renew=lambda: _renew(account_id, token), items_only=items_only)
    except ClaimLost:
        # The mailbox's state belongs to the run that holds the claim now: only this
        # run's record is written, and nothing is retried (the other run does the work).
        run.state = SyncRun.State.INTERRUPTED
        run.error = CLAIM_LOST
        run.finished_at = timezone.now()
        run.save()
        return run
    except MailError as failure:
        if isinstance(failure, DatabaseGone):
            _end_if_possible(run, account_id, token)
        else:
            _end_failed(run, account_id, token, failure)
        if isinstance(failure, OurBug):
            raise failure.__cause__ from None  # left to Celery's log in full
        if failure.retry == Retry.LATER:
            wait = min(failure.wait, MAX_WAIT) if failure.wait else None
            raise TransientSyncError(str(failure), wait=wait) from None
        return run
    _end(
        run, account_id, token, last_success_at=timezone.now(), last_error="",
        last_error_kind="", failing_since=None, health=MailboxSync.Health.OK, not_before=None,
    )  # fmt: skip
    return run


class OurBug(MailError):
    """One of our own bugs met during a run: recorded like a server error, then raised
    again as it was (its __cause__)."""


class DatabaseGone(MailError):
    """Our own database went away during the run: its record is written, if at all, on
    a new connection."""


def _reader_of(account: EmailAccount):
    """sync's reader for the mailbox's backend; a service type without a backend, or a
    backend without a reader, is our own bug (tests/test_mail_contract.py forbids it)."""
    try:
        return READERS[backend_for(account.provider).reader]
    except Exception as error:
        raise OurBug(
            "server_error",
            f"The app has no way to download mailboxes of the service type "
            f"{account.provider.service_type!r} ({type(error).__name__}: {error}).",
        ) from error


def _read(reader, account: EmailAccount, run: SyncRun, *, renew, items_only: bool) -> None:
    """The reader's run, every failure but ClaimLost a MailError whose retry says what
    becomes of the mailbox (mail.errors)."""
    try:
        reader.read(account, run, renew=renew, items_only=items_only)
    except (MailError, ClaimLost):
        raise
    except DATABASE_GONE as error:
        # The run's record could not be written: the next claim of this mailbox, or
        # the dispatcher, closes it as interrupted.
        raise DatabaseGone(
            "database", f"The app's database could not be reached ({type(error).__name__})."
        ) from error
    except Exception as error:
        failure = _storage_failure(error) or backend_for(account.provider).read_failure(
            error, oauth=account.uses_oauth
        )
        if failure is None:
            message = f"Unexpected error: {type(error).__name__}: {error}"
            raise OurBug("server_error", message) from error
        raise failure from None


def _storage_failure(error: Exception) -> MailError | None:
    if isinstance(error, OSError) and (error.filename is not None or ours(error)):
        # A file of ours (an attachment, an original, a spooled part), not the network:
        # a full disk says ENOSPC with no file name.
        return MailError(
            "storage",
            f"The app could not write its files ({error.strerror or type(error).__name__}); "
            "its administrator must free space or fix the storage's permissions.",
        )
    return None


def _end_failed(run: SyncRun, account_id: int, token: str, failure: MailError) -> None:
    """A failed run: recorded, the mailbox released; if the owner must act, the
    dispatcher stops queueing it until they do."""
    message = str(failure)
    release = {
        "last_error": message,
        "last_error_kind": failure.kind,
        "failing_since": Coalesce(F("failing_since"), Value(timezone.now())),
    }
    if failure.retry == Retry.OWNER:
        release["health"] = MailboxSync.Health.NEEDS_ATTENTION
    if failure.wait:
        # Honoured per mailbox: Retry-After can be minutes, longer than the interval.
        release["not_before"] = timezone.now() + timedelta(seconds=min(failure.wait, MAX_WAIT))
    _end(run, account_id, token, error=message, **release)


def _end_if_possible(run: SyncRun, account_id: int, token: str) -> None:
    """After losing the database, one try on a new connection to say how the run ended
    and to free the mailbox; if the database is still gone, the claim's token stays
    with the task's retry, which takes the claim again."""
    connection.close()
    with contextlib.suppress(*DATABASE_GONE):
        _end_failed(
            run, account_id, token,
            MailError("database", "The app's database went away during the download."),
        )  # fmt: skip


def _finish(run: SyncRun, *, error: str = "") -> None:
    run.state = SyncRun.State.FAILED if error else SyncRun.State.SUCCEEDED
    run.error = error[:2000]
    run.finished_at = timezone.now()
    run.save()


def _end(run: SyncRun, account_id: int, token: str, *, error: str = "", **release) -> None:
    """The run's record and the mailbox's release in one commit."""
    if run.pk is None and connection.vendor == "postgresql":
        # Most runs (an idle one always) end here without a row yet: one statement
        # writes both, where a transaction takes four round trips.
        run.state = SyncRun.State.FAILED if error else SyncRun.State.SUCCEEDED
        run.error = error[:2000]
        run.finished_at = timezone.now()
        run.pk = _insert_and_release(run, account_id, token, release)
        return
    with transaction.atomic():
        _finish(run, error=error)
        _release(account_id, token, **release)


def _insert_and_release(run: SyncRun, account_id: int, token: str, release: dict) -> int:
    fields = [f for f in SyncRun._meta.concrete_fields if not f.primary_key]
    changes = {"claimed_until": None, "claim_token": "", **release}
    sets = [(MailboxSync._meta.get_field(name), value) for name, value in changes.items()]
    # Names from the models' metadata only; every value is a parameter, but for the
    # one expression a failure keeps ("since when"), written here.
    assignments, values = [], []
    for field, value in sets:
        if isinstance(value, Coalesce):
            assignments.append(f"{field.column} = COALESCE({field.column}, %s)")
            values.append(field.get_db_prep_save(timezone.now(), connection))
        else:
            assignments.append(f"{field.column} = %s")
            values.append(field.get_db_prep_save(value, connection))
    sql = (
        f"WITH run AS (INSERT INTO {SyncRun._meta.db_table} "  # noqa: S608
        f"({', '.join(f.column for f in fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "
        f"RETURNING id), released AS (UPDATE {MailboxSync._meta.db_table} SET "
        f"{', '.join(assignments)} WHERE account_id = %s AND claim_token = %s) "
        "SELECT id FROM run"
    )
    params = [f.get_db_prep_save(f.pre_save(run, add=True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *values, account_id, token])
        return cursor.fetchone()[0]


def mailboxes_due() -> list[int]:
    """Every mailbox with automatic download on whose last sync is older than the
    interval: one indexed query, whatever the number of mailboxes."""
    missing = EmailAccount.objects.filter(sync__isnull=True).values_list("pk", flat=True)
    MailboxSync.objects.bulk_create(
        [MailboxSync(account_id=pk) for pk in missing], ignore_conflicts=True
    )
    now = timezone.now()
    due = MailboxSync.objects.filter(
        Q(last_started_at__isnull=True) | Q(last_started_at__lt=now - mailbox_sync_interval()),
        Q(not_before__isnull=True) | Q(not_before__lte=now),
        account__auto_sync=True,
        # A provider set up for sending only has no server to download from.
        account__provider__receive_enabled=True,
        health=MailboxSync.Health.OK,
    )
    ids = list(due.values_list("account_id", flat=True))
    # Marked as started now, so a busy worker queue is not flooded with repeats.
    MailboxSync.objects.filter(account_id__in=ids).update(last_started_at=now)
    runs_interrupted_close()
    return ids


def mailboxes_dispatch() -> int:
    """Queue a sync of every mailbox that is due (beat's `sync.dispatch`); returns how
    many were queued. Should the task queue go away midway, those not queued are made
    due again at once instead of waiting out an interval as if they had run."""
    from .tasks import sync_mailbox

    due = mailboxes_due()
    for index, account_id in enumerate(due):
        if not publish(sync_mailbox, account_id):
            MailboxSync.objects.filter(account_id__in=due[index:]).update(last_started_at=None)
            return index
    return len(due)


class FolderListError(MailError):
    """The server's folder list could not be read; the message says why, and the
    field and retry decision are the failure's own."""

    @classmethod
    def of(cls, error: MailError) -> "FolderListError":
        return cls(error.kind, str(error), field=error.field, retry=error.retry)


def folders_load(*, account: EmailAccount) -> list[Folder]:
    """The mailbox's folders as the server lists them now (IMAP LIST, or EWS
    FindFolder), stored."""
    backend = backend_for(account.provider)
    try:
        session = session_open(account)
    except MailError as error:
        raise FolderListError.of(error) from None
    try:
        listed = backend.list_folders(session)
    except MailError as error:
        raise FolderListError.of(error) from None
    finally:
        backend.close_reader(session)
    return folders_refresh(account=account, listed=listed)


def _folder_choice(folders) -> str:
    chosen = [f.path + (" (with subfolders)" if f.include_subfolders else "") for f in folders]
    return ", ".join(sorted(chosen)) or "none"


@transaction.atomic
def folders_choose(
    *, account: EmailAccount, actor, mode: str, chosen: set[int], with_subfolders: set[int]
) -> None:
    """Save "all folders" or "customized folders" and which ones. Choosing a folder
    does not choose what is inside it; `with_subfolders` does, and implies the folder
    itself (for a folder that cannot hold mail, only its subfolders)."""
    folders = list(Folder.objects.select_for_update().filter(account=account))
    before = _folder_choice(f for f in folders if f.chosen)
    for folder in folders:
        subfolders = folder.pk in with_subfolders
        wanted = (folder.pk in chosen or subfolders, subfolders)
        if (folder.chosen, folder.include_subfolders) != wanted:
            folder.chosen, folder.include_subfolders = wanted
            folder.save(update_fields=["chosen", "include_subfolders"])
    after = _folder_choice(f for f in folders if f.chosen)
    account_settings_update(account=account, actor=actor, values={"folder_mode": mode})
    if before != after:
        account_change_record(account=account, actor=actor, field="folders", old=before, new=after)
    # The folders chosen now are downloaded now, not at the next scheduled run.
    download_queue(account_id=account.pk)


def download_forget(*, account_id: int) -> None:
    """The mailbox is read through another protocol from now on (accounts.signals.
    protocol_changed): where its emails sat on the server, and how far each folder was
    read, meant something to the old protocol only. Forgotten, in the caller's
    transaction: the next run lists the folders afresh (a folder of the same path keeps
    its row and its choice in the folder settings) and finds every stored email again
    by its Message-ID, storing none twice."""
    # A run of the old protocol under way loses its claim: its next renewal stops it
    # before it writes another old-protocol state, and the move's own download takes
    # the mailbox. A wait the old server asked for is not the new one's.
    MailboxSync.objects.filter(account_id=account_id).update(
        claim_token="", claimed_until=None, not_before=None
    )
    locations_forget(locations=EmailLocation.objects.filter(folder__account_id=account_id))
    UnstoredMessage.objects.filter(folder__account_id=account_id).delete()
    Folder.objects.filter(account_id=account_id).update(
        uidvalidity=None, last_uid=0, uidnext=None, highestmodseq=None, messages=None,
        synced_since=None, server_id="", sync_state="", flags_checked_below=0,
        last_error="", failing_since=None, retry_at=None,
    )  # fmt: skip


def download_queue(*, account_id: int, items_only: bool = False, now: bool = False) -> bool:
    """Queue a download of the mailbox ("Download emails now", a longer period, new
    folders, a fixed password), once the caller's transaction commits, or `now`. False
    if the task queue cannot be reached: the dispatcher queues the mailbox once it is
    back, so nothing is lost, but the person asking should know."""
    from .tasks import import_exchange_items, sync_mailbox

    task = import_exchange_items if items_only else sync_mailbox
    return publish(task, account_id) if now else publish_on_commit(task, account_id)


def download_request(*, account_id: int) -> bool:
    """ "Download emails now": queued at once, and marked as asked for until a run takes
    the mailbox (its claim clears the mark), so the status shows the download starting
    and keeps looking (sync.selectors.sync_status). False if the task queue cannot be
    reached: then nothing is marked, and the dispatcher queues the mailbox once it is
    back."""
    from .tasks import sync_mailbox

    MailboxSync.objects.get_or_create(account_id=account_id)
    marked = MailboxSync.objects.filter(account_id=account_id)
    # Marked before it is queued: a worker that claims at once clears it.
    marked.update(download_requested_at=timezone.now())
    if publish(sync_mailbox, account_id):
        return True
    marked.update(download_requested_at=None)
    return False


def provider_changed(sender, instance, created: bool, **kwargs) -> None:
    """A provider's settings changed: its mailboxes stopped by a failure of the provider's
    own (mail.errors.PROVIDER_KINDS) are queued again by the dispatcher."""
    if created:
        return
    MailboxSync.objects.filter(
        account__provider=instance,
        health=MailboxSync.Health.NEEDS_ATTENTION,
        last_error_kind__in=PROVIDER_KINDS,
    ).update(health=MailboxSync.Health.OK)


def mailbox_attention_clear(*, account_id: int) -> None:
    """The owner fixed what the last sync needed (for example re-entered the password):
    the dispatcher may queue the mailbox again."""
    MailboxSync.objects.filter(
        account_id=account_id, health=MailboxSync.Health.NEEDS_ATTENTION
    ).update(health=MailboxSync.Health.OK, last_error="")


# -- for push.listener (issue 18) -------------------------------------------------------


def mailbox_failure_record(*, account_id: int, failure: MailError) -> None:
    """A failure met outside a run (the push listener's sign-in), recorded on the
    mailbox as a failed run records it: if the owner must act, the mailbox reads
    "needs your attention" and the dispatcher stops queueing it until they do."""
    fields = {
        "last_error": str(failure),
        "last_error_kind": failure.kind,
        "failing_since": Coalesce(F("failing_since"), Value(timezone.now())),
    }
    if failure.retry == Retry.OWNER:
        fields["health"] = MailboxSync.Health.NEEDS_ATTENTION
    MailboxSync.objects.get_or_create(account_id=account_id)
    MailboxSync.objects.filter(account_id=account_id).update(**fields)


def contacts_link_soon(*, contact_ids: list[int]) -> None:
    """The emails already downloaded, linked to contacts given addresses by hand
    (sync.links.emails_link_to_contacts), by a worker once the save has committed: a
    pass over every email takes a second or more, which a page's save must neither wait
    for nor fail by."""
    from .tasks import contacts_link

    ids = list(contact_ids)

    def queue() -> None:
        if publish(contacts_link, ids):
            return
        # No worker can be asked (the broker is down), and nothing sweeps this later:
        # done here, after the save, rather than never.
        try:
            emails_link_to_contacts(contact_ids=ids)
        except Exception:
            logger.exception("Linking the emails of contacts %s failed", ids)

    transaction.on_commit(queue)
