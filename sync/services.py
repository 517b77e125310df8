from django.utils import timezone

from .models import WorkerHeartbeat


def heartbeat_record(*, hostname: str) -> WorkerHeartbeat:
    beat, _ = WorkerHeartbeat.objects.update_or_create(
        name="worker", defaults={"beat_at": timezone.now(), "hostname": hostname[:255]}
    )
    return beat
