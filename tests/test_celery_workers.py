"""Beat, the broker and a worker, as real processes: the heartbeat must go through."""

import os
import subprocess
import sys
import time

import pytest
import redis
from django.db import connection

from mailsetup.settings import BASE_DIR
from sync.models import WorkerHeartbeat

REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _database_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _start_celery(tmp_path, env) -> list[subprocess.Popen]:
    """A worker and beat as real processes, logging into tmp_path."""
    celery = [sys.executable, "-m", "celery", "-A", "mailsetup"]
    commands = {
        "worker.log": [*celery, "worker", "--pool=solo", "--loglevel=INFO", "--without-mingle",
                       "--without-gossip"],
        "beat.log": [*celery, "beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule")],
    }  # fmt: skip
    return [
        subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=env,
            stdout=open(tmp_path / log, "w"),
            stderr=subprocess.STDOUT,
        )
        for log, command in commands.items()
    ]


def _stop(processes) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=20)


def _logs(tmp_path) -> str:
    return "\n".join(
        f"--- {name}\n" + (tmp_path / name).read_text() for name in ("worker.log", "beat.log")
    )


@pytest.mark.parametrize("broker", ["filesystem://", REDIS_TEST_URL], ids=["filesystem", "redis"])
def test_it_runs_beats_heartbeat_on_a_worker(transactional_db, tmp_path, broker):
    if broker.startswith("redis"):
        redis.Redis.from_url(broker).flushdb()
    env = {
        **os.environ,
        "DEBUG": "true",
        "MAILSETUP_VAR_DIR": str(tmp_path),
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker,
        "HEARTBEAT_INTERVAL_SECONDS": "1",
    }
    processes = _start_celery(tmp_path, env)
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not WorkerHeartbeat.objects.exists():
            assert all(p.poll() is None for p in processes), _logs(tmp_path)
            time.sleep(0.5)
        beat = WorkerHeartbeat.objects.first()
    finally:
        _stop(processes)
    assert beat is not None, _logs(tmp_path)
    assert beat.hostname


def test_it_keeps_the_filesystem_brokers_files_under_var(tmp_path):
    env = {**os.environ, "DEBUG": "true", "MAILSETUP_VAR_DIR": str(tmp_path)}
    env.pop("CELERY_BROKER_URL", None)
    script = "from mailsetup.celery import app; app.send_task('sync.heartbeat')"
    env["PYTHONPATH"] = str(BASE_DIR)
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, timeout=60)
    assert not (tmp_path / "control").exists()
    assert list((tmp_path / "broker" / "queue").iterdir())


def test_it_fills_a_new_mailbox_through_beat_and_a_worker(
    transactional_db, tmp_path, synced_mailbox, mail_trust, settings
):
    from sync.models import Email, MailboxSync
    from tests.mailbox import make_message

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="one"), make_message(subject="two"))
    env = {
        **os.environ,
        "DEBUG": "true",
        "MAILSETUP_VAR_DIR": str(tmp_path),
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": "filesystem://",
        # The worker must read the passwords this process encrypted.
        "CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
        "MAIL_EXTRA_CA_FILE": str(mail_trust),
        "SYNC_DISPATCH_SECONDS": "1",
    }
    processes = _start_celery(tmp_path, env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and Email.objects.filter(account=account).count() < 2:
            assert all(p.poll() is None for p in processes), _logs(tmp_path)
            time.sleep(0.5)
    finally:
        _stop(processes)
    assert sorted(Email.objects.filter(account=account).values_list("subject", flat=True)) == [
        "one",
        "two",
    ], _logs(tmp_path)
    assert MailboxSync.objects.get(account=account).last_success_at is not None


def test_it_never_shows_a_worker_a_message_file_before_it_is_written(tmp_path, monkeypatch):
    # kombu's own transport created the file under its final name, then wrote it: a
    # worker reading in between got it empty, and its consumer stopped for good.
    from kombu import Connection

    from mailsetup import broker
    from mailsetup.celery import app

    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, broker.Transport)
    seen_while_writing = []
    real_dumps = broker.dumps

    def dumps(payload):
        seen_while_writing.append(sorted(os.listdir(tmp_path)))
        return real_dumps(payload)

    monkeypatch.setattr(broker, "dumps", dumps)
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path)}
    with Connection("filesystem://", transport_options=options) as connection:
        channel = connection.default_channel
        channel._put("celery", {"body": "whole"})
        assert seen_while_writing and not any(
            name.endswith(".msg") for names in seen_while_writing for name in names
        )
        assert channel._get("celery") == {"body": "whole"}
