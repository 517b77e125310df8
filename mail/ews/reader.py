"""Reading an Exchange mailbox over EWS (exchangelib) as pages of changes
(mail.reading.DeltaReader): SyncFolderItems gives each folder's changes after a state,
GetItem the messages' MIME sources. sync.delta stores what this reads."""

import re
from datetime import UTC, datetime

from ..backend import ListedFolder
from ..errors import Retry
from ..reading import (
    INCOMPLETE,
    READ_BUDGET,
    UNREADABLE,
    ChangePage,
    DeltaReader,
    NewItem,
    ReadItem,
    StateLost,
)
from .folders import folder_tree

# Changes asked for per SyncFolderItems call (the server's own limit is 512), and
# messages per GetItem: a page is one transaction of sync's.
PAGE = 200
FETCH = 25
# A message above this size is asked for alone: a GetItem holds its answers whole.
LARGE = 3_000_000
# Characters of a message's body kept when it is made from Exchange's properties.
MAX_PROPERTY_BODY = 2_000_000


class EwsReader(DeltaReader):
    """A signed-in exchangelib Account (`ews`), read folder by folder. `by_path` maps
    each listed folder's path to exchangelib's folder (sync's importer of meetings and
    contacts uses both)."""

    def __init__(self, ews):
        self.ews = ews
        self.by_path: dict[str, object] = {}
        self._by_id: dict[str, object] = {}

    def close(self) -> None:
        from .session import ews_close

        ews_close(self.ews)

    def folders(self, special_uses: dict[str, str] | None = None) -> list[ListedFolder]:
        if self._by_id:
            # exchangelib keeps the tree it walked; the folders are asked for again.
            self.ews.root.clear_cache()
        tree = folder_tree(self.ews, special_uses)
        self.by_path = {listed.path: ews_folder for listed, ews_folder in tree}
        self._by_id = {listed.server_id: ews_folder for listed, ews_folder in tree}
        return [
            ListedFolder(
                path=listed.path,
                delimiter=listed.delimiter,
                special_use=listed.special_use,
                selectable=listed.selectable,
                server_id=listed.server_id,
                messages=getattr(ews_folder, "total_count", None),
            )
            for listed, ews_folder in tree
        ]

    def folder_refusal(self, error: Exception) -> str | None:
        """Exchange's own answer refusing one folder's request (ErrorFolderNotFound for
        a folder deleted since the list, ErrorAccessDenied on a folder,
        ErrorInternalServerError, ...) is the folder's. A busy or throttled server, a
        mailbox that is gone, the sign-in and the network end the run."""
        from exchangelib.errors import ErrorNonExistentMailbox, ResponseMessageError

        from .backend import exchange_failure

        if (
            not isinstance(error, ResponseMessageError)
            or isinstance(error, ErrorNonExistentMailbox)
            or exchange_failure(error).retry == Retry.LATER
        ):
            return None
        return f"{type(error).__name__}: {error}"

    def changes(self, server_id: str, state: str) -> ChangePage:
        from exchangelib.errors import ErrorInvalidSyncStateData
        from exchangelib.fields import FieldPath
        from exchangelib.items import ID_ONLY, Message
        from exchangelib.properties import ItemId
        from exchangelib.services import SyncFolderItems

        fields = {
            FieldPath(field=Message.get_field_by_fieldname(name))
            for name in ("is_read", "datetime_received", "size")
        }
        service = SyncFolderItems(account=self.ews)
        try:
            changes = list(
                service.call(
                    folder=self._by_id[server_id], shape=ID_ONLY, additional_fields=fields,
                    sync_state=state or None, ignore=None, max_changes_returned=PAGE,
                    sync_scope=None,
                )
            )  # fmt: skip
        except ErrorInvalidSyncStateData:
            if not state:
                raise
            raise StateLost(server_id) from None
        page = ChangePage(state=service.sync_state or "")
        page.last = bool(service.includes_last_item_in_range) or page.state == state
        for kind, item in changes:
            if kind == "create":
                # Its flag too: a page read again (a run cut before its state was saved)
                # names the message as created, with the flag it has now.
                if getattr(item, "is_read", None) is not None:
                    page.seen[item.id] = item.is_read
                page.created.append(
                    NewItem(
                        item.id, getattr(item, "size", None),
                        getattr(item, "datetime_received", None),
                    )
                )  # fmt: skip
            elif kind == "update":
                if getattr(item, "is_read", None) is not None:
                    page.seen[item.id] = item.is_read
            elif kind == "read_flag_change":
                item_id, is_read = item
                page.seen[item_id.id] = is_read
            elif kind == "delete" and isinstance(item, ItemId):
                page.deleted.add(item.id)
        return page

    def received_between(
        self, server_id: str, *, since: datetime | None, before: datetime
    ) -> list[NewItem]:
        """Listed page by page with FindItem (ids and dates only) and chosen here, which
        every Exchange version answers alike."""
        listed = self._by_id[server_id].all().only("id", "datetime_received", "size")
        return [
            NewItem(item.id, item.size, item.datetime_received)
            for item in listed
            if item.datetime_received is not None
            and item.datetime_received < before
            and (since is None or item.datetime_received >= since)
        ]

    def read(
        self, items: list[NewItem], *, size_limit: int, budget: int = READ_BUDGET
    ) -> list[ReadItem]:
        """Each message's MIME source and read flag. An item deleted since it was
        listed is left out; one whose source Exchange cannot give (a conversion failure,
        a corrupt item) is made from its properties with a note, never dropped. Large
        items are asked for one at a time, and an item above the size limit is made from
        its properties, with a note. (Exchange says sizes before: sync asks for at most
        a budget's worth, so `budget` is not needed here.)"""
        from exchangelib.errors import ErrorItemNotFound

        sizes = {item.id: item.size for item in items}
        unknown = [item.id for item in items if item.size is None]
        if unknown:
            # Asked for by size as any other (one Exchange cannot size is read from its
            # properties, which stay bounded).
            for item_id, item in zip(
                unknown, self._get(unknown, ["size"]), strict=True
            ):  # fmt: skip
                sizes[item_id] = None if isinstance(item, Exception) else item.size
        read, from_properties = [], {}
        # A size Exchange would not say: read whole, alone (as a large one), rather than
        # taken for one above the limit and kept without its attachments for good.
        small = [
            i for i, size in sizes.items() if size is not None and size <= min(LARGE, size_limit)
        ]
        large = [i for i, size in sizes.items() if size is None or LARGE < size <= size_limit]
        for item_id, size in sizes.items():
            if (size or 0) > size_limit:
                from_properties[item_id] = (
                    INCOMPLETE,
                    f"This message is {size / 1e6:.0f} MB, above the limit of "
                    f"{size_limit / 1e6:.0f} MB (system setting MaxMessageSizeMB): its "
                    "headers and text are stored; its attachments stay on the server.",
                )
        chunks = [small[i : i + FETCH] for i in range(0, len(small), FETCH)]
        for chunk in [*chunks, *([one] for one in large)]:
            answers = self._get(chunk, ["mime_content", "is_read"])
            for item_id, item in zip(chunk, answers, strict=True):
                if isinstance(item, ErrorItemNotFound):
                    continue
                raw = None if isinstance(item, Exception) else item.mime_content
                if not raw:
                    why = type(item).__name__ if isinstance(item, Exception) else "no source"
                    from_properties[item_id] = (
                        UNREADABLE,
                        f"Exchange could not give this message's source ({why}); "
                        "only its headers are stored.",
                    )
                    continue
                raw = raw if isinstance(raw, bytes) else raw.encode()
                read.append(ReadItem(item.id, raw, bool(item.is_read)))
        if from_properties:
            read += self._from_properties(from_properties)
        return read

    def _get(self, ids: list[str], fields: list[str]) -> list:
        return list(self.ews.fetch(ids=[(i, None) for i in ids], only_fields=fields))

    def _from_properties(self, wanted: dict[str, tuple[str, str]]) -> list[ReadItem]:
        """A source made from what Exchange says of the message: its headers and text.
        An item whose properties Exchange cannot give, or that cannot be made into a
        message, comes with no source, to be asked for again by later runs. Items above
        the size limit are asked for one at a time (their text may be long)."""
        from exchangelib.errors import ErrorItemNotFound

        fields = ["subject", "sender", "datetime_sent", "is_read", "message_id", "body"]
        large = [i for i, (problem, _note) in wanted.items() if problem == INCOMPLETE]
        other = [i for i, (problem, _note) in wanted.items() if problem != INCOMPLETE]
        chunks = [other[i : i + FETCH] for i in range(0, len(other), FETCH)]
        made = []
        for chunk in [*chunks, *([one] for one in large)]:
            for item_id, item in zip(chunk, self._get(chunk, fields), strict=True):
                if isinstance(item, ErrorItemNotFound):
                    continue  # deleted meanwhile: nothing left to store
                if isinstance(item, Exception):
                    why = (
                        f"Exchange gave neither this message nor its properties "
                        f"({type(item).__name__})."
                    )
                    made.append(ReadItem(item_id, None, note=why))
                    continue
                try:
                    raw = message_from(item, item_id)
                except Exception as error:  # anything a property can make the builder do
                    why = f"This message could not be made from its properties ({error!r})."
                    made.append(ReadItem(item_id, None, note=why[:1000]))
                    continue
                problem, note = wanted[item_id]
                made.append(ReadItem(item_id, raw, bool(item.is_read), problem, note))
        return made


_LINE_BREAKS = re.compile("[\r\n\0\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")


def _header(value) -> str:
    """A property as a header's value: on one line (a line separator in a subject made
    the email library refuse the whole page of changes)."""
    return _LINE_BREAKS.sub(" ", str(value or "")).strip()[:2000]


def message_from(item, item_id: str) -> bytes:
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
