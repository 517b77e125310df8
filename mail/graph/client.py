"""A small typed client for Microsoft Graph v1.0: mail folders, message delta rounds,
MIME download and sendMail, calendarView, To Do and contacts.

It is requests with the mail connections' trust (mail/trust.py: the system's CAs plus
the company's own, verification never off, the internal-address guard on every socket),
not the official msgraph-sdk: bench/graph_client_bench.py measured both, and the README
("Microsoft Graph") has the figures. Sign-in stays with msal (accounts/oauth.py); this
client takes an access token and never refreshes it.

Every failure is a MailError (mail/errors.py) whose `retry` says what to do, with four
subclasses the syncer tells apart by class:
- Throttled (kind "busy", LATER): 429/503 whose Retry-After is longer than the client
  waits by itself (`max_wait`), or that kept coming; `.wait` is the server's wait.
- DeltaReset (kind "temporary", LATER): 410 Gone on a delta or skip token
  (syncStateNotFound, resyncRequired): start the folder over, as after a UIDVALIDITY
  change. The kind is an existing one on purpose: the syncer must catch this class and
  drop the link; a new kind would need an entry in mail/errors.py's table.
- TokenRejected (kind "reconnect", OWNER): 401 InvalidAuthenticationToken.
- TooLarge (kind "server_error", NEVER): an answer above its bound.
Nothing is retried after a broken connection: every read is a GET the caller can ask
again from the link it stored, and a page is parsed whole or not at all.
"""

import base64
import email.utils
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import requests
from django.conf import settings
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies

from mail import trust
from mail.errors import MailError, Retry

GRAPH_URL = "https://graph.microsoft.com/v1.0"
# A JSON page (a delta page of up to MAX_PAGE_SIZE messages' selected fields, a folder
# list) above this is not a Graph answer we can use.
MAX_PAGE_BYTES = 16 * 1024 * 1024
# An error document: enough for {"error": {"code", "message", "innerError"}}.
MAX_ERROR_BYTES = 64 * 1024
# Graph's own bound for sendMail's request (bigger messages need an upload session).
MAX_SEND_BYTES = 4 * 1024 * 1024
MAX_PAGE_SIZE = 1000
# Requests per JSON batch: Graph's own limit.
BATCH_MAX = 20
# Throttling: waits up to `max_wait` seconds are honoured here, this many times per
# request; longer ones go back to the caller as Throttled (the queue waits, not a worker).
DEFAULT_MAX_WAIT = 30.0
MAX_THROTTLE_WAITS = 3
# When 429/503 comes without Retry-After.
DEFAULT_RETRY_AFTER = 5.0
# No paging loop runs for ever, whatever the server's links say.
MAX_PAGES = 100_000
MAX_FOLDERS = 10_000
MAX_FOLDER_DEPTH = 32
CHUNK = 64 * 1024

MESSAGE_FIELDS = (
    "id", "internetMessageId", "isRead", "receivedDateTime", "parentFolderId",
    "subject", "from", "hasAttachments", "lastModifiedDateTime",
)  # fmt: skip


class GraphAddressRefused(trust.InternalAddressRefused):
    MESSAGE = (
        "Microsoft Graph's server is on an internal network address, and connecting to "
        "internal mail servers is turned off; an administrator can allow it with the "
        "system setting AllowInternalMailServers."
    )


class Throttled(MailError):
    """Graph asked us to wait longer than a worker should sleep."""

    def __init__(self, message: str, wait: float):
        super().__init__("busy", message, retry=Retry.LATER)
        self.wait = wait


class DeltaReset(MailError):
    """The server no longer knows the delta or skip token: start the folder over."""

    def __init__(self, message: str, code: str):
        super().__init__("temporary", message, retry=Retry.LATER)
        self.code = code


class TokenRejected(MailError):
    """401: the access token was refused; the owner signs in again (Reconnect)."""

    def __init__(self, message: str, code: str):
        super().__init__("reconnect", message, retry=Retry.OWNER)
        self.code = code


class TooLarge(MailError):
    def __init__(self, message: str, limit: int):
        super().__init__("server_error", message, retry=Retry.NEVER)
        self.limit = limit


@dataclass(frozen=True)
class _Answered:
    """One answer inside a batch, as _classified reads a response."""

    status_code: int
    headers: Any


