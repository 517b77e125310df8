"""mail/graph/backend.py and mail/graph/reader.py against the Graph protocol fake
(tests/servers/graph.py: not Microsoft's service), over HTTPS with the suite's CA, with
tokens from the suite's OAuth server."""

from datetime import UTC, datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import default

import pytest
import requests

from accounts.oauth import access_token
from mail.errors import MailError, Retry, SignInError
from mail.graph.backend import GraphBackend
from mail.graph.client import Throttled, TokenRejected
from mail.graph.reader import GraphReader
from mail.reading import INCOMPLETE, UNREADABLE, NewItem, StateLost
from mail.registry import backend_for
from providers.addresses import normalize_address
from providers.models import AuthMethod, ServiceType
from tests.conftest import GRAPH_SCOPES


def mime(number: int, subject: str | None = None, body: str = "") -> bytes:
    return (
        f"From: Bob Example <bob@example.test>\r\n"
        f"To: gina@m365.test\r\n"
        f"Subject: {subject or f'Message {number}'}\r\n"
        f"Message-ID: <b{number}@example.test>\r\n"
        f"Date: Mon, 03 Jun 2024 10:{number % 60:02}:00 +0200\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hello number {number}.\r\n{body}"
    ).encode()


@pytest.fixture
def backend(graph_mailbox) -> GraphBackend:
    found = backend_for(graph_mailbox[0].provider)
    assert isinstance(found, GraphBackend)
    return found


def credentials(account, **changes) -> dict:
    given = {
        "provider": account.provider,
        "address": normalize_address(account.address),
        "login": account.login,
        "access_token": access_token(account_id=account.pk),
    }
    return given | changes


@pytest.fixture
def reader(backend, graph_mailbox):
    session = backend.open_reader(**credentials(graph_mailbox[0]), allow_internal=True)
    assert isinstance(session, GraphReader)
    session.page_size = 10
    yield session
    backend.close_reader(session)


def mine(graph_server, address: str, route: str) -> list[dict]:
    return [r for r in graph_server.calls(route) if r["user"] == address]


# -- reading changes -------------------------------------------------------------------


def _all_pages(reader, folder: str, state: str = "") -> tuple[list, str]:
    pages = []
    while True:
        page = reader.changes(folder, state)
        pages.append(page)
        state = page.state
        if page.last:
            return pages, state


def test_it_reads_a_folder_page_by_page_and_goes_on_from_the_stored_state(
    reader, graph_server, graph_mailbox
):
    address = graph_mailbox[1]
    ids = [graph_server.add_message("inbox", mime(n), mailbox=address) for n in range(25)]
    inbox = graph_server.folder_id("inbox", address)

    first = reader.changes(inbox, "")
    assert [item.id for item in first.created] == ids[:10]
    assert not first.last and first.state.startswith(graph_server.graph_url)
    again = reader.changes(inbox, first.state)  # the stored state, asked twice: same page
    assert [i.id for i in again.created] == [
        i.id for i in reader.changes(inbox, first.state).created
    ]
    pages, delta = _all_pages(reader, inbox, first.state)
    assert [len(p.created) for p in pages] == [10, 5]
    assert [i.id for p in [first, *pages] for i in p.created] == ids
    assert pages[-1].last and "$deltatoken" in delta
    assert all(isinstance(i.received, datetime) for i in first.created)

    assert reader.changes(inbox, delta).created == []  # nothing happened since


def test_it_reports_read_flags_and_deletions_in_the_next_pages(reader, graph_server, graph_mailbox):
    address = graph_mailbox[1]
    ids = [graph_server.add_message("inbox", mime(n), mailbox=address) for n in range(3)]
    inbox = graph_server.folder_id("inbox", address)
    pages, delta = _all_pages(reader, inbox)
    assert pages[0].seen == dict.fromkeys(ids, False)

    graph_server.set_read(ids[0])
    graph_server.delete(ids[1])
    new = graph_server.add_message("inbox", mime(9), is_read=True, mailbox=address)
    pages, _after = _all_pages(reader, inbox, delta)

    created = {i.id for p in pages for i in p.created}
    # Graph names new and changed messages alike: both come as created (sync skips the
    # ids it stored already), each with its read flag now.
    assert created == {ids[0], new}
    assert {k: v for p in pages for k, v in p.seen.items()} == {ids[0]: True, new: True}
    assert {d for p in pages for d in p.deleted} == {ids[1]}


