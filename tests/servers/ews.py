"""A protocol fake of an Exchange Web Services (EWS) server, over HTTPS with the suite's CA.

This is not Exchange. It answers EWS SOAP on /EWS/Exchange.asmx (and autodiscover's SOAP
GetUserSettings on /autodiscover/autodiscover.svc) with documents shaped like a real
on-premises Exchange Server 2016/2019's: the m:/t: namespaces, one ResponseMessage per
requested folder or item with its ResponseClass and ResponseCode, SOAP faults where Exchange
sends them (throttling), and a ServerVersionInfo header (build 15.1.2507.6) in every
envelope. Users, folders, items and sync states live in memory; `requests` records who
asked what. It implements GetFolder, FindFolder, SyncFolderHierarchy, SyncFolderItems,
GetItem, FindItem (paged, sorted, CalendarView), CreateItem (messages: SaveOnly, SendOnly,
SendAndSaveCopy), ResolveNames and ConvertId (as much as version guessing needs), and pull
notifications (Subscribe with a PullSubscriptionRequest, GetEvents, Unsubscribe: every
item created, changed, moved or deleted is an event with a watermark). Anything else,
FindItem restrictions and push or streaming subscriptions included, gets
ErrorInvalidOperation and lands in `unsupported`.
"""

import base64
import email
import email.policy
import hashlib
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses, make_msgid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.servers.certs import server_context
from tests.servers.dovecot import free_port

NS = {
    "s": "http://schemas.xmlsoap.org/soap/envelope/",
    "m": "http://schemas.microsoft.com/exchange/services/2006/messages",
    "t": "http://schemas.microsoft.com/exchange/services/2006/types",
    "e": "http://schemas.microsoft.com/exchange/services/2006/errors",
    "a": "http://schemas.microsoft.com/exchange/2010/Autodiscover",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

BUILD = (15, 1, 2507, 6)  # Exchange Server 2016 CU23
# The RequestServerVersion values it accepts. Exchange2016 requests are answered with the
# dated schema name 2016 servers report (exchangelib then keeps "Exchange2016").
API_VERSIONS = {
    *("Exchange2007", "Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1", "Exchange2010_SP2"),
    *("Exchange2013", "Exchange2013_SP1", "Exchange2015", "Exchange2016"),
}
FAULT_CODES = {"ErrorServerBusy", "ErrorSchemaValidation", "ErrorInvalidServerVersion"}
TEXTS = {
    "ErrorItemNotFound": "The specified object was not found in the store.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorInvalidSyncStateData": "Synchronization state data is corrupt or otherwise invalid.",
    "ErrorInvalidRecipients": "At least one recipient isn't valid.",
    "ErrorNameResolutionNoResults": "No results were found.",
    "ErrorNameResolutionMultipleResults": "Multiple results were found.",
    "ErrorServerBusy": "The server cannot service this request right now. Try again later.",
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorInvalidIdMalformed": "Id is malformed.",
}
DISTINGUISHED = [  # id, display name, folder class, parent
    ("root", "Root", None, None),
    ("msgfolderroot", "Top of Information Store", None, "root"),
    ("inbox", "Inbox", "IPF.Note", "msgfolderroot"),
    ("sentitems", "Sent Items", "IPF.Note", "msgfolderroot"),
    ("deleteditems", "Deleted Items", "IPF.Note", "msgfolderroot"),
    ("junkemail", "Junk Email", "IPF.Note", "msgfolderroot"),
    ("drafts", "Drafts", "IPF.Note", "msgfolderroot"),
    ("outbox", "Outbox", "IPF.Note", "msgfolderroot"),
    ("calendar", "Calendar", "IPF.Appointment", "msgfolderroot"),
    ("contacts", "Contacts", "IPF.Contact", "msgfolderroot"),
    ("tasks", "Tasks", "IPF.Task", "msgfolderroot"),
]
FOLDER_TAGS = {"IPF.Appointment": "CalendarFolder", "IPF.Contact": "ContactsFolder"}
FOLDER_TAGS["IPF.Task"] = "TasksFolder"
ITEM_CLASSES = {"Message": "IPM.Note", "CalendarItem": "IPM.Appointment"}
ITEM_CLASSES |= {"Contact": "IPM.Contact", "Task": "IPM.Task"}

# The properties it keeps, by field URI, in the order of the EWS schema per item element.
_ITEM = (
    "item:MimeContent item:ItemId item:ParentFolderId item:ItemClass item:Subject"
    " item:Sensitivity item:Body item:DateTimeReceived item:Size item:Importance"
    " item:InReplyTo item:IsSubmitted item:IsDraft item:IsFromMe item:DateTimeSent"
    " item:DateTimeCreated item:DisplayCc item:DisplayTo item:HasAttachments"
    " item:LastModifiedTime"
)
SCHEMA = {
    "Message": f"{_ITEM} message:Sender message:ToRecipients message:CcRecipients"
    " message:BccRecipients message:From message:InternetMessageId message:IsRead"
    " message:References",
    "CalendarItem": f"{_ITEM} calendar:UID calendar:Start calendar:End calendar:IsAllDayEvent"
    " calendar:LegacyFreeBusyStatus calendar:Location calendar:IsMeeting calendar:IsCancelled"
    " calendar:IsRecurring calendar:CalendarItemType calendar:MyResponseType calendar:Organizer"
    " calendar:RequiredAttendees calendar:OptionalAttendees calendar:StartTimeZone"
    " calendar:EndTimeZone",
    "Contact": f"{_ITEM} contacts:FileAs contacts:DisplayName contacts:GivenName"
    " contacts:CompanyName contacts:EmailAddress contacts:PhoneNumber contacts:ContactSource"
    " contacts:JobTitle contacts:Surname",
    "Task": f"{_ITEM} task:Companies task:Contacts task:DueDate task:IsComplete"
    " task:PercentComplete task:StartDate task:Status",
}
SCHEMA = {kind: uris.split() for kind, uris in SCHEMA.items()}
ELEMENT_NAMES = {"contacts:EmailAddress": "EmailAddresses", "contacts:PhoneNumber": "PhoneNumbers"}
MAILBOX = {"message:Sender", "message:From", "calendar:Organizer"}
MAILBOXES = {"message:ToRecipients", "message:CcRecipients", "message:BccRecipients"}
ATTENDEES = {"calendar:RequiredAttendees", "calendar:OptionalAttendees"}
ENTRIES = {"contacts:EmailAddress", "contacts:PhoneNumber"}
TIMEZONES = {"calendar:StartTimeZone", "calendar:EndTimeZone"}


def _q(tag: str) -> str:
    prefix, _, local = tag.partition(":")
    return f"{{{NS[prefix]}}}{local}"


def _el(tag: str, text=None, parent: ET.Element | None = None, **attrs) -> ET.Element:
    values = {k: str(v) for k, v in attrs.items() if v is not None}
    elem = ET.Element(_q(tag), values) if parent is None else ET.SubElement(parent, _q(tag), values)
    if text is not None:
        elem.text = str(text)
    return elem


def _local(elem: ET.Element) -> str:
    return elem.tag.rpartition("}")[2]


def _kids(parent: ET.Element, tag: str) -> list[ET.Element]:
    holder = parent.find(_q(tag))
    return list(holder) if holder is not None else []


def _stamp(value: date) -> str:
    if not isinstance(value, datetime):
        return f"{value.isoformat()}T00:00:00Z"
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip())
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _new_id(kind: bytes) -> str:
    # Opaque base64, like Exchange's (items start "AAMk", folders "AQMk").
    return base64.b64encode(kind + secrets.token_bytes(33)).decode()


