"""The push tests' own: Dovecot instances apart from the suite's (one that lacks IDLE, a
poorer server's family; one a test may stop and start again), a listener running on a
thread of its own, and the fixtures that stand in for the task queue."""

import asyncio
import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

PUSH_USERS = [f"push-{n}@example.test" for n in range(11)]


def _dovecot(**options):
    from tests.servers.dovecot import Dovecot, DovecotUser

    root = Path(tempfile.mkdtemp(prefix="mailsetup-push-dovecot-"))
    users = [DovecotUser(name, "push-secret") for name in PUSH_USERS]
    return Dovecot(root=root, users=users, **options)


@pytest.fixture(scope="session")
def poor_dovecot():
    """A server offering IMAP4rev1 without IDLE (some hosting platforms, Exchange Online
    on some tenants): its mailboxes stay on the interval."""
    server = _dovecot(capabilities="IMAP4rev1 LITERAL+ SASL-IR ID ENABLE UIDPLUS").start()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def own_dovecot():
    """A Dovecot for this test alone (it may be restarted)."""
    server = _dovecot().start()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


def eventually(check, *, within: float = 20, what: str = ""):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"not within {within} s: {what or check}")


async def signed_in_and_closed(make_watcher) -> None:
    """A watcher made on the test's loop (`make_watcher()`), opened (its sign-in) and
    closed whatever happens: the tests that expect the sign-in itself to fail."""
    watcher = make_watcher()
    try:
        await watcher.open()
    finally:
        await watcher.close()


def run_apart(coroutine):
    """asyncio.run(coroutine) on a thread of its own, its exception raised here: once the
    session's Playwright has started (tests/browser.py), its event loop stays the running
    loop of the main thread, where asyncio.run refuses to start."""
    outcome = []

    def main():
        try:
            outcome.append((True, asyncio.run(coroutine)))
        except BaseException as error:  # raised in the test's thread
            outcome.append((False, error))

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    finished, value = outcome[0]
    if not finished:
        raise value
    return value


def watch_of(account):
    from push.models import MailboxWatch

    return MailboxWatch.objects.filter(account=account).first()


def state_of(account) -> str:
    watch = watch_of(account)
    return watch.state if watch else ""


def config(**changes):
    values = {
        "renew": 60, "tick": 0.2, "debounce": 0.2, "backoff_base": 0.2, "backoff_max": 1,
        "max_mailboxes": 100, "claim_batch": 100, "connect_concurrency": 5, "busy_poll": 0.1,
    }  # fmt: skip
    from push.listener import ListenerConfig

    return ListenerConfig(**(values | changes))


@contextlib.contextmanager
def running(listener):
    failure = []

    def main():
        try:
            asyncio.run(listener.run())
        except BaseException as error:  # shown by the test, not lost in a thread
            failure.append(error)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        eventually(lambda: listener._loop is not None, what="the listener's loop")
        listener.stop_threadsafe()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the listener did not stop"
    assert not failure, failure


@pytest.fixture
def short_lease(settings):
    settings.PUSH_LEASE_SECONDS = 3


def _capturing(monkeypatch, *, started: bool) -> list[int]:
    from django.utils import timezone

    from sync import services, tasks
    from sync.models import MailboxSync

    calls = []

    def capture(task, *args):
        if task is tasks.sync_mailbox:
            calls.append(*args)
            if started:
                # As a worker's claim would: the listener may queue the next one.
                MailboxSync.objects.update_or_create(
                    account_id=args[0], defaults={"last_started_at": timezone.now()}
                )
        return True

    monkeypatch.setattr(services, "publish", capture)
    return calls


@pytest.fixture
def published(monkeypatch):
    """The mailboxes whose sync the listener queued; a worker takes each at once (its
    start is recorded) and does nothing."""
    return _capturing(monkeypatch, started=True)


@pytest.fixture
def backed_up(monkeypatch):
    """The mailboxes whose sync the listener queued; no worker starts them (the task
    queue is backed up)."""
    return _capturing(monkeypatch, started=False)


@pytest.fixture
def inline_sync(monkeypatch):
    """The queued syncs run at once, in the listener's database thread, as a worker
    would run them."""
    from sync import services, tasks

    ran = []

    def run(task, *args):
        if task is tasks.sync_mailbox:
            with contextlib.suppress(services.TransientSyncError):
                services.mailbox_sync(account_id=args[0])
            ran.append(args[0])
        return True

    monkeypatch.setattr(services, "publish", run)
    return ran
