"""Hostile and odd messages, as raw bytes, each with what the app must do with it.

Written by hand, byte by byte, because the point is what mail clients and the stdlib's
generator never produce: file names that are paths or clean to nothing, raw 8-bit
headers, broken MIME, Message-ID collisions, absurd sizes and depths. Everything is
deterministic (fixed dates, seeded bytes), and cheap to build but for the 50 MB message,
which `huge_message` builds once per process.

Each `Hostile` says what a demanding user expects once it is synced:
- stored: always, once per server copy; an exact copy in another folder is the same
  email, a different message is never merged into another;
- `problem`: stored, but not as it came (a limit, a broken structure): `Email.problem` is
  set, its original is kept and its notes say why (one of the `why` words);
- `collides_with`: shares its Message-ID with that other message; both are kept and the
  notes of one at least say so; a message with no problem and no collision has no notes;
- what must be findable: the subject (decoded), the text snippets (in this order), the
  attachments' names as the sender wrote them, after decoding.

tests/test_hostile_corpus.py appends them to the suite's Dovecot and checks all of that.
"""

import base64
import functools
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

# The words a note may use to say why; any one of them will do, case-insensitively.
WHY_STRUCTURE = ("boundary", "structure", "broken", "malformed", "damaged", "invalid")
WHY_ENCODING = ("base64", "decod", "encod", *WHY_STRUCTURE)
WHY_DEPTH = ("depth", "deep", "nest", "level")
WHY_SIZE = ("size", "large", "limit", "MB")
WHY_PARTS = ("parts", "limit")
WHY_HEADER = ("header", "subject", "encoded", "long", "limit")
WHY_MESSAGE_ID = ("message-id",)


@dataclass(frozen=True)
class Hostile:
    id: str
    raw: bytes
    subject: str  # as the email must show it, decoded
    subject_is_prefix: bool = False  # a huge subject: it must start with this
    texts: tuple[str, ...] = ()  # in the stored text (or HTML), in this order
    # Display names, as the sender wrote them (None: a limit decides which are listed).
    attachments: tuple[str, ...] | None = ()
    problem: bool = False  # Email.problem set, original kept, notes say why
    why: tuple[str, ...] = ()
    from_name: str | None = None
    to_names: tuple[str, ...] | None = None
    # An email of its own although it shares its Message-ID with this message; the
    # collision is noted on one of the two at least (which one is not promised).
    collides_with: str = ""
    # A message a limit may or may not apply to (the 50 MB one): stored whole with no
    # note, or its attachments listed without files and the email noted (WHY_SIZE).
    limit_optional: bool = False


def _hostile(key: str, raw: bytes, **expected) -> Hostile:
    """A message whose subject is "Hostile <key>", as most of them have."""
    return Hostile(id=key, raw=raw, subject=f"Hostile {key}", **expected)


CRLF = b"\r\n"
_BASE_DATE = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
_SENDER = "Hostile Sender <hostile@sender.test>"
_TO = "alice@example.test"


def _date(minutes: int) -> str:
    return format_datetime(_BASE_DATE + timedelta(minutes=minutes))


def _bytes(value: str | bytes) -> bytes:
    # str: written as raw UTF-8, which is exactly what some of these headers are about.
    return value.encode() if isinstance(value, str) else value


def _message(
    *headers: str | bytes,
    body: str | bytes = b"",
    message_id: str | None = "auto",
    key: str = "",
    minutes: int = 0,
    sender: str | bytes = _SENDER,
    to: str | bytes = _TO,
) -> bytes:
    """Headers (whole lines, without line ends) and a body, joined with CRLF; From, To,
    Date and a Message-ID derived from `key` unless given."""
    lines = [b"From: " + _bytes(sender), b"To: " + _bytes(to), b"Date: " + _date(minutes).encode()]
    if message_id == "auto":
        lines.append(f"Message-ID: <{key}@hostile.test>".encode())
    elif message_id:
        lines.append(f"Message-ID: {message_id}".encode())
    lines.append(b"MIME-Version: 1.0")
    lines += [_bytes(header) for header in headers]
    return CRLF.join(lines) + CRLF + CRLF + _bytes(body)