def test_it_reads_a_page_cut_off_again_from_the_stored_state(
    reader, backend, graph_server, graph_mailbox
):
    address = graph_mailbox[1]
    ids = [graph_server.add_message("inbox", mime(n), mailbox=address) for n in range(15)]
    inbox = graph_server.folder_id("inbox", address)
    first = reader.changes(inbox, "")
    graph_server.cut_next("messages.delta", mailbox=address)

    with pytest.raises(MailError) as caught:
        reader.changes(inbox, first.state)

    assert backend.read_failure(caught.value, oauth=True).retry == Retry.LATER
    assert reader.folder_refusal(caught.value) is None
    again = reader.changes(inbox, first.state)  # nothing of the cut page was taken
    assert [i.id for i in again.created] == ids[10:] and again.last


def test_it_says_the_state_is_lost_when_graph_forgot_the_link(reader, graph_server, graph_mailbox):
    address = graph_mailbox[1]
    for n in range(15):
        graph_server.add_message("inbox", mime(n), mailbox=address)
    inbox = graph_server.folder_id("inbox", address)
    first = reader.changes(inbox, "")
    _pages, delta = _all_pages(reader, inbox, first.state)

    graph_server.forget_delta_links()
    with pytest.raises(StateLost):
        reader.changes(inbox, delta)
    with pytest.raises(StateLost):
        reader.changes(inbox, first.state)  # a next link mid-round too
    assert len(reader.changes(inbox, "").created) == 10  # the folder read from its start


def test_it_surfaces_throttling_with_its_retry_decision(
    reader, backend, graph_server, graph_mailbox
):
    address = graph_mailbox[1]
    inbox = graph_server.folder_id("inbox", address)
    graph_server.throttle_next("messages.delta", retry_after=120, mailbox=address)

    with pytest.raises(Throttled) as caught:
        reader.changes(inbox, "")

    failure = backend.read_failure(caught.value, oauth=True)
    assert (failure.kind, failure.retry) == ("busy", Retry.LATER)
    assert caught.value.wait == 120
    assert reader.folder_refusal(caught.value) is None  # the run's, not the folder's


def test_it_finds_the_messages_received_in_a_period(reader, graph_server, graph_mailbox):
    address = graph_mailbox[1]
    day = datetime(2024, 6, 1, tzinfo=UTC)
    ids = [
        graph_server.add_message(
            "inbox", mime(n), received=day + timedelta(days=n), is_read=n == 2, mailbox=address
        )
        for n in range(15)  # more than a page of the listing
    ]
    inbox = graph_server.folder_id("inbox", address)

    between = reader.received_between(
        inbox, since=day + timedelta(days=2), before=day + timedelta(days=5)
    )
    oldest = reader.received_between(inbox, since=None, before=day + timedelta(days=12))

    assert sorted(i.id for i in between) == sorted(ids[2:5])
    assert {i.received for i in between} == {day + timedelta(days=n) for n in (2, 3, 4)}
    assert sorted(i.id for i in oldest) == sorted(ids[:12])
    read = reader.read([NewItem(ids[2]), NewItem(ids[3])], size_limit=10**6)
    assert {r.id: r.seen for r in read} == {ids[2]: True, ids[3]: False}


# -- reading sources -------------------------------------------------------------------


def test_it_reads_sources_keeps_a_large_one_incomplete_and_leaves_out_a_vanished_one(
    reader, graph_server, graph_mailbox
):
    address = graph_mailbox[1]
    small = graph_server.add_message("inbox", mime(1), is_read=True, mailbox=address)
    large = graph_server.add_message("inbox", mime(2, "Big one", "x" * 5000), mailbox=address)
    gone = graph_server.add_message("inbox", mime(3), mailbox=address)
    inbox = graph_server.folder_id("inbox", address)
    _all_pages(reader, inbox)
    graph_server.delete(gone)

    read = reader.read([NewItem(small), NewItem(large), NewItem(gone)], size_limit=2000)

    by_id = {r.id: r for r in read}
    assert set(by_id) == {small, large}
    assert by_id[small].raw == mime(1) and by_id[small].seen and not by_id[small].problem
    big = by_id[large]
    assert big.problem == INCOMPLETE and "MaxMessageSizeMB" in big.note
    headers = BytesHeaderParser(policy=default).parsebytes(big.raw)
    assert headers["Subject"] == "Big one" and headers["Message-ID"] == "<b2@example.test>"
    assert headers["X-Graph-Message"]


