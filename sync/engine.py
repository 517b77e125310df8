"""Downloading one mailbox over IMAP.

Guarantees: an email is stored once per mailbox (keyed by Message-ID, or a
fingerprint), each server copy once per (folder, UIDVALIDITY, UID); every batch is
committed on its own, so a run cut at any point is resumed by the next one without
loss or duplicates; a message that cannot be parsed is stored with its raw source.
"""

import contextlib
import imaplib
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from functools import cached_property

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from imapclient import IMAPClient

from accounts.models import EmailAccount, FolderMode
from mail.backend import ListedFolder
from mail.errors import MailError
from mail.imap_smtp.backend import listed_folders as imap_listing
from mail.imap_smtp.wire import imaplib_of, list_with_status
from mail.pace import Overdue
from systemsettings.selectors import (
    create_contacts_for_unknown_senders,
    message_depth_limit,
    message_parts_limit,
    message_size_limit,
)

from .models import EmailLocation, Folder, SyncRun, UnstoredMessage
from .parsing import Limits
from .parsing_process import Parsed, parse_later
from .progress import RunProgress
from .store import Fetched, Store, Stored, emails_seen_set, locations_forget

# A batch is one FETCH and one transaction. Bounded in bytes as well as in count, so a
# folder of large messages does not raise the worker's memory: the raw batch exists a
# few times over (the response, the parsed bodies, the rows being sent), and with the
# batches read ahead, three are in the worker at once. B1 (3,000 messages): at 3 MB the
# worker peaked 143 MB and its parser 46 MB; at 1 MB, 119 and 30 MB, 0-15 % slower (more
# round trips and transactions; README, "within 150 MB"); at 0.5 MB, 121 and 31 MB but
# a quarter slower.
BATCH = 200
BATCH_BYTES = 1_000_000
# A message above this size is read part by part (sync/large.py) instead of whole, so
# that the worker's memory does not grow with the largest message of a mailbox. A
# message between BATCH_BYTES and this goes whole, in a batch of its own.
LARGE = 3_000_000
# Messages that could not be stored, tried again per folder and run (as many as a server
# that refused a whole folder for a while may have left noted).
RETRY_UNSTORED = 2000
# Without CONDSTORE, the flags asked for per folder and run: the newest ones every time,
# and a slice of the older ones in turn.
FLAGS_NEWEST = 500
FLAGS_SLICE = 1000
# While the helper thread fetches (a large message can take minutes on a slow line), the
# claim is renewed this often, well within its lease.
RENEW_WHILE_WAITING = 20
# Batches the helper thread reads ahead of the one being stored (each at most BATCH_BYTES
# in memory, or one message of up to LARGE): with two, the parser process is never
# without the next one.
READ_AHEAD = 2
# Folders a run gives up on for a server too slow there, each with a new session, before
# the server's slowness is the run's (`AccountSyncer.folder_stalled`).
MAX_STALLED_FOLDERS = 3
# Messages whose sizes one FETCH asks for (`_batches`).
SIZES_AT_ONCE = 2000
# A batch the server will not give whole is asked for in this many groups, then the
# failing group one message at a time: about two new sessions per bad message.
ISOLATING_GROUPS = 10
# New sessions a run may open after the server ended one over a message; then it stops,
# keeping what it set aside (a server that ends every session cannot keep a run busy,
# nor sign in a hundred times over).
MAX_REOPEN = 100
# Answers about the server itself, not about a message: the folder's failure.
SERVER_WIDE = ("[UNAVAILABLE]", "[LIMIT]")
PERIOD_DAYS = {"1d": 1, "3d": 3, "1w": 7, "1m": 30, "3m": 91, "6m": 182, "all": None}
SKIPPED_BY_DEFAULT = {"\\trash", "\\junk"}


def period_start(account: EmailAccount, today: date | None = None) -> date | None:
    days = PERIOD_DAYS[account.sync_period]
    if days is None:
        return None
    return (today or timezone.localdate()) - timedelta(days=days)


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def size_batches(
    uids: list[int], sizes: dict[int, int], *, max_bytes: int, max_count: int
) -> Iterable[list[int]]:
    """Consecutive runs of `uids`, each under `max_bytes` (a larger message goes alone)
    and at most `max_count` long; a UID without a known size counts as zero."""
    batch: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if batch and (total + size > max_bytes or len(batch) >= max_count):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch


@dataclass
class FolderStatus:
    uidvalidity: int
    uidnext: int | None
    messages: int | None
    highestmodseq: int | None


