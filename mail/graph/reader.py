"""A Microsoft 365 mailbox read as pages of changes (mail.reading.DeltaReader) through
Microsoft Graph: mailFolders for the folders, a message delta round per folder for its
changes, /$value for each message's source."""

import contextlib
import functools
import io
import logging
from datetime import datetime
from email.header import Header
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr

from ..backend import ListedFolder
from ..errors import MailError, Retry
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
from .client import (
    BATCH_MAX,
    DeltaReset,
    GraphClient,
    MailFolder,
    Throttled,
    TokenRejected,
    TooLarge,
)
from .items import listed_books

logger = logging.getLogger(__name__)

DELIMITER = "/"
# Graph's well-known folder names, as special uses (mail/ews/folders.py's DISTINGUISHED).
WELL_KNOWN = {
    "sentitems": "\\sent",
    "deleteditems": "\\trash",
    "junkemail": "\\junk",
    "drafts": "\\drafts",
}
# A delta page's messages; Graph's default is 10, its largest 1000 (of selected fields).
PAGE_SIZE = 100
# What a message's properties give when its source is not stored (a size limit, a source
# Graph cannot give): its headers and text.
PROPERTIES = ("subject", "from", "sentDateTime", "internetMessageId", "isRead", "body")
# The text kept of a message made from its properties (its body can be the whole size).
MAX_PROPERTY_BODY = 1024 * 1024
# Answers about one message that are that message's, not the run's: its source or its
# properties could not be given (400 ErrorInvalidIdMalformed, 500 for a corrupt item).
# 401, 403, 429, 502-504 and broken connections are the run's: they end it.
ITEM_STATUSES = frozenset({400, 406, 409, 410, 413, 415, 422, 500, 501})


def _status(error: Exception) -> int | None:
    return getattr(error, "status", None)


def _stamp(value) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _line(value) -> str:
    """A property as a header's value: on one line, bounded."""
    return " ".join(str(value or "").split())[:2000]


class TokenRanOut(TokenRejected):
    """A 401 met by a reader, whose sign-in Graph accepted (GET /me) when it was opened:
    the token ran out or was revoked during the run. The next run's sign-in refreshes
    it, or finds that the owner must reconnect. (A MailError reaches the run's end as it
    is, without the backend's read_failure: a plain TokenRejected would put the mailbox
    on its owner.)"""

    def __init__(self, error: TokenRejected):
        MailError.__init__(
            self, "token_unavailable",
            f"Microsoft 365 stopped accepting the sign-in token during the download ({error})",
            retry=Retry.LATER,
        )  # fmt: skip
        self.code = error.code
        self.status = getattr(error, "status", 401)