def _part(*headers: str | bytes, body: str | bytes) -> bytes:
    return CRLF.join(_bytes(h) for h in headers) + CRLF + CRLF + _bytes(body)


def _text_part(text: str, charset: str = "utf-8") -> bytes:
    return _part(
        f"Content-Type: text/plain; charset={charset}",
        "Content-Transfer-Encoding: 8bit",
        body=text.encode(charset) + CRLF,
    )


def _b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", CRLF)


def _attachment(disposition: str | bytes, data: bytes, content_type: str | bytes) -> bytes:
    """An attachment part; `disposition` and `content_type` are the whole header values,
    file name parameters included, written as given."""
    return _part(
        b"Content-Type: " + _bytes(content_type),
        "Content-Transfer-Encoding: base64",
        b"Content-Disposition: " + _bytes(disposition),
        body=_b64(data),
    )


def _multipart(
    boundary: str,
    parts: list[bytes],
    *,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    close: bool = True,
) -> bytes:
    """A multipart body: each part after its delimiter, the close delimiter unless told."""
    delimiter = b"--" + boundary.encode()
    body = preamble
    for part in parts:
        body += delimiter + CRLF + part + CRLF
    if close:
        body += delimiter + b"--" + CRLF
    return body + epilogue


def _multipart_part(subtype: str, boundary: str, parts: list[bytes], **options) -> bytes:
    return _part(
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"',
        body=_multipart(boundary, parts, **options),
    )


def _data(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def ordinary(key: str, minutes: int = 0) -> Hostile:
    """A plain message like most mail: it must come through untouched around the rest."""
    subject = f"Ordinary {key}"
    text = f"Ordinary text of {key}."
    raw = _message(
        f"Subject: {subject}",
        "Content-Type: text/plain; charset=us-ascii",
        body=text + "\r\n",
        key=key,
        minutes=minutes,
    )
    return Hostile(id=key, raw=raw, subject=subject, texts=(text,))


# -- attachment file names -------------------------------------------------------------

# (id, the Content-Disposition as written, the name as the sender meant it)
_NAMES: list[tuple[str, str | bytes, str]] = [
    ("name-unix-path", 'attachment; filename="/home/user/scan.jpg"', "/home/user/scan.jpg"),
    # Backslashes quoted as RFC 2045's quoted-string wants them.
    ("name-windows-path", r'attachment; filename="C:\\Users\\x\\a.pdf"', "C:\\Users\\x\\a.pdf"),
    ("name-dotdot", 'attachment; filename=".."', ".."),
    ("name-bangs", 'attachment; filename="!!!"', "!!!"),
    ("name-star", "attachment; filename*=UTF-8''%E2%98%85", "★"),
    # RFC 2047 inside a quoted string: wrong by the RFCs, and what many clients send.
    ("name-emoji", 'attachment; filename="=?UTF-8?B?8J+YgA==?="', "😀"),
    ("name-parens", 'attachment; filename="()"', "()"),
    (
        "name-control",
        "attachment; filename*=UTF-8''report%00%07%1B%7F.txt",
        "report\0\x07\x1b\x7f.txt",
    ),
    (
        "name-rfc2231",
        "attachment; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20aus%20M%C3%BCnchen.pdf",
        "Grüße aus München.pdf",
    ),
    (
        "name-rfc2231-continued",
        "attachment;\r\n filename*0*=UTF-8''Angebot%20f%C3%BCr%20;"
        "\r\n filename*1*=M%C3%BCller%20%26%20S%C3%B6hne.pdf",
        "Angebot für Müller & Söhne.pdf",
    ),
    (
        "name-rfc2231-latin1",
        "attachment; filename*=iso-8859-1'de'Pr%E4sentation%20%DCbersicht.pdf",
        "Präsentation Übersicht.pdf",
    ),
    ("name-raw-utf8", 'attachment; filename="Übersicht März.xlsx"', "Übersicht März.xlsx"),
]
_LONG_NAME = ("Quarterly report for the board, final version, with all appendices " * 5)[:296]
_NAMES.append(("name-300-chars", f'attachment; filename="{_LONG_NAME}.pdf"', f"{_LONG_NAME}.pdf"))


def _named(key: str, disposition: str | bytes, name: str, content_type: str | bytes) -> Hostile:
    text = f"The file for {key} is attached."
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_names"',
        body=_multipart(
            "=_names",
            [_text_part(text), _attachment(disposition, _data(key, 2_000), content_type)],
        ),
        key=key,
    )
    return _hostile(key, raw, texts=(text,), attachments=(name,))