def _change_key(ident: str, version: int) -> str:
    digest = hashlib.sha256(f"{ident}/{version}".encode()).digest()
    return base64.b64encode(b"\x09\x00\x00\x00" + digest[:20]).decode()


@dataclass
class User:
    address: str
    password: str | None
    name: str


@dataclass
class Folder:
    id: str
    mailbox: str
    parent: str | None
    name: str
    folder_class: str | None
    distinguished: str | None = None
    version: int = 1


@dataclass
class Item:
    id: str
    mailbox: str
    folder: str
    kind: str  # the element: Message, CalendarItem, Contact, Task
    props: dict = field(default_factory=dict)  # field URI -> value
    seq: int = 0  # order of the last change
    version: int = 1  # every change (the ChangeKey)
    content_version: int = 1  # changes other than the read flag

    @property
    def is_read(self) -> bool:
        return self.props.get("message:IsRead", True)


@dataclass
class SentMessage:
    user: str
    mime: bytes  # as given, or built from the properties
    subject: str | None
    to: list[str]
    cc: list[str]
    bcc: list[str]
    disposition: str  # SendOnly or SendAndSaveCopy
    saved_item_id: str | None  # the copy's id (SendAndSaveCopy)


@dataclass
class State:
    users: dict[str, User] = field(default_factory=dict)
    folders: dict[str, Folder] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    sync_states: dict[str, tuple[str, dict]] = field(default_factory=dict)  # -> folder, snapshot
    sent: list[SentMessage] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    failures: dict[str, list[list]] = field(default_factory=dict)  # op -> [code, count, ms]
    drops: dict[str, int] = field(default_factory=dict)
    # operation -> count: dropped as `drops` when it comes on a connection that already
    # served a request (a kept-alive connection a load balancer let go of meanwhile).
    stale_drops: dict[str, int] = field(default_factory=dict)
    # operation -> [HTTP status, count]: done, then answered with that status instead
    garbled: dict[str, list] = field(default_factory=dict)
    # operation -> seconds: answered a byte at a time, one per interval, for a minute
    # (a server that trips no read timeout); `dripping` counts the answers under way.
    drips: dict[str, float] = field(default_factory=dict)
    dripping: int = 0
    seq: int = 0
    # Pull notifications: every change as (event element name, mailbox, folder id, item
    # id, old folder id); a watermark is an index into it. Subscriptions: id -> (mailbox,
    # folder ids, event types).
    events: list[tuple[str, str, str, str, str | None]] = field(default_factory=list)
    subscriptions: dict[str, tuple[str, set[str], set[str]]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def distinguished(self, mailbox: str, name: str) -> Folder | None:
        found = (
            f for f in self.folders.values() if (f.mailbox, f.distinguished) == (mailbox, name)
        )
        return next(found, None)

    def children(self, folder: Folder) -> list[Folder]:
        return [f for f in self.folders.values() if f.parent == folder.id]

    def descendants(self, folder: Folder) -> list[Folder]:
        return [f for child in self.children(folder) for f in (child, *self.descendants(child))]

    def items_in(self, folder: Folder) -> list[Item]:
        return sorted(
            (i for i in self.items.values() if i.folder == folder.id), key=lambda i: i.seq
        )

    def touch(self, item: Item, content: bool = True) -> None:
        item.version += 1
        item.content_version += content
        item.seq = self.next_seq()
        item.props["item:LastModifiedTime"] = datetime.now(UTC)
        self.event("ModifiedEvent", item)

    def event(self, kind: str, item: Item, old_folder: str | None = None) -> None:
        self.events.append((kind, item.mailbox, item.folder, item.id, old_folder))


# --- Rendering ------------------------------------------------------------------------------


def _mailbox(parent: ET.Element, value: tuple, state: State, kind: str | None = None) -> ET.Element:
    name, address = value
    box = _el("t:Mailbox", parent=parent)
    if name:
        _el("t:Name", name, box)
    _el("t:EmailAddress", address, box)
    _el("t:RoutingType", "SMTP", box)
    _el("t:MailboxType", kind or ("Mailbox" if address.lower() in state.users else "OneOff"), box)
    return box


def _item_id(parent: ET.Element, item: Item) -> None:
    _el("t:ItemId", parent=parent, Id=item.id, ChangeKey=_change_key(item.id, item.version))


def _requested(shape: ET.Element | None) -> tuple[str, set[str]]:
    """The BaseShape and the field URIs asked for in an ItemShape or FolderShape."""
    if shape is None:
        return "Default", set()
    uris = {e.get("FieldURI") for e in shape.iter() if e.get("FieldURI")}
    if (shape.findtext(_q("t:IncludeMimeContent")) or "").strip() == "true":
        uris.add("item:MimeContent")
    return (shape.findtext(_q("t:BaseShape")) or "Default").strip(), uris


def _wanted(uri: str, base: str, uris: set[str]) -> bool:
    return uri in uris or (base != "IdOnly" and uri != "item:MimeContent")


def _item_elem(state: State, item: Item, base: str, uris: set[str], view: bool = False):
    """An item with the properties asked for (`view`: FindItem and SyncFolderItems, no MIME)."""
    elem = _el(f"t:{item.kind}")
    for uri in SCHEMA[item.kind]:
        if uri == "item:ItemId":
            _item_id(elem, item)
            continue
        value = state.folders[item.folder] if uri == "item:ParentFolderId" else item.props.get(uri)
        if value is None or not _wanted(uri, base, uris) or (view and uri == "item:MimeContent"):
            continue
        tag = "t:" + ELEMENT_NAMES.get(uri, uri.partition(":")[2])
        if uri == "item:MimeContent":
            _el(tag, base64.b64encode(value).decode(), elem, CharacterSet="UTF-8")
        elif uri == "item:ParentFolderId":
            _el(tag, parent=elem, Id=value.id, ChangeKey=_change_key(value.id, value.version))
        elif uri == "item:Body":
            _el(tag, value[1], elem, BodyType=value[0])
        elif uri in MAILBOX:
            _mailbox(_el(tag, parent=elem), value, state)
        elif uri in MAILBOXES | ATTENDEES:
            holder = _el(tag, parent=elem)
            for box in value:
                attendee = _el("t:Attendee", parent=holder) if uri in ATTENDEES else holder
                _mailbox(attendee, box, state)
                if uri in ATTENDEES:
                    _el("t:ResponseType", "Unknown", attendee)
        elif uri in ENTRIES:
            holder = _el(tag, parent=elem)
            for key, text in value.items():
                _el("t:Entry", text, holder, Key=key)
        elif uri in TIMEZONES:
            _el(tag, parent=elem, Id=value, Name=value)
        elif isinstance(value, bool):
            _el(tag, str(value).lower(), elem)
        elif isinstance(value, list):  # ArrayOfStringsType (a task's Companies, Contacts)
            holder = _el(tag, parent=elem)
            for text in value:
                _el("t:String", text, holder)
        else:
            _el(tag, _stamp(value) if isinstance(value, date) else value, elem)
    return elem


def _folder_elem(state: State, folder: Folder, base: str, uris: set[str]) -> ET.Element:
    kind = FOLDER_TAGS.get(folder.folder_class or "", "Folder")
    elem = _el(f"t:{kind}")
    _el("t:FolderId", parent=elem, Id=folder.id, ChangeKey=_change_key(folder.id, folder.version))
    if folder.parent and _wanted("folder:ParentFolderId", base, uris):
        parent = state.folders[folder.parent]
        ck = _change_key(parent.id, parent.version)
        _el("t:ParentFolderId", parent=elem, Id=parent.id, ChangeKey=ck)
    items = state.items_in(folder)
    values = {
        "FolderClass": folder.folder_class,
        "DisplayName": folder.name,
        "TotalCount": len(items),
        "ChildFolderCount": len(state.children(folder)),
        "DistinguishedFolderId": folder.distinguished,
    }
    if kind in ("Folder", "TasksFolder"):
        values["UnreadCount"] = sum(not i.is_read for i in items)
    for name, value in values.items():
        if value is not None and _wanted(f"folder:{name}", base, uris):
            _el(f"t:{name}", value, elem)
    return elem


def _response_message(op: str, code: str = "NoError", text: str | None = None, cls=None):
    cls = cls or ("Success" if code == "NoError" else "Error")
    message = _el(f"m:{op}ResponseMessage", ResponseClass=cls)
    if code != "NoError":
        _el("m:MessageText", text or TEXTS.get(code, code), message)
    _el("m:ResponseCode", code, message)
    if code != "NoError":
        _el("m:DescriptiveLinkKey", "0", message)
        if op.startswith("Sync"):  # exchangelib reads these before the ResponseCode
            _el("m:SyncState", parent=message)
            _el(f"m:{_last_in_range(op)}", "true", message)
    return message


def _last_in_range(op: str) -> str:
    return "IncludesLastItemInRange" if op == "SyncFolderItems" else "IncludesLastFolderInRange"


def _soap_fault(code: str, back_off_ms: int | None) -> ET.Element:
    fault = _el("s:Fault")
    ET.SubElement(fault, "faultcode").text = f"t:{code}"
    ET.SubElement(fault, "faultstring").text = TEXTS.get(code, code)
    detail = ET.SubElement(fault, "detail")
    _el("e:ResponseCode", code, detail)
    _el("e:Message", TEXTS.get(code, code), detail)
    if back_off_ms is not None:
        _el("t:Value", back_off_ms, _el("t:MessageXml", parent=detail), Name="BackOffMilliseconds")
    return fault


def _envelope(body_child: ET.Element, version: str) -> bytes:
    envelope = _el("s:Envelope")
    names = ("MajorVersion", "MinorVersion", "MajorBuildNumber", "MinorBuildNumber")
    info = dict(zip(names, BUILD, strict=True)) | {"Version": version}
    _el("t:ServerVersionInfo", parent=_el("s:Header", parent=envelope), **info)
    _el("s:Body", parent=envelope).append(body_child)
    return b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(envelope)


# --- Messages in and out ----------------------------------------------------------------------


def _address(box: ET.Element) -> tuple[str | None, str]:
    return box.findtext(_q("t:Name")), (box.findtext(_q("t:EmailAddress")) or "").strip()


def _props_from_xml(kind: str, elem: ET.Element) -> dict:
    """An item element of a request as field URI -> value (what the schema above knows)."""
    by_name = {ELEMENT_NAMES.get(u, u.partition(":")[2]): u for u in SCHEMA[kind]}
    props = {}
    for child in elem:
        uri, text = by_name.get(_local(child)), child.text or ""
        if uri == "item:MimeContent":
            props[uri] = base64.b64decode(text)
        elif uri == "item:Body":
            props[uri] = (child.get("BodyType", "Text"), text)
        elif uri in MAILBOX:
            props[uri] = _address(child.find(_q("t:Mailbox")))
        elif uri in MAILBOXES | ATTENDEES:
            props[uri] = [_address(box) for box in child.iter(_q("t:Mailbox"))]
        elif uri in ENTRIES:
            props[uri] = {e.get("Key"): e.text or "" for e in child}
        elif uri and ("DateTime" in uri or uri.endswith(("Start", "End", "Date"))):
            props[uri] = _parse_stamp(text)
        elif uri and _local(child).startswith(("Is", "Has")):
            props[uri] = text.strip() == "true"
        elif uri:
            props[uri] = text
    return props


def _message_props(mime: bytes) -> dict:
    """The properties Exchange derives from a message's MIME."""
    msg = email.message_from_bytes(mime, policy=email.policy.default)
    props = {"item:MimeContent": mime, "item:ItemClass": "IPM.Note", "item:Size": len(mime)}
    for header, uri in [
        ("Subject", "item:Subject"),
        ("Message-ID", "message:InternetMessageId"),
        ("In-Reply-To", "item:InReplyTo"),
        ("References", "message:References"),
    ]:
        props[uri] = None if msg[header] is None else str(msg[header])
    props["item:HasAttachments"] = any(True for _ in msg.iter_attachments())
    props |= {"item:Importance": "Normal", "item:Sensitivity": "Normal", "item:IsDraft": False}
    for header in ("From", "To", "Cc", "Bcc"):
        found = [(name or None, a) for name, a in getaddresses(msg.get_all(header, [])) if a]
        if found and header == "From":
            props["message:From"] = props["message:Sender"] = found[0]
        elif found:
            props[f"message:{header}Recipients"] = found
            if header != "Bcc":
                props[f"item:Display{header}"] = "; ".join(name or a for name, a in found)
    if msg["Date"] is not None and msg["Date"].datetime is not None:
        props["item:DateTimeSent"] = msg["Date"].datetime
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is not None:
        kind = "HTML" if body.get_content_type() == "text/html" else "Text"
        props["item:Body"] = (kind, body.get_content())
    return props


def _build_mime(user: User, props: dict) -> bytes:
    """The MIME Exchange would send for a message given as properties."""
    msg = EmailMessage()
    msg["From"] = formataddr((user.name, user.address))
    for header in ("To", "Cc"):
        if boxes := props.get(f"message:{header}Recipients"):
            msg[header] = ", ".join(formataddr(box) for box in boxes)
    msg["Subject"] = props.get("item:Subject") or ""
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=user.address.partition("@")[2] or None)
    kind, text = props.get("item:Body", ("Text", ""))
    msg.set_content(text, subtype="html" if kind == "HTML" else "plain")
    return msg.as_bytes()


