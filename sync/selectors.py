from datetime import timedelta

from django.utils import timezone

from .models import WorkerHeartbeat


def heartbeat_age() -> timedelta | None:
    """How long ago a worker last ran beat's heartbeat; None if never."""
    beat = WorkerHeartbeat.objects.filter(name="worker").first()
    return None if beat is None else timezone.now() - beat.beat_at