def file_names() -> list[Hostile]:
    messages = [
        _named(key, disposition, name, "application/octet-stream")
        for key, disposition, name in _NAMES
    ]
    # The name only in Content-Type (Outlook's habit), RFC 2047-encoded, no disposition.
    key = "name-in-content-type"
    text = f"The file for {key} is attached."
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_ct"',
        body=_multipart(
            "=_ct",
            [
                _text_part(text),
                _part(
                    'Content-Type: application/pdf; name="=?UTF-8?Q?K=C3=BCndigung.pdf?="',
                    "Content-Transfer-Encoding: base64",
                    body=_b64(_data(key, 1_500)),
                ),
            ],
        ),
        key=key,
    )
    messages.append(_hostile(key, raw, texts=(text,), attachments=("Kündigung.pdf",)))
    # A raw latin-1 name in a message whose text declares ISO-8859-1: not UTF-8, so the
    # declared (or a detected) charset decides.
    key = "name-raw-latin1"
    text = f"Die Datei für {key} hängt an."
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_l1"',
        body=_multipart(
            "=_l1",
            [
                _text_part(text, charset="iso-8859-1"),
                _attachment(
                    'attachment; filename="Pr\xe4sentation.pdf"'.encode("latin-1"),
                    _data(key, 1_000),
                    "application/pdf",
                ),
            ],
        ),
        key=key,
    )
    messages.append(
        _hostile(
            key,
            raw,
            texts=(text,),
            attachments=("Präsentation.pdf",),
        )
    )
    return messages


# -- raw 8-bit headers -----------------------------------------------------------------


def raw_headers() -> list[Hostile]:
    key = "utf8-headers"
    subject = f"été — Grüße aus Köln [{key}]"
    text = "Schöne Grüße aus Köln, utf8-headers-body."
    utf8 = _message(
        f"Subject: {subject}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        body=text + "\r\n",
        key=key,
        sender="Jürgen Groß <j@x.test>",
        to='"Zoë Dupré" <zoe@x.test>, Åsa Öberg <asa@y.test>',
    )
    key = "latin1-headers"
    latin1 = _message(
        f"Subject: Grüße aus Köln [{key}]".encode("latin-1"),
        "Content-Type: text/plain; charset=iso-8859-1",
        "Content-Transfer-Encoding: 8bit",
        body="Schöne Grüße, latin1-headers-body.\r\n".encode("latin-1"),
        key=key,
        sender="Jürgen Müller <jm@x.test>".encode("latin-1"),
        to="Zoë Dupré <zoe@x.test>".encode("latin-1"),
    )
    return [
        Hostile(
            id="utf8-headers",
            raw=utf8,
            subject=subject,
            texts=(text,),
            from_name="Jürgen Groß",
            to_names=("Zoë Dupré", "Åsa Öberg"),
        ),
        Hostile(
            id="latin1-headers",
            raw=latin1,
            subject="Grüße aus Köln [latin1-headers]",
            texts=("Schöne Grüße, latin1-headers-body.",),
            from_name="Jürgen Müller",
            to_names=("Zoë Dupré",),
        ),
    ]


# -- text in every part ----------------------------------------------------------------


