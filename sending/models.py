from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from accounts.models import EmailAccount


class OutgoingEmail(models.Model):
    """One email a user sent (or is sending) from a mailbox. Written before delivery
    starts, so every outcome, including a failure, has a row the user can see."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Not sent"
        # The connection broke after the message was handed over and before the server
        # said whether it took it: trying again could deliver it twice.
        UNCERTAIN = "uncertain", "May have been sent"

    class Copy(models.TextChoices):
        PENDING = "pending", "Not yet"
        STORING = "storing", "Being stored"
        STORED = "stored", "In the Sent folder"
        BY_SERVER = "by_server", "Kept by the provider"
        FAILED = "failed", "Could not be stored"

    account = models.ForeignKey(EmailAccount, on_delete=models.CASCADE, related_name="outgoing")
    # `user.outgoing_written`: how sharing.selectors, below this app, finds the emails a
    # user wrote in the app (an access rule) without importing this module.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="outgoing_written",
    )
    # The headers as the user typed them, checked: lists of {"name", "address"}.
    to = models.JSONField(default=list)
    cc = models.JSONField(default=list)
    bcc = models.JSONField(default=list)
    subject = models.CharField(max_length=998, blank=True)
    text_body = models.TextField(blank=True)
    message_id = models.CharField(max_length=500, unique=True)
    in_reply_to = models.CharField(max_length=500, blank=True)
    references = models.TextField(blank=True)

    class Mode(models.TextChoices):
        NEW = "new", "New"
        REPLY = "reply", "Reply"
        ALL = "all", "Reply all"
        FORWARD = "forward", "Forward"
        # Written before the app kept how (sending 0004): an answer says so by its
        # In-Reply-To; a forward cannot be told from a new email.
        UNKNOWN = "", "Not recorded"

    # The email it answers or forwards (`mode`): what "Edit as a new email" answers or
    # forwards again, in whichever mailbox the author saw it (its Message-ID alone
    # finds it only in the sending one, and a forward has none). Null with a mode other
    # than "new": it was deleted since.
    original = models.ForeignKey(
        "sync.Email", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.NEW, blank=True)
    # The files it carries, to list on its page (their bytes are in `raw`):
    # [{"name", "type", "size", "forwarded"}], "forwarded" for those of the email it
    # forwards (carried again when it is written again; the others are chosen again).
    files = models.JSONField(default=list, blank=True)
    # Written again ("Edit as a new email") and the new one sent on its way: this one
    # is never sent again (both would arrive), and leaves the Outbox and the health.
    written_again_as = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The exact bytes handed to the server, so a retry sends the same message.
    raw = models.BinaryField(editable=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    error = models.TextField(blank=True)
    # The kind of the last failure (mail.errors), for code: "queue" means the task
    # could not be queued at all and waits for the task queue to come back.
    error_kind = models.CharField(max_length=40, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When the delivery (or, once sent, the Sent copy) is next due: set when queued and
    # when a retry is scheduled. Past it by a grace period, the sweep queues it again.
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # The delivery's claim, then the Sent copy's: its time is the claim's token.
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Set just before the message's bytes go to the server: from then on a retry could
    # deliver it twice.
    handed_over_at = models.DateTimeField(null=True, blank=True)
    sent_copy = models.CharField(max_length=10, choices=Copy.choices, default=Copy.PENDING)
    sent_copy_error = models.TextField(blank=True)
    sent_copy_attempts = models.PositiveSmallIntegerField(default=0)
    # The email on the timelines: written with the row, so it shows at once.
    email = models.OneToOneField(
        "sync.Email", on_delete=models.SET_NULL, null=True, blank=True, related_name="outgoing"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # When it was last put on its way: written, or sent again. The Outbox and the
    # mailbox's health read a week of these: an email written a month ago, sent again
    # today and refused again is today's failure.
    queued_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-queued_at", "-pk"]
        indexes = [
            # The sweep's question, every minute: only the few unfinished rows.
            models.Index(
                fields=["state", "next_attempt_at"],
                name="outgoing_unfinished",
                condition=models.Q(state__in=["queued", "sending"])
                | models.Q(state="sent", sent_copy__in=["pending", "storing"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.subject or '(no subject)'} from {self.account}"

    def get_absolute_url(self) -> str:
        return reverse("sending:outgoing", args=[self.pk])

    @property
    def finished(self) -> bool:
        return self.state not in (self.State.QUEUED, self.State.SENDING)

    @property
    def rewritable(self) -> bool:
        """Not sent, and not written again already: what "Edit as a new email" may
        replace without the email arriving twice."""
        return self.written_again_as_id is None and self.state in (
            self.State.FAILED, self.State.UNCERTAIN,
        )  # fmt: skip

    @property
    def under_way(self) -> bool:
        """Its delivery, or once sent its copy to the Sent folder, still to come: what
        its page keeps asking about."""
        return not self.finished or (
            self.state == self.State.SENT
            and self.sent_copy in (self.Copy.PENDING, self.Copy.STORING)
        )

    @property
    def recipients(self) -> list[str]:
        return [person["address"] for person in self.to + self.cc + self.bcc]