def test_it_keeps_what_graph_says_of_a_message_whose_source_it_cannot_give(
    reader, graph_server, graph_mailbox
):
    address = graph_mailbox[1]
    broken = graph_server.add_message("inbox", mime(4, "Corrupt"), mailbox=address)
    lost = graph_server.add_message("inbox", mime(5), mailbox=address)
    graph_server.fail_next("message.value", 500, "ErrorInternalServerError", count=2,
                           mailbox=address)  # fmt: skip

    first = reader.read([NewItem(broken)], size_limit=10**6)
    graph_server.fail_next("message", 500, "ErrorInternalServerError", mailbox=address)
    second = reader.read([NewItem(lost)], size_limit=10**6)

    (made,) = first
    assert made.problem == UNREADABLE and "ErrorInternalServerError" in made.note
    assert BytesHeaderParser(policy=default).parsebytes(made.raw)["Subject"] == "Corrupt"
    (noted,) = second
    assert noted.raw is None and "neither" in noted.note


def test_it_ends_the_run_on_a_refused_token_while_reading_sources(
    reader, backend, graph_server, graph_mailbox, oauth_server
):
    address = graph_mailbox[1]
    one = graph_server.add_message("inbox", mime(6), mailbox=address)
    oauth_server.expire_access_tokens()

    with pytest.raises(TokenRejected) as caught:
        reader.read([NewItem(one)], size_limit=10**6)

    # During a run the token ran out: the next run refreshes it, nobody has to act.
    failure = backend.read_failure(caught.value, oauth=True)
    assert (failure.kind, failure.retry) == ("token_unavailable", Retry.LATER)


def test_it_tells_one_folders_refusal_from_the_runs(reader, graph_server, graph_mailbox):
    address = graph_mailbox[1]
    doomed = graph_server.add_folder("msgfolderroot", "Doomed", mailbox=address)
    with graph_server.state.lock:
        del graph_server.state.containers[doomed]
    graph_server.fail_next("messages.delta", 403, "ErrorAccessDenied", mailbox=address)
    inbox = graph_server.folder_id("inbox", address)

    with pytest.raises(MailError) as denied:
        reader.changes(inbox, "")
    with pytest.raises(MailError) as deleted:
        reader.changes(doomed, "")

    assert "ErrorAccessDenied" in reader.folder_refusal(denied.value)
    assert "ErrorItemNotFound" in reader.folder_refusal(deleted.value)
    assert reader.folder_refusal(MailError("connection", "reset")) is None
    assert reader.folder_refusal(KeyError("x")) is None


# -- folders ---------------------------------------------------------------------------


def test_it_lists_nested_folders_with_their_special_uses(
    backend, reader, graph_server, graph_mailbox
):
    address = graph_mailbox[1]
    projects = graph_server.add_folder("inbox", "Projects", mailbox=address)
    graph_server.add_folder(projects, "2024", mailbox=address)
    graph_server.add_folder("msgfolderroot", "Clients/Old", mailbox=address)
    graph_server.add_message(projects, mime(1), mailbox=address)

    listed = backend.list_folders(reader)

    by_path = {f.path: f for f in listed}
    assert {"Inbox/Projects/2024", "Clients Old", "Inbox"} <= set(by_path)
    assert by_path["Inbox/Projects"].messages == 1 and by_path["Inbox/Projects/2024"].messages == 0
    assert by_path["Inbox/Projects"].server_id == projects
    assert {p: f.special_use for p, f in by_path.items() if f.special_use} == {
        "Sent Items": "\\sent", "Deleted Items": "\\trash", "Junk Email": "\\junk",
        "Drafts": "\\drafts", "Contacts": "\\contacts",
    }  # fmt: skip
    # Every folder holds mail but the address book (listed for the Contacts settings).
    assert all(f.delimiter == "/" for f in listed)
    assert {f.path for f in listed if not f.selectable} == {"Contacts"}

    asked = len(mine(graph_server, address, "mailFolder"))
    known = {f.server_id: f.special_use for f in listed}
    again = reader.folders(known)
    assert len(mine(graph_server, address, "mailFolder")) == asked  # nothing new: not asked
    assert again == listed
    graph_server.add_folder("msgfolderroot", "New", mailbox=address)
    reader.folders(known)
    assert len(mine(graph_server, address, "mailFolder")) == asked + 4  # a new folder: asked