def _forwarded() -> Hostile:
    inner = _message(
        "Subject: The original question",
        'Content-Type: multipart/mixed; boundary="=_inner"',
        body=_multipart(
            "=_inner",
            [
                _text_part("forward-inner-text: the original message's own words."),
                _attachment(
                    'attachment; filename="inner-contract.pdf"',
                    _data("inner", 3_000),
                    "application/pdf",
                ),
            ],
        ),
        key="forwarded-inner",
        sender="Olga Original <olga@elsewhere.test>",
        minutes=-600,
    )
    raw = _message(
        "Subject: Fwd: The original question [forwarded]",
        'Content-Type: multipart/mixed; boundary="=_outer"',
        body=_multipart(
            "=_outer",
            [
                _text_part("forward-outer-text: see the message below."),
                _part(
                    "Content-Type: message/rfc822",
                    'Content-Disposition: attachment; filename="Original message.eml"',
                    body=inner,
                ),
            ],
        ),
        key="forwarded",
    )
    return Hostile(
        id="forwarded",
        raw=raw,
        subject="Fwd: The original question [forwarded]",
        texts=("forward-outer-text", "forward-inner-text"),
        attachments=("inner-contract.pdf",),
    )


def _digest() -> Hostile:
    # In a digest a part without Content-Type is a message/rfc822 (RFC 2046 5.1.5).
    entries = [
        _message(
            f"Subject: Digest entry {number}",
            "Content-Type: text/plain; charset=us-ascii",
            body=f"digest-entry-{number}-text\r\n",
            key=f"digest-entry-{number}",
            sender=f"Member {number} <member{number}@list.test>",
        )
        for number in (1, 2, 3)
    ]
    raw = _message(
        "Subject: Partners list digest, Vol 7, Issue 3 [digest]",
        'Content-Type: multipart/mixed; boundary="=_list"',
        body=_multipart(
            "=_list",
            [
                _text_part("digest-intro-text: today's topics."),
                # Each entry: no headers of its own (a blank line), then the message.
                _multipart_part("digest", "=_digest", [CRLF + entry for entry in entries]),
            ],
        ),
        key="digest",
    )
    return Hostile(
        id="digest",
        raw=raw,
        subject="Partners list digest, Vol 7, Issue 3 [digest]",
        texts=(
            "digest-intro-text",
            "digest-entry-1-text",
            "digest-entry-2-text",
            "digest-entry-3-text",
        ),
    )


def _nested() -> Hostile:
    related = _multipart_part(
        "related",
        "=_rel",
        [
            _part(
                "Content-Type: text/html; charset=utf-8",
                body="<p>nested-html-text <img src=cid:logo@x></p>\r\n",
            ),
            _part(
                "Content-Type: image/png",
                "Content-Transfer-Encoding: base64",
                "Content-ID: <logo@x>",
                'Content-Disposition: inline; filename="logo.png"',
                body=_b64(_data("logo", 800)),
            ),
        ],
    )
    alternative = _multipart_part(
        "alternative", "=_alt", [_text_part("nested-plain-text at the top."), related]
    )
    deepest = _multipart_part(
        "mixed",
        "=_deepest",
        [
            _attachment('attachment; filename="deep.txt"', b"deep file\r\n", "text/plain"),
            _text_part("nested-deepest-text, after a file three levels down."),
        ],
    )
    deeper = _multipart_part(
        "mixed", "=_deeper", [_text_part("nested-deeper-text in the second branch."), deepest]
    )
    raw = _message(
        "Subject: Hostile nested multiparts",
        'Content-Type: multipart/mixed; boundary="=_top"',
        body=_multipart("=_top", [alternative, deeper]),
        key="nested",
    )
    return Hostile(
        id="nested",
        raw=raw,
        subject="Hostile nested multiparts",
        texts=("nested-plain-text", "nested-deeper-text", "nested-deepest-text"),
        attachments=("logo.png", "deep.txt"),
    )


def _mime_deep(levels: int = 1_000) -> Hostile:
    """Multiparts nested `levels` deep: a nesting limit must stop reading, with a note,
    and the text above the nest still shows."""
    body = _text_part("deep-mime-bottom-text")
    for level in range(levels, 0, -1):
        body = _multipart_part("mixed", f"=_lvl{level}", [body])
    raw = _message(
        "Subject: Hostile multiparts 1000 deep",
        'Content-Type: multipart/mixed; boundary="=_top"',
        body=_multipart("=_top", [_text_part("deep-mime-top-text above the nest."), body]),
        key="mime-deep-1000",
    )
    return Hostile(
        id="mime-deep-1000",
        raw=raw,
        subject="Hostile multiparts 1000 deep",
        texts=("deep-mime-top-text",),
        problem=True,
        why=WHY_DEPTH,
    )


