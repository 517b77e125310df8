"""The fast MIME path must read every message exactly as the stdlib parser does."""

import email
import email.errors
import email.policy
import re
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from sync.parsing import _fast_parse, _Unusual, header_text, parse_message

IMAGE_SUFFIXES = {".bmp", ".exr", ".gif", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".ras",
                  ".sgi", ".tiff", ".webp", ".xbm", ".aifc", ".aiff", ".au", ".wav"}  # fmt: skip


def _corpus(shared_dir):
    return [
        p
        for p in sorted((shared_dir / "corpora").rglob("*"))
        if p.is_file() and p.name not in {"LICENSE", "README.md"} and p.suffix not in IMAGE_SUFFIXES
    ]


def _crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def _takes_fast_path(raw: bytes) -> bool:
    try:
        _fast_parse(raw)
    except _Unusual:
        return False
    return True


def _business_message(number: int, *, attachment: bool, transfer: str = "") -> bytes:
    message = EmailMessage()
    message["Subject"] = f"Angebot Nr. {number} — Grüße aus München"
    message["From"] = "Jürgen Groß <jurgen@partner.test>"
    message["To"] = "Åsa Öberg <asa@example.test>, sam@example.test"
    message["Cc"] = "=?utf-8?q?Zo=C3=AB?= <zoe@example.test>"
    message["Date"] = "Mon, 23 Nov 2026 10:00:00 +0100"
    message["Message-ID"] = f"<{number}@bench.test>"
    text = "Grüße,\nlorem ipsum dolor sit amet\n" * (50 + number)
    kwargs = {"cte": transfer} if transfer else {}
    message.set_content(text, **kwargs)
    message.add_alternative(f"<p>{text}</p>", subtype="html", **kwargs)
    if attachment:
        message.add_attachment(
            bytes(range(256)) * 20, maintype="application", subtype="pdf", filename="Rechnung.pdf"
        )
        message.add_attachment("a,b\n1,2\n", subtype="csv", filename="Liste ü.csv")
    return message.as_bytes()


@pytest.mark.parametrize("transfer", ["", "quoted-printable", "base64", "8bit"])
@pytest.mark.parametrize("attachment", [False, True])
def test_it_reads_ordinary_mime_on_the_fast_path_as_the_stdlib_does(transfer, attachment):
    raw = _business_message(3, attachment=attachment, transfer=transfer)
    for variant in (raw, _crlf(raw)):
        assert _takes_fast_path(variant)
        fast = parse_message(variant)
        assert fast == parse_message(variant, fast=False)
        assert fast.subject == "Angebot Nr. 3 — Grüße aus München"
        assert "Grüße" in fast.text_body
        assert fast.html_body.startswith("<p>Grüße")
        assert [a.name for a in fast.attachments] == (
            ["Rechnung.pdf", "Liste ü.csv"] if attachment else []
        )


def test_it_reads_a_part_without_headers_and_a_preamble_and_epilogue():
    raw = (
        b"Subject: s\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"This is a preamble.\r\n--b1\r\n\r\nbare part, text/plain by default\r\n"
        b"--b1  \r\nContent-Type: text/html\r\n\r\n<b>x</b>\r\n--b1--\r\nepilogue\r\n"
    )
    assert _takes_fast_path(raw)
    parsed = parse_message(raw)
    assert parsed == parse_message(raw, fast=False)
    assert parsed.text_body == "bare part, text/plain by default"
    assert parsed.html_body == "<b>x</b>"


def test_it_does_not_mistake_a_longer_boundary_for_the_delimiter():
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nline\r\n--bX is not a boundary\r\n"
        b"--b--\r\n"
    )
    assert _takes_fast_path(raw)
    assert parse_message(raw) == parse_message(raw, fast=False)
    assert parse_message(raw).text_body == "line\r\n--bX is not a boundary"


@pytest.mark.parametrize(
    "raw",
    [
        # no closing delimiter
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\ntext\r\n',
        # a bare CR, which the stdlib reads as a line break
        b"Subject: a\rb\r\n\r\nbody\r\n",
        b"Subject: a\r\n\r\nbody\r",  # the last character
        # a line that is no header before the blank line
        b"Subject: s\r\nnot a header\r\n\r\nbody\r\n",
        # multipart without a boundary
        b"Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\ntext\r\n--b--\r\n",
        # two delimiters in a row (an empty part, which the stdlib skips)
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n--b\r\n\r\nx\r\n--b--\r\n',
        # no header break at all
        b"Subject: only headers",
    ],
)
def test_it_leaves_unusual_structure_to_the_stdlib_parser(raw):
    assert not _takes_fast_path(raw)
    assert parse_message(raw) == parse_message(raw, fast=False)


def test_it_leaves_an_attached_message_to_the_stdlib_parser():
    outer = MIMEMultipart()
    outer["Subject"] = "Fwd: inner"
    outer.attach(MIMEText("see below"))
    inner = MIMEText("the inner text")
    inner["Subject"] = "inner"
    outer.attach(MIMEMessage(inner))
    raw = outer.as_bytes()
    assert not _takes_fast_path(raw)
    assert parse_message(raw).text_body == "see below"


def test_it_agrees_with_the_stdlib_on_every_corpus_message(shared_dir):
    fast_path = 0
    corpus = _corpus(shared_dir)
    for path in corpus:
        for raw in (path.read_bytes(), _crlf(path.read_bytes())):
            fast_path += _takes_fast_path(raw)
            assert parse_message(raw) == parse_message(raw, fast=False), path
    # Most real messages are ordinary MIME; if this drops, the fast path went unused.
    assert fast_path > len(corpus)


def _header_text_through_decode_header(value) -> str:
    try:
        text = str(make_header(decode_header(str(value))))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        text = str(value)
    return " ".join(text.split())


def test_it_reads_every_corpus_header_as_decode_header_does(shared_dir):
    checked = 0
    for path in _corpus(shared_dir):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        for part in message.walk():
            for _name, value in part.items():
                assert header_text(value) == _header_text_through_decode_header(value), path
                checked += 1
    assert checked > 1000


@pytest.mark.parametrize(
    "part_headers",
    [
        b'Content-Type: application/pdf; NAME="offer.pdf"\r\n',
        b"Content-Type: application/pdf\r\nContent-Disposition: inline; filename=offer.pdf\r\n",
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
        b" filename*0=off; filename*1=er.pdf\r\n",
    ],
)
def test_it_finds_the_attachment_name_wherever_the_part_gives_it(part_headers):
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--b\r\n" + part_headers + b"\r\n"
        b"%PDF\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed == parse_message(raw, fast=False)
    assert [a.name for a in parsed.attachments] == ["offer.pdf"]
    assert parsed.text_body == "see attached"