def test_it_lists_the_folders_of_a_mailbox_without_some_well_known_ones(
    backend, reader, graph_server, graph_mailbox
):
    address = graph_mailbox[1]
    junk = graph_server.folder_id("junkemail", address)
    with graph_server.state.lock:
        del graph_server.state.containers[junk]

    listed = backend.list_folders(reader)

    uses = {f.path: f.special_use for f in listed if f.special_use}
    assert uses == {
        "Sent Items": "\\sent", "Deleted Items": "\\trash", "Drafts": "\\drafts",
        "Contacts": "\\contacts",
    }  # fmt: skip


# -- signing in ------------------------------------------------------------------------


def test_it_signs_in_and_says_the_mailboxs_name(backend, graph_mailbox, graph_server):
    account, address = graph_mailbox
    assert backend.check_sign_in(**credentials(account)) == "Gina Graph"
    assert mine(graph_server, address, "me")


def test_it_adds_a_mailbox_through_the_microsoft_sign_in_with_graphs_permissions(
    client, graph_provider, graph_server, oauth_server, mail_trust
):
    from urllib.parse import parse_qs, urlsplit

    from django.urls import reverse

    from accounts.models import EmailAccount
    from tests.factories import UserFactory
    from tests.servers.oauth import authorize_as

    address = "nina.new@m365.test"
    graph_server.add_user(address, name="Nina New")
    user = UserFactory()
    client.force_login(user)

    started = client.post(
        reverse("accounts:wizard_oauth_start"), {"address": address, "provider": graph_provider.pk}
    )
    scopes = parse_qs(urlsplit(started.url).query)["scope"][0].split()
    back = authorize_as(started.url, str(mail_trust))
    response = client.get(reverse("accounts:oauth_callback"), back)

    # msal asked for Graph's permissions, and added offline_access (a refresh token).
    assert {f"https://graph.microsoft.com/{p}" for p in GRAPH_SCOPES.split()} <= set(scopes)
    assert "offline_access" in scopes
    assert response.status_code == 302
    account = EmailAccount.objects.get(owner=user, address=address)
    assert account.uses_oauth and account.provider == graph_provider
    assert mine(graph_server, address, "me")  # the sign-in check asked Graph with the token


def test_it_refreshes_a_refused_token_once_and_reads_on(backend, graph_mailbox, oauth_server):
    from accounts.oauth import session_for

    account, _address = graph_mailbox
    oauth_server.expire_access_tokens()  # Graph refuses the stored token: it ran out
    refreshes = len(oauth_server.calls("/token"))

    session = session_for(backend.open_reader, account)
    try:
        assert any(f.path == "Inbox" for f in session.folders())
    finally:
        backend.close_reader(session)
    assert len(oauth_server.calls("/token")) == refreshes + 1


def test_it_refuses_a_token_graph_does_not_accept_as_a_refusal_to_refresh(backend, graph_mailbox):
    account, _address = graph_mailbox
    for check in (backend.check_sign_in, backend.open_reader, backend.open_sender):
        with pytest.raises(SignInError) as caught:
            check(**credentials(account, access_token="not a token"))
        # "credentials": accounts.oauth.session_for refreshes the token once on it.
        assert (caught.value.kind, caught.value.retry) == ("credentials", Retry.OWNER)


def test_it_refuses_the_token_of_another_mailbox(
    backend, graph_mailbox, graph_server, oauth_server
):
    account, _address = graph_mailbox
    graph_server.add_user("someone.else@m365.test", name="Someone Else")
    other = oauth_server.grant("someone.else@m365.test", "mailsetup-test", scope=GRAPH_SCOPES)

    with pytest.raises(SignInError) as caught:
        backend.check_sign_in(**credentials(account, access_token=other["access_token"]))

    assert caught.value.retry == Retry.OWNER
    assert "someone.else@m365.test" in str(caught.value) and account.address in str(caught.value)


