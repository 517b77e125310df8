"""LOG_FORMAT=json (issue 18, point 7's optional part): every log line one JSON object,
the mailbox's id on each line its sync task writes, nothing bound once the task ends."""

import io
import json
import logging
import os
import subprocess
import sys
import time

import pytest
from celery.signals import task_postrun, task_prerun

from mailsetup import logs
from mailsetup.logs import json_formatter
from mailsetup.settings import BASE_DIR
from sending.tasks import send_email
from sync.tasks import sync_mailbox


@pytest.fixture(autouse=True)
def _nothing_bound_after():
    # A test that fails between a task's start and end must not leave its ids bound on
    # the thread for the tests after it.
    yield
    import structlog.contextvars

    structlog.contextvars.clear_contextvars()
    logs._outer.clear()


class _JsonLog:
    """What sync.services logs, as the JSON formatter writes it."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(json_formatter())
        self.logger = logging.getLogger("sync.services")

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def json_log(settings):
    settings.LOG_FORMAT = "json"
    log = _JsonLog()
    log.logger.addHandler(log.handler)
    yield log
    log.logger.removeHandler(log.handler)


def test_it_writes_json_lines_with_the_tasks_mailbox_id(json_log):
    logger = json_log.logger
    # As a worker runs the task (its signals are Celery's own, sent by hand here).
    task_prerun.send(sender=sync_mailbox, task_id="t1", task=sync_mailbox, args=(42,), kwargs={})
    logger.warning("Folder %s failed: %s", "INBOX", "NO [UNAVAILABLE]")
    task_postrun.send(sender=sync_mailbox, task_id="t1", task=sync_mailbox, args=(42,))
    task_prerun.send(
        sender=send_email, task_id="t2", task=send_email, args=(), kwargs={"outgoing_id": 7}
    )
    logger.warning("sending")
    task_postrun.send(sender=send_email, task_id="t2", task=send_email)
    logger.warning("between tasks")
    first, second, third = json_log.lines()
    assert first["event"] == "Folder INBOX failed: NO [UNAVAILABLE]"
    assert (first["mailbox_id"], first["task"]) == (42, "sync.mailbox")
    assert (first["level"], first["logger"]) == ("warning", "sync.services")
    assert first["time"].endswith("Z")
    assert (second["outgoing_id"], second["task"]) == (7, "sending.send")
    assert "mailbox_id" not in second
    assert "mailbox_id" not in third and "task" not in third


def test_it_gives_a_task_its_outer_tasks_ids_back_after_one_run_inside_it(json_log):
    logger = json_log.logger
    task_prerun.send(sender=sync_mailbox, task_id="outer", task=sync_mailbox, args=(42,), kwargs={})
    # A task run eagerly inside it (a sync that sends, a test's always-eager queue).
    task_prerun.send(sender=send_email, task_id="inner", task=send_email, args=(7,), kwargs={})
    logger.warning("inner")
    task_postrun.send(sender=send_email, task_id="inner", task=send_email)
    logger.warning("outer again")
    task_postrun.send(sender=sync_mailbox, task_id="outer", task=sync_mailbox)
    logger.warning("after both")
    inner, outer, after = json_log.lines()
    assert (inner["outgoing_id"], inner["task"]) == (7, "sending.send")
    assert "mailbox_id" not in inner
    assert (outer["mailbox_id"], outer["task"]) == (42, "sync.mailbox")
    assert "outgoing_id" not in outer
    assert "mailbox_id" not in after and "task" not in after


def test_it_gives_the_ids_back_after_a_real_eager_task_inside_another(json_log):
    from celery import Celery

    # A throwaway app: the signals that bind the ids are Celery's own, for every app.
    app = Celery("nested", set_as_current=False)
    app.conf.task_always_eager = True
    logger = json_log.logger

    @app.task(name="sending.send", bind=True, max_retries=1)
    def inner(self, outgoing_id):
        logger.warning("inner, try %s", self.request.retries)
        if not self.request.retries:
            raise self.retry(countdown=0)

    @app.task(name="sync.mailbox")
    def outer(mailbox_id):
        logger.warning("outer before")
        inner.apply(args=(7,))
        logger.warning("outer between")
        inner.delay(8)
        logger.warning("outer after")

    outer.apply(args=(42,))
    logger.warning("after")
    lines = [(line["event"], line.get("mailbox_id"), line.get("outgoing_id"))
             for line in json_log.lines()]  # fmt: skip
    assert lines == [
        ("outer before", 42, None),
        ("inner, try 0", None, 7), ("inner, try 1", None, 7),
        ("outer between", 42, None),
        ("inner, try 0", None, 8), ("inner, try 1", None, 8),
        ("outer after", 42, None),
        ("after", None, None),
    ]  # fmt: skip


def _log_from_a_process(**env) -> subprocess.CompletedProcess:
    script = (
        "import django; django.setup(); import logging; "
        "logging.getLogger('sync.engine').warning('hello %s', 'there')"
    )
    clean = {**os.environ, "DEBUG": "true", **env}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=clean, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_it_turns_json_on_from_the_environment_and_names_a_bad_value():
    line = _log_from_a_process(LOG_FORMAT="json").stderr.strip().splitlines()[-1]
    assert json.loads(line)["event"] == "hello there"
    assert _log_from_a_process(LOG_FORMAT="").stderr.strip().endswith("hello there")
    bad = _log_from_a_process(LOG_FORMAT="xml")
    assert bad.returncode != 0
    assert "LOG_FORMAT must be one of text, json, not 'xml'" in bad.stderr


def test_it_leaves_structlog_unloaded_with_text_logs():
    # A worker with text logs: its tasks' signals bind nothing no line would show, and
    # structlog (with rich and pygments where installed) stays out of its memory.
    script = (
        "import sys, django; django.setup(); import logging; "
        "from celery.signals import task_prerun, task_postrun; "
        "from mailsetup.celery import app; from sync.tasks import sync_mailbox; "
        "task_prerun.send(sender=sync_mailbox, task_id='t', task=sync_mailbox, args=(1,)); "
        "logging.getLogger('sync.engine').warning('hello'); "
        "task_postrun.send(sender=sync_mailbox, task_id='t', task=sync_mailbox); "
        "print('structlog' in sys.modules)"
    )
    for log_format, loaded in (("text", "False"), ("json", "True")):
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=BASE_DIR, capture_output=True, text=True,
            env={**os.environ, "DEBUG": "true", "LOG_FORMAT": log_format}, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == loaded, log_format
        line = done.stderr.strip().splitlines()[-1]
        if log_format == "json":  # and the task's id is on its line still
            assert json.loads(line)["mailbox_id"] == 1
        else:
            assert line.endswith("hello") and "mailbox_id" not in line


def test_it_writes_json_lines_from_a_real_worker(transactional_db, tmp_path):
    # Celery takes the root logger over as a worker starts, unless told not to: its
    # text handler had replaced the JSON one, the ids bound for nothing.
    from tests.test_celery_workers import _database_url

    env = {
        **os.environ, "DEBUG": "true", "LOG_FORMAT": "json", "MAILSETUP_VAR_DIR": str(tmp_path),
        "DATABASE_URL": _database_url(), "CELERY_BROKER_URL": "filesystem://",
    }  # fmt: skip
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mailsetup", "worker", "--pool=solo",
             "--loglevel=INFO", "--without-mingle", "--without-gossip"],
            cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        queued = subprocess.run(
            [sys.executable, "-c", "import django; django.setup(); "
             "from sync.tasks import sync_mailbox; sync_mailbox.delay(987654)"],
            cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert queued.returncode == 0, queued.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "succeeded" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            time.sleep(0.3)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    done = [json.loads(line) for line in lines if "succeeded" in line]
    assert done and done[0]["mailbox_id"] == 987654 and done[0]["task"] == "sync.mailbox", (
        log.read_text()
    )