@dataclass(frozen=True)
class GraphUser:
    address: str  # `mail`, or the userPrincipalName when the mailbox has no `mail`
    user_principal_name: str
    display_name: str


@dataclass(frozen=True)
class MailFolder:
    id: str
    display_name: str
    parent_id: str
    path: tuple[str, ...]  # display names from the top, this folder's last
    child_count: int = 0
    total_count: int = 0
    unread_count: int = 0
    well_known: str = ""  # "inbox", "sentitems", ... when looked up by that name


@dataclass
class DeltaPage:
    """One page of a delta round: rows changed (created, updated or a flag change: the
    selected fields, current), ids removed, and where to go on. Exactly one link is set:
    `next_link` (more pages) or `delta_link` (the round is over)."""

    changed: list[dict[str, Any]]
    removed: list[str]
    next_link: str | None
    delta_link: str | None

    @property
    def link(self) -> str:
        """What to store with this page: the next request of the round, or the next
        round's start."""
        return self.next_link or self.delta_link or ""


@dataclass
class DeltaRound:
    """A whole round folded into one answer: a row's last state wins."""

    changed: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    delta_link: str = ""


@dataclass(frozen=True)
class MimeCopy:
    size: int  # bytes written
    complete: bool  # False: the message is longer than the limit; its first bytes came


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (RFC 9110: delay-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _short(text: object, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _stamp(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class GraphClient:
    """One mailbox's conversation with Graph. `access_token`: a valid token for the
    signed-in user (accounts.oauth keeps it fresh). `allow_internal`: the system setting
    when the caller read it already; None lets the guard read it per connection."""

    def __init__(
        self,
        access_token: str,
        *,
        base_url: str = GRAPH_URL,
        timeout: float | None = None,
        max_wait: float = DEFAULT_MAX_WAIT,
        max_page_bytes: int = MAX_PAGE_BYTES,
        allow_internal: bool | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        parts = urlsplit(base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise MailError(
                "insecure", "The Microsoft Graph address must start with https://.",
                field="provider",
            )  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._origin = f"{parts.scheme}://{parts.netloc}".lower()
        self.timeout = float(timeout or settings.MAIL_CONNECT_TIMEOUT)
        # A slow server that sends a byte now and then never trips the socket timeout:
        # every answer has this long in all.
        self.deadline = max(60.0, 4 * self.timeout)
        self.max_wait = max_wait
        self.max_page_bytes = max_page_bytes
        self.sleep = sleep
        self.session = requests.Session()
        # Not the environment's netrc (it would replace the token) nor its CA bundle
        # (REQUESTS_CA_BUNDLE would replace the app's trust); its proxies are taken in
        # `_send`, as exchangelib and the OAuth clients take them.
        self.session.trust_env = False
        adapter = (
            trust.MailTrustAdapter()
            if allow_internal
            else trust.guarded_adapter(GraphAddressRefused)()
        )
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers.update(
            {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        )

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "GraphClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- The wire ---

    def _url(self, path_or_link: str) -> str:
        if "://" not in path_or_link:
            # Paths are the signed-in user's ("" is /me itself).
            return f"{self.base_url}/me/{path_or_link}".rstrip("/")
        # A link from an answer (nextLink, deltaLink) carries the token: it may only
        # lead back to the same service.
        parts = urlsplit(path_or_link)
        if f"{parts.scheme}://{parts.netloc}".lower() != self._origin:
            raise MailError(
                "server_error",
                f"Microsoft Graph answered with a link to another server ({parts.hostname}); "
                "it was not followed.",
            )
        return path_or_link

    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        try:
            return self.session.request(
                method, url, timeout=(self.timeout, self.timeout), stream=True,
                allow_redirects=False, proxies=get_environ_proxies(url), **kwargs,
            )  # fmt: skip
        except requests.exceptions.SSLError as error:
            raise MailError(
                "certificate",
                f"Microsoft Graph's server ({urlsplit(url).hostname}) presented a security "
                "certificate that could not be verified. Ask an administrator to check the "
                "server's certificate and the trusted CAs.",
            ) from error
        except requests.exceptions.ConnectTimeout as error:
            raise MailError("timeout", "Microsoft Graph did not answer in time.") from error
        except requests.exceptions.ReadTimeout as error:
            raise MailError("timeout", "Microsoft Graph did not answer in time.") from error
        except requests.exceptions.ConnectionError as error:
            if trust.refused_internal(error):
                raise MailError("internal_address", GraphAddressRefused.MESSAGE) from error
            if refusal := trust.proxy_refusal(error):
                raise MailError(
                    "connection", trust.through_proxy("Microsoft Graph", refusal)
                ) from error
            raise MailError(
                "connection", f"The connection to Microsoft Graph failed ({_short(error, 120)})."
            ) from error
        except requests.exceptions.RequestException as error:
            raise MailError("connection", f"Microsoft Graph: {_short(error, 120)}") from error

    def _read(self, response: requests.Response, limit: int, out: BinaryIO | None = None):
        """The whole body (bounded in size and time), or into `out` up to `limit` bytes
        (then (size, complete))."""
        # Sizes count decoded bytes: urllib3 (2.6+, pyproject.toml) inflates a gzip answer
        # no further than each chunk asked for, so a small bomb cannot outgrow `limit`.
        started = time.monotonic()
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(CHUNK):
                if time.monotonic() - started > self.deadline:
                    raise MailError("timeout", "Microsoft Graph's answer took too long.")
                if size + len(chunk) > limit:
                    if out is None:
                        raise TooLarge(
                            f"Microsoft Graph's answer is larger than {limit // 1024} KB.", limit
                        )
                    out.write(chunk[: limit - size])
                    return limit, False
                size += len(chunk)
                if out is None:
                    chunks.append(chunk)
                else:
                    out.write(chunk)
        except requests.exceptions.RequestException as error:
            # ChunkedEncodingError (IncompleteRead), ConnectionError: the answer broke off.
            raise MailError(
                "connection_lost",
                "The connection to Microsoft Graph broke in the middle of an answer.",
            ) from error
        finally:
            response.close()
        return (size, True) if out is not None else b"".join(chunks)

    def _error(self, response: requests.Response, *, sending: bool = False) -> MailError:
        code, message = "", ""
        try:
            document = json.loads(self._read(response, MAX_ERROR_BYTES))
            code = str(document["error"].get("code") or "")
            message = _short(document["error"].get("message") or "")
        except (MailError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass
        error = self._classified(response, code, message, sending=sending)
        # What the server answered, for callers that tell one item's or one folder's
        # refusal (404, 403) from the run's (mail/graph/reader.py).
        error.status = response.status_code
        error.code = code
        return error

    def _classified(
        self, response: requests.Response, code: str, message: str, *, sending: bool
    ) -> MailError:
        status = response.status_code
        said = f" ({code}: {message})" if code else f" (HTTP {status})"
        if status == 401:
            return TokenRejected(
                "Microsoft 365 no longer accepts this mailbox's sign-in"
                f"{said}. Sign in again with Reconnect.",
                code,
            )
        if status == 403:
            return MailError(
                "access_denied",
                f"Microsoft 365 refused access{said}. The mailbox's owner must sign in again "
                "and accept the permissions, or an administrator must allow them.",
            )
        if status == 404 and code == "MailboxNotEnabledForRESTAPI":
            return MailError(
                "contact_admin",
                f"This mailbox cannot be reached through Microsoft Graph{said}; ask an "
                "administrator whether it is hosted in Microsoft 365.",
            )
        if status == 410:
            return DeltaReset(f"Microsoft Graph no longer knows this folder's sync state{said}.",
                              code)  # fmt: skip
        if sending and status >= 500 and (status in (502, 504) or not code):
            # A gateway's answer, not Graph's own (a bad gateway, a gateway that gave up
            # waiting, a 503 from a proxy whose server reset after taking the request):
            # the service behind it may have taken the message, so it is not sent again.
            return MailError(
                "handed_over",
                f"Microsoft 365's gateway answered HTTP {status} after the message was "
                "handed over; it may have been sent.",
            )
        if status in (429, 503):
            wait = _retry_after(response.headers.get("Retry-After")) or DEFAULT_RETRY_AFTER
            return Throttled(f"Microsoft Graph asks us to wait {wait:.0f} s{said}.", wait)
        if sending and 400 <= status < 500:
            return MailError("rejected", f"Microsoft 365 did not accept the message{said}.")
        if status >= 500:
            return MailError("temporary", f"Microsoft Graph failed for now{said}.")
        return MailError("server_error", f"Microsoft Graph refused a request{said}.")

    def _request(
        self, method: str, path_or_link: str, *, params: dict | None = None,
        headers: dict | None = None, data: bytes | None = None, sending: bool = False,
    ) -> requests.Response:  # fmt: skip
        """A response with a 2xx status, its body unread; throttling waited out while
        the waits are short."""
        url = self._url(path_or_link)
        for attempt in range(MAX_THROTTLE_WAITS + 1):
            response = self._send(method, url, params=params, headers=headers, data=data)
            if response.status_code < 300:
                return response
            error = self._error(response, sending=sending)
            if (
                not isinstance(error, Throttled)
                or error.wait > self.max_wait
                or attempt == MAX_THROTTLE_WAITS
            ):
                raise error
            self.sleep(error.wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, path_or_link: str, *, params: dict | None = None,
                 headers: dict | None = None) -> dict[str, Any]:  # fmt: skip
        response = self._request("GET", path_or_link, params=params, headers=headers)
        body = self._read(response, self.max_page_bytes)
        try:
            document = json.loads(body)
        except ValueError:
            raise MailError("temporary", "Microsoft Graph's answer was not JSON.") from None
        except RecursionError:  # nesting no Graph document has
            raise MailError("server_error", "Microsoft Graph's answer nests too deep.") from None
        if not isinstance(document, dict):
            raise MailError("server_error", "Microsoft Graph's answer was not an object.")
        return document

    # --- Collections ---

    def pages(self, path: str, *, params: dict | None = None,
              headers: dict | None = None) -> Iterator[list[dict[str, Any]]]:  # fmt: skip
        """Each page's `value` of a collection, following @odata.nextLink."""
        link: str | None = path
        previous = None
        for _ in range(MAX_PAGES):
            document = self.get_json(link, params=params if link == path else None,
                                     headers=headers)  # fmt: skip
            yield _rows(document)
            link = document.get("@odata.nextLink")
            if not link:
                return
            if link == previous:
                raise MailError("server_error", "Microsoft Graph sent the same page link twice.")
            previous = link
        raise MailError("server_error", "Microsoft Graph's collection did not end.")

    def items(self, path: str, *, params: dict | None = None) -> list[dict[str, Any]]:
        return [row for page in self.pages(path, params=params) for row in page]

    # --- Delta ---

    def delta_pages(self, start: str, *, params: dict | None = None,
                    page_size: int = 100) -> Iterator[DeltaPage]:  # fmt: skip
        """The pages of one delta round. `start`: a delta path ("mailFolders/{id}/
        messages/delta", with `params` such as $select) for a first round, or a link a
        page gave (next or delta). Store each page's `link` with what the page changed,
        in the same transaction: a broken page raises before anything of it is yielded,
        and asking its link again gives it whole."""
        headers = {"Prefer": f"odata.maxpagesize={max(1, min(page_size, MAX_PAGE_SIZE))}"}
        link = start
        first = True
        for _ in range(MAX_PAGES):
            document = self.get_json(link, params=params if first else None, headers=headers)
            first = False
            changed, removed = [], []
            for row in _rows(document):
                if "@removed" in row:
                    removed.append(str(row["id"]))
                else:
                    changed.append(row)
            next_link = document.get("@odata.nextLink") or None
            delta_link = document.get("@odata.deltaLink") or None
            if bool(next_link) == bool(delta_link):
                raise MailError(
                    "server_error",
                    "Microsoft Graph's delta page has neither or both of nextLink and deltaLink.",
                )
            for given in (next_link, delta_link):
                if given:
                    self._url(given)  # refuse a link elsewhere before it is stored
            yield DeltaPage(changed, removed, next_link, delta_link)
            if delta_link:
                return
            if next_link == link:
                raise MailError("server_error", "Microsoft Graph sent the same page link twice.")
            link = next_link
        raise MailError("server_error", "Microsoft Graph's delta round did not end.")

    def delta_round(self, start: str, *, params: dict | None = None,
                    page_size: int = 100) -> DeltaRound:  # fmt: skip
        """A whole round at once (small folders, calendars, task lists): nothing is
        returned unless every page came."""
        folded = DeltaRound()
        for page in self.delta_pages(start, params=params, page_size=page_size):
            for row in page.changed:
                folded.removed.discard(row["id"])
                folded.changed[row["id"]] = row
            for ident in page.removed:
                folded.changed.pop(ident, None)
                folded.removed.add(ident)
            folded.delta_link = page.delta_link or ""
        return folded

    def messages_delta(self, folder_id: str, *, link: str = "",
                       select: tuple[str, ...] = MESSAGE_FIELDS,
                       page_size: int = 100) -> Iterator[DeltaPage]:  # fmt: skip
        """A folder's message changes: from `link` (stored from the last page), or the
        whole folder when there is none."""
        if link:
            return self.delta_pages(link, page_size=page_size)
        path = f"mailFolders/{_segment(folder_id)}/messages/delta"
        return self.delta_pages(path, params={"$select": ",".join(select)}, page_size=page_size)

    # --- Mail ---

    def me(self) -> GraphUser:
        document = self.get_json("", params={"$select": "mail,userPrincipalName,displayName"})
        upn = str(document.get("userPrincipalName") or "")
        return GraphUser(
            address=str(document.get("mail") or upn),
            user_principal_name=upn,
            display_name=str(document.get("displayName") or ""),
        )

    def well_known_folder(self, name: str) -> MailFolder:
        """inbox, sentitems, deleteditems, junkemail, drafts, archive, ..."""
        document = self.get_json(f"mailFolders/{_segment(name)}")
        return _folder(document, (str(document.get("displayName") or name),), well_known=name)

    def mail_folders(self) -> list[MailFolder]:
        """Every mail folder, depth first, child folders included (bounded)."""
        found: list[MailFolder] = []

        def walk(path: str, above: tuple[str, ...], depth: int) -> None:
            for row in self.items(path, params={"$top": "100"}):
                if len(found) >= MAX_FOLDERS:
                    return
                folder = _folder(row, (*above, str(row.get("displayName") or "")))
                found.append(folder)
                if folder.child_count and depth < MAX_FOLDER_DEPTH:
                    walk(f"mailFolders/{_segment(folder.id)}/childFolders", folder.path,
                         depth + 1)  # fmt: skip

        walk("mailFolders", (), 0)
        return found

    def received_between(
        self, folder_id: str, *, since: datetime | None, before: datetime,
        select: tuple[str, ...] = ("id", "receivedDateTime", "isRead"),
    ) -> list[dict[str, Any]]:  # fmt: skip
        """The folder's messages received from `since` (None: the oldest) up to
        `before`, newest first, with the fields selected."""
        wanted = f"receivedDateTime lt {_stamp(before)}"
        if since is not None:
            wanted = f"receivedDateTime ge {_stamp(since)} and {wanted}"
        params = {"$filter": wanted, "$select": ",".join(select), "$top": "100"}
        return self.items(f"mailFolders/{_segment(folder_id)}/messages", params=params)

    def message(self, message_id: str, *, select: tuple[str, ...]) -> dict[str, Any]:
        """One message's properties (those selected)."""
        params = {"$select": ",".join(select)}
        return self.get_json(f"messages/{_segment(message_id)}", params=params)

    def message_mime(self, message_id: str, *, limit: int) -> bytes:
        """A message's source exactly as stored (/$value); TooLarge above `limit`."""
        response = self._request("GET", f"messages/{_segment(message_id)}/$value")
        return self._read(response, limit)

    def mime_batch(
        self, message_ids: list[str], *, limit: int, bound: int | None = None
    ) -> dict[str, bytes | MailError]:
        """Several messages' sources in one round trip (JSON batching, at most
        BATCH_MAX): each a source, or the MailError its own answer was (404 gone, 429
        throttled, ...); one above `limit` is TooLarge, for the caller to read alone. The
        whole answer is bounded as a page is, or by `bound` bytes (TooLarge: read them one
        by one)."""
        if not 0 < len(message_ids) <= BATCH_MAX:
            raise ValueError(f"1 to {BATCH_MAX} messages per batch")
        asked = {str(n): ident for n, ident in enumerate(message_ids)}
        body = {
            "requests": [
                {"id": n, "method": "GET", "url": f"/me/messages/{_segment(ident)}/$value"}
                for n, ident in asked.items()
            ]
        }
        response = self._request(
            "POST", f"{self.base_url}/$batch", headers={"Content-Type": "application/json"},
            data=json.dumps(body).encode(),
        )  # fmt: skip
        try:
            document = json.loads(self._read(response, bound or self.max_page_bytes))
            answers = document["responses"]
            if not isinstance(answers, list):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise MailError("server_error", "Microsoft Graph's batch answer was not one.") from None
        found: dict[str, bytes | MailError] = {}
        for answer in answers:
            ident = asked.get(str(answer.get("id"))) if isinstance(answer, dict) else None
            if ident is None:
                continue
            found[ident] = self._batch_answer(answer, limit)
        for ident in message_ids:  # an answer the batch left out: asked again alone
            found.setdefault(ident, MailError("temporary", "Missing from the batch answer."))
        return found

    def _batch_answer(self, answer: dict, limit: int) -> bytes | MailError:
        status = answer.get("status")
        given = answer.get("headers")
        headers = CaseInsensitiveDict(
            {str(k): str(v) for k, v in given.items()} if isinstance(given, dict) else {}
        )
        body = answer.get("body")
        if status == 200 and isinstance(body, str):
            try:
                raw = base64.b64decode(body, validate=True)
            except ValueError:
                return MailError("server_error", "A batch answer's source was not base64.")
            if len(raw) > limit:
                return TooLarge(f"The message is larger than {limit // 1024} KB.", limit)
            return raw
        if not isinstance(status, int) or status < 400:
            return MailError("server_error", f"Microsoft Graph's batch answered {status!r}.")
        error_body = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error_body, dict):  # an odd document says no more than its status
            error_body = {}
        code = str(error_body.get("code") or "")
        message = _short(error_body.get("message") or "")
        error = self._classified(
            _Answered(status_code=status, headers=headers), code, message, sending=False
        )
        error.status, error.code = status, code
        return error

    def write_message_mime(self, message_id: str, out: BinaryIO, *, limit: int) -> MimeCopy:
        """A message's source into `out` as it arrives; above `limit` its first `limit`
        bytes (complete=False)."""
        response = self._request("GET", f"messages/{_segment(message_id)}/$value")
        size, complete = self._read(response, limit, out)
        return MimeCopy(size, complete)

    def send_mime(self, raw: bytes, *, handing_over: Callable[[], None] = lambda: None) -> None:
        """sendMail with the message as MIME (base64, text/plain, as Graph takes it); the
        server files the Sent copy itself. `handing_over()` runs just before the message
        leaves; a broken connection after it is kind "handed_over" (may have been sent)."""
        body = base64.b64encode(raw)
        if len(body) > MAX_SEND_BYTES:
            raise MailError(
                "rejected",
                f"This email is {len(raw) / 1048576:.1f} MB; Microsoft 365 takes at most about "
                "3 MB through sendMail. Make the attachments smaller.",
            )
        # A pooled connection the server has closed meanwhile would fail after the
        # hand-over point and read as "may have been sent": send on a fresh one.
        for adapter in self.session.adapters.values():
            adapter.close()
        handing_over()
        try:
            response = self._request(
                "POST", "sendMail", headers={"Content-Type": "text/plain"}, data=body,
                sending=True,
            )  # fmt: skip
        except MailError as error:
            if error.kind in ("connection", "timeout", "connection_lost") and not _before_sending(
                error
            ):
                raise MailError(
                    "handed_over",
                    "The message was handed to Microsoft 365 and the answer never came; it "
                    "may have been sent.",
                ) from error
            raise
        response.close()

    def find_messages(
        self, folder_id: str, internet_message_id: str, *, select: tuple[str, ...] = MESSAGE_FIELDS
    ) -> list[dict[str, Any]]:
        """The folder's messages with this Message-ID (a Sent copy looked for first)."""
        quoted = internet_message_id.replace("'", "''")  # OData string literal
        params = {"$filter": f"internetMessageId eq '{quoted}'", "$select": ",".join(select)}
        return self.items(f"mailFolders/{_segment(folder_id)}/messages", params=params)

    def create_message(self, folder_id: str, raw: bytes) -> dict[str, Any]:
        """Put `raw` (MIME) in a folder; Graph makes it a draft (isDraft), which is what
        it offers for MIME: a Sent copy is better left to sendMail's own."""
        body = base64.b64encode(raw)
        if len(body) > MAX_SEND_BYTES:
            raise MailError(
                "rejected",
                f"This email is {len(raw) / 1048576:.1f} MB; Microsoft 365 takes at most about "
                "3 MB this way.",
            )
        response = self._request(
            "POST", f"mailFolders/{_segment(folder_id)}/messages",
            headers={"Content-Type": "text/plain"}, data=body,
        )  # fmt: skip
        return self._created(response)

    def _created(self, response: requests.Response) -> dict[str, Any]:
        """A POST's answer: the entity Graph made, with its id."""
        try:
            document = json.loads(self._read(response, MAX_ERROR_BYTES * 4))
        except ValueError:
            raise MailError("temporary", "Microsoft Graph's answer was not JSON.") from None
        if not isinstance(document, dict) or not isinstance(document.get("id"), str):
            raise MailError("server_error", "Microsoft Graph did not say what it created.")
        return document

    # --- Meetings, tasks, contacts ---

    def calendar_view(self, start: datetime, end: datetime, *,
                      select: tuple[str, ...] = ()) -> list[dict[str, Any]]:  # fmt: skip
        """Events and occurrences of series overlapping [start, end)."""
        params = {"startDateTime": _stamp(start), "endDateTime": _stamp(end), "$top": "100"}
        if select:
            params["$select"] = ",".join(select)
        return self.items("calendarView", params=params)

    def calendar_view_delta(self, start: datetime, end: datetime, *, link: str = "",
                            page_size: int = 100) -> Iterator[DeltaPage]:  # fmt: skip
        if link:
            return self.delta_pages(link, page_size=page_size)
        params = {"startDateTime": _stamp(start), "endDateTime": _stamp(end)}
        return self.delta_pages("calendarView/delta", params=params, page_size=page_size)

    def todo_lists(self) -> list[dict[str, Any]]:
        return self.items("todo/lists")

    def todo_tasks(self, list_id: str) -> list[dict[str, Any]]:
        return self.items(f"todo/lists/{_segment(list_id)}/tasks", params={"$top": "100"})

    def contact_folders(self) -> list[dict[str, Any]]:
        """The folders in the default Contacts folder (it holds `contacts()`)."""
        return self.items("contactFolders")

    def create_contact(self, contact: dict[str, Any]) -> str:
        """Add a contact to the default Contacts folder; returns its id."""
        response = self._request(
            "POST", "contacts", headers={"Content-Type": "application/json"},
            data=json.dumps(contact).encode(),
        )  # fmt: skip
        return self._created(response)["id"]

    def contacts(self, folder_id: str = "") -> list[dict[str, Any]]:
        path = f"contactFolders/{_segment(folder_id)}/contacts" if folder_id else "contacts"
        return self.items(path, params={"$top": "100"})


def _segment(value: str) -> str:
    # Graph ids are base64 with "-" and "_"; anything that could change the path is
    # refused rather than escaped (an id is never meant to hold it).
    if not value or any(c in value for c in "/?#%\\") or value in (".", ".."):
        raise MailError("server_error", f"Not a Microsoft Graph id: {_short(value, 40)!r}.")
    return value


def _rows(document: dict) -> list[dict[str, Any]]:
    rows = document.get("value")
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and isinstance(r.get("id"), str) for r in rows
    ):
        raise MailError("server_error", "Microsoft Graph's page has no list of items with ids.")
    return rows


def _folder(row: dict, path: tuple[str, ...], well_known: str = "") -> MailFolder:
    if not isinstance(row.get("id"), str):
        raise MailError("server_error", "Microsoft Graph sent a folder without an id.")

    def count(name: str) -> int:
        value = row.get(name)
        return value if isinstance(value, int) and value >= 0 else 0

    return MailFolder(
        id=row["id"],
        display_name=str(row.get("displayName") or ""),
        parent_id=str(row.get("parentFolderId") or ""),
        path=path,
        child_count=count("childFolderCount"),
        total_count=count("totalItemCount"),
        unread_count=count("unreadItemCount"),
        well_known=well_known,
    )


def _before_sending(error: MailError) -> bool:
    """Whether a failed sendMail never reached the server: no connection was made (the
    server down, the proxy refusing)."""
    return trust.never_sent(error.__cause__)
