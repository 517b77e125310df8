"""Issue 19, target 1: pages flat in volume. Keyset pages give every email once and in
order (equal dates and undated emails included), the sync-status partial's queries do
not grow with the mailbox, and the sync-run history is pruned to its period."""

import html
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
from django.db import DataError, connection
from django.test.utils import CaptureQueriesContext
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from crm.models import Activity, Company, Contact, ContactAddress
from sync.models import Email, SyncRun
from sync.selectors import sync_status
from sync.services import sync_runs_prune
from tests.factories import EmailAccountFactory

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _emails(account, count, *, start=0, same_date_every=3, undated_every=11, contact=None):
    """Emails with dates in groups of equal dates, and some without a date."""
    made = []
    for n in range(start, start + count):
        sent = None if n % undated_every == 0 else NOW - timedelta(hours=n // same_date_every)
        email = Email.objects.create(
            account=account, message_key=f"v{n}", subject=f"Mail {n:03}", sent_at=sent
        )
        if contact is not None:
            email.contacts.add(contact)
        made.append(email)
    return made


def _walk(client, url, pattern, params=None) -> list[list[int]]:
    """Follow the "Older" links from the first page; the email ids of each page."""
    pages, params = [], dict(params or {})
    while True:
        page = client.get(url, params).text
        pages.append([int(pk) for pk in re.findall(pattern, page)])
        older = re.search(r'href="\?after=([^"&]+)', page)
        if older is None:
            return pages
        params["after"] = unquote(html.unescape(older.group(1)))
        assert len(pages) < 50


def _expected(emails) -> list[int]:
    dated = sorted((e for e in emails if e.sent_at), key=lambda e: (e.sent_at, e.pk))
    undated = sorted((e for e in emails if not e.sent_at), key=lambda e: e.pk)
    return [e.pk for e in reversed(dated)] + [e.pk for e in reversed(undated)]


def test_it_pages_the_email_page_by_keyset_every_email_once_in_order(client, db):
    account = EmailAccountFactory()
    emails = _emails(account, 137)
    client.force_login(account.owner)
    pages = _walk(client, reverse("accounts:email"), r'href="/emails/(\d+)/"')
    assert [len(p) for p in pages] == [50, 50, 37]
    assert [pk for page in pages for pk in page] == _expected(emails)


def test_it_pages_back_with_newer_links_to_the_same_pages(client, db):
    account = EmailAccountFactory()
    _emails(account, 137, undated_every=7)
    client.force_login(account.owner)
    url, pattern = reverse("accounts:email"), r'href="/emails/(\d+)/"'
    forward = _walk(client, url, pattern)
    assert [len(p) for p in forward] == [50, 50, 37]
    # From the last page back, the "Newer" links give the same pages in reverse.
    params = {"after": unquote(html.unescape(_links(client, url, len(forward) - 1)[-1]))}
    backward = []
    while True:
        page = client.get(url, params).text
        backward.append([int(pk) for pk in re.findall(pattern, page)])
        newer = re.search(r'href="\?before=([^"&]+)"', page)
        if newer is None:
            break
        params = {"before": unquote(html.unescape(newer.group(1)))}
        assert len(backward) < 10
    assert backward == forward[::-1]
    assert "Newer" not in client.get(url).text


def test_it_answers_newer_with_the_first_page_when_less_than_a_page_is_newer(client, db):
    account = EmailAccountFactory()
    emails = _emails(account, 60)
    client.force_login(account.owner)
    url, pattern = reverse("accounts:email"), r'href="/emails/(\d+)/"'
    # Newer than the tenth email: nine, fewer than a page, so the first page whole.
    tenth = Email.objects.get(pk=_expected(emails)[9])
    page = client.get(url, {"before": f"{tenth.sent_at.isoformat()}~{tenth.pk}"}).text
    assert [int(pk) for pk in re.findall(pattern, page)] == _expected(emails)[:50]
    assert "Newer" not in page and "Newest" not in page


def _links(client, url, pages: int) -> list[str]:
    """The "Older" cursors of the first `pages` pages."""
    cursors, params = [], {}
    for _ in range(pages):
        found = re.search(r'href="\?after=([^"&]+)', client.get(url, params).text)
        cursors.append(found.group(1))
        params = {"after": unquote(html.unescape(found.group(1)))}
    return cursors


def test_it_pages_a_timeline_by_keyset_with_activities_among_the_emails(client, db):
    account = EmailAccountFactory()
    ann = Contact.objects.create(name="Ann")
    emails = _emails(account, 70, contact=ann)
    # A meeting at the very date of three emails, and an undated task.
    meeting = Activity.objects.create(
        account=account, kind="meeting", external_id="m", subject="Kick-off", starts_at=NOW
    )
    task = Activity.objects.create(account=account, kind="task", external_id="t", subject="Do")
    for activity in (meeting, task):
        activity.contacts.add(ann)
    client.force_login(account.owner)
    url = reverse("crm:contact", args=[ann.pk])
    seen, pages = [], []
    params: dict = {}
    while True:
        page = client.get(url, params).text
        pages.append(page)
        seen += re.findall(r'href="/emails/(\d+)/"|class="entry-(meeting|task)"', page)
        older = re.search(r'href="\?after=([^"&]+)', page)
        if older is None:
            break
        params["after"] = unquote(html.unescape(older.group(1)))
    shown = [int(e) if e else kind for e, kind in seen]
    expected = _expected(emails)
    # At NOW: the emails first (emails before meetings at one date), then the meeting;
    # undated: emails, then the task.
    at_now = sum(1 for e in emails if e.sent_at == NOW)
    dated = [pk for pk in expected if Email.objects.get(pk=pk).sent_at]
    undated = expected[len(dated) :]
    assert shown == [*dated[:at_now], "meeting", *dated[at_now:], *undated, "task"]
    assert len(pages) == 3


def test_it_answers_a_malformed_cursor_with_the_first_page(client, db):
    account = EmailAccountFactory()
    _emails(account, 3)
    client.force_login(account.owner)
    for cursor in ("x", "2026-01-01~y", "2026-01-01T00:00:00~5", "~~~", "nonsense~1~2~3"):
        assert "Mail 001" in client.get(reverse("accounts:email"), {"after": cursor}).text


def test_it_says_more_than_a_thousand_instead_of_counting_every_email_on_the_email_page(client, db):
    account = EmailAccountFactory()
    Email.objects.bulk_create(
        Email(account=account, message_key=f"b{n}", subject="x", sent_at=NOW) for n in range(1001)
    )
    client.force_login(account.owner)
    assert 'id="panel-count">More than 1000 emails<' in client.get(reverse("accounts:email")).text


def _status_queries(client, account) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("sync:status", args=[account.pk])).status_code == 200
    for query in queries:
        sql = query["sql"]
        # No count of the mailbox's emails (only of the few with a problem), and the
        # latest run alone, not the history.
        if 'FROM "sync_email"' in sql:
            assert '"problem"' in sql, sql
        if 'FROM "sync_syncrun"' in sql:
            assert "LIMIT 1" in sql, sql
    return len(queries)


