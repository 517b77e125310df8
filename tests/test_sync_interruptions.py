"""A sync whose database goes away mid-run, on a real Celery worker: the run's record is
closed, the task retries with backoff and takes its own claim back, and the mailbox is
complete without waiting for the claim's lease or the next interval."""

import os
import time

import psycopg
from django.db import connection

from sync.models import EmailLocation, MailboxSync, SyncRun
from tests.mailbox import make_message
from tests.test_celery_workers import _database_url, _logs, _start_celery, _stop

TOTAL = 1500


def _database_refuses(refuse: bool) -> None:
    """The test database stops taking connections and drops the workers' (not this
    test's own), as during a restart; or takes them again. Said from another database:
    PostgreSQL does not let a database close itself."""
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
        dbname="postgres", autocommit=True,
    ) as admin:  # fmt: skip
        allow = "false" if refuse else "true"
        admin.execute(f'ALTER DATABASE "{db["NAME"]}" ALLOW_CONNECTIONS {allow}')
        if refuse:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> %s",
                [db["NAME"], connection.connection.info.backend_pid],
            )


def test_it_retries_a_sync_whose_database_went_away(
    transactional_db, tmp_path, synced_mailbox, mail_trust, settings
):
    account, mailbox = synced_mailbox
    with mailbox.client() as client:
        messages = [make_message(subject=f"m{n}", body="x" * 2000) for n in range(TOTAL)]
        for start in range(0, TOTAL, 250):
            client.multiappend("INBOX", messages[start : start + 250])
    env = {
        **os.environ,
        "DEBUG": "true",
        "MAILSETUP_VAR_DIR": str(tmp_path),
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": "filesystem://",
        "CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
        "MAIL_EXTRA_CA_FILE": str(mail_trust),
        "SYNC_DISPATCH_SECONDS": "1",
        "SYNC_RETRY_BACKOFF_SECONDS": "1",
        # A lease far longer than the test: only taking its own claim back can finish it.
        "SYNC_CLAIM_LEASE_SECONDS": "3600",
    }
    processes = _start_celery(tmp_path, env)
    cut_at = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), _logs(tmp_path)
            stored = EmailLocation.objects.count()
            if cut_at is None and stored:
                # Mid-run: the worker's connection is cut, and for a few seconds nobody may
                # connect, so the run cannot even write how it ended.
                _database_refuses(True)
                cut_at = stored
                time.sleep(3)
                _database_refuses(False)
            if stored == TOTAL and not SyncRun.objects.filter(state="running").exists():
                break
            time.sleep(0.05)
    finally:
        _database_refuses(False)
        _stop(processes)
    assert cut_at is not None and cut_at < TOTAL, cut_at
    assert EmailLocation.objects.count() == TOTAL, _logs(tmp_path)
    states = list(SyncRun.objects.order_by("started_at").values_list("state", "error"))
    assert states[-1][0] == SyncRun.State.SUCCEEDED, states
    # The cut run was closed: as failed by itself, or as interrupted by its retry.
    assert any(
        state in (SyncRun.State.FAILED, SyncRun.State.INTERRUPTED) for state, _error in states
    ), states
    assert not SyncRun.objects.filter(state=SyncRun.State.RUNNING).exists()
    sync = MailboxSync.objects.get(account=account)
    assert sync.failing_since is None and sync.claimed_until is None
    assert "retry" in (tmp_path / "worker.log").read_text().lower()
