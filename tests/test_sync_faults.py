"""Sync under faults, on the suite's real Dovecot: cut connections, renumbered folders."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from mailsetup.settings import BASE_DIR
from sync.models import Email, EmailLocation, SyncRun
from sync.parsing import parse_message
from sync.services import TransientSyncError, mailbox_sync
from tests.mailbox import make_message
from tests.servers.proxy import CuttingProxy
from tests.test_celery_workers import _database_url

FOLDERS = {"INBOX": 400, "Sent Items ü": 300, "Archive/2026": 300}


def _corpus(seed=11) -> dict[str, list[bytes]]:
    rng = random.Random(seed)
    folders: dict[str, list[bytes]] = {name: [] for name in FOLDERS}
    number = 0
    for folder, count in FOLDERS.items():
        for _ in range(count):
            number += 1
            message = EmailMessage()
            message["Subject"] = f"Message {number} — Grüße"
            message["From"] = f"Sender {number % 17} <sender{number % 17}@partner.test>"
            message["To"] = "team@example.test"
            if number > 10:  # the first ten have no Message-ID
                message["Message-ID"] = make_msgid(idstring=str(number), domain="partner.test")
            message.set_content(("Lorem ipsum dolor sit amet. " * rng.randint(60, 600))[:20000])
            folders[folder].append(message.as_bytes())
    # Ten messages sit in two folders each, with the same Message-ID.
    shared = folders["INBOX"][100:110]
    folders["Archive/2026"][:10] = shared
    return folders


def _server_keys(mailbox, extra: int = 0) -> dict[tuple[str, int], str]:
    keys = {}
    with mailbox.client() as client:
        for folder in FOLDERS:
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            for start in range(0, len(uids), 200):
                batch = uids[start : start + 200]
                for uid, item in client.fetch(batch, ["BODY.PEEK[]"]).items():
                    keys[(folder, uid)] = parse_message(item[b"BODY[]"]).message_key
    assert len(keys) == 1000 + extra
    return keys


@pytest.fixture
def filled(synced_mailbox):
    account, mailbox = synced_mailbox
    with mailbox.client() as client:
        for folder, messages in _corpus().items():
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for start in range(0, len(messages), 100):
                client.multiappend(folder, messages[start : start + 100])
    return account, mailbox


def _stored() -> dict[tuple[str, int], str]:
    return {
        (location.folder.path, location.uid): location.email.message_key
        for location in EmailLocation.objects.select_related("folder", "email")
    }


def test_it_loses_and_duplicates_nothing_when_connections_are_cut_mid_fetch(
    filled, dovecot, test_provider
):
    account, mailbox = filled
    proxy = CuttingProxy(dovecot.imaps_port, cuts=50, low=4_000, high=900_000)
    test_provider.imap_port = proxy.port
    test_provider.save()
    attempts = 0
    try:
        while True:
            attempts += 1
            assert attempts < 200, "the sync never got through"
            try:
                run = mailbox_sync(account_id=account.pk)
            except TransientSyncError:
                continue
            if run.state == SyncRun.State.SUCCEEDED:
                break
    finally:
        proxy.close()
    server = _server_keys(mailbox)
    stored = _stored()
    assert proxy.cut_count == 50
    assert len(server) == 1000
    assert stored == server  # every server copy once, each with the right message
    assert Email.objects.count() == len(set(server.values())) == 990
    print(f"\nF1: {proxy.cut_count} cuts, {attempts} runs, {len(stored)} of {len(server)} "
          f"copies stored, {Email.objects.count()} emails, 0 lost, 0 duplicated")  # fmt: skip


def test_it_resumes_without_loss_or_duplicates_after_the_worker_is_killed(
    transactional_db, filled, mail_trust, settings
):
    account, mailbox = filled
    env = {
        **os.environ,
        "DEBUG": "true",
        "DATABASE_URL": _database_url(),
        "CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
        "MAIL_EXTRA_CA_FILE": str(mail_trust),
        "SYNC_CLAIM_LEASE_SECONDS": "1",
    }
    script = (
        "import django; django.setup(); from sync.services import mailbox_sync; "
        f"mailbox_sync(account_id={account.pk})"
    )
    kills = 0
    progress = []
    for _ in range(5):
        before = EmailLocation.objects.count()
        worker = subprocess.Popen([sys.executable, "-c", script], cwd=BASE_DIR, env=env)
        # Kill it as soon as it has stored something: mid-sync, whatever the speed.
        while worker.poll() is None and EmailLocation.objects.count() == before:
            time.sleep(0.02)
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
            kills += 1
        worker.wait()
        progress.append(EmailLocation.objects.count())
        time.sleep(1.1)  # the dead worker's claim runs out
    settings.SYNC_CLAIM_LEASE_SECONDS = 1
    run = mailbox_sync(account_id=account.pk)
    assert run is not None and run.state == SyncRun.State.SUCCEEDED, run and run.error
    assert kills >= 1
    assert any(0 < count < 1000 for count in progress), progress  # killed mid-sync
    server = _server_keys(mailbox)
    assert _stored() == server
    assert Email.objects.count() == 990
    print(
        f"\nF3: worker killed {kills} times (stored copies after each: {progress}); "
        f"{len(server)} copies, 0 lost, 0 duplicated"
    )


def test_it_picks_up_messages_appended_while_it_syncs(filled):
    account, mailbox = filled
    appended = []

    def append_more():
        with mailbox.client() as client:
            for number in range(200):
                raw = make_message(subject=f"late {number}")
                client.append("INBOX", raw)
                appended.append(raw)

    thread = threading.Thread(target=append_more)
    thread.start()
    first = mailbox_sync(account_id=account.pk)
    thread.join()
    second = mailbox_sync(account_id=account.pk)
    assert first.state == second.state == SyncRun.State.SUCCEEDED
    assert len(appended) == 200
    assert Email.objects.filter(subject__startswith="late ").count() == 200
    assert _stored() == _server_keys(mailbox, extra=200)
