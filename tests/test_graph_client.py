"""mail/graph/client.py against the Graph protocol fake (tests/servers/graph.py: not
Microsoft's service), over HTTPS with the suite's CA, with tokens from the suite's OAuth
server."""

import base64
import email
import email.policy
import io
import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest

from mail.errors import MailError, Retry
from mail.graph.client import (
    DeltaReset,
    GraphClient,
    Throttled,
    TokenRejected,
    TooLarge,
)
from tests.servers.graph import GraphServer

GRAPH_SCOPES = "Mail.ReadWrite Mail.Send Calendars.Read Contacts.ReadWrite Tasks.Read"
_users = itertools.count()


@pytest.fixture(scope="module")
def graph_server(oauth_server):
    server = GraphServer(token_user=oauth_server.token_user).start()
    yield server
    server.stop()


@pytest.fixture
def mailbox(graph_server, oauth_server, mail_trust):
    """A fresh user on the fake: (address, access token)."""
    address = f"graph-{next(_users):03}@m365.test"
    graph_server.add_user(address, name="Gina Graph")
    answer = oauth_server.grant(address, "mailsetup-test", scope=GRAPH_SCOPES)
    return address, answer["access_token"]


@pytest.fixture
def client(graph_server, mailbox):
    with GraphClient(mailbox[1], base_url=graph_server.graph_url, timeout=5) as graph:
        yield graph


def mime(number: int, to: str = "gina@m365.test", subject: str | None = None) -> bytes:
    return (
        f"From: Bob Example <bob@example.test>\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject or f'Message {number}'}\r\n"
        f"Message-ID: <g{number}@example.test>\r\n"
        f"Date: Mon, 03 Jun 2024 10:{number % 60:02}:00 +0200\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hello number {number}.\r\n"
    ).encode()


def mine(graph_server, address: str, route: str) -> list[dict]:
    return [r for r in graph_server.calls(route) if r["user"] == address]


def test_it_reads_the_signed_in_user(client, mailbox):
    me = client.me()
    assert me.address == mailbox[0]
    assert me.user_principal_name == mailbox[0]
    assert me.display_name == "Gina Graph"


def test_it_lists_folders_with_their_children_and_finds_well_known_ones(
    client, graph_server, mailbox
):
    projects = graph_server.add_folder("inbox", "Projects", mailbox=mailbox[0])
    graph_server.add_folder(projects, "2024", mailbox=mailbox[0])
    for n in range(101):  # more than a page of top-level folders ($top=100)
        graph_server.add_folder("msgfolderroot", f"Top {n:03}", mailbox=mailbox[0])

    folders = client.mail_folders()

    paths = {f.path for f in folders}
    assert ("Inbox", "Projects", "2024") in paths
    assert ("Top 100",) in paths and ("Sent Items",) in paths
    assert len(folders) == len({f.id for f in folders}) == 7 + 2 + 101
    assert len(mine(graph_server, mailbox[0], "mailFolders")) >= 2  # followed the nextLink
    sent = client.well_known_folder("sentitems")
    assert sent.display_name == "Sent Items" and sent.well_known == "sentitems"
    assert sent.id == graph_server.folder_id("sentitems", mailbox[0])


def test_it_pages_through_a_first_delta_round_with_the_fields_it_selects(
    client, graph_server, mailbox
):
    ids = [graph_server.add_message("inbox", mime(n), mailbox=mailbox[0]) for n in range(25)]
    inbox = graph_server.folder_id("inbox", mailbox[0])

    pages = list(client.messages_delta(inbox, page_size=10))

    assert [len(p.changed) for p in pages] == [10, 10, 5]
    assert all(p.next_link for p in pages[:-1]) and pages[-1].delta_link
    assert [row["id"] for p in pages for row in p.changed] == ids
    first = pages[0].changed[0]
    assert first["internetMessageId"] == "<g0@example.test>" and first["isRead"] is False
    assert "bodyPreview" not in first and "toRecipients" not in first  # $select held
    asked = mine(graph_server, mailbox[0], "messages.delta")
    assert len(asked) == 3
    assert asked[0]["query"]["$select"].startswith("id,internetMessageId,isRead")
    assert all(r["prefer"] == "odata.maxpagesize=10" for r in asked)