def text_structures() -> list[Hostile]:
    key = "text-after-attachment"
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_after"',
        body=_multipart(
            "=_after",
            [
                _text_part("before-attachment-text: the scan is attached."),
                _attachment(
                    'attachment; filename="scan.pdf"', _data(key, 4_000), "application/pdf"
                ),
                _text_part("after-attachment-text: and here is what I forgot to say."),
            ],
        ),
        key=key,
    )
    after = _hostile(
        key,
        raw,
        texts=("before-attachment-text", "after-attachment-text"),
        attachments=("scan.pdf",),
    )
    return [after, _forwarded(), _digest(), _nested(), _mime_deep()]


# -- broken structures -----------------------------------------------------------------


def broken_structures() -> list[Hostile]:
    messages = []
    key = "broken-no-closing"
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_open"',
        body=_multipart(
            "=_open",
            [
                _text_part("unclosed-first-text"),
                _attachment(
                    'attachment; filename="unclosed.pdf"', _data(key, 2_000), "application/pdf"
                ),
                _text_part("unclosed-last-text, and no closing delimiter follows"),
            ],
            close=False,
        ),
        key=key,
    )
    messages.append(
        _hostile(
            key,
            raw,
            texts=("unclosed-first-text", "unclosed-last-text"),
            attachments=("unclosed.pdf",),
            problem=True,
            why=WHY_STRUCTURE,
        )
    )

    # The delimiter before the last part has a typo: that part reads as the end of the
    # base64 attachment above it.
    key = "broken-boundary-typo"
    body = _multipart(
        "=_b1",
        [
            _text_part("typo-first-text"),
            _attachment('attachment; filename="typo.pdf"', _data(key, 2_000), "application/pdf")
            + CRLF
            + b"--=_b2"
            + CRLF
            + _text_part("typo-last-text after a mistyped delimiter"),
        ],
    )
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_b1"',
        body=body,
        key=key,
    )
    messages.append(
        _hostile(
            key,
            raw,
            texts=("typo-first-text", "typo-last-text"),
            attachments=("typo.pdf",),
            problem=True,
            why=WHY_STRUCTURE,
        )
    )

    key = "broken-base64"
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_liar"',
        body=_multipart(
            "=_liar",
            [
                _part(
                    "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: base64",
                    body="This part says base64 but is plain text: b64-liar-text.\r\n",
                ),
                _text_part("b64-neighbour-text, a sound part after it."),
            ],
        ),
        key=key,
    )
    messages.append(
        _hostile(
            key,
            raw,
            texts=("b64-liar-text", "b64-neighbour-text"),
            problem=True,
            why=WHY_ENCODING,
        )
    )

    key = "broken-epilogue"
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_epi"',
        body=_multipart(
            "=_epi",
            [_text_part("epilogue-first-text")],
            epilogue=b"epilogue-footer-text: a list footer put after the closing delimiter.\r\n",
        ),
        key=key,
    )
    messages.append(
        _hostile(
            key,
            raw,
            texts=("epilogue-first-text", "epilogue-footer-text"),
            problem=True,
            why=WHY_STRUCTURE,
        )
    )
    return messages


# -- identity --------------------------------------------------------------------------


def _plain(
    key: str, subject: str | bytes, text: str, *extra: str, message_id="auto", minutes: int = 0
) -> bytes:
    return _message(
        b"Subject: " + _bytes(subject),
        *extra,
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        body=text + "\r\n",
        message_id=message_id,
        key=key,
        minutes=minutes,
    )