def test_it_reads_the_status_with_the_same_queries_whatever_the_history(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    SyncRun.objects.create(account=account, state="succeeded", new_emails=1)
    _emails(account, 5)
    _status_queries(client, account)  # the first request of a session reads a little more
    few = _status_queries(client, account)
    start = timezone.now() - timedelta(days=1)
    SyncRun.objects.bulk_create(
        SyncRun(account=account, state="succeeded", started_at=start + timedelta(minutes=n))
        for n in range(300)
    )
    _emails(account, 300, start=5)
    assert _status_queries(client, account) == few
    # The latest run is the one the status reads (its started_at is the newest).
    latest = SyncRun.objects.create(account=account, state="succeeded", new_emails=7)
    assert sync_status(account)["last_run"] == latest


def test_it_prunes_the_run_history_to_the_period_keeping_the_latest(db, settings):
    settings.SYNC_RUN_HISTORY_DAYS = 10
    now = timezone.now()
    busy, quiet = EmailAccountFactory(), EmailAccountFactory()

    def run(account, days, state="succeeded"):
        return SyncRun.objects.create(
            account=account, state=state, started_at=now - timedelta(days=days)
        )

    kept = [run(busy, 1), run(busy, 9.9)]
    old = [run(busy, 11), run(busy, 40)]
    running = run(busy, 30, state="running")
    quiet_latest = run(quiet, 50)  # a mailbox not synced for long keeps its last run
    quiet_old = run(quiet, 60)
    assert sync_runs_prune(now=now) == len(old) + 1
    left = set(SyncRun.objects.values_list("pk", flat=True))
    assert left == {r.pk for r in [*kept, running, quiet_latest]}
    assert quiet_old.pk not in left
    assert sync_runs_prune(now=now) == 0


def test_it_schedules_the_pruning_in_beat(settings):
    assert settings.CELERY_BEAT_SCHEDULE["sync-runs-prune"]["task"] == "sync.runs_prune"
    from sync import tasks

    assert tasks.runs_prune.name == "sync.runs_prune"


def _grouped_order(user, model, search=""):
    from crm.views.timelines import LatestFirst, contacts_for_list

    listed, _count = contacts_for_list(user, search=search)
    assert isinstance(listed, LatestFirst)
    return [row.pk for row in listed.listed]


def test_it_lists_contacts_latest_first_from_the_newest_emails_as_the_grouped_order(
    client, db, monkeypatch, settings
):
    from crm.views.timelines import LatestFirst, contacts_for_list

    # Not UTC: a stream's cursor read back as a naive date would be taken for a local
    # one, hours off (the batches' dates come through a plain cursor).
    settings.TIME_ZONE = "America/New_York"

    mine, other = EmailAccountFactory(), EmailAccountFactory()
    contacts = [Contact.objects.create(name=f"P{n % 7} {n}") for n in range(40)]
    # "Zed" in a job title, a company's name and an address: a search matches each way.
    zed = Company.objects.create(name="Zed Works")
    Contact.objects.filter(pk__in=[c.pk for c in contacts[4:7]]).update(job_title="Buyer, Zed")
    Contact.objects.filter(pk__in=[c.pk for c in contacts[8:12]]).update(company=zed)
    for contact in contacts[20:23]:
        ContactAddress.objects.create(contact=contact, address=f"{contact.pk}@zed.test")
    for n in range(90):
        sent = None if n % 13 == 0 else NOW - timedelta(hours=(n * 7) % 31)  # many ties
        email = Email.objects.create(
            account=mine if n % 5 else other, message_key=f"l{n}", sent_at=sent
        )
        if n % 4 != 1:  # a quarter link to no contact: a batch still counts them
            email.contacts.add(contacts[(n * 11) % 37], contacts[n % 3])
    for n in range(2):  # one contact's two latest emails at one time: the later stored
        Email.objects.create(account=mine, message_key=f"twin{n}", sent_at=NOW).contacts.add(
            contacts[3]
        )
    # Each contact's latest email the user may see: the newest, the latest stored of a tie.
    newest = {}
    for email_id, contact_id in (
        Email.contacts.through.objects.filter(email__account=mine, email__sent_at__isnull=False)
        .order_by("-email__sent_at", "-email_id")
        .values_list("email_id", "contact_id")
    ):
        newest.setdefault(contact_id, email_id)
    monkeypatch.setattr(LatestFirst, "FEW", 0)
    # COUNTED 2: a search with more matches reads neither all of them nor their count,
    # and keeps, batch by batch, the contacts its emails meet that match ("P1", 6).
    for search, counted in [
        ("", 1_000), ("P1", 1_000), ("P3 2", 1_000), ("P1", 2), ("zed", 1_000), ("zed", 2),
    ]:  # fmt: skip
        monkeypatch.setattr("crm.views.timelines.COUNTED", counted)
        expected = _grouped_order(mine.owner, Contact, search)
        assert expected
        batches = [(4, 10_000), (1, 10_000), (3, 6), (2_000, 20_000)]
        # "zed" once cut short by STREAMED, once whole (the others cover the batch sizes).
        for batch, streamed in batches if search != "zed" else batches[2:]:
            monkeypatch.setattr(LatestFirst, "BATCH", batch)
            monkeypatch.setattr(LatestFirst, "STREAMED", streamed)
            listed, count = contacts_for_list(mine.owner, search=search)
            assert (listed.keep is not None) == (counted == 2)
            assert count() == (3 if counted == 2 else len(expected) if search else 40)
            for size in (1, 7, 50):
                rows = [row for at in range(0, 40, size) for row in listed[at : at + size]]
                assert [row.pk for row in rows] == expected, (search, batch, streamed, size)
                for row in rows:  # the latest email a row shows, as the stream met it
                    if hasattr(row, "known_latest"):
                        assert row.known_latest == newest[row.pk], (search, batch, row.pk)
                assert all(at.tzinfo for at, _pk in listed.latest.values())


def test_it_filters_by_a_list_of_ids_as_one_array_on_postgresql_and_as_in_elsewhere(db):
    from django.db import connections
    from django.db.backends.sqlite3.base import DatabaseWrapper
    from django.db.models import F

    from mailsetup.lookups import AnyOf

    contacts = [Contact.objects.create(name=f"A{n}") for n in range(5)]
    wanted = [contacts[1].pk, contacts[3].pk, None, contacts[3].pk]
    chosen = Contact.objects.filter(AnyOf(F("pk"), wanted))
    with CaptureQueriesContext(connection) as queries:
        assert sorted(c.pk for c in chosen) == [contacts[1].pk, contacts[3].pk]
    # One parameter however many ids: the SQL does not grow with the list; integer ids
    # go as one array literal of the column's type (psycopg reads no list in Python).
    assert "= ANY(" in queries[0]["sql"] and "IN (" not in queries[0]["sql"]
    assert "::bigint[])" in queries[0]["sql"]
    assert [c.pk for c in Contact.objects.filter(AnyOf(F("pk"), [contacts[2].pk, 2**40]))] == [
        contacts[2].pk
    ]
    # Values of another type go as a list psycopg adapts: names, or a str among ids.
    named = Contact.objects.filter(AnyOf(F("name"), ["A1", "A3", "A1}"])).order_by("name")
    assert [c.name for c in named] == ["A1", "A3"]
    # Not written out as digits (it would match both): psycopg refuses the mixed list.
    with pytest.raises(DataError, match="mixed types"):
        list(Contact.objects.filter(AnyOf(F("pk"), [contacts[2].pk, str(contacts[3].pk)])))
    assert Contact.objects.exclude(AnyOf(F("pk"), wanted)).count() == 3
    assert list(Contact.objects.filter(AnyOf(F("pk"), []))) == []
    assert list(Contact.objects.filter(AnyOf(F("pk"), [None]))) == []
    email = Email.objects.create(account=EmailAccountFactory(), message_key="any")
    email.contacts.add(contacts[0], contacts[2])
    links = Email.contacts.through.objects.filter(AnyOf(F("contact"), [contacts[0].pk, 0]))
    assert [link.contact_id for link in links] == [contacts[0].pk]  # a foreign key's column
    # Another database (SQLite, the embedded default): Django's own IN list.
    sqlite = DatabaseWrapper({**connections["default"].settings_dict, "NAME": ":memory:"})
    sql, params = chosen.query.get_compiler(connection=sqlite).as_sql()
    assert "IN (%s, %s)" in sql and list(params) == [contacts[1].pk, contacts[3].pk]


def test_it_makes_a_list_s_links_as_reverse_does_under_any_script_prefix(db):
    from django.template import engines
    from django.urls import clear_script_prefix, set_script_prefix

    from mailsetup.templating import id_url

    template = engines["django"].from_string(
        "{% id_url 'crm:contact' pk %}|{% id_url 'sync:email' pk %}|{% url 'crm:contact' pk %}"
    )
    try:
        for prefix in ("/", "/crm/"):
            set_script_prefix(prefix)
            for pk in (1, 42, 987_654):
                assert id_url("crm:company", pk) == reverse("crm:company", args=[pk])
                fast, email, slow = template.render({"pk": pk}).split("|")
                assert fast == slow == reverse("crm:contact", args=[pk])
                assert email == reverse("sync:email", args=[pk]) and email.startswith(prefix)
            # Anything but an id is reversed as `{% url %}` would, or refused as it would.
            assert id_url("crm:contact", "12") == reverse("crm:contact", args=["12"])
            for odd in (None, -1, True, "x"):
                with pytest.raises(NoReverseMatch):
                    id_url("crm:contact", odd)
    finally:
        clear_script_prefix()


def test_it_writes_a_list_s_rows_as_format_html_the_url_tag_and_the_date_filter_do(db):
    from django.template import Context, engines
    from django.urls import clear_script_prefix, set_script_prefix
    from django.utils.html import format_html
    from django.utils.safestring import mark_safe
    from django.utils.translation import gettext_lazy, override

    from mailsetup.templating import RowKit, html_row

    class Html:  # its own HTML, other than its text
        def __html__(self):
            return "<u>as HTML</u>"

        def __str__(self):
            return "<u>as text</u>"

    # Escaping: text, quotes, safe strings, lazy strings, numbers, None, own HTML.
    for value in (
        "<b>Ann</b> & 'Co' \"x\"", mark_safe("<i>kept</i>"), gettext_lazy("Email"), 12, None,
        "{0} {}", "é ü ß", Html(),
    ):  # fmt: skip
        assert html_row("<td>{}</td>{}", value, value) == format_html("<td>{}</td>{}", value, value)
    # Links and dates, as each page's template and request set them.
    template = engines["django"].from_string(
        '{% load crm_lists %}{% url "sync:email" pk %}|{{ at|date:"SHORT_DATETIME_FORMAT" }}'
    )
    moments = [
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # a day earlier in New York, later in Tokyo
        datetime(2026, 11, 30, 12, 0, tzinfo=UTC),  # noon: "noon" in English, 12:00 in German
        datetime(2026, 7, 4, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 7, 4, 9, 5),  # naive: shown as it is
        None,
    ]
    try:
        for prefix, zone, language in (
            ("/", "UTC", "en"), ("/crm/", "America/New_York", "de"), ("/", "Asia/Tokyo", "fr"),
        ):  # fmt: skip
            set_script_prefix(prefix)
            with timezone.override(zone), override(language):
                context = Context({})
                kit = RowKit.of(context)
                assert RowKit.of(context) is kit  # one a render
                for pk, at in zip((1, 42, 987_654, 7, 8), moments, strict=True):
                    url, date = template.render({"pk": pk, "at": at}).split("|")
                    assert (kit.url("sync:email", pk), kit.when(at)) == (url, date)
                assert kit.url("crm:contact", "12") == reverse("crm:contact", args=["12"])
                with pytest.raises(NoReverseMatch):
                    kit.url("crm:contact", -1)
    finally:
        clear_script_prefix()


def _link_dates() -> tuple[dict, dict]:
    """{email id: its links' copy of its date} of the contacts' and the companies' links."""
    found = []
    with connection.cursor() as cursor:
        for table in ("sync_email_contacts", "sync_email_companies"):
            cursor.execute(f"SELECT email_id, sent_at FROM {table}")  # noqa: S608 - ours
            found.append(dict(cursor.fetchall()))
    return found[0], found[1]


def test_it_keeps_each_link_s_email_date_as_the_email_s_own(db):
    from django.db import transaction

    from crm.models import Company

    contact, company = Contact.objects.create(name="Ann"), Company.objects.create(name="Acme")
    mailbox = EmailAccountFactory()
    first, second, undated = (
        Email.objects.create(account=mailbox, message_key=f"d{n}", sent_at=at)
        for n, at in enumerate((NOW, NOW - timedelta(days=1), None))
    )
    first.contacts.add(contact)
    first.companies.add(company)
    Email.contacts.through.objects.bulk_create(
        [Email.contacts.through(email=e, contact=contact) for e in (second, undated)]
    )
    assert _link_dates() == (
        {first.pk: NOW, second.pk: second.sent_at, undated.pk: None},
        {first.pk: NOW},
    )
    Email.objects.filter(pk=first.pk).update(sent_at=NOW - timedelta(days=5))
    second.sent_at = None
    second.save()
    undated.sent_at = NOW
    undated.save(update_fields=["sent_at"])
    later = NOW - timedelta(days=5)
    assert _link_dates() == ({first.pk: later, second.pk: None, undated.pk: NOW}, {first.pk: later})
    # A link written before its email (the foreign keys are checked at commit).
    with transaction.atomic():
        waiting = Email.objects.order_by("-pk").first().pk + 100
        Email.contacts.through.objects.create(email_id=waiting, contact=contact)
        Email.objects.create(pk=waiting, account=mailbox, message_key="late", sent_at=later)
    connection.check_constraints()  # what a commit runs (the test's transaction never does)
    assert _link_dates()[0][waiting] == later


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_link_s_date_when_its_email_s_date_changes_before_the_link_commits():
    """Two sessions: one links an email, the other changes the email's date before the
    link is committed. The date change waits for the link and then reaches it."""
    import threading
    import time

    import psycopg

    mailbox = EmailAccountFactory()
    contact = Contact.objects.create(name="Ann")
    email = Email.objects.create(account=mailbox, message_key="race", sent_at=NOW)
    later = NOW - timedelta(days=3)
    settings = connection.settings_dict
    params = {"host": settings["HOST"], "port": settings["PORT"] or 5432,
              "user": settings["USER"], "password": settings["PASSWORD"],
              "dbname": settings["NAME"]}  # fmt: skip
    with psycopg.connect(**params) as linking, psycopg.connect(**params, autocommit=True) as dating:
        linking.execute(
            "INSERT INTO sync_email_contacts (email_id, contact_id) VALUES (%s, %s)",
            [email.pk, contact.pk],
        )
        changed = threading.Thread(
            target=dating.execute,
            args=("UPDATE sync_email SET sent_at = %s WHERE id = %s", [later, email.pk]),
        )
        changed.start()
        waiting = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s"
        for _ in range(200):  # until the date change waits for the link's transaction
            if linking.execute(waiting, [dating.info.backend_pid]).fetchone()[0] == "Lock":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the date change did not wait for the link")
        assert changed.is_alive()
        linking.commit()
        changed.join(timeout=10)
    assert not changed.is_alive()
    assert _link_dates()[0] == {email.pk: later}


def test_it_pages_a_timeline_from_its_links_dates_as_from_the_emails_themselves(db, monkeypatch):
    from crm.models import Company
    from crm.views import timelines
    from sending.models import OutgoingEmail
    from tests.factories import MailboxGrantFactory

    mine = EmailAccountFactory()
    shared = MailboxGrantFactory(user=mine.owner, can_access=True).account
    sent_only = MailboxGrantFactory(user=mine.owner, can_send=True).account
    theirs = EmailAccountFactory()
    company = Company.objects.create(name="Acme")
    contact = Contact.objects.create(name="Ann", company=company)
    gone = EmailAccountFactory(owner=mine.owner, removed_at=NOW)  # its emails kept
    emails = []
    for n in range(80):
        account = [mine, shared, sent_only, theirs, gone][n % 5]
        # Equal dates in threes, a few undated, "turbine" in some subjects.
        sent = None if n % 13 == 0 else NOW - timedelta(hours=n // 3)
        subject = f"Mail {n}" + (" turbine" if n % 3 == 0 else "")
        email = Email.objects.create(account=account, message_key=f"t{n}", subject=subject,
                                     sent_at=sent)  # fmt: skip
        emails.append(email)
        if account == sent_only and n % 10 == 2:  # written in the app: seen there too
            OutgoingEmail.objects.create(account=sent_only, author=mine.owner,
                                         message_id=f"w{n}@x", raw=b"", email=email)  # fmt: skip
    # Linked out of the emails' order: the links' own ids must not break a tie.
    for email in emails[1::2] + emails[::2][::-1]:
        email.contacts.add(contact)
        email.companies.add(company)
    task = Activity.objects.create(account=mine, kind="task", external_id="t", subject="Turbine",
                                   due_on=(NOW - timedelta(hours=5)).date())  # fmt: skip
    task.contacts.add(contact)
    task.companies.add(company)
    # Dates that changed after the links were made, and meetings at the emails' dates.
    Email.objects.filter(message_key__in=["t5", "t6"]).update(sent_at=NOW + timedelta(hours=1))
    for n in range(0, 30, 7):
        meeting = Activity.objects.create(
            account=mine, kind="meeting", external_id=f"m{n}", subject=f"Turbine talk {n}",
            starts_at=NOW - timedelta(hours=n),
        )  # fmt: skip
        meeting.contacts.add(contact)
        meeting.companies.add(company)

    def walk(**where):
        seen, after = [], ""
        for _ in range(40):
            page = timelines.timeline(mine.owner, after=after, **where)
            seen.append([(entry.kind, entry.item.pk) for entry in page.rows])
            if not page.next_cursor:
                return seen
            after = page.next_cursor
        raise AssertionError("the pages do not end")

    monkeypatch.setattr(timelines, "TIMELINE_PAGE", 4)  # pages end inside ties
    for where, table in (({"contact": contact}, "contacts"), ({"company": company}, "companies")):
        for search in ("", "turbine"):
            with CaptureQueriesContext(connection) as queries:
                by_links = walk(**where, search=search)
            assert any(f'"sync_email_{table}".sent_at' in q["sql"] for q in queries)
            with monkeypatch.context() as emails_only:
                emails_only.setattr(timelines, "_by_link_dates", lambda contact, company: False)
                by_emails = walk(**where, search=search)
            assert by_links == by_emails, (where, search)
            entries = [entry for page in by_links for entry in page]
            assert len(entries) == len(set(entries)) and len(by_links) >= 2
            assert not {pk for kind, pk in entries if kind == "email"} & set(
                Email.objects.filter(account=theirs).values_list("pk", flat=True)
            )
