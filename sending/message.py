"""The message as it goes out: headers from checked values only, an HTML part with the
signature's images as cid: parts, a plain-text alternative, attachments."""

import base64
import html
import re
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from django.utils import timezone

# Reply and forward prefixes by message language; English for any other.
PREFIXES = {
    "de": ("AW:", "WG:"),
    "fr": ("RE :", "TR :"),
    "es": ("RE:", "RV:"),
    "it": ("R:", "I:"),
    "nl": ("Re:", "Doorst:"),
    "pt": ("RE:", "ENC:"),
    "pl": ("Odp:", "PD:"),
    "sv": ("SV:", "VB:"),
    "da": ("SV:", "VS:"),
    "nb": ("SV:", "VS:"),
    "fi": ("VS:", "VL:"),
    "cs": ("Re:", "Fwd:"),
    "ru": ("Re:", "Fwd:"),
    "uk": ("Re:", "Fwd:"),
}
# The lines that introduce a quoted email, by message language; English for any other:
# an answer's "On <date>, <sender> wrote:" (and without a date), a forward's first line,
# and its From, Date, Subject and To, as the common mail programs write them.
QUOTE_LINES = {
    "en": ("On {when}, {sender} wrote:", "{sender} wrote:",
           "Forwarded message", ("From", "Date", "Subject", "To")),
    "de": ("Am {when} schrieb {sender}:", "{sender} schrieb:",
           "Weitergeleitete Nachricht",
           ("Von", "Datum", "Betreff", "An")),
    "fr": ("Le {when}, {sender} a écrit :", "{sender} a écrit :",
           "Message transféré", ("De", "Date", "Objet", "À")),
    "es": ("El {when}, {sender} escribió:", "{sender} escribió:",
           "Mensaje reenviado",
           ("De", "Fecha", "Asunto", "Para")),
    "it": ("Il giorno {when} {sender} ha scritto:", "{sender} ha scritto:",
           "Messaggio inoltrato",
           ("Da", "Data", "Oggetto", "A")),
    "nl": ("Op {when} schreef {sender}:", "{sender} schreef:",
           "Doorgestuurd bericht",
           ("Van", "Datum", "Onderwerp", "Aan")),
    "pt": ("Em {when}, {sender} escreveu:", "{sender} escreveu:",
           "Mensagem encaminhada",
           ("De", "Data", "Assunto", "Para")),
    "pl": ("W dniu {when} {sender} napisał(a):", "{sender} napisał(a):",
           "Przekazana wiadomość",
           ("Od", "Data", "Temat", "Do")),
    "sv": ("Den {when} skrev {sender}:", "{sender} skrev:",
           "Vidarebefordrat meddelande",
           ("Från", "Datum", "Ämne", "Till")),
    "da": ("Den {when} skrev {sender}:", "{sender} skrev:",
           "Videresendt meddelelse",
           ("Fra", "Dato", "Emne", "Til")),
    "nb": ("{when} skrev {sender}:", "{sender} skrev:",
           "Videresendt melding", ("Fra", "Dato", "Emne", "Til")),
    "fi": ("{when} {sender} kirjoitti:", "{sender} kirjoitti:",
           "Välitetty viesti",
           ("Lähettäjä", "Päivämäärä", "Aihe", "Vastaanottaja")),
    "cs": ("Dne {when} {sender} napsal(a):", "{sender} napsal(a):",
           "Přeposlaná zpráva",
           ("Od", "Datum", "Předmět", "Komu")),
    "ru": ("{when}, {sender} пишет:", "{sender} пишет:",
           "Пересылаемое сообщение", ("От", "Дата", "Тема", "Кому")),
    "uk": ("{when} {sender} пише:", "{sender} пише:",
           "Переслане повідомлення", ("Від", "Дата", "Тема", "Кому")),
}  # fmt: skip


def quote_lines(language: str) -> tuple[str, str, str, tuple[str, str, str, str]]:
    return QUOTE_LINES.get(language_of(language), QUOTE_LINES["en"])


REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|vs|r|odp|antw)\s*(\[\d+\])?\s*:", re.IGNORECASE)
DATA_IMAGE = re.compile(
    r"""src=(["'])data:(image/(?:png|jpeg|gif|webp));base64,([A-Za-z0-9+/=\s]+)\1"""
)


def language_of(code: str) -> str:
    return (code or "en").split("-")[0].lower()


def prefixed(subject: str, *, forward: bool, language: str) -> str:
    """The subject of a reply or forward: the prefix in the message language, once."""
    reply_prefix, forward_prefix = PREFIXES.get(language_of(language), ("Re:", "Fwd:"))
    prefix = forward_prefix if forward else reply_prefix
    if not forward and REPLY_PREFIX.match(subject or ""):
        return subject
    return f"{prefix} {subject or ''}".strip()


# Where a block starts or ends, a line does (one, however many blocks meet there).
_BLOCK = re.compile(r"(?i)</?(?:p|div|li|h[1-6]|tr|blockquote|ul|ol|table|pre)\b[^>]*>")
_BOUNDARIES = re.compile(r"\x01(?:\s*\x01)*")


