"""Large messages, read part by part so that the worker's memory does not grow with them.

A message above `engine.LARGE` is not fetched whole. Its structure comes from the
server (BODYSTRUCTURE, RFC 3501), and the message is rebuilt as a "skeleton": its
headers, every part's own headers, its text parts and small parts as they are, and in
place of each larger part a short token. The skeleton goes through the same parser as
every other message, so text, names and notes come out the same way; the larger parts
are copied from the server a megabyte at a time (partial FETCH), decoded on the way
into temporary files, and stored from there (sync/store.py maps the tokens back).

Above the size limit (the system setting MaxMessageSizeMB) the larger parts are listed
but not downloaded, and the message's first bytes up to the limit are kept as its
original, written to a gzip file as they arrive.
"""

import binascii
import contextlib
import gzip
import os
import re
import tempfile
from dataclasses import dataclass, field

from django.conf import settings
from imapclient import IMAPClient

from .parsing import DEFAULT_LIMITS, INCOMPLETE, Limits, parse_message
from .store import Fetched, Spooled

CHUNK = 1 << 20  # bytes per partial FETCH
# Parts up to this size are fetched into the skeleton as they are (at most the number of
# parts the parser reads: a bounded total); larger ones are spooled.
SMALL_PART = 32 * 1024
# Text parts are read up to this many bytes together: the parser keeps at most
# MAX_BODY_CHARS of text, and encodings at most double a text's size.
TEXT_BUDGET = 6_000_000


@dataclass
class Leaf:
    section: str  # "1", "2.1", ...
    maintype: str
    subtype: str
    params: dict[str, str]
    encoding: str
    size: int
    disposition: str
    filename: str

    @property
    def inline_text(self) -> bool:
        named = self.filename or self.params.get("name")
        return self.maintype == "text" and self.disposition != "attachment" and not named

    def token(self) -> bytes:
        return f"mailsetup-part {self.section} {self.size}".encode()


