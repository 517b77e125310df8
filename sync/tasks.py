from celery import shared_task

from .services import TransientSyncError, heartbeat_record, mailbox_sync, mailboxes_due


@shared_task(name="sync.heartbeat", ignore_result=True)
def heartbeat() -> None:
    heartbeat_record(hostname=heartbeat.request.hostname or "")


# Both take only the mailbox's id, may run twice (the claim decides), and retry only
# what may pass: the network, a busy server.
RETRYING = {
    "ignore_result": True,
    "acks_late": True,
    "autoretry_for": (TransientSyncError,),
    "retry_backoff": 30,
    "retry_backoff_max": 30 * 60,
    "retry_jitter": True,
    "max_retries": 6,
}


@shared_task(name="sync.mailbox", **RETRYING)
def sync_mailbox(account_id: int) -> None:
    mailbox_sync(account_id=account_id)


@shared_task(name="sync.exchange_items", **RETRYING)
def import_exchange_items(account_id: int) -> None:
    mailbox_sync(account_id=account_id, items_only=True)


@shared_task(name="sync.dispatch", ignore_result=True)
def dispatch() -> None:
    for account_id in mailboxes_due():
        sync_mailbox.delay(account_id)
