"""The operator's "Mailbox health" page (issue 18): every mailbox's state with its cause
and what to do, from the states the sync leaves behind, for staff who manage providers
only; filtered and sorted by state and lag, in a number of queries that does not grow
with the number of mailboxes."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from health.selectors import classify
from sync.models import (
    Email,
    EmailLocation,
    Folder,
    MailboxSync,
    SyncRun,
    UnstoredMessage,
    WorkerHeartbeat,
)
from sync.selectors import mailbox_health
from tests.factories import EmailAccountFactory, UserFactory

MANAGE = "providers.manage_email_providers"
PAGE = reverse("health:mailboxes")


@pytest.fixture
def operator(db):
    return UserFactory(is_staff=True, permissions=[MANAGE])


@pytest.fixture
def heartbeat(db):
    # The workers run: a late mailbox is "stuck" for being late, not for a dead worker.
    return WorkerHeartbeat.objects.create(name="worker", beat_at=timezone.now())


def _ago(**delta):
    return timezone.now() - timedelta(**delta)


def known_mailboxes() -> dict[str, object]:
    """One mailbox in each state the page shows (but the listener's: see health.listener)."""
    made = {}
    made["ok"] = EmailAccountFactory(address="ok@example.test")
    MailboxSync.objects.create(account=made["ok"], last_success_at=_ago(minutes=2))
    made["needs_owner"] = EmailAccountFactory(address="owner@example.test")
    MailboxSync.objects.create(
        account=made["needs_owner"], health=MailboxSync.Health.NEEDS_ATTENTION,
        last_error="The server refused the password.", last_error_kind="credentials",
        last_success_at=_ago(hours=3),
    )  # fmt: skip
    made["failing"] = EmailAccountFactory(address="failing@example.test")
    MailboxSync.objects.create(
        account=made["failing"], failing_since=_ago(hours=1), last_success_at=_ago(hours=2),
        last_error="The server did not answer.", last_error_kind="connection",
    )  # fmt: skip
    made["stuck"] = EmailAccountFactory(address="stuck@example.test")
    MailboxSync.objects.create(account=made["stuck"], last_success_at=_ago(days=2))
    made["blocked_folder"] = EmailAccountFactory(address="blocked@example.test")
    MailboxSync.objects.create(account=made["blocked_folder"], last_success_at=_ago(minutes=1))
    Folder.objects.create(
        account=made["blocked_folder"], path="Archive", messages=7,
        last_error="The server refused to read this folder: NO", failing_since=_ago(hours=5),
    )  # fmt: skip
    made["syncing"] = EmailAccountFactory(address="syncing@example.test")
    MailboxSync.objects.create(
        account=made["syncing"], last_success_at=_ago(minutes=3),
        claimed_until=timezone.now() + timedelta(minutes=5), claim_token="run",
    )  # fmt: skip
    made["off"] = EmailAccountFactory(address="off@example.test", auto_sync=False)
    # A removed mailbox is no operator's concern: it neither syncs nor sends.
    EmailAccountFactory(address="removed@example.test", removed_at=timezone.now())
    return made


def _rows(html: str) -> dict[str, str]:
    """{address: the row's state key}, in the page's order."""
    found = re.findall(
        r'<tr id="mailbox-\d+" data-state="(\w+)">\s*<td><strong>([^<]+)</strong>', html
    )
    return {address: state for state, address in found}


def test_it_shows_each_mailbox_in_its_state_with_cause_and_what_to_do(client, operator, heartbeat):
    made = known_mailboxes()
    client.force_login(operator)
    response = client.get(PAGE)
    assert response.status_code == 200
    rows = _rows(response.text)
    assert rows == {account.address: key for key, account in made.items()}
    # Most urgent first.
    assert list(rows.values()) == [
        "needs_owner", "failing", "stuck", "blocked_folder", "syncing", "off", "ok"
    ]  # fmt: skip
    text = response.text
    # Said to the operator: the state names who must act, and the owner is named.
    owner = made["needs_owner"].owner.get_username()
    assert "The server refused the password." in text and "Needs your attention" not in text
    assert f"Only its owner, {owner}, can do this. What they are told: The password" in text
    assert "Enter the new one under “Change email settings”." in text
    assert text.count("The server refused the password.") == 1  # not again as the last error
    # Shared: a colleague granted "Set up mailbox" can do it too.
    type(made["needs_owner"]).objects.filter(pk=made["needs_owner"].pk).update(shared_access=True)
    shared = client.get(PAGE).text
    assert f"Its owner, {owner}, or a colleague granted “Setup mailbox” (if any), can" in shared
    assert "Downloads have failed since" in text and "The server did not answer." in text
    assert "although one was due every 5 minutes" in text
    assert "Archive: The server refused to read this folder: NO" in text
    assert "A download is running." in text
    assert "Automatic download is off." in text
    # Owner and provider, and the runs of each mailbox.
    failing = made["failing"]
    assert failing.owner.username in text and failing.provider.name in text
    assert reverse("health:runs", args=[failing.pk]) in text
    assert "removed@example.test" not in text


def test_it_classifies_with_syncs_own_health(db, heartbeat):
    # One classifier: the page's level and words are mailbox_health's, mailbox by mailbox.
    made = known_mailboxes()
    inbox = Folder.objects.create(account=made["ok"], path="INBOX", uidvalidity=1)
    email = Email.objects.create(account=made["ok"], message_key="k", problem="unreadable")
    EmailLocation.objects.create(email=email, folder=inbox, uidvalidity=1, uid=1)
    UnstoredMessage.objects.create(folder=inbox, uidvalidity=1, uid=2, error="refused")
    rows = classify()
    assert len(rows) == len(made)
    for row in rows:
        state = MailboxSync.objects.filter(account=row.account).first()
        running = bool(state and state.claimed_until and state.claimed_until > timezone.now())
        alone = mailbox_health(row.account, state, running=running)
        assert (row.health.level, row.health.headline, row.health.advice) == (
            alone.level, alone.headline, alone.advice
        )  # fmt: skip
        assert (row.health.problems, row.health.notes) == (alone.problems, alone.notes)
    ok = next(row for row in rows if row.account == made["ok"])
    assert ok.key == "blocked_folder"
    assert ok.problems == ["1 email in INBOX could not be stored."]
    assert ok.health.notes == ["1 email in INBOX could not be read; its original is kept."]


def test_it_filters_by_state_and_search_and_sorts_by_lag(client, operator, heartbeat):
    made = known_mailboxes()
    client.force_login(operator)
    failing = client.get(PAGE, {"state": "failing"}).text
    assert list(_rows(failing)) == ["failing@example.test"]
    assert "1 mailbox in “Failing”" in failing
    # The filter's choices count every state.
    assert ">Stuck (1)</option>" in failing and ">Every state (7)</option>" in failing
    by_lag = list(_rows(client.get(PAGE, {"sort": "lag"}).text))
    # Never downloaded first, then the longest since the last success.
    assert by_lag[:3] == ["off@example.test", "stuck@example.test", "owner@example.test"]
    assert by_lag[-1] == "blocked@example.test"
    shortest = list(_rows(client.get(PAGE, {"sort": "-lag"}).text))
    assert shortest[0] == "blocked@example.test" and shortest[-1] == "off@example.test"
    owner = made["stuck"].owner.username
    assert list(_rows(client.get(PAGE, {"q": owner}).text)) == ["stuck@example.test"]
    # Anything else is the default, never an error.
    assert client.get(PAGE, {"state": "nonsense", "sort": "x", "page": "y"}).status_code == 200


def test_it_shows_the_servers_count_beside_the_stored_one(client, operator, heartbeat):
    account = EmailAccountFactory(address="counts@example.test")
    MailboxSync.objects.create(account=account, last_success_at=_ago(minutes=1))
    inbox = Folder.objects.create(account=account, path="INBOX", uidvalidity=1, messages=12)
    Folder.objects.create(account=account, path="Sent", special_use="\\sent", messages=5)
    # Not downloaded by default: not counted on either side.
    Folder.objects.create(account=account, path="Trash", special_use="\\trash", messages=40)
    Folder.objects.create(account=account, path="New")  # never read: no count yet
    for uid in (1, 2, 3):
        email = Email.objects.create(account=account, message_key=f"k{uid}")
        EmailLocation.objects.create(email=email, folder=inbox, uidvalidity=1, uid=uid)
    client.force_login(operator)
    html = client.get(PAGE).text
    cell = re.search(r'class="counts">([^<]*)<br><span class="muted">([^<]*)<', html)
    assert cell.groups() == ("17 / 3", "1 folder not read yet")


def _problem_mailboxes(count: int, start: int) -> None:
    """Mailboxes with something in each place the classification reads."""
    for number in range(start, start + count):
        account = EmailAccountFactory(address=f"many{number}@example.test")
        MailboxSync.objects.create(
            account=account, last_success_at=_ago(minutes=number), last_error="x",
            failing_since=_ago(minutes=1) if number % 3 == 0 else None,
        )  # fmt: skip
        inbox = Folder.objects.create(
            account=account, path="INBOX", uidvalidity=1, messages=number,
            last_error="refused" if number % 2 else "",
        )  # fmt: skip
        UnstoredMessage.objects.create(folder=inbox, uidvalidity=1, uid=1, error="x")
        email = Email.objects.create(account=account, message_key="k", problem="incomplete")
        EmailLocation.objects.create(email=email, folder=inbox, uidvalidity=1, uid=2)
        SyncRun.objects.create(account=account, state="succeeded", finished_at=timezone.now())


def _queries(client, **params) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(PAGE, params).status_code == 200
    return len(queries)


def test_it_reads_a_fixed_number_of_queries_however_many_mailboxes(
    client, operator, heartbeat, django_assert_max_num_queries
):
    client.force_login(operator)
    _problem_mailboxes(4, start=0)
    few = _queries(client)
    _problem_mailboxes(70, start=4)  # more than a page
    with django_assert_max_num_queries(few):
        html = client.get(PAGE).text
    assert len(_rows(html)) == 50 and "Page 1 of 2" in html
    with django_assert_max_num_queries(few):
        second = client.get(PAGE, {"page": 2, "sort": "lag"}).text
    assert len(_rows(second)) == 24
    # 16: the worker's heartbeat is read once for a page with a failing mailbox (whether
    # "the app tries again by itself" is true), and what failed sending once for all.
    assert few <= 16, few


@pytest.mark.parametrize(
    ("staff", "perms", "status"),
    [(False, [], 403), (True, [], 403), (False, [MANAGE], 403), (True, [MANAGE], 200)],
    ids=["plain", "staff-without-permission", "permission-without-staff", "operator"],
)
def test_it_opens_for_staff_who_manage_providers_only(client, db, staff, perms, status):
    account = EmailAccountFactory()
    SyncRun.objects.create(
        account=account, state="failed", error="Refused", finished_at=_ago(seconds=1)
    )
    client.force_login(UserFactory(is_staff=staff, permissions=perms))
    assert client.get(PAGE).status_code == status
    assert client.get(reverse("health:runs", args=[account.pk])).status_code == status
    admin = client.get(reverse("admin:index"))
    if staff:
        assert (PAGE in admin.text) is (status == 200)


def test_it_sends_the_anonymous_to_sign_in(client, db):
    account = EmailAccountFactory()
    for url in (PAGE, reverse("health:runs", args=[account.pk])):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_it_lists_a_mailboxs_runs_newest_first_a_page_at_a_time(client, operator, heartbeat):
    account = EmailAccountFactory(address="runs@example.test")
    other = EmailAccountFactory()
    SyncRun.objects.create(account=other, state="failed", error="not this one")
    for minutes in range(60, 0, -1):
        started = _ago(minutes=minutes)
        SyncRun.objects.create(
            account=account, started_at=started, finished_at=started + timedelta(seconds=42),
            state="failed" if minutes == 1 else "succeeded", new_emails=minutes,
            error="The server did not answer." if minutes == 1 else "",
        )  # fmt: skip
    client.force_login(operator)
    url = reverse("health:runs", args=[account.pk])
    html = client.get(url).text
    runs = re.findall(r'<tr id="run-(\d+)">', html)
    assert len(runs) == 50
    assert "The server did not answer." in html and "42 s" in html
    assert "not this one" not in html
    assert "Newer runs" not in html
    older = re.search(r'href="\?after=([^"]+)" rel="next">Older runs', html).group(1)
    rest = client.get(f"{url}?after={older}").text
    assert len(re.findall(r'<tr id="run-(\d+)">', rest)) == 10
    assert "Older runs" not in rest
    newer = re.search(r'href="\?before=([^"]+)" rel="prev">Newer runs', rest).group(1)
    again = client.get(f"{url}?before={newer}").text
    assert re.findall(r'<tr id="run-(\d+)">', again) == runs
    removed = EmailAccountFactory(removed_at=timezone.now())
    assert client.get(reverse("health:runs", args=[removed.pk])).status_code == 404


def test_it_shows_a_disconnected_listener_where_push_says_so(
    client, operator, heartbeat, monkeypatch
):
    # health.listener is where push/ is wired in at the merge; here it says what push
    # would: one watched mailbox's connection is down. The stand-in is this test's.
    from health import listener

    made = known_mailboxes()
    down = {
        made["ok"].pk: "The listener lost its connection 4 minutes ago; reconnecting.",
        # A mailbox with a worse state keeps it: the listener is not its news.
        made["failing"].pk: "Down as well.",
    }
    monkeypatch.setattr(
        listener, "disconnected", lambda ids: {k: down[k] for k in down if k in ids}
    )
    client.force_login(operator)
    html = client.get(PAGE, {"state": "listener"}).text
    assert _rows(html) == {"ok@example.test": "listener"}
    assert "The listener lost its connection 4 minutes ago; reconnecting." in html
    assert "Check that the mail listener service (manage.py mail_listener) runs" in html
    assert _rows(client.get(PAGE, {"state": "failing"}).text) == {"failing@example.test": "failing"}


def test_it_shows_a_mailbox_no_listener_ever_watched_and_what_to_do(
    client, operator, heartbeat, settings
):
    """Through push's real rows, not a stand-in: a mailbox added while no listener ran has
    no watch row (only a listener creates them), and used to read "OK" forever."""
    from push.models import MailboxWatch

    settings.PUSH_LEASE_SECONDS = 60
    made = known_mailboxes()
    added = made["ok"]
    type(added).objects.filter(pk=added.pk).update(created_at=_ago(minutes=30))
    fresh = EmailAccountFactory(address="fresh@example.test")  # a listener's tick away
    MailboxSync.objects.create(account=fresh, last_success_at=_ago(minutes=1))
    # Left "needs the owner" by a listener; the owner fixed it, nobody took it up again.
    fixed = EmailAccountFactory(address="fixed@example.test")
    MailboxSync.objects.create(account=fixed, last_success_at=_ago(minutes=1))
    MailboxWatch.objects.create(
        account=fixed, state=MailboxWatch.State.NEEDS_OWNER, state_since=_ago(hours=2)
    )
    # Its server has no IDLE: healthy, but on the interval, and the page says so.
    idle_less = EmailAccountFactory(address="noidle@example.test")
    MailboxSync.objects.create(account=idle_less, last_success_at=_ago(minutes=1))
    MailboxWatch.objects.create(
        account=idle_less, state=MailboxWatch.State.NOT_SUPPORTED, state_since=_ago(hours=1)
    )
    client.force_login(operator)
    html = client.get(PAGE).text
    rows = _rows(html)
    assert rows["ok@example.test"] == "listener" and rows["fixed@example.test"] == "listener"
    assert rows["fresh@example.test"] == "ok" and rows["noidle@example.test"] == "interval"
    assert "No mail listener has watched it since it was added 30" in html
    assert "No mail listener has watched it for 2" in html and "(last: needs the owner)" in html
    assert "Check that the mail listener service (manage.py mail_listener) runs" in html
    assert "Its server cannot be watched (no IDLE): new mail arrives at the download" in html
    assert 'id="push-off"' not in html
    # A deployment that runs no listener on purpose: nobody is disconnected, and the page
    # says push is off.
    settings.PUSH_ENABLED = False
    html = client.get(PAGE).text
    rows = _rows(html)
    assert "listener" not in rows.values() and "interval" not in rows.values()
    assert rows["ok@example.test"] == rows["fixed@example.test"] == "ok"
    assert 'id="push-off"' in html and "PUSH_ENABLED=false" in html


def test_it_says_a_mailbox_not_downloaded_yet_is_not_yet_ok(client, operator, heartbeat):
    fresh = EmailAccountFactory(address="fresh@example.test")
    client.force_login(operator)
    page = client.get(PAGE).text
    assert _rows(page)[fresh.address] == "first_download"
    assert "Not downloaded yet" in page and "Its first download is due soon." in page


def test_it_tells_the_operator_to_fix_the_provider_where_the_provider_is_wrong(
    client, operator, heartbeat
):
    account = EmailAccountFactory(address="tls@example.test")
    MailboxSync.objects.create(
        account=account, health=MailboxSync.Health.NEEDS_ATTENTION, last_error_kind="tls",
        last_error="The server's certificate is not trusted.",
    )  # fmt: skip
    client.force_login(operator)
    page = client.get(PAGE).text
    assert f"The provider {account.provider.name}&#x27;s settings or its server" in page
    assert "ask your administrator" not in page
