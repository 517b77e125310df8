"""Turning a raw RFC 822 message into what we store: fast, bounded, never failing, and
never losing text.

Parsing. compat32 messages, measured ~7x faster than `policy.default` on these machines
(../shared/notes/dovecot-and-imap.md) and tolerant of broken input. The stdlib parser
reads every body line by line in Python, the largest cost of a first sync; well-formed
MIME is therefore cut into its parts with `str.find` (C speed) and only the small header
blocks go through the stdlib's header code, building the same tree of compat32 messages
the stdlib would (`_fast_parse`). Anything unusual (bare CRs, missing boundaries, a
part's headers without their blank line, a delivery report, a message/* body that is
encoded) takes the stdlib's feed parser instead (`_stdlib_parse`); tests/test_parsing.py
checks that both paths give the same result. Both stop at `Limits.max_parts` parts and
treat a part nested deeper than `Limits.max_depth` as one unread leaf, so a message of
10,000 parts or 10,000 levels costs what its first 200 parts cost. Parameters are split
in one pass (the stdlib's `_parseparam` is quadratic in the semicolons inside quotes).

Reading (`_Reader`). Every part that is not an attachment, in order, becomes text:
parts after an attachment, attached messages (after a short "Forwarded message" header
block), digests, one version per multipart/alternative, preamble and epilogue text that
is more than the usual "This is a multi-part message in MIME format". HTML is sanitised
here, once (sync/sanitize.py), and the text of a part that came only as HTML is
extracted from it, so that search and reply quoting see everything. A broken structure
(parts after an early closing boundary, a malformed delimiter line, a boundary other
than the declared one, no parts at all, a body that is not what its headers say) is
read as well as it can be and noted: the problem is then INCOMPLETE, and the engine
keeps the original.

Headers. RFC 2047 encoded words are decoded in one linear pass (`decode_header` and
`make_header` are quadratic: 100,000 encoded words took ~10 s); raw 8-bit text in a
header (RFC 6532) is read as UTF-8 first, then in the charsets the message declares
(its own, then its text parts'), then as Windows-1252. Each header is read up to
`Limits.max_header_chars`, and at most `Limits.max_addresses` recipients are kept.
"""

import binascii
import codecs
import contextlib
import email
import email.charset
import email.errors
import email.feedparser
import email.policy
import functools
import hashlib
import html as html_lib
import mimetypes
import re
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

from .sanitize import MAX_DEPTH as MAX_HTML_DEPTH
from .sanitize import html_text, safe_html, text_html

MAX_BODY_CHARS = 2_000_000


@dataclass(frozen=True)
class Limits:
    """How much of one message is read. Past any of them the email is stored INCOMPLETE
    with a note naming the limit, and its original is kept, so nothing is lost."""

    max_parts: int = 200  # MIME parts read (system setting MaxMessageParts)
    max_depth: int = 20  # MIME nesting levels read (system setting MaxMimeDepth)
    max_body_chars: int = MAX_BODY_CHARS  # characters kept of the text, and of the HTML
    max_header_chars: int = 65_536  # characters read of any one header
    max_addresses: int = 1_000  # recipients kept, To and Cc together
    max_html_depth: int = MAX_HTML_DEPTH  # HTML elements nested deeper are flattened


DEFAULT_LIMITS = Limits()


@dataclass
class ParsedAttachment:
    name: str  # the sender's file name, for display only: never a path
    content_type: str
    data: bytes
    # The part's Content-ID without its angle brackets: the HTML shows it where it says
    # "cid:" and that (an inline image, a signature's logo) is no attachment to list.
    content_id: str = ""


# ParsedEmail.problem: the values of sync.models.Email.Problem.
UNREADABLE = "unreadable"  # could not be read: keep the original, show what little is known
INCOMPLETE = "incomplete"  # read in part (a limit, a broken structure): keep the original


@dataclass
class ParsedEmail:
    message_key: str
    message_id: str = ""
    subject: str = ""
    from_address: str = ""
    from_name: str = ""
    to: list[dict] = field(default_factory=list)
    cc: list[dict] = field(default_factory=list)
    sent_at: datetime | None = None
    text_body: str = ""
    html_body: str = ""  # already safe (sync/sanitize.py); remote images as they came
    in_reply_to: str = ""
    references: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    problem: str = ""  # "", UNREADABLE or INCOMPLETE
    notes: list[str] = field(default_factory=list)  # for people, one sentence each
    # The key an earlier version stored this message under, when it differs from
    # message_key (a message without Message-ID): look it up before storing anew.
    legacy_key: str = ""

    def addresses(self) -> set[str]:
        found = {self.from_address} | {a["address"] for a in self.to + self.cc}
        return {a for a in found if a}


# Character sets -------------------------------------------------------------------


def _latin1_holes(error: UnicodeDecodeError) -> tuple[str, int]:
    # The five bytes Windows-1252 leaves undefined read as ISO-8859-1 does.
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("mailsetup.latin1", _latin1_holes)

# Labels that mean a superset in practice (as browsers read them).
_UPGRADES = {"iso8859_1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030", "euc_kr": "cp949"}
# Codecs that turn text into something else, or cost more than linear time.
_REFUSED = {"idna", "punycode", "raw_unicode_escape", "unicode_escape", "undefined"}
# Seven-bit encodings of non-ASCII text: ASCII bytes do not mean ASCII text in them.
_SEVEN_BIT = re.compile(r"utf_7|iso2022|hz|utf_16|utf_32")


