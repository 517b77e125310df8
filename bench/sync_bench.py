"""IMAP sync benchmark (issue: download emails). Run with `make bench`.

Starts its own Dovecot, fills one mailbox with generated messages (2-50 KB, a
sixth with attachments, multipart/alternative, non-ASCII headers, six folders, some
nested), syncs it into PostgreSQL (database `mailsetup_bench`, created anew), and
prints one line per figure, also written to bench/results/. Figures are ratios to a
baseline measured in the same run, never absolute promises.

B1  first sync: (a) bare imapclient UID FETCH of every body in batches of 500, no
    parsing, nothing stored; (b) mailbox_sync() in a fresh worker process, into
    PostgreSQL. Rounds alternate a, b. Reports messages/s, MB/s, b/a and peak RSS, and
    when every email became searchable (its search vector is filled after the store).
B2  idle re-sync: a bare STATUS of every folder vs a sync with nothing new; latency
    and bytes read from the server (counted by a loopback relay).
B3  one flag change, one append, one expunge, then a sync: what was applied, bytes.
B6  pages flat in volume (issue 19, bench/pages_bench.py): every list page, search,
    both timelines, an email, the mailbox list and the status partial, at about 100
    and at 300,000 emails (`--pages-emails`), 20 clients against gunicorn; throughput
    ratio and p95, and the EXPLAIN of each page's slowest query. `--pages-only` runs
    only B6; `--pages-emails 0` skips it.
B4  a 50 MB message among ordinary ones (issue 14): the worker's peak RSS syncing them
    through a real Celery worker, next to the same worker's peak for the same ordinary
    messages alone (synced first, in another mailbox). `--large-only` runs only B4.
"""

