"""Push benchmark (issue 18): `python bench/push_bench.py` (PostgreSQL database
`mailsetup_bench_push`, created anew; Redis database 14 as the broker, emptied).

Starts its own Dovecot, a Celery worker and `manage.py mail_listener` as real processes,
as production runs them, and prints one line per figure (also written to bench/results/).
Figures are measured, never asserted: run it on a quiet machine.

B4  push latency: `--messages` (100) messages appended one by one to a watched mailbox at
    random intervals (0.1-1 s); for each, the time from APPEND's OK to its email row
    existing: p50, p95 and max (target p95 <= 3 s with the default settings).
B5  scale: `--mailboxes` (1,000) Dovecot users watched by one
    listener process: the time until all are watching, its peak RSS, its CPU use over
    `--idle-seconds` (10) of idling, and after a Dovecot restart the time until all are
    watching again (target <= 60 s, the reconnects spread by the backoff's jitter).
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
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sync_bench import _cpu_seconds, _peak_rss_kb, _recreate_database  # noqa: E402

PASSWORD = "bench-secret"  # noqa: S105 (a test server's user)


def message(subject: str) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = "Peter Partner <peter@partner.test>"
    msg["To"] = "push@example.test"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain="partner.test")
    msg.set_content("Hello, this came by push.\n" * 20)
    return msg.as_bytes()


def wait_until(check, within: float, what: str) -> float:
    began = time.monotonic()
    while time.monotonic() - began < within:
        if check():
            return time.monotonic() - began
        time.sleep(0.05)
    raise RuntimeError(f"not within {within} s: {what}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--mailboxes", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=10)
    options = parser.parse_args()

    database = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailsetup_bench_push"
    )
    broker = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
    _recreate_database(database)
    work = Path(tempfile.mkdtemp(prefix="mailsetup-push-bench-"))
    work.chmod(0o755)
    from tests.servers.certs import test_ca

    ca_file = work / "ca.pem"
    test_ca().cert_pem.write_to_path(str(ca_file))
    os.environ.update(
        {
            "DATABASE_URL": database, "DEBUG": "true", "CELERY_BROKER_URL": broker,
            "DJANGO_SETTINGS_MODULE": "mailsetup.settings", "MAIL_EXTRA_CA_FILE": str(ca_file),
        }
    )  # fmt: skip
    import redis

    redis.Redis.from_url(broker).flushdb()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)

    import django

    django.setup()
    from imapclient import IMAPClient

    from push.models import MailboxWatch
    from sync.models import Email
    from sync.services import mailbox_sync
    from systemsettings.models import SystemSetting
    from tests.factories import EmailAccountFactory, EmailProviderFactory, UserFactory
    from tests.servers.dovecot import Dovecot, DovecotUser

    addresses = ["push@example.test"] + [
        f"scale-{n}@example.test" for n in range(options.mailboxes)
    ]

    class ScaleDovecot(Dovecot):
        # A process per IMAP session (Dovecot's default), and more of them than its
        # default limit of 100.
        def config(self) -> str:
            limit = len(self.users) + 100
            return super().config() + (
                f"default_process_limit = {limit}\ndefault_client_limit = {4 * limit}\n"
                f"service imap {{\n  process_limit = {limit}\n}}\n"
            )

    (work / "dovecot").mkdir()
    dovecot = ScaleDovecot(
        root=work / "dovecot", users=[DovecotUser(a, PASSWORD) for a in addresses],
        performance=True,
    ).start()  # fmt: skip
    SystemSetting.objects.update_or_create(
        code="AllowInternalMailServers", defaults={"value_type": "boolean", "value": "yes"}
    )
    provider = EmailProviderFactory(
        imap_host="localhost", imap_port=dovecot.imaps_port, imap_security="ssl"
    )
    owner = UserFactory()
    context = ssl.create_default_context()
    test_ca().configure_trust(context)
    lines: list[str] = []
    processes: list[subprocess.Popen] = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    def start(*command: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=dict(os.environ))
        processes.append(process)
        return process

    try:
        # --- B4 -------------------------------------------------------------------------
        account = EmailAccountFactory(
            owner=owner, provider=provider, address=addresses[0], login=addresses[0],
            password=PASSWORD,
        )  # fmt: skip
        mailbox_sync(account_id=account.pk)  # the first sync, as the dispatcher would
        start("-m", "celery", "-A", "mailsetup", "worker", "--pool=solo", "--loglevel=WARNING",
              "--without-mingle", "--without-gossip", "-n", "bench@%h")  # fmt: skip
        listener = start("manage.py", "mail_listener")
        wait_until(
            lambda: MailboxWatch.objects.filter(account=account, state="watching").exists(),
            60, "the mailbox watched",
        )  # fmt: skip
        time.sleep(2)  # the worker connected to the broker
        appended: dict[str, float] = {}
        stored: dict[str, float] = {}
        done = threading.Event()

        def poll() -> None:
            from django.db import connection

            while not done.is_set() or len(stored) < len(appended):
                waiting = [s for s in appended if s not in stored]
                if waiting:
                    found = Email.objects.filter(account=account, subject__in=waiting)
                    now = time.monotonic()
                    for subject in found.values_list("subject", flat=True):
                        stored[subject] = now
                time.sleep(0.02)
            connection.close()

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        with IMAPClient("localhost", port=dovecot.imaps_port, ssl_context=context) as client:
            client.login(addresses[0], PASSWORD)
            for n in range(options.messages):
                time.sleep(random.uniform(0.1, 1.0))
                subject = f"push {n}"
                client.append("INBOX", message(subject))
                appended[subject] = time.monotonic()
        done.set()
        poller.join(timeout=60)
        latencies = sorted(stored[s] - appended[s] for s in appended if s in stored)
        p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
        report(
            f"Push B4 (issue 18), latency: {len(latencies)} of {len(appended)} messages stored; from "
            f"APPEND's OK to the email row p50 {statistics.median(latencies):.2f} s, "
            f"p95 {p95:.2f} s, max {latencies[-1]:.2f} s (target p95 <= 3 s)"
        )
        listener.terminate()
        listener.wait(timeout=30)
        processes.remove(listener)

        # --- B5 -------------------------------------------------------------------------
        scale = [
            EmailAccountFactory(
                owner=owner, provider=provider, address=a, login=a, password=PASSWORD
            )
            for a in addresses[1:]
        ]
        ids = [a.pk for a in scale]

        def watching() -> int:
            return MailboxWatch.objects.filter(account_id__in=ids, state="watching").count()

        listener = start("manage.py", "mail_listener")
        first = wait_until(lambda: watching() == len(ids), 600, "every mailbox watched")
        cpu_before = _cpu_seconds(listener.pid)
        time.sleep(options.idle_seconds)
        idle_cpu = (_cpu_seconds(listener.pid) - cpu_before) / options.idle_seconds
        dovecot.stop()
        wait_until(lambda: watching() == 0, 120, "the restart noticed")
        dovecot.start()
        again = wait_until(lambda: watching() == len(ids), 600, "every mailbox watched again")
        report(
            f"Push B5 (issue 18), scale: {len(ids)} mailboxes all watched by one listener {first:.1f} s after "
            f"it started; its peak RSS {_peak_rss_kb(listener.pid) / 1024:.0f} MB, CPU "
            f"{100 * idle_cpu:.1f} % of a core while idle; after a Dovecot restart all "
            f"watching again {again:.1f} s after the server was back (target <= 60 s)"
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    (results / f"push-{stamp}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
