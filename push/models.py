from django.db import models
from django.utils import timezone

from accounts.models import EmailAccount


class MailboxWatch(models.Model):
    """Which listener process watches a mailbox, until when (its lease), and how that
    is going. Listeners claim rows whose lease ran out (a listener that died), so the
    mailboxes of several machines' listeners are shared through this table alone."""

    class State(models.TextChoices):
        CONNECTING = "connecting", "Connecting"
        WATCHING = "watching", "Watching"
        BACKOFF = "backoff", "Waiting to reconnect"
        NOT_SUPPORTED = "not_supported", "Server cannot be watched"
        NEEDS_OWNER = "needs_owner", "Needs the owner"
        STOPPED = "stopped", "Not watched"

    account = models.OneToOneField(EmailAccount, on_delete=models.CASCADE, related_name="watch")
    # The listener holding the mailbox ("" for none): host:pid:random.
    holder = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.STOPPED)
    state_since = models.DateTimeField(default=timezone.now)
    # When the server last reported a change (a sync was queued for it).
    last_event_at = models.DateTimeField(null=True, blank=True)
    # When the listener last queued the mailbox's sync, and the mailbox's last run start
    # then (sync.MailboxSync.last_started_at): while that is unchanged, no worker has
    # started the queued sync yet, and another is not queued (push.services).
    sync_queued_at = models.DateTimeField(null=True, blank=True)
    sync_queued_after = models.DateTimeField(null=True, blank=True)
    # Why the mailbox is not watched, or why the last connection ended (never a secret).
    error = models.TextField(blank=True)
    error_kind = models.CharField(max_length=30, blank=True)

    def __str__(self) -> str:
        return f"watch of {self.account}: {self.state}"