def html_to_text(markup: str) -> str:
    """A readable plain-text version of sanitised HTML (a signature, a quote). A block's
    start breaks the line too: an editor writes "Name<div>Title</div>", which read
    "NameTitle"."""
    text = re.sub(r"(?i)<br\s*/?>", "\n", markup.replace("\x01", ""))
    text = _BLOCK.sub("\x01", text)
    text = re.sub(r"(?i)<img[^>]*alt=(['\"])(.*?)\1[^>]*>", r"[\2]", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = _BOUNDARIES.sub("\n", text)
    text = html.unescape(text)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return "\n".join(lines).strip()


def text_to_html(text: str) -> str:
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "".join(
        f"<p>{html.escape(part).replace(chr(10), '<br>')}</p>" for part in paragraphs if part
    )


@dataclass
class Draft:
    """Everything the message is made of, already checked (see forms.ComposeForm)."""

    sender: str
    sender_name: str
    to: list[dict]
    cc: list[dict]
    subject: str
    text: str
    bcc: list[dict] = field(default_factory=list)
    signature_html: str = ""
    quote_text: str = ""
    quote_html: str = ""
    language: str = ""
    in_reply_to: str = ""
    references: str = ""
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)


def answer_headers(message_id: str, references: str) -> tuple[str, str]:
    """An answer's In-Reply-To and References (RFC 5322 3.6.4) to a message with this
    Message-ID (without its brackets) and References: the thread its replies keep."""
    bracketed = f"<{message_id}>" if message_id else ""
    return message_id, " ".join(filter(None, [references, bracketed]))


def new_message_id(sender: str) -> str:
    return make_msgid(domain=sender.rsplit("@", 1)[-1])[1:-1]


def _inline_images(markup: str, message_id: str) -> tuple[str, list[tuple[str, str, bytes]]]:
    """data: images become cid: references to related parts (mail clients show those;
    many block data: URLs)."""
    images = []

    def swap(match: re.Match) -> str:
        cid = f"img{len(images) + 1}.{message_id}"
        images.append((cid, match.group(2), base64.b64decode("".join(match.group(3).split()))))
        return f'src="cid:{cid}"'

    return DATA_IMAGE.sub(swap, markup), images


def _addresses(people: list[dict]) -> list[Address]:
    return [Address(display_name=p.get("name", ""), addr_spec=p["address"]) for p in people]


def _wide_addresses(people: list[dict]) -> str:
    """The header's text where an address has letters outside ASCII before the @ (RFC
    6532: the header is sent in UTF-8, through SMTPUTF8): the stdlib's Address refuses
    such a name, and an encoded word cannot hold an address."""

    def mailbox(person: dict) -> str:
        name = person.get("name", "").replace("\\", "\\\\").replace('"', '\\"')
        return f'"{name}" <{person["address"]}>' if name else person["address"]

    return ", ".join(mailbox(person) for person in people)


# A message whose addresses are all ASCII is written as before (7-bit headers, RFC 2047).
UTF8_SMTP = SMTP.clone(utf8=True)


def build(draft: Draft, *, message_id: str) -> bytes:
    sender = {"name": draft.sender_name, "address": draft.sender}
    wide = not all(p["address"].isascii() for p in [sender, *draft.to, *draft.cc])
    message = EmailMessage(policy=UTF8_SMTP) if wide else EmailMessage()
    people = _wide_addresses if wide else _addresses
    message["From"] = people([sender])
    message["To"] = people(draft.to)
    if draft.cc:
        message["Cc"] = people(draft.cc)
    message["Subject"] = draft.subject
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = f"<{message_id}>"
    if draft.in_reply_to:
        message["In-Reply-To"] = f"<{draft.in_reply_to}>"
    if draft.references:
        message["References"] = draft.references
    message["MIME-Version"] = "1.0"

    text = draft.text.rstrip()
    body_html = text_to_html(draft.text)
    if draft.signature_html:
        # "-- " on its own line: mail clients know what follows is a signature.
        text += "\n\n-- \n" + html_to_text(draft.signature_html)
        body_html += f'<div class="signature">{draft.signature_html}</div>'
    if draft.quote_text:
        text += "\n\n" + draft.quote_text
        body_html += draft.quote_html
    body_html, images = _inline_images(body_html, message_id)
    message.set_content(text + "\n")
    message.add_alternative(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>{body_html}</body></html>',
        subtype="html",
    )
    html_part = message.get_payload()[1]
    for cid, content_type, data in images:
        maintype, subtype = content_type.split("/")
        html_part.add_related(
            data, maintype, subtype, cid=f"<{cid}>", disposition="inline",
            filename=f"{cid.split('.')[0]}.{subtype}",
        )  # fmt: skip
    for name, content_type, data in draft.attachments:
        maintype, _, subtype = (content_type or "application/octet-stream").partition("/")
        message.add_attachment(data, maintype, subtype or "octet-stream", filename=name)
    if draft.language:
        # Last: the body's setters drop and move Content-* headers.
        message["Content-Language"] = draft.language
    return message.as_bytes(policy=UTF8_SMTP if wide else SMTP)


_DATE = re.compile(rb"^Date:[^\r\n]*\r?\n(?:[ \t][^\r\n]*\r?\n)*", re.MULTILINE | re.IGNORECASE)


def redated(raw: bytes, when) -> bytes:
    """The message with its Date header set to `when`, every other byte as it was: an
    email sent again days after it was written must not land in the past of the
    recipient's inbox (and spam filters count an old Date against it)."""
    end = raw.find(b"\r\n\r\n")
    end = len(raw) if end < 0 else end + 2
    head, body = raw[:end], raw[end:]
    line = f"Date: {format_datetime(when)}\r\n".encode()
    head, found = _DATE.subn(lambda _match: line, head, count=1)
    if not found:
        head = line + head
    return head + body
