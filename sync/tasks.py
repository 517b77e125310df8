import random

from celery import shared_task
from django.conf import settings

from .files import orphans_delete
from .links import emails_link_to_contacts
from .search import vectors_fill
from .services import (
    TransientSyncError,
    heartbeat_record,
    mailbox_sync,
    mailboxes_dispatch,
    sync_runs_prune,
)


@shared_task(name="sync.heartbeat", ignore_result=True)
def heartbeat() -> None:
    heartbeat_record(hostname=heartbeat.request.hostname or "")


# Both take only the mailbox's id, may run twice (the claim decides), and retry only
# what may pass: the network, a busy server, our own database. The task's id is the
# claim's token, the same on every retry: a claim a failed attempt could not release is
# taken again by its retry instead of blocking it until the lease runs out.
# The longest a task waits for its retry (a Redis broker's visibility timeout is an hour).
RETRY_WAIT_MAX = 30 * 60
RETRYING = {
    "bind": True,
    "ignore_result": True,
    "acks_late": True,
    "autoretry_for": (TransientSyncError,),
    "retry_backoff": settings.SYNC_RETRY_BACKOFF_SECONDS,
    "retry_backoff_max": 30 * 60,
    "retry_jitter": True,
    "max_retries": 6,
}


def _after_the_servers_wait(task, error: TransientSyncError):
    """A retry no sooner than the server asked (Retry-After), else the backoff's. A
    wait longer than RETRY_WAIT_MAX is left to the dispatcher, which queues the mailbox
    once MailboxSync.not_before has passed: a task held back for hours would outlive a
    Redis broker's visibility timeout and be delivered again meanwhile."""
    if error.wait and error.wait > RETRY_WAIT_MAX:
        return
    if error.wait:
        # A little later than asked, spread: mailboxes throttled together do not
        # come back together.
        countdown = error.wait + random.uniform(0, min(30.0, error.wait / 10))  # noqa: S311
        raise task.retry(exc=error, countdown=countdown)
    raise error


@shared_task(name="sync.mailbox", **RETRYING)
def sync_mailbox(self, account_id: int) -> None:
    try:
        mailbox_sync(account_id=account_id, claim_token=self.request.id)
    except TransientSyncError as error:
        _after_the_servers_wait(self, error)


@shared_task(name="sync.exchange_items", **RETRYING)
def import_exchange_items(self, account_id: int) -> None:
    try:
        mailbox_sync(account_id=account_id, items_only=True, claim_token=self.request.id)
    except TransientSyncError as error:
        _after_the_servers_wait(self, error)


@shared_task(name="sync.dispatch", ignore_result=True)
def dispatch() -> None:
    mailboxes_dispatch()


@shared_task(name="sync.files_sweep", ignore_result=True)
def files_sweep() -> None:
    # Files of a worker killed between writing them and committing their rows.
    orphans_delete()


@shared_task(name="sync.runs_prune", ignore_result=True)
def runs_prune() -> None:
    sync_runs_prune()


# Takes no id: it fills the oldest waiting vectors of any mailbox, and two at once share
# the rows (SKIP LOCKED); one killed midway leaves its rows to the next (beat's, a minute).
@shared_task(name="sync.search_vectors", ignore_result=True, acks_late=True)
def search_vectors() -> None:
    vectors_fill()


@shared_task(name="sync.contacts_link", ignore_result=True, acks_late=True)
def contacts_link(contact_ids: list[int]) -> None:
    emails_link_to_contacts(contact_ids=contact_ids)