def _token_may_run_out(method):
    @functools.wraps(method)
    def reading(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except TokenRejected as error:
            if isinstance(error, TokenRanOut):
                raise
            raise TokenRanOut(error) from error

    return reading


class GraphReader(DeltaReader):
    """A signed-in GraphClient read as a DeltaReader. The read flags of the messages a
    page or a listing named are kept until they are read (the source says none)."""

    def __init__(self, client: GraphClient, *, page_size: int = PAGE_SIZE):
        self.client = client
        self.page_size = page_size
        # The mail folders' paths at the last listing (the address book's paths keep
        # clear of them: mail.graph.items).
        self.mail_paths: set[str] = set()

    # --- Folders ---

    @_token_may_run_out
    def folders(self, special_uses: dict[str, str] | None = None) -> list[ListedFolder]:
        found = self.client.mail_folders()
        known = special_uses or {}
        if found and all(f.id in known for f in found):
            # No folder is new since the uses were found: nothing to ask again.
            special = {i: use for i, use in known.items() if use in WELL_KNOWN.values()}
        else:
            special = {}
            for name, use in WELL_KNOWN.items():
                try:
                    special[self.client.well_known_folder(name).id] = use
                except MailError as error:
                    if _status(error) != 404:  # a mailbox without that folder
                        raise
        mail = [self._listed(folder, special.get(folder.id, "")) for folder in found]
        self.mail_paths = {listed.path for listed in mail}
        # The address book's folders too, as Exchange lists them: not read for mail,
        # offered in the Contacts settings (mail.graph.items). Their listing refused
        # (no permission for contacts, a throttled or failing request) costs the mail
        # nothing: this run lists no address book, and the next asks again.
        try:
            return mail + listed_books(self.client, self.mail_paths)
        except MailError as error:
            # The sign-in or the connection failing is the run's, as for any request.
            if isinstance(error, TokenRejected) or error.kind in ("connection_lost", "timeout"):
                raise
            logger.info("The address book's folders could not be listed: %s", error.kind)
            return mail

    @staticmethod
    def _listed(folder: MailFolder, use: str) -> ListedFolder:
        # A "/" inside a name would read as a level: it becomes a space, as for EWS.
        path = DELIMITER.join(name.replace(DELIMITER, " ") for name in folder.path)
        return ListedFolder(
            path=path, delimiter=DELIMITER, special_use=use, selectable=True,
            server_id=folder.id, messages=folder.total_count,
        )  # fmt: skip

    # --- Changes ---

    @_token_may_run_out
    def changes(self, server_id: str, state: str) -> ChangePage:
        """One delta page. Graph's delta names new and changed messages alike, with their
        current read flag: each comes as created (sync skips an id it stored already)
        and with its flag in `seen`."""
        try:
            rounds = self.client.messages_delta(server_id, link=state, page_size=self.page_size)
            try:
                page = next(iter(rounds))
            finally:
                rounds.close()
        except DeltaReset as error:
            raise StateLost(str(error)) from error
        created, seen = [], {}
        for row in page.changed:
            ident = row["id"]
            flag = row["isRead"] if isinstance(row.get("isRead"), bool) else None
            created.append(
                NewItem(id=ident, received=_stamp(row.get("receivedDateTime")), seen=flag)
            )
            if flag is not None:
                seen[ident] = flag
        return ChangePage(
            created=created, seen=seen, deleted=set(page.removed), state=page.link,
            last=page.delta_link is not None,
        )  # fmt: skip

    @_token_may_run_out
    def received_between(
        self, server_id: str, *, since: datetime | None, before: datetime
    ) -> list[NewItem]:
        rows = self.client.received_between(server_id, since=since, before=before)
        return [
            NewItem(
                id=row["id"],
                received=_stamp(row.get("receivedDateTime")),
                seen=row["isRead"] if isinstance(row.get("isRead"), bool) else None,
            )
            for row in rows
        ]

    # --- Sources ---

    @_token_may_run_out
    def read(
        self, items: list[NewItem], *, size_limit: int, budget: int = READ_BUDGET
    ) -> list[ReadItem]:
        """The sources through /$value, BATCH_MAX to a round trip (JSON batching), at
        most `size_limit` bytes each (Graph does not say a message's size before it is
        read). What a batch does not give plainly (a source above the limit or above
        what a batch answer holds, an item's own error, a throttled item) is read alone,
        streamed and bounded, with its fallbacks; a message gone meanwhile is left out.
        Once more than `budget` bytes are held, what is left comes back `later`."""
        found: list[ReadItem] = []
        held = 0
        for start in range(0, len(items), BATCH_MAX):
            group = items[start : start + BATCH_MAX]
            if found and held > budget:
                found += [ReadItem(id=item.id, raw=None, later=True) for item in group]
                continue
            sources = self._batch(group, size_limit, budget)
            # Graph throttles a mailbox, not one message: one wait for the batch's
            # throttled items (the longest asked), or the run ends for later.
            waits = [s.wait for s in sources.values() if isinstance(s, Throttled)]
            if waits:
                longest = max(waits)
                if longest > self.client.max_wait:
                    raise next(s for s in sources.values() if isinstance(s, Throttled))
                self.client.sleep(longest)
            for item in group:
                source = sources.get(item.id)
                if isinstance(source, MailError) and _status(source) == 404:
                    continue  # deleted since it was listed
                if found and held > budget and not isinstance(source, bytes):
                    # A source still to be read alone: for a later call.
                    found.append(ReadItem(id=item.id, raw=None, later=True))
                    continue
                if isinstance(source, bytes):
                    seen = item.seen if item.seen is not None else self._is_read(item.id)
                    if seen is None:
                        continue  # gone meanwhile
                    read = ReadItem(id=item.id, raw=source, seen=seen)
                else:
                    read = self._read_one(item.id, size_limit, item.seen)
                if read is not None:
                    found.append(read)
                    held += len(read.raw or b"")
        return found

    def _batch(
        self, group: list[NewItem], size_limit: int, budget: int
    ) -> dict[str, bytes | MailError]:
        """The group's sources in one round trip; {} when the batch answer would hold
        more than `budget` bytes of sources (base64 in JSON: a third more), whose
        messages are then read one by one, within the budget."""
        if len(group) < 2:
            return {}
        bound = budget * 4 // 3 + 64 * 1024
        try:
            return self.client.mime_batch(
                [item.id for item in group], limit=size_limit, bound=min(
                    bound, self.client.max_page_bytes
                ),
            )  # fmt: skip
        except TooLarge:
            return {}

    def _read_one(self, ident: str, size_limit: int, seen: bool | None) -> ReadItem | None:
        buffer = io.BytesIO()
        try:
            copy = self.client.write_message_mime(ident, buffer, limit=size_limit)
        except MailError as error:
            if _status(error) == 404:
                return None  # deleted since it was listed
            if _status(error) not in ITEM_STATUSES:
                raise
            note = (
                f"Microsoft 365 could not give this message's source ({error}); only its "
                "headers and text are stored."
            )
            return self._from_properties(ident, UNREADABLE, note)
        if not copy.complete:
            buffer.close()
            note = (
                f"This message is above the limit of {size_limit / 1e6:.0f} MB (system "
                "setting MaxMessageSizeMB): its headers and text are stored; its "
                "attachments stay on the server."
            )
            return self._from_properties(ident, INCOMPLETE, note)
        if seen is None:
            seen = self._is_read(ident)
            if seen is None:
                return None
        return ReadItem(id=ident, raw=buffer.getvalue(), seen=seen)

    def _is_read(self, ident: str) -> bool | None:
        """The read flag of a message no page named (asked for again by id); None when
        it is gone."""
        try:
            return bool(self.client.message(ident, select=("isRead",)).get("isRead"))
        except MailError as error:
            if _status(error) == 404:
                return None
            raise

    def _from_properties(self, ident: str, problem: str, note: str) -> ReadItem | None:
        """A source made from the message's properties; None when it is gone; raw None
        (noted, asked for again later) when Graph gives neither."""
        try:
            row = self.client.message(ident, select=PROPERTIES)
        except MailError as error:
            if _status(error) == 404:
                return None
            if _status(error) not in ITEM_STATUSES:
                raise
            why = f"Microsoft 365 gave neither this message nor its properties ({error})."
            return ReadItem(id=ident, raw=None, note=why)
        try:
            raw = _message_from(row, ident)
        except Exception as error:  # anything a property can make the builder do
            why = f"This message could not be made from its properties ({error!r})."
            return ReadItem(id=ident, raw=None, note=why[:1000])
        return ReadItem(id=ident, raw=raw, seen=bool(row.get("isRead")), problem=problem, note=note)

    # --- The rest ---

    def folder_refusal(self, error: Exception) -> str | None:
        """A folder deleted since the list (404) or one the mailbox may not read (403)
        is that folder's; a mailbox Graph cannot reach at all (404
        MailboxNotEnabledForRESTAPI) and everything else is the run's."""
        if not isinstance(error, MailError) or error.kind == "contact_admin":
            return None
        if _status(error) in (403, 404):
            return str(error)
        return None

    def close(self) -> None:
        # Closing must not hide the work before it.
        with contextlib.suppress(Exception):
            self.client.close()


def _message_from(row: dict, ident: str) -> bytes:
    """A MIME message from a message's Graph properties (compat32: it takes what Graph
    says without judging a Message-ID's syntax)."""
    body = row.get("body") if isinstance(row.get("body"), dict) else {}
    subtype = "html" if str(body.get("contentType", "")).lower() == "html" else "plain"
    message = MIMEText(str(body.get("content") or "")[:MAX_PROPERTY_BODY], subtype, "utf-8")
    message["Subject"] = Header(_line(row.get("subject")), "utf-8")
    sender = row.get("from")
    sender = sender.get("emailAddress") if isinstance(sender, dict) else None
    if isinstance(sender, dict) and sender.get("address"):
        name = Header(_line(sender.get("name")), "utf-8").encode()
        message["From"] = formataddr((name, _line(sender["address"])))
    sent = _stamp(row.get("sentDateTime"))
    if sent is not None:
        message["Date"] = format_datetime(sent)
    if row.get("internetMessageId"):
        message["Message-ID"] = _line(row["internetMessageId"])
    # Two messages made this way are two messages, even where their headers agree.
    message["X-Graph-Message"] = _line(ident[-64:])
    return message.as_bytes()