@functools.lru_cache(maxsize=512)
def _codec(label: str | None) -> str | None:
    """Python's codec for a MIME charset label, or None if there is none to use."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower().split("*", 1)[0]  # RFC 2231 language
    name = email.charset.ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED:
        return None
    codec = info.name.replace("-", "_")
    return _UPGRADES.get(codec, codec)


def _decode(data: bytes, codec: str) -> str:
    """`data` in `codec`, strictly (UnicodeDecodeError), except Windows-1252, which
    reads every byte."""
    if codec == "cp1252":
        return data.decode("cp1252", "mailsetup.latin1")
    return data.decode(codec)


def _text_of(data: bytes, *labels: str | None) -> str:
    """`data` in the first of `labels` that decodes it; Windows-1252 as the last resort."""
    for label in labels:
        codec = _codec(label)
        if codec is not None:
            try:
                return _decode(data, codec)
            except (UnicodeDecodeError, LookupError):
                continue
    return _decode(data, "cp1252")


def _bytes_of(text: str) -> bytes:
    # Parsed text holds the message's raw 8-bit bytes as surrogate escapes.
    return text.encode("utf-8", "surrogateescape")


def _raw_text(text: str, charsets: Sequence[str | None] = ()) -> str:
    """Header text as it came (RFC 6532): UTF-8 first, then the declared charsets."""
    if text.isascii():
        if "\x1b" in text:
            # ISO-2022 escapes (older Japanese mail): 7-bit bytes that are not ASCII text.
            seven_bit = [c for c in charsets if (_codec(c) or "").startswith("iso2022")]
            return _text_of(text.encode("ascii"), *seven_bit, "ascii") if seven_bit else text
        return text
    return _text_of(_bytes_of(text), "utf-8", *charsets)


# Headers ----------------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]*)\?([QqBb])\?([^?]*)\?=")


def _word_bytes(encoding: str, encoded: str) -> bytes | None:
    data = encoded.encode("ascii", "surrogateescape") if encoded.isascii() else _bytes_of(encoded)
    if encoding in "Qq":
        return binascii.a2b_qp(data, header=True)
    data += b"==="[: -len(data) % 4] if len(data) % 4 else b""
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return None


def _decode_words(value: str, charsets: Sequence[str | None]) -> str:
    """RFC 2047 in one pass. As `decode_header` + `make_header` read it: whitespace
    between two encoded words is dropped and adjacent words of one charset are joined
    before decoding (a character may be split across them); a space separates an
    encoded word from plain text next to it. A word that cannot be decoded stays as
    written."""
    tokens: list[tuple[str | None, str | bytes]] = []
    position = 0
    for found in _ENCODED_WORD.finditer(value):
        data = _word_bytes(found.group(2), found.group(3))
        if data is None:
            continue
        if found.start() > position:
            tokens.append((None, value[position : found.start()]))
        tokens.append((found.group(1).lower(), data))
        position = found.end()
    if position < len(value):
        tokens.append((None, value[position:]))
    pieces: list[str] = []
    run: list[bytes] = []
    run_charset: str | None = None
    after_word = False

    def flush() -> None:
        if run:
            pieces.append(_text_of(b"".join(run), run_charset, "utf-8", *charsets))
            run.clear()

    last = len(tokens) - 1
    for index, (charset, data) in enumerate(tokens):
        if charset is None:
            if after_word and data.isspace() and index < last and tokens[index + 1][0]:
                continue  # RFC 2047 6.2: only whitespace between two encoded words
            flush()
            text = _raw_text(data, charsets)
            if after_word and not text[:1].isspace():
                pieces.append(" ")
            pieces.append(text)
            after_word = False
        else:
            if run and charset != run_charset:
                flush()
            if not after_word and pieces and not pieces[-1][-1:].isspace():
                pieces.append(" ")
            run_charset = charset
            run.append(data)
            after_word = True
    flush()
    return "".join(pieces)


def header_text(value, charsets: Sequence[str | None] = ()) -> str:
    """A header's text for people: encoded words decoded, raw 8-bit text read as UTF-8
    (then `charsets`, then Windows-1252), whitespace folded. Linear in the input."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    if "=?" in value:
        value = _decode_words(value, charsets)
    elif not value.isascii() or "\x1b" in value:
        value = _raw_text(value, charsets)
    return " ".join(value.split())


def _legacy_header_text(value) -> str:
    """Header text as versions before 2026-12 read it: to find their keys."""
    if value is None:
        return ""
    if isinstance(value, str) and value.isascii() and "=?" not in value:
        return " ".join(value.split())
    try:
        text = str(make_header(decode_header(str(value))))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        text = str(value)
    return " ".join(text.split())


def _message_id(value: str) -> str:
    value = value.strip()
    if value.startswith("<") and ">" in value:
        value = value[1 : value.index(">")]
    return value.strip()[:490]


# Parameters -------------------------------------------------------------------------

_PARAM_TOKENS = re.compile(r'\\"|"|;')
_MAX_PARAM_CHARS = 16_384  # of a Content-Type or Content-Disposition, for its parameters


def _split_params(value: str) -> list[str]:
    """`email.message._parseparam(value)` in one pass: ";"-separated pieces, quotes
    respected, "name=value" with the name lowercased and both sides stripped."""
    pieces: list[str] = []
    start = 0
    quoted = False
    for found in _PARAM_TOKENS.finditer(value):
        mark = found.group()
        if mark == '"':
            quoted = not quoted
        elif mark == ";" and not quoted:
            pieces.append(value[start : found.start()])
            start = found.end()
    pieces.append(value[start:])
    params = []
    for piece in pieces:
        name, equals, rest = piece.partition("=")
        params.append(f"{name.strip().lower()}={rest.strip()}" if equals else piece.strip())
    return params


_OPAQUE = "application/x-mailsetup-unread"


class _Part(Message):
    """A compat32 message part. `opaque` marks one nested deeper than the limit: both
    parsers then read it as a single leaf, and nothing looks into it."""

    opaque = False
    _type: str | None = None

    def get_content_type(self) -> str:
        # Asked a dozen times per part by the parsers and the reader: remembered until a
        # header changes.
        if self.opaque:
            return _OPAQUE
        if self._type is None:
            self._type = super().get_content_type()
        return self._type

    def _changed(self) -> None:
        self._type = None
        self.__dict__.pop("_params", None)

    def set_raw(self, name, value):
        if self._type is not None or "_params" in self.__dict__:
            self._changed()
        super().set_raw(name, value)

    def __setitem__(self, name, value):
        self._changed()
        super().__setitem__(name, value)

    def __delitem__(self, name):
        self._changed()
        super().__delitem__(name)

    def add_header(self, *args, **kwargs):
        self._changed()
        super().add_header(*args, **kwargs)

    def replace_header(self, *args, **kwargs):
        self._changed()
        super().replace_header(*args, **kwargs)

    def set_default_type(self, ctype):
        self._changed()
        super().set_default_type(ctype)

    def _get_params_preserve(self, failobj, header):
        # The stdlib's version, with the linear splitter, and without its crashes on
        # hostile RFC 2231 continuations (a 5,000-digit index, "x*" beside "x*0").
        # Remembered per header value: the charset, boundary and file name are each
        # asked for more than once.
        value = self.get(header)
        if value is None:
            return failobj
        value = str(value)
        cache = self.__dict__.setdefault("_params", {})
        if (header, value) not in cache:
            cache[header, value] = self._params_of(value)
        return list(cache[header, value])

    @staticmethod
    def _params_of(value: str) -> list:
        params = []
        for piece in _split_params(value[:_MAX_PARAM_CHARS]):
            name, equals, rest = piece.partition("=")
            params.append((name.strip(), rest.strip()) if equals else (piece.strip(), ""))
        try:
            return email.utils.decode_params(params)
        except (ValueError, TypeError, LookupError, UnicodeError):
            return params


MAX_CONTENT_ID = 500


def content_id(value: str) -> str:
    """A Content-ID header's id (RFC 2392), as a `cid:` URL names it: inside its angle
    brackets, without folding white space; empty when there is none or it is too long
    to be one."""
    value = "".join(value.split())
    if value.startswith("<"):
        value = value[1 : value.index(">")] if ">" in value else value[1:]
    return value if len(value) <= MAX_CONTENT_ID else ""


def _first_raw(part: Message, name: str) -> str:
    """A header as it came (raw_items() without its copy of the list)."""
    for key, value in part._headers:
        if key.lower() == name:
            return value if isinstance(value, str) else str(value)
    return ""


_CONTINUATION = re.compile(r"\*(\d{1,3})(\*?)")


