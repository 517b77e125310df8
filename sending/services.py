import logging
import random
from datetime import datetime, timedelta
from functools import partial, wraps

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import EmailAccount
from mail.errors import MailError, Retry
from mailsetup.queue import publish
from sharing.selectors import sendable_mailboxes
from sync.files import WrittenFiles, files_for_transaction
from sync.store import sent_email_store

from .delivery import DeliveryError, copy_to_sent, deliver, files_sent_copies
from .message import Draft, answer_headers, build, new_message_id, redated
from .models import OutgoingEmail
from .selectors import forwarded_attachments, quote

logger = logging.getLogger(__name__)

# Deliveries (and Sent copies) tried at most this often: the first and six retries with
# backoff, about an hour in all.
MAX_ATTEMPTS = 7
# How many stuck emails one sweep takes on: a backlog is worked off minute by minute.
SWEEP_BATCH = 500


def claim_lease() -> timedelta:
    """A worker that died while sending leaves its claim; after this long the sweep takes
    the email back (queued again, or "May have been sent" once it was handed over)."""
    return timedelta(seconds=settings.SENDING_CLAIM_LEASE_SECONDS)


def queued_grace() -> timedelta:
    """How late a queued email's task may be before the sweep queues it again: the
    task queue may be busy with long syncs."""
    return timedelta(seconds=settings.SENDING_QUEUED_GRACE_SECONDS)


def backoff(attempt: int) -> float:
    """Seconds before the next try after the `attempt`-th (1 = the first): 30 s, 1 min,
    2 min ... at most 30 min, with jitter so a server that was down is not met by every
    queued email at the same second."""
    return min(30 * 2 ** max(attempt - 1, 0), 30 * 60) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not a secret)


class TransientSendError(Exception):
    """Worth another try later: the row is queued again; the task retries after
    `countdown` seconds (and if that retry is lost, the sweep queues it again)."""

    def __init__(self, error: MailError, countdown: float):
        super().__init__(str(error))
        self.error = error
        self.countdown = countdown

    def __reduce__(self):
        # Celery pickles the exception of a retry or a failure; MailError's own
        # arguments do not survive that.
        return (_transient, (self.error.kind, str(self.error), self.countdown))


def _transient(kind: str, message: str, countdown: float) -> TransientSendError:
    return TransientSendError(MailError(kind, message), countdown)


class _ClaimLost(Exception):
    """Another worker owns the email now (the sweep took it back from this one)."""


QUEUE_DOWN = (
    "Waiting for the app's task queue, which could not be reached. The email is saved "
    "and will be sent automatically once the queue is back; there is no need to write "
    "it again."
)
COPY_QUEUE_DOWN = (
    "Waiting for the app's task queue, which could not be reached; the copy will be "
    "stored automatically once it is back."
)
STOPPED_BEFORE_HAND_OVER = (
    "The app stopped while sending this email, before handing it to the mail server. "
    "It will be tried again."
)
UNCERTAIN_AFTER_CRASH = (
    "The app stopped after handing this email to the mail server and before the server "
    "confirmed it. It may have been sent: check before sending it again."
)


def _queue_delivery(outgoing_id: int) -> bool:
    from .tasks import send_email

    if publish(send_email, outgoing_id):
        OutgoingEmail.objects.filter(pk=outgoing_id, error_kind="queue").update(
            error="", error_kind=""
        )
        return True
    OutgoingEmail.objects.filter(pk=outgoing_id, state=OutgoingEmail.State.QUEUED).update(
        error=QUEUE_DOWN, error_kind="queue"
    )
    return False


def _queue_copy(outgoing_id: int) -> bool:
    from .tasks import store_sent_copy

    pending = OutgoingEmail.objects.filter(pk=outgoing_id, sent_copy=OutgoingEmail.Copy.PENDING)
    if publish(store_sent_copy, outgoing_id):
        pending.filter(sent_copy_error=COPY_QUEUE_DOWN).update(sent_copy_error="")
        return True
    pending.update(sent_copy_error=COPY_QUEUE_DOWN)
    return False


