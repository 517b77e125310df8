from celery import shared_task

from .services import TransientSendError, outgoing_copy_store, outgoing_send, outgoing_sweep

# Our own database away: the row cannot say how often it was tried, so Celery counts.
# Past this the task stops; the sweep queues the email again once the database is back.
DATABASE_RETRIES = 10


def _retry(task, error: TransientSendError):
    if error.error.kind == "database" and task.request.retries >= DATABASE_RETRIES:
        raise error
    return task.retry(countdown=error.countdown, exc=error)


# The row counts the tries and decides when to give up (services.MAX_ATTEMPTS); Celery's
# own count restarts when the sweep queues an email again, so it sets no limit here.
@shared_task(bind=True, name="sending.send", ignore_result=True, acks_late=True, max_retries=None)
def send_email(self, outgoing_id: int) -> None:
    try:
        outgoing_send(outgoing_id=outgoing_id)
    except TransientSendError as error:
        raise _retry(self, error) from None


@shared_task(
    bind=True, name="sending.sent_copy", ignore_result=True, acks_late=True, max_retries=None
)
def store_sent_copy(self, outgoing_id: int) -> None:
    try:
        outgoing_copy_store(outgoing_id=outgoing_id)
    except TransientSendError as error:
        raise _retry(self, error) from None


@shared_task(name="sending.sweep", ignore_result=True)
def sweep_outgoing() -> None:
    outgoing_sweep()