# --- Operations -----------------------------------------------------------------------------


@dataclass
class Call:
    state: State
    user: User
    server: "EwsServer"

    def folder(self, ref: ET.Element | None) -> Folder | None:
        """A FolderId or DistinguishedFolderId of the caller's mailbox (others: not found)."""
        if ref is None:
            return None
        if _local(ref) == "DistinguishedFolderId":
            return self.state.distinguished(self.user.address, ref.get("Id", ""))
        found = self.state.folders.get(ref.get("Id", ""))
        return found if found and found.mailbox == self.user.address else None

    def folders(self, request: ET.Element, tag: str) -> list[Folder | None]:
        return [self.folder(ref) for ref in _kids(request, tag)]

    def item(self, ident: str | None) -> Item | None:
        item = self.state.items.get(ident or "")
        return item if item and item.mailbox == self.user.address else None


def op_get_folder(call: Call, request: ET.Element) -> list[ET.Element]:
    base, uris = _requested(request.find(_q("m:FolderShape")))
    messages = []
    for folder in call.folders(request, "m:FolderIds"):
        if folder is None:
            messages.append(_response_message("GetFolder", "ErrorFolderNotFound"))
            continue
        messages.append(message := _response_message("GetFolder"))
        _el("m:Folders", parent=message).append(_folder_elem(call.state, folder, base, uris))
    return messages


