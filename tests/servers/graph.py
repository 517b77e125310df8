"""A protocol fake of Microsoft Graph v1.0, over HTTPS with the suite's CA.

This is not Microsoft's service. It answers the part of Graph v1.0 the app uses, on
`/v1.0/me/...`, with documents shaped like Graph's: `@odata.context`, `value`,
`@odata.nextLink`, `@odata.deltaLink`, a message's `body` as HTML (Graph's default),
removed items as `{"id", "@removed": {...}}`, and errors as `{"error": {"code",
"message", "innerError"}}`. Bearer tokens are checked with `token_user` (the suite's
OAuth server, tests/servers/oauth.py: an unknown or expired token gets 401
InvalidAuthenticationToken). Users, folders, messages, events, To Do lists and tasks,
contact folders and contacts live in memory; `requests` records who asked what, route by
route.

Endpoints: GET /me; /me/mailFolders (+ /{id or well-known name}, /childFolders,
/messages with $filter on internetMessageId or receivedDateTime, POST /messages from MIME or JSON,
/messages/delta); /me/messages/{id} and /$value (MIME); POST /me/sendMail
(MIME as base64 text/plain, or JSON; a copy is saved in Sent Items); /me/calendarView
(+ /delta; weekly series expanded into occurrences); /me/todo/lists (+ /tasks, /delta);
/me/contactFolders (+ /contacts, /childFolders, /delta) and /me/contacts (+ /delta, and
POST to add one).
Collections page with `$top`/`$skip` (nextLink); delta rounds honour `$select` and
`Prefer: odata.maxpagesize` and page through `$skiptoken`s that can be asked again.

Faults, per route name (see `_route`), for anyone or one mailbox: `throttle_next` (429 or
503 with Retry-After), `fail_next` (any Graph error, nothing done),
`cut_next` (the headers and half the body, then the connection closes; `after` requests
of the route answered whole first, to cut a later page of a round),
`forget_delta_links` (410 Gone, syncStateNotFound or resyncRequired).
"""

import base64
import binascii
import email
import email.policy
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

from tests.servers.certs import server_context
from tests.servers.dovecot import free_port

# Graph refuses request bodies above 4 MB (larger messages go through upload sessions).
MAX_BODY = 4 * 1024 * 1024
DELTA_NAMES = {
    "delta()": "delta",
    "microsoft.graph.delta": "delta",
    "microsoft.graph.delta()": "delta",
}
DEFAULT_PAGE = 10  # Graph's default page size for messages and their delta
MAX_PAGE = 1000
WELL_KNOWN = [  # well-known name, display name
    ("inbox", "Inbox"),
    ("drafts", "Drafts"),
    ("sentitems", "Sent Items"),
    ("deleteditems", "Deleted Items"),
    ("junkemail", "Junk Email"),
    ("outbox", "Outbox"),
    ("archive", "Archive"),
]


def _new_id(prefix: str) -> str:
    # Opaque, URL-safe-ish base64 like Exchange's ids (messages "AAMk", folders "AQMk").
    raw = base64.b64encode(secrets.token_bytes(36)).decode().replace("/", "-")
    return prefix + raw.replace("+", "_")


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _box(name: str | None, address: str) -> dict:
    return {"emailAddress": {"name": name or address, "address": address}}


@dataclass
class User:
    address: str
    name: str
    id: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass
class Container:
    """A mail folder, a contact folder, a To Do list or the calendar."""

    id: str
    mailbox: str
    kind: str  # "mail", "contacts", "todo", "calendar"
    name: str
    parent: str | None = None
    well_known: str | None = None


@dataclass
class Entity:
    """A message, an event, a contact or a task: its Graph properties as JSON."""

    id: str
    mailbox: str
    kind: str  # "message", "event", "contact", "task"
    container: str
    data: dict
    mime: bytes | None = None
    seq: int = 0
    version: int = 1


@dataclass
class Round:
    """One delta round: the changes it reports, fixed when it starts, in pages that can
    be asked for again (a client retrying a cut page gets the same page)."""

    scope: str
    changes: list[str]  # ids, in order
    after: dict[str, int]  # the snapshot the round's deltaLink stands for
    select: list[str] | None
    page_size: int


@dataclass
class State:
    users: dict[str, User] = field(default_factory=dict)
    containers: dict[str, Container] = field(default_factory=dict)
    entities: dict[str, Entity] = field(default_factory=dict)
    # delta token -> (scope, snapshot id -> version, $select, page size)
    delta_tokens: dict[str, tuple[str, dict[str, int], list[str] | None, int]] = field(
        default_factory=dict
    )
    rounds: dict[str, Round] = field(default_factory=dict)
    forgotten_code: str = "syncStateNotFound"
    sent: list[dict] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    # (route, mailbox or None for anyone's) -> [status, seconds, count]
    throttles: dict[tuple, list] = field(default_factory=dict)
    cuts: dict[tuple, int] = field(default_factory=dict)  # (route, mailbox or None) -> count
    # (route, mailbox or None) -> requests answered whole before the cuts begin
    cuts_after: dict[tuple, int] = field(default_factory=dict)
    # (route, mailbox or None) -> [status, code, message, count]
    failures: dict[tuple, list] = field(default_factory=dict)
    seq: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def in_container(self, container_id: str) -> list[Entity]:
        found = (e for e in self.entities.values() if e.container == container_id)
        return sorted(found, key=lambda e: e.seq)

    def children(self, container: Container) -> list[Container]:
        return [c for c in self.containers.values() if c.parent == container.id]

    def well_known(self, mailbox: str, name: str) -> Container | None:
        found = (
            c
            for c in self.containers.values()
            if c.mailbox == mailbox and (c.well_known or "").lower() == name.lower()
        )
        return next(found, None)


def _page_size(headers: dict[str, str]) -> int:
    """Prefer: odata.maxpagesize=N (bounded), else Graph's default."""
    for part in headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit():
            return max(1, min(int(value), MAX_PAGE))
    return DEFAULT_PAGE


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


def _not_found(what: str = "item") -> GraphError:
    if what == "folder":
        return GraphError(404, "ErrorItemNotFound", "The specified folder could not be found.")
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


# --- Rendering ------------------------------------------------------------------------------


def _etag(entity: Entity) -> str:
    digest = hashlib.sha256(f"{entity.id}/{entity.version}".encode()).digest()
    return base64.b64encode(b"\x09\x00\x00\x00" + digest[:20]).decode()