def test_it_asks_for_oauth_instead_of_a_password(backend, graph_mailbox):
    account, _address = graph_mailbox
    with pytest.raises(SignInError) as caught:
        backend.check_sign_in(**credentials(account, access_token="", password="secret"))
    error = caught.value
    assert (error.kind, error.field, error.retry) == ("auth_unsupported", "provider", Retry.OWNER)


def test_it_asks_the_provider_card_for_oauth_naming_the_field(graph_provider):
    from django.core.exceptions import ValidationError

    from accounts.forms import NewServerForm

    backend = backend_for(graph_provider)
    assert backend.validate_provider(graph_provider) == {}
    graph_provider.auth_method = AuthMethod.PASSWORD
    with pytest.raises(ValidationError) as caught:
        graph_provider.full_clean()
    assert "authentication to OAuth 2.0" in caught.value.message_dict["service_type"][0]
    # The wizard's "Add new server" has no authentication field: a form error, no crash.
    form = NewServerForm(data={"name": "Graph by hand", "service_type": ServiceType.GRAPH,
                               "login_format": "email", "imap_security": "ssl",
                               "smtp_security": "ssl"})  # fmt: skip
    assert not form.is_valid()
    assert "OAuth 2.0" in form.errors["service_type"][0]


def test_it_names_graph_as_the_endpoint(backend, graph_mailbox, graph_server, settings):
    account, _address = graph_mailbox
    (endpoint,) = backend.endpoints(account.provider, normalize_address(account.address))
    assert (endpoint.host, endpoint.port) == ("localhost", graph_server.port)
    settings.GRAPH_URL = "https://graph.microsoft.com/v1.0"
    (endpoint,) = backend.endpoints(account.provider, normalize_address(account.address))
    assert (endpoint.host, endpoint.port) == ("graph.microsoft.com", 443)
    assert backend.service_type == ServiceType.GRAPH and backend.reader == "delta"


# -- sending ---------------------------------------------------------------------------


def test_it_sends_with_bcc_and_hands_over_just_before_the_post(
    backend, graph_mailbox, graph_server
):
    account, address = graph_mailbox
    before = len(graph_server.sent)
    seen_at_hand_over = []

    def handing_over():
        seen_at_hand_over.append(len(mine(graph_server, address, "sendMail")))

    sender = backend.open_sender(**credentials(account))
    raw = mime(7)
    backend.deliver(sender, sender=address, recipients=["gina@m365.test", "hidden@example.test"],
                    raw=raw, handing_over=handing_over)  # fmt: skip

    assert seen_at_hand_over == [0]
    (sent,) = graph_server.sent[before:]
    assert sent["user"] == address and sent["saved"]
    assert sent["mime"].endswith(raw)  # the message as written, a Bcc line on top
    assert BytesHeaderParser().parsebytes(sent["mime"])["Bcc"] == "hidden@example.test"
    folder = graph_server.folder_id("sentitems", address)
    assert len(graph_server.state.in_container(folder)) == 1  # Graph kept the Sent copy


@pytest.mark.parametrize(
    ("fault", "decision"),
    [
        (("cut_next", "sendMail"), ("handed_over", Retry.UNKNOWN)),
        (("fail_next", "sendMail", 400, "ErrorInvalidRecipients"), ("rejected", Retry.NEVER)),
        (("throttle_next", "sendMail", 120), ("busy", Retry.LATER)),
    ],
)
def test_it_decides_what_a_failed_delivery_means(
    backend, graph_mailbox, graph_server, fault, decision
):
    account, address = graph_mailbox
    method, *arguments = fault
    getattr(graph_server, method)(*arguments, mailbox=address)
    handed = []
    sender = backend.open_sender(**credentials(account))

    with pytest.raises(MailError) as caught:
        backend.deliver(sender, sender=address, recipients=["gina@m365.test"], raw=mime(8),
                        handing_over=lambda: handed.append(True))  # fmt: skip

    assert (caught.value.kind, caught.value.retry) == decision
    assert handed == [True]


