"""IMAP sync benchmark (issue: download emails). Run with `make bench`.

Starts its own Dovecot, fills one mailbox with generated messages (2-50 KB, a
sixth with attachments, multipart/alternative, non-ASCII headers, six folders, some
nested), syncs it into PostgreSQL (database `mailsetup_bench`, created anew), and
prints one line per figure, also written to bench/results/. Figures are ratios to a
baseline measured in the same run, never absolute promises.

B1  first sync: (a) bare imapclient UID FETCH of every body in batches of 500, no
    parsing, nothing stored; (b) mailbox_sync() in a fresh worker process, into
    PostgreSQL. Rounds alternate a, b. Reports messages/s, MB/s, b/a and peak RSS.
B2  idle re-sync: a bare STATUS of every folder vs a sync with nothing new; latency
    and bytes read from the server (counted by a loopback relay).
B3  one flag change, one append, one expunge, then a sync: what was applied, bytes.
"""

import argparse
import os
import random
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FOLDERS = ["INBOX", "Sent", "Archive", "Archive/2025", "Projects", "Projects/Acme Ü"]
ADDRESS, PASSWORD = "bench@example.test", "bench-secret"
SCALE_ADDRESS = "scale@example.test"
NAMES = ["Jürgen Groß", "Åsa Öberg", "Zoë Dupré", "Ana Peña", "李雷", "Олег Петров", "Sam Lee"]


