from datetime import timedelta

from django.db.models import QuerySet
from django.utils import timezone

from systemsettings.selectors import mailbox_sync_interval

from .models import Email, MailboxSync, SyncRun, WorkerHeartbeat


def heartbeat_age() -> timedelta | None:
    """How long ago a worker last ran beat's heartbeat; None if never."""
    beat = WorkerHeartbeat.objects.filter(name="worker").first()
    return None if beat is None else timezone.now() - beat.beat_at


def emails_for_panel(user) -> QuerySet[Email]:
    """The emails of the user's connected mailboxes, newest first (the Email page). A
    removed mailbox's kept emails stay on timelines and open from there, not here."""
    return (
        Email.objects.filter(account__owner=user, account__removed_at__isnull=True)
        .select_related("account")
        .defer("text_body", "html_body", "raw_source", "references")
        .order_by("-sent_at", "-pk")
    )


def email_for_user(user, pk: int) -> Email | None:
    return Email.objects.filter(account__owner=user, pk=pk).select_related("account").first()


def sync_status(account) -> dict:
    state = MailboxSync.objects.filter(account=account).first()
    last_run = SyncRun.objects.filter(account=account).first()
    running = bool(state and state.claimed_until and state.claimed_until > timezone.now()) or bool(
        last_run and last_run.state == SyncRun.State.RUNNING
    )
    next_due = None
    if account.auto_sync and not (state and state.health == MailboxSync.Health.NEEDS_ATTENTION):
        started = state.last_started_at if state else None
        # The dispatcher looks every minute; a mailbox never synced is due now.
        next_due = max(timezone.now(), started + mailbox_sync_interval()) if started else None
    return {
        "state": state,
        "last_run": last_run,
        "running": running,
        "emails": Email.objects.filter(account=account).count(),
        "next_due": next_due,
    }


def emails_for_timeline(user, *, contact=None, company=None) -> QuerySet[Email]:
    """A contact's or company's emails that the user may see: for now, those of the
    user's own mailboxes (shared mailboxes' grants come with the sharing issue)."""
    emails = Email.objects.filter(account__owner=user)
    if contact is not None:
        emails = emails.filter(contacts=contact)
    if company is not None:
        emails = emails.filter(companies=company)
    return emails.defer("text_body", "html_body", "raw_source").order_by("-sent_at", "-pk")