def _paged(message: ET.Element, view: ET.Element | None, found: list, container: str):
    """A RootFolder holding an IndexedPage*View's page of `found`; returns (page, container)."""
    view = view if view is not None else ET.Element("view")
    maximum, offset = int(view.get("MaxEntriesReturned") or 0), int(view.get("Offset") or 0)
    page = found[offset : offset + maximum] if maximum else found[offset:]
    end = offset + len(page)
    last = str(end >= len(found)).lower()
    root = _el("m:RootFolder", parent=message, IndexedPagingOffset=end, TotalItemsInView=len(found))
    root.set("IncludesLastItemInRange", last)
    return page, _el(container, parent=root)


def op_find_folder(call: Call, request: ET.Element) -> list[ET.Element]:
    base, uris = _requested(request.find(_q("m:FolderShape")))
    messages = []
    for parent in call.folders(request, "m:ParentFolderIds"):
        if parent is None:
            messages.append(_response_message("FindFolder", "ErrorFolderNotFound"))
            continue
        deep = request.get("Traversal") == "Deep"
        found = call.state.descendants(parent) if deep else call.state.children(parent)
        messages.append(message := _response_message("FindFolder"))
        view = request.find(_q("m:IndexedPageFolderView"))
        page, container = _paged(message, view, found, "t:Folders")
        container.extend(_folder_elem(call.state, f, base, uris) for f in page)
    return messages


def _sync(call: Call, op: str, request: ET.Element, folder, current: dict, max_changes: int):
    """Diff `current` (id -> version) against the snapshot the request's SyncState stands for.

    Returns the response message and the page of (change, id) to describe in it, or an
    error message and None.
    """
    state = call.state
    if folder is None:
        return _response_message(op, "ErrorFolderNotFound"), None
    token = (request.findtext(_q("m:SyncState")) or "").strip()
    known = state.sync_states.get(token) if token else (folder.id, {})
    if known is None or known[0] != folder.id:
        return _response_message(op, "ErrorInvalidSyncStateData"), None
    snapshot = dict(known[1])
    changes = [("Delete", ident) for ident in snapshot if ident not in current]
    for ident, version in current.items():
        if ident not in snapshot:
            changes.append(("Create", ident))
        elif snapshot[ident][0] != version[0]:
            changes.append(("Update", ident))
        elif snapshot[ident] != version:
            changes.append(("ReadFlagChange", ident))
    page = changes[:max_changes]
    for change, ident in page:
        if change == "Delete":
            del snapshot[ident]
        else:
            snapshot[ident] = current[ident]
    if page or not token:  # nothing new: the same state back (exchangelib expects either)
        token = base64.b64encode(secrets.token_bytes(48)).decode()
        state.sync_states[token] = (folder.id, snapshot)
    message = _response_message(op)
    _el("m:SyncState", token, message)
    _el(f"m:{_last_in_range(op)}", str(len(page) == len(changes)).lower(), message)
    return message, page


def op_sync_folder_items(call: Call, request: ET.Element) -> list[ET.Element]:
    state = call.state
    folder = call.folder(next(iter(_kids(request, "m:SyncFolderId")), None))
    current = (
        {i.id: (i.content_version, i.is_read) for i in state.items_in(folder)} if folder else {}
    )
    max_changes = int(request.findtext(_q("m:MaxChangesReturned")) or 512)
    message, page = _sync(call, "SyncFolderItems", request, folder, current, max_changes)
    if page is None:
        return [message]
    base, uris = _requested(request.find(_q("m:ItemShape")))
    ignore = {e.get("Id") for e in _kids(request, "m:Ignore")}
    changes = _el("m:Changes", parent=message)
    for change, ident in (c for c in page if c[1] not in ignore):
        elem = _el(f"t:{change}", parent=changes)
        if change == "Delete":
            _el("t:ItemId", parent=elem, Id=ident)
        elif change == "ReadFlagChange":
            _item_id(elem, state.items[ident])
            _el("t:IsRead", str(state.items[ident].is_read).lower(), elem)
        else:
            elem.append(_item_elem(state, state.items[ident], base, uris, view=True))
    return [message]


def op_sync_folder_hierarchy(call: Call, request: ET.Element) -> list[ET.Element]:
    state = call.state
    folder = call.folder(next(iter(_kids(request, "m:SyncFolderId")), None))
    if request.find(_q("m:SyncFolderId")) is None:  # the whole mailbox
        folder = state.distinguished(call.user.address, "msgfolderroot")
    current = {f.id: (f.version, 0) for f in state.descendants(folder)} if folder else {}
    message, page = _sync(call, "SyncFolderHierarchy", request, folder, current, len(current))
    if page is None:
        return [message]
    base, uris = _requested(request.find(_q("m:FolderShape")))
    changes = _el("m:Changes", parent=message)
    for change, ident in page:
        elem = _el(f"t:{change}", parent=changes)
        if change == "Delete":
            _el("t:FolderId", parent=elem, Id=ident)
        else:
            elem.append(_folder_elem(state, state.folders[ident], base, uris))
    return [message]


def op_get_item(call: Call, request: ET.Element) -> list[ET.Element]:
    base, uris = _requested(request.find(_q("m:ItemShape")))
    messages = []
    for ref in _kids(request, "m:ItemIds"):
        item = call.item(ref.get("Id"))
        code = "ErrorItemNotFound" if item is None else "NoError"
        messages.append(message := _response_message("GetItem", code))
        items = _el("m:Items", parent=message)
        if item is not None:
            items.append(_item_elem(call.state, item, base, uris))
    return messages