def identities() -> list[Hostile]:
    """Message-ID collisions, messages without one that differ in little, exact copies."""
    messages = []
    for pair in ("collide-same-folder", "collide-across-folders"):
        message_id = f"<{pair}@reused.test>"
        for side, minutes in (("a", 0), ("b", 90)):
            key = f"{pair}-{side}"
            text = f"{key}-text: a different message under a reused Message-ID."
            messages.append(
                Hostile(
                    id=key,
                    raw=_plain(key, f"Hostile {key}", text, message_id=message_id, minutes=minutes),
                    subject=f"Hostile {key}",
                    texts=(text,),
                    why=WHY_MESSAGE_ID,
                    collides_with=f"{pair}-{'b' if side == 'a' else 'a'}",
                )
            )
    # No Message-ID; the same but for In-Reply-To (two identical one-line replies sent in
    # the same second, to two threads).
    for side in ("a", "b"):
        text = "Thanks, noted."
        raw = _plain(
            "noid-header",
            "Re: Hostile noid-header",
            text,
            f"In-Reply-To: <thread-{side}@partner.test>",
            message_id=None,
        )
        messages.append(
            Hostile(
                id=f"noid-header-{side}",
                raw=raw,
                subject="Re: Hostile noid-header",
                texts=(text,),
            )
        )
    # No Message-ID; the same headers, bodies that differ in one word.
    for side, word in (("a", "Monday"), ("b", "Tuesday")):
        text = f"The meeting is on {word} at ten."
        raw = _plain("noid-body", "Hostile noid-body", text, message_id=None)
        messages.append(
            Hostile(
                id=f"noid-body-{side}",
                raw=raw,
                subject="Hostile noid-body",
                texts=(text,),
            )
        )
    # No Message-ID; raw UTF-8 subjects that differ in one accent (é and è are two bytes
    # each: a fingerprint of the header's text with undecodable bytes replaced sees the
    # same "caf??" twice).
    for side, word in (("a", "café"), ("b", "cafè")):
        text = "Same body, subject differs in one accent."
        raw = _plain("noid-8bit", f"Hostile noid-8bit {word}", text, message_id=None)
        messages.append(
            Hostile(
                id=f"noid-8bit-{side}",
                raw=raw,
                subject=f"Hostile noid-8bit {word}",
                texts=(text,),
            )
        )
    # Put in two folders each by the test: one email each.
    key = "copy-with-id"
    messages.append(
        Hostile(
            id=key,
            raw=_plain(key, f"Hostile {key}", f"{key}-text"),
            subject=f"Hostile {key}",
            texts=(f"{key}-text",),
        )
    )
    key = "copy-no-id"
    messages.append(
        Hostile(
            id=key,
            raw=_plain(key, f"Hostile {key}", f"{key}-text", message_id=None),
            subject=f"Hostile {key}",
            texts=(f"{key}-text",),
        )
    )
    return messages


# -- odd bytes -------------------------------------------------------------------------


def odd_bytes() -> list[Hostile]:
    # NUL three ways: raw (Dovecot hands it out as 0x80, other servers as is), quoted-
    # printable =00 and an encoded word. PostgreSQL text holds no NUL: the app writes
    # U+FFFD for it, as for any undecodable byte (sync/parsing.py).
    nul = _message(
        "Subject: =?UTF-8?Q?Hostile_NUL_=00_in_the_subject?=",
        'Content-Type: multipart/mixed; boundary="=_nul"',
        body=_multipart(
            "=_nul",
            [
                _part(
                    "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit",
                    body=b"raw-before-nul\x00raw-after-nul\r\n",
                ),
                _part(
                    "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: quoted-printable",
                    body=b"qp-before-nul=00qp-after-nul\r\n",
                ),
            ],
        ),
        key="nul-bytes",
    )
    empty = _message("Subject: Hostile empty-body", key="empty-body")
    # Not even the blank line that ends the headers.
    only_headers = _message("Subject: Hostile headers-only", key="headers-only")[:-2]
    return [
        Hostile(
            id="nul-bytes",
            raw=nul,
            subject="Hostile NUL \ufffd in the subject",
            texts=("raw-before-nul", "raw-after-nul", "qp-before-nul", "qp-after-nul"),
        ),
        Hostile(id="empty-body", raw=empty, subject="Hostile empty-body"),
        Hostile(id="headers-only", raw=only_headers, subject="Hostile headers-only"),
    ]