def _render(state: State, entity: Entity, select: list[str] | None) -> dict:
    data = dict(entity.data)
    change_key = _etag(entity)
    if entity.kind in ("message", "event", "contact"):
        data["changeKey"] = change_key
    if entity.kind == "message":
        data["parentFolderId"] = entity.container
    if entity.kind == "contact":
        data["parentFolderId"] = entity.container
    if select:
        data = {key: value for key, value in data.items() if key in select}
    return {"@odata.etag": f'W/"{change_key}"', "id": entity.id, **data}


def _render_folder(state: State, folder: Container) -> dict:
    if folder.kind == "contacts":
        return {"id": folder.id, "displayName": folder.name, "parentFolderId": folder.parent}
    if folder.kind == "todo":
        return {
            "@odata.etag": f'W/"{hashlib.sha256(folder.id.encode()).hexdigest()[:16]}"',
            "id": folder.id,
            "displayName": folder.name,
            "isOwner": True,
            "isShared": False,
            "wellknownListName": folder.well_known or "none",
        }
    items = state.in_container(folder.id)
    return {
        "id": folder.id,
        "displayName": folder.name,
        "parentFolderId": folder.parent,
        "childFolderCount": len(state.children(folder)),
        "unreadItemCount": sum(not e.data.get("isRead", True) for e in items),
        "totalItemCount": len(items),
        "sizeInBytes": sum(len(e.mime or b"") for e in items),
        "isHidden": False,
    }


def _message_data(mime: bytes, is_read: bool, received: datetime) -> dict:
    """The message properties Graph derives from its MIME."""
    msg = email.message_from_bytes(mime, policy=email.policy.default)

    def header(name: str) -> str | None:
        return None if msg[name] is None else str(msg[name])

    def boxes(name: str) -> list[dict]:
        return [_box(n, a) for n, a in getaddresses(msg.get_all(name, [])) if a]

    sender = boxes("From")
    body = msg.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    # `body` comes as HTML, Graph's default (the fake does not take Prefer:
    # outlook.body-content-type): the message's HTML part, or its text made HTML.
    html_part = msg.get_body(preferencelist=("html",))
    if html_part is not None:
        html = html_part.get_content()
    else:
        lines = "<br>\r\n".join(escape(line) for line in str(text).splitlines())
        html = f"<html><head></head><body><div>{lines}</div></body></html>"
    sent = msg["Date"].datetime if msg["Date"] is not None and msg["Date"].datetime else received
    return {
        "createdDateTime": _stamp(received),
        "lastModifiedDateTime": _stamp(received),
        "receivedDateTime": _stamp(received),
        "sentDateTime": _stamp(sent),
        "hasAttachments": any(True for _ in msg.iter_attachments()),
        "internetMessageId": header("Message-ID"),
        "subject": header("Subject") or "",
        "bodyPreview": " ".join(str(text).split())[:255],
        "body": {"contentType": "html", "content": html},
        "importance": "normal",
        "conversationId": _new_id("AAQk"),
        "isRead": is_read,
        "isDraft": False,
        "from": sender[0] if sender else None,
        "sender": sender[0] if sender else None,
        "toRecipients": boxes("To"),
        "ccRecipients": boxes("Cc"),
        "bccRecipients": boxes("Bcc"),
        "replyTo": boxes("Reply-To"),
        "flag": {"flagStatus": "notFlagged"},
    }


# --- Requests -------------------------------------------------------------------------------


@dataclass
class Call:
    server: "GraphServer"
    state: State
    user: User
    method: str
    parts: list[str]  # the path after /v1.0/me, split
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def select(self) -> list[str] | None:
        raw = self.query.get("$select")
        return [s.strip() for s in raw.split(",") if s.strip()] if raw else None

    def url(self, path: str, **query: str) -> str:
        text = "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return f"{self.server.graph_url}/me/{path}" + (f"?{text}" if text else "")

    def context(self, what: str) -> str:
        return f"{self.server.graph_url}/$metadata#{what}"

    def folder(self, ref: str, kind: str = "mail") -> Container:
        found = self.state.containers.get(ref)
        if found is None and kind == "mail":
            found = self.state.well_known(self.user.address, ref)
        if found is None or found.mailbox != self.user.address or found.kind != kind:
            raise _not_found("folder")
        return found

    def entity(self, ident: str, kind: str) -> Entity:
        found = self.state.entities.get(ident)
        if found is None or found.mailbox != self.user.address or found.kind != kind:
            raise _not_found()
        return found

    def collection(self, rows: list[dict], what: str, path: str) -> dict:
        """A collection page by $top and $skip, with a nextLink while more remain."""
        top = int(self.query.get("$top") or DEFAULT_PAGE)
        skip = int(self.query.get("$skip") or 0)
        top = max(1, min(top, MAX_PAGE))
        answer = {"@odata.context": self.context(what), "value": rows[skip : skip + top]}
        if skip + top < len(rows):
            more = {"$top": str(top), "$skip": str(skip + top)}
            for carried in ("$select", "$filter"):
                if self.query.get(carried):
                    more[carried] = self.query[carried]
            answer["@odata.nextLink"] = self.url(path, **more)
        return answer


def _delta(call: Call, scope: str, current: list[Entity], what: str, path: str) -> dict:
    """A delta page: the first of a new round (no token, or a $deltatoken) or the next
    page of a running one ($skiptoken). `current` is what the scope holds now."""
    state = call.state
    skip = call.query.get("$skiptoken")
    if skip is not None:
        round_id, _, offset_text = skip.rpartition(".")
        started = state.rounds.get(round_id)
        if started is None or started.scope != scope or not offset_text.isdigit():
            raise _gone(state)
        offset = int(offset_text)
    else:
        if "$deltatoken" in call.query:
            known = state.delta_tokens.get(call.query["$deltatoken"])
            if known is None or known[0] != scope:
                raise _gone(state)
            _, snapshot, select, page_size = known
        else:
            snapshot, select, page_size = {}, call.select, _page_size(call.headers)
        now = {e.id: e.version for e in current}
        changes = [ident for ident in snapshot if ident not in now]
        changes += [i for i, v in now.items() if snapshot.get(i) != v]
        round_id = secrets.token_urlsafe(24)
        started = Round(scope, changes, now, select, page_size)
        state.rounds[round_id] = started
        offset = 0
    by_id = {e.id: e for e in current}
    page = started.changes[offset : offset + started.page_size]
    rows = [
        _render(state, by_id[i], started.select)
        if i in by_id and i in started.after
        else {"id": i, "@removed": {"reason": "deleted"}}
        for i in page
    ]
    answer = {"@odata.context": call.context(what), "value": rows}
    if offset + len(page) < len(started.changes):
        next_skip = f"{round_id}.{offset + len(page)}"
        answer["@odata.nextLink"] = call.url(path, **{"$skiptoken": next_skip})
    else:
        new_token = secrets.token_urlsafe(32)
        state.delta_tokens[new_token] = (scope, started.after, started.select, started.page_size)
        answer["@odata.deltaLink"] = call.url(path, **{"$deltatoken": new_token})
    return answer