def generate(count: int, seed: int = 1) -> dict[str, list[bytes]]:
    rng = random.Random(seed)
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"]
    folders: dict[str, list[bytes]] = {name: [] for name in FOLDERS}
    now = datetime.now(UTC)
    for number in range(count):
        name = rng.choice(NAMES)
        message = EmailMessage()
        message["Subject"] = f"Angebot Nr. {number} — Grüße aus München"
        message["From"] = f"{name} <sender{number % 97}@partner{number % 13}.test>"
        message["To"] = ADDRESS
        message["Date"] = format_datetime(now - timedelta(minutes=number))
        message["Message-ID"] = make_msgid(idstring=str(number), domain="bench.test")
        size = rng.randint(2_000, 50_000)
        text = " ".join(rng.choice(words) for _ in range(size // 6))[:size]
        message.set_content(text)
        message.add_alternative(
            f"<html><body><p>{text[: size // 2]}</p></body></html>", subtype="html"
        )
        if number % 6 == 0:
            message.add_attachment(
                rng.randbytes(rng.randint(1_000, 20_000)),
                maintype="application",
                subtype="pdf",
                filename=f"Rechnung {number}.pdf",
            )
        folders[FOLDERS[number % len(FOLDERS)]].append(message.as_bytes())
    return folders


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--mailboxes", type=int, default=1000, help="for the scale figure; 0 skips it"
    )
    options = parser.parse_args()

    database = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailsetup_bench"
    )
    _recreate_database(database)
    os.environ.update(
        {"DATABASE_URL": database, "DEBUG": "true", "DJANGO_SETTINGS_MODULE": "mailsetup.settings"}
    )
    work = Path(tempfile.mkdtemp(prefix="mailsetup-bench-"))

    from tests.servers.certs import test_ca
    from tests.servers.dovecot import Dovecot, DovecotUser
    from tests.servers.proxy import CuttingProxy

    ca_file = work / "ca.pem"
    test_ca().cert_pem.write_to_path(str(ca_file))
    os.environ["MAIL_EXTRA_CA_FILE"] = str(ca_file)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)

    import django

    django.setup()
    from django.conf import settings

    from accounts.models import EmailAccount
    from providers.models import EmailProvider
    from sync.models import Email, Folder, SyncRun
    from sync.services import mailbox_sync
    from systemsettings.models import SystemSetting
    from tests.factories import UserFactory

    (work / "dovecot").mkdir()
    work.chmod(0o755)
    dovecot = Dovecot(
        root=work / "dovecot",
        users=[DovecotUser(ADDRESS, PASSWORD), DovecotUser(SCALE_ADDRESS, PASSWORD)],
    ).start()
    relay = CuttingProxy(dovecot.imaps_port)  # cuts nothing, counts the server's bytes
    context = ssl.create_default_context()
    test_ca().configure_trust(context)
    lines: list[str] = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        from imapclient import IMAPClient

        def client(port=dovecot.imaps_port):
            connection = IMAPClient("localhost", port=port, ssl_context=context)
            connection.login(ADDRESS, PASSWORD)
            return connection

        started = time.monotonic()
        corpus = generate(options.messages)
        total_bytes = sum(len(m) for msgs in corpus.values() for m in msgs)
        with client() as c:
            for folder, messages in corpus.items():
                if not c.folder_exists(folder):
                    c.create_folder(folder)
                for start in range(0, len(messages), 200):
                    c.multiappend(folder, messages[start : start + 200])
        report(f"setup: {options.messages} messages, {total_bytes / 1e6:.1f} MB in {len(FOLDERS)} folders, "
               f"appended in {time.monotonic() - started:.1f} s")  # fmt: skip

        SystemSetting.objects.update_or_create(
            code="AllowInternalMailServers", defaults={"value_type": "boolean", "value": "yes"}
        )
        provider = EmailProvider.objects.create(
            name="Bench", imap_host="localhost", imap_port=relay.port, imap_security="ssl",
            smtp_host="localhost", smtp_port=25, smtp_security="starttls",
        )  # fmt: skip
        account = EmailAccount(
            owner=UserFactory(),
            provider=provider,
            address=ADDRESS,
            login=ADDRESS,
            sync_period="all",
        )
        account.set_password(PASSWORD)
        account.save()

        def bare_fetch() -> float:
            began = time.monotonic()
            with client() as c:
                for folder in FOLDERS:
                    c.select_folder(folder, readonly=True)
                    uids = c.search("ALL")
                    for start in range(0, len(uids), 500):
                        c.fetch(uids[start : start + 500], ["BODY.PEEK[]"])
            return time.monotonic() - began

        # The worker runs as in production: DEBUG off (DEBUG keeps every SQL query in memory).
        worker_env = {
            **os.environ,
            "DEBUG": "false",
            "SECRET_KEY": settings.SECRET_KEY,
            "CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
        }
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent
        # at fork, so it would report this (large) benchmark process instead.
        script = (
            "import django, re; django.setup(); from sync.services import mailbox_sync; "
            f"run = mailbox_sync(account_id={account.pk}); "
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1); "
            "print(run.state, run.new_emails, hwm)"
        )

        def project_sync() -> tuple[float, int, int]:
            Email.objects.filter(account=account).delete()
            Folder.objects.filter(account=account).delete()
            SyncRun.objects.filter(account=account).delete()
            began = time.monotonic()
            output = subprocess.run(
                [sys.executable, "-c", script], cwd=ROOT, env=worker_env,
                capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip
            elapsed = time.monotonic() - began
            if output[0] != "succeeded":
                raise RuntimeError(f"the sync failed: {output}")
            return elapsed, int(output[1]), int(output[2])

        bare, ours, rss = [], [], []
        for round_number in range(options.rounds):
            bare.append(bare_fetch())
            elapsed, stored, peak = project_sync()
            ours.append(elapsed)
            rss.append(peak)
            report(f"B1 round {round_number + 1}: bare fetch {bare[-1]:.2f} s, project sync {elapsed:.2f} s "
                   f"({stored} emails stored), worker peak RSS {peak / 1024:.0f} MB")  # fmt: skip
        a, b = min(bare), min(ours)
        mb = total_bytes / 1e6
        report(f"B1 first sync: bare {options.messages / a:.0f} msg/s ({mb / a:.1f} MB/s); project "
               f"{options.messages / b:.0f} msg/s ({mb / b:.1f} MB/s); b/a = {b / a:.2f} (target <= 2.5); "
               f"worker peak RSS {max(rss) / 1024:.0f} MB (target <= 150)")  # fmt: skip

        # B2: idle re-sync against a bare STATUS of every folder, both through the relay.
        mailbox_sync(account_id=account.pk)  # settle state in this process
        # Five of each, interleaved; the medians are compared (single runs are noisy).
        status_runs, idle_runs = [], []
        for _ in range(5):
            relay.reset()
            began = time.monotonic()
            with client(relay.port) as c:
                for folder in FOLDERS:
                    c.folder_status(
                        folder, [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES", b"HIGHESTMODSEQ"]
                    )
            status_runs.append((time.monotonic() - began, relay.server_bytes))
            relay.reset()
            began = time.monotonic()
            run = mailbox_sync(account_id=account.pk)
            idle_runs.append((time.monotonic() - began, relay.server_bytes))
        status_time, status_bytes = statistics.median(status_runs)
        idle_time, idle_bytes = statistics.median(idle_runs)
        report(f"B2 idle re-sync (median of 5): {idle_time * 1000:.0f} ms, {idle_bytes / 1024:.1f} KB read "
               f"(bare STATUS: {status_time * 1000:.0f} ms, {status_bytes / 1024:.1f} KB); "
               f"ratio {idle_time / status_time:.2f} (target <= 2), new emails {run.new_emails}")  # fmt: skip

        # B3: one flag, one append, one expunge.
        with client() as c:
            c.select_folder("INBOX")
            uids = c.search("ALL")
            c.add_flags([uids[0]], [b"\\Seen"])
            c.delete_messages([uids[1]])
            c.expunge()
            smallest = min(corpus["Sent"], key=len)
            c.append("INBOX", smallest.replace(b"Message-ID: <", b"Message-ID: <b3-", 1))
        relay.reset()
        run = mailbox_sync(account_id=account.pk)
        report(f"B3 changes: {run.flag_changes} flag change, {run.new_emails} new email "
               f"({len(smallest) / 1024:.1f} KB), {run.removed_locations} expunge applied; "
               f"{relay.server_bytes / 1024:.1f} KB read (target < 20 KB)")  # fmt: skip

        if options.mailboxes:
            report(scale_sweep(options.mailboxes, provider, worker_env, client))
    finally:
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"sync-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    path.write_text("\n".join(lines) + "\n")
    print(f"written to {path.relative_to(ROOT)}")


def scale_sweep(count: int, provider, worker_env: dict, client) -> str:
    """Scale: `count` mailboxes with nothing new, swept by 2 Celery workers (Redis)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from accounts.models import EmailAccount
    from sync.models import MailboxSync
    from sync.services import mailbox_sync, mailboxes_due

    with client() as c:
        c.append("INBOX", generate(1)["INBOX"][0])
    User = get_user_model()
    users = User.objects.bulk_create(
        [User(username=f"scale-{n}", password="!") for n in range(count)]  # noqa: S106
    )
    template = EmailAccount(provider=provider, address=SCALE_ADDRESS, login=SCALE_ADDRESS)
    template.set_password(PASSWORD)
    accounts = EmailAccount.objects.bulk_create(
        [
            EmailAccount(
                owner=user,
                provider=provider,
                address=SCALE_ADDRESS,
                login=SCALE_ADDRESS,
                password_encrypted=template.password_encrypted,
            )
            for user in users
        ]
    )
    for account in accounts:  # the first sync of each, so that nothing is new afterwards
        mailbox_sync(account_id=account.pk)
    MailboxSync.objects.filter(account__in=accounts).update(last_started_at=None)
    broker = "redis://127.0.0.1:6379/14"
    import redis

    redis.Redis.from_url(broker).flushdb()
    env = {**worker_env, "CELERY_BROKER_URL": broker}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mailsetup", "worker", "--pool=solo",
             "--loglevel=WARNING", "--without-mingle", "--without-gossip", "-n", f"w{n}@%h"],
            cwd=ROOT, env=env,
        )
        for n in range(2)
    ]  # fmt: skip
    try:
        time.sleep(5)  # let both workers connect before the clock starts
        os.environ["CELERY_BROKER_URL"] = broker
        from mailsetup.celery import app

        app.conf.broker_url = broker
        began = timezone.now()
        started = time.monotonic()
        for account_id in mailboxes_due():
            app.send_task("sync.mailbox", args=[account_id])
        while True:
            done = MailboxSync.objects.filter(
                account__in=accounts, last_success_at__gte=began
            ).count()
            if done >= count or time.monotonic() - started > 300:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    return (f"Scale: {done} of {count} mailboxes with nothing new swept by 2 workers in "
            f"{elapsed:.1f} s (target <= 30 s)")  # fmt: skip


def _recreate_database(url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = url.replace(f"/{name}", "/postgres", 1)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


if __name__ == "__main__":
    main()