def _unquote(value: str) -> str:
    if value.startswith('"'):
        value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        value = re.sub(r"\\(.)", r"\1", value)
    return value


def _param_value(header: str, name: str, charsets: Sequence[str | None]) -> str:
    """A parameter's value (RFC 2045 quoted, RFC 2231 extended or continued, RFC 2047
    encoded words, raw 8-bit), decoded."""
    simple: str | None = None
    extended: str | None = None
    segments: dict[int, tuple[bool, str]] = {}
    for piece in _split_params(header[:_MAX_PARAM_CHARS])[1:]:
        key, equals, value = piece.partition("=")
        if not equals:
            continue
        if key == name:
            simple = _unquote(value) if simple is None else simple
        elif key == name + "*":
            extended = value if extended is None else extended
        elif key.startswith(name + "*"):
            found = _CONTINUATION.fullmatch(key[len(name) :])
            if found:
                segments.setdefault(int(found.group(1)), (bool(found.group(2)), value))
    if extended is not None:
        return _rfc2231([(True, extended)], charsets)
    if 0 in segments:
        ordered = []
        while len(ordered) in segments:
            ordered.append(segments[len(ordered)])
        return _rfc2231(ordered, charsets)
    return header_text(simple, charsets) if simple else ""


def _rfc2231(segments: list[tuple[bool, str]], charsets: Sequence[str | None]) -> str:
    charset = None
    data = bytearray()
    for index, (encoded, value) in enumerate(segments):
        value = _unquote(value)
        if encoded:
            if index == 0 and value.count("'") >= 2:
                charset, _language, value = value.split("'", 2)
            data += urllib.parse.unquote_to_bytes(_bytes_of(value))
        else:
            data += _bytes_of(value)
    return " ".join(_text_of(bytes(data), charset, "utf-8", *charsets).split())


# Identity ---------------------------------------------------------------------------

# Bookkeeping that mbox-based servers add to each copy of a message; a copy of the
# same message in another folder differs only there.
_BOOKKEEPING = re.compile(
    rb"(?im)^(?:status|x-status|x-keywords|x-uid|x-imap|x-imapbase|x-mozilla-status2?"
    rb"|content-length|lines):[^\n]*\n(?:[ \t][^\n]*\n)*"
)
_BOOKKEEPING_NAMES = re.compile(
    rb"(?im)^(?:status|x-status|x-keywords|x-uid|x-imap|x-imapbase|x-mozilla-status"
    rb"|content-length|lines)"
)


def fingerprint(raw: bytes) -> str:
    """The key of a message without Message-ID: a hash of all of it, headers and body,
    with line endings normalised, so that distinct messages never share a key while the
    same message in two folders (or from two servers' line endings) does."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    end = len(raw)
    while end and raw[end - 1] == 0x0A:  # a trailing line break some servers add
        end -= 1
    body = memoryview(raw)[:end]
    head_end = raw.find(b"\n\n", 0, end)
    head_end = end if head_end == -1 else head_end + 1
    digest = hashlib.sha256()
    head = raw[:head_end]
    if _BOOKKEEPING_NAMES.search(head):
        digest.update(_BOOKKEEPING.sub(b"", head))
    else:
        digest.update(head)
    digest.update(body[head_end:])
    return "fp:" + digest.hexdigest()[:40]


def legacy_fingerprint(raw: bytes, message: Message | None = None) -> str:
    """The key versions before 2026-12 gave a message without Message-ID (five headers
    as compat32 shows them, and the body); kept to find the emails they stored."""
    digest = hashlib.sha256()
    if message is not None:
        for name in ("date", "from", "to", "cc", "subject"):
            digest.update(
                name.encode() + b"\0" + str(message.get(name, "")).encode(errors="replace") + b"\0"
            )
    _head, _sep, body = raw.partition(b"\r\n\r\n")
    if not _sep:
        _head, _sep, body = raw.partition(b"\n\n")
    digest.update(body.replace(b"\r\n", b"\n"))
    return "fp:" + digest.hexdigest()[:40]


# Building the tree ------------------------------------------------------------------


class _Unusual(Exception):
    """The message is not plain well-formed MIME: leave it to the stdlib parser."""


class _PartsLimit(Exception):
    """Limits.max_parts parts were read: stop reading."""


class _Budget:
    """What reading one message may still cost, shared by every tree built for it."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.parts = 0
        self.parts_cut = False
        self.too_deep = False

    def entity(self, depth: int) -> bool:
        """Count a part about to be read (never the message itself); raise _PartsLimit
        when there are too many, and say whether it lies too deep to be read."""
        if self.parts >= self.limits.max_parts:
            self.parts_cut = True
            raise _PartsLimit
        self.parts += 1
        if depth > self.limits.max_depth:
            self.too_deep = True
            return True
        return False


_HEADER_BREAK = re.compile(r"\r?\n\r?\n")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# One scan that stops at the first bare CR, where counting "\r" and "\r\n" read the
# whole message twice: 0.16 s for 3,000 bench messages, this 0.06 s.
_BARE_CR = re.compile(r"\r(?!\n)")
_IDENTITY = {"", "7bit", "8bit", "binary"}


def _headers(head: str, default_type: str | None = None) -> _Part:
    """A header block read as the stdlib's feedparser reads it (the same lines, the same
    compat32 `header_source_parse`), without its line-by-line machinery."""
    part = _Part(policy=email.policy.compat32)
    if default_type:
        part.set_default_type(default_type)
    if not head:
        return part
    lines: list[str] = []
    for line in head.split("\n"):
        line += "\n"
        if line[0] in " \t":
            if not lines:
                raise _Unusual  # a continuation with nothing to continue
            lines.append(line)
            continue
        name, colon, _value = line.partition(":")
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise _Unusual  # not a header line: the stdlib would start the body here
        if lines:
            part.set_raw(*email.policy.compat32.header_source_parse(lines))
        lines = [line]
    part.set_raw(*email.policy.compat32.header_source_parse(lines))
    return part


def _split(text: str, start: int, end: int, default_type: str | None = None) -> tuple[_Part, int]:
    """The headers of the part in text[start:end], parsed by the stdlib, and where its
    body starts. Offsets, not slices: a 50 MB part is not copied on its way down."""
    if text.startswith("\n", start, end):
        return _headers("", default_type), start + 1
    if text.startswith("\r\n", start, end):
        return _headers("", default_type), start + 2
    found = _HEADER_BREAK.search(text, start, end)
    if found is None:
        raise _Unusual
    return _headers(text[start : found.start()], default_type), found.end()


def _delimiters(text: str, boundary: str, start: int, end: int):
    """(start, end, closing) of each `--boundary` line in text[start:end], as RFC 2046
    draws them: the line break before a delimiter belongs to it, not to the part above."""
    marker = "--" + boundary
    position = start
    while (found := text.find(marker, position, end)) != -1:
        position = found + len(marker)
        if found > start and text[found - 1] != "\n":
            continue
        closing = text.startswith("--", position, end)
        line_end = position + 2 if closing else position
        while line_end < end and text[line_end] in " \t":
            line_end += 1
        if line_end < end and text[line_end] not in "\r\n":
            continue  # "--boundaryX": another string that starts the same way
        line_end = text.find("\n", line_end, end)
        line_end = end if line_end == -1 else line_end + 1
        line_start = found
        if found > start:
            crlf = found - 2 >= start and text[found - 2 : found] == "\r\n"
            line_start -= 2 if crlf else 1
        yield line_start, line_end, closing
        position = line_end


