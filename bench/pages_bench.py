"""B6 (issue 19): pages flat in volume. Run by `make bench` after B1-B4, or alone with
`make bench BENCH_ARGS="--pages-only"` (`--pages-emails 30000` for a quick look).

For each of two sizes (about 100 emails and `--pages-emails`, 300,000 by default) it
recreates a database of its own (`mailsetup_pages_bench_100`, `..._300000`), migrates
it, and generates the data with COPY: one user owning
half the emails in 3 mailboxes, the other half in 30 other people's mailboxes, contacts
and companies in proportion (20,000 and 3,000 at 300,000 emails), one contact with 4 %
of the user's emails (6,000 at full size) and its company, a month of sync-run history
per mailbox. It serves each database with gunicorn as docker-compose.yml does (3
workers, DEBUG off; both servers up at once) and drives each page with 20 concurrent
clients for `--pages-seconds` at each size, in ROUNDS turns (small, large, large,
small), so that the machine's drift while it runs falls on both sizes alike.

The load generator is 20 threads on keep-alive `http.client` connections, in this
process: locust would do, but its gevent workers and its web UI are more machinery than
twenty loops need, and the figures are ratios between two sizes measured the same way
(the generator's own CPU is the same at both sizes: 0.03-0.06 of a core, measured).

Printed per page: requests/s at each size, the ratio (target >= 0.7), p50 and p95 at
the large size (target p95 <= 250 ms) and the small size's p95, PASS/FAIL. EXPLAIN (ANALYZE, BUFFERS) of each
page's slowest query at the large size goes to test-results/b6-explain.txt, its
summary to the output.
"""

import http.client
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 20
# Each page is driven at each size this many times in turn, for a part of --pages-seconds;
# even, so that small, large, large, small gives both sizes the same mean time.
ROUNDS = 4
# Seconds each turn runs before its answers are counted (see `drive`).
WARM = 0.5
_PARAGRAPH = """offer order invoice meeting contract delivery schedule report budget review
project update question answer agenda minutes proposal quote price discount shipment payment
reminder request approval draft final version customer supplier partner service support ticket
issue release plan quarter summary forecast target status change warehouse logistics freight
pallet container customs insurance claim warranty repair"""
WORDS = _PARAGRAPH.split()
FIRST = ["Anna", "Jürgen", "Åsa", "Zoë", "Pedro", "Li", "Olga", "Sam", "Noah", "Mia", "Ingrid"]
LAST = ["Müller", "Öberg", "Dupré", "Peña", "Wang", "Petrova", "Lee", "Smith", "Bergström"]
# Searches a person would type: a rare word with a common one, part of a surname, a
# common word alone.
SEARCHES = ["turbine contract", "bergstr", "invoice", "pallet warranty"]


def sizes(large: int) -> list[int]:
    return [100, large]