@transaction.atomic
def outgoing_create(
    *, author, account: EmailAccount, draft: Draft, original=None, mode: str = "",
    forwarded: int = 0,
) -> OutgoingEmail:  # fmt: skip
    """Write the outgoing row (the exact message, built once) and queue its delivery.
    With the task queue down the email is kept, queued, and says so; the sweep sends it
    once the queue is back. `original`, `mode`: the email it answers or forwards, and
    how, kept for writing it again; `forwarded`: how many of the draft's attachments,
    the last ones, are that email's."""
    message_id = new_message_id(account.address)
    own = len(draft.attachments) - forwarded
    files = [
        {"name": name, "type": kind, "size": len(data), "forwarded": n >= own}
        for n, (name, kind, data) in enumerate(draft.attachments)
    ]
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
        original=original,
        mode=(mode or OutgoingEmail.Mode.REPLY) if original is not None else OutgoingEmail.Mode.NEW,
        files=files,
        raw=build(draft, message_id=message_id),
        next_attempt_at=timezone.now(),
    )
    transaction.on_commit(partial(_queue_delivery, outgoing.pk))
    return outgoing


class NotResendable(Exception):
    """The email is not one to send again now; its text says why, for its author."""


class NotWrittenAgain(Exception):
    """The email written again went its own way meanwhile ("Send again", or written
    again before): the new one is not sent, so that it cannot arrive twice. Its text
    says so, for the compose form."""


@transaction.atomic
def outgoing_resend(*, outgoing: OutgoingEmail, checked_unsent: bool = False) -> None:
    """Send a "Not sent" email again, once what stopped it is fixed (a password, a
    recipient's address on the server's side): the same message and Message-ID, dated
    now, queued as when it was written, with a new count of tries. An email that "may
    have been sent" goes again only when its author says they checked it was not
    (`checked_unsent`): otherwise it could arrive twice; and not while the delivery the
    sweep gave up on may still be running (its answer would be lost, and the email sent
    twice). Whether the author may still send from the mailbox is read when it is sent,
    as for any email."""
    now = timezone.now()
    row = OutgoingEmail.objects.select_for_update().filter(pk=outgoing.pk).first()
    if row is None or row.state not in (OutgoingEmail.State.FAILED, OutgoingEmail.State.UNCERTAIN):
        raise NotResendable("It is not “Not sent” any more (see above): it was not queued again.")
    if row.written_again_as_id is not None:
        raise NotResendable(
            "It was written again as a new email (see its link on this page): it was not "
            "queued again."
        )
    if row.state == OutgoingEmail.State.UNCERTAIN:
        if not checked_unsent:
            raise NotResendable(
                "Tick “I checked: it was not sent” to send it again: it may have arrived."
            )
        running_until = (row.claimed_at or now) + 2 * claim_lease()
        if row.error == UNCERTAIN_AFTER_CRASH and running_until > now:
            raise NotResendable(
                "Its delivery may still be running: it can be sent again from "
                f"{timezone.localtime(running_until):%H:%M}, once that one has surely ended."
            )
    row.raw = redated(bytes(row.raw), now)
    row.state, row.error, row.error_kind, row.attempts = OutgoingEmail.State.QUEUED, "", "", 0
    row.claimed_at = row.handed_over_at = None
    row.next_attempt_at = row.queued_at = now
    row.save(
        update_fields=[
            "raw", "state", "error", "error_kind", "attempts", "claimed_at", "handed_over_at",
            "next_attempt_at", "queued_at",
        ]
    )  # fmt: skip
    transaction.on_commit(partial(_queue_delivery, outgoing.pk))


@transaction.atomic
def outgoing_compose(
    *,
    author,
    account: EmailAccount,
    to: list[dict],
    cc: list[dict],
    bcc: list[dict],
    subject: str,
    text: str,
    attachments: list[tuple[str, str, bytes]],
    original=None,
    mode: str = "",
    written_from: OutgoingEmail | None = None,
) -> OutgoingEmail:
    """The compose page's email, from `account` as its owner set it up (name, signature,
    language): new, or answering `original`, an email the author may see (`mode`
    "reply" or "all": quoted, in its thread; "forward": quoted, with its attachments).
    Then as outgoing_create. `written_from`: the author's email not sent that this one
    writes again ("Edit as a new email"), never sent again from now on."""
    draft = Draft(
        sender=account.address,
        sender_name=account.display_name,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject,
        text=text,
        signature_html=account.signature_html if account.add_signature else "",
        language=account.message_language,
        attachments=list(attachments),
    )
    forwarded = 0
    if original is not None:
        forward = mode == "forward"
        draft.quote_text, draft.quote_html = quote(
            original, forward=forward, language=account.message_language
        )
        if forward:
            carried = forwarded_attachments(original)
            draft.attachments += carried
            forwarded = len(carried)
        else:
            draft.in_reply_to, draft.references = answer_headers(
                original.message_id, original.references
            )
    first = None
    if written_from is not None:
        # Held until this one is written and the first marked: "Send again" takes the
        # same lock, so only one of them can put the email on its way again.
        first = (
            OutgoingEmail.objects.select_for_update()
            .filter(pk=written_from.pk, author=author)
            .first()
        )
        if first is None or not first.rewritable:
            raise NotWrittenAgain(
                "The email this was written from went its own way meanwhile (sent again, "
                "or written again already; see it in your Outbox): this one was not sent, "
                "so that it does not arrive twice. Send it as a new email without "
                "“Edit as a new email” if both should go."
            )
    outgoing = outgoing_create(
        author=author, account=account, draft=draft, original=original, mode=mode,
        forwarded=forwarded,
    )  # fmt: skip
    if first is not None:
        first.written_again_as = outgoing
        first.save(update_fields=["written_again_as"])
    return outgoing


