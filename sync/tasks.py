from celery import shared_task

from .services import heartbeat_record


@shared_task(name="sync.heartbeat", ignore_result=True)
def heartbeat() -> None:
    heartbeat_record(hostname=heartbeat.request.hostname or "")
