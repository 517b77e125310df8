"""Logs as JSON lines (LOG_FORMAT=json), for a log collector (issue 18).

Every record of the standard library's logging (the app's, Django's, Celery's) is written
by structlog's ProcessorFormatter as one JSON object: time (UTC, ISO 8601), level, logger,
event (the message as it would read in text), and what is bound to the current context.
A Celery task that works on one mailbox or one outgoing email binds its id for as long
as it runs (`bind_task`, connected in mailsetup/celery.py), so every line the sync or the
delivery logs carries `mailbox_id` or `outgoing_id` without passing it down; the mail
listener binds `mailbox_id` the same way (structlog.contextvars.bind_contextvars).

Only ids are bound: the messages are those the text format writes, which name no
secret (settings.LOGGING keeps the libraries that would log headers at WARNING).

structlog is imported only with LOG_FORMAT=json: with the text format a worker neither
builds the formatter nor binds ids no line would show (5 MB of a worker's memory, where
issue 19's B1 asks for 150 MB in all).
"""

from django.conf import settings

# The id each task's first argument is (tasks take ids only).
TASK_IDS = {
    "sync.mailbox": "mailbox_id",
    "sync.exchange_items": "mailbox_id",
    "accounts.revoke_tokens": "mailbox_id",
    "sending.send": "outgoing_id",
    "sending.store_sent_copy": "outgoing_id",
}


def json_formatter():
    """The formatter of settings.LOGGING's "json" (a dictConfig factory): a structlog
    ProcessorFormatter."""
    import structlog

    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


def _binding():
    """structlog's context variables, with the JSON format only (no text line shows
    them); None with the text format."""
    if settings.LOG_FORMAT != "json":
        return None
    import structlog.contextvars

    return structlog.contextvars


def bind(**ids) -> None:
    """Ids for every line logged in the current context from here on (an asyncio task's
    own, in the mail listener)."""
    if (binding := _binding()) is not None:
        binding.bind_contextvars(**ids)


def unbind(*keys: str) -> None:
    """Drop `keys` from what the current context's lines carry (a task the listener
    starts for all of its mailboxes inherits the starting mailbox's id)."""
    if (binding := _binding()) is not None:
        binding.unbind_contextvars(*keys)


# What was bound before each running task began, by Celery task id: a task run eagerly
# inside another (`.apply()`, or a task queued with CELERY_TASK_ALWAYS_EAGER) ends
# with the outer task's ids restored, not cleared. One entry per task that has not
# ended (Celery sends task_postrun from a `finally`, whatever the task did).
_outer: dict[str, dict] = {}


def bind_task(task=None, args=None, kwargs=None, task_id=None, **_) -> None:
    """Celery's task_prerun: the task's name, and the id it works on, for its lines."""
    if (binding := _binding()) is None:
        return
    if task_id is not None:
        _outer[task_id] = binding.get_contextvars()
    binding.clear_contextvars()
    name = getattr(task, "name", "") or ""
    bound: dict[str, object] = {"task": name}
    key = TASK_IDS.get(name)
    if key:
        value = args[0] if args else next(iter((kwargs or {}).values()), None)
        if isinstance(value, int):
            bound[key] = value
    binding.bind_contextvars(**bound)


def unbind_task(task_id=None, **_) -> None:
    """Celery's task_postrun: what was bound before the task began, again (nothing, for
    a task the worker ran from its queue)."""
    if (binding := _binding()) is None:
        return
    binding.clear_contextvars()
    if outer := _outer.pop(task_id, None):
        binding.bind_contextvars(**outer)
