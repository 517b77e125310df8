"""Downloading an Exchange mailbox over EWS (exchangelib), with the IMAP sync's
guarantees: the chosen period and folders, an email stored once per mailbox (keyed by
Message-ID or a fingerprint, as over IMAP), each server copy once per folder (keyed by
the item's id), and every page of changes committed together with the SyncFolderItems
state that follows it, so a run cut anywhere resumes from the last page it finished.

A sync state the server no longer honours (ErrorInvalidSyncStateData, for example after
the mailbox moved to another database) is treated like a UIDVALIDITY change: the
folder's locations are dropped, its items listed again, and every email found again by
its key instead of stored twice.
"""

import re
from datetime import UTC, datetime, time

from django.db import transaction
from django.utils import timezone

from accounts.models import EmailAccount
from mail.errors import Retry
from mail.ews.backend import exchange_failure
from mail.ews.folders import folder_tree

from .engine import (
    LARGE,
    RETRY_UNSTORED,
    MailboxSyncer,
    folders_refresh,
    parse_safely,
    period_start,
    retry_after,
)
from .files import files_for_transaction
from .models import EmailLocation, Folder, SyncRun, UnstoredMessage
from .parsing import INCOMPLETE, UNREADABLE
from .progress import RunProgress
from .store import Fetched, Store, Stored, emails_seen_set, locations_forget

# Changes asked for per SyncFolderItems call (the server's own limit is 512), and
# messages per GetItem: a page is one transaction.
PAGE = 200
FETCH = 25
# Characters of a message's body kept when it is made from Exchange's properties.
MAX_PROPERTY_BODY = 2_000_000