def _gone(state: State) -> GraphError:
    return GraphError(
        410,
        state.forgotten_code,
        "The sync state generation is not found. The delta token is expired and data "
        "must be synchronized again.",
    )


def _mail_folders(call: Call) -> dict | tuple:
    parts, state = call.parts, call.state
    if len(parts) == 1:
        root = state.well_known(call.user.address, "msgfolderroot")
        rows = [_render_folder(state, f) for f in state.children(root)]
        return call.collection(rows, "users('me')/mailFolders", "mailFolders")
    folder = call.folder(parts[1])
    if len(parts) == 2:
        answer = _render_folder(state, folder)
        return {"@odata.context": call.context("users('me')/mailFolders/$entity"), **answer}
    if parts[2:] == ["childFolders"]:
        rows = [_render_folder(state, f) for f in state.children(folder)]
        path = f"mailFolders/{folder.id}/childFolders"
        return call.collection(rows, f"users('me')/mailFolders('{folder.id}')/childFolders", path)
    if parts[2:] == ["messages"] and call.method == "POST":
        return _create_message(call, folder)
    if parts[2:] == ["messages"]:
        items = list(reversed(state.in_container(folder.id)))  # newest first, as Graph
        items = _filtered(items, call.query.get("$filter"))
        rows = [_render(state, e, call.select) for e in items]
        path = f"mailFolders/{folder.id}/messages"
        return call.collection(rows, f"users('me')/mailFolders('{folder.id}')/messages", path)
    if parts[2:] == ["messages", "delta"]:
        items = state.in_container(folder.id)
        path = f"mailFolders/{folder.id}/messages/delta"
        return _delta(call, f"messages:{folder.id}", items, "Collection(message)", path)
    raise GraphError(400, "BadRequest", f"Unsupported segment {'/'.join(parts[2:])!r}.")


_COMPARE = {
    "ge": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
}


def _filtered(items: list[Entity], expression: str | None) -> list[Entity]:
    """$filter, as far as the app asks it: internetMessageId eq '<...>' (OData doubles a
    quote inside a string), or receivedDateTime compared (ge, gt, le, lt) with a
    DateTimeOffset, clauses joined by "and"."""
    if not expression:
        return items
    match = re.fullmatch(r"\s*internetMessageId\s+eq\s+'((?:[^']|'')*)'\s*", expression)
    if match is not None:
        wanted = match.group(1).replace("''", "'")
        return [e for e in items if e.data.get("internetMessageId") == wanted]
    for clause in re.split(r"\s+and\s+", expression.strip()):
        match = re.fullmatch(r"receivedDateTime\s+(ge|gt|le|lt)\s+(\S+)", clause.strip())
        if match is None:
            raise GraphError(
                400, "BadRequest",
                "The fake filters on internetMessageId eq, or receivedDateTime ge/gt/le/lt.",
            )  # fmt: skip
        try:
            bound = _parse_stamp(match.group(2))
        except ValueError:
            raise GraphError(400, "BadRequest", f"Invalid date {match.group(2)!r}.") from None
        compare = _COMPARE[match.group(1)]
        items = [e for e in items if compare(_parse_stamp(e.data["receivedDateTime"]), bound)]
    return items


def _mime_body(call: Call) -> bytes:
    """A message given as MIME: base64 in a text/plain body, as Graph takes it."""
    try:
        return base64.b64decode(call.body, validate=True)
    except (binascii.Error, ValueError):
        message = "Invalid base64 string for MIME content."
        raise GraphError(400, "ErrorMimeContentInvalidBase64String", message) from None


def _create_message(call: Call, folder: Container) -> tuple:
    """POST .../messages: MIME (base64 text/plain) makes a draft, as in Graph; JSON
    makes a draft too unless PR_MESSAGE_FLAGS (Integer 0x0E07) says 1 (read, sent)."""
    kind = call.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "text/plain":
        mime = _mime_body(call)
        draft = True
    elif kind == "application/json":
        try:
            message = json.loads(call.body)
        except ValueError:
            raise GraphError(400, "BadRequest", "Invalid JSON.") from None
        mime = _mime_from_json(call.user, message)
        flags = {
            p.get("id", "").lower(): p.get("value")
            for p in message.get("singleValueExtendedProperties") or []
        }
        draft = flags.get("integer 0x0e07") not in ("1", 1)
    else:
        raise GraphError(415, "UnsupportedMediaType", "The content type is not supported.")
    entity = _store_message(call.state, folder, mime, is_read=True, received=datetime.now(UTC))
    entity.data["isDraft"] = draft
    context = call.context(f"users('me')/mailFolders('{folder.id}')/messages/$entity")
    body = json.dumps({"@odata.context": context, **_render(call.state, entity, None)})
    return (201, body.encode(), "application/json")


def _messages(call: Call) -> dict | tuple:
    if len(call.parts) < 2 and call.method == "POST":
        drafts = call.state.well_known(call.user.address, "drafts")
        return _create_message(call, drafts)
    if len(call.parts) < 2:
        raise GraphError(400, "BadRequest", "The fake lists messages per folder only.")
    message = call.entity(call.parts[1], "message")
    if len(call.parts) == 2:
        context = call.context("users('me')/messages/$entity")
        return {"@odata.context": context, **_render(call.state, message, call.select)}
    if call.parts[2:] == ["$value"]:
        return ("message/rfc822", message.mime or b"")
    raise GraphError(400, "BadRequest", "Unsupported segment.")