@dataclass
class Plan:
    """What to fetch for the skeleton, in the order it is written."""

    leaves: list[Leaf] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)  # sections whose .MIME or .HEADER
    cut: str = ""  # why part of the structure was not read


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _pairs(params) -> dict[str, str]:
    if not isinstance(params, tuple | list):
        return {}
    items = list(params)
    return {_text(items[i]).lower(): _text(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _is_multipart(node) -> bool:
    return isinstance(node, tuple | list) and bool(node) and isinstance(node[0], tuple | list)


def _split_multipart(node) -> tuple[list, str, dict[str, str]]:
    """(parts, subtype, params) of a multipart body structure, as IMAPClient gives it at
    the top (a list of parts first) and inside a message/rfc822 part (parts in line)."""
    if isinstance(node[0], list):
        parts, rest = list(node[0]), list(node[1:])
    else:
        index = 0
        while index < len(node) and isinstance(node[index], tuple | list):
            index += 1
        parts, rest = list(node[:index]), list(node[index:])
    subtype = _text(rest[0]).lower() if rest else "mixed"
    params = _pairs(rest[1]) if len(rest) > 1 else {}
    return parts, subtype, params


def _leaf(node, section: str) -> Leaf:
    maintype, subtype = _text(node[0]).lower(), _text(node[1]).lower()
    params = _pairs(node[2])
    encoding = _text(node[5]).lower() if len(node) > 5 else "7bit"
    size = int(node[6]) if len(node) > 6 and isinstance(node[6], int) else 0
    # The disposition's place depends on the type (RFC 3501, body-ext-1part).
    where = 11 if (maintype, subtype) == ("message", "rfc822") else 9 if maintype == "text" else 8
    disposition, filename = "", ""
    if len(node) > where and isinstance(node[where], tuple | list) and node[where]:
        disposition = _text(node[where][0]).lower()
        filename = _pairs(node[where][1] if len(node[where]) > 1 else None).get("filename", "")
    return Leaf(section, maintype, subtype, params, encoding, size, disposition, filename)


def plan(structure, limits: Limits = DEFAULT_LIMITS) -> tuple[Plan, dict]:
    """The skeleton's plan, and the tree to write it by: {section: node description}."""
    result = Plan()
    max_parts, max_depth = limits.max_parts, limits.max_depth
    tree: dict = {}

    def walk(node, prefix: str, depth: int, owner: str) -> None:
        """`owner`: the section whose headers describe this node ("" for the message's,
        or "S" for a message/rfc822 part's embedded header)."""
        if depth > max_depth:
            result.cut = f"parts nested deeper than {max_depth} levels were not read"
            tree[owner or "top"] = ("cut",)
            return
        if _is_multipart(node):
            parts, _subtype, params = _split_multipart(node)
            children = []
            for number, part in enumerate(parts, start=1):
                if len(result.leaves) >= max_parts:
                    result.cut = f"parts after the first {max_parts} were not read"
                    break
                section = f"{prefix}.{number}" if prefix else str(number)
                result.headers.append(f"{section}.MIME")
                children.append(section)
                single(part, section, depth + 1)
            tree[owner or "top"] = ("multipart", params.get("boundary", ""), children)
            return
        # A single-part body: the message's own ("1" at the top, "S.1" in an attached
        # message), under the headers of its owner.
        section = f"{prefix}.1" if prefix else "1"
        single(node, section, depth, headers_of=owner or "top")
        tree[owner or "top"] = ("single", section)

    def single(node, section: str, depth: int, headers_of: str | None = None) -> None:
        leaf = _leaf(node, section)
        if (leaf.maintype, leaf.subtype) == ("message", "rfc822") and len(node) > 8:
            result.headers.append(f"{section}.HEADER")
            tree[section] = ("message",)
            walk(node[8], section, depth + 1, owner=f"{section}.HEADER")
            return
        result.leaves.append(leaf)
        tree[section] = ("leaf", leaf, headers_of)

    walk(structure, "", 0, "")
    return result, tree


_CTE = re.compile(rb"(?im)^content-transfer-encoding:[^\r\n]*(\r?\n[ \t][^\r\n]*)*\r?\n")
_DISPOSITION = re.compile(rb"(?im)^content-disposition:")


def _as_token_part(mime_headers: bytes) -> bytes:
    """A part's own headers for a token in place of its body: no transfer encoding
    left to undo, and an attachment, whatever it was."""
    head = _CTE.sub(b"", mime_headers).rstrip(b"\r\n")
    if not _DISPOSITION.search(head):
        head += b"\r\nContent-Disposition: attachment"
    return head + b"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"


class LargeReader:
    def __init__(self, client: IMAPClient, uid: int, size: int, *, limit: int, limits: Limits):
        self.client = client
        self.limits = limits
        self.uid = uid
        self.size = size
        self.limit = limit
        self.over = size > limit
        self.spooled = Spooled()

    def _fetch(self, items: list[bytes]) -> dict:
        response = self.client.fetch([self.uid], items)
        if self.uid not in response:
            import imaplib

            raise imaplib.IMAP4.error("the server did not send the message's parts")
        return response[self.uid]

    def read(self) -> Fetched:
        try:
            return self._read()
        except BaseException:
            # A connection cut midway, a refusal: the parts spooled so far go.
            self.spooled.cleanup()
            raise

    def _read(self) -> Fetched:
        first = self._fetch([b"FLAGS", b"BODYSTRUCTURE", b"BODY.PEEK[HEADER]"])
        seen = b"\\seen" in {bytes(f).lower() for f in first.get(b"FLAGS", ())}
        header = first.get(b"BODY[HEADER]") or b""
        self.spooled.structure = f"{self.size - len(header)}|{first[b'BODYSTRUCTURE']!r}"
        skeleton_plan, tree = plan(first[b"BODYSTRUCTURE"], self.limits)
        parts = self._parts(skeleton_plan)
        skeleton = self._headers("top", header, tree, parts) + self._body("top", tree, parts)
        parsed = parse_message(skeleton, limits=self.limits)
        notes = []
        if self.over:
            notes.append(
                f"This message is {self.size / 1e6:.0f} MB, above the limit of "
                f"{self.limit / 1e6:.0f} MB (system setting MaxMessageSizeMB): its text is "
                "stored and its attachments are listed, not downloaded; its first "
                f"{self.limit / 1e6:.0f} MB are kept as its original."
            )
        if skeleton_plan.cut:
            notes.append(f"The message has more parts than are read: {skeleton_plan.cut}.")
        if parts.get("__text_cut__"):
            notes.append("Its text is longer than is kept; the rest is in its original.")
        if notes:
            parsed.notes += notes
            parsed.problem = parsed.problem or INCOMPLETE
        if parsed.problem:
            self.spooled.original = self._original()
        return Fetched(uid=self.uid, parsed=parsed, seen=seen, size=self.size, spooled=self.spooled)

    def _parts(self, skeleton_plan: Plan) -> dict:
        """The skeleton's pieces by section: headers, small parts and text as they are,
        tokens for the larger parts (spooled, or listed above the limit)."""
        pieces: dict = {}
        wanted = [f"BODY.PEEK[{section}]".encode() for section in skeleton_plan.headers]
        budget = TEXT_BUDGET
        large = []
        for leaf in skeleton_plan.leaves:
            if leaf.inline_text:
                length = min(leaf.size, max(budget, 0))
                budget -= length
                if length < leaf.size:
                    pieces["__text_cut__"] = True
                wanted.append(f"BODY.PEEK[{leaf.section}]<0.{max(length, 1)}>".encode())
            elif leaf.size <= SMALL_PART:
                wanted.append(f"BODY.PEEK[{leaf.section}]".encode())
            else:
                large.append(leaf)
        for start in range(0, len(wanted), 50):
            for key, value in self._fetch(wanted[start : start + 50]).items():
                name = key.decode() if isinstance(key, bytes) else str(key)
                if name.startswith("BODY["):
                    section = name[5 : name.index("]")]
                    pieces[section] = value or b""
        for leaf in large:
            token = leaf.token()
            name = leaf.filename or leaf.params.get("name", "")
            content_type = f"{leaf.maintype}/{leaf.subtype}"
            if self.over:
                self.spooled.listed[token] = (_decoded_size(leaf), name, content_type)
            else:
                path, size = self._spool(leaf)
                self.spooled.attachments[token] = (path, size, name, content_type)
            pieces[leaf.section] = token
        return pieces

    def _body(self, owner: str, tree: dict, pieces: dict) -> bytes:
        """The body under `owner`'s headers ("top", or an attached message's
        "S.HEADER"), written back from its pieces."""
        node = tree.get(owner, ("cut",))
        if node[0] == "multipart":
            _kind, boundary, children = node
            delimiter = b"--" + boundary.encode()
            out = []
            for section in children:
                headers = pieces.get(f"{section}.MIME") or b"Content-Type: text/plain\r\n\r\n"
                if _is_token(pieces, section):
                    headers = _as_token_part(headers)
                body = self._section_body(section, tree, pieces)
                out.append(delimiter + b"\r\n" + headers + body + b"\r\n")
            out.append(delimiter + b"--\r\n")
            return b"".join(out)
        if node[0] == "single":
            return _piece(pieces, node[1])
        return b""

    def _headers(self, owner: str, headers: bytes, tree: dict, pieces: dict) -> bytes:
        """The headers of a single-part body: rewritten when its body is a token."""
        node = tree.get(owner, ("cut",))
        if node[0] == "single" and _is_token(pieces, node[1]):
            return _as_token_part(headers)
        return headers.rstrip(b"\r\n") + b"\r\n\r\n"

    def _section_body(self, section: str, tree: dict, pieces: dict) -> bytes:
        node = tree.get(section)
        if node is not None and node[0] == "message":
            owner = f"{section}.HEADER"
            header = self._headers(owner, pieces.get(owner) or b"", tree, pieces)
            return header + self._body(owner, tree, pieces)
        return _piece(pieces, section)

    def _spool(self, leaf: Leaf) -> tuple[str, int]:
        """The part's body, decoded, into a temporary file, a chunk at a time."""
        handle, path = tempfile.mkstemp(prefix="mailsetup-part-", dir=_spool_dir())
        decoder = _decoder(leaf.encoding)
        size = 0
        try:
            with os.fdopen(handle, "wb") as out:
                offset = 0
                while True:
                    chunk = self._chunk(f"BODY.PEEK[{leaf.section}]", offset)
                    if not chunk:
                        break
                    data = decoder.feed(chunk)
                    out.write(data)
                    size += len(data)
                    offset += len(chunk)
                    if len(chunk) < CHUNK:
                        break
                rest = decoder.close()
                out.write(rest)
                size += len(rest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return path, size

    def _chunk(self, item: str, offset: int) -> bytes:
        response = self._fetch([f"{item}<{offset}.{CHUNK}>".encode()])
        for key, value in response.items():
            if isinstance(key, bytes) and key.startswith(b"BODY["):
                return value or b""
        return b""

    def _original(self) -> str:
        """The message's first bytes up to the limit, as gzip, a chunk at a time."""
        handle, path = tempfile.mkstemp(prefix="mailsetup-original-", dir=_spool_dir())
        os.close(handle)
        try:
            with gzip.open(path, "wb", compresslevel=6) as out:
                offset = 0
                while offset < min(self.size, self.limit):
                    chunk = self._chunk("BODY.PEEK[]", offset)
                    if not chunk:
                        break
                    out.write(chunk[: max(0, self.limit - offset)])
                    offset += len(chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return path


def fetch_large(
    client: IMAPClient, uid: int, size: int, *, limit: int, limits: Limits = DEFAULT_LIMITS
) -> Fetched:
    """`limit`: MaxMessageSizeMB in bytes, and `limits` the parser's, read by the caller
    (this runs in the fetching thread, which never touches the database)."""
    return LargeReader(client, uid, size, limit=limit, limits=limits).read()


def _piece(pieces: dict, section: str) -> bytes:
    value = pieces.get(section, b"")
    return value if isinstance(value, bytes) else b""


def _is_token(pieces: dict, section: str) -> bool:
    value = pieces.get(section)
    return isinstance(value, bytes) and value.startswith(b"mailsetup-part ")


def _spool_dir() -> str | None:
    return settings.SYNC_SPOOL_DIR


def _decoded_size(leaf: Leaf) -> int:
    return leaf.size * 3 // 4 if leaf.encoding == "base64" else leaf.size


class _Plain:
    def feed(self, data: bytes) -> bytes:
        return data

    def close(self) -> bytes:
        return b""


class _Base64:
    """base64 across chunk boundaries: whole groups of four decoded, the rest kept."""

    def __init__(self):
        self.rest = b""

    def feed(self, data: bytes) -> bytes:
        data = self.rest + re.sub(rb"[^A-Za-z0-9+/=]", b"", data)
        whole = len(data) - len(data) % 4
        self.rest = data[whole:]
        return _b64(data[:whole])

    def close(self) -> bytes:
        if not self.rest:
            return b""
        return _b64(self.rest + b"=" * (-len(self.rest) % 4))


def _b64(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        # Padding in the middle (several encoded pieces run together): piece by piece.
        out = []
        for piece in re.findall(rb"[A-Za-z0-9+/]+=*", data):
            with contextlib.suppress(binascii.Error):
                out.append(binascii.a2b_base64(piece + b"=" * (-len(piece) % 4)))
        return b"".join(out)


class _QuotedPrintable:
    """quoted-printable across chunk boundaries: whole lines decoded, the last kept."""

    def __init__(self):
        self.rest = b""

    def feed(self, data: bytes) -> bytes:
        data = self.rest + data
        cut = data.rfind(b"\n") + 1
        self.rest = data[cut:]
        return binascii.a2b_qp(data[:cut])

    def close(self) -> bytes:
        rest, self.rest = self.rest, b""
        return binascii.a2b_qp(rest)


def _decoder(encoding: str):
    if encoding == "base64":
        return _Base64()
    if encoding == "quoted-printable":
        return _QuotedPrintable()
    return _Plain()