def generate(connection, users: dict, total: int, rng: random.Random) -> dict:
    """COPY the emails, contacts, companies, their links and the run history into the
    migrated database; returns what the pages need (ids, cursors)."""
    contacts = max(60, total * 20_000 // 300_000)
    companies = max(12, total * 3_000 // 300_000)
    mine, others = users["mine"], users["others"]
    now = datetime.now(UTC)
    raw = connection.connection
    with raw.cursor() as cursor:
        with cursor.copy("COPY crm_company (id, name, web_domain, created_at) FROM STDIN") as copy:
            for c in range(1, companies + 1):
                copy.write_row((c, f"Company {c} {rng.choice(LAST)}", f"company{c}.test", now))
        with cursor.copy(
            "COPY crm_contact (id, name, company_id, job_title, phone, created_at) FROM STDIN"
        ) as copy:
            for c in range(1, contacts + 1):
                name = f"{rng.choice(FIRST)} {rng.choice(LAST)} {c}"
                copy.write_row((c, name, (c % companies) + 1, "", "", now))
        with cursor.copy("COPY crm_contactaddress (contact_id, address) FROM STDIN") as copy:
            for c in range(1, contacts + 1):
                copy.write_row((c, f"person{c}@company{(c % companies) + 1}.test"))
        hot_contact = 1
        hot_company = (hot_contact % companies) + 1
        mailboxes = mine + others
        columns = (
            "id, account_id, message_key, content_key, message_id, subject, from_address, "
            'from_name, "to", cc, sent_at, text_body, html_body, size, seen, in_reply_to, '
            '"references", problem, notes, original, created_at'
        )
        links, company_links, locations = [], [], []
        with cursor.copy(f"COPY sync_email ({columns}) FROM STDIN") as copy:
            for i in range(1, total + 1):
                own = i % 2 == 0
                account = mine[i % 3] if own else others[i % len(others)]
                contact = hot_contact if own and rng.random() < 0.04 else rng.randint(1, contacts)
                company = (contact % companies) + 1
                words = rng.choices(WORDS, k=rng.randint(40, 160))
                if rng.random() < 0.004:
                    words.insert(rng.randrange(len(words)), "turbine")
                name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
                # Minutes apart, a few at the same minute (equal dates in the keyset).
                sent = now - timedelta(minutes=i // 2 * 3)
                copy.write_row((
                    i, account, f"<{i}@bench.test>", "", f"<{i}@bench.test>",
                    f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} no. {i}",
                    f"person{contact}@company{company}.test", name,
                    f'[{{"name": "Me {mailboxes.index(account)}", "address": "me{account}@x.test"}}]',
                    "[]",
                    sent, " ".join(words), "", 2_000, True, "", "", "", "", "", now,
                ))  # fmt: skip
                links.append((i, contact))
                company_links.append((i, company))
                locations.append((i, users["folders"][account], 1, i))
        with cursor.copy("COPY sync_email_contacts (email_id, contact_id) FROM STDIN") as copy:
            for row in links:
                copy.write_row(row)
        with cursor.copy("COPY sync_email_companies (email_id, company_id) FROM STDIN") as copy:
            for row in company_links:
                copy.write_row(row)
        with cursor.copy(
            "COPY sync_emaillocation (email_id, folder_id, uidvalidity, uid, item_id) FROM STDIN"
        ) as copy:
            for email, folder, validity, uid in locations:
                copy.write_row((email, folder, validity, uid, ""))
        # A run a minute for a month per mailbox at full size, a few at the small one.
        runs = max(3, total * 8_640 // 300_000)
        fields = (
            "account_id, state, started_at, finished_at, folders, new_emails, new_locations, "
            "flag_changes, removed_locations, parse_problems, folder_errors, activities, "
            "contacts_imported, contacts_exported, folders_total, folders_done, "
            "messages_total, messages_done, error"
        )
        with cursor.copy(f"COPY sync_syncrun ({fields}) FROM STDIN") as copy:
            for account in mine:
                for r in range(runs):
                    at = now - timedelta(minutes=r + 1)
                    copy.write_row(
                        (account, "succeeded", at, at, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, "")
                    )
        for table in ("sync_email", "crm_contact", "crm_company", "crm_contactaddress"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        cursor.execute("ANALYZE")
        ids = [i for i in range(2, total + 1, 2)]
        cursor.execute(
            "SELECT sent_at, id FROM sync_email WHERE account_id = ANY(%s) "
            "ORDER BY sent_at DESC, id DESC OFFSET %s LIMIT 1",
            [mine, min(49 * 50, len(ids)) - 1],
        )
        at, pk = cursor.fetchone()
    raw.commit()
    # As autovacuum would after a load this size: it sets the visibility map that the
    # lists' index-only scans read (without it each visits the table). This machine's
    # PostgreSQL runs with autovacuum off, so the benchmark does it.
    was, raw.autocommit = raw.autocommit, True
    try:
        raw.execute("VACUUM (ANALYZE)")
    finally:
        raw.autocommit = was
    return {
        "hot_contact": hot_contact,
        "hot_company": hot_company,
        "email_ids": ids,
        "page50": f"{at.isoformat()}~{pk}",
        "contacts": contacts,
        "companies": companies,
    }


def _database_named(url: str, total: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path}_{total}"))


def _use_database(url: str) -> None:
    """Point this process's Django connection at `url`'s database (one per size)."""
    from django.db import connection

    connection.close()
    connection.settings_dict["NAME"] = urlsplit(url).path.lstrip("/")


def setup_size(database: str, total: int, var_dir: Path) -> dict:
    """Recreate, migrate and fill the database; returns the session cookie and ids."""
    from sync_bench import _recreate_database

    _recreate_database(database)
    _use_database(database)
    env = os.environ | {"DATABASE_URL": database}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    from django.db import connection

    connection.close()
    from django.test import Client

    from sync.models import Folder, MailboxSync
    from tests.factories import EmailAccountFactory, UserFactory

    rng = random.Random(19)
    user = UserFactory()
    mine = [EmailAccountFactory(owner=user).pk for _ in range(3)]
    others = [EmailAccountFactory().pk for _ in range(30)]
    folders = {}
    for account in mine + others:
        folders[account] = Folder.objects.create(account_id=account, path="INBOX").pk
        MailboxSync.objects.create(account_id=account, last_success_at=datetime.now(UTC))
    started = time.monotonic()
    data = generate(connection, {"mine": mine, "others": others, "folders": folders}, total, rng)
    data["load_seconds"] = time.monotonic() - started
    data["mine"] = mine
    client = Client()
    client.force_login(user)
    data["cookie"] = f"sessionid={client.cookies['sessionid'].value}"
    connection.close()
    return data


def urls(data: dict, rng: random.Random) -> dict[str, list[str]]:
    sample = rng.sample(data["email_ids"], min(200, len(data["email_ids"])))
    return {
        "Email page, first page": ["/email/"],
        "Email page, page 50": [f"/email/?after={quote(data['page50'])}"],
        "Email page search": [f"/email/?q={q.replace(' ', '+')}" for q in SEARCHES],
        "contact timeline": [f"/contacts/{data['hot_contact']}/"],
        "company timeline": [f"/companies/{data['hot_company']}/"],
        "timeline search": [f"/contacts/{data['hot_contact']}/?q=invoice"],
        "contacts list": ["/contacts/"],
        "companies list": ["/companies/"],
        "contacts list search": ["/contacts/?q=bergstr"],
        "email detail": [f"/emails/{pk}/" for pk in sample],
        "mailbox list": ["/mailboxes/"],
        "status partial": [f"/mailboxes/{pk}/sync-status/" for pk in data["mine"]],
    }


def drive(port: int, cookie: str, targets: list[str], seconds: float) -> tuple[float, list]:
    """CLIENTS threads asking for `targets` in turn for `seconds`; (requests/s,
    latencies in ms). Requests/s counts those answered within the `seconds`, which begin
    once the clients have run for WARM seconds: counted from the start, the first
    answers of each worker are missing; counted to the last answer, the requests
    running at the end stretch the time (a short turn's figure read 2-5 % low either
    way, the slower size the most). A request that is not a 200 stops the figure."""
    latencies: list[float] = []
    errors: list[str] = []
    counted = time.monotonic() + WARM
    stop = counted + seconds
    answered = [0] * CLIENTS
    lock = threading.Lock()

    def loop(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Cookie": cookie, "Host": "127.0.0.1"}
        mine, i = [], n
        while time.monotonic() < stop:
            url = targets[i % len(targets)]
            i += 1
            started = time.perf_counter()
            connection.request("GET", url, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append((time.perf_counter() - started) * 1000)
            answered[n] += counted < time.monotonic() <= stop
            if response.status != 200:
                errors.append(f"{url}: {response.status}")
                break
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"B6: {errors[0]}")
    return sum(answered) / seconds, latencies


def serve(database: str, env: dict, port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "mailsetup.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "3", "--log-level", "warning"],
        cwd=ROOT, env=env | {"DATABASE_URL": database},
    )  # fmt: skip
    for _ in range(100):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise RuntimeError("B6: gunicorn did not start")


def explain(cookie: str, targets: dict[str, list[str]]) -> list[str]:
    """Each page's slowest query (timed in this process), EXPLAIN (ANALYZE, BUFFERS)."""
    from django.db import connection
    from django.test import Client

    client = Client()
    client.cookies.load(cookie)
    summary, full = [], []
    for page, page_urls in targets.items():
        url = page_urls[0]
        client.get(url, HTTP_HOST="127.0.0.1")  # warm
        # Three requests; each query's best time of the three (the machine is shared:
        # a single timing picks whichever query a neighbour slowed down).
        rounds: list[list[tuple[float, str]]] = []
        for _ in range(3):
            timed: list[tuple[float, str]] = []

            def timer(execute, sql, params, many, context, timed=timed):
                started = time.perf_counter()
                try:
                    return execute(sql, params, many, context)
                finally:
                    query = connection.ops.last_executed_query(context["cursor"], sql, params)
                    timed.append(((time.perf_counter() - started) * 1000, query))

            with connection.execute_wrapper(timer):
                client.get(url, HTTP_HOST="127.0.0.1")
            rounds.append(timed)
        if not rounds[0]:
            continue
        count = min(len(r) for r in rounds)
        best = [min((r[i] for r in rounds), key=lambda t: t[0]) for i in range(count)]
        timed = rounds[0]
        slowest_ms, sql = max(best)
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            plan = [row[0] for row in cursor.fetchall()]
        total = next((line for line in plan if line.startswith("Execution Time")), "")
        top = plan[0].strip()
        scans = sorted(
            {line.strip().removeprefix("->").strip().split("  (")[0] for line in plan
             if "Scan" in line}
        )  # fmt: skip
        summary.append(
            f"B6 EXPLAIN {page}: {len(timed)} queries, slowest {slowest_ms:.1f} ms; "
            f"{total}; {top[:90]}; {'; '.join(scans)[:300]}"
        )
        full += [f"== {page} ({url}): {len(timed)} queries", sql, *plan, ""]
    results = ROOT / "test-results"
    results.mkdir(exist_ok=True)
    (results / "b6-explain.txt").write_text("\n".join(full) + "\n")
    return summary


def _p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=20)[18] if len(latencies) > 1 else latencies[0]


def pages_figure(large: int, seconds: float, report) -> None:
    database = os.environ.get(
        "BENCH_PAGES_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mailsetup_pages_bench"
    )
    from cryptography.fernet import Fernet

    var_dir = Path(tempfile.mkdtemp(prefix="mailsetup-b6-"))
    env = os.environ | {
        "DEBUG": "false",
        "SECRET_KEY": "b6-" + "x" * 50,
        "CREDENTIAL_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
        "MAILSETUP_VAR_DIR": str(var_dir),
        "DATABASE_URL": database,
        "DJANGO_SETTINGS_MODULE": "mailsetup.settings",
    }
    os.environ.update(env)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env,
        check=True,
    )  # fmt: skip
    import django

    django.setup()
    # Each size in its own database, served by its own gunicorn, both up at once: the
    # pages are driven at both sizes in turn (ROUNDS), so that a shared machine's drift
    # over ten minutes falls on both sides of a ratio alike (one size after the other,
    # the same code's ratio moved by +-0.2 within an hour).
    sized = {total: _database_named(database, total) for total in sizes(large)}
    data = {}
    for total, url in sized.items():
        data[total] = setup_size(url, total, var_dir)
        report(
            f"B6 data: {total:,} emails ({total // 2:,} the user's, in 3 mailboxes), "
            f"{data[total]['contacts']:,} contacts, {data[total]['companies']:,} companies, "
            f"loaded in {data[total]['load_seconds']:.0f} s"
        )
    targets = {total: urls(data[total], random.Random(6)) for total in sized}
    base_port = 18_000 + os.getpid() % 1_000 * 2
    ports = {total: base_port + n for n, total in enumerate(sized)}
    servers: list[subprocess.Popen] = []
    figures: dict[str, dict[int, tuple[float, list, list[float]]]] = {}
    try:
        for total, url in sized.items():
            servers.append(serve(url, env, ports[total]))
        for page in targets[large]:
            for total in sized:  # warm the workers
                drive(ports[total], data[total]["cookie"], targets[total][page], 1.0)
            runs: dict[int, list[tuple[float, list]]] = {total: [] for total in sized}
            for round_ in range(ROUNDS):
                # small, large, large, small: a steady drift cancels out.
                for total in sized if round_ % 2 == 0 else reversed(sized):
                    runs[total].append(
                        drive(
                            ports[total], data[total]["cookie"], targets[total][page],
                            seconds / ROUNDS,
                        )
                    )  # fmt: skip
            for total, each in runs.items():
                # Rounds of equal length: the requests/s of all is their mean.
                rounds = [rps for rps, _ in each]
                latencies = [ms for _, round_latencies in each for ms in round_latencies]
                figures.setdefault(page, {})[total] = (statistics.fmean(rounds), latencies, rounds)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    _use_database(sized[large])
    explained = explain(data[large]["cookie"], targets[large])
    small = sizes(large)[0]
    for page, by_size in figures.items():
        rps_small, latencies_small, rounds_small = by_size[small]
        rps_large, latencies, rounds_large = by_size[large]
        ratio = rps_large / rps_small if rps_small else 0.0
        each = [b / a for a, b in zip(rounds_small, rounds_large, strict=True) if a]
        p50 = statistics.median(latencies)
        p95 = _p95(latencies)
        verdict = "PASS" if ratio >= 0.7 and p95 <= 250 else "FAIL"
        # The small size's p95 beside it: a page over 250 ms with 100 emails too is
        # over because of this machine's speed at this hour, not of the volume.
        report(
            f"B6 {page}: {rps_small:.1f} req/s at {small:,} emails, {rps_large:.1f} at "
            f"{large:,}, ratio {ratio:.2f} (target >= 0.7; its {ROUNDS} rounds "
            f"{min(each):.2f}-{max(each):.2f}); p50 {p50:.0f} ms, p95 {p95:.0f} ms "
            f"at {large:,} (target <= 250 ms; {_p95(latencies_small):.0f} ms at {small:,}), "
            f"{CLIENTS} clients: {verdict}"
        )
    for line in explained:
        report(line)
    report("B6 EXPLAIN plans in full: test-results/b6-explain.txt")
