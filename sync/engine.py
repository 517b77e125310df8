"""Downloading one mailbox over IMAP.

Guarantees: an email is stored once per mailbox (keyed by Message-ID, or a
fingerprint), each server copy once per (folder, UIDVALIDITY, UID); every batch is
committed on its own, so a run cut at any point is resumed by the next one without
loss or duplicates; a message that cannot be parsed is stored with its raw source.
"""

import imaplib
import re
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property

from django.db import connection, transaction
from django.utils import timezone
from imapclient import IMAPClient
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_response
from imapclient.util import chunk as pairs_of

from accounts.models import EmailAccount, FolderMode
from crm.services import contacts_link
from systemsettings.selectors import create_contacts_for_unknown_senders

from .bulk import insert_rows, insert_rows_skipping_existing
from .files import ATTACHMENTS, WrittenFiles, files_for_transaction
from .models import Attachment, Email, EmailLocation, Folder, SyncRun
from .parsing import ParsedEmail, parse_message

# A batch is one FETCH and one transaction. Bounded in bytes as well as in count, so a
# folder of large messages does not raise the worker's memory: the raw batch exists a
# few times over (the response, the parsed bodies, the rows being sent).
BATCH = 200
BATCH_BYTES = 3_000_000
PERIOD_DAYS = {"1d": 1, "3d": 3, "1w": 7, "1m": 30, "3m": 91, "6m": 182, "all": None}
SKIPPED_BY_DEFAULT = {"\\trash", "\\junk"}
SPECIAL_USE = {"\\sent", "\\trash", "\\junk", "\\drafts", "\\archive", "\\all", "\\flagged"}
# Not IMAP's: an Exchange address book folder (offered in the Contacts settings).
CONTACTS = "\\contacts"


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


def list_with_status(
    client: IMAPClient, items: list[bytes], *, special_use: bool
) -> tuple[list, dict]:
    """LIST-STATUS (RFC 5819): every folder and its status in one round trip, where a
    STATUS per folder would take one each. Returns list_folders()'s triples and
    {path: status items}; a folder the server gave no status for is simply missing."""
    imap = client._imap
    wanted = b" ".join(items).decode()
    # With RETURN options a server gives the special-use flags only when asked.
    options = f"{'SPECIAL-USE ' if special_use else ''}STATUS ({wanted})"
    typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", f"({options})")
    client._checkok("list", typ, data)
    typ, data = imap._untagged_response(typ, data, "LIST")
    folders = client._proc_folder_list(data)
    lines = [line for line in imap.untagged_responses.pop("STATUS", []) if line]
    statuses = {}
    for name, values in pairs_of(parse_response(lines), size=2):
        if isinstance(name, int):
            name = str(name)
        elif client.folder_encode:
            name = decode_utf7(name)
        statuses[name] = dict(pairs_of(values, size=2))
    return folders, statuses