def _send_mail(call: Call) -> tuple:
    state, user = call.state, call.user
    kind = call.headers.get("content-type", "").split(";")[0].strip().lower()
    save = True
    if kind == "text/plain":
        mime = _mime_body(call)
        msg = email.message_from_bytes(mime, policy=email.policy.default)
        if not any(msg.get_all(h) for h in ("To", "Cc", "Bcc")):
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient isn't valid.")
    elif kind == "application/json":
        try:
            payload = json.loads(call.body)
            message = payload["message"]
        except (ValueError, KeyError, TypeError):
            raise GraphError(400, "BadRequest", "Empty Payload. JSON content expected.") from None
        save = payload.get("saveToSentItems", True) not in (False, "false")
        mime = _mime_from_json(user, message)
    else:
        raise GraphError(415, "UnsupportedMediaType", "The content type is not supported.")
    state.sent.append({"user": user.address, "mime": mime, "saved": save})
    if save:
        sent = state.well_known(user.address, "sentitems")
        _store_message(state, sent, mime, is_read=True, received=datetime.now(UTC))
    return (202, b"")


def _mime_from_json(user: User, message: dict) -> bytes:
    from email.message import EmailMessage
    from email.utils import format_datetime, formataddr, make_msgid

    msg = EmailMessage()
    msg["From"] = formataddr((user.name, user.address))
    for header in ("to", "cc"):
        boxes = message.get(f"{header}Recipients") or []
        if boxes:
            msg[header.title()] = ", ".join(b["emailAddress"]["address"] for b in boxes)
    msg["Subject"] = message.get("subject", "")
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=user.address.partition("@")[2] or None)
    body = message.get("body") or {}
    kind = "html" if str(body.get("contentType", "text")).lower() == "html" else "plain"
    msg.set_content(body.get("content", ""), subtype=kind)
    return msg.as_bytes()


def _store_message(state: State, folder: Container, mime: bytes, *, is_read: bool, received):
    data = _message_data(mime, is_read, received)
    entity = Entity(_new_id("AAMk"), folder.mailbox, "message", folder.id, data, mime)
    entity.seq = state.next_seq()
    state.entities[entity.id] = entity
    return entity


def _occurrences(event: Entity, start: datetime, end: datetime) -> list[dict]:
    """The event, or its series' occurrences, overlapping [start, end)."""
    data = event.data
    first_start, first_end = (
        _parse_stamp(data["start"]["dateTime"]),
        _parse_stamp(data["end"]["dateTime"]),
    )
    weeks = data.get("_weekly_count")
    if not weeks:
        return [data] if first_start < end and first_end > start else []
    found = []
    for n in range(weeks):
        s, e = first_start + timedelta(weeks=n), first_end + timedelta(weeks=n)
        if s < end and e > start:
            occurrence = {k: v for k, v in data.items() if not k.startswith("_")}
            occurrence |= {
                "type": "occurrence",
                "seriesMasterId": event.id,
                "start": {"dateTime": _stamp(s)[:-1] + ".0000000", "timeZone": "UTC"},
                "end": {"dateTime": _stamp(e)[:-1] + ".0000000", "timeZone": "UTC"},
                "_occurrence": n,
            }
            found.append(occurrence)
    return found


def _views(state: State, calendar: Container, start: datetime, end: datetime) -> list[Entity]:
    """What calendarView shows of [start, end): events, and series as occurrences (each
    with its own id, as Graph gives them)."""
    views = []
    for event in state.in_container(calendar.id):
        for data in _occurrences(event, start, end):
            ident = event.id
            if "_occurrence" in data:
                ident = f"{event.id}_{data['_occurrence']}"
            shown = {k: v for k, v in data.items() if not k.startswith("_")}
            views.append(
                Entity(
                    ident,
                    event.mailbox,
                    "event",
                    calendar.id,
                    shown,
                    None,
                    event.seq,
                    event.version,
                )
            )
    return views


def _calendar_view(call: Call) -> dict:
    state = call.state
    calendar = state.well_known(call.user.address, "calendar")
    is_delta = call.parts[1:] == ["delta"]
    if is_delta and ("$skiptoken" in call.query or "$deltatoken" in call.query):
        # The window travels in the token, as Graph encodes the first request's options.
        skip = call.query.get("$skiptoken", "").rpartition(".")[0]
        found = state.rounds.get(skip) if skip else None
        known = state.delta_tokens.get(call.query.get("$deltatoken", ""))
        scope = found.scope if found else known[0] if known else None
        if scope is None:
            raise _gone(state)
        window = scope.partition("|")[2]
    else:
        try:
            window = "/".join(
                _stamp(_parse_stamp(call.query[k])) for k in ("startDateTime", "endDateTime")
            )
        except (KeyError, ValueError):
            raise GraphError(
                400,
                "ErrorInvalidParameter",
                "This request requires a time window specified "
                "by the query string parameters StartDateTime and EndDateTime.",
            ) from None
    start, _, end = window.partition("/")
    views = _views(state, calendar, _parse_stamp(start), _parse_stamp(end))
    if is_delta:
        scope = f"calendarView:{calendar.id}|{window}"
        return _delta(call, scope, views, "Collection(event)", "calendarView/delta")
    rows = [_render(state, v, call.select) for v in views]
    rows.sort(key=lambda r: r.get("start", {}).get("dateTime", ""))
    answer = call.collection(rows, "users('me')/calendarView", "calendarView")
    if "@odata.nextLink" in answer:
        answer["@odata.nextLink"] += f"&startDateTime={start}&endDateTime={end}"
    return answer


def _todo(call: Call) -> dict:
    parts, state = call.parts, call.state
    if parts[1:2] != ["lists"]:
        raise GraphError(400, "BadRequest", "Unsupported segment.")
    lists = [
        c for c in state.containers.values() if c.mailbox == call.user.address and c.kind == "todo"
    ]
    if len(parts) == 2:
        rows = [_render_folder(state, c) for c in lists]
        return call.collection(rows, "users('me')/todo/lists", "todo/lists")
    todo_list = call.folder(parts[2], kind="todo")
    if parts[3:] == ["tasks"]:
        rows = [_render(state, e, call.select) for e in state.in_container(todo_list.id)]
        path = f"todo/lists/{todo_list.id}/tasks"
        return call.collection(rows, f"users('me')/todo/lists('{todo_list.id}')/tasks", path)
    if parts[3:] == ["tasks", "delta"]:
        path = f"todo/lists/{todo_list.id}/tasks/delta"
        items = state.in_container(todo_list.id)
        return _delta(call, f"tasks:{todo_list.id}", items, "Collection(todoTask)", path)
    raise GraphError(400, "BadRequest", "Unsupported segment.")


