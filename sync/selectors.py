from datetime import timedelta

from django.utils import timezone

from systemsettings.selectors import mailbox_sync_interval

from .models import Email, MailboxSync, SyncRun, WorkerHeartbeat


def heartbeat_age() -> timedelta | None:
    """How long ago a worker last ran beat's heartbeat; None if never."""
    beat = WorkerHeartbeat.objects.filter(name="worker").first()
    return None if beat is None else timezone.now() - beat.beat_at


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
