from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import EmailAccount
from crm.services import contacts_link
from sharing.selectors import sendable_mailboxes
from sync.files import ATTACHMENTS, WrittenFiles, files_for_transaction
from sync.models import Attachment, Email

from .delivery import DeliveryError, copy_to_sent, deliver
from .message import Draft, build, new_message_id
from .models import OutgoingEmail

# A worker that died while sending leaves its claim; after this long another may retry,
# unless the message had already been handed over.
CLAIM_LEASE = timedelta(minutes=10)


class TransientSendError(Exception):
    """Worth another try later; the row is queued again."""


@transaction.atomic
def outgoing_create(*, author, account: EmailAccount, draft: Draft) -> OutgoingEmail:
    """Write the outgoing row (the exact message, built once) and queue its delivery."""
    from .tasks import send_email

    message_id = new_message_id(account.address)
    outgoing = OutgoingEmail.objects.create(
        account=account,
        author=author,
        to=draft.to,
        cc=draft.cc,
        bcc=draft.bcc,
        subject=draft.subject,
        text_body=draft.text,
        message_id=message_id,
        in_reply_to=draft.in_reply_to,
        references=draft.references,
        raw=build(draft, message_id=message_id),
    )
    send_email.delay_on_commit(outgoing.pk)
    return outgoing


def _claim(outgoing_id: int) -> bool:
    now = timezone.now()
    return bool(
        OutgoingEmail.objects.filter(
            Q(state=OutgoingEmail.State.QUEUED)
            | Q(
                state=OutgoingEmail.State.SENDING,
                handed_over_at__isnull=True,
                claimed_at__lt=now - CLAIM_LEASE,
            ),
            pk=outgoing_id,
        ).update(state=OutgoingEmail.State.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    )


def _finish(outgoing_id: int, **fields) -> None:
    OutgoingEmail.objects.filter(pk=outgoing_id).update(**fields)


def outgoing_send(*, outgoing_id: int, last_try: bool = False) -> OutgoingEmail | None:
    """Deliver a queued email once. Safe to run twice: only a queued row (or one whose
    sender died before handing the message over) is taken. Raises TransientSendError
    to be tried again later, unless this is the last try."""
    if not _claim(outgoing_id):
        stuck = OutgoingEmail.objects.filter(
            pk=outgoing_id, state=OutgoingEmail.State.SENDING, handed_over_at__isnull=False,
            claimed_at__lt=timezone.now() - CLAIM_LEASE,
        )  # fmt: skip
        # Its sender died after handing it over: nobody knows whether it went.
        stuck.update(state=OutgoingEmail.State.UNCERTAIN, error=UNCERTAIN_AFTER_CRASH)
        return None
    outgoing = OutgoingEmail.objects.select_related("account__provider", "author").get(
        pk=outgoing_id
    )
    account = outgoing.account
    # Rights are read now, not when the email was written: a revoked grant or a left
    # role stops it, as does turning sending off for the mailbox.
    if not (outgoing.author and sendable_mailboxes(outgoing.author).filter(pk=account.pk).exists()):
        _finish(
            outgoing_id, state=OutgoingEmail.State.FAILED,
            error=f"You may no longer send from {account.address}, so this email was not sent.",
        )  # fmt: skip
        return outgoing
    try:
        deliver(
            account=account,
            sender=account.address,
            recipients=outgoing.recipients,
            raw=bytes(outgoing.raw),
            handing_over=lambda: _finish(outgoing_id, handed_over_at=timezone.now()),
        )
    except DeliveryError as error:
        if error.kind == "transient" and not last_try:
            _finish(outgoing_id, state=OutgoingEmail.State.QUEUED, error=str(error),
                    handed_over_at=None)  # fmt: skip
            raise TransientSendError(str(error)) from None
        state = (
            OutgoingEmail.State.UNCERTAIN
            if error.kind == "uncertain"
            else OutgoingEmail.State.FAILED
        )
        _finish(outgoing_id, state=state, error=str(error))
        return outgoing
    _sent(outgoing)
    return outgoing


UNCERTAIN_AFTER_CRASH = (
    "The app stopped after handing this email to the mail server and before the server "
    "confirmed it. It may have been sent: check before sending it again."
)


def _sent(outgoing: OutgoingEmail) -> None:
    """Mark it sent, and put it on the timelines at once: the same Email row the next
    sync would make from the Sent copy (same mailbox, same Message-ID), so the sync
    only adds the copy's folder to it."""
    with files_for_transaction() as files, transaction.atomic():
        _sent_record(outgoing, files)


def _sent_record(outgoing: OutgoingEmail, files: WrittenFiles) -> None:
    from sync.parsing import parse_message

    parsed = parse_message(bytes(outgoing.raw))
    account = outgoing.account
    email, created = Email.objects.get_or_create(
        account=account,
        message_key=outgoing.message_id,
        defaults={
            "message_id": outgoing.message_id,
            "subject": outgoing.subject,
            "from_address": account.address.lower(),
            "from_name": account.display_name,
            "to": outgoing.to,
            "cc": outgoing.cc,
            "sent_at": timezone.now(),
            "text_body": parsed.text_body,
            "html_body": parsed.html_body,
            "size": len(outgoing.raw),
            "seen": True,
            "in_reply_to": outgoing.in_reply_to,
            "references": outgoing.references,
        },
    )
    if created:
        for attachment in parsed.attachments:
            Attachment.objects.create(
                email=email, name=attachment.name, content_type=attachment.content_type,
                size=len(attachment.data),
                file=files.save(ATTACHMENTS, attachment.data, like=attachment.name),
            )  # fmt: skip
        people = {p["address"]: p.get("name", "") for p in outgoing.to + outgoing.cc + outgoing.bcc}
        contacts_link(
            emails=[(email.pk, people, "")],
            own_domains={account.address.rsplit("@", 1)[-1].lower()},
        )
    provider_keeps_copy = account.provider.files_sent_copies
    _finish(
        outgoing.pk,
        state=OutgoingEmail.State.SENT,
        sent_at=timezone.now(),
        error="",
        email=email,
        sent_copy=OutgoingEmail.Copy.BY_SERVER
        if provider_keeps_copy
        else OutgoingEmail.Copy.PENDING,
    )
    if not provider_keeps_copy:
        from .tasks import store_sent_copy

        store_sent_copy.delay_on_commit(outgoing.pk)


def outgoing_copy_store(*, outgoing_id: int, last_try: bool = False) -> None:
    """Append the sent email to the mailbox's Sent folder, once."""
    claimed = OutgoingEmail.objects.filter(
        pk=outgoing_id, state=OutgoingEmail.State.SENT, sent_copy=OutgoingEmail.Copy.PENDING
    ).update(sent_copy=OutgoingEmail.Copy.STORING)
    if not claimed:
        return
    outgoing = OutgoingEmail.objects.select_related("account__provider").get(pk=outgoing_id)
    try:
        folder = copy_to_sent(account=outgoing.account, raw=bytes(outgoing.raw))
    except DeliveryError as error:
        if error.kind == "transient" and not last_try:
            _finish(outgoing_id, sent_copy=OutgoingEmail.Copy.PENDING, sent_copy_error=str(error))
            raise TransientSendError(str(error)) from None
        _finish(outgoing_id, sent_copy=OutgoingEmail.Copy.FAILED, sent_copy_error=str(error))
        return
    _finish(outgoing_id, sent_copy=OutgoingEmail.Copy.STORED, sent_copy_error=f"in {folder}")