def _claim(outgoing_id: int) -> datetime | None:
    """Take a queued email; the claim's time is the token later writes check, so a
    worker whose claim the sweep took back cannot hand the email over too."""
    now = timezone.now()
    taken = OutgoingEmail.objects.filter(pk=outgoing_id, state=OutgoingEmail.State.QUEUED).update(
        state=OutgoingEmail.State.SENDING, claimed_at=now, attempts=F("attempts") + 1
    )
    return now if taken else None


def _finish(outgoing_id: int, **fields) -> None:
    OutgoingEmail.objects.filter(pk=outgoing_id).update(**fields)


def _mine(outgoing_id: int, claim: datetime):
    return OutgoingEmail.objects.filter(pk=outgoing_id, claimed_at=claim)


def _hand_over(outgoing_id: int, claim: datetime) -> None:
    handed = (
        _mine(outgoing_id, claim)
        .filter(state=OutgoingEmail.State.SENDING, handed_over_at__isnull=True)
        .update(handed_over_at=timezone.now())
    )
    if not handed:
        raise _ClaimLost


def _database_retried(service):
    """Our own database going away is a failure like the network's (kind "database"):
    nothing can be written then, so the row stays as it was (queued, or claimed: the
    sweep takes it back after the lease) and the task tries again later."""

    @wraps(service)
    def run(**kwargs):
        try:
            return service(**kwargs)
        except (OperationalError, InterfaceError) as error:
            summary = " ".join(str(error).split())[:200]
            raise TransientSendError(
                MailError("database", f"The app's database could not be reached ({summary})."),
                backoff(1),
            ) from None

    return run


@_database_retried
def outgoing_send(*, outgoing_id: int) -> OutgoingEmail | None:
    """Deliver a queued email once. Safe to run any number of times: only a queued row
    is taken. Raises TransientSendError to be tried again later, unless this was the
    last try; the error's kind decides (mail.errors)."""
    return _send(outgoing_id)


def _send(outgoing_id: int) -> OutgoingEmail | None:
    claim = _claim(outgoing_id)
    if claim is None:
        return None
    outgoing = OutgoingEmail.objects.select_related("account__provider", "author").get(
        pk=outgoing_id
    )
    account = outgoing.account
    try:
        # Rights are read now, not when the email was written: a revoked grant or a
        # left role stops it, as does turning sending off for the mailbox.
        if not account.provider.send_enabled:
            raise DeliveryError(
                "sending_off",
                f"Sending is turned off for the provider {account.provider.name}, so this "
                "email was not sent. Ask your administrator.",
            )
        if not (
            outgoing.author and sendable_mailboxes(outgoing.author).filter(pk=account.pk).exists()
        ):
            raise DeliveryError(
                "sending_off",
                f"You may no longer send from {account.address}, so this email was not sent.",
            )
        deliver(
            account=account,
            sender=account.address,
            recipients=outgoing.recipients,
            raw=bytes(outgoing.raw),
            handing_over=partial(_hand_over, outgoing_id, claim),
        )
    except _ClaimLost:
        return None
    except DeliveryError as error:
        _failed(outgoing, claim, error)
        return outgoing
    _sent(outgoing, claim)
    return outgoing


def _failed(outgoing: OutgoingEmail, claim: datetime, error: DeliveryError) -> None:
    # As in _sent_record: a send that outlasted its lease after the hand-over was
    # called "May have been sent" by the sweep; the server's answer is the better truth.
    mine = _mine(outgoing.pk, claim).filter(
        Q(state=OutgoingEmail.State.SENDING)
        | Q(state=OutgoingEmail.State.UNCERTAIN, error=UNCERTAIN_AFTER_CRASH)
    )
    action = error.retry
    if action == Retry.LATER and outgoing.attempts < MAX_ATTEMPTS:
        countdown = backoff(outgoing.attempts)
        mine.update(
            state=OutgoingEmail.State.QUEUED, error=str(error), error_kind=error.kind,
            handed_over_at=None, next_attempt_at=timezone.now() + timedelta(seconds=countdown),
        )  # fmt: skip
        raise TransientSendError(error, countdown)
    if action == Retry.UNKNOWN:
        state, text = OutgoingEmail.State.UNCERTAIN, str(error)
    elif action == Retry.LATER:
        state = OutgoingEmail.State.FAILED
        text = f"Not sent after {outgoing.attempts} tries. The last answer: {error}"
    else:
        state, text = OutgoingEmail.State.FAILED, str(error)
    mine.update(state=state, error=text, error_kind=error.kind)


