from datetime import timedelta

from django.db.models import QuerySet
from django.utils import formats, timezone, translation

from sync.models import Email

from .message import QUOTE_LINES, html_to_text, language_of, quote_lines, text_to_html
from .models import OutgoingEmail


def outgoing_unsent(user) -> QuerySet[OutgoingEmail]:
    """The user's emails put on their way in the last week (written, or sent again)
    that are not (surely) sent: on their way, refused, or perhaps sent; but not one
    written again as a new email (that one is listed, if it is not sent). Shown on the
    Email page for a week."""
    return (
        OutgoingEmail.objects.filter(
            author=user,
            queued_at__gte=timezone.now() - timedelta(days=7),
            written_again_as=None,
        )
        .exclude(state=OutgoingEmail.State.SENT)
        .select_related("account")
        .defer("raw", "text_body")
    )


def _person(name: str, address: str) -> str:
    return f'"{name}" <{address}>' if name and '"' not in name else address


def written_again(outgoing, mailboxes: list) -> dict:
    """The compose form filled from an email written before (one that was not sent):
    its mailbox if the user may still send from it, its recipients, subject and text,
    and the email it answered or forwarded (`reply`, `mode`: quoted, threaded and its
    files forwarded as before, if the user may still see it; the caller checks). The
    files the user attached are not carried over (the page says so)."""

    def listed(people: list[dict]) -> str:
        return ", ".join(_person(p.get("name", ""), p["address"]) for p in people)

    sender = next((m for m in mailboxes if m.pk == outgoing.account_id), mailboxes[0])
    initial = {
        "sender": sender.pk, "to": listed(outgoing.to), "cc": listed(outgoing.cc),
        "bcc": listed(outgoing.bcc), "subject": outgoing.subject, "body": outgoing.text_body,
    }  # fmt: skip
    if outgoing.original_id is not None:
        return initial | {"reply": outgoing.original_id, "mode": outgoing.mode or "reply"}
    if outgoing.in_reply_to:
        # Written before the email it answers was kept with it, or that email deleted
        # since: found by its Message-ID, in the mailbox it was answered from.
        answered = (
            Email.objects.filter(account_id=outgoing.account_id, message_id=outgoing.in_reply_to)
            .values_list("pk", flat=True)
            .first()
        )
        if answered is not None:
            initial |= {"reply": answered, "mode": "reply"}
    return initial


def reply_recipients(original: Email, *, reply_all: bool, own: set[str]) -> tuple[str, str]:
    """To and Cc of a reply: the sender; for reply all, everyone else on the email too,
    never the user's own mailboxes."""
    to = [(original.from_name, original.from_address)]
    cc = []
    if reply_all:
        to += [(p.get("name", ""), p["address"]) for p in original.to]
        cc = [(p.get("name", ""), p["address"]) for p in original.cc]
    seen = set(own)

    def keep(people):
        kept = []
        for name, address in people:
            if address and address.lower() not in seen:
                seen.add(address.lower())
                kept.append(_person(name, address))
        return ", ".join(kept)

    return keep(to), keep(cc)


def _text(email: Email) -> str:
    return email.text_body or html_to_text(email.html_body)


def quote(original: Email, *, forward: bool, language: str = "") -> tuple[str, str]:
    """The original under a reply (quoted) or a forward (with its headers), as text and
    as HTML, introduced in the message language (its words and its way of writing a
    date); the HTML is built from the text, so nothing of the original's markup is
    sent on."""
    wrote, undated, forwarded, labels = quote_lines(language)
    sender_label, date_label, subject_label, to_label = labels
    # The date in the language of the words around it (English for one without them).
    words = language_of(language) if language_of(language) in QUOTE_LINES else "en"
    when = ""
    if original.sent_at:
        with translation.override(words):
            when = formats.date_format(
                timezone.localtime(original.sent_at), "DATETIME_FORMAT", use_l10n=True
            )
    sender = _person(original.from_name, original.from_address)
    text = _text(original)
    if forward:
        head = (
            f"---------- {forwarded} ----------\n"
            f"{sender_label}: {sender}\n{date_label}: {when}\n"
            f"{subject_label}: {original.subject}\n"
            f"{to_label}: {', '.join(p['address'] for p in original.to)}\n"
        )
        return f"{head}\n{text}", f"{text_to_html(head)}{text_to_html(text)}"
    head = wrote.format(when=when, sender=sender) if when else undated.format(sender=sender)
    quoted = "\n".join(f"> {line}" if line else ">" for line in text.splitlines())
    return f"{head}\n{quoted}", f"{text_to_html(head)}<blockquote>{text_to_html(text)}</blockquote>"


def forwarded_files(original: Email) -> tuple[list, list]:
    """What a forward of `original` carries, for its compose page to say: its
    attachments that go along, and those listed without a file (not downloaded: above
    the size limit), which cannot."""
    going, left = [], []
    for attachment in original.attachments.only("email_id", "name", "size", "file"):
        (going if attachment.file else left).append(attachment)
    return going, left


def forwarded_attachments(original: Email) -> list[tuple[str, str, bytes]]:
    files = []
    # One listed without a file (its message was above the size limit) cannot go along.
    for attachment in original.attachments.exclude(file=""):
        with attachment.file.open("rb") as handle:
            files.append((attachment.name, attachment.content_type, handle.read()))
    return files