def test_it_stores_a_sent_copy_once_when_asked_to_look_first(backend, graph_mailbox, graph_server):
    account, address = graph_mailbox
    raw = mime(11, "By hand")
    first = backend.store_sent_copy(
        backend.open_reader(**credentials(account)), raw=raw, message_id="<b11@example.test>"
    )
    again = backend.store_sent_copy(
        backend.open_reader(**credentials(account)), raw=raw, message_id="<b11@example.test>",
        look_first=True,
    )  # fmt: skip
    assert first == again == "Sent Items"
    folder = graph_server.folder_id("sentitems", address)
    assert [e.mime for e in graph_server.state.in_container(folder)] == [raw]


# -- what failures mean ----------------------------------------------------------------


def test_it_says_what_a_failure_while_reading_means(backend):
    reset = requests.exceptions.ConnectionError("Connection reset by peer")
    assert backend.read_failure(reset).kind == "connection_lost"
    assert backend.read_failure(ConnectionResetError(104, "reset")).retry == Retry.LATER
    assert backend.read_failure(requests.exceptions.ReadTimeout()).kind == "timeout"
    refused = TokenRejected("refused", "InvalidAuthenticationToken")
    assert backend.read_failure(refused, oauth=True).kind == "token_unavailable"
    busy = Throttled("wait", 60)
    assert backend.read_failure(busy) is busy
    assert backend.read_failure(KeyError("folder")) is None


# -- sources in batches ------------------------------------------------------------------


def _created(reader, graph_server, address) -> list:
    pages, _state = _all_pages(reader, graph_server.folder_id("inbox", address))
    return [item for page in pages for item in page.created]


def test_it_reads_sources_twenty_to_a_round_trip(reader, graph_server, graph_mailbox):
    address = graph_mailbox[1]
    for number in range(45):
        graph_server.add_message("inbox", mime(number), mailbox=address)
    created = _created(reader, graph_server, address)
    graph_server.state.requests.clear()

    read = reader.read(created, size_limit=10_000_000)

    assert sorted(item.raw for item in read) == sorted(mime(n) for n in range(45))
    assert len(mine(graph_server, address, "$batch")) == 3  # 20 + 20 + 5
    singles = [r for r in mine(graph_server, address, "message.value") if not r.get("batch")]
    assert singles == []


def test_it_reads_alone_what_a_batch_does_not_give_plainly(reader, graph_server, graph_mailbox):
    address = graph_mailbox[1]
    ids = [
        graph_server.add_message("inbox", mime(n, body="x" * 5000 * n), mailbox=address)
        for n in range(4)
    ]
    created = _created(reader, graph_server, address)
    graph_server.delete(ids[0])  # gone meanwhile: left out
    # One item's own error inside the batch: read alone, where it works.
    graph_server.fail_next("message.value", 500, "ErrorInternalServerError", mailbox=address)
    graph_server.state.requests.clear()

    read = {item.id: item for item in reader.read(created, size_limit=12_000)}

    assert set(read) == set(ids[1:])
    assert read[ids[1]].raw == mime(1, body="x" * 5000) and not read[ids[1]].problem
    assert read[ids[2]].raw == mime(2, body="x" * 10000) and not read[ids[2]].problem
    # Above the limit (15,000 bytes of text): read alone, streamed, kept as its headers
    # and text.
    assert read[ids[3]].problem == "incomplete"
    singles = [r for r in mine(graph_server, address, "message.value") if not r.get("batch")]
    assert len(singles) == 2  # the failed one and the large one, each alone once


def test_it_reads_one_by_one_when_a_batch_answer_would_be_too_large(
    reader, graph_server, graph_mailbox
):
    address = graph_mailbox[1]
    for number in range(3):
        graph_server.add_message("inbox", mime(number, body="y" * 4000), mailbox=address)
    created = _created(reader, graph_server, address)
    reader.client.max_page_bytes = 8_000  # three sources, base64, do not fit
    graph_server.state.requests.clear()

    read = reader.read(created, size_limit=10_000_000)

    assert len(read) == 3 and not any(item.problem for item in read)
    singles = [r for r in mine(graph_server, address, "message.value") if not r.get("batch")]
    assert len(singles) == 3
