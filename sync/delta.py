"""Downloading a mailbox whose server gives changes since a state (mail.reading: Exchange
over EWS, Microsoft Graph), with the IMAP sync's guarantees: the chosen period and
folders, an email stored once per mailbox (keyed by Message-ID or a fingerprint, as over
IMAP), each server copy once per folder (keyed by the server's id of it), and every page
of changes committed together with the state that follows it, so a run cut anywhere
resumes from the last page it finished.

A state the server no longer honours (StateLost: Exchange after the mailbox moved to
another database, Graph's 410) is treated like a UIDVALIDITY change: the folder's
locations are dropped, its messages listed again, and every email found again by its key
instead of stored twice.

Nothing here knows the protocol: a new one that reads this way is a DeltaReader in its
backend's module.
"""

from datetime import UTC, date, datetime, time

from django.db import transaction
from django.utils import timezone

from accounts.models import EmailAccount
from mail.errors import MailError
from mail.reading import DeltaReader, NewItem, ReadItem, StateLost

from .engine import (
    RETRY_UNSTORED,
    MailboxSyncer,
    folders_refresh,
    period_start,
    retry_after,
)
from .files import files_for_transaction
from .models import EmailLocation, Folder, SyncRun, UnstoredMessage
from .parsing import parse_safely
from .progress import RunProgress
from .store import Fetched, Store, Stored, emails_seen_set, locations_forget

# Messages read and stored at a time (a savepoint each): a reader's page may list a few
# hundred, and their sources are held in memory until stored. Bounded in bytes too, as
# IMAP's batches are (sync.engine.BATCH_BYTES: 1 MB there, measured by B1; not here).
STORE_EVERY = 50
STORE_BYTES = 3_000_000
UNKNOWN_SIZE = STORE_BYTES // 20
# Pages of one folder read per run (200 changes each for Exchange, 100 for Graph): a
# first download of a large folder takes a few runs, each saving where it stopped.
MAX_PAGES = 500


class StateLostAgain(Exception):
    """The server forgot a folder's state again after it was read from its start."""