def _sent(outgoing: OutgoingEmail, claim: datetime) -> None:
    """Mark it sent, and put it on the timelines at once: the same Email row the next
    sync would make from the Sent copy (same mailbox, same Message-ID), so the sync
    only adds the copy's folder to it."""
    try:
        with files_for_transaction() as files, transaction.atomic():
            _sent_record(outgoing, claim, files)
    except (OperationalError, InterfaceError):
        raise  # our database gone: the sweep settles the row once it is back
    except Exception as error:
        # The server took the message: it is sent, whatever became of our copy of it
        # (a full disk for its attachments, say). The next download of the Sent folder
        # brings the copy to the timelines.
        logger.warning("Outgoing email %s was sent; its timeline copy failed: %r",
                       outgoing.pk, error)  # fmt: skip
        copy = _copy_to_make(outgoing.account)
        _mine(outgoing.pk, claim).update(
            state=OutgoingEmail.State.SENT, sent_at=timezone.now(), error_kind="",
            error=f"Sent. It could not be put on the timelines yet ({type(error).__name__}); "
            "the next download of the Sent folder brings it there.",
            next_attempt_at=timezone.now(), **copy,
        )  # fmt: skip
        if copy["sent_copy"] == OutgoingEmail.Copy.PENDING:
            _queue_copy(outgoing.pk)


def _sent_record(outgoing: OutgoingEmail, claim: datetime, files: WrittenFiles) -> None:
    account = outgoing.account
    email = sent_email_store(
        account=account, raw=bytes(outgoing.raw), message_id=outgoing.message_id,
        to=outgoing.to, cc=outgoing.cc, bcc=outgoing.bcc, in_reply_to=outgoing.in_reply_to,
        references=outgoing.references, files=files,
    )  # fmt: skip
    copy = _copy_to_make(account)
    # After the hand-over nobody else takes the email, but the sweep may have called it
    # "May have been sent" meanwhile: the server's answer is the better truth.
    _mine(outgoing.pk, claim).update(
        state=OutgoingEmail.State.SENT,
        sent_at=timezone.now(),
        error="",
        error_kind="",
        email=email,
        next_attempt_at=timezone.now(),
        **copy,
    )
    if copy["sent_copy"] == OutgoingEmail.Copy.PENDING:
        transaction.on_commit(partial(_queue_copy, outgoing.pk))


NO_SENT_FOLDER = "the provider is set up for sending only: it has no Sent folder here"


def _copy_to_make(account) -> dict:
    """What becomes of the Sent copy of an email just sent: the provider files it, or
    it is to be stored (PENDING), or there is no folder to store it in."""
    if files_sent_copies(account):
        return {"sent_copy": OutgoingEmail.Copy.BY_SERVER}
    if not account.provider.receive_enabled:
        return {"sent_copy": OutgoingEmail.Copy.FAILED, "sent_copy_error": NO_SENT_FOLDER}
    return {"sent_copy": OutgoingEmail.Copy.PENDING}


@_database_retried
def outgoing_copy_store(*, outgoing_id: int) -> None:
    """Append the sent email to the mailbox's Sent folder, once. Raises
    TransientSendError to be tried again later, unless this was the last try."""
    now = timezone.now()
    claimed = OutgoingEmail.objects.filter(
        pk=outgoing_id, state=OutgoingEmail.State.SENT, sent_copy=OutgoingEmail.Copy.PENDING
    ).update(
        sent_copy=OutgoingEmail.Copy.STORING, claimed_at=now,
        sent_copy_attempts=F("sent_copy_attempts") + 1,
    )  # fmt: skip
    if not claimed:
        return
    outgoing = OutgoingEmail.objects.select_related("account__provider").get(pk=outgoing_id)
    mine = _mine(outgoing_id, now).filter(sent_copy=OutgoingEmail.Copy.STORING)
    try:
        folder = copy_to_sent(
            account=outgoing.account,
            raw=bytes(outgoing.raw),
            message_id=outgoing.message_id,
            # An earlier try may have stored it before its answer was lost.
            look_first=outgoing.sent_copy_attempts > 1,
        )
    except DeliveryError as error:
        if error.retry == Retry.LATER and outgoing.sent_copy_attempts < MAX_ATTEMPTS:
            countdown = backoff(outgoing.sent_copy_attempts)
            mine.update(
                sent_copy=OutgoingEmail.Copy.PENDING, sent_copy_error=str(error),
                next_attempt_at=timezone.now() + timedelta(seconds=countdown),
            )  # fmt: skip
            raise TransientSendError(error, countdown) from None
        mine.update(sent_copy=OutgoingEmail.Copy.FAILED, sent_copy_error=str(error))
        return
    mine.update(sent_copy=OutgoingEmail.Copy.STORED, sent_copy_error=f"in {folder}")