_UID = re.compile(rb"\bUID (\d+)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


def fetch_bodies(client: IMAPClient, uids: list[int]) -> dict[int, tuple[bytes, bool]]:
    """Whole messages and their read flag by UID, read with imaplib's own framing (a
    line, then a literal of the announced length). IMAPClient's response parser turns
    every response into tokens first: measured, a third of a first sync's fetching
    CPU, for the two small items wanted around each body."""
    imap = client._imap
    typ, data = imap.uid("FETCH", ",".join(map(str, uids)), "(UID FLAGS BODY.PEEK[])")
    if typ != "OK":
        raise imaplib.IMAP4.error(f"UID FETCH failed: {data!r}"[:300])
    return fetched_bodies(data)


def fetch_sizes(client: IMAPClient, uids: list[int]) -> dict[int, int]:
    """Each message's size by UID, read like `fetch_bodies`: IMAPClient's tokenizer took
    0.45 s of CPU for the sizes of 10,000 messages, these regular expressions 0.11 s."""
    imap = client._imap
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


def folders_refresh(
    *, account: EmailAccount, client: IMAPClient, listed: list | None = None
) -> list[Folder]:
    """The server's folder list (or the one already `listed`), written to the database
    only where it changed: an idle re-sync should cost one LIST and one query, not a
    write per folder."""
    known = {folder.path: folder for folder in Folder.objects.filter(account=account)}
    listed_folders = []
    for flags, delimiter, name in client.list_folders() if listed is None else listed:
        lowered = {f.decode(errors="replace").lower() for f in flags}
        values = {
            "delimiter": (delimiter or b"").decode(errors="replace"),
            "special_use": min((f for f in lowered if f in SPECIAL_USE | {CONTACTS}), default=""),
            "selectable": "\\noselect" not in lowered and "\\nonexistent" not in lowered,
            "exists_on_server": True,
        }
        folder = known.get(name)
        if folder is None:
            folder = Folder.objects.create(account=account, path=name, **values)
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


def folders_to_sync(account: EmailAccount, folders: list[Folder]) -> list[Folder]:
    """ "All folders": every selectable one but Trash and Junk unless chosen. "Customized":
    the chosen ones; a chosen parent brings its subfolders only when asked to, and then
    also those created later."""
    usable = [f for f in folders if f.selectable]
    if account.folder_mode != FolderMode.CUSTOM:
        return [f for f in usable if f.chosen or f.special_use not in SKIPPED_BY_DEFAULT]
    prefixes = tuple(f.path + f.delimiter for f in folders if f.include_subfolders and f.delimiter)
    return [f for f in usable if f.chosen or (prefixes and f.path.startswith(prefixes))]


class AccountSyncer:
    def __init__(self, *, account: EmailAccount, client: IMAPClient, run: SyncRun, renew=None):
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
        self.own_domains = {account.address.split("@", 1)[-1]}

    @cached_property
    def create_contacts(self) -> bool:
        # Asked only when there is something to link: an idle run makes no query for it.
        return create_contacts_for_unknown_senders()

    # -- folders -------------------------------------------------------------

    def refresh_folders(self) -> list[Folder]:
        listed = None
        if self.list_status:
            listed, self.statuses = list_with_status(
                self.client, self._status_items, special_use=self.special_use
            )
        return folders_refresh(account=self.account, client=self.client, listed=listed)

    def folders_to_sync(self, folders: list[Folder]) -> list[Folder]:
        return folders_to_sync(self.account, folders)

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

    def sync_folder(self, folder: Folder) -> None:
        since = period_start(self.account)
        status = self.status(folder)
        unchanged = (
            folder.uidvalidity == status.uidvalidity
            and folder.uidnext is not None
            and folder.uidnext == status.uidnext
            and folder.messages == status.messages
            and (status.highestmodseq is None or folder.highestmodseq == status.highestmodseq)
            and not _period_extended(folder, since)
        )
        if unchanged:
            return
        if self.qresync and not self.qresync_enabled:
            self.client.enable("QRESYNC")  # valid only before the session's first SELECT
            self.qresync_enabled = True
        self.client.select_folder(folder.path, readonly=True)
        if folder.uidvalidity is not None and folder.uidvalidity != status.uidvalidity:
            # The server renumbered the folder: its old UIDs mean nothing now. The emails
            # stay; their locations are found again by Message-ID or fingerprint.
            removed, _ = EmailLocation.objects.filter(folder=folder).delete()
            self.run.removed_locations += removed
            folder.last_uid = 0
            folder.synced_since = None
            folder.highestmodseq = None
        uidvalidity = status.uidvalidity
        folder.uidvalidity = uidvalidity

        stored = set(
            EmailLocation.objects.filter(folder=folder, uidvalidity=uidvalidity).values_list(
                "uid", flat=True
            )
        )
        wanted = self._wanted_uids(folder, since)
        missing = sorted((uid for uid in wanted if uid not in stored), reverse=True)
        # Newest first, so the user sees recent mail early in a long first sync.
        for batch in self._parsed(missing):
            self._store(folder, uidvalidity, batch)
            # Counts saved per batch: the Email page's progress bar reads them.
            self.run.save_progress()
            self.renew()

        if stored and folder.last_uid:
            self._apply_changes(folder, uidvalidity, stored, status)

        folder.last_uid = max([folder.last_uid, *wanted]) if wanted else folder.last_uid
        folder.uidnext = status.uidnext
        folder.messages = status.messages
        folder.highestmodseq = status.highestmodseq
        if since is None or folder.synced_since is None or since < folder.synced_since:
            folder.synced_since = since
        folder.save()
        self.run.folders += 1

    def _parsed(self, uids: list[int]) -> Iterator[list[tuple]]:
        """Each batch fetched and parsed, the next one on its way while the caller stores
        this one, so the server streams while the worker parses and stores. (Parsing
        here or in the caller measured the same: the worker is CPU-bound.) Only the
        helper thread touches the IMAP connection, only the caller the database."""
        batches = self._batches(uids)

        def fetch_next() -> list[tuple] | None:
            batch = next(batches, None)
            if batch is None:
                return None
            return self._fetch_and_parse(batch)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-fetch") as pool:
            pending = pool.submit(fetch_next)
            while (parsed := pending.result()) is not None:
                pending = pool.submit(fetch_next)
                yield parsed

    def _batches(self, uids: list[int]) -> Iterator[list[int]]:
        # Sizes are asked for a few thousand at a time (about 40 bytes each on the wire),
        # so the first emails are stored before the sizes of the last are known.
        for chunk in _chunks(uids, 2000):
            sizes = fetch_sizes(self.client, chunk)
            yield from size_batches(chunk, sizes, max_bytes=BATCH_BYTES, max_count=BATCH)

    def _wanted_uids(self, folder: Folder, since: date | None) -> list[int]:
        if folder.last_uid == 0:
            criteria = ["SINCE", since] if since else ["ALL"]
            return self.client.search(criteria)
        # "n:*" always matches the highest UID, even one we have: filter it.
        new = [
            u
            for u in self.client.search(["UID", f"{folder.last_uid + 1}:*"])
            if u > folder.last_uid
        ]
        if _period_extended(folder, since):
            criteria = ["BEFORE", folder.synced_since] + (["SINCE", since] if since else [])
            new += [u for u in self.client.search(criteria) if u <= folder.last_uid]
        return new

    def _fetch_and_parse(self, uids: list[int]) -> list[tuple]:
        response = fetch_bodies(self.client, uids)
        batch = []
        for uid in uids:
            item = response.pop(uid, None)
            if item is None:  # expunged between SEARCH and FETCH
                continue
            raw, seen = item
            batch.append((uid, raw, parse_message(raw), seen))
        return batch

    def _store(
        self, folder: Folder, uidvalidity: int, batch: list, item_ids: dict | None = None
    ) -> None:
        """One batch in one transaction, in a constant number of queries: a run cut
        anywhere leaves whole batches behind, and the next run fetches the rest.
        `item_ids` maps UIDs to Exchange item ids (EWS folders)."""
        with files_for_transaction() as files, transaction.atomic():
            self._store_batch(files, folder, uidvalidity, batch, item_ids)

    def _store_batch(
        self, files: WrittenFiles, folder: Folder, uidvalidity: int, batch: list,
        item_ids: dict | None,
    ) -> None:  # fmt: skip
        keys = {parsed.message_key for _uid, _raw, parsed, _seen in batch}
        existing = stored_email_ids(self.account.pk, keys)
        new: dict[str, ParsedEmail] = {}
        rows = []
        now = timezone.now()
        for _uid, raw, parsed, seen in batch:
            if parsed.message_key not in existing and parsed.message_key not in new:
                new[parsed.message_key] = parsed
                original = files.save_original(raw) if parsed.problem else ""
                rows.append(_email_row(self.account.pk, parsed, len(raw), seen, now, original))
        created = dict(zip(new, insert_rows(Email, EMAIL_COLUMNS, rows), strict=True))
        existing.update(created)
        # Skipping those stored by an earlier, interrupted run.
        insert_rows_skipping_existing(
            EmailLocation,
            ["email_id", "folder_id", "uidvalidity", "uid", "item_id"],
            [
                (
                    existing[parsed.message_key],
                    folder.pk,
                    uidvalidity,
                    uid,
                    item_ids.get(uid, "") if item_ids else "",
                )
                for uid, _raw, parsed, _seen in batch
            ],
        )
        self.run.new_locations += len(batch)
        self.run.new_emails += len(new)
        self.run.parse_problems += sum(1 for parsed in new.values() if parsed.problem)
        attachments = []
        for key, parsed in new.items():
            for attachment in parsed.attachments:
                attachments.append(
                    Attachment(
                        email_id=created[key],
                        name=attachment.name,
                        content_type=attachment.content_type,
                        size=len(attachment.data),
                        file=files.save(ATTACHMENTS, attachment.data, like=attachment.name),
                    )
                )
        Attachment.objects.bulk_create(attachments)
        contacts_link(
            emails=[
                (
                    created[key],
                    {parsed.from_address: parsed.from_name}
                    | {a["address"]: a["name"] for a in parsed.to + parsed.cc},
                    parsed.from_address,
                )
                for key, parsed in new.items()
            ],
            own_domains=self.own_domains,
            create_for_unknown_senders=self.create_contacts,
        )

    def _apply_changes(
        self, folder: Folder, uidvalidity: int, stored: set[int], status: FolderStatus
    ) -> None:
        """Flags and expunges since the last run, as cheaply as the server allows."""
        # imapclient 4 keeps only answers for the message ids it was given, so the
        # stored UIDs are passed as a list (in chunks), not as a range.
        modifiers = None
        if self.condstore and folder.highestmodseq:
            modifiers = [f"CHANGEDSINCE {folder.highestmodseq}"]
            if self.qresync_enabled:
                modifiers.append("VANISHED")
        # imapclient passes untagged VANISHED responses by; they wait in imaplib's table.
        untagged = self.client._imap.untagged_responses
        untagged.pop("VANISHED", None)
        changed: dict = {}
        for chunk in _chunks(sorted(stored), 2000):
            changed.update(self.client.fetch(chunk, ["FLAGS"], modifiers=modifiers))
        vanished = _uid_set_ranges(untagged.pop("VANISHED", []))
        locations = EmailLocation.objects.filter(folder=folder, uidvalidity=uidvalidity)
        for uid, item in changed.items():
            seen = b"\\Seen" in item.get(b"FLAGS", ())
            updated = (
                Email.objects.filter(locations__in=locations.filter(uid=uid))
                .exclude(seen=seen)
                .update(seen=seen)
            )
            self.run.flag_changes += updated
        gone: set[int] = set()
        if modifiers and self.qresync_enabled:
            gone = {uid for uid in stored if any(low <= uid <= high for low, high in vanished)}
        # Without QRESYNC: fewer messages on the server than copies we know of means
        # expunges; only then is the (larger) list of UIDs asked for.
        elif status.messages is not None and status.messages < locations.count():
            gone = stored - set(self.client.search(["UID", f"1:{max(stored)}"]))
        if gone:
            removed, _ = locations.filter(uid__in=gone).delete()
            self.run.removed_locations += removed


def stored_email_ids(account_id: int, keys: set[str]) -> dict[str, int]:
    """{message key: email id} of the mailbox's emails among `keys`.

    On PostgreSQL, one unique-index lookup per key, whatever the table's statistics say.
    `message_key IN (...)` leaves the choice to the planner, and while a first sync fills
    the table faster than statistics follow (autovacuum's analyze runs a minute later, if
    at all), it chose to read all the mailbox's rows through email_account_sent: a
    lookup that grew with every batch: 34 ms instead of 2.7 ms for 112 keys among 10,000
    emails (and the benchmark's 60,000 deleted rows: autovacuum is off on this server)."""
    if connection.vendor != "postgresql":
        return dict(
            Email.objects.filter(account_id=account_id, message_key__in=keys).values_list(
                "message_key", "pk"
            )
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT k.key, e.id FROM unnest(%s::varchar[]) AS k(key) CROSS JOIN LATERAL "  # noqa: S608
            f"(SELECT id FROM {Email._meta.db_table} WHERE account_id = %s "
            "AND message_key = k.key LIMIT 1) AS e",
            [list(keys), account_id],
        )
        return dict(cursor.fetchall())


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


# The columns of a new email's row, in _email_row's order.
EMAIL_COLUMNS = [
    "account_id", "message_key", "message_id", "subject", "from_address", "from_name", "to",
    "cc", "sent_at", "text_body", "html_body", "size", "seen", "in_reply_to", "references",
    "problem", "notes", "original", "created_at",
]  # fmt: skip


def _email_row(
    account_id: int, parsed: ParsedEmail, size: int, seen: bool, now, original: str
) -> tuple:
    return (
        account_id,
        parsed.message_key,
        parsed.message_id,
        parsed.subject,
        parsed.from_address,
        parsed.from_name,
        parsed.to,
        parsed.cc,
        parsed.sent_at,
        parsed.text_body,
        parsed.html_body,
        size,
        seen,
        parsed.in_reply_to,
        parsed.references,
        parsed.problem,
        "\n".join(parsed.notes),
        original,
        now,
    )