class EwsSyncer(MailboxSyncer):
    """An Exchange mailbox's download over EWS, IMAP's sibling: the same store (sync.store)
    and settings (MailboxSyncer), fed by SyncFolderItems pages instead of UIDs."""

    def __init__(self, *, account: EmailAccount, ews, run: SyncRun, renew=None):
        self.account = account
        self.ews = ews
        self.run = run
        self.renew = renew or (lambda: None)
        self.store = Store(account=account, create_contacts=lambda: self.create_contacts)
        self.by_id: dict[str, object] = {}
        self.progress = RunProgress(run)

    def progress_start(self, folders: list[Folder]) -> None:
        """In a first download of any folder, the items each holds, as the folder list
        gave them (FindFolder's TotalCount): no request of its own."""
        counts = None
        if any(not folder.ews_sync_state for folder in folders):
            counts = {
                folder.path: getattr(self.by_id.get(folder.path), "total_count", None) or 0
                for folder in folders
            }
        self.progress.start(folders, counts)

    # -- folders -------------------------------------------------------------

    def refresh_folders(self) -> list[Folder]:
        """The folder tree as the backend lists it, stored (only what changed is
        written); the special uses stored before spare asking for them again."""
        stored = dict(
            Folder.objects.filter(account=self.account).values_list("ews_id", "special_use")
        )
        tree = folder_tree(self.ews, stored)
        self.by_id = {listed.path: ews_folder for listed, ews_folder in tree}
        return folders_refresh(account=self.account, listed=[listed for listed, _f in tree])

    # -- one folder ----------------------------------------------------------

    def folder_refusal(self, error: Exception) -> str | None:
        """Exchange's own answer refusing one folder's request (ErrorFolderNotFound for
        a folder deleted since the list, ErrorAccessDenied on a folder,
        ErrorInternalServerError, ...) is the folder's. A busy or throttled server, a
        mailbox that is gone, the sign-in and the network end the run, as
        MailBackend.read_failure says."""
        from exchangelib.errors import ErrorNonExistentMailbox, ResponseMessageError

        if (
            not isinstance(error, ResponseMessageError)
            or isinstance(error, ErrorNonExistentMailbox)
            or exchange_failure(error).retry == Retry.LATER
        ):
            return None
        return f"{type(error).__name__}: {error}"

    def sync_folder(self, folder: Folder) -> None:
        from exchangelib.errors import ErrorInvalidSyncStateData

        since = period_start(self.account)
        since_at = datetime.combine(since, time.min, tzinfo=UTC) if since else None
        ews_folder = self.by_id[folder.path]
        if _period_extended_ews(folder, since):
            self._fetch_older(folder, ews_folder, since_at)
        state = folder.ews_sync_state or None
        while True:
            try:
                changes, next_state, last = self._page(ews_folder, state)
            except ErrorInvalidSyncStateData:
                if state is None:
                    raise
                self._forget(folder)
                state = None
                continue
            self._apply(folder, changes, since_at, next_state)
            if last or next_state == state:
                break
            state = next_state
        self._retry_unstored(folder)
        if since is None or folder.synced_since is None or since < folder.synced_since:
            folder.synced_since = since
        # The folder's count as Exchange gives it, for the page's "on the server".
        folder.messages = getattr(ews_folder, "total_count", None)
        folder.save(update_fields=["synced_since", "messages"])
        self.run.folders += 1

    def _retry_unstored(self, folder: Folder) -> None:
        """Items earlier runs could not store, asked for again by their ids when due."""
        now = timezone.now()
        due = [
            noted
            for noted in UnstoredMessage.objects.filter(folder=folder).exclude(item_id="")
            if noted.last_failed_at + retry_after(noted.attempts) <= now
        ][:RETRY_UNSTORED]
        if not due:
            return
        # Asked for by their size as any other (one Exchange cannot size is read from its
        # properties, which stay bounded).
        ids = [(noted.item_id, None) for noted in due]
        sizes = {
            item_id: (None if isinstance(item, Exception) else item.size)
            for (item_id, _key), item in zip(
                ids, self.ews.fetch(ids=ids, only_fields=["size"]), strict=True
            )
        }
        unknown = self.size_limit + 1
        fetched = self._fetch([(i, None, sizes[i] or unknown) for i, _key in ids])
        self.renew()  # before storing, as in _apply
        with files_for_transaction(), transaction.atomic():
            stored = self._store_items(folder, fetched)
            folder.save(update_fields=["last_uid"])
            # Stored now, or gone from Exchange: no longer waiting. (One that failed
            # again was noted again on its old note, with one more attempt.)
            located = set(
                EmailLocation.objects.filter(
                    folder=folder, item_id__in=[noted.item_id for noted in due]
                ).values_list("item_id", flat=True)
            )
            asked = {item_id for item_id, *_rest in fetched}
            UnstoredMessage.objects.filter(
                pk__in=[
                    noted.pk
                    for noted in due
                    if noted.item_id in located or noted.item_id not in asked
                ]
            ).delete()
        self._count(stored)

    def _page(self, ews_folder, state: str | None):
        from exchangelib.fields import FieldPath
        from exchangelib.items import ID_ONLY, Message
        from exchangelib.services import SyncFolderItems

        fields = {
            FieldPath(field=Message.get_field_by_fieldname(name))
            for name in ("is_read", "datetime_received", "size")
        }
        service = SyncFolderItems(account=self.ews)
        changes = list(
            service.call(
                folder=ews_folder, shape=ID_ONLY, additional_fields=fields, sync_state=state,
                ignore=None, max_changes_returned=PAGE, sync_scope=None,
            )
        )  # fmt: skip
        return changes, service.sync_state, service.includes_last_item_in_range

    def _forget(self, folder: Folder) -> None:
        """The server renumbered the folder: its locations go, its emails stay."""
        # Only the claim holder may judge the folder renumbered: a run that lost its
        # claim compares with the state it read at its start, and would delete the
        # locations the new holder stored since.
        self.renew()
        with transaction.atomic():
            removed = locations_forget(locations=EmailLocation.objects.filter(folder=folder))
            self.run.removed_locations += removed
            folder.ews_sync_state = ""
            folder.synced_since = None
            folder.save(update_fields=["ews_sync_state", "synced_since"])

    def _apply(self, folder: Folder, changes: list, since_at, next_state: str) -> None:
        from exchangelib.properties import ItemId

        created, seen_changes, deleted = [], {}, set()
        for kind, item in changes:
            if kind == "create":
                received = getattr(item, "datetime_received", None)
                if since_at is None or received is None or received >= since_at:
                    created.append((item.id, item.changekey, getattr(item, "size", None)))
            elif kind == "update":
                if getattr(item, "is_read", None) is not None:
                    seen_changes[item.id] = item.is_read
            elif kind == "read_flag_change":
                item_id, is_read = item
                seen_changes[item_id.id] = is_read
            elif kind == "delete" and isinstance(item, ItemId):
                deleted.add(item.id)
        fetched = self._fetch(created)
        # Before storing: a run whose claim was taken while it fetched stops here.
        self.renew()
        with files_for_transaction(), transaction.atomic():
            stored = self._store_items(folder, fetched)
            flag_changes = 0
            for seen in (True, False):
                item_ids = [item_id for item_id, flag in seen_changes.items() if flag == seen]
                if item_ids:
                    flag_changes += emails_seen_set(
                        locations=EmailLocation.objects.filter(folder=folder, item_id__in=item_ids),
                        seen=seen,
                    )
            removed = 0
            if deleted:
                removed = locations_forget(
                    locations=EmailLocation.objects.filter(folder=folder, item_id__in=deleted)
                )
            # Saved with the page it follows: a run cut before this commit gets the
            # same page again, and its items are found already stored.
            folder.ews_sync_state = next_state
            folder.save(update_fields=["ews_sync_state", "last_uid"])
        # Counted once committed: a failed run reports what it stored, nothing more.
        self._count(stored)
        self.progress.handled(len(fetched))
        self.run.flag_changes += flag_changes
        self.run.removed_locations += removed
        if fetched:
            self.run.save_progress()

    def _fetch(
        self, ids: list[tuple[str, str, int | None]]
    ) -> list[tuple[str, bytes, bool, tuple[str, str]]]:
        """Each message's MIME source and read flag. An item deleted since it was
        listed is skipped; one whose source Exchange cannot give (a conversion failure,
        a corrupt item) is stored from its properties with a note, never dropped. Large
        items are asked for one at a time (a GetItem holds its answers whole), and an
        item above the size limit is stored from its properties, with a note."""
        from exchangelib.errors import ErrorItemNotFound

        limit = self.size_limit
        fetched, unreadable = [], {}
        small = [(i, key) for i, key, size in ids if (size or 0) <= min(LARGE, limit)]
        large = [(i, key) for i, key, size in ids if LARGE < (size or 0) <= limit]
        for item_id, key, size in ids:
            if (size or 0) > limit:
                unreadable[item_id] = (
                    key,
                    INCOMPLETE,
                    f"This message is {size / 1e6:.0f} MB, above the limit of "
                    f"{limit / 1e6:.0f} MB (system setting MaxMessageSizeMB): its headers "
                    "and text are stored; its attachments stay on the server.",
                )
        chunks = [small[i : i + FETCH] for i in range(0, len(small), FETCH)]
        for chunk in [*chunks, *([one] for one in large)]:
            answers = self.ews.fetch(ids=chunk, only_fields=["mime_content", "is_read"])
            for (item_id, change_key), item in zip(chunk, answers, strict=True):
                if isinstance(item, ErrorItemNotFound):
                    continue
                raw = None if isinstance(item, Exception) else item.mime_content
                if not raw:
                    why = type(item).__name__ if isinstance(item, Exception) else "no source"
                    unreadable[item_id] = (
                        change_key,
                        UNREADABLE,
                        f"Exchange could not give this message's source ({why}); "
                        "only its headers are stored.",
                    )
                    continue
                raw = raw if isinstance(raw, bytes) else raw.encode()
                fetched.append((item.id, raw, bool(item.is_read), ("", "")))
        if unreadable:
            fetched += self._from_properties(unreadable)
        return fetched

    def _from_properties(self, unreadable: dict) -> list[tuple[str, bytes, bool, tuple[str, str]]]:
        """A source made from what Exchange says of the message: its headers and text.
        An item whose properties Exchange cannot give, or that cannot be made into a
        message, is noted as unstored (raw None), to be asked for again by later runs.
        Items above the size limit are asked for one at a time (their text may be long)."""
        from exchangelib.errors import ErrorItemNotFound

        fields = ["subject", "sender", "datetime_sent", "is_read", "message_id", "body"]
        large = [(i, key) for i, (key, level, *_n) in unreadable.items() if level == INCOMPLETE]
        other = [(i, key) for i, (key, level, *_n) in unreadable.items() if level != INCOMPLETE]
        chunks = [other[i : i + FETCH] for i in range(0, len(other), FETCH)]
        made = []
        for chunk in [*chunks, *([one] for one in large)]:
            for (item_id, _key), item in zip(
                chunk, self.ews.fetch(ids=chunk, only_fields=fields), strict=True
            ):
                if isinstance(item, ErrorItemNotFound):
                    continue  # deleted meanwhile: nothing left to store
                if isinstance(item, Exception):
                    why = (
                        f"Exchange gave neither this message nor its properties "
                        f"({type(item).__name__})."
                    )
                    made.append((item_id, None, False, ("unstored", why)))
                    continue
                try:
                    raw = _message_from(item, item_id)
                except Exception as error:  # anything a property can make the builder do
                    why = f"This message could not be made from its properties ({error!r})."
                    made.append((item_id, None, False, ("unstored", why[:1000])))
                    continue
                made.append((item_id, raw, bool(item.is_read), unreadable[item_id][1:]))
        return made

    def _store_items(
        self, folder: Folder, fetched: list[tuple[str, bytes, bool, tuple[str, str]]]
    ) -> Stored:
        if not fetched:
            return Stored()
        known = set(
            EmailLocation.objects.filter(
                folder=folder, item_id__in=[item_id for item_id, *_rest in fetched]
            ).values_list("item_id", flat=True)
        )
        batch = []
        noted = Stored()
        for item_id, raw, seen, (level, note) in fetched:
            if item_id in known:
                continue
            # EWS has no UIDs: the location's UID is the app's own count per folder.
            folder.last_uid += 1
            if raw is None:
                noted.add(self.store.unstored(folder, 0, folder.last_uid, note, item_id))
                continue
            parsed = parse_safely(raw, self.limits)
            if note:
                parsed.problem = parsed.problem or level
                parsed.notes.append(note)
            batch.append(
                Fetched(
                    uid=folder.last_uid, parsed=parsed, seen=seen, size=len(raw), raw=raw,
                    item_id=item_id,
                )
            )  # fmt: skip
        stored = self.store.batch(folder, 0, batch)
        stored.add(noted)
        return stored

    def _fetch_older(self, folder: Folder, ews_folder, since_at) -> None:
        """The user asked for a longer period: what arrived before the folder's
        oldest date and after the new start. Listed page by page with FindItem (ids
        and dates only) and chosen here, which every Exchange version answers alike;
        what is already stored is skipped by its item id."""
        older = datetime.combine(folder.synced_since, time.min, tzinfo=UTC)
        listed = ews_folder.all().only("id", "changekey", "datetime_received", "size")
        ids = [
            (item.id, item.changekey, item.size)
            for item in listed
            if item.datetime_received is not None
            and item.datetime_received < older
            and (since_at is None or item.datetime_received >= since_at)
        ]
        for start in range(0, len(ids), PAGE):
            fetched = self._fetch(ids[start : start + PAGE])
            self.renew()  # before storing, as in _apply
            with files_for_transaction(), transaction.atomic():
                stored = self._store_items(folder, fetched)
                folder.save(update_fields=["last_uid"])
            self._count(stored)