def _contacts_of(call: Call, folder: Container, rest: list[str], base: str) -> dict:
    state = call.state
    if rest == ["contacts"] or rest == []:
        rows = [_render(state, e, call.select) for e in state.in_container(folder.id)]
        return call.collection(rows, "users('me')/contacts", f"{base}contacts".lstrip("/"))
    if rest == ["contacts", "delta"] or rest == ["delta"]:
        path = f"{base}contacts/delta".lstrip("/")
        items = state.in_container(folder.id)
        return _delta(call, f"contacts:{folder.id}", items, "Collection(contact)", path)
    raise GraphError(400, "BadRequest", "Unsupported segment.")


CONTACT_FIELDS = (
    "displayName", "givenName", "surname", "fileAs", "companyName", "jobTitle",
    "emailAddresses", "businessPhones", "mobilePhone",
)  # fmt: skip


def _create_contact(call: Call, folder: Container) -> tuple:
    """POST /me/contacts (JSON): a contact in the default Contacts folder, 201."""
    try:
        given = json.loads(call.body)
    except ValueError:
        raise GraphError(400, "BadRequest", "Invalid JSON.") from None
    if not isinstance(given, dict) or set(given) - set(CONTACT_FIELDS):
        raise GraphError(400, "BadRequest", "Unknown contact properties.")
    data = {"businessPhones": [], "emailAddresses": []} | given
    entity = Entity(_new_id("AAMk"), folder.mailbox, "contact", folder.id, data)
    entity.seq = call.state.next_seq()
    call.state.entities[entity.id] = entity
    context = call.context("users('me')/contacts/$entity")
    body = json.dumps({"@odata.context": context, **_render(call.state, entity, None)})
    return (201, body.encode(), "application/json")


def _contact_folders(call: Call) -> dict:
    parts, state = call.parts, call.state
    default = state.well_known(call.user.address, "contacts")
    if parts == ["contacts"] and call.method == "POST":
        return _create_contact(call, default)
    if parts[0] == "contacts":
        if len(parts) == 2 and parts[1] != "delta":
            context = call.context("users('me')/contacts/$entity")
            contact = call.entity(parts[1], "contact")
            return {"@odata.context": context, **_render(state, contact, call.select)}
        return _contacts_of(call, default, parts, "")
    if len(parts) == 1:
        rows = [_render_folder(state, c) for c in state.children(default)]
        return call.collection(rows, "users('me')/contactFolders", "contactFolders")
    folder = call.folder(parts[1], kind="contacts")
    if len(parts) == 2:
        context = call.context("users('me')/contactFolders/$entity")
        return {"@odata.context": context, **_render_folder(state, folder)}
    if parts[2:] == ["childFolders"]:
        rows = [_render_folder(state, c) for c in state.children(folder)]
        path = f"contactFolders/{folder.id}/childFolders"
        return call.collection(rows, "users('me')/contactFolders", path)
    return _contacts_of(call, folder, parts[2:], f"contactFolders/{folder.id}/")


def _route(method: str, parts: list[str]) -> str:
    """The name a request is logged and faulted under: "mailFolders", "messages.delta",
    "message", "message.value", "sendMail", "calendarView.delta", "todo.tasks", ..."""
    if not parts:
        return "me"
    head, rest = parts[0], parts[1:]
    if head == "mailFolders":
        if not rest:
            return "mailFolders"
        tail = ".".join(rest[1:])
        return {"": "mailFolder", "childFolders": "childFolders"}.get(tail, tail)
    if head == "messages":
        return "message.value" if rest[1:] == ["$value"] else "message"
    if head == "todo":
        return (
            "todo."
            + ("tasks" if len(rest) > 2 else "lists")
            + (".delta" if rest[-1:] == ["delta"] else "")
        )
    if head in ("contactFolders", "contacts"):
        return "contacts.delta" if parts[-1] == "delta" else head
    return ".".join([head, *rest[:1]]) if rest[:1] == ["delta"] else head


def _batch_error(ident: str, error: "GraphError") -> dict:
    inner = {"date": _stamp(datetime.now(UTC)), "request-id": secrets.token_hex(16)}
    return {
        "id": ident, "status": error.status, "headers": dict(error.headers),
        "body": {"error": {"code": error.code, "message": str(error), "innerError": inner}},
    }  # fmt: skip


def _take_cut(state: "State", route: str, user: str) -> bool:
    """Whether a cut planned for `route` (see GraphServer.cut_next) falls on this request."""
    key = next((k for k in ((route, user), (route, None)) if state.cuts.get(k)), None)
    if key is None:
        return False
    if state.cuts_after.get(key, 0) > 0:
        state.cuts_after[key] -= 1
        return False
    state.cuts[key] -= 1
    return True


def _take_fault(state: "State", route: str, user: str) -> "GraphError | None":
    """A throttle or failure planned for `route` (throttle_next, fail_next), as an error."""
    key = next((k for k in ((route, user), (route, None)) if k in state.throttles), None)
    if key is not None:
        status, seconds, _ = state.throttles[key]
        state.throttles[key][2] -= 1
        if state.throttles[key][2] <= 0:
            del state.throttles[key]
        code = "TooManyRequests" if status == 429 else "ServiceUnavailable"
        return GraphError(status, code, "Throttled.", {"Retry-After": str(seconds)})
    key = next((k for k in ((route, user), (route, None)) if state.failures.get(k)), None)
    if key is not None:
        status, code, message, _ = state.failures[key]
        state.failures[key][3] -= 1
        if state.failures[key][3] <= 0:
            del state.failures[key]
        return GraphError(status, code, message)
    return None


ROUTES: dict[str, Callable[[Call], dict | tuple]] = {
    "mailFolders": _mail_folders,
    "messages": _messages,
    "calendarView": _calendar_view,
    "todo": _todo,
    "contactFolders": _contact_folders,
    "contacts": _contact_folders,
}


