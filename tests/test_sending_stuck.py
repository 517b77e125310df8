"""Nothing outgoing stays stuck, with real processes: a `celery worker` killed (SIGKILL)
while it sends, before and after handing the message over, and the broker (a private
redis-server) stopped while someone writes an email, with `celery beat` running the
sweep. aiosmtpd records what it received: never more than one copy."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse

from mailsetup.settings import BASE_DIR
from sending.message import Draft
from sending.models import OutgoingEmail
from sending.services import (
    STOPPED_BEFORE_HAND_OVER,
    UNCERTAIN_AFTER_CRASH,
    outgoing_create,
    outgoing_sweep,
)
from tests.conftest import MAIL_USERS
from tests.factories import EmailAccountFactory
from tests.servers.broker import RedisServer, publishing_to
from tests.servers.gated_smtp import gated_smtp_server

State = OutgoingEmail.State
ALICE = "alice@example.test"


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def broker(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def celery(tmp_path, broker, settings, mail_trust):
    """Starts `celery worker` (and `celery beat`) processes on the private broker."""
    started: list[subprocess.Popen] = []
    env = {
        **os.environ,
        "DEBUG": "true",
        "MAILSETUP_VAR_DIR": str(tmp_path),
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker.url,
        # The worker must read the passwords this process encrypted.
        "CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
        "MAIL_EXTRA_CA_FILE": str(mail_trust),
        # A session held by the gated server must outlast the kill, not time out first.
        "MAIL_CONNECT_TIMEOUT_SECONDS": "30",
        "SENDING_SWEEP_SECONDS": "1",
        "SYNC_DISPATCH_SECONDS": "3600",
    }

    def start(name: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "celery", "-A", "mailsetup"]
        if name.startswith("beat"):
            command += ["beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule")]
        else:
            command += ["worker", "--pool=solo", "--loglevel=INFO", "--without-mingle",
                        "--without-gossip", "--hostname", f"{name}@%h"]  # fmt: skip
        log = tmp_path / f"{name}.log"
        with open(log, "w") as output:  # the child keeps its own copy of the file
            process = subprocess.Popen(
                command, cwd=BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        process.log = log
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
    for process in started:
        process.wait(timeout=30)


def _logs(tmp_path: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("*.log")))


def _wait(condition, tmp_path, seconds=60, processes=()):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        for process in processes:
            assert process.poll() is None, _logs(tmp_path)
        time.sleep(0.2)
    raise AssertionError(f"timed out\n{_logs(tmp_path)}")


def _state(outgoing) -> str:
    outgoing.refresh_from_db()
    return outgoing.state


def _kill(process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture
def gated(test_provider, smtp_servers):
    server = gated_smtp_server(smtp_servers["starttls"].users).start()
    test_provider.smtp_port = server.port
    test_provider.save()
    yield server.handler
    server.handler.release.set()
    server.stop()


def _write(account, subject) -> OutgoingEmail:
    draft = Draft(
        sender=account.address, sender_name="", subject=subject, text="Hello",
        to=[{"name": "", "address": "peter@partner.test"}], cc=[], bcc=[],
    )  # fmt: skip
    return outgoing_create(author=account.owner, account=account, draft=draft)


def _alice(test_provider):
    return EmailAccountFactory(provider=test_provider, address=ALICE, password=MAIL_USERS[ALICE])


def test_it_sends_once_what_a_worker_killed_before_the_hand_over_held(
    transactional_db, tmp_path, test_provider, gated, broker, celery, settings
):
    from sending.tasks import send_email

    account = _alice(test_provider)
    gated.hold_at = "rcpt"
    with publishing_to(broker.url):
        outgoing = _write(account, "Killed before")  # queued on commit
    worker = celery("worker1")
    _wait(lambda: gated.reached.is_set(), tmp_path, processes=[worker])
    outgoing.refresh_from_db()
    assert (outgoing.state, outgoing.handed_over_at) == (State.SENDING, None)

    _kill(worker)
    gated.release.set()
    assert _state(outgoing) == State.SENDING  # nobody is left to finish it

    settings.SENDING_CLAIM_LEASE_SECONDS = 1  # instead of waiting ten minutes
    time.sleep(1.1)
    with publishing_to(broker.url):
        counts = outgoing_sweep()  # what beat runs every minute
        assert (counts["taken_back"], counts["queued"]) == (1, 1)
        assert _state(outgoing) == State.QUEUED
        assert outgoing.error == STOPPED_BEFORE_HAND_OVER
        replacement = celery("worker2")
        _wait(lambda: _state(outgoing) == State.SENT, tmp_path, processes=[replacement])
        # Queued once more (a broker redelivering the first task): the claim refuses it.
        task = send_email.delay(outgoing.pk)
    _wait(lambda: f"{task.id}] succeeded" in replacement.log.read_text(), tmp_path)
    outgoing.refresh_from_db()
    assert (outgoing.state, outgoing.attempts) == (State.SENT, 2)
    assert len(gated.messages) == 1


def test_it_never_sends_twice_what_a_worker_killed_after_the_hand_over_held(
    transactional_db, tmp_path, test_provider, gated, broker, celery, settings
):
    from sending.tasks import send_email

    account = _alice(test_provider)
    gated.hold_at = "data"
    with publishing_to(broker.url):
        outgoing = _write(account, "Killed after")
    worker = celery("worker1")
    _wait(lambda: gated.reached.is_set(), tmp_path, processes=[worker])
    outgoing.refresh_from_db()
    assert outgoing.state == State.SENDING and outgoing.handed_over_at is not None

    _kill(worker)
    gated.release.set()
    settings.SENDING_CLAIM_LEASE_SECONDS = 1
    time.sleep(1.1)
    with publishing_to(broker.url):
        assert outgoing_sweep()["uncertain"] == 1
        outgoing.refresh_from_db()
        assert (outgoing.state, outgoing.error) == (State.UNCERTAIN, UNCERTAIN_AFTER_CRASH)
        replacement = celery("worker2")
        task = send_email.delay(outgoing.pk)  # queued again anyway: nothing happens
        outgoing_sweep()
    _wait(lambda: f"{task.id}] succeeded" in replacement.log.read_text(), tmp_path)
    outgoing.refresh_from_db()
    assert (outgoing.state, outgoing.attempts) == (State.UNCERTAIN, 1)
    assert len(gated.messages) == 1


def test_it_sends_what_was_written_while_the_broker_was_down_once_it_is_back(
    transactional_db, tmp_path, test_provider, outbox, broker, celery, client
):
    account = _alice(test_provider)
    processes = [celery("worker"), celery("beat")]
    _wait(lambda: "ready." in processes[0].log.read_text(), tmp_path, processes=processes)
    broker.stop()

    client.force_login(account.owner)
    with publishing_to(broker.url):
        response = client.post(
            reverse("sending:compose"),
            {"sender": account.pk, "to": "peter@partner.test", "subject": "While down"},
        )
    outgoing = OutgoingEmail.objects.get()
    assert response.status_code == 302 and response.url == outgoing.get_absolute_url()
    assert (outgoing.state, outgoing.error_kind) == (State.QUEUED, "queue")
    page = client.get(outgoing.get_absolute_url()).text
    assert "Waiting for the app&#x27;s task queue" in page
    assert "will be sent automatically once the queue is back" in page

    broker.start()  # empty: whatever it held is gone
    _wait(lambda: _state(outgoing) == State.SENT, tmp_path, seconds=90, processes=processes)
    assert [envelope.rcpt_tos for envelope in outbox.messages] == [["peter@partner.test"]]
    assert "sending.sweep" in (tmp_path / "beat.log").read_text()