def test_it_reports_removals_and_read_flag_changes_in_the_next_round(client, graph_server, mailbox):
    ids = [graph_server.add_message("inbox", mime(n), mailbox=mailbox[0]) for n in range(5)]
    inbox = graph_server.folder_id("inbox", mailbox[0])
    first = client.delta_round(f"mailFolders/{inbox}/messages/delta")
    assert set(first.changed) == set(ids) and not first.removed

    graph_server.set_read(ids[1])
    graph_server.delete(ids[2])
    moved = graph_server.move(ids[3], "deleteditems")
    new = graph_server.add_message("inbox", mime(9), mailbox=mailbox[0])
    second = client.delta_round(first.delta_link)

    assert second.removed == {ids[2], ids[3]}
    assert set(second.changed) == {ids[1], new}
    assert second.changed[ids[1]]["isRead"] is True
    assert moved not in second.changed
    assert second.delta_link and second.delta_link != first.delta_link
    third = client.delta_round(second.delta_link)
    assert not third.changed and not third.removed


def test_it_raises_a_delta_reset_when_the_server_forgot_the_link(client, graph_server, mailbox):
    graph_server.add_message("inbox", mime(1), mailbox=mailbox[0])
    inbox = graph_server.folder_id("inbox", mailbox[0])
    done = client.delta_round(f"mailFolders/{inbox}/messages/delta")
    graph_server.forget_delta_links()

    with pytest.raises(DeltaReset) as caught:
        client.delta_round(done.delta_link)

    assert caught.value.code == "syncStateNotFound"
    assert caught.value.retry == Retry.LATER
    assert "sync state" in str(caught.value)
    # Starting over is the way back: the whole folder again, once.
    again = client.delta_round(f"mailFolders/{inbox}/messages/delta")
    assert len(again.changed) == 1


def test_it_treats_resync_required_as_a_delta_reset_too(client, graph_server, mailbox):
    inbox = graph_server.folder_id("inbox", mailbox[0])
    for n in range(3):
        graph_server.add_message("inbox", mime(n), mailbox=mailbox[0])
    pages = client.messages_delta(inbox, page_size=2)
    first = next(pages)
    graph_server.forget_delta_links(code="resyncRequired")
    with pytest.raises(DeltaReset) as caught:
        list(client.delta_pages(first.next_link))
    assert caught.value.code == "resyncRequired"


def test_it_waits_out_a_short_retry_after(client, graph_server, mailbox):
    graph_server.throttle_next("me", retry_after=1, mailbox=mailbox[0])

    assert client.me().address == mailbox[0]

    asked = mine(graph_server, mailbox[0], "me")
    assert len(asked) == 2
    assert asked[1]["at"] - asked[0]["at"] >= 1.0


def test_it_hands_a_long_retry_after_back_as_throttled(graph_server, mailbox):
    graph_server.throttle_next("me", retry_after=120, status=503, mailbox=mailbox[0])
    waited = []
    graph = GraphClient(mailbox[1], base_url=graph_server.graph_url, max_wait=30,
                        sleep=waited.append)  # fmt: skip

    with pytest.raises(Throttled) as caught:
        graph.me()

    assert caught.value.wait == 120 and caught.value.kind == "busy"
    assert caught.value.retry == Retry.LATER
    assert waited == []
    assert len(mine(graph_server, mailbox[0], "me")) == 1


def test_it_gives_up_after_repeated_throttling(graph_server, mailbox):
    graph_server.throttle_next("me", retry_after=1, count=10, mailbox=mailbox[0])
    waited = []
    graph = GraphClient(mailbox[1], base_url=graph_server.graph_url, sleep=waited.append)

    with pytest.raises(Throttled):
        graph.me()

    assert waited == [1.0, 1.0, 1.0]
    assert len(mine(graph_server, mailbox[0], "me")) == 4


def test_it_says_the_owner_must_reconnect_on_a_rejected_token(graph_server, oauth_server, mailbox):
    graph = GraphClient("not-a-token", base_url=graph_server.graph_url)
    with pytest.raises(TokenRejected) as caught:
        graph.me()
    assert caught.value.retry == Retry.OWNER and caught.value.kind == "reconnect"
    assert caught.value.code == "InvalidAuthenticationToken"
    assert "Reconnect" in str(caught.value)