class _Handler(BaseHTTPRequestHandler):
    server_version = "Microsoft-HTTPAPI/2.0"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle's algorithm holds the
    # body until the client's delayed ACK (40 ms a request on loopback).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def _send(self, status: int, body: bytes, content_type: str, headers: dict, cut: bool):
        if cut and not body:
            # Nothing to cut in half: the connection closes before the answer.
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("request-id", secrets.token_hex(16))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if cut:
            # The connection breaks mid-page: half the body, then nothing.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _error(self, error: GraphError, cut: bool = False):
        inner = {"date": _stamp(datetime.now(UTC)), "request-id": secrets.token_hex(16)}
        body = {"error": {"code": error.code, "message": str(error), "innerError": inner}}
        headers = dict(error.headers)
        if error.status == 401:
            headers["WWW-Authenticate"] = (
                'Bearer realm="", authorization_uri="https://login.microsoftonline.com/'
                'common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
            )
        self._send(error.status, json.dumps(body).encode(), "application/json", headers, cut)

    def _handle(self):
        server: GraphServer = self.server.graph
        state = server.state
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            error = GraphError(413, "RequestEntityTooLarge", "The request is too large.")
            return self._error(error)
        body = self.rfile.read(length) if length else b""
        path = url.path.rstrip("/")
        # /delta is Graph's shortcut for the function's full name, which the SDKs send.
        segments = [DELTA_NAMES.get(s, s) for s in path.split("/") if s]
        with state.lock:
            user = self._user(state)
            parts = segments[2:] if segments[:2] == ["v1.0", "me"] else None
            batching = segments == ["v1.0", "$batch"] and self.command == "POST"
            route = _route(self.command, parts) if parts is not None else "?"
            route = "$batch" if batching else route
            state.requests.append(
                {
                    "method": self.command,
                    "route": route,
                    "path": url.path,
                    "query": query,
                    "prefer": headers.get("prefer", ""),
                    "user": user.address if user else None,
                    "at": time.monotonic(),
                }
            )
            if "authorization" not in headers:
                return self._error(
                    GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
                )
            if user is None:
                return self._error(
                    GraphError(
                        401,
                        "InvalidAuthenticationToken",
                        "Lifetime validation failed, the token is expired.",
                    )
                )
            if batching:
                return self._batch(server, state, user, headers, body)
            if parts is None:
                return self._error(GraphError(400, "BadRequest", "Invalid version."))
            throttle_key = next(
                (k for k in ((route, user.address), (route, None)) if k in state.throttles), None
            )
            if throttle_key:
                throttle = state.throttles[throttle_key]
                status, seconds, _ = throttle
                throttle[2] -= 1
                if throttle[2] <= 0:
                    del state.throttles[throttle_key]
                code = "TooManyRequests" if status == 429 else "ServiceUnavailable"
                message = "Too many requests." if status == 429 else "Service unavailable."
                return self._error(GraphError(status, code, message, {"Retry-After": str(seconds)}))
            fail_key = next(
                (k for k in ((route, user.address), (route, None)) if state.failures.get(k)), None
            )
            if fail_key:
                status, code, message, _ = state.failures[fail_key]
                state.failures[fail_key][3] -= 1
                if state.failures[fail_key][3] <= 0:
                    del state.failures[fail_key]
                return self._error(GraphError(status, code, message))
            cut_key = next(
                (k for k in ((route, user.address), (route, None)) if state.cuts.get(k)), None
            )
            cut = cut_key is not None
            if cut and state.cuts_after.get(cut_key, 0) > 0:
                state.cuts_after[cut_key] -= 1
                cut = False
            elif cut:
                state.cuts[cut_key] -= 1
            try:
                answer = self._answer(server, state, user, parts, query, headers, body)
            except GraphError as error:
                return self._error(error, cut)
            except (ValueError, KeyError) as error:
                return self._error(GraphError(400, "BadRequest", f"Bad request: {error}"), cut)
        if isinstance(answer, tuple) and isinstance(answer[0], int):
            kind = answer[2] if len(answer) > 2 else "text/plain"
            return self._send(answer[0], answer[1], kind, {}, cut)
        if isinstance(answer, tuple):
            return self._send(200, answer[1], answer[0], {}, cut)
        extra = {}
        if "odata.maxpagesize" in headers.get("prefer", "") and "delta" in route:
            extra["Preference-Applied"] = f"odata.maxpagesize={_page_size(headers)}"
        data = json.dumps(answer).encode()
        return self._send(200, data, "application/json;odata.metadata=minimal", extra, cut)

    def _batch(self, server, state, user, headers, body):
        """POST /v1.0/$batch (JSON batching, GETs of the user's resources, at most 20):
        each request is logged, throttled and failed under its own route as if it came
        alone; a cut planned for any of them (or for "$batch") breaks the whole answer
        off, as the connection is shared. Binary answers come base64-encoded, as Graph
        sends them."""
        fault = _take_fault(state, "$batch", user.address)
        if fault is not None:
            return self._error(fault)
        try:
            asked = json.loads(body)["requests"]
            if not isinstance(asked, list) or not 0 < len(asked) <= 20:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return self._error(GraphError(400, "BadRequest", "Invalid batch payload."))
        cut = _take_cut(state, "$batch", user.address)
        answers = []
        for request in asked:
            ident = str(request.get("id"))
            url = urlsplit(str(request.get("url") or ""))
            sub = [DELTA_NAMES.get(p, p) for p in url.path.split("/") if p]
            if request.get("method") != "GET" or sub[:1] != ["me"]:
                error = GraphError(400, "BadRequest", "The fake batches GETs of /me only.")
                answers.append(_batch_error(ident, error))
                continue
            parts = sub[1:]
            route = _route("GET", parts)
            query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            state.requests.append(
                {
                    "method": "GET", "route": route, "path": f"/v1.0{url.path}", "query": query,
                    "prefer": "", "user": user.address, "at": time.monotonic(),
                    "batch": True,
                }
            )  # fmt: skip
            cut = _take_cut(state, route, user.address) or cut
            try:
                fault = _take_fault(state, route, user.address)
                if fault is not None:
                    raise fault
                call = Call(server, state, user, "GET", parts, query, headers, b"")
                handler = ROUTES.get(parts[0]) if parts else None
                if handler is None:
                    raise GraphError(400, "BadRequest", "Unsupported in a batch.")
                answer = handler(call)
            except GraphError as error:
                answers.append(_batch_error(ident, error))
                continue
            if isinstance(answer, tuple):
                encoded = base64.b64encode(answer[-1] if isinstance(answer[-1], bytes) else b"")
                kind = answer[0] if isinstance(answer[0], str) else "text/plain"
                answers.append(
                    {"id": ident, "status": 200, "headers": {"Content-Type": kind},
                     "body": encoded.decode()}
                )  # fmt: skip
            else:
                answers.append(
                    {"id": ident, "status": 200,
                     "headers": {"Content-Type": "application/json"}, "body": answer}
                )  # fmt: skip
        data = json.dumps({"responses": answers}).encode()
        return self._send(200, data, "application/json", {}, cut)

    def _answer(self, server, state, user, parts, query, headers, body):
        call = Call(server, state, user, self.command, parts, query, headers, body)
        if not parts:
            if self.command != "GET":
                raise GraphError(405, "Request_BadRequest", "Method not allowed.")
            return {
                "@odata.context": call.context("users/$entity"),
                "id": user.id,
                "displayName": user.name,
                "mail": user.address,
                "userPrincipalName": user.address,
            }
        if parts == ["sendMail"]:
            if self.command != "POST":
                raise GraphError(405, "BadRequest", "Method not allowed.")
            return _send_mail(call)
        creating = self.command == "POST" and (
            parts in (["messages"], ["contacts"])
            or (parts[:1] == ["mailFolders"] and parts[2:] == ["messages"])
        )
        if self.command != "GET" and not creating:
            raise GraphError(405, "BadRequest", "The fake answers GET here.")
        handler = ROUTES.get(parts[0])
        if handler is None:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment {parts[0]!r}.")
        return handler(call)

    def _user(self, state: State) -> User | None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        address = self.server.graph.token_user(token.strip())
        return state.users.get(address.lower()) if address else None