def op_find_item(call: Call, request: ET.Element) -> list[ET.Element]:
    if any(request.find(_q(tag)) is not None for tag in ("m:Restriction", "m:QueryString")):
        call.state.unsupported.append("FindItem with a restriction")
        text = "The EWS fake does not implement FindItem restrictions."
        return [_response_message("FindItem", "ErrorInvalidOperation", text)]
    base, uris = _requested(request.find(_q("m:ItemShape")))
    calendar = request.find(_q("m:CalendarView"))
    messages = []
    for folder in call.folders(request, "m:ParentFolderIds"):
        if folder is None:
            messages.append(_response_message("FindItem", "ErrorFolderNotFound"))
            continue
        found = call.state.items_in(folder) if request.get("Traversal") != "SoftDeleted" else []
        for order in reversed(_kids(request, "m:SortOrder")):  # stable sorts, last key first
            uri = next(e.get("FieldURI") for e in order.iter() if e.get("FieldURI"))
            have = [i for i in found if i.props.get(uri) is not None]
            have.sort(key=lambda i, u=uri: i.props[u], reverse=order.get("Order") == "Descending")
            found = have + [i for i in found if i.props.get(uri) is None]
        messages.append(message := _response_message("FindItem"))
        if calendar is None:
            view = request.find(_q("m:IndexedPageItemView"))
            page, container = _paged(message, view, found, "t:Items")
        else:  # occurrences overlapping [StartDate, EndDate], by start
            start, end = (_parse_stamp(calendar.get(a)) for a in ("StartDate", "EndDate"))
            events = [i for i in found if i.kind == "CalendarItem"]
            found = [i for i in events if i.props["calendar:Start"] < end]
            found = [i for i in found if i.props["calendar:End"] >= start]
            found.sort(key=lambda i: i.props["calendar:Start"])
            page = found[: int(calendar.get("MaxEntriesReturned") or len(found) or 1)]
            last = str(len(page) == len(found)).lower()
            root = _el("m:RootFolder", parent=message, TotalItemsInView=len(found))
            root.set("IncludesLastItemInRange", last)
            container = _el("t:Items", parent=root)
        container.extend(_item_elem(call.state, i, base, uris, view=True) for i in page)
    return messages


def op_create_item(call: Call, request: ET.Element) -> list[ET.Element]:
    state, user = call.state, call.user
    disposition = request.get("MessageDisposition") or "SaveOnly"
    saved = _kids(request, "m:SavedItemFolderId")
    target = call.folder(saved[0]) if saved else None
    messages = []
    for elem in _kids(request, "m:Items"):
        if _local(elem) == "Contact":  # an address book entry, saved where asked
            folder = target or state.distinguished(user.address, "contacts")
            if folder is None:
                messages.append(_response_message("CreateItem", "ErrorFolderNotFound"))
                continue
            item = call.server._store(folder, "Contact", _props_from_xml("Contact", elem))
            messages.append(message := _response_message("CreateItem"))
            _item_id(_el("t:Contact", parent=_el("m:Items", parent=message)), item)
            continue
        if _local(elem) != "Message":
            state.unsupported.append(f"CreateItem of {_local(elem)}")
            text = "The EWS fake only creates messages and contacts."
            messages.append(_response_message("CreateItem", "ErrorInvalidOperation", text))
            continue
        props = _props_from_xml("Message", elem)
        sending = disposition != "SaveOnly"
        given = {u: v for u, v in props.items() if v not in (None, [], "")}
        mime = props.get("item:MimeContent") or _build_mime(user, props)
        props = _message_props(mime) | given | {"item:MimeContent": mime}
        props |= {"item:IsDraft": not sending, "message:IsRead": True}
        props.setdefault("message:From", (user.name, user.address))
        if sending and not any(props.get(u) for u in MAILBOXES):
            messages.append(_response_message("CreateItem", "ErrorInvalidRecipients"))
            continue
        if saved and target is None:
            messages.append(_response_message("CreateItem", "ErrorFolderNotFound"))
            continue
        folder = target or state.distinguished(user.address, "sentitems" if sending else "drafts")
        messages.append(message := _response_message("CreateItem"))
        items, item = _el("m:Items", parent=message), None
        if disposition != "SendOnly":
            props |= {"item:DateTimeSent": datetime.now(UTC)} if sending else {}
            item = call.server._store(folder, "Message", props)
        if not sending:  # a draft: its id comes back (sending returns no ids)
            _item_id(_el("t:Message", parent=items), item)
            continue
        to, cc, bcc = (
            [a for _, a in props.get(f"message:{h}Recipients", [])] for h in ["To", "Cc", "Bcc"]
        )
        subject, saved_id = props.get("item:Subject"), item and item.id
        state.sent.append(
            SentMessage(user.address, mime, subject, to, cc, bcc, disposition, saved_id)
        )
    return messages


def op_resolve_names(call: Call, request: ET.Element) -> list[ET.Element]:
    """Matches users (the directory) and the caller's contacts by name or address prefix."""
    state = call.state
    scope = request.get("SearchScope") or "ActiveDirectoryContacts"
    contacts = state.distinguished(call.user.address, "contacts")
    messages = []
    for entry in request.findall(_q("m:UnresolvedEntry")):
        wanted = (entry.text or "").strip().lower().removeprefix("smtp:")
        found = []  # (name, address, mailbox type, contact item or None)
        for user in state.users.values() if "ActiveDirectory" in scope else []:
            if any(w.startswith(wanted) for w in [*user.name.lower().split(), user.address]):
                found.append((user.name, user.address, "Mailbox", None))
        for item in state.items_in(contacts) if "Contacts" in scope and contacts else []:
            name, emails = (
                item.props.get("contacts:DisplayName") or "",
                item.props.get("contacts:EmailAddress"),
            )
            words = [*name.lower().split(), *(emails or {}).values()]
            if emails and any(w.lower().startswith(wanted) for w in words):
                found.append((name, next(iter(emails.values())), "Contact", item))
        if not wanted or not found:
            messages.append(_response_message("ResolveNames", "ErrorNameResolutionNoResults"))
            continue
        several = ("ErrorNameResolutionMultipleResults", None, "Warning") if found[1:] else ()
        messages.append(message := _response_message("ResolveNames", *several))
        resolutions = _el("m:ResolutionSet", parent=message, TotalItemsInView=len(found))
        resolutions.set("IncludesLastItemInRange", "true")
        for name, address, kind, item in found:
            resolution = _el("t:Resolution", parent=resolutions)
            box = _mailbox(resolution, (name, address), state, kind)
            if item is not None:
                _item_id(box, item)
            if request.get("ReturnFullContactData") != "true":
                continue
            if item is not None:
                resolution.append(_item_elem(state, item, "AllProperties", set()))
                continue
            contact = _el("t:Contact", parent=resolution)
            _el("t:DisplayName", name, contact)
            _el(
                "t:Entry",
                f"SMTP:{address}",
                _el("t:EmailAddresses", parent=contact),
                Key="EmailAddress1",
            )
            _el("t:ContactSource", "ActiveDirectory", contact)
    return messages


def op_convert_id(call: Call, request: ET.Element) -> list[ET.Element]:
    # exchangelib's version guess converts a "DUMMY" id; it only needs the header back.
    return [
        _response_message("ConvertId", "ErrorInvalidIdMalformed")
        for _ in _kids(request, "m:SourceIds")
    ]


def _watermark(index: int) -> str:
    return base64.b64encode(f"watermark-{index}".encode()).decode()


def _watermark_index(text: str | None) -> int | None:
    try:
        decoded = base64.b64decode(text or "", validate=True).decode()
    except ValueError:
        return None
    prefix, _, number = decoded.partition("-")
    return int(number) if prefix == "watermark" and number.isdigit() else None