import argparse
import contextlib
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
# B4: the same ordinary messages in both; the 50 MB one among them in the second only.
PLAIN_ADDRESS, LARGE_ADDRESS = "plain@example.test", "large@example.test"
POOL = "prefork"
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
        # 2-50 KB for the whole message: headers, both alternatives and any attachment.
        size = rng.randint(2_000, 50_000)
        attachment = (
            rng.randint(1_000, max(1_000, min(20_000, size // 3))) if number % 6 == 0 else 0
        )
        budget = max(600, size - attachment * 4 // 3 - 900)
        text = " ".join(rng.choice(words) for _ in range(budget // 6))[: budget * 3 // 5]
        message.set_content(text)
        message.add_alternative(
            f"<html><body><p>{text[: budget * 2 // 5]}</p></body></html>", subtype="html"
        )
        if attachment:
            message.add_attachment(
                rng.randbytes(attachment),
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
        "--mailboxes", type=int, default=10_000, help="for the scale figure; 0 skips it"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="write a cProfile of one project sync to bench/results/",
    )
    parser.add_argument(
        "--pool", default="prefork", choices=["prefork", "solo"], help="the workers' Celery pool"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="print the worker's fetch/parse/store times"
    )
    parser.add_argument(
        "--parse-free", action="store_true",
        help="only B1, with each message's parsing kept by the worker from the first round "
        "and taken from there in the next ones: what a first sync costs when parsing costs "
        "nothing (an experiment: the first round is left out of the figures, and the "
        "worker's RSS holds every parsed message)",
    )  # fmt: skip
    parser.add_argument(
        "--large-only", action="store_true", help="only B4, the large message's peak RSS"
    )
    parser.add_argument("--large-mb", type=int, default=50, help="B4's large message, in MB")
    parser.add_argument(
        "--size-limit-mb", type=int, default=None,
        help="B4 with MaxMessageSizeMB set to this (default: the app's, 25): above the large "
        "message's size, its attachment is downloaded (read part by part) instead of listed",
    )  # fmt: skip
    parser.add_argument(
        "--large-messages", type=int, default=600, help="B4's ordinary messages around it"
    )
    parser.add_argument(
        "--pages-only", action="store_true", help="only B6, the pages at two volumes"
    )
    parser.add_argument(
        "--pages-emails", type=int, default=300_000,
        help="B6's large size in emails (the small one is 100); 0 skips B6",
    )  # fmt: skip
    parser.add_argument(
        "--pages-seconds", type=float, default=10, help="B6: how long each page is driven"
    )
    options = parser.parse_args()
    if options.parse_free and options.rounds < 2:
        parser.error("--parse-free needs --rounds 2 or more: the first round only parses")
    if options.pages_only:
        pages_only(options)
        return
    global POOL
    POOL = options.pool
    if options.large_only:
        large_only(options)
        return

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
        users=[
            DovecotUser(name, PASSWORD)
            for name in (ADDRESS, SCALE_ADDRESS, PLAIN_ADDRESS, LARGE_ADDRESS)
        ],
        performance=True,
    ).start()
    relay = CuttingProxy(dovecot.imaps_port)  # cuts nothing, counts the server's bytes
    context = ssl.create_default_context()
    test_ca().configure_trust(context)
    lines: list[str] = []
    workers_started: list = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        from imapclient import IMAPClient

        from mail.imap_smtp import wire

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
        # Timed figures go straight to Dovecot, as the bare fetch does: the byte-counting
        # relay is a Python thread in this process, on the two cores the sync shares.
        direct = EmailProvider.objects.create(
            name="Bench direct", imap_host="localhost", imap_port=dovecot.imaps_port,
            imap_security="ssl", smtp_host="localhost", smtp_port=25, smtp_security="starttls",
        )  # fmt: skip
        account = EmailAccount(
            owner=UserFactory(),
            provider=direct,
            address=ADDRESS,
            login=ADDRESS,
            sync_period="all",
        )
        account.set_password(PASSWORD)
        account.save()

        def bare_fetch(quiet: bool = False) -> float:
            began = time.monotonic()
            with client() as c:
                if quiet:
                    # IMAPClient sets imaplib's debug level so that every response is
                    # formatted for its logger; the project's sessions turn that off.
                    wire.quiet(c)
                for folder in FOLDERS:
                    c.select_folder(folder, readonly=True)
                    uids = c.search("ALL")
                    for start in range(0, len(uids), 500):
                        c.fetch(uids[start : start + 500], ["BODY.PEEK[]"])
            return time.monotonic() - began

        # The worker runs as in production: DEBUG off (DEBUG keeps every SQL query in
        # memory), a prefork child taking tasks from Redis.
        broker = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
        import redis

        redis.Redis.from_url(broker).flushdb()
        worker_env = {
            **os.environ,
            "DEBUG": "false",
            "SECRET_KEY": settings.SECRET_KEY,
            "CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
            "CELERY_BROKER_URL": broker,
        }
        os.environ["CELERY_BROKER_URL"] = broker
        from mailsetup.celery import app

        app.conf.broker_url = broker
        breakdown_file = work / "breakdown.txt"
        extra = ["--breakdown", str(breakdown_file)] if options.breakdown else []
        if options.profile:
            (ROOT / "bench" / "results").mkdir(exist_ok=True)
            extra += ["--profile", str(ROOT / "bench" / "results" / "b1-profile")]
        b1_env = worker_env
        if options.parse_free:
            # Parsed in the worker, where the kept results are: no parser process.
            b1_env = worker_env | {"MAIL_PARSE_PROCESS": "false"}
            extra += ["--parse-free"]
        b1_worker = start_workers(1, b1_env, extra)[0]
        workers_started.append(b1_worker)

        def project_sync() -> tuple[float, int, int]:
            Email.objects.filter(account=account).delete()
            Folder.objects.filter(account=account).delete()
            SyncRun.objects.filter(account=account).delete()
            child = _pool_child(b1_worker.pid)
            # Resets the peak RSS (VmHWM) of the child and its parser process, so each
            # round reports its own.
            for pid in (child, _parser_process(child)):
                if pid is not None:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
            resting.append(_peak_rss_kb(child))
            cpu_before = _cpu_seconds(child)
            groups_before = _cpu_by_group(child)
            began, sent_at = time.monotonic(), time.time()
            app.send_task("sync.mailbox", args=[account.pk])
            # The end is the run's own finishing time (written by the worker, same
            # clock), so the polling can be slow: every poll is a query on the two
            # cores the sync shares, and fast polling made b look worse than it is.
            while not SyncRun.objects.filter(account=account).exclude(state="running").exists():
                if time.monotonic() - began > 1800:
                    raise RuntimeError("the worker did not finish the sync in 30 minutes")
                time.sleep(0.25)
            groups = _cpu_by_group(child)
            run = SyncRun.objects.get(account=account)
            elapsed = run.finished_at.timestamp() - sent_at
            spent = {name: groups[name] - groups_before.get(name, 0.0) for name in groups}
            report(f"B1 CPU while syncing ({elapsed:.2f} s on {os.cpu_count()} cores): " + ", ".join(
                f"{name} {seconds:.2f} s" for name, seconds in spent.items()))  # fmt: skip
            if run.state != "succeeded":
                raise RuntimeError(f"the sync failed: {run.error}")
            # Search vectors are filled after the store (sync.search.vectors_fill), by
            # tasks the sync queued, here on the same worker once the sync is done.
            while Email.objects.filter(account=account, search__isnull=True).exists():
                if time.monotonic() - began > 1800:
                    raise RuntimeError("the search vectors were not filled in 30 minutes")
                time.sleep(0.25)
            searchable.append(time.time() - sent_at)
            # What a first sync costs the machine in all: its own CPU, and the search
            # vectors' fill after it (to_tsvector over every body, in PostgreSQL).
            after_fill = _cpu_by_group(child)
            filling.append({name: after_fill[name] - groups[name] for name in after_fill})
            busy.append(sum(spent[name] for name in ("worker", "parser", "postgres", "dovecot",
                                                       "redis")))  # fmt: skip
            if options.breakdown:
                report(f"B1 worker breakdown: {breakdown_file.read_text().strip()}, "
                       f"worker CPU {_cpu_seconds(child) - cpu_before:.2f} s, its parser "
                       f"process's {spent['parser']:.2f} s")  # fmt: skip
            parser = _parser_process(child)
            parser_rss.append(_peak_rss_kb(parser) if parser else 0)
            return elapsed, run.new_emails, _peak_rss_kb(child)

        bare, quiet, ours, rss, searchable, parser_rss = [], [], [], [], [], []
        busy, filling = [], []
        # The worker's RSS at rest before each sync (its peak just reset): what the
        # sync itself adds is the peak less this.
        resting = []
        for round_number in range(options.rounds):
            bare.append(bare_fetch())
            quiet.append(bare_fetch(quiet=True))
            elapsed, stored, peak = project_sync()
            ours.append(elapsed)
            rss.append(peak)
            report(f"B1 round {round_number + 1}: bare fetch {bare[-1]:.2f} s (debug formatting off: "
                   f"{quiet[-1]:.2f} s), project sync {elapsed:.2f} s ({stored} emails stored), "
                   f"all searchable after {searchable[-1]:.2f} s, "
                   f"worker peak RSS {peak / 1024:.0f} MB (at rest before it "
                   f"{resting[-1] / 1024:.0f} MB; its parser process "
                   f"{parser_rss[-1] / 1024:.0f} MB)")  # fmt: skip
        _stop([b1_worker])
        label = "B1"
        if options.parse_free:
            # The first round parsed (and kept) every message: not what is measured.
            for figures in (bare, quiet, ours, rss, searchable, parser_rss, busy, filling):
                del figures[0]
            label = "B1 with parsing free (rounds 2 on)"
        a, q, b = min(bare), min(quiet), min(ours)
        n, mb = options.messages, total_bytes / 1e6
        report(f"{label} first sync: bare {n / a:.0f} msg/s ({mb / a:.1f} MB/s); project {n / b:.0f} msg/s "
               f"({mb / b:.1f} MB/s); b/a = {b / a:.2f} (target <= 2.5); peak RSS of the worker "
               f"{max(rss) / 1024:.0f} MB and its parser process {max(parser_rss) / 1024:.0f} MB, "
               f"together at most {max(map(sum, zip(rss, parser_rss, strict=True))) / 1024:.0f} "
               f"MB (target <= 150)")  # fmt: skip
        fill = [s_ - o for s_, o in zip(searchable, ours, strict=True)]
        report(f"{label} search vectors: filled after the sync by the same one-process worker, all "
               f"{n} searchable {min(searchable):.2f} s after the sync began (filling "
               f"{n / max(min(fill), 1e-3):.0f} emails/s)")  # fmt: skip
        report(f"{label} against the bare fetch with imaplib's debug formatting off ({n / q:.0f} msg/s): "
               f"b/a = {b / q:.2f}")  # fmt: skip
        # The sync cannot end sooner than its processes' CPU time spread over every core:
        # how far overlapping them could take b/a, whatever the scheduling.
        cores = os.cpu_count() or 1
        floor = min(busy) / cores
        report(f"{label} CPU floor: the sync's processes spent {min(busy):.2f}-{max(busy):.2f} CPU-s, "
               f"{floor:.2f} s at the least on {cores} cores: b/a {floor / q:.2f} against the "
               f"bare fetch without debug formatting if nothing ever waited; the search "
               f"vectors' fill after it {min(f['postgres'] for f in filling):.2f}-"
               f"{max(f['postgres'] for f in filling):.2f} CPU-s of PostgreSQL and "
               f"{min(f['worker'] for f in filling):.2f}-{max(f['worker'] for f in filling):.2f}"
               " of the worker")  # fmt: skip

        if not options.parse_free:
            # B2: idle re-sync against a bare STATUS of every folder. Latency is timed straight
            # to Dovecot (the counting relay is a Python thread in this process and made the
            # timings noisy); the bytes are counted through the relay, once each.

            def bare_status(port: int) -> None:
                with client(port) as c:
                    wire.quiet(c)  # as in the project's sessions
                    for folder in FOLDERS:
                        c.folder_status(
                            folder, [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES", b"HIGHESTMODSEQ"]
                        )

            def via(provider_row) -> None:
                EmailAccount.objects.filter(pk=account.pk).update(provider=provider_row)

            mailbox_sync(account_id=account.pk)  # settle state in this process
            status_times, idle_times = [], []
            for _ in range(9):  # interleaved; medians compared (single runs are noisy)
                began = time.monotonic()
                bare_status(dovecot.imaps_port)
                status_times.append(time.monotonic() - began)
                began = time.monotonic()
                run = mailbox_sync(account_id=account.pk)
                idle_times.append(time.monotonic() - began)
            relay.reset()
            bare_status(relay.port)
            status_bytes = relay.server_bytes
            via(provider)
            relay.reset()
            mailbox_sync(account_id=account.pk)
            idle_bytes = relay.server_bytes
            status_time, idle_time = statistics.median(status_times), statistics.median(idle_times)
            report(f"B2 idle re-sync (median of 9): {idle_time * 1000:.0f} ms, {idle_bytes / 1024:.1f} KB read "
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

            report(large_message_figure(dovecot, worker_env, options))

            if options.mailboxes:
                # Straight to Dovecot: the byte-counting relay is one Python thread in this
                # process and would be the bottleneck of a thousand connections.
                report(scale_sweep(options.mailboxes, direct, worker_env, client))
    finally:
        _stop(workers_started)
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)
    if options.pages_emails and not options.parse_free:
        # Its own process: B6 serves the app with DEBUG off on another database.
        b6 = subprocess.run(
            [sys.executable, __file__, "--pages-only", "--pages-emails",
             str(options.pages_emails), "--pages-seconds", str(options.pages_seconds)],
            cwd=ROOT, check=True, capture_output=True, text=True,
        )  # fmt: skip
        for line in b6.stdout.splitlines():
            if line.startswith("B6"):
                report(line)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"sync-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    path.write_text("\n".join(lines) + "\n")
    print(f"written to {path.relative_to(ROOT)}")


def pages_only(options) -> None:
    """`--pages-only`: B6 alone (bench/pages_bench.py)."""
    from pages_bench import pages_figure

    lines: list[str] = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    pages_figure(options.pages_emails or 300_000, options.pages_seconds, report)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"pages-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    path.write_text("\n".join(lines) + "\n")
    print(f"written to {path.relative_to(ROOT)}")


def large_message_figure(dovecot, worker_env: dict, options) -> str:
    """B4: one worker's peak RSS (VmHWM of its prefork child, reset before each sync)
    for `--large-messages` ordinary messages alone, then for the same messages with one
    `--large-mb` MB message among them; the app's limits decide what is stored of it."""
    from imapclient import IMAPClient

    from accounts.models import EmailAccount
    from mailsetup.celery import app
    from providers.models import EmailProvider
    from sync.models import Attachment, Email, SyncRun
    from systemsettings.models import SystemSetting
    from tests.factories import UserFactory
    from tests.hostile import huge_message
    from tests.servers.certs import test_ca

    ordinary = [m for msgs in generate(options.large_messages, seed=4).values() for m in msgs]
    large = huge_message(options.large_mb)
    half = len(ordinary) // 2
    context = ssl.create_default_context()
    test_ca().configure_trust(context)
    for address, messages in (
        (PLAIN_ADDRESS, ordinary),
        (LARGE_ADDRESS, [*ordinary[:half], large.raw, *ordinary[half:]]),
    ):
        with IMAPClient("localhost", port=dovecot.imaps_port, ssl_context=context) as c:
            c.login(address, PASSWORD)
            for start in range(0, len(messages), 50):
                c.multiappend("INBOX", messages[start : start + 50])

    SystemSetting.objects.update_or_create(
        code="AllowInternalMailServers", defaults={"value_type": "boolean", "value": "yes"}
    )
    if options.size_limit_mb:
        SystemSetting.objects.update_or_create(
            code="MaxMessageSizeMB",
            defaults={"value_type": "integer", "value": str(options.size_limit_mb)},
        )
    limit = SystemSetting.objects.get(code="MaxMessageSizeMB").value
    provider = EmailProvider.objects.create(
        name="Bench B4", imap_host="localhost", imap_port=dovecot.imaps_port,
        imap_security="ssl", smtp_host="localhost", smtp_port=25, smtp_security="starttls",
    )  # fmt: skip
    accounts = {}
    for address in (PLAIN_ADDRESS, LARGE_ADDRESS):
        account = EmailAccount(
            owner=UserFactory(), provider=provider, address=address, login=address,
            sync_period="all",
        )  # fmt: skip
        account.set_password(PASSWORD)
        account.save()
        accounts[address] = account

    worker = start_workers(1, worker_env)[0]
    try:
        child = _pool_child(worker.pid)
        peaks = {}
        for address, account in accounts.items():
            for pid in (child, _parser_process(child)):
                if pid is not None:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM from here on
            began = time.monotonic()
            app.send_task("sync.mailbox", args=[account.pk])
            while not SyncRun.objects.filter(account=account).exclude(state="running").exists():
                if time.monotonic() - began > 900:
                    raise RuntimeError("B4: the worker did not finish the sync in 15 minutes")
                time.sleep(0.25)
            run = SyncRun.objects.get(account=account)
            if run.state != "succeeded":
                raise RuntimeError(f"B4: the sync of {address} failed: {run.error}")
            parser = _parser_process(child)
            # The worker and its parser process together (sync/parsing_process.py).
            both = _peak_rss_kb(child) + (_peak_rss_kb(parser) if parser else 0)
            peaks[address] = (both / 1024, run.new_emails)
    finally:
        _stop([worker])
    email = Email.objects.filter(account=accounts[LARGE_ADDRESS], subject=large.subject).first()
    if email is None:
        stored = "NOT STORED"
    else:
        files = Attachment.objects.filter(email=email).exclude(file="").count()
        stored = (
            f"stored with its attachment{'' if files else ' listed, not stored'}"
            f"{f', problem {email.problem!r}: {email.notes!r}' if email.problem else ', no note'}"
        )
    (base, base_emails), (peak, emails) = peaks[PLAIN_ADDRESS], peaks[LARGE_ADDRESS]
    size = len(large.raw) / 1e6
    return (f"B4 large message: peak RSS of the worker and its parser process {peak:.0f} MB "
            f"syncing {emails} emails, one of "
            f"them {size:.0f} MB (target < 150 MB); the same worker's peak for the "
            f"{base_emails} ordinary ones alone: {base:.0f} MB (+{peak - base:.0f} MB); "
            f"MaxMessageSizeMB {limit}: the large one {stored}")  # fmt: skip


def large_only(options) -> None:
    """`--large-only`: B4 with the setup it needs (database, Dovecot, broker), no more."""
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

    ca_file = work / "ca.pem"
    test_ca().cert_pem.write_to_path(str(ca_file))
    os.environ["MAIL_EXTRA_CA_FILE"] = str(ca_file)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    import django

    django.setup()
    import redis
    from django.conf import settings

    from mailsetup.celery import app

    broker = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
    redis.Redis.from_url(broker).flushdb()
    os.environ["CELERY_BROKER_URL"] = broker
    app.conf.broker_url = broker
    worker_env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,
        "CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
        "CELERY_BROKER_URL": broker,
    }
    (work / "dovecot").mkdir()
    work.chmod(0o755)
    users = [DovecotUser(PLAIN_ADDRESS, PASSWORD), DovecotUser(LARGE_ADDRESS, PASSWORD)]
    dovecot = Dovecot(root=work / "dovecot", users=users, performance=True).start()
    try:
        line = large_message_figure(dovecot, worker_env, options)
        print(line, flush=True)
    finally:
        dovecot.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"sync-large-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    path.write_text(line + "\n")
    print(f"written to {path.relative_to(ROOT)}")


def scale_sweep(count: int, provider, worker_env: dict, client) -> str:
    """Scale: `count` mailboxes with nothing new, swept by 2 Celery workers (Redis)."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from accounts.models import EmailAccount
    from sync.models import MailboxSync
    from sync.services import mailboxes_due

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
    workers = start_workers(2, worker_env)
    from mailsetup.celery import app

    def workers_cpu() -> float:
        pids = {w.pid for w in workers} | {_pool_child(w.pid) for w in workers}
        return sum(_cpu_seconds(pid) for pid in pids)

    try:
        # The first sync of each, by the same workers, so that nothing is new afterwards.
        began = timezone.now()
        for account in accounts:
            app.send_task("sync.mailbox", args=[account.pk])
        synced = MailboxSync.objects.filter(account__in=accounts, last_success_at__gte=began)
        while synced.count() < count:
            if (timezone.now() - began).total_seconds() > 1800:
                raise RuntimeError("the first syncs of the scale mailboxes took over 30 minutes")
            time.sleep(1)
        first = (timezone.now() - began).total_seconds()
        MailboxSync.objects.filter(account__in=accounts).update(last_started_at=None)

        cpu_before = workers_cpu()
        began = timezone.now()
        started = time.monotonic()
        for account_id in mailboxes_due():
            app.send_task("sync.mailbox", args=[account_id])
        queued = time.monotonic() - started
        while True:
            done = MailboxSync.objects.filter(
                account__in=accounts, last_success_at__gte=began
            ).count()
            if done >= count or time.monotonic() - started > 1800:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        cpu = (workers_cpu() - cpu_before) / max(done, 1) * 1000
        # What the same workers need for as many tasks that do almost nothing (one small
        # write): Celery's and the database's share of the figure above.
        import redis

        broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
        began_empty = time.monotonic()
        for _ in range(count):
            app.send_task("sync.heartbeat")
        while broker.llen("celery") or broker.hlen("unacked"):
            time.sleep(0.02)
        empty = time.monotonic() - began_empty
    finally:
        _stop(workers)
    from sync.models import SyncRun

    inside = sorted(
        (run.finished_at - run.started_at).total_seconds()
        for run in SyncRun.objects.filter(account__in=accounts, started_at__gte=began)
    )
    median = inside[len(inside) // 2] * 1000 if inside else float("nan")
    # Issue 19's target: 10,000 mailboxes in 150 s, the same rate for other counts.
    target = 150 * count / 10_000
    return (f"Scale: {done} of {count} mailboxes with nothing new swept by 2 workers in "
            f"{elapsed:.1f} s (target <= {target:.0f} s, {count / max(elapsed, 1e-3):.0f} "
            f"mailboxes/s); a run takes {median:.0f} ms inside the task "
            f"(median), the workers' CPU time is {cpu:.0f} ms per mailbox; all queued in "
            f"{queued:.1f} s; {count} tasks that do nothing take {empty:.1f} s; their first "
            f"syncs took {first:.0f} s")  # fmt: skip


def start_workers(count: int, env: dict, extra: list[str] | None = None) -> list:
    """`count` Celery workers (one prefork child each, as in production), connected."""
    workers = [
        subprocess.Popen(
            [sys.executable, "bench/worker.py", *(extra or []), f"--pool={POOL}", "--concurrency=1",
             "--loglevel=WARNING", "--without-mingle", "--without-gossip", "-n", f"w{n}@%h"],
            cwd=ROOT, env=env,
        )
        for n in range(count)
    ]  # fmt: skip
    for worker in workers:
        began = time.monotonic()
        while _pool_child(worker.pid, wait=False) is None:
            if time.monotonic() - began > 60:
                raise RuntimeError("a benchmark worker did not start")
            time.sleep(0.1)
    time.sleep(2)  # connected to the broker once the pool is up; a margin for the consumer
    return workers


def _stop(workers: list) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(timeout=30)


def _pool_child(pid: int, wait: bool = True) -> int | None:
    if POOL == "solo":  # the worker runs its tasks itself
        time.sleep(3 if not wait else 0)
        return pid
    path = Path(f"/proc/{pid}/task/{pid}/children")
    children = path.read_text().split() if path.exists() else []
    if not children and wait:
        raise RuntimeError(f"worker {pid} has no pool process")
    return int(children[0]) if children else None


def _cpu_seconds(pid: int) -> float:
    return _cpu_seconds_of(Path(f"/proc/{pid}/stat").read_text())


def _cpu_by_group(worker_child: int) -> dict[str, float]:
    """CPU seconds so far of the processes a sync keeps busy: the worker's child, the
    PostgreSQL backends, Dovecot's processes, Redis, and this process (its polling). A
    process that ended meanwhile (Dovecot's session) is counted in its parent's
    children's time, so the group's difference over the sync stays whole."""
    groups = {"worker": 0.0, "parser": 0.0, "postgres": 0.0, "dovecot": 0.0, "redis": 0.0,
              "bench": 0.0}  # fmt: skip
    parser = _parser_process(worker_child)
    dovecot = {"dovecot", "imap", "imap-login", "auth", "anvil", "log", "config", "stats"}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid, name = int(entry.name), stat.split("(", 1)[1].rsplit(")", 1)[0]
        if pid == worker_child:
            groups["worker"] += _cpu_seconds_of(stat)
        elif pid == parser:
            groups["parser"] += _cpu_seconds_of(stat)
        elif pid == os.getpid():
            groups["bench"] += _cpu_seconds_of(stat)
        elif name.startswith("postgres"):
            groups["postgres"] += _cpu_seconds_of(stat, children=True)
        elif name in dovecot:
            groups["dovecot"] += _cpu_seconds_of(stat, children=True)
        elif name.startswith("redis"):
            groups["redis"] += _cpu_seconds_of(stat, children=True)
    # The whole machine: what the groups above leave out, and how long the cores waited
    # for the disk or did nothing.
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
    clock = os.sysconf("SC_CLK_TCK")
    busy = (user + nice + system + irq + softirq) / clock
    groups["other"] = busy - sum(groups.values())
    groups["iowait"], groups["idle"], groups["steal"] = iowait / clock, idle / clock, steal / clock
    return groups


def _parser_process(worker_child: int) -> int | None:
    """The worker's parser process (sync/parsing_process.py), once it has started."""
    # Started from one of the child's threads: each thread lists the children it made.
    pids = []
    for children in Path(f"/proc/{worker_child}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            pids += children.read_text().split()
    for pid in pids:
        with contextlib.suppress(OSError):
            if b"sync.parsing_process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    return None


def _cpu_seconds_of(stat: str, children: bool = False) -> float:
    fields = [int(f) for f in stat.rsplit(")", 1)[1].split()[11:15]]
    return sum(fields if children else fields[:2]) / os.sysconf("SC_CLK_TCK")


def _peak_rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


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