class GraphServer:
    """The fake Graph service; v1.0 is at `graph_url` (`url` + "/v1.0").

    `token_user`: a bearer token -> the address it was issued to, or None (expired or
    unknown); the suite passes its OAuth server's `token_user`.
    """

    def __init__(
        self, *, token_user: Callable[[str], str | None], hostname: str = "localhost", ca=None
    ):
        self.hostname = hostname
        self.token_user = token_user
        self.port = free_port()
        self.state = State()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.httpd.graph = self
        self.httpd.socket = server_context(hostname, ca=ca).wrap_socket(
            self.httpd.socket, server_side=True
        )
        self.url = f"https://{hostname}:{self.port}"
        self.graph_url = f"{self.url}/v1.0"

    def start(self) -> "GraphServer":
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- What happened ---

    @property
    def requests(self) -> list[dict]:
        """Every request: method, route, path, query, prefer, user (or None), at."""
        return self.state.requests

    def calls(self, route: str) -> list[dict]:
        return [r for r in self.state.requests if r["route"] == route]

    @property
    def sent(self) -> list[dict]:
        """Messages sendMail accepted: user, mime, saved (a copy in Sent Items)."""
        return self.state.sent

    # --- The mailbox ---

    def add_user(self, address: str, name: str | None = None) -> User:
        """A mailbox with the well-known mail folders, a calendar, a default contacts
        folder and a default To Do list ("Tasks")."""
        address = address.lower()
        with self.state.lock:
            user = User(address, name or address.split("@")[0])
            self.state.users[address] = user
            root = Container(_new_id("AQMk"), address, "mail", "Top of Information Store")
            root.well_known = "msgfolderroot"
            self.state.containers[root.id] = root
            for well_known, display in WELL_KNOWN:
                folder = Container(_new_id("AQMk"), address, "mail", display, root.id, well_known)
                self.state.containers[folder.id] = folder
            for kind, name, well_known in [
                ("calendar", "Calendar", "calendar"),
                ("contacts", "Contacts", "contacts"),
                ("todo", "Tasks", "defaultList"),
            ]:
                holder = Container(_new_id("AQMk"), address, kind, name, None, well_known)
                self.state.containers[holder.id] = holder
            return user

    def _user_of(self, mailbox: str | None) -> str:
        if mailbox is not None:
            return mailbox.lower()
        if len(self.state.users) != 1:
            raise ValueError("Say which mailbox: there is more than one")
        return next(iter(self.state.users))

    def folder_id(self, path: str, mailbox: str | None = None) -> str:
        """A folder id from an id or a well-known name followed by display names
        ("inbox/Projects/2024")."""
        with self.state.lock:
            if path in self.state.containers:
                return path
            first, *names = path.split("/")
            folder = self.state.well_known(self._user_of(mailbox), first)
            if folder is None:
                raise KeyError(path)
            for name in names:
                folder = next(c for c in self.state.children(folder) if c.name == name)
            return folder.id

    def add_folder(self, parent: str, name: str, mailbox: str | None = None) -> str:
        """A mail folder (parent: "msgfolderroot" for a top-level one) or, with a contact
        folder's id as parent or "contacts", a contact folder."""
        with self.state.lock:
            above = self.state.containers[self.folder_id(parent, mailbox)]
            folder = Container(_new_id("AQMk"), above.mailbox, above.kind, name, above.id)
            self.state.containers[folder.id] = folder
            return folder.id

    def add_message(
        self,
        folder: str,
        mime: bytes,
        *,
        is_read: bool = False,
        received: datetime | None = None,
        mailbox: str | None = None,
    ) -> str:
        """Deliver a message (its exact bytes are its $value); returns its id."""
        with self.state.lock:
            target = self.state.containers[self.folder_id(folder, mailbox)]
            received = received or datetime.now(UTC)
            return _store_message(self.state, target, mime, is_read=is_read, received=received).id

    def add_messages(self, folder: str, mimes: list[bytes], mailbox: str | None = None) -> list:
        """Many at once (the benchmark's thousands)."""
        with self.state.lock:
            target = self.state.containers[self.folder_id(folder, mailbox)]
            now = datetime.now(UTC)
            return [
                _store_message(self.state, target, m, is_read=False, received=now).id for m in mimes
            ]

    def message(self, message_id: str) -> Entity:
        return self.state.entities[message_id]

    def set_read(self, message_id: str, is_read: bool = True) -> None:
        with self.state.lock:
            entity = self.state.entities[message_id]
            entity.data["isRead"] = is_read
            self._touch(entity)

    def delete(self, entity_id: str) -> None:
        with self.state.lock:
            del self.state.entities[entity_id]

    def move(self, message_id: str, folder: str) -> str:
        """Move a message; as in Exchange, it gets a new id (returned)."""
        with self.state.lock:
            entity = self.state.entities.pop(message_id)
            entity.id = _new_id("AAMk")
            entity.container = self.folder_id(folder, entity.mailbox)
            self.state.entities[entity.id] = entity
            self._touch(entity)
            return entity.id

    def _touch(self, entity: Entity) -> None:
        entity.version += 1
        entity.seq = self.state.next_seq()
        entity.data["lastModifiedDateTime"] = _stamp(datetime.now(UTC))

    def _add(self, container_id: str, kind: str, data: dict) -> str:
        with self.state.lock:
            holder = self.state.containers[container_id]
            entity = Entity(_new_id("AAMk"), holder.mailbox, kind, holder.id, data)
            entity.seq = self.state.next_seq()
            self.state.entities[entity.id] = entity
            return entity.id

    def add_event(
        self,
        subject: str,
        start: datetime,
        end: datetime,
        *,
        attendees: list[tuple[str | None, str]] = (),
        organizer=None,
        sensitivity: str = "normal",
        weekly_count: int = 0,
        location: str = "",
        is_all_day: bool = False,
        mailbox: str | None = None,
    ) -> str:
        """An event in the calendar; `weekly_count` > 1 makes it a weekly series that
        calendarView expands into occurrences. sensitivity: normal, personal, private,
        confidential."""
        owner = self._user_of(mailbox)
        calendar = self.state.well_known(owner, "calendar")
        user = self.state.users[owner]
        data = {
            "subject": subject,
            "iCalUId": secrets.token_hex(16),
            "start": {"dateTime": _stamp(start)[:-1] + ".0000000", "timeZone": "UTC"},
            "end": {"dateTime": _stamp(end)[:-1] + ".0000000", "timeZone": "UTC"},
            "isAllDay": is_all_day,
            "isCancelled": False,
            "sensitivity": sensitivity,
            "showAs": "busy",
            "type": "seriesMaster" if weekly_count > 1 else "singleInstance",
            "location": {"displayName": location},
            "organizer": _box(*(organizer or (user.name, user.address))),
            "attendees": [
                {**_box(n, a), "type": "required", "status": {"response": "none"}}
                for n, a in attendees
            ],
            "isOrganizer": organizer is None,
        }
        if weekly_count > 1:
            data["_weekly_count"] = weekly_count
        return self._add(calendar.id, "event", data)

    def add_todo_list(self, name: str, mailbox: str | None = None) -> str:
        with self.state.lock:
            holder = Container(_new_id("AQMk"), self._user_of(mailbox), "todo", name)
            self.state.containers[holder.id] = holder
            return holder.id

    def add_task(
        self,
        title: str,
        *,
        list_id: str | None = None,
        status: str = "notStarted",
        due: datetime | None = None,
        mailbox: str | None = None,
    ) -> str:
        """status: notStarted, inProgress, completed, waitingOnOthers, deferred."""
        if list_id is None:
            list_id = self.state.well_known(self._user_of(mailbox), "defaultlist").id
        data = {
            "title": title,
            "status": status,
            "importance": "normal",
            "createdDateTime": _stamp(datetime.now(UTC)),
            "dueDateTime": {"dateTime": _stamp(due)[:-1] + ".0000000", "timeZone": "UTC"}
            if due
            else None,
        }
        return self._add(list_id, "task", data)

    def add_contact(
        self,
        display_name: str,
        *,
        folder: str | None = None,
        company_name: str | None = None,
        emails: list[str] = (),
        job_title: str | None = None,
        given_name: str | None = None,
        surname: str | None = None,
        mailbox: str | None = None,
    ) -> str:
        if folder is None:
            folder = self.state.well_known(self._user_of(mailbox), "contacts").id
        data = {
            "displayName": display_name,
            "givenName": given_name,
            "surname": surname,
            "companyName": company_name,
            "jobTitle": job_title,
            "emailAddresses": [{"name": display_name, "address": a} for a in emails],
            "businessPhones": [],
        }
        return self._add(folder, "contact", data)

    def update(self, entity_id: str, changes: dict) -> None:
        with self.state.lock:
            entity = self.state.entities[entity_id]
            entity.data |= changes
            self._touch(entity)

    # --- Faults ---

    def throttle_next(
        self, route: str, retry_after: int = 1, count: int = 1, status: int = 429,
        mailbox: str | None = None,
    ) -> None:  # fmt: skip
        """The next `count` requests of `route` (by `mailbox`, or by anyone) get `status`
        (429 or 503) with Retry-After: `retry_after` seconds."""
        with self.state.lock:
            key = (route, mailbox.lower() if mailbox else None)
            self.state.throttles[key] = [status, retry_after, count]

    def cut_next(
        self, route: str, count: int = 1, mailbox: str | None = None, after: int = 0
    ) -> None:
        """The next `count` requests of `route` (by `mailbox`, or by anyone) are carried
        out, and their answer breaks off halfway through the body (the connection
        closes); an answer without a body does not come at all. `after`: that many
        requests of the route are answered whole first (a round's later page is cut)."""
        with self.state.lock:
            key = (route, mailbox.lower() if mailbox else None)
            self.state.cuts[key] = self.state.cuts.get(key, 0) + count
            self.state.cuts_after[key] = after

    def fail_next(
        self, route: str, status: int, code: str, message: str = "", count: int = 1,
        mailbox: str | None = None,
    ) -> None:  # fmt: skip
        """The next `count` requests of `route` (by `mailbox`, or by anyone) are not
        carried out and get a Graph error: `status` with `code` (e.g. 400
        ErrorInvalidRecipients for sendMail, 403 ErrorAccessDenied, 500)."""
        with self.state.lock:
            key = (route, mailbox.lower() if mailbox else None)
            self.state.failures[key] = [status, code, message or code, count]

    def forget_delta_links(self, code: str = "syncStateNotFound") -> None:
        """Every delta and skip token so far is forgotten: the next use gets 410 Gone
        with `code` (syncStateNotFound or resyncRequired), as after a mailbox move."""
        with self.state.lock:
            self.state.delta_tokens.clear()
            self.state.rounds.clear()
            self.state.forgotten_code = code