def op_subscribe(call: Call, request: ET.Element) -> list[ET.Element]:
    """Pull subscriptions only (Exchange's others need a callback URL or a held-open
    HTTP response)."""
    pull = request.find(_q("m:PullSubscriptionRequest"))
    if pull is None:
        call.state.unsupported.append("Subscribe")
        text = "The EWS fake implements pull subscriptions only."
        return [_response_message("Subscribe", "ErrorInvalidOperation", text)]
    if pull.get("SubscribeToAllFolders", "").lower() == "true":
        folders = {f.id for f in call.state.folders.values() if f.mailbox == call.user.address}
    else:
        ids = pull.find(_q("t:FolderIds"))
        found = [call.folder(ref) for ref in (list(ids) if ids is not None else [])]
        if not found or None in found:
            return [_response_message("Subscribe", "ErrorFolderNotFound")]
        folders = {f.id for f in found}
    types = {e.text for e in pull.iter(_q("t:EventType"))}
    subscription = base64.b64encode(secrets.token_bytes(24)).decode()
    call.state.subscriptions[subscription] = (call.user.address, folders, types)
    start = _watermark_index(getattr(pull.find(_q("m:Watermark")), "text", None))
    message = _response_message("Subscribe")
    _el("m:SubscriptionId", subscription, message)
    _el("m:Watermark", _watermark(len(call.state.events) if start is None else start), message)
    return [message]


def op_get_events(call: Call, request: ET.Element) -> list[ET.Element]:
    subscription = getattr(request.find(_q("m:SubscriptionId")), "text", "")
    watched = call.state.subscriptions.get(subscription or "")
    since = _watermark_index(getattr(request.find(_q("m:Watermark")), "text", None))
    if watched is None or watched[0] != call.user.address:
        return [_response_message("GetEvents", "ErrorSubscriptionNotFound")]
    if since is None or since > len(call.state.events):
        return [_response_message("GetEvents", "ErrorInvalidWatermark")]
    mailbox, folders, types = watched
    message = _response_message("GetEvents")
    notification = _el("m:Notification", parent=message)
    _el("t:SubscriptionId", subscription, notification)
    _el("t:PreviousWatermark", _watermark(since), notification)
    _el("t:MoreEvents", "false", notification)
    shown = 0
    for index in range(since, len(call.state.events)):
        kind, owner, folder, item_id, old_folder = call.state.events[index]
        if owner != mailbox or kind not in types or not {folder, old_folder} & folders:
            continue
        event = _el(f"t:{kind}", parent=notification)
        _el("t:Watermark", _watermark(index + 1), event)
        _el("t:TimeStamp", _stamp(datetime.now(UTC)), event)
        _el("t:ItemId", parent=event, Id=item_id, ChangeKey=_change_key(item_id, 1))
        _el("t:ParentFolderId", parent=event, Id=folder, ChangeKey=_change_key(folder, 1))
        if old_folder:
            _el("t:OldParentFolderId", parent=event, Id=old_folder)
        shown += 1
    if not shown:
        _el(
            "t:Watermark",
            _watermark(len(call.state.events)),
            _el("t:StatusEvent", parent=notification),
        )
    return [message]


def op_unsubscribe(call: Call, request: ET.Element) -> list[ET.Element]:
    subscription = getattr(request.find(_q("m:SubscriptionId")), "text", "")
    if call.state.subscriptions.pop(subscription or "", None) is None:
        return [_response_message("Unsubscribe", "ErrorSubscriptionNotFound")]
    return [_response_message("Unsubscribe")]


OPERATIONS = {
    "Subscribe": op_subscribe,
    "GetEvents": op_get_events,
    "Unsubscribe": op_unsubscribe,
    "GetFolder": op_get_folder,
    "FindFolder": op_find_folder,
    "SyncFolderItems": op_sync_folder_items,
    "SyncFolderHierarchy": op_sync_folder_hierarchy,
    "GetItem": op_get_item,
    "FindItem": op_find_item,
    "CreateItem": op_create_item,
    "ResolveNames": op_resolve_names,
    "ConvertId": op_convert_id,
}


def _units(request: ET.Element) -> int:
    """How many response messages a request gets: one per folder, item, id or name."""
    tags = ("m:FolderIds", "m:ItemIds", "m:ParentFolderIds", "m:Items", "m:SourceIds")
    counts = [len(_kids(request, tag)) for tag in tags]
    return max(*counts, len(request.findall(_q("m:UnresolvedEntry"))), 1)


def _autodiscover(server: "EwsServer", request: ET.Element) -> bytes:
    """A GetUserSettings answer: the EWS URL and what else it knows of the users asked about."""
    envelope = _el("s:Envelope")
    info = _el("a:ServerVersionInfo", parent=_el("s:Header", parent=envelope))
    names = ("MajorVersion", "MinorVersion", "MajorBuildNumber", "MinorBuildNumber")
    for name, value in [*zip(names, BUILD, strict=True), ("Version", "Exchange2015")]:
        _el(f"a:{name}", value, info)
    message = _el("a:GetUserSettingsResponseMessage", parent=_el("s:Body", parent=envelope))
    response = _el("a:Response", parent=message)
    _el("a:ErrorCode", "NoError", response)
    _el("a:ErrorMessage", parent=response)
    responses = _el("a:UserResponses", parent=response)
    wanted = {s.text for s in request.iter(_q("a:Setting"))}
    schemas = ", ".join(sorted(API_VERSIONS - {"Exchange2015"}))
    for box in request.iter(_q("a:Mailbox")):
        address = (box.text or "").strip().lower()
        answer = _el("a:UserResponse", parent=responses)
        if (user := server.state.users.get(address)) is None:
            _el("a:ErrorCode", "InvalidUser", answer)
            _el("a:ErrorMessage", f"Invalid user: '{address}'", answer)
            continue
        _el("a:ErrorCode", "NoError", answer)
        _el("a:ErrorMessage", "No error.", answer)
        _el("a:RedirectTarget", parent=answer, **{_q("xsi:nil"): "true"})
        _el("a:UserSettingErrors", parent=answer)  # what it lacks, it leaves out
        settings = _el("a:UserSettings", parent=answer)
        values = {
            "UserDisplayName": user.name,
            "AutoDiscoverSMTPAddress": user.address,
            "InternalEwsUrl": server.ews_url,
            "ExternalEwsUrl": server.ews_url,
            "CasVersion": "15.01.2507.006",
            "EwsSupportedSchemas": schemas,
        }
        for name in (n for n in values if n in wanted):
            setting = _el("a:UserSetting", parent=settings, **{_q("xsi:type"): "StringSetting"})
            _el("a:Name", name, setting)
            _el("a:Value", values[name], setting)
    return b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(envelope)