def outgoing_sweep() -> dict[str, int]:
    """Nothing stays stuck (beat runs this every minute):
    - "sending" past the claim lease: its worker died. Queued again if nothing was
      handed over (given up after MAX_ATTEMPTS), else "May have been sent";
    - "queued" past its next attempt and a grace period, or never queued because the
      task queue was down: queued again;
    - Sent copies likewise.
    Queuing twice is harmless: the claim decides who sends. Returns counts."""
    now = timezone.now()
    lease, grace = claim_lease(), queued_grace()
    sending = OutgoingEmail.objects.filter(
        state=OutgoingEmail.State.SENDING, claimed_at__lt=now - lease
    )
    counts = {
        "uncertain": sending.filter(handed_over_at__isnull=False).update(
            state=OutgoingEmail.State.UNCERTAIN,
            error=UNCERTAIN_AFTER_CRASH,
            error_kind="handed_over",
        )
    }
    # A worker past its lease may still hand its email over while this runs: each
    # update below tests `handed_over_at` again, on the row as it is then (PostgreSQL
    # re-reads a row changed under an UPDATE), so an email handed over meanwhile is
    # neither called "Not sent" nor queued again; the next sweep finds it, or its
    # worker's answer settles it.
    sending = sending.filter(handed_over_at__isnull=True)
    counts |= {
        "given_up": sending.filter(attempts__gte=MAX_ATTEMPTS).update(
            state=OutgoingEmail.State.FAILED,
            error=f"Not sent: the app stopped while sending this email, {MAX_ATTEMPTS} times.",
            error_kind="",
        ),
    }
    stopped = list(sending.values_list("pk", flat=True)[:SWEEP_BATCH])
    counts["taken_back"] = sending.filter(pk__in=stopped).update(
        state=OutgoingEmail.State.QUEUED, error=STOPPED_BEFORE_HAND_OVER, error_kind="",
        next_attempt_at=now,
    )  # fmt: skip
    late = list(
        OutgoingEmail.objects.filter(
            Q(next_attempt_at__lt=now - grace) | Q(error_kind="queue"),
            state=OutgoingEmail.State.QUEUED,
        )
        .exclude(pk__in=stopped)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    counts["queued"] = _requeue(stopped + late, _queue_delivery, now)

    sent = OutgoingEmail.objects.filter(state=OutgoingEmail.State.SENT)
    storing = sent.filter(sent_copy=OutgoingEmail.Copy.STORING, claimed_at__lt=now - lease)
    storing.filter(sent_copy_attempts__gte=MAX_ATTEMPTS).update(
        sent_copy=OutgoingEmail.Copy.FAILED,
        sent_copy_error=f"The app stopped while storing the copy, {MAX_ATTEMPTS} times.",
    )
    stopped = list(storing.values_list("pk", flat=True)[:SWEEP_BATCH])
    storing.filter(pk__in=stopped).update(sent_copy=OutgoingEmail.Copy.PENDING)
    late = list(
        sent.filter(
            Q(next_attempt_at__lt=now - grace) | Q(sent_copy_error=COPY_QUEUE_DOWN),
            sent_copy=OutgoingEmail.Copy.PENDING,
        )
        .exclude(pk__in=stopped)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    counts["copies"] = _requeue(stopped + late, _queue_copy, now)
    return counts


def _requeue(ids: list[int], queue, now: datetime) -> int:
    done = 0
    for outgoing_id in ids:
        # Pushed on before queuing: the next sweep waits a grace period for this task.
        OutgoingEmail.objects.filter(pk=outgoing_id).update(next_attempt_at=now)
        if not queue(outgoing_id):
            break  # the queue is down: the next sweep tries again
        done += 1
    return done