def corpus() -> dict[str, Hostile]:
    """Every message of the quick corpus by id (not the heavy ones below)."""
    messages = (
        file_names()
        + raw_headers()
        + text_structures()
        + broken_structures()
        + identities()
        + odd_bytes()
    )
    found = {message.id: message for message in messages}
    assert len(found) == len(messages), "two hostile messages share an id"
    return found


# -- heavy: size, parts, depth, header cost ----------------------------------------------


@functools.cache
def huge_message(megabytes: int = 50) -> Hostile:
    """A message of about `megabytes` MB, nearly all of it one base64 attachment."""
    key = f"huge-{megabytes}mb"
    data = _data(key, megabytes * 1_000_000 * 3 // 4 - 2_000)
    text = "huge-message-text: the recording is attached."
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_huge"',
        body=_multipart(
            "=_huge",
            [
                _text_part(text),
                _attachment('attachment; filename="recording.wav"', data, "audio/wav"),
            ],
        ),
        key=key,
    )
    return _hostile(
        key,
        raw,
        texts=("huge-message-text",),
        attachments=("recording.wav",),
        limit_optional=True,
        why=WHY_SIZE,
    )


def many_parts(count: int = 10_000) -> Hostile:
    """`count` parts: a text, `count - 2` tiny files, a text. A parts limit must stop
    the files (not write 10,000 of them), with a note; the first text still shows."""
    key = f"parts-{count}"
    parts = [_text_part("many-parts-first-text")]
    parts += [
        _part(
            "Content-Type: text/plain; charset=us-ascii",
            f'Content-Disposition: attachment; filename="part-{number:05}.txt"',
            body=f"file {number}\r\n",
        )
        for number in range(1, count - 1)
    ]
    parts.append(_text_part("many-parts-last-text"))
    raw = _message(
        f"Subject: Hostile {key}",
        'Content-Type: multipart/mixed; boundary="=_many"',
        body=_multipart("=_many", parts),
        key=key,
    )
    return _hostile(
        key,
        raw,
        texts=("many-parts-first-text",),
        attachments=None,
        problem=True,
        why=WHY_PARTS,
    )


def deep_html(levels: int = 200_000) -> Hostile:
    """An HTML body `levels` <div>s deep (about 2.2 MB): sanitised once with a depth cap,
    noted, and the text before the nest still shows."""
    key = f"deep-html-{levels}"
    opening = b"".join(b"<div>" + (CRLF if n % 1000 == 999 else b"") for n in range(levels))
    closing = b"".join(b"</div>" + (CRLF if n % 1000 == 999 else b"") for n in range(levels))
    html = b"<html><body><p>deep-html-intro-text</p>" + CRLF + opening + b"deep-html-core"
    html += closing + b"</body></html>" + CRLF
    raw = _message(
        f"Subject: Hostile {key}",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        body=html,
        key=key,
    )
    return _hostile(
        key,
        raw,
        texts=("deep-html-intro-text",),
        problem=True,
        why=("html", *WHY_DEPTH),
    )


def encoded_words(count: int = 100_000) -> Hostile:
    """A Subject of `count` RFC 2047 encoded words (1.7 MB): decoded at a cost linear in
    its length, and cut with a note; the subject starts as the sender wrote it."""
    key = f"encoded-words-{count // 1000}k"
    words = b"\r\n ".join(b"=?UTF-8?B?w6k=?=" for _ in range(count))  # "é" each
    raw = _message(
        f"Subject: Hostile {key} ".encode() + words,
        "Content-Type: text/plain; charset=us-ascii",
        body=b"encoded-words-body-text\r\n",
        key=key,
    )
    return Hostile(
        id=key,
        raw=raw,
        subject=f"Hostile {key} " + "é" * 50,
        subject_is_prefix=True,
        texts=("encoded-words-body-text",),
        problem=True,
        why=WHY_HEADER,
    )


def heavy() -> dict[str, Hostile]:
    messages = [huge_message(), many_parts(), deep_html(), encoded_words()]
    return {message.id: message for message in messages}