# --- HTTP -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server_version = "Microsoft-IIS/10.0"
    protocol_version = "HTTP/1.1"
    served = 0  # requests answered on this connection (a handler is one connection)

    def log_message(self, *args):
        pass

    def _reply(self, status: int, body: bytes = b""):
        self.send_response(status)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if status == 401:  # one header per scheme, as IIS sends them
            self.send_header("WWW-Authenticate", f'Basic realm="{self.server.ews.hostname}"')
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, state: State, interval: float) -> None:
        with state.lock:
            state.dripping += 1
        began = time.monotonic()
        try:
            # A status line that never ends: http.client reads up to 64 KB of it.
            self.wfile.write(b"HTTP/1.1 200 ")
            while time.monotonic() - began < 60:
                self.wfile.write(b"O")
                self.wfile.flush()
                time.sleep(interval)
        except OSError:  # the client cut the connection
            pass
        finally:
            self.close_connection = True
            with state.lock:
                state.dripping -= 1

    def _user(self, state: State) -> User | None:
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                address, _, password = base64.b64decode(credentials).decode().partition(":")
            except ValueError:
                return None
            user = state.users.get(address.lower())
            return (
                user if user and user.password is not None and user.password == password else None
            )
        token_user = self.server.ews.token_user
        if scheme.lower() == "bearer" and token_user is not None:
            address = token_user(credentials.strip())
            return state.users.get(address.lower()) if address else None
        return None

    def do_POST(self):
        server: EwsServer = self.server.ews
        state = server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?")[0].lower()
        if path not in ("/ews/exchange.asmx", "/autodiscover/autodiscover.svc"):
            return self._reply(404)
        try:  # test-only code, trusted input: plain ElementTree is enough
            envelope = ET.fromstring(body)  # noqa: S314
            request = envelope.find(_q("s:Body"))[0]
            op = _local(request).removesuffix("RequestMessage")
        except (ET.ParseError, TypeError, IndexError):
            envelope = request = None
            op = "?"
        if op in state.drips:
            return self._drip(state, state.drips[op])
        with state.lock:
            user = self._user(state)
            state.requests.append((op, user.address if user else None))
            if user is None:
                return self._reply(401)
            if request is None:
                return self._reply(400)
            reused = self.served
            self.served += 1
            if state.drops.get(op) or (reused and state.stale_drops.get(op)):
                drops = state.drops if state.drops.get(op) else state.stale_drops
                drops[op] -= 1
                self.close_connection = True  # and no reply at all
                return None
            if path.startswith("/autodiscover"):
                return self._reply(200, _autodiscover(server, request))
            asked = envelope.find(f"{_q('s:Header')}/{_q('t:RequestServerVersion')}")
            asked = "Exchange2007" if asked is None else asked.get("Version")
            if asked not in API_VERSIONS:
                fault = _soap_fault("ErrorInvalidServerVersion", None)
                return self._reply(500, _envelope(fault, "Exchange2016"))
            version = "V2017_07_11" if asked == "Exchange2016" else asked
            if failure := state.failures.get(op):
                code, count, back_off_ms = failure[0]
                failure[0][1] -= 1
                if count <= 1:
                    failure.pop(0)
                if code in FAULT_CODES:
                    return self._reply(500, _envelope(_soap_fault(code, back_off_ms), version))
                messages = [_response_message(op, code) for _ in range(_units(request))]
            elif op in OPERATIONS:
                messages = OPERATIONS[op](Call(state, user, server), request)
            else:
                state.unsupported.append(op)
                text = f"The EWS fake does not implement {op}."
                messages = [_response_message(op, "ErrorInvalidOperation", text)]
                messages *= _units(request)
            if garbled := state.garbled.get(op):  # e.g. a proxy's 503 after the work
                garbled[1] -= 1
                if garbled[1] <= 0:
                    del state.garbled[op]
                return self._reply(garbled[0], b"Service Unavailable")
            response = _el(f"m:{op}Response")
            _el("m:ResponseMessages", parent=response).extend(messages)
            return self._reply(200, _envelope(response, version))