def _folder_status(data: dict) -> FolderStatus:
    return FolderStatus(
        uidvalidity=int(data[b"UIDVALIDITY"]),
        uidnext=int(data[b"UIDNEXT"]) if b"UIDNEXT" in data else None,
        messages=int(data[b"MESSAGES"]) if b"MESSAGES" in data else None,
        highestmodseq=int(data[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in data else None,
    )


_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def fetch_bodies(client: IMAPClient, uids: list[int]) -> dict[int, tuple[bytes, bool]]:
    """Whole messages and their read flag by UID, read with imaplib's own framing (a
    line, then a literal of the announced length). IMAPClient's response parser turns
    every response into tokens first: measured, a third of a first sync's fetching
    CPU, for the two small items wanted around each body."""
    imap = imaplib_of(client)
    typ, data = imap.uid("FETCH", ",".join(map(str, uids)), "(UID FLAGS BODY.PEEK[])")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH failed: {data!r}"[:300])
    return fetched_bodies(data)


def fetch_sizes(client: IMAPClient, uids: list[int]) -> dict[int, int]:
    """Each message's size by UID, read like `fetch_bodies`: IMAPClient's tokenizer took
    0.45 s of CPU for the sizes of 10,000 messages, these regular expressions 0.11 s."""
    imap = imaplib_of(client)
    typ, data = imap.uid("FETCH", ",".join(map(str, uids)), "(UID RFC822.SIZE)")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH failed: {data!r}"[:300])
    sizes = {}
    for line in data:
        if not isinstance(line, bytes):
            continue
        uid, size = _UID.search(line), _SIZE.search(line)
        if uid is not None and size is not None:
            sizes[int(uid.group(1))] = int(size.group(1))
    return sizes


def fetched_bodies(data: list) -> dict[int, tuple[bytes, bool]]:
    """imaplib's FETCH data as {UID: (message, read)}."""
    found = {}
    for index, item in enumerate(data):
        # A message is (its response up to the literal, the literal), then the rest of
        # its response; a FETCH without a literal (a flag change the server volunteers
        # about another message) is a plain line and is skipped.
        if not isinstance(item, tuple):
            continue
        head, body = item
        rest = data[index + 1] if index + 1 < len(data) else b""
        text = head + b" " + (rest if isinstance(rest, bytes) else b"")
        uid = _UID.search(text)
        if uid is None:
            continue
        flags = _FLAGS.search(text)
        seen = flags is not None and b"\\seen" in flags.group(1).lower().split()
        found[int(uid.group(1))] = (body, seen)
    return found


def folders_refresh(*, account: EmailAccount, listed: list[ListedFolder]) -> list[Folder]:
    """The server's folder list, as the backend gave it, written to the database only
    where it changed: an idle re-sync should cost one LIST and one query, not a write
    per folder."""
    known = {folder.path: folder for folder in Folder.objects.filter(account=account)}
    listed_folders = []
    for entry in paths_apart(listed):
        values = {
            "delimiter": entry.delimiter,
            "special_use": entry.special_use,
            "selectable": entry.selectable,
            "exists_on_server": True,
        }
        if entry.server_id:
            values["server_id"] = entry.server_id
        folder = known.get(entry.path)
        if folder is not None and folder.server_id and entry.server_id != folder.server_id:
            # Another folder under the same path (deleted and made again, or the mailbox
            # read through another protocol): what was known of the old one goes.
            folder_forget(folder)
        if folder is None:
            folder = Folder.objects.create(account=account, path=entry.path, **values)
        elif any(getattr(folder, field) != value for field, value in values.items()):
            for field, value in values.items():
                setattr(folder, field, value)
            folder.save(update_fields=list(values))
        listed_folders.append(folder)
    listed_paths = {folder.path for folder in listed_folders}
    gone = [f.pk for path, f in known.items() if f.exists_on_server and path not in listed_paths]
    if gone:
        Folder.objects.filter(pk__in=gone).update(exists_on_server=False)
    return listed_folders


def paths_apart(listed: list[ListedFolder]) -> list[ListedFolder]:
    """`listed` with one path each. A server that names folders rather than paths
    (Exchange, Graph: "a/b" and "a b" both read "a b", as "/" is the delimiter) can
    list two under one path; the one with the smaller id keeps it, the others get a
    piece of their id after it, the same on every run."""
    by_path: dict[str, list[ListedFolder]] = {}
    for entry in listed:
        by_path.setdefault(entry.path, []).append(entry)
    if all(len(same) == 1 for same in by_path.values()):
        return listed
    taken = set(by_path)
    apart = []
    for entry in listed:
        same = by_path[entry.path]
        if len(same) > 1 and entry is not min(same, key=lambda e: e.server_id):
            path = f"{entry.path} ~{entry.server_id[-8:]}"
            while path in taken:
                path += "~"
            taken.add(path)
            entry = replace(entry, path=path)
        apart.append(entry)
    return apart


def folder_forget(folder: Folder) -> None:
    """Forget where the server kept a folder's messages and how far it was read: its
    locations and notes go (its emails stay, found again by their Message-ID), its
    state starts over."""
    with transaction.atomic():
        locations_forget(locations=EmailLocation.objects.filter(folder=folder))
        UnstoredMessage.objects.filter(folder=folder).delete()
        folder.sync_state, folder.synced_since, folder.messages = "", None, None
        folder.uidvalidity, folder.last_uid, folder.uidnext, folder.highestmodseq = (
            None,
            0,
            None,
            None,
        )
        folder.save(
            update_fields=[
                "sync_state", "synced_since", "messages", "uidvalidity", "last_uid", "uidnext",
                "highestmodseq",
            ]
        )  # fmt: skip


def folders_to_sync(account: EmailAccount, folders: list[Folder]) -> list[Folder]:
    """ "All folders": every selectable one but Trash and Junk unless chosen. "Customized":
    the chosen ones; a chosen parent brings its subfolders only when asked to, and then
    also those created later."""
    usable = [f for f in folders if f.selectable]
    if account.folder_mode != FolderMode.CUSTOM:
        return [f for f in usable if f.chosen or f.special_use not in SKIPPED_BY_DEFAULT]
    prefixes = tuple(f.path + f.delimiter for f in folders if f.include_subfolders and f.delimiter)
    return [f for f in usable if f.chosen or (prefixes and f.path.startswith(prefixes))]


class MailboxSyncer:
    """What every protocol's syncer shares (AccountSyncer over IMAP, sync.delta.DeltaSyncer
    over Exchange and Graph, siblings): the mailbox, the run it counts into, and the settings read
    once per run."""

    account: EmailAccount
    run: SyncRun

    @cached_property
    def create_contacts(self) -> bool:
        # Asked only when there is something to link: an idle run makes no query for it.
        return create_contacts_for_unknown_senders()

    @cached_property
    def size_limit(self) -> int:
        return message_size_limit()

    @cached_property
    def limits(self) -> Limits:
        return Limits(max_parts=message_parts_limit(), max_depth=message_depth_limit())

    def folders_to_sync(self, folders: list[Folder]) -> list[Folder]:
        """In the order of the run: those that failed last time last (each group in its
        order), so that one the server answers too slowly, or refuses, delays no other."""
        chosen = folders_to_sync(self.account, folders)
        return sorted(chosen, key=lambda folder: folder.failing_since is not None)

    def _count(self, stored: Stored) -> None:
        self.run.new_emails += stored.emails
        self.run.new_locations += stored.locations
        self.run.parse_problems += stored.problems

    def sync_folder(self, folder: Folder) -> None:
        """Read one folder (each protocol's syncer has its own)."""
        raise NotImplementedError

    def folder_refusal(self, error: Exception) -> str | None:
        """If `error`, met reading one folder, is that folder's trouble (the server
        refused to read it), what the server said; None if it is the run's (the
        connection, the sign-in, a busy server, our own database). Each protocol's."""
        raise NotImplementedError

    def folder_stalled(self, error: Exception) -> str | None:
        """If `error`, met reading one folder, is the server answering too slowly there
        and the run can go on with the next folder (in a new session), what to say on
        the folder; None if it ends the run. Each protocol's; none by default."""
        return None

    def sync_folder_isolated(self, folder: Folder) -> None:
        """`sync_folder`, where the server's refusal of a folder (`folder_refusal`), or
        its answering too slowly there (`folder_stalled`), is the folder's trouble,
        recorded on it and shown, and the run goes on to the next folder. Anything else
        still ends the run."""
        self.progress.folder_started(folder.path)
        try:
            self.sync_folder(folder)
        except Exception as error:
            said = self.folder_refusal(error)
            if said is not None:
                message = f"The server refused to read this folder: {said}"[:1000]
            elif (message := self.folder_stalled(error)) is None:
                raise
            now = timezone.now()
            Folder.objects.filter(pk=folder.pk).update(
                last_error=message, failing_since=folder.failing_since or now
            )
            self.run.folder_errors += 1
            self.progress.folder_finished(folder.path)
            return
        if folder.last_error or folder.failing_since:
            Folder.objects.filter(pk=folder.pk).update(last_error="", failing_since=None)
        self.progress.folder_finished(folder.path)


class AccountSyncer(MailboxSyncer):
    def __init__(
        self, *, account: EmailAccount, client: IMAPClient, run: SyncRun, renew=None,
        open_session=None,
    ):  # fmt: skip
        self.account = account
        self.renew = renew or (lambda: None)
        self.client = client
        self.run = run
        capabilities = client.capabilities()
        self.condstore = b"CONDSTORE" in capabilities
        # With QRESYNC the server names the UIDs expunged since our last modseq
        # (VANISHED), instead of us asking for every UID of a folder to compare. Turned
        # on at the first SELECT, so an idle run does not pay the round trip.
        self.qresync = self.condstore and b"QRESYNC" in capabilities
        self.qresync_enabled = False
        self.list_status = b"LIST-STATUS" in capabilities
        self.special_use = b"SPECIAL-USE" in capabilities
        self.statuses: dict[str, dict] = {}
        self.store = Store(account=account, create_contacts=lambda: self.create_contacts)
        # Makes, in this (the storing) thread, a way to open a new signed-in session from
        # the fetching thread, for going on after the server ended one over a message it
        # cannot read (`_reopen_after`); None: such a run ends.
        self.session_opener = open_session
        self.open_session = None
        self.reopened = 0
        self.stalled = 0  # folders given up for a server too slow there (`folder_stalled`)
        self.session_spent = False  # closed by `folder_stalled`: the next folder opens one
        self.ended: MailError | None = None
        self.selected: str | None = None
        # A UID of the selected folder the server gave before (its newest stored one).
        self.canary: int | None = None
        self.refused: dict[int, str] = {}  # UIDs set aside while asking for sizes
        self.progress = RunProgress(run)

    # -- folders -------------------------------------------------------------

    def refresh_folders(self) -> list[Folder]:
        if self.list_status:
            listing, self.statuses = list_with_status(
                self.client, self._status_items, special_use=self.special_use
            )
        else:
            listing = self.client.list_folders()
        return folders_refresh(account=self.account, listed=imap_listing(listing))

    def progress_start(self, folders: list[Folder]) -> None:
        """The run's folders, for its progress. In a first download of any of them, the
        messages each holds: the status every folder's turn reads anyway, asked for all
        of them now (LIST-STATUS may have brought them already), kept for their turn."""
        counts = None
        if any(folder.uidvalidity is None for folder in folders):
            counts = {}
            for folder in folders:
                data = self.statuses.get(folder.path)
                if data is None:
                    try:
                        data = self.client.folder_status(folder.path, self._status_items)
                    except imaplib.IMAP4.abort:
                        raise
                    except imaplib.IMAP4.error:
                        continue  # its turn asks again, and notes the refusal
                    self.statuses[folder.path] = data
                counts[folder.path] = _folder_status(data).messages or 0
        self.progress.start(folders, counts)

    # -- one folder ----------------------------------------------------------

    @property
    def _status_items(self) -> list[bytes]:
        items = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"]
        if self.condstore:
            items.append(b"HIGHESTMODSEQ")
        return items

    def status(self, folder: Folder) -> FolderStatus:
        # Given by LIST-STATUS when the server has it; the folder's turn may come later
        # in a long run, and a change since then is seen by the next run.
        data = self.statuses.pop(folder.path, None)
        if data is None:
            data = self.client.folder_status(folder.path, self._status_items)
        return _folder_status(data)

    def folder_refusal(self, error: Exception) -> str | None:
        """The server's refusal (NO, BAD) is the folder's; a broken connection
        (imaplib's abort) is the run's."""
        if isinstance(error, imaplib.IMAP4.abort) or not isinstance(error, imaplib.IMAP4.error):
            return None
        return str(error)

    def folder_stalled(self, error: Exception) -> str | None:
        """A folder the server answers too slowly (the read timed out: a huge folder on
        a slow server) stopped every run there, and the folders after it were never
        read. The session, left in the middle of an answer, is replaced and the run goes
        on; at most MAX_STALLED_FOLDERS a run (a server slow for every folder ends it as
        before), and the folder comes last in the next runs (`MailboxSyncer.folders_to_sync`)."""
        if not isinstance(error, TimeoutError) or self.session_opener is None:
            return None
        if self.stalled >= MAX_STALLED_FOLDERS:
            return None
        self.stalled += 1
        _quietly_close(self.client)
        # A new session for the next folder, opened by it: after the run's last folder,
        # a sign-in failing now would turn a run that read every other folder into a
        # failed one.
        self.session_spent = True
        how = (
            str(error)  # it kept sending, too slowly (mail/pace.py)
            if isinstance(error, Overdue)
            else f"more than {settings.MAIL_CONNECT_TIMEOUT} seconds"
        )
        return (
            f"The server did not answer in time while this folder was read ({how}). It is "
            "read again on the next download, after the other folders."
        )

    def sync_folder(self, folder: Folder) -> None:
        if self.session_spent:
            if self.open_session is None:
                self.open_session = self.session_opener()
            self.client = self.open_session()
            self.session_spent = False
            self.qresync_enabled = False  # the new session's first SELECT turns it on again
            self.selected = None
        # Set aside while asking for sizes, or a canary, in a folder that failed: that
        # folder's, never this one's (its next run asks for them again).
        self.refused, self.canary = {}, None
        since = period_start(self.account)
        status = self.status(folder)
        unchanged = (
            folder.uidvalidity == status.uidvalidity
            and folder.uidnext is not None
            and folder.uidnext == status.uidnext
            and folder.messages == status.messages
            and not _period_extended(folder, since)
            and not folder.last_error
            and (folder.retry_at is None or folder.retry_at > timezone.now())
        )
        if unchanged:
            if status.highestmodseq is not None:
                if folder.highestmodseq == status.highestmodseq:
                    return
            # Without CONDSTORE nothing in the status shows a message read elsewhere: a
            # folder with stored mail has its flags asked for every run (a bounded slice).
            elif not folder.last_uid:
                return
        if self.qresync and not self.qresync_enabled:
            self.client.enable("QRESYNC")  # valid only before the session's first SELECT
            self.qresync_enabled = True
        self.client.select_folder(folder.path, readonly=True)
        self.selected = folder.path
        if folder.uidvalidity is not None and folder.uidvalidity != status.uidvalidity:
            # The server renumbered the folder: its old UIDs mean nothing now. The emails
            # stay; their locations are found again by Message-ID or fingerprint. Only
            # the claim holder judges that: a run that lost its claim compares with the
            # folder as it read it at its start, and would delete the new holder's work.
            self.renew()
            removed = locations_forget(locations=EmailLocation.objects.filter(folder=folder))
            UnstoredMessage.objects.filter(folder=folder).delete()
            self.run.removed_locations += removed
            folder.last_uid = 0
            folder.synced_since = None
            folder.highestmodseq = None
            folder.messages = None
            folder.flags_checked_below = 0
        uidvalidity = status.uidvalidity
        folder.uidvalidity = uidvalidity
        locations = EmailLocation.objects.filter(folder=folder, uidvalidity=uidvalidity)

        new, older = self._wanted_uids(folder, since)
        # Messages earlier runs could not store wait for their turn (`_retry_unstored`),
        # not to be asked for again by every run.
        noted = {
            n.uid: n for n in UnstoredMessage.objects.filter(folder=folder, uidvalidity=uidvalidity)
        }
        candidates = (set(new) | set(older)) - set(noted)
        # Stored already: by an interrupted run, or older mail when the period grew.
        stored = _stored_among(locations, candidates)
        missing = sorted(candidates - stored, reverse=True)
        if missing or noted:
            self.canary = locations.order_by("-uid").values_list("uid", flat=True).first()
        # Newest first, so the user sees recent mail early in a long first sync.
        for fetched in self._fetched(missing):
            self._store_fetched(folder, uidvalidity, fetched)
        self._retry_unstored(folder, uidvalidity, locations, noted)

        # The folder's flags, removals and position are the claim holder's to write too.
        self.renew()
        if folder.last_uid:
            self._apply_changes(folder, locations, status, new_count=len(new))

        folder.last_uid = max([folder.last_uid, *new]) if new else folder.last_uid
        folder.retry_at = _next_retry(folder, uidvalidity)
        folder.uidnext = status.uidnext
        folder.messages = status.messages
        folder.highestmodseq = status.highestmodseq
        if since is None or folder.synced_since is None or since < folder.synced_since:
            folder.synced_since = since
        # Only what the sync owns: a folder choice saved during the run stands.
        folder.save(update_fields=SYNC_FIELDS)
        self.run.folders += 1

    def _store_fetched(self, folder: Folder, uidvalidity: int, fetched: "FetchedBatch") -> Stored:
        # Before storing, not after: a run whose claim another run took while this batch
        # was being fetched stops here (ClaimLost) instead of storing it alongside the
        # other run. Renewed, the claim holds for a whole lease, longer than a store.
        self.renew()
        stored = self.store.batch(folder, uidvalidity, fetched.items)
        for uid, error in fetched.unstored.items():
            stored.add(self.store.unstored(folder, uidvalidity, uid, error))
        self._count(stored)
        self.progress.handled(len(fetched.items) + len(fetched.unstored))
        # Counts saved per batch: the status's progress reads them.
        self.run.save_progress()
        return stored

    def _retry_unstored(
        self, folder: Folder, uidvalidity: int, locations, noted: dict[int, UnstoredMessage]
    ) -> None:
        """Messages earlier runs could not store, tried again, each less often the more
        it failed (a server that ends the session over a message must not cost every run
        a reconnection), at most RETRY_UNSTORED a run, fetched like any other."""
        now = timezone.now()
        due = sorted(
            (n for n in noted.values() if n.last_failed_at + retry_after(n.attempts) <= now),
            key=lambda n: n.last_failed_at,
        )[:RETRY_UNSTORED]
        if not due:
            return
        uids = {n.uid for n in due}
        asked = uids - _stored_among(locations, uids)  # some may be stored meanwhile
        # Messages a run only did not get to (it had opened all its sessions) are asked
        # for in batches as usual; those the server refused themselves, one at a time,
        # so that each costs one refusal and none holds back the others.
        waiting = {n.uid for n in due if n.error.startswith(NOT_ASKED)} & asked
        answered: set[int] = set()
        rounds = [sorted(waiting, reverse=True)]
        rounds += [[uid] for uid in sorted(asked - waiting, reverse=True)]
        notes = UnstoredMessage.objects.filter(folder=folder, uidvalidity=uidvalidity)
        for uids_of_round in rounds:
            for fetched in self._fetched(uids_of_round):
                self._store_fetched(folder, uidvalidity, fetched)
                given = {item.uid for item in fetched.items}
                answered |= given | set(fetched.unstored)
                # A note goes once its message is stored (one refused again was noted
                # again by the store), batch by batch: a run that ends early keeps
                # what it got.
                notes.filter(uid__in=_stored_among(locations, given)).delete()
        # And once its message is gone from the server: asked for, neither given nor
        # refused; or stored meanwhile by some other way.
        notes.filter(uid__in=(asked - answered) | (uids - asked)).delete()

    def _fetched(self, uids: list[int]) -> Iterator["FetchedBatch"]:
        """Each batch fetched and parsed, the next ones on their way while the caller
        stores this one: a helper thread reads READ_AHEAD batches ahead and hands each
        to the parser process (sync/parsing_process.py), so the server streams, the
        parser parses and this thread stores at once. Only the helper thread touches the
        IMAP connection, only the caller the database: while it waits for a long fetch
        (a large message, a slow server) or a parse, the caller renews the mailbox's
        claim. Temporary files of large messages go with their batch,
        whatever becomes of it."""
        if not uids:
            return
        # Read here: the helper thread never touches the database.
        self.size_limit, self.limits  # noqa: B018
        if self.open_session is None and self.session_opener is not None:
            self.open_session = self.session_opener()
        batches = self._batches(uids)

        # Set once a fetch failed or the caller stopped: the batches queued ahead are
        # not read then (on a connection known to be broken, for a run that ended).
        stopping = threading.Event()

        def fetch_next() -> FetchedBatch | None:
            if self.ended is not None or stopping.is_set():
                return None
            try:
                batch = next(batches, None)
                if batch is None:
                    return None
                return self._fetch_and_parse(*batch)
            except BaseException:
                stopping.set()
                raise

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-fetch") as pool:
            # The helper reads READ_AHEAD batches ahead (one at a time, in order), so the
            # parser process always has the next one while this thread stores.
            pending = deque(pool.submit(fetch_next) for _ in range(READ_AHEAD))
            try:
                while True:
                    # Waited for, then read: the wait's own timeout and a fetch that timed
                    # out are the same class (concurrent.futures.TimeoutError is
                    # TimeoutError), and a server that stopped answering mid-FETCH was
                    # taken for a long fetch, waited for again and again, for ever.
                    if not wait([pending[0]], timeout=RENEW_WHILE_WAITING).done:
                        self.renew()
                        continue
                    fetched = pending[0].result()
                    pending.popleft()
                    if fetched is None:
                        if self.ended is not None:
                            raise self.ended  # never a quiet end for a run that must stop
                        return
                    pending.append(pool.submit(fetch_next))
                    try:
                        fetched.parsed(waiting=self.renew)
                        yield fetched
                    finally:
                        fetched.cleanup()
                    if fetched.ended is not None:
                        raise fetched.ended
            finally:
                # Batches fetched ahead that will not be stored (the run failed or
                # ended): those not begun are not read, the others' temporary files go.
                stopping.set()
                for future in pending:
                    if not future.cancel():
                        with contextlib.suppress(Exception):
                            ahead = future.result()
                            if ahead is not None:
                                ahead.cleanup()

    def _batches(self, uids: list[int]) -> Iterator[tuple[list[int], dict[int, int]]]:
        # Sizes are asked for a few thousand at a time (about 40 bytes each on the wire),
        # so the first emails are stored before the sizes of the last are known.
        for chunk in _chunks(uids, SIZES_AT_ONCE):
            try:
                sizes = self._sizes(chunk)
            except _SessionsSpent as spent:
                # The batch carries what was set aside to be noted, and ends the run (the
                # folder's position not saved): the messages not asked for, of this chunk
                # and those after it, are the next run's as any others. Returning quietly
                # here went on as if the folder were done, its position past them.
                self.ended = spent.failure
                yield [], {}
                return
            known = [uid for uid in chunk if uid not in self.refused]
            for batch in size_batches(known, sizes, max_bytes=BATCH_BYTES, max_count=BATCH):
                yield batch, sizes
            if self.refused:
                yield [], {}  # carries what was set aside to be noted

    def _sizes(self, uids: list[int]) -> dict[int, int]:
        """The messages' sizes; a message whose size the server will not give (it ends
        the session over it, or answers NO) is found by asking in groups, then one by
        one, and set aside in `refused`."""
        try:
            return fetch_sizes(self.client, uids)
        except imaplib.IMAP4.error as error:
            self._after_refusal(error, several=len(uids) > 1)
            if len(uids) == 1:
                self.refused[uids[0]] = _refused(error)
                return {}
            sizes: dict[int, int] = {}
            for group in _chunks(uids, max(1, len(uids) // ISOLATING_GROUPS)):
                sizes |= self._sizes(group)
            return sizes

    def _after_refusal(self, error: imaplib.IMAP4.error, *, several: bool) -> None:
        """What a refusal means before the messages are asked for in groups: a session
        the server ended is opened again (`_reopen_after`); a NO about the server itself,
        not about a message, is the folder's failure, raised as it is: one that says so
        (UNAVAILABLE, LIMIT), or, for several messages, one the server gives again for a
        message it gave before (`canary`), which no message of the batch can cause."""
        if isinstance(error, imaplib.IMAP4.abort):
            self._reopen_after(error)
        elif any(code in str(error).upper() for code in SERVER_WIDE):
            raise error
        elif several and self.canary is not None:
            try:
                typ, _data = imaplib_of(self.client).uid(
                    "FETCH", str(self.canary), "(UID BODY.PEEK[HEADER])"
                )
            except imaplib.IMAP4.abort:
                raise error from None
            except imaplib.IMAP4.error:
                typ = "NO"
            if typ != "OK":
                raise error

    def _reopen_after(self, error: imaplib.IMAP4.abort) -> None:
        """Some servers end the session over one message they cannot read (Dovecot: "BYE
        FETCH failed: Internal error" for a message file it cannot open), and would do so
        again on every run: a new session goes on without that message (finding each
        such message costs about two). A cut connection is not that, and ends the run as
        before. A run opens at most MAX_REOPEN sessions: then it stops, keeping what it
        set aside, and the next run goes on from there."""
        # imaplib keeps the server's BYE among the untagged responses; a cut connection
        # leaves none, whatever the error's text says.
        said_bye = bool(imaplib_of(self.client).untagged_responses.get("BYE"))
        if not (said_bye and self.open_session):
            raise error
        if self.reopened >= MAX_REOPEN:
            raise _SessionsSpent(error)
        self.reopened += 1
        _quietly_close(self.client)
        self.client = self.open_session()
        if self.qresync_enabled:
            self.client.enable("QRESYNC")
        if self.selected:
            self.client.select_folder(self.selected, readonly=True)

    def _wanted_uids(self, folder: Folder, since: date | None) -> tuple[list[int], list[int]]:
        """The UIDs above the last one stored (all of them: new mail is new whatever its
        date) and, when the period grew or on the first run, the older ones it takes in."""
        if folder.last_uid == 0:
            criteria = ["SINCE", since] if since else ["ALL"]
            return self.client.search(criteria), []
        # "n:*" always matches the highest UID, even one we have: filter it.
        new = [
            u
            for u in self.client.search(["UID", f"{folder.last_uid + 1}:*"])
            if u > folder.last_uid
        ]
        older = []
        if _period_extended(folder, since):
            criteria = ["BEFORE", folder.synced_since] + (["SINCE", since] if since else [])
            older = [u for u in self.client.search(criteria) if u <= folder.last_uid]
        return new, older

    def _fetch_and_parse(self, uids: list[int], sizes: dict[int, int]) -> "FetchedBatch":
        """The batch's messages, parsed; what the server will not give goes to `unstored`
        with its words, never silently skipped. If the run has opened all the sessions
        it may, the rest of the batch is noted to be asked for later, and the batch says
        the run must end."""
        result = FetchedBatch(unstored=self._take_refused())
        try:
            self._fetch_into(result, uids, sizes)
        except _SessionsSpent as spent:
            done = {item.uid for item in result.items} | {uid for uid, _raw, _seen in result.raw}
            for uid in uids:
                if uid not in done:
                    result.unstored.setdefault(uid, _not_asked(spent))
            result.ended = self.ended = spent.failure
        if self.ended is not None:
            result.ended = self.ended  # set while the batches were made (`_batches`)
        # Parsed beside this thread (sync/parsing_process.py): it goes on to read the
        # next batch meanwhile.
        result.parsing = parse_later([raw for _uid, raw, _seen in result.raw], self.limits)
        return result

    def _fetch_into(self, result: "FetchedBatch", uids: list[int], sizes: dict[int, int]) -> None:
        if not uids:
            return
        try:
            if len(uids) == 1 and sizes.get(uids[0], 0) > LARGE:
                result.items.append(self.large(uids[0], sizes[uids[0]]))
                return
            response = fetch_bodies(self.client, uids)
        except imaplib.IMAP4.error as error:
            # One message the server will not give fails the whole FETCH (with NO, or by
            # ending the session): the batch is asked for in groups, then one by one,
            # and only that message is set aside.
            self._after_refusal(error, several=len(uids) > 1)
            if len(uids) == 1:
                result.unstored[uids[0]] = _refused(error)
                return
            for group in _chunks(uids, max(1, len(uids) // ISOLATING_GROUPS)):
                self._fetch_into(result, group, sizes)
            return
        absent = [uid for uid in uids if uid not in response]
        if absent:
            # Expunged between SEARCH and FETCH, or a server that answered OK without
            # the message: only the second is worth noting.
            still = set(self.client.search(["UID", sequence_set(absent)]))
            for uid in absent:
                if uid in still:
                    result.unstored[uid] = "The server listed this message but did not send it."
        for uid in uids:
            item = response.pop(uid, None)
            if item is not None:
                result.raw.append((uid, *item))

    def _take_refused(self) -> dict[int, str]:
        refused, self.refused = self.refused, {}
        return refused

    def large(self, uid: int, size: int) -> Fetched:
        from .large import fetch_large

        return fetch_large(self.client, uid, size, limit=self.size_limit, limits=self.limits)

    def _apply_changes(
        self, folder: Folder, locations, status: FolderStatus, *, new_count: int
    ) -> None:
        """Flags and expunges since the last run, as cheaply as the server allows: no
        query here reads all of a folder's stored UIDs but the one after an expunge."""
        gone: set[int] = set()
        if self.condstore and folder.highestmodseq and status.highestmodseq is not None:
            # Only what changed since the last run's modseq; with QRESYNC the server also
            # names the UIDs expunged since (VANISHED).
            seen, vanished = fetch_changed_flags(
                self.client, folder.highestmodseq, vanished=self.qresync_enabled
            )
            if self.qresync_enabled and vanished:
                gone = _stored_in_ranges(locations, vanished)
        else:
            checked = self._flag_slice(folder, locations)
            seen = fetch_flags(self.client, checked)
            # Asked by UID, the server answers for those it still has.
            gone = {uid for uid in checked if uid not in seen}
        self.run.flag_changes += _seen_apply(locations, seen)
        # Fewer messages on the server than the last run's count and the new ones make:
        # some were expunged. Only then is the (larger) list of UIDs asked for.
        if not (self.condstore and self.qresync_enabled) and folder.messages is not None:
            expected = folder.messages + new_count
            if status.messages is not None and status.messages < expected:
                stored = set(locations.values_list("uid", flat=True))
                if stored:
                    present = self.client.search(["UID", f"{min(stored)}:{max(stored)}"])
                    gone |= stored - set(present)
        if gone:
            removed = locations_forget(locations=locations.filter(uid__in=gone))
            self.run.removed_locations += removed

    def _flag_slice(self, folder: Folder, locations) -> list[int]:
        """The stored UIDs whose flags this run asks for without CONDSTORE: the newest
        FLAGS_NEWEST every run (where reading happens), and the next FLAGS_SLICE older
        ones below where the last run stopped, starting over from the top at the end."""
        uids = locations.order_by("-uid").values_list("uid", flat=True)
        newest = list(uids[:FLAGS_NEWEST])
        if len(newest) < FLAGS_NEWEST:
            folder.flags_checked_below = 0
            return newest
        older = uids.filter(uid__lt=newest[-1])
        if folder.flags_checked_below:
            older = older.filter(uid__lt=folder.flags_checked_below)
        older = list(older[:FLAGS_SLICE])
        folder.flags_checked_below = older[-1] if len(older) == FLAGS_SLICE else 0
        return newest + older


@dataclass
class FetchedBatch:
    items: list[Fetched] = field(default_factory=list)
    unstored: dict[int, str] = field(default_factory=dict)  # UID: why
    # (UID, raw message, seen) as the server gave them, until `parsed()` makes them items.
    raw: list[tuple[int, bytes, bool]] = field(default_factory=list)
    parsing: Parsed | None = None

    # The run must end after this batch: it opened all the sessions it may.
    ended: MailError | None = None

    def parsed(self, waiting=None) -> None:
        """The raw messages parsed and among the items (in the storing thread, which
        `waiting` keeps alive while the parser is at work)."""
        if self.parsing is None:
            return
        # Forgotten by `cleanup` if this raises (`waiting` lost the claim).
        results = self.parsing.result(waiting)
        self.parsing = None
        for (uid, raw, seen), parsed in zip(self.raw, results, strict=True):
            self.items.append(Fetched(uid=uid, parsed=parsed, seen=seen, size=len(raw), raw=raw))
        self.raw = []

    def cleanup(self) -> None:
        if self.parsing is not None:
            self.parsing.forget()
        for item in self.items:
            if item.spooled is not None:
                item.spooled.cleanup()


class _SessionsSpent(Exception):
    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.failure = MailError(
            "connection_lost",
            f"The mail server kept ending the session ({error}); the messages it would not "
            "give are set aside and tried again later.",
        )


NOT_ASKED = "Not asked for yet"


def _not_asked(spent: _SessionsSpent) -> str:
    return (
        f"{NOT_ASKED}: the server kept ending the session; it is asked for again later ({spent})."
    )[:1000]


# The fields of a folder a sync run writes (not the owner's choice of folders).
SYNC_FIELDS = [
    "uidvalidity", "last_uid", "uidnext", "messages", "highestmodseq", "synced_since",
    "flags_checked_below", "retry_at",
]  # fmt: skip


def _stored_among(locations, uids: set[int]) -> set[int]:
    """Which of `uids` the folder holds already, asked in chunks (a first sync's are
    many)."""
    found: set[int] = set()
    for chunk in _chunks(sorted(uids), 5000):
        found |= set(locations.filter(uid__in=chunk).values_list("uid", flat=True))
    return found


def _stored_in_ranges(locations, ranges: list[tuple[int, int]]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(ranges), 100):
        condition = Q()
        for low, high in ranges[start : start + 100]:
            condition |= Q(uid__range=(low, high))
        found |= set(locations.filter(condition).values_list("uid", flat=True))
    return found


def retry_after(attempts: int) -> timedelta:
    return min(timedelta(minutes=2**attempts), timedelta(days=1))


def _next_retry(folder: Folder, uidvalidity: int):
    noted = UnstoredMessage.objects.filter(folder=folder, uidvalidity=uidvalidity)
    return min(
        (
            n.last_failed_at + retry_after(n.attempts)
            for n in noted.only("attempts", "last_failed_at")
        ),
        default=None,
    )


def _refused(error: Exception) -> str:
    if isinstance(error, imaplib.IMAP4.abort):
        return f"The server ended the session when asked for this message ({error})."[:1000]
    return f"The server refused to give this message ({error})."[:1000]


def _quietly_close(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


def sequence_set(uids: Iterable[int]) -> str:
    """UIDs as an IMAP sequence set, runs written as ranges ("1:5,7,9:12")."""
    parts = []
    ordered = sorted(set(uids))
    start = previous = None
    for uid in ordered:
        if previous is not None and uid == previous + 1:
            previous = uid
            continue
        if start is not None:
            parts.append(f"{start}:{previous}" if previous != start else str(start))
        start = previous = uid
    if start is not None:
        parts.append(f"{start}:{previous}" if previous != start else str(start))
    return ",".join(parts)


def fetch_flags(client: IMAPClient, uids: list[int]) -> dict[int, bool]:
    """{UID: read} of those of `uids` the server still has, read like `fetch_sizes`; the
    flag compared without regard to case (some servers send `\\seen`)."""
    if not uids:
        return {}
    typ, data = imaplib_of(client).uid("FETCH", sequence_set(uids), "(UID FLAGS)")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH failed: {data!r}"[:300])
    return _seen_by_uid(data)


def fetch_changed_flags(
    client: IMAPClient, modseq: int, *, vanished: bool
) -> tuple[dict[int, bool], list[tuple[int, int]]]:
    """{UID: read} of the messages changed since `modseq` (CONDSTORE), in one command
    for the whole folder, and with QRESYNC the UID ranges expunged since."""
    imap = imaplib_of(client)
    # imapclient passes untagged VANISHED responses by; they wait in imaplib's table.
    imap.untagged_responses.pop("VANISHED", None)
    modifiers = f"(CHANGEDSINCE {modseq}{' VANISHED' if vanished else ''})"
    typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS)", modifiers)
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH failed: {data!r}"[:300])
    return _seen_by_uid(data), _uid_set_ranges(imap.untagged_responses.pop("VANISHED", []))


def _seen_by_uid(data: list) -> dict[int, bool]:
    seen = {}
    for line in data:
        if isinstance(line, tuple):
            line = line[0]
        if not isinstance(line, bytes):
            continue
        uid, flags = _UID.search(line), _FLAGS.search(line)
        if uid is not None and flags is not None:
            seen[int(uid.group(1))] = b"\\seen" in flags.group(1).lower().split()
    return seen


def _seen_apply(locations, seen: dict[int, bool]) -> int:
    """Write read flags that changed, in two queries whatever their number."""
    if not seen:
        return 0
    current = dict(locations.filter(uid__in=list(seen)).values_list("uid", "email__seen"))
    changed = {True: set(), False: set()}
    for uid, flag in seen.items():
        if uid in current and current[uid] != flag:
            changed[flag].add(uid)
    updated = 0
    for flag, uids in changed.items():
        if uids:
            updated += emails_seen_set(locations=locations.filter(uid__in=uids), seen=flag)
    return updated


def _uid_set_ranges(responses: list) -> list[tuple[int, int]]:
    """The UID ranges of untagged `VANISHED (EARLIER) 41,43:116` responses."""
    ranges = []
    for response in responses:
        text = response.decode("ascii", "replace") if isinstance(response, bytes) else str(response)
        for part in text.replace("(EARLIER)", " ").split()[-1:]:
            for item in part.split(","):
                low, _colon, high = item.partition(":")
                if low.isdigit() and (not high or high.isdigit()):
                    first, last = int(low), int(high or low)
                    ranges.append((min(first, last), max(first, last)))
    return ranges


def _period_extended(folder: Folder, since: date | None) -> bool:
    """Whether the user asked for older mail than the folder holds. No `synced_since`
    means never synced, or synced with "all": nothing older to fetch either way."""
    if folder.synced_since is None:
        return False
    return since is None or since < folder.synced_since
