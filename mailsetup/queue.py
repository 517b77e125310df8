"""Handing work to the task queue (Celery's broker) without failing the request.

With the broker down, `task.delay()` raises (kombu's OperationalError, or OSError). What
was to be done is already in the database (a queued outgoing email, a mailbox due for a
download), so nothing is lost: the sweeps that beat runs once the broker is back queue
it again. The caller learns whether the queue took it, to say so.
"""

import logging

from django.db import transaction
from kombu.exceptions import KombuError

logger = logging.getLogger(__name__)


def publish(task, *args) -> bool:
    """Queue `task` now; False when the task queue cannot be reached."""
    try:
        task.delay(*args)
    except (KombuError, OSError) as error:
        logger.warning("The task queue could not be reached for %s%r: %s",
                       task.name, args, type(error).__name__)  # fmt: skip
        return False
    return True


def publish_on_commit(task, *args) -> bool:
    """Queue `task` once the current transaction commits (at once outside one). Returns
    whether the queue took it, or True when that is decided later, at the commit."""
    if not transaction.get_connection().in_atomic_block:
        return publish(task, *args)
    transaction.on_commit(lambda: publish(task, *args))
    return True