class EwsServer:
    """The fake Exchange server; EWS is at `ews_url` (`url` + "/EWS/Exchange.asmx").

    Folder arguments of the helpers take a folder id or a distinguished name ("inbox"),
    optionally followed by display names ("inbox/Projects/2024"); `mailbox` says whose
    distinguished folder is meant, and may be left out while there is a single user.
    """

    def __init__(
        self, *, hostname: str = "localhost", token_user: Callable[[str], str | None] | None = None
    ):
        self.hostname = hostname
        self.token_user = token_user  # Bearer token -> the address it belongs to, or None
        self.port = free_port()
        self.state = State()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self.httpd.ews = self
        self.httpd.socket = server_context(hostname).wrap_socket(
            self.httpd.socket, server_side=True
        )
        self.url = f"https://{hostname}:{self.port}"
        self.ews_url = f"{self.url}/EWS/Exchange.asmx"
        self.autodiscover_url = f"{self.url}/autodiscover/autodiscover.svc"

    def start(self) -> "EwsServer":
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        """(operation, authenticated address or None) per request, in order."""
        return self.state.requests

    @property
    def sent(self) -> list[SentMessage]:
        return self.state.sent

    @property
    def unsupported(self) -> list[str]:
        return self.state.unsupported

    def calls(self, operation: str) -> int:
        return sum(1 for op, _ in self.state.requests if op == operation)

    def add_user(self, address: str, password: str | None = None, name: str | None = None) -> None:
        """A mailbox with the distinguished folders; with no password only tokens sign in."""
        address = address.lower()
        with self.state.lock:
            self.state.users[address] = User(address, password, name or address.split("@")[0])
            ids: dict[str, str] = {}
            for distinguished, display, folder_class, parent in DISTINGUISHED:
                ids[distinguished] = _new_id(b"\x01\x03$")
                parent_id = ids.get(parent or "")
                folder = Folder(ids[distinguished], address, parent_id, display, folder_class)
                folder.distinguished = distinguished
                self.state.folders[folder.id] = folder

    def folder_id(self, path: str, mailbox: str | None = None) -> str:
        with self.state.lock:
            if path in self.state.folders:  # ids are base64: they may hold a "/"
                return path
            first, *names = path.split("/")
            if mailbox is None:
                if len(self.state.users) != 1:
                    raise ValueError("Say which mailbox: there is more than one")
                mailbox = next(iter(self.state.users))
            folder = self.state.folders.get(first) or self.state.distinguished(
                mailbox.lower(), first
            )
            if folder is None:
                raise KeyError(path)
            for name in names:
                folder = next(f for f in self.state.children(folder) if f.name == name)
            return folder.id

    def add_folder(
        self, parent: str, name: str, folder_class: str = "IPF.Note", mailbox: str | None = None
    ) -> str:
        with self.state.lock:
            above = self.state.folders[self.folder_id(parent, mailbox)]
            folder = Folder(_new_id(b"\x01\x03$"), above.mailbox, above.id, name, folder_class)
            self.state.folders[folder.id] = folder
            above.version += 1
            return folder.id

    def _store(self, folder: Folder, kind: str, props: dict) -> Item:
        now = datetime.now(UTC)
        defaults = {"item:ItemClass": ITEM_CLASSES[kind], "item:LastModifiedTime": now}
        defaults |= {"item:DateTimeCreated": now, "item:DateTimeReceived": now}
        props = defaults | {uri: value for uri, value in props.items() if value is not None}
        item = Item(
            _new_id(b"\x00\x03$"), folder.mailbox, folder.id, kind, props, self.state.next_seq()
        )
        self.state.items[item.id] = item
        self.state.event("CreatedEvent", item)
        if kind == "Message":
            self.state.event("NewMailEvent", item)
        return item

    def _add(self, folder: str, mailbox: str | None, kind: str, props: dict) -> str:
        with self.state.lock:
            return self._store(self.state.folders[self.folder_id(folder, mailbox)], kind, props).id

    def add_message(
        self,
        folder: str,
        mime: bytes,
        is_read: bool = False,
        received: datetime | None = None,
        mailbox: str | None = None,
    ) -> str:
        """Deliver a message (its exact bytes are its MimeContent); returns its ItemId."""
        props = _message_props(mime) | {"message:IsRead": is_read}
        return self._add(folder, mailbox, "Message", props | {"item:DateTimeReceived": received})

    def add_calendar_item(
        self,
        subject: str,
        start: datetime,
        end: datetime,
        *,
        folder: str = "calendar",
        location: str | None = None,
        organizer: tuple[str | None, str] | None = None,
        required_attendees: Iterable[tuple[str | None, str]] = (),
        is_all_day: bool = False,
        body: str | None = None,
        sensitivity: str = "Normal",
        mailbox: str | None = None,
    ) -> str:
        """Aware datetimes; an all-day event runs from midnight UTC to midnight UTC.
        sensitivity: Normal, Personal, Private or Confidential.

        organizer and attendees are (name, address); no organizer: the user's own meeting.
        """
        attendees = list(required_attendees) or None
        props = {
            "item:Subject": subject,
            "calendar:Start": start,
            "calendar:End": end,
            "calendar:IsAllDayEvent": is_all_day,
            "calendar:Location": location,
            "calendar:Organizer": organizer,
            "calendar:RequiredAttendees": attendees,
            "calendar:IsMeeting": bool(attendees),
            "calendar:IsCancelled": False,
            "calendar:IsRecurring": False,
            "calendar:CalendarItemType": "Single",
            "calendar:LegacyFreeBusyStatus": "Busy",
            "calendar:MyResponseType": "Organizer" if organizer is None else "Unknown",
            "calendar:UID": secrets.token_hex(16),
            "calendar:StartTimeZone": "UTC",
            "calendar:EndTimeZone": "UTC",
            "item:Body": ("Text", body) if body else None,
            "item:Sensitivity": sensitivity,
        }
        return self._add(folder, mailbox, "CalendarItem", props)

    def add_contact(
        self,
        display_name: str,
        *,
        folder: str = "contacts",
        given_name: str | None = None,
        surname: str | None = None,
        company_name: str | None = None,
        emails: Iterable[str] = (),
        phones: dict[str, str] | None = None,
        job_title: str | None = None,
        mailbox: str | None = None,
    ) -> str:
        """emails: EmailAddress1..3; phones: PhoneNumberKey ("BusinessPhone", ...) -> number."""
        addresses = {f"EmailAddress{n}": a for n, a in enumerate(list(emails)[:3], start=1)}
        props = {
            "item:Subject": display_name,
            "contacts:FileAs": display_name,
            "contacts:DisplayName": display_name,
            "contacts:GivenName": given_name,
            "contacts:Surname": surname,
            "contacts:CompanyName": company_name,
            "contacts:EmailAddress": addresses or None,
            "contacts:PhoneNumber": phones or None,
            "contacts:JobTitle": job_title,
            "contacts:ContactSource": "Store",
        }
        return self._add(folder, mailbox, "Contact", props)

    def add_task(
        self,
        subject: str,
        *,
        folder: str = "tasks",
        start_date: date | None = None,
        due_date: date | None = None,
        status: str = "NotStarted",
        body: str | None = None,
        companies: Iterable[str] = (),
        contacts: Iterable[str] = (),
        mailbox: str | None = None,
    ) -> str:
        """status: NotStarted, InProgress, Completed, WaitingOnOthers or Deferred;
        companies and contacts: the names Outlook's task form takes."""
        done = status == "Completed"
        props = {
            "item:Subject": subject,
            "task:StartDate": start_date,
            "task:DueDate": due_date,
            "task:Status": status,
            "task:IsComplete": done,
            "task:PercentComplete": 100 if done else 0,
            "item:Body": ("Text", body) if body else None,
            "task:Companies": list(companies) or None,
            "task:Contacts": list(contacts) or None,
        }
        return self._add(folder, mailbox, "Task", props)

    def item(self, item_id: str) -> Item:
        return self.state.items[item_id]

    def set_read(self, item_id: str, is_read: bool = True) -> None:
        """A read-flag change (SyncFolderItems reports ReadFlagChange)."""
        with self.state.lock:
            item = self.state.items[item_id]
            item.props["message:IsRead"] = is_read
            self.state.touch(item, content=False)

    def update_item(self, item_id: str, props: dict) -> None:
        """Change properties, by field URI ({"item:Subject": "New"}): an Update."""
        with self.state.lock:
            item = self.state.items[item_id]
            item.props |= props
            self.state.touch(item)

    def delete_item(self, item_id: str) -> None:
        with self.state.lock:
            self.state.event("DeletedEvent", self.state.items.pop(item_id))

    def move_item(self, item_id: str, folder: str) -> str:
        """Move an item; as on Exchange, it gets a new ItemId (returned)."""
        with self.state.lock:
            item = self.state.items.pop(item_id)
            old_folder = item.folder
            item.id, item.folder = _new_id(b"\x00\x03$"), self.folder_id(folder, item.mailbox)
            self.state.items[item.id] = item
            self.state.touch(item)
            self.state.event("MovedEvent", item, old_folder)
            return item.id

    def fail_next(
        self, operation: str, code: str, count: int = 1, back_off_ms: int | None = None
    ) -> None:
        """The next `count` calls of `operation` answer with ResponseCode `code`.

        ErrorServerBusy (and the other FAULT_CODES) come as a SOAP fault with HTTP 500, as
        Exchange's throttling does, with BackOffMilliseconds if given; other codes as an
        Error ResponseMessage for each folder or item asked for.
        """
        with self.state.lock:
            self.state.failures.setdefault(operation, []).append([code, count, back_off_ms])

    def drop_next(self, operation: str, count: int = 1) -> None:
        """The next `count` calls of `operation` get the connection closed, with no reply."""
        with self.state.lock:
            self.state.drops[operation] = self.state.drops.get(operation, 0) + count

    def drop_next_on_reused(self, operation: str, count: int = 1) -> None:
        """The next `count` calls of `operation` that come on a connection which served
        another request before are dropped as by `drop_next`; on a new one, answered."""
        with self.state.lock:
            self.state.stale_drops[operation] = self.state.stale_drops.get(operation, 0) + count

    def answer_next(self, operation: str, status: int, count: int = 1) -> None:
        """The next `count` calls of `operation` are carried out, and then answered with
        HTTP `status` and no SOAP (a proxy or load balancer failing on the way back)."""
        with self.state.lock:
            self.state.garbled[operation] = [status, count]

    def end_subscriptions(self) -> None:
        """Every pull subscription is forgotten, as after a mailbox moved to another server
        or the subscription timed out: GetEvents answers ErrorSubscriptionNotFound."""
        with self.state.lock:
            self.state.subscriptions.clear()

    def invalidate_sync_states(self) -> None:
        """Every SyncState handed out so far becomes invalid, as after a mailbox move."""
        with self.state.lock:
            self.state.sync_states.clear()