_LINE_BREAKS = re.compile("[\r\n\0\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")


def _header(value) -> str:
    """A property as a header's value: on one line (a line separator in a subject made
    the email library refuse the whole page of changes)."""
    return _LINE_BREAKS.sub(" ", str(value or "")).strip()[:2000]


def _message_from(item, item_id: str) -> bytes:
    """A MIME message from an item's properties (compat32: it takes what Exchange says
    without judging a Message-ID's syntax)."""
    from email.header import Header
    from email.mime.text import MIMEText
    from email.utils import format_datetime, formataddr

    body = getattr(item, "body", None)
    subtype = "html" if type(body).__name__ == "HTMLBody" else "plain"
    message = MIMEText(str(body or "")[:MAX_PROPERTY_BODY], subtype, "utf-8")
    message["Subject"] = Header(_header(item.subject), "utf-8")
    if item.sender is not None:
        name = Header(_header(item.sender.name), "utf-8").encode()
        message["From"] = formataddr((name, _header(item.sender.email_address)))
    if item.datetime_sent is not None:
        message["Date"] = format_datetime(
            datetime.fromtimestamp(item.datetime_sent.timestamp(), tz=UTC)
        )
    if item.message_id:
        message["Message-ID"] = _header(item.message_id)
    # Two items made this way are two messages, even where their headers agree.
    message["X-Exchange-Item"] = _header(item_id[-64:])
    return message.as_bytes()


def _period_extended_ews(folder: Folder, since) -> bool:
    if folder.synced_since is None or not folder.ews_sync_state:
        return False
    return since is None or since < folder.synced_since