def _cte(part: Message) -> str:
    value = str(part.get("content-transfer-encoding", ""))
    return value.split(";", 1)[0].strip().lower()


def _fill(part: _Part, text: str, start: int, end: int, depth: int, budget: _Budget) -> None:
    """Attach text[start:end], the part's body, to `part` as the stdlib would: its
    children, or its payload."""
    if part.opaque:
        part.set_payload(text[start:end])
        return
    maintype = part.get_content_maintype()
    if maintype == "message":
        if part.get_content_subtype() == "delivery-status" or _cte(part) not in _IDENTITY:
            raise _Unusual
        opaque = budget.entity(depth + 1)
        inner, inner_start = _split(text, start, end)
        inner.opaque = opaque
        part.attach(inner)
        _fill(inner, text, inner_start, end, depth + 1, budget)
        return
    if maintype != "multipart":
        # The body as the stdlib leaves it on a leaf, so decoding is the same.
        part.set_payload(text[start:end])
        return
    boundary = part.get_boundary()
    if not boundary:
        raise _Unusual
    default_type = "message/rfc822" if part.get_content_subtype() == "digest" else None
    previous_end = None
    for line_start, line_end, closing in _delimiters(text, boundary, start, end):
        if previous_end is None:
            if line_start > start:
                part.preamble = text[start:line_start]
        else:
            if line_start <= previous_end:
                raise _Unusual  # an empty part: the stdlib skips those
            opaque = budget.entity(depth + 1)
            child, child_start = _split(text, previous_end, line_start, default_type)
            child.opaque = opaque
            part.attach(child)
            _fill(child, text, child_start, line_start, depth + 1, budget)
        if closing:
            if previous_end is None:
                raise _Unusual  # closed before it opened
            part.epilogue = text[line_end:end]
            return
        previous_end = line_end
    raise _Unusual  # no closing delimiter


def _fast_parse(raw: bytes, budget: _Budget | None = None, depth: int = 0) -> _Part:
    """The message's tree, cut with `str.find`; raises _Unusual for anything but plain
    well-formed MIME."""
    budget = budget or _Budget(DEFAULT_LIMITS)
    text = raw.decode("ascii", "surrogateescape")
    if _BARE_CR.search(text) or text.startswith(("From ", ">From ")):
        raise _Unusual
    root, body_start = _split(text, 0, len(text))
    with contextlib.suppress(_PartsLimit):
        _fill(root, text, body_start, len(text), depth, budget)
    return root


class _BoundedParser(email.feedparser.BytesFeedParser):
    """The stdlib's feed parser, counting parts as it creates them: it stops at the
    limit, and a part nested too deep is read as one opaque leaf (no recursion)."""

    def __init__(self, budget: _Budget, depth: int) -> None:
        super().__init__(_factory=_Part, policy=email.policy.compat32)
        self._budget = budget
        self._depth = depth

    def _new_message(self) -> None:
        nesting = len(self._msgstack)
        opaque = bool(nesting) and self._budget.entity(self._depth + nesting)
        super()._new_message()
        self._cur.opaque = opaque


_FEED = 1 << 16


def _stdlib_parse(raw: bytes, budget: _Budget, depth: int = 0) -> _Part:
    parser = _BoundedParser(budget, depth)
    try:
        # Fed in slices, so that lines are split as they are read, not all at once.
        for start in range(0, len(raw), _FEED):
            parser.feed(raw[start : start + _FEED])
        return parser.close()
    except _PartsLimit:
        return parser._msgstack[0]


def _tree(raw: bytes, budget: _Budget, *, fast: bool, depth: int = 0) -> _Part:
    if fast:
        state = budget.parts, budget.parts_cut, budget.too_deep
        try:
            return _fast_parse(raw, budget, depth)
        # Whatever the fast path does not understand, the stdlib parser gets.
        except Exception:
            budget.parts, budget.parts_cut, budget.too_deep = state
    return _stdlib_parse(raw, budget, depth)


# Reading the tree -------------------------------------------------------------------


@dataclass
class _Unit:
    """One piece of the email's text, in order: its plain text, its safe HTML, or both;
    `native_html` when the sender wrote HTML for it."""

    text: str | None = None
    html: str | None = None
    native_html: bool = False

    def as_text(self) -> str:
        return self.text if self.text is not None else html_text(self.html or "")

    def as_html(self) -> str:
        return self.html if self.html is not None else text_html(self.text or "")


_TEXT_TYPES = {"text/plain", "text/html", "text/enriched"}
_FORWARDED = {"rfc822", "global", "news"}
_UNNAMED = {
    "text/calendar": "invite.ics",
    "text/rfc822-headers": "headers.txt",
    "application/pgp-signature": "signature.asc",
    "application/pkcs7-signature": "smime.p7s",
    "application/x-pkcs7-signature": "smime.p7s",
}
# "This is a multi-part message in MIME format." and its cousins.
_BOILERPLATE_CHARS = 500
_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(byte for byte in range(256) if byte not in _B64)
_B64_TEXT = _B64 + b"=\r\n\t "
_UUENCODED = {"x-uuencode", "uuencode", "uue", "x-uue"}
_DELIMITER_GUESS = re.compile(r"^--(\S{1,200})[ \t]*\r?\n(?i:content-)", re.MULTILINE)


def _parts_in(text: str, boundary: str) -> bool:
    """Whether `text` holds a delimiter line of `boundary` followed by a part's headers."""
    if "--" + boundary not in text:
        return False  # the usual case, without compiling a pattern for one boundary
    delimiter = "^--" + re.escape(boundary) + r"[ \t]*\r?\n(?i:content-)"
    return re.search(delimiter, text, re.MULTILINE) is not None


def _spoiled(boundary: str) -> str:
    """A line that starts as a delimiter of `boundary` and is followed by headers."""
    return "^--" + re.escape(boundary) + r"[^\r\n]*\r?\n(?=(?i:content-))"


# A delimiter line of some boundary followed by a part's headers.
_FOREIGN_DELIMITER = re.compile(r"^--(\S{1,200})[ \t]*\r?\n(?=(?i:content-))", re.MULTILINE)


def _unnamed(content_type: str) -> str:
    if content_type in _UNNAMED:
        return _UNNAMED[content_type]
    maintype, _slash, subtype = content_type.partition("/")
    if maintype == "message":
        return f"{subtype or 'message'}.txt"
    extension = mimetypes.guess_extension(content_type, strict=False) or ""
    return ("image" if maintype == "image" else "attachment") + extension


