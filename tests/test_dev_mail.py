"""The first run: `make dev-mail`'s servers and sample, in a var dir of their own, signed in
to through the wizard (the app's real sign-in check) and downloaded by the real sync.

`make dev-mail` itself never ends, so the test drives the same code (tests.servers.
devmail.DevMail: start, seed, register) that its `main()` runs."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.urls import reverse

from accounts.models import EmailAccount
from crm.models import Company, Contact
from mail.imap_smtp.connection import check_sign_in
from providers.addresses import normalize_address
from providers.models import EmailProvider
from sync.models import Attachment, Email, Folder, SyncRun
from sync.services import mailbox_sync
from tests.factories import UserFactory
from tests.servers.devmail import PROVIDER, USERS, DevMail
from tests.servers.devmail_sample import DEMO, DEMO_COMPANIES, SAMPLES
from tests.servers.dovecot import free_port

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def var_dir():
    # Not under pytest's private temp folders: Dovecot's mail processes run as nobody.
    path = Path(tempfile.mkdtemp(prefix="mailsetup-var-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _settings_in(var_dir: Path, **env) -> str:
    """settings.MAIL_DEV_CA_FILE as a fresh process (make run's web, worker or beat)
    with this var dir reads it."""
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import "
         "settings; print(settings.MAIL_DEV_CA_FILE)"],
        cwd=PROJECT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "mailsetup.settings",
             "MAILSETUP_VAR_DIR": str(var_dir), **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_it_trusts_the_dev_mail_ca_wherever_the_var_dir_points(var_dir):
    assert _settings_in(var_dir, DEBUG="true") == str(var_dir / "dev-mail" / "ca.pem")
    # Never in production, where its private key beside it would be anyone's to use.
    production = {"DEBUG": "false", "SECRET_KEY": "s", "CREDENTIAL_KEYS": "x" * 43 + "="}
    assert _settings_in(var_dir, **production) == "None"
    # make run passes no CA path of its own that would take precedence.
    assert "var/dev-mail/ca.pem" not in (PROJECT / "Makefile").read_text()


def test_it_seeds_a_demo_mailbox_a_newcomer_signs_in_to_and_downloads(
    client, db, settings, var_dir, capsys
):
    # Only what the app finds under this var dir is trusted: not the suite's own CA.
    settings.MAIL_EXTRA_CA_FILE = None
    settings.MAIL_DEV_CA_FILE = str(var_dir / "dev-mail" / "ca.pem")
    settings.MAIL_CONNECT_TIMEOUT = 5
    settings.MEDIA_ROOT = var_dir / "media"
    ports = {"imaps_port": free_port(), "smtp_port": free_port()}
    started = time.monotonic()
    dev = DevMail(var_dir, **ports).start()
    try:
        assert dev.seed() == len(SAMPLES) >= 30
        dev.register()
        seeded = time.monotonic()

        # The newcomer's path: the address leads to the local provider, the password
        # passes the real sign-in check (IMAP and SMTP, TLS verified against the CA).
        client.force_login(UserFactory())
        found = client.post(reverse("accounts:wizard_address"), {"address": DEMO})
        provider = EmailProvider.objects.get(name=PROVIDER)
        assert f"provider={provider.pk}" in found.url
        added = client.post(found.url, {"password": USERS[DEMO]})
        assert added.status_code == 302, added.text
        account = EmailAccount.objects.get(address=DEMO)

        run = mailbox_sync(account_id=account.pk)
        synced = time.monotonic()
        assert run.state == SyncRun.State.SUCCEEDED, run.error
        emails = Email.objects.filter(account=account)
        assert emails.count() == len(SAMPLES)
        paths = set(Folder.objects.filter(account=account).values_list("path", flat=True))
        assert {"INBOX", "Sent", "Customers/Northwind/Contracts", "Newsletters"} <= paths
        assert Folder.objects.get(account=account, path="Sent").special_use.lower() == "\\sent"
        attachment = Attachment.objects.get(email__account=account)
        assert attachment.name == "Northwind-framework-agreement-2025.pdf"
        assert attachment.file.read().startswith(b"%PDF-")
        newsletter = emails.get(subject__startswith="Three habits")
        assert "Read the" in newsletter.html_body
        assert emails.filter(seen=False).count() == sum(not s.seen for s in SAMPLES)

        # Emails from and to the demo company's people are on their timelines.
        northwind = Company.objects.get(web_domain="northwind.test")
        assert northwind.contacts.count() == len(DEMO_COMPANIES[0][2])
        nancy = Contact.objects.get(addresses__address="nancy.davolio@northwind.test")
        from_nancy = sum("nancy.davolio@" in s.sender for s in SAMPLES)
        assert nancy.emails.filter(from_address="nancy.davolio@northwind.test").count() == (
            from_nancy
        )
        assert northwind.emails.count() >= 10
        with capsys.disabled():
            print(
                f"\nmake dev-mail's start and seeding {seeded - started:.1f} s, "
                f"sign-in and first sync of {len(SAMPLES)} emails {synced - seeded:.1f} s"
            )

        # A restart: the same CA, the same mail, nothing added twice.
        ca_before = dev.ca_file.read_bytes()
        dev.stop()
        dev = DevMail(var_dir, **ports).start()
        assert dev.seed() == 0
        dev.register()
        assert dev.ca_file.read_bytes() == ca_before
        check_sign_in(
            provider=provider, address=normalize_address(DEMO), login=DEMO,
            password=USERS[DEMO],
        )  # fmt: skip
        again = mailbox_sync(account_id=account.pk)
        assert again.state == SyncRun.State.SUCCEEDED, again.error
        assert (again.new_emails, emails.count()) == (0, len(SAMPLES))
        assert Company.objects.filter(web_domain="northwind.test").count() == 1
    finally:
        dev.stop()


def test_it_finishes_an_interrupted_seeding_without_duplicates(db, settings, var_dir):
    settings.MAIL_DEV_CA_FILE = str(var_dir / "dev-mail" / "ca.pem")
    dev = DevMail(var_dir, imaps_port=free_port(), smtp_port=free_port()).start()
    try:
        assert dev.seed() == len(SAMPLES)
        # As if it had stopped before writing that it was done.
        (dev.dovecot.root / "seeded").unlink()
        assert dev.seed() == 0
        with dev._client(DEMO) as imap:
            counts = {
                folder: imap.folder_status(folder, ["MESSAGES"])[b"MESSAGES"]
                for folder in {s.folder for s in SAMPLES}
            }
        assert sum(counts.values()) == len(SAMPLES)
    finally:
        dev.stop()


def test_it_runs_dovecot_without_root_for_a_developer_who_has_none(var_dir):
    """`make dev-mail` on a laptop runs as its owner: Dovecot's rootless mode (no setuid,
    no chroot, one account). As root here, the suite starts it as nobody to prove it."""
    import ssl

    from imapclient import IMAPClient

    from tests.servers.certs import test_ca
    from tests.servers.dovecot import Dovecot, DovecotUser

    if os.geteuid() != 0:
        pytest.skip("the suite itself runs without root: every Dovecot it starts is rootless")
    server = Dovecot(
        root=var_dir / "dovecot", users=[DovecotUser("dev@example.test", "pw")], user="nobody"
    )
    server.root.mkdir()
    server.start()
    try:
        status = Path(f"/proc/{server.process.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()
        assert set(uids[1:]) == {"65534"}  # real, effective, saved, filesystem: no root
        context = ssl.create_default_context()
        test_ca().configure_trust(context)
        with IMAPClient("localhost", port=server.imaps_port, ssl_context=context) as client:
            client.login("dev@example.test", "pw")
            client.append("INBOX", b"Subject: kept\r\n\r\nby nobody\r\n")
            assert client.select_folder("INBOX")[b"EXISTS"] == 1
        stored = list((server.root / "mail" / "dev@example.test").rglob("*,S=*"))
        assert [path.stat().st_uid for path in stored] == [65534]
    finally:
        server.stop()