def test_it_says_the_owner_must_reconnect_when_the_token_expired(
    graph_server, oauth_server, mailbox
):
    graph = GraphClient(mailbox[1], base_url=graph_server.graph_url)
    assert graph.me().address == mailbox[0]
    # This token only runs out (the session's server serves other tests' tokens too).
    with oauth_server.state.lock:
        grant, _ = oauth_server.state.access_tokens[mailbox[1]]
        oauth_server.state.access_tokens[mailbox[1]] = (grant, time.time() - 1)
    with pytest.raises(TokenRejected):
        graph.me()


def test_it_fails_a_cut_page_whole_and_resumes_from_the_stored_link(client, graph_server, mailbox):
    ids = [graph_server.add_message("inbox", mime(n), mailbox=mailbox[0]) for n in range(7)]
    inbox = graph_server.folder_id("inbox", mailbox[0])
    applied: dict[str, dict] = {}
    stored_link = ""
    pages = client.messages_delta(inbox, page_size=3)
    page = next(pages)
    applied |= {row["id"]: row for row in page.changed}
    stored_link = page.link
    graph_server.cut_next("messages.delta", mailbox=mailbox[0])

    with pytest.raises(MailError) as caught:
        next(pages)

    assert caught.value.kind == "connection_lost" and caught.value.retry == Retry.LATER
    assert len(applied) == 3  # the broken page gave nothing
    for page in client.delta_pages(stored_link, page_size=3):
        assert not set(applied) & {row["id"] for row in page.changed}  # none twice
        applied |= {row["id"]: row for row in page.changed}
    assert list(applied) == ids


def test_it_returns_nothing_of_a_round_that_broke(client, graph_server, mailbox):
    for n in range(5):
        graph_server.add_message("inbox", mime(n), mailbox=mailbox[0])
    inbox = graph_server.folder_id("inbox", mailbox[0])
    graph_server.cut_next("messages.delta", mailbox=mailbox[0])
    with pytest.raises(MailError) as caught:
        client.delta_round(f"mailFolders/{inbox}/messages/delta", page_size=2)
    assert caught.value.retry == Retry.LATER


