from celery import shared_task

from .services import TransientSyncError, heartbeat_record, mailbox_sync, mailboxes_due


@shared_task(name="sync.heartbeat", ignore_result=True)
def heartbeat() -> None:
    heartbeat_record(hostname=heartbeat.request.hostname or "")


@shared_task(
    name="sync.mailbox",
    ignore_result=True,
    acks_late=True,
    autoretry_for=(TransientSyncError,),
    retry_backoff=30,
    retry_backoff_max=30 * 60,
    retry_jitter=True,
    max_retries=6,
)
def sync_mailbox(account_id: int) -> None:
    mailbox_sync(account_id=account_id)


@shared_task(
    name="sync.exchange_items",
    ignore_result=True,
    acks_late=True,
    autoretry_for=(TransientSyncError,),
    retry_backoff=30,
    retry_backoff_max=30 * 60,
    retry_jitter=True,
    max_retries=6,
)
def import_exchange_items(account_id: int) -> None:
    mailbox_sync(account_id=account_id, items_only=True)


@shared_task(name="sync.dispatch", ignore_result=True)
def dispatch() -> None:
    for account_id in mailboxes_due():
        sync_mailbox.delay(account_id)