class DeltaSyncer(MailboxSyncer):
    """One mailbox's download over a DeltaReader (IMAP's sibling, sync.engine): the same
    store (sync.store) and settings (MailboxSyncer)."""

    def __init__(self, *, account: EmailAccount, reader: DeltaReader, run: SyncRun, renew=None):
        self.account = account
        self.reader = reader
        self.run = run
        self.renew = renew or (lambda: None)
        self.store = Store(account=account, create_contacts=lambda: self.create_contacts)
        self.progress = RunProgress(run)
        self.listed: dict[str, int | None] = {}  # messages by path, as the list said

    def progress_start(self, folders: list[Folder]) -> None:
        """In a first download of any folder, the messages each holds, as the folder
        list gave them: no request of its own."""
        counts = None
        if any(not folder.sync_state for folder in folders):
            counts = {folder.path: self.listed.get(folder.path) or 0 for folder in folders}
        self.progress.start(folders, counts)

    def refresh_folders(self) -> list[Folder]:
        """The folders as the reader lists them, stored (only what changed is written);
        the special uses stored before spare asking for them again."""
        stored = dict(
            Folder.objects.filter(account=self.account)
            .exclude(server_id="")
            .values_list("server_id", "special_use")
        )
        listed = self.reader.folders(stored)
        self.listed = {entry.path: entry.messages for entry in listed}
        return folders_refresh(account=self.account, listed=listed)

    def folder_refusal(self, error: Exception) -> str | None:
        if isinstance(error, StateLostAgain):
            return (
                "it forgot where the download of this folder stood twice in one run; "
                "the next run reads it again (what is stored stays, without duplicates)"
            )
        return self.reader.folder_refusal(error)

    def sync_folder(self, folder: Folder) -> None:
        since = period_start(self.account)
        since_at = _start_of(since)
        if _period_extended(folder, since):
            self._read_older(folder, since_at)
        state = folder.sync_state
        lost = False
        for _page in range(MAX_PAGES):
            try:
                page = self.reader.changes(folder.server_id, state)
            except StateLost:
                if lost or not state:
                    # Forgotten again within the run (or a start refused): reading it
                    # over would never end. The folder's trouble; the others go on.
                    raise StateLostAgain(folder.path) from None
                lost = True
                self._forget(folder)
                state = ""
                continue
            created = [
                item
                for item in page.created
                if since_at is None or item.received is None or item.received >= since_at
            ]
            self._apply(folder, created, page.seen, page.deleted, page.state)
            if page.last or page.state == state:
                break
            state = page.state
        else:
            # A server that never says "last" keeps no worker for good: the next run
            # goes on from the state saved with the last page.
            self.run.folders += 1
            return
        self._retry_unstored(folder)
        if since is None or folder.synced_since is None or since < folder.synced_since:
            folder.synced_since = since
        # The folder's count as the server gives it, for the page's "on the server".
        folder.messages = self.listed.get(folder.path)
        folder.save(update_fields=["synced_since", "messages"])
        self.run.folders += 1

    def _forget(self, folder: Folder) -> None:
        """The server forgot the folder's state: its locations go, its emails stay."""
        # Only the claim holder may judge the folder renumbered: a run that lost its
        # claim compares with the state it read at its start, and would delete the
        # locations the new holder stored since.
        self.renew()
        with transaction.atomic():
            removed = locations_forget(locations=EmailLocation.objects.filter(folder=folder))
            self.run.removed_locations += removed
            folder.sync_state = ""
            folder.synced_since = None
            folder.save(update_fields=["sync_state", "synced_since"])

    def _apply(
        self, folder: Folder, created: list[NewItem], seen: dict[str, bool], deleted: set[str],
        next_state: str,
    ) -> None:  # fmt: skip
        """A page in one transaction, as the state after it says what it holds: its new
        messages read and stored a few at a time (each a savepoint, their sources let go
        after it), then its flag changes and deletions, then the state. A run cut before
        the commit reads the whole page again; a chunk committed alone would be a
        location that page, asked again from the old state, never names (a message
        read or deleted meanwhile would keep its old flag or its location)."""
        created = self._unknown(folder, created)
        chunks = []
        with files_for_transaction(), transaction.atomic():
            for chunk in _chunks(created):
                chunks.append(self._store(folder, chunk, count=False))
            self.renew()
            flag_changes = 0
            for value in (True, False):
                ids = [item_id for item_id, flag in seen.items() if flag == value]
                if ids:
                    flag_changes += emails_seen_set(
                        locations=EmailLocation.objects.filter(folder=folder, item_id__in=ids),
                        seen=value,
                    )
            removed = 0
            if deleted:
                removed = locations_forget(
                    locations=EmailLocation.objects.filter(folder=folder, item_id__in=deleted)
                )
            folder.sync_state = next_state
            folder.save(update_fields=["sync_state"])
        # Counted once committed: a failed run reports what it stored, nothing more.
        for stored, handled, _answered in chunks:
            self._count(stored)
            self.progress.handled(handled)
        if chunks:
            self.run.save_progress()
        self.run.flag_changes += flag_changes
        self.run.removed_locations += removed

    def _unknown(self, folder: Folder, items: list[NewItem]) -> list[NewItem]:
        """`items` but those the folder already holds (a page read twice; Graph lists
        a changed message again)."""
        if not items:
            return []
        known = set(
            EmailLocation.objects.filter(
                folder=folder, item_id__in=[item.id for item in items]
            ).values_list("item_id", flat=True)
        )
        return [item for item in items if item.id not in known]

    def _store(
        self, folder: Folder, items: list[NewItem], *, new: bool = True, count: bool = True
    ) -> tuple[Stored, int, set[str]]:
        """Read `items` and store them (one transaction, or a savepoint in the caller's);
        returns what was stored, how many count in the progress, and the ids the reader
        answered for (stored or noted; one left out is gone from the server). A reader
        that hands some back for later (its budget spent: sizes it could not know) is
        asked again for those once the others are stored, so no more than its budget is
        held at once. `new`: counted in the run's progress (messages tried again were
        counted by an earlier run); `count`: counted now (else by the caller, once its
        transaction commits)."""
        stored, answered, pending = Stored(), set(), items
        while pending:
            read = self.reader.read(pending, size_limit=self.size_limit)
            later = {item.id for item in read if item.later}
            if later and len(later) == len(pending):
                raise MailError("server_error", "The mail server's reader read nothing.")
            # Before storing: a run whose claim was taken while it read stops here.
            self.renew()
            batch, noted = [], Stored()
            for item in read:
                if item.later:
                    continue
                answered.add(item.id)
                if item.raw is None:
                    noted.add(self.store.unstored(folder, 0, None, item.note, item.id))
                    continue
                batch.append(self._fetched(item))
            stored.add(self.store.batch(folder, 0, batch))
            stored.add(noted)
            # Stored now: no longer waiting, whatever its note's next try said.
            if batch:
                UnstoredMessage.objects.filter(
                    folder=folder, item_id__in=[item.item_id for item in batch]
                ).delete()
            del batch, read
            pending = [item for item in pending if item.id in later]
        if count:
            self._count(stored)
            if new:
                self.progress.handled(len(items))
            if answered:
                self.run.save_progress()
        return stored, len(items) if new else 0, answered

    def _fetched(self, item: ReadItem) -> Fetched:
        parsed = parse_safely(item.raw, self.limits)
        if item.note:
            parsed.problem = parsed.problem or item.problem
            parsed.notes.append(item.note)
        return Fetched(
            uid=None, parsed=parsed, seen=item.seen, size=len(item.raw), raw=item.raw,
            item_id=item.id,
        )  # fmt: skip

    def _retry_unstored(self, folder: Folder) -> None:
        """Messages earlier runs could not store, asked for again by their ids when
        due."""
        now = timezone.now()
        due = [
            noted
            for noted in UnstoredMessage.objects.filter(folder=folder).exclude(item_id="")
            if noted.last_failed_at + retry_after(noted.attempts) <= now
        ][:RETRY_UNSTORED]
        if not due:
            return
        answered: set[str] = set()
        for chunk in _chunks([NewItem(noted.item_id) for noted in due]):
            answered |= self._store_committed(folder, chunk, new=False)
        # Stored now, or gone from the server: no longer waiting. (One that failed again
        # was noted again on its old note, with one more attempt.)
        located = set(
            EmailLocation.objects.filter(
                folder=folder, item_id__in=[noted.item_id for noted in due]
            ).values_list("item_id", flat=True)
        )
        UnstoredMessage.objects.filter(
            pk__in=[
                noted.pk
                for noted in due
                if noted.item_id in located or noted.item_id not in answered
            ]
        ).delete()

    def _read_older(self, folder: Folder, since_at: datetime | None) -> None:
        """The user asked for a longer period: what arrived before the folder's oldest
        date and after the new start; what is already stored is skipped by its id."""
        older = self.reader.received_between(
            folder.server_id, since=since_at, before=_start_of(folder.synced_since)
        )
        for chunk in _chunks(self._unknown(folder, older)):
            self._store_committed(folder, chunk)

    def _store_committed(self, folder: Folder, items: list[NewItem], *, new: bool = True):
        """`_store` in a transaction of its own, counted once it commits: the claim's
        renewal inside it holds the mailbox's row until the commit, so a move to another
        protocol (sync.services.download_forget) comes wholly before or after it."""
        with files_for_transaction(), transaction.atomic():
            stored, handled, answered = self._store(folder, items, new=new, count=False)
        self._count(stored)
        self.progress.handled(handled)
        if answered:
            self.run.save_progress()
        return answered


def _chunks(items: list[NewItem]):
    """`items` a few at a time: at most STORE_EVERY, and at most STORE_BYTES of the
    sizes the server said (a message larger than that goes alone). A size the server
    did not say (Graph says none before the source) counts as UNKNOWN_SIZE, so that
    such messages still go 20 to a chunk, which Graph reads in one batch whose answer
    is bounded (mail/graph/reader.py); one that turns out large is read alone there,
    bounded by the size limit."""
    chunk, total = [], 0
    for item in items:
        size = item.size if item.size is not None else UNKNOWN_SIZE
        if chunk and (len(chunk) >= STORE_EVERY or total + size > STORE_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += size
    if chunk:
        yield chunk


def _start_of(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time.min, tzinfo=UTC)


def _period_extended(folder: Folder, since: date | None) -> bool:
    if folder.synced_since is None or not folder.sync_state:
        return False
    return since is None or since < folder.synced_since
