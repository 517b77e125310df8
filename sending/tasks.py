import random

from celery import shared_task

from .services import TransientSendError, outgoing_copy_store, outgoing_send


def _backoff(retries: int) -> float:
    # 30 s, 1 min, 2 min ... at most 30 min, with jitter so a server that was down is
    # not met by every queued email at the same second.
    return min(30 * 2**retries, 30 * 60) * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not a secret)


@shared_task(bind=True, name="sending.send", ignore_result=True, acks_late=True, max_retries=6)
def send_email(self, outgoing_id: int) -> None:
    try:
        outgoing_send(outgoing_id=outgoing_id, last_try=self.request.retries >= self.max_retries)
    except TransientSendError as error:
        raise self.retry(countdown=_backoff(self.request.retries), exc=error) from None


@shared_task(bind=True, name="sending.sent_copy", ignore_result=True, acks_late=True, max_retries=6)
def store_sent_copy(self, outgoing_id: int) -> None:
    try:
        outgoing_copy_store(
            outgoing_id=outgoing_id, last_try=self.request.retries >= self.max_retries
        )
    except TransientSendError as error:
        raise self.retry(countdown=_backoff(self.request.retries), exc=error) from None