def _base64(data: bytes) -> tuple[bytes, str]:
    """Decoded base64, and "" / "damaged" / "not base64" (prose labelled base64, which
    is then returned as it came)."""
    junk = len(data.translate(None, _B64_TEXT))
    if (junk + data.count(b" ")) * 20 > len(data):
        return data, "not base64"
    try:
        return binascii.a2b_base64(data), "damaged" if junk else ""
    except binascii.Error:
        clean = data.translate(None, _NOT_B64)
        damaged = bool(junk) or len(clean) % 4 == 1
        if len(clean) % 4 == 1:
            clean = clean[:-1]
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4)), "damaged" if damaged else ""


def _uudecode(data: bytes) -> bytes:
    lines = iter(data.splitlines())
    for line in lines:
        if line.startswith(b"begin "):
            break
    else:
        return data
    decoded = []
    for line in lines:
        if not line or line.strip() == b"end":
            break
        try:
            decoded.append(binascii.a2b_uu(line))
        except binascii.Error:
            # Broken encoders write lines longer than their length byte says.
            try:
                decoded.append(binascii.a2b_uu(line[: (((line[0] - 32) & 63) * 4 + 5) // 3]))
            except binascii.Error:
                break
    return b"".join(decoded)


def _payload(part: Message) -> tuple[bytes, str]:
    """The part's body decoded from its transfer encoding, and any trouble doing it."""
    # The payload as parsed: a str holding raw 8-bit bytes as surrogate escapes
    # (get_payload() without decode would replace them).
    payload = part._payload
    if not isinstance(payload, str):
        return b"", ""
    data = payload.encode("ascii", "surrogateescape") if payload.isascii() else _bytes_of(payload)
    cte = _cte(part)
    if cte == "base64":
        return _base64(data)
    if cte == "quoted-printable":
        return binascii.a2b_qp(data), ""
    if cte in _UUENCODED:
        return _uudecode(data), ""
    return data, ""


class _Reader:
    """Walks a message's tree: its text in order (as `_Unit`s), its attachments, and
    notes on whatever could not be read as it should."""

    def __init__(self, limits: Limits, budget: _Budget, *, fast: bool) -> None:
        self.limits = limits
        self.budget = budget
        self.fast = fast
        self.notes: list[str] = []
        self.incomplete = False
        self.attachments: list[ParsedAttachment] = []
        self.charsets: list[str] = []  # declared by the message and its text parts
        self.html_chars = 0

    def note(self, text: str, *, incomplete: bool = True) -> None:
        if text not in self.notes:
            self.notes.append(text)
        self.incomplete = self.incomplete or incomplete

    def _charset(self, part: Message) -> str | None:
        charset = part.get_content_charset()
        if charset and charset not in self.charsets and len(self.charsets) < 8:
            self.charsets.append(charset)
        return charset

    def read(self, part: _Part, depth: int, out: list[_Unit]) -> None:
        if part.opaque:
            return  # noted once, from the budget
        if part._payload is None and part.get_content_maintype() in ("multipart", "message"):
            return  # the parts limit stopped the parser before its content
        if part.is_multipart():
            if part.get_content_maintype() == "message":
                self._message(part, part.get_payload(), depth, out)
            else:
                self._multipart(part, depth, out)
            return
        if part.get_content_maintype() == "multipart":
            self._broken(part, depth, out)
            return
        self._leaf(part, depth, out)

    def _multipart(self, part: _Part, depth: int, out: list[_Unit]) -> None:
        boundary = part.get_boundary() or ""
        self._outside(part.preamble, boundary, out)
        if part.get_content_subtype() == "alternative":
            self._alternative(part.get_payload(), depth, out)
        else:
            for child in part.get_payload():
                swallowed, swallowed_by = self._swallowed(child, boundary)
                self.read(child, depth + 1, out)
                if swallowed and '"' not in swallowed_by:
                    self._swallowed_parts(swallowed, swallowed_by, depth, out)
        self._unclosed(part)
        # Parts after the closing delimiter: a nested multipart that reuses its parent's
        # boundary closes the parent early, and the stdlib reads the rest as epilogue.
        epilogue = part.epilogue
        if epilogue and boundary and _parts_in(epilogue, boundary):
            # Read in one pass: the closing delimiters in it become plain ones, and one is
            # added at its end (reading it again after each closing delimiter cost time
            # in the square of their number).
            closing = re.compile("(?m)^--" + re.escape(boundary) + r"--(?=[ \t]*\r?$)")
            opened = closing.sub("--" + boundary, epilogue)
            tree = self._reread(
                f'multipart/mixed; boundary="{boundary}"',
                _bytes_of(f"{opened}\r\n--{boundary}--\r\n"),
                depth,
            )
            if tree.is_multipart():
                self.note(
                    "Parts of the email come after the boundary that closes them; they were "
                    "read as well."
                )
                self._outside(tree.preamble, boundary, out)
                for child in tree.get_payload():
                    self.read(child, depth + 1, out)
                epilogue = tree.epilogue
        self._outside(epilogue, boundary, out)

    def _swallowed(self, child: _Part, boundary: str) -> tuple[str, str]:
        """What a part swallowed, and the boundary to read it by: the parts after a
        delimiter line the parsers did not take for one. Either the line is spoiled by
        extra characters ("--b;"), or it names another boundary ("--b2", a typo) inside
        base64, which no delimiter-like line can belong to. The parts after it became
        this part's body (an attachment's, often, where their text would be lost); the
        part keeps what came before that line."""
        payload = child._payload
        if child.opaque or not isinstance(payload, str) or "\n--" not in payload:
            return "", ""  # (an unread part too deep holds its own delimiters)
        found = boundary and re.search(_spoiled(boundary), payload, re.MULTILINE)
        if found:
            swallowed_by = boundary
        else:
            if _cte(child) != "base64":
                return "", ""
            found = _FOREIGN_DELIMITER.search(payload)
            if found is None:
                return "", ""
            swallowed_by = found.group(1)
        token = found.group(0)[2:].split()[0]
        if re.search(r"boundary\s*=\s*\"?" + re.escape(token.removesuffix("--")), payload, re.I):
            return "", ""  # a boundary the part itself declares: an attached .eml, say
        child.set_payload(payload[: found.start()].removesuffix("\n").removesuffix("\r"))
        return payload[found.start() :], swallowed_by

    def _swallowed_parts(self, text: str, boundary: str, depth: int, out: list[_Unit]) -> None:
        # Followed by a part's headers, a spoiled line opens that part.
        repaired = re.sub(_spoiled(boundary), f"--{boundary}\r\n", text, flags=re.MULTILINE)
        tree = self._reread(
            f'multipart/mixed; boundary="{boundary}"',
            _bytes_of(f"{repaired}\r\n--{boundary}--\r\n"),
            depth,
        )
        if not tree.is_multipart():
            return
        self.note(
            "A line that should separate two parts of the email is malformed; the parts after "
            "it were read as well."
        )
        for child in tree.get_payload():
            self.read(child, depth + 1, out)

    def _unclosed(self, part: _Part) -> None:
        if any(isinstance(d, email.errors.CloseBoundaryNotFoundDefect) for d in part.defects):
            self.note(
                "The email ends before the boundary that closes its last part: it may have been "
                "cut short."
            )

    def _outside(self, text: str | None, boundary: str, out: list[_Unit]) -> None:
        """A preamble or epilogue: kept when it holds more than MIME boilerplate and
        stray delimiter lines."""
        if not text or text.isspace():
            return
        if boundary and boundary in text:
            text = re.sub("(?m)^--" + re.escape(boundary) + r"(?:--)?[ \t]*\r?$", "", text)
        text = _raw_text(text.strip(), self.charsets)
        if not text or (len(text) <= _BOILERPLATE_CHARS and "mime" in text.lower()):
            return
        self.note(
            "Part of the email's text lies outside its parts (before the first boundary or "
            "after the closing one), where mail programs may not show it; it is shown here."
        )
        out.append(_Unit(text=text))

    def _alternative(self, children: list, depth: int, out: list[_Unit]) -> None:
        """One version for the text (the plain one) and one for the HTML (the last
        HTML one); a version missing on either side is derived from the other."""
        first_attachment = len(self.attachments)
        versions = []
        for child in children:
            units: list[_Unit] = []
            self.read(child, depth + 1, units)
            if units:
                versions.append(units)
        self._deduplicate(first_attachment)
        if not versions:
            return
        html = next((v for v in reversed(versions) if any(u.native_html for u in v)), None)
        plain = next((v for v in reversed(versions) if not any(u.native_html for u in v)), None)
        if html is None or plain is None:
            out.extend(html or plain or [])
            return
        out.append(
            _Unit(
                text=_joined(u.as_text() for u in plain),
                html="\n".join(u.as_html() for u in html),
                native_html=True,
            )
        )

    def _deduplicate(self, start: int) -> None:
        # The same file in two versions of an alternative is one attachment.
        seen = set()
        kept = []
        for attachment in self.attachments[start:]:
            key = (attachment.name, attachment.content_type, attachment.data)
            if key not in seen:
                seen.add(key)
                kept.append(attachment)
        self.attachments[start:] = kept

    def _message(self, part: _Part, children: list, depth: int, out: list[_Unit]) -> None:
        """An attached message: its text after a short header block, its attachments."""
        subtype = part.get_content_subtype()
        inner = children[0] if children else None
        if subtype not in _FORWARDED:
            # delivery-status, disposition-notification, ...: machine-readable reports.
            data = _bytes_of("".join(_source(child) for child in children if not child.opaque))
            self._attach("", part.get_content_type(), data)
            return
        if inner is None or inner.opaque:
            return
        if _cte(part) in ("base64", "quoted-printable") and not inner.keys():
            # Encoded, which RFC 2046 forbids for message/rfc822 but some mailers do.
            data, _trouble = _payload(_encoded_as(inner, _cte(part)))
            try:
                inner = _tree(data, self.budget, fast=self.fast, depth=depth + 1)
            except Exception:  # read as the text it is, below
                inner = _Part()
                inner.set_payload(data.decode("ascii", "surrogateescape"))
        inner.is_message = True
        out.append(self._forward_header(inner))
        self.read(inner, depth + 1, out)

    def _forward_header(self, inner: Message) -> _Unit:
        lines = ["---------- Forwarded message ----------"]
        for label in ("From", "Date", "Subject", "To"):
            value = header_text(
                _first_raw(inner, label.lower())[: self.limits.max_header_chars], self.charsets
            )
            if value:
                lines.append(f"{label}: {value[:1000]}")
        markup = "<br>".join(html_lib.escape(line, quote=False) for line in lines)
        return _Unit(
            text="\n".join(lines),
            html=f'<div style="margin: 1em 0; color: #555">{markup}</div>',
        )

    def _broken(self, part: _Part, depth: int, out: list[_Unit]) -> None:
        """A multipart whose parts the parser could not find: decoded if it was encoded
        as a whole, split by the boundary its text uses if that is another one, else
        shown as text. Never nothing."""
        body = part._payload if isinstance(part._payload, str) else ""
        content_type = _first_raw(part, "content-type")[:_MAX_PARAM_CHARS]
        cte = _cte(part)
        if cte in ("base64", "quoted-printable"):
            data, _trouble = _payload(part)
            tree = self._reread(content_type, data, depth)
            if tree.is_multipart():
                self.note(
                    "The email's parts were encoded as a whole; they were decoded.",
                    incomplete=False,
                )
                self.read(tree, depth, out)
                return
        guess = Counter(_DELIMITER_GUESS.findall(body[: self.limits.max_body_chars]))
        boundary = max(guess, key=lambda b: (guess[b], len(b)), default=None)
        if boundary and '"' not in boundary and boundary != part.get_boundary():
            tree = self._reread(
                f'{part.get_content_type()}; boundary="{boundary}"', _bytes_of(body), depth
            )
            if tree.is_multipart():
                self.note(
                    "The email's parts are separated by another boundary than its headers "
                    "declare; they were read by the one found in its text."
                )
                self.read(tree, depth, out)
                return
        if not body.strip():
            return  # nothing to lose
        self.note(
            "The email's structure is broken: it says it has several parts, but they could not "
            "be told apart; its text is shown as it came."
        )
        data, _trouble = _payload(part)
        text = _text_of(data, "utf-8", self._charset(part), *self.charsets)
        if text.strip():
            out.append(_Unit(text=text))

    def _reread(self, content_type: str, body: bytes, depth: int) -> _Part:
        """`body` read again as a part of `content_type` (its parts counted as well)."""
        header = _bytes_of(f"Content-Type: {' '.join(content_type.split())}\r\n\r\n")
        try:
            tree = _tree(header + body, self.budget, fast=self.fast, depth=depth)
        except Exception:
            tree = _Part()  # read as text instead
        return tree

    def _leaf(self, part: _Part, depth: int, out: list[_Unit]) -> None:
        content_type = part.get_content_type()
        disposition = _first_raw(part, "content-disposition").split(";", 1)[0].strip().lower()
        charset = self._charset(part) if part.get_content_maintype() == "text" else None
        filename = ""
        for header, param in (("content-disposition", "filename"), ("content-type", "name")):
            value = _first_raw(part, header)
            if value and param in value.lower():
                filename = _param_value(value, param, (charset, *self.charsets))
                if filename:
                    break
        data, trouble = _payload(part)
        if filename or disposition == "attachment" or content_type not in _TEXT_TYPES:
            if trouble == "not base64":
                self.note(
                    f"The attachment {filename or content_type} is marked as base64-encoded but "
                    "is not; it is kept as it came."
                )
            elif trouble == "damaged":
                self.note(
                    f"The attachment {filename or content_type} is not valid base64; it was "
                    "decoded as far as possible and may be damaged."
                )
            self._attach(filename, content_type, data, content_id(_first_raw(part, "content-id")))
            return
        if trouble == "not base64":
            self.note(
                "A part of the email is marked as base64-encoded but is not; it is shown as it "
                "came."
            )
        elif trouble == "damaged":
            self.note("A part of the email has invalid base64; it was decoded as far as possible.")
        text = self._text(data, charset)
        if "\r\n" in text:
            text = text.replace("\r\n", "\n")  # stored with one kind of line break
        lead = self._stray_headers(part, depth)
        if lead:
            text = lead + text
        if not text.strip():
            return
        if content_type != "text/html":
            out.append(_Unit(text=text))
            return
        remaining = max(self.limits.max_body_chars - self.html_chars, 0)
        if len(text) > remaining:
            self._body_cut()
            if text.rfind("<", 0, remaining) > text.rfind(">", 0, remaining):
                remaining = text.rfind("<", 0, remaining)  # not inside a tag
            text = text[:remaining]
        safe, flattened = safe_html(text, max_depth=self.limits.max_html_depth)
        self.html_chars += len(safe)
        if flattened:
            self.note(
                f"The email's HTML nests more than {self.limits.max_html_depth} levels deep; "
                "the deeper levels were flattened to show it."
            )
        out.append(_Unit(html=safe, native_html=True))

    def _stray_headers(self, part: _Part, depth: int) -> str:
        """Body lines the parser took for headers: a part with no blank line after its
        headers whose first lines read "Word: ..." (the message's own headers are not
        looked at: they are its headers)."""
        if (
            not depth
            or getattr(part, "is_message", False)
            or not any(
                isinstance(d, email.errors.MissingHeaderBodySeparatorDefect) for d in part.defects
            )
        ):
            return ""
        lines = [
            f"{name}: {header_text(value, self.charsets)}\n"
            for name, value in part.raw_items()
            if not name.lower().startswith("content-") and name.lower() != "mime-version"
        ]
        if not lines:
            return ""
        self.note(
            "A part of the email is malformed (no blank line after its headers); its first "
            "lines may be shown out of place."
        )
        return "".join(lines)

    def _text(self, data: bytes, declared: str | None) -> str:
        """A text part's bytes as text. A wrong or unknown charset label is common and
        recovered from without a note, as browsers do: the declared charset, else UTF-8
        (valid UTF-8 by accident is rare), else the declared one with U+FFFD for the bytes
        it cannot read (a lone NUL that a server turned into 0x80), else Windows-1252."""
        codec = _codec(declared)
        if codec is None or codec == "ascii":
            # Undeclared, unknown or ASCII: 8-bit text is UTF-8 more often than not.
            if data.isascii():
                return data.decode("ascii")
            return _text_of(data, "utf-8", *self.charsets)
        if data.isascii() and not _SEVEN_BIT.match(codec):
            return data.decode("ascii")
        try:
            return _decode(data, codec)
        except (UnicodeDecodeError, LookupError):
            pass
        if codec != "utf_8":
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return data.decode(codec, "replace")

    def _attach(self, filename: str, content_type: str, data: bytes, cid: str = "") -> None:
        self.attachments.append(
            ParsedAttachment(
                name=(filename or _unnamed(content_type))[:1000],
                content_type=content_type[:255],
                data=data,
                content_id=cid,
            )
        )

    def _body_cut(self) -> None:
        self.note(
            f"The email's text is longer than {self.limits.max_body_chars:,} characters; the "
            "rest was not kept."
        )

    def bodies(self, units: list[_Unit]) -> tuple[str, str]:
        limit = self.limits.max_body_chars
        text = _joined(unit.as_text() for unit in units)
        if len(text) > limit:
            self._body_cut()
            text = text[:limit]
        html = ""
        if any(unit.native_html for unit in units):
            html = "\n".join(unit.as_html() for unit in units)
            if len(html) > limit:
                self._body_cut()
                # Cut after a tag, never inside one.
                html = html[: html.rfind(">", 0, limit) + 1]
        return text, html


def _source(part: Message) -> str:
    """A part written out again from its raw headers and payload (the stdlib's generator
    folds every header anew: 30x slower on a bounce's delivery-status blocks)."""
    head = "".join(f"{name}: {value}\n" for name, value in part._headers)
    payload = part._payload
    if isinstance(payload, list):
        return head + "\n" + "".join(_source(child) for child in payload)
    return head + "\n" + (payload if isinstance(payload, str) else "")


def _encoded_as(inner: Message, cte: str) -> Message:
    # An attached message's body that came encoded: the parser read it as a message
    # without headers; its payload is the encoded text.
    holder = Message()
    holder["Content-Transfer-Encoding"] = cte
    holder.set_payload(inner._payload if isinstance(inner._payload, str) else "")
    return holder


def _joined(texts) -> str:
    pieces: list[str] = []
    for text in texts:
        if not text or text.isspace():
            continue
        if pieces:
            pieces.append("\n" if pieces[-1].endswith("\n") else "\n\n")
        pieces.append(text)
    return "".join(pieces)


# The message ------------------------------------------------------------------------


def parse_message(raw: bytes, *, fast: bool = True, limits: Limits = DEFAULT_LIMITS) -> ParsedEmail:
    budget = _Budget(limits)
    try:
        message = _tree(raw, budget, fast=fast)
    # Any parser crash becomes a stored problem: a message is never dropped.
    except Exception as error:
        return ParsedEmail(
            message_key=fingerprint(raw),
            legacy_key=legacy_fingerprint(raw),
            problem=UNREADABLE,
            notes=[f"The message could not be read ({error!r}"[:480] + ")."],
        )
    try:
        return _without_nul(_parse(raw, message, budget, limits, fast=fast))
    except Exception as error:
        subject = ""
        with contextlib.suppress(Exception):
            subject = header_text(_first_raw(message, "subject")[: limits.max_header_chars])
        return _without_nul(
            ParsedEmail(
                message_key=fingerprint(raw),
                legacy_key=legacy_fingerprint(raw, message),
                subject=subject[:1000],
                problem=UNREADABLE,
                notes=[f"The message could not be read fully ({error!r}"[:480] + ")."],
            )
        )


def parse_safely(raw: bytes, limits: Limits | None = None) -> ParsedEmail:
    """parse_message never raises by design; should it still (a bug, a recursion limit),
    the message is stored as unreadable with its original instead of failing the run."""
    try:
        return parse_message(raw, limits=limits or DEFAULT_LIMITS)
    except Exception as error:
        return ParsedEmail(
            message_key=fingerprint(raw),
            problem=UNREADABLE,
            notes=[f"The message could not be read ({type(error).__name__}: {error})"[:500]],
        )


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _without_nul(parsed: ParsedEmail) -> ParsedEmail:
    """PostgreSQL text cannot hold NUL, which a quoted-printable body or an encoded
    header can decode to ("=00"): it becomes U+FFFD, as any undecodable byte does, so
    such a message stores like any other instead of failing its batch on every run."""
    for name in ("message_key", "message_id", "subject", "from_address", "from_name",
                 "text_body", "html_body", "in_reply_to", "references", "legacy_key"):  # fmt: skip
        setattr(parsed, name, _clean(getattr(parsed, name)))
    parsed.notes = [_clean(note) for note in parsed.notes]
    for people in (parsed.to, parsed.cc):
        for person in people:
            for key, value in person.items():
                if isinstance(value, str):
                    person[key] = _clean(value)
    for attachment in parsed.attachments:
        attachment.name = _clean(attachment.name)
        attachment.content_type = _clean(attachment.content_type)
    return parsed


_LABELS = {"to": "To", "cc": "Cc", "from": "From", "subject": "Subject",
           "references": "References", "message-id": "Message-ID"}  # fmt: skip


class _Headers:
    """The message's own headers, raw, each read up to the limit."""

    def __init__(self, message: Message, reader: _Reader) -> None:
        self.reader = reader
        self.limit = reader.limits.max_header_chars
        self.values: dict[str, list[str]] = {}
        for name, value in message.raw_items():
            self.values.setdefault(name.lower(), []).append(
                value if isinstance(value, str) else str(value)
            )

    def _capped(self, name: str, value: str) -> str:
        if len(value) > self.limit:
            self.reader.note(
                f"The {_LABELS.get(name, name)} header is longer than {self.limit:,} "
                "characters; only its beginning was read."
            )
            return value[: self.limit]
        return value

    def raw(self, name: str) -> str:
        values = self.values.get(name)
        return self._capped(name, values[0]) if values else ""

    def text(self, name: str) -> str:
        return header_text(self.raw(name), self.reader.charsets)

    def people(self, name: str, room: int) -> tuple[list[dict], bool]:
        values = [self._capped(name, v) for v in self.values.get(name, [])]
        found, cut = [], False
        for display, address in _addresses(values):
            if "@" not in address:
                continue
            if len(found) >= room:
                cut = True
                break
            found.append(
                {
                    "name": header_text(display, self.reader.charsets),
                    "address": _raw_text(address, self.reader.charsets).strip().lower(),
                }
            )
        return found, cut


# "Name <local@domain>" or "local@domain", nothing RFC 5322 makes harder (quotes,
# comments, groups, routes): most addresses, read without email.utils' character-by-
# character parser, which gives the same for these.
_SIMPLE_ADDRESS = re.compile(
    r"\s*+(?:([^<>@,]*?)\s*<([^<>@\s,]++@[^<>@\s,]++)>|([^<>@\s,]++@[^<>@\s,]++))\s*+"
)
_NOT_SIMPLE = re.compile(r'["()\\;:\[\]]')


def _simple_addresses(values: list[str]) -> list[tuple[str, str]] | None:
    found = []
    for value in values:
        if _NOT_SIMPLE.search(value):
            return None
        for entry in value.split(","):
            if not entry.strip():
                continue
            match = _SIMPLE_ADDRESS.fullmatch(entry)
            if match is None:
                return None
            name, address, bare = match.groups()
            found.append((" ".join(name.split()), address) if address else ("", bare))
    return found


def _addresses(values: list[str]) -> list[tuple[str, str]]:
    if not values:
        return []
    simple = _simple_addresses(values)
    if simple is not None:
        return simple
    try:
        found = getaddresses(values)
        if found == [("", "")]:
            # The strict reading refuses a whole header for one odd address.
            found = getaddresses(values, strict=False)
        return found
    except (RecursionError, ValueError, IndexError, TypeError):
        return []


def _sender(value: str, charsets: Sequence[str]) -> tuple[str, str]:
    simple = _simple_addresses([value])
    if simple is not None and len(simple) == 1:
        name, address = simple[0]
        address = _raw_text(address, charsets).strip().lower()
        return header_text(name, charsets), address
    try:
        name, address = parseaddr(value)
        if not address:
            name, address = parseaddr(value, strict=False)
    except (RecursionError, ValueError, IndexError, TypeError):
        return "", ""
    address = _raw_text(address, charsets).strip().lower()
    return header_text(name, charsets), address if "@" in address else ""


def _references(value: str) -> str:
    """At most 5,000 characters: the first Message-ID (the thread's start) and as many
    of the last ones (the nearest) as fit, as RFC 5322 suggests trimming."""
    if len(value) <= 5000:
        return value
    ids = value.split()
    kept = [ids[0]]
    room = 5000 - len(ids[0])
    tail = []
    for message_id in reversed(ids[1:]):
        room -= len(message_id) + 1
        if room < 0:
            break
        tail.append(message_id)
    return " ".join(kept + tail[::-1])[:5000]


def _parse(
    raw: bytes, message: _Part, budget: _Budget, limits: Limits, *, fast: bool
) -> ParsedEmail:
    reader = _Reader(limits, budget, fast=fast)
    reader._charset(message)  # the message's own declared charset comes first
    units: list[_Unit] = []
    reader.read(message, 0, units)
    if budget.parts_cut:
        reader.note(
            f"This email has more than {limits.max_parts:,} parts; only the first "
            f"{limits.max_parts:,} were read (system setting MaxMessageParts)."
        )
    if budget.too_deep:
        reader.note(
            f"This email nests parts more than {limits.max_depth} levels deep; the deeper "
            "parts were not read (system setting MaxMimeDepth)."
        )
    text_body, html_body = reader.bodies(units)

    headers = _Headers(message, reader)
    charsets = reader.charsets
    message_id = _message_id(headers.text("message-id"))
    from_name, from_address = _sender(headers.raw("from"), charsets)
    sent_at = None
    date = headers.raw("date")
    if date:
        try:
            sent_at = parsedate_to_datetime(date)
            if sent_at.tzinfo is None:
                sent_at = sent_at.replace(tzinfo=UTC)
        except (TypeError, ValueError, IndexError, OverflowError):
            sent_at = None
    to, to_cut = headers.people("to", limits.max_addresses)
    cc, cc_cut = headers.people("cc", limits.max_addresses - len(to))
    if to_cut or cc_cut:
        reader.note(
            f"This email names more than {limits.max_addresses:,} recipients; only the first "
            f"{limits.max_addresses:,} were kept."
        )
    subject = headers.text("subject")
    if len(subject) > 1000:
        reader.note("The subject is longer than 1,000 characters; the rest was not kept.")
    return ParsedEmail(
        message_key=message_id or fingerprint(raw),
        message_id=message_id,
        subject=subject[:1000],
        from_address=from_address[:254],
        from_name=from_name[:255],
        to=to,
        cc=cc,
        sent_at=sent_at,
        text_body=text_body,
        html_body=html_body,
        in_reply_to=_message_id(headers.text("in-reply-to")),
        references=_references(headers.text("references")),
        attachments=reader.attachments,
        problem=INCOMPLETE if reader.incomplete else "",
        notes=reader.notes,
        legacy_key=_legacy_key(raw, message, headers, message_id),
    )


def _legacy_key(raw: bytes, message: Message, headers: _Headers, message_id: str) -> str:
    """The key an earlier version gave this message, when it differs from today's."""
    value = headers.values.get("message-id", [""])[0]
    if message_id and value.isascii() and "=?" not in value:
        return ""  # read as before: the same key
    if len(value) > 4000:
        return ""  # earlier versions could not have read it in time either
    old_id = _message_id(_legacy_header_text(message.get("message-id")))
    if old_id == message_id and message_id:
        return ""
    return old_id or legacy_fingerprint(raw, message)