def test_it_downloads_the_exact_mime_bytes(client, graph_server, mailbox):
    raw = mime(4, subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=") + b"\r\nbinary-ish: \xe9\xff\r\n"
    ident = graph_server.add_message("inbox", raw, mailbox=mailbox[0])

    assert client.message_mime(ident, limit=1 << 20) == raw
    out = io.BytesIO()
    copy = client.write_message_mime(ident, out, limit=1 << 20)
    assert out.getvalue() == raw and copy.complete and copy.size == len(raw)


def test_it_keeps_the_first_bytes_of_a_message_above_the_limit(client, graph_server, mailbox):
    raw = mime(5) + b"x" * 5000
    ident = graph_server.add_message("inbox", raw, mailbox=mailbox[0])

    out = io.BytesIO()
    copy = client.write_message_mime(ident, out, limit=1000)
    assert (copy.size, copy.complete) == (1000, False)
    assert out.getvalue() == raw[:1000]
    with pytest.raises(TooLarge):
        client.message_mime(ident, limit=1000)


def test_it_sends_mime_and_the_server_keeps_the_sent_copy(client, graph_server, mailbox):
    raw = mime(7, to="carl@example.test", subject="Quote for Acme")
    handed = []

    client.send_mime(raw, handing_over=lambda: handed.append(True))

    assert handed == [True]
    (sent,) = [s for s in graph_server.sent if s["user"] == mailbox[0]]
    assert sent["mime"] == raw and sent["saved"]
    asked = mine(graph_server, mailbox[0], "sendMail")[-1]
    assert asked["method"] == "POST"
    sent_items = client.well_known_folder("sentitems")
    found = client.delta_round(f"mailFolders/{sent_items.id}/messages/delta")
    (copy,) = found.changed.values()
    assert copy["internetMessageId"] == "<g7@example.test>" and copy["isRead"] is True
    assert client.message_mime(copy["id"], limit=1 << 20) == raw


def test_it_says_a_refused_message_was_not_sent(client, graph_server, mailbox):
    no_recipients = b"From: gina@m365.test\r\nSubject: nobody\r\n\r\nHello\r\n"
    with pytest.raises(MailError) as caught:
        client.send_mime(no_recipients)
    assert caught.value.kind == "rejected" and caught.value.retry == Retry.NEVER
    assert "ErrorInvalidRecipients" in str(caught.value)


def test_it_says_a_message_may_have_been_sent_when_the_answer_broke_off(
    client, graph_server, mailbox
):
    graph_server.cut_next("sendMail", mailbox=mailbox[0])
    with pytest.raises(MailError) as caught:
        client.send_mime(mime(8))
    assert caught.value.kind == "handed_over" and caught.value.retry == Retry.UNKNOWN
    assert [s["mime"] for s in graph_server.sent if s["user"] == mailbox[0]] == [mime(8)]


def test_it_refuses_links_to_another_server(client, graph_server):
    with pytest.raises(MailError) as caught:
        list(client.delta_pages("https://elsewhere.test/v1.0/me/messages/delta"))
    assert "another server" in str(caught.value)
    assert caught.value.retry == Retry.NEVER


def test_it_refuses_a_server_whose_certificate_it_does_not_trust(graph_server, mailbox, settings):
    settings.MAIL_EXTRA_CA_FILE = None
    graph = GraphClient(mailbox[1], base_url=graph_server.graph_url)
    with pytest.raises(MailError) as caught:
        graph.me()
    assert caught.value.kind == "certificate" and caught.value.retry == Retry.OWNER


def test_it_refuses_an_internal_address_when_those_are_not_allowed(graph_server, mailbox):
    from systemsettings.models import SystemSetting
    from systemsettings.selectors import cache_clear

    SystemSetting.objects.filter(code="AllowInternalMailServers").update(value="no")
    cache_clear()
    graph = GraphClient(mailbox[1], base_url=graph_server.graph_url)
    with pytest.raises(MailError) as caught:
        graph.me()
    assert caught.value.kind == "internal_address"
    assert not mine(graph_server, mailbox[0], "me")  # nothing (no token) reached it


def test_it_bounds_the_size_of_an_answer(graph_server, mailbox):
    for n in range(20):
        graph_server.add_message("inbox", mime(n), mailbox=mailbox[0])
    inbox = graph_server.folder_id("inbox", mailbox[0])
    graph = GraphClient(mailbox[1], base_url=graph_server.graph_url, max_page_bytes=2000)
    with pytest.raises(TooLarge):
        list(graph.messages_delta(inbox, page_size=20))


def test_it_reads_the_calendar_view_with_series_expanded(client, graph_server, mailbox):
    start = datetime(2024, 6, 3, 9, tzinfo=UTC)
    graph_server.add_event("Weekly with Acme", start, start + timedelta(hours=1),
                           attendees=[("Carl", "carl@acme.test")], weekly_count=4,
                           mailbox=mailbox[0])  # fmt: skip
    graph_server.add_event("Doctor", start + timedelta(days=1), start + timedelta(days=1, hours=1),
                           sensitivity="private", mailbox=mailbox[0])  # fmt: skip
    graph_server.add_event("Long ago", start - timedelta(days=400),
                           start - timedelta(days=400, hours=-1), mailbox=mailbox[0])  # fmt: skip

    events = client.calendar_view(start - timedelta(days=1), start + timedelta(days=20))

    weekly = [e for e in events if e["subject"] == "Weekly with Acme"]
    assert len(weekly) == 3 and {e["type"] for e in weekly} == {"occurrence"}
    assert len({e["id"] for e in weekly}) == 3
    (doctor,) = [e for e in events if e["subject"] == "Doctor"]
    assert doctor["sensitivity"] == "private"
    assert not [e for e in events if e["subject"] == "Long ago"]


def test_it_follows_calendar_view_delta_rounds(client, graph_server, mailbox):
    start = datetime(2024, 6, 3, 9, tzinfo=UTC)
    one = graph_server.add_event("Kick-off", start, start + timedelta(hours=1),
                                 mailbox=mailbox[0])  # fmt: skip
    window = (start - timedelta(days=1), start + timedelta(days=30))
    first = list(client.calendar_view_delta(*window))
    assert [row["id"] for p in first for row in p.changed] == [one]

    graph_server.update(one, {"subject": "Kick-off (moved)"})
    second = list(client.calendar_view_delta(*window, link=first[-1].link))
    assert [row["subject"] for p in second for row in p.changed] == ["Kick-off (moved)"]


def test_it_reads_todo_lists_and_tasks(client, graph_server, mailbox):
    graph_server.add_task("Call Acme back", status="inProgress", mailbox=mailbox[0])
    extra = graph_server.add_todo_list("Sales", mailbox=mailbox[0])
    graph_server.add_task("Send the quote", list_id=extra, mailbox=mailbox[0])

    lists = {row["displayName"]: row for row in client.todo_lists()}
    assert set(lists) == {"Tasks", "Sales"}
    assert lists["Tasks"]["wellknownListName"] == "defaultList"
    (task,) = client.todo_tasks(lists["Tasks"]["id"])
    assert task["title"] == "Call Acme back" and task["status"] == "inProgress"
    assert [t["title"] for t in client.todo_tasks(extra)] == ["Send the quote"]


def test_it_reads_contacts_of_the_default_folder_and_of_chosen_folders(
    client, graph_server, mailbox
):
    graph_server.add_contact("Carl Acme", company_name="Acme", emails=["carl@acme.test"],
                             mailbox=mailbox[0])  # fmt: skip
    default = graph_server.folder_id("contacts", mailbox[0])
    suppliers = graph_server.add_folder(default, "Suppliers", mailbox=mailbox[0])
    graph_server.add_contact("Sue Supply", folder=suppliers, mailbox=mailbox[0])

    (carl,) = client.contacts()
    assert carl["companyName"] == "Acme"
    assert carl["emailAddresses"][0]["address"] == "carl@acme.test"
    folders = client.contact_folders()
    assert [f["displayName"] for f in folders] == ["Suppliers"]
    assert [c["displayName"] for c in client.contacts(folders[0]["id"])] == ["Sue Supply"]


def test_it_has_a_fake_that_takes_sendmail_as_graph_documents_it(graph_server, mailbox, client):
    # The fake itself: MIME must come base64-encoded as text/plain, or Graph says 400.
    response = client.session.post(
        f"{graph_server.graph_url}/me/sendMail", data=b"not base64!",
        headers={"Content-Type": "text/plain"}, timeout=5,
    )  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ErrorMimeContentInvalidBase64String"
    encoded = base64.b64encode(mime(3, to="x@example.test"))
    response = client.session.post(
        f"{graph_server.graph_url}/me/sendMail", data=encoded,
        headers={"Content-Type": "text/plain"}, timeout=5,
    )  # fmt: skip
    assert response.status_code == 202 and response.content == b""
    parsed = email.message_from_bytes(graph_server.sent[-1]["mime"], policy=email.policy.default)
    assert parsed["Subject"] == "Message 3"


def test_it_gives_up_on_a_server_that_never_answers(mail_trust):
    from tests.servers.https import SilentServer

    silent = SilentServer().start()
    try:
        graph = GraphClient("token", base_url=f"https://localhost:{silent.port}/v1.0", timeout=1)
        started = time.monotonic()
        with pytest.raises(MailError) as caught:
            graph.me()
        assert caught.value.kind == "timeout" and caught.value.retry == Retry.LATER
        assert time.monotonic() - started < 10
    finally:
        silent.stop()


def test_it_reads_retry_after_as_seconds_or_as_a_date():
    from email.utils import format_datetime

    from mail.graph.client import _retry_after

    assert _retry_after("7") == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 <= _retry_after(later) <= 90
    assert _retry_after("soon") is None and _retry_after(None) is None
    assert _retry_after("-5") is None


# --- The fake itself, where the client does not show it -------------------------------------


@pytest.fixture
def raw(mailbox, mail_trust):
    """requests as a bare Graph client would use it: the suite's CA, the user's token."""
    import requests

    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would replace `verify`
    session.verify = str(mail_trust)
    session.headers["Authorization"] = f"Bearer {mailbox[1]}"
    yield session
    session.close()


def test_it_has_a_fake_that_refuses_a_request_without_a_token(graph_server, raw):
    del raw.headers["Authorization"]
    response = raw.get(f"{graph_server.graph_url}/me", timeout=5)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_it_has_a_fake_that_gives_the_same_page_for_a_skip_token_twice(graph_server, raw, mailbox):
    for n in range(5):
        graph_server.add_message("inbox", mime(n), mailbox=mailbox[0])
    inbox = graph_server.folder_id("inbox", mailbox[0])
    # The SDKs' spelling of the function, and the page size they prefer.
    first = raw.get(
        f"{graph_server.graph_url}/me/mailFolders/{inbox}/messages/microsoft.graph.delta()",
        headers={"Prefer": "odata.maxpagesize=2"}, timeout=5,
    )  # fmt: skip
    assert first.headers["Preference-Applied"] == "odata.maxpagesize=2"
    assert first.json()["@odata.context"].endswith("$metadata#Collection(message)")
    link = first.json()["@odata.nextLink"]
    again = [raw.get(link, timeout=5).json()["value"] for _ in range(2)]
    assert again[0] == again[1] and len(again[0]) == 2


def test_it_has_a_fake_that_answers_graph_errors_for_bad_requests(graph_server, raw):
    response = raw.get(f"{graph_server.graph_url}/me/calendarView", timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ErrorInvalidParameter"
    response = raw.get(f"{graph_server.graph_url}/me/mailFolders/AQMkNoSuchFolder", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ErrorItemNotFound"


def test_it_finds_a_message_by_its_message_id_and_creates_one_from_mime(
    client, graph_server, mailbox
):
    sent = graph_server.folder_id("sentitems", mailbox[0])
    raw = mime(11, subject="It's a quote").replace(b"<g11@", b"<o'brien.11@")
    assert client.find_messages(sent, "<o'brien.11@example.test>") == []

    created = client.create_message(sent, raw)

    assert created["isDraft"] is True  # what Graph makes of MIME
    (found,) = client.find_messages(sent, "<o'brien.11@example.test>")
    assert found["id"] == created["id"]
    assert client.message_mime(found["id"], limit=1 << 20) == raw


def test_it_reports_a_refused_recipient_and_a_server_failure_by_their_decisions(
    client, graph_server, mailbox
):
    graph_server.fail_next("sendMail", 400, "ErrorInvalidRecipients", mailbox=mailbox[0])
    with pytest.raises(MailError) as caught:
        client.send_mime(mime(12))
    assert caught.value.retry == Retry.NEVER
    graph_server.fail_next("sendMail", 500, "ErrorInternalServerError", mailbox=mailbox[0])
    with pytest.raises(MailError) as caught:
        client.send_mime(mime(13))
    assert caught.value.kind == "temporary" and caught.value.retry == Retry.LATER
    graph_server.fail_next("mailFolders", 403, "ErrorAccessDenied", mailbox=mailbox[0])
    with pytest.raises(MailError) as caught:
        client.mail_folders()
    assert caught.value.kind == "access_denied" and caught.value.retry == Retry.OWNER
    assert not [s for s in graph_server.sent if s["user"] == mailbox[0]]


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [(504, "", "handed_over"), (502, "BadGateway", "handed_over"), (500, "", "handed_over"),
     (503, "", "handed_over"), (500, "ErrorInternalServerError", "temporary")],
)  # fmt: skip
def test_it_never_sends_again_after_a_gateways_answer_to_the_message(
    client, graph_server, mailbox, status, code, kind
):
    # A gateway's 502 or 504 (or a 5xx without Graph's own error, a 503 too) may come
    # after the service took the message; Graph's own 500 says it failed.
    graph_server.fail_next("sendMail", status, code, mailbox=mailbox[0])
    with pytest.raises(MailError) as caught:
        client.send_mime(mime(1))
    assert caught.value.kind == kind
    assert len(mine(graph_server, mailbox[0], "sendMail")) == 1  # never POSTed again
