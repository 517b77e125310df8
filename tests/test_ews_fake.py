"""The EWS protocol fake (tests/servers/ews.py), driven by the real exchangelib client."""

import time
from datetime import UTC, date, datetime, timedelta

import pytest
import requests
import requests.adapters
from exchangelib import (
    BASIC,
    DELEGATE,
    OAUTH2,
    Account,
    Build,
    Configuration,
    Credentials,
    FailFast,
    FaultTolerance,
    HTMLBody,
    Mailbox,
    Message,
    OAuth2AuthorizationCodeCredentials,
)
from exchangelib.autodiscover import cache as autodiscover_cache_module
from exchangelib.autodiscover import clear_cache as clear_autodiscover_cache
from exchangelib.autodiscover.protocol import AutodiscoverProtocol
from exchangelib.errors import (
    ErrorAccessDenied,
    ErrorInvalidOperation,
    ErrorInvalidRecipients,
    ErrorInvalidSyncStateData,
    ErrorItemNotFound,
    ErrorNameResolutionNoResults,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    UnauthorizedError,
)
from exchangelib.protocol import BaseProtocol, close_connections

from tests.servers.certs import test_ca
from tests.servers.ews import EwsServer

ALICE, ALICE_PASSWORD = "alice@example.test", "alice-secret"


def mime(number: int, subject: str | None = None) -> bytes:
    return (
        f"From: Bob Example <bob@example.test>\r\n"
        f"To: Alice Example <{ALICE}>\r\n"
        f"Subject: {subject or f'Message {number}'}\r\n"
        f"Message-ID: <m{number}@example.test>\r\n"
        f"Date: Mon, 03 Jun 2024 10:{number % 60:02}:00 +0200\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"Hello number {number}.\r\n"
    ).encode()


@pytest.fixture
def trusted(tmp_path, monkeypatch):
    """exchangelib's HTTP adapter trusts the suite's CA (and nothing else)."""
    ca_file = str(tmp_path / "test-ca.pem")
    test_ca().cert_pem.write_to_path(ca_file)

    class TrustTestCa(requests.adapters.HTTPAdapter):
        def cert_verify(self, conn, url, verify, cert):
            super().cert_verify(conn=conn, url=url, verify=ca_file, cert=cert)

        def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
            return super().get_connection_with_tls_context(request, ca_file, proxies, cert)

    monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", TrustTestCa)
    yield ca_file
    close_connections()  # exchangelib caches protocols (and their sessions) per endpoint


@pytest.fixture
def server(trusted):
    server = EwsServer(token_user={"token-of-alice": ALICE}.get).start()
    server.add_user(ALICE, ALICE_PASSWORD, "Alice Example")
    server.add_user("bob@example.test", "bob-secret", "Bob Example")
    yield server
    server.stop()


def connect(server: EwsServer, password: str = ALICE_PASSWORD, **config) -> Account:
    config.setdefault("auth_type", BASIC)
    configuration = Configuration(
        service_endpoint=server.ews_url, credentials=Credentials(ALICE, password), **config
    )
    return Account(ALICE, config=configuration, autodiscover=False, access_type=DELEGATE)


def test_it_guesses_auth_type_and_version_and_walks_the_folder_tree(server):
    projects = server.add_folder("inbox", "Projects", mailbox=ALICE)
    server.add_folder(projects, "2024")
    account = connect(server, auth_type=None)  # the client probes both

    assert account.protocol.auth_type == BASIC
    assert account.root.name == "Root"
    assert account.version.build == Build(15, 1, 2507, 6)
    assert account.version.api_version == "Exchange2016"
    assert account.inbox.name == "Inbox"
    assert [f.name for f in account.inbox.children] == ["Projects"]
    nested = account.inbox / "Projects" / "2024"
    assert nested.id == server.folder_id("inbox/Projects/2024", mailbox=ALICE)
    assert account.root.tois.name == "Top of Information Store"
    names = {f.name for f in account.root.walk()}
    assert {"Inbox", "Sent Items", "Calendar", "Contacts", "Tasks", "2024"} <= names
    assert account.sent.name == "Sent Items"
    assert account.calendar.__class__.__name__ == "Calendar"


def test_it_pages_sync_items_and_picks_up_changes_from_the_saved_state(server):
    ids = [server.add_message("inbox", mime(n), mailbox=ALICE) for n in range(25)]
    account = connect(server)
    inbox = account.inbox
    before = server.calls("SyncFolderItems")

    changes = list(inbox.sync_items(only_fields=["subject"], max_changes_returned=10))

    assert server.calls("SyncFolderItems") - before == 3
    assert [kind for kind, _ in changes] == ["create"] * 25
    assert sorted(item.id for _, item in changes) == sorted(ids)
    assert {item.subject for _, item in changes} == {f"Message {n}" for n in range(25)}
    state = inbox.item_sync_state

    server.set_read(ids[3])
    server.delete_item(ids[4])
    server.update_item(ids[5], {"item:Subject": "Renamed"})
    new = server.add_message("inbox", mime(99), mailbox=ALICE)
    changes = list(inbox.sync_items(sync_state=state))  # every field, as exchangelib asks

    found = {kind: value for kind, value in changes}
    assert len(changes) == 4
    assert found["read_flag_change"][0].id == ids[3] and found["read_flag_change"][1] is True
    assert found["delete"].id == ids[4]
    assert found["update"].subject == "Renamed"
    assert found["create"].id == new and found["create"].is_read is False
    assert found["create"].author == Mailbox(name="Bob Example", email_address="bob@example.test")
    assert list(inbox.sync_items(sync_state=inbox.item_sync_state)) == []


def test_it_pages_and_sorts_find_item(server):
    for n in range(25):
        received = datetime(2024, 6, 1, tzinfo=UTC) + timedelta(hours=(n * 7) % 25)
        server.add_message("inbox", mime(n), received=received, mailbox=ALICE)
    account = connect(server)
    query = account.inbox.all().only("subject", "datetime_received").order_by("-datetime_received")
    query.page_size = 10
    before = server.calls("FindItem")

    found = list(query)

    assert server.calls("FindItem") - before == 3
    assert len(found) == 25
    stamps = [m.datetime_received for m in found]
    assert stamps == sorted(stamps, reverse=True)


def test_it_syncs_the_folder_hierarchy(server):
    server.add_folder("inbox", "Projects", mailbox=ALICE)
    account = connect(server)

    assert [(kind, f.name) for kind, f in account.inbox.sync_hierarchy()] == [
        ("create", "Projects")
    ]
    state = account.inbox.folder_sync_state
    server.add_folder("inbox/Projects", "2024", mailbox=ALICE)
    assert [(kind, f.name) for kind, f in account.inbox.sync_hierarchy(sync_state=state)] == [
        ("update", "Projects"),
        ("create", "2024"),
    ]


def test_it_gives_the_exact_mime_bytes_and_message_properties(server):
    raw = mime(7, subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=") + b"\xc3\xa4 and a trailing line\r\n"
    received = datetime(2024, 6, 3, 8, 30, tzinfo=UTC)
    item_id = server.add_message("inbox", raw, is_read=True, received=received, mailbox=ALICE)
    account = connect(server)

    [message] = account.fetch(ids=[(item_id, None)])

    assert message.mime_content == raw
    assert message.subject == "Grüße"
    assert message.datetime_received == received
    assert message.size == len(raw)
    assert message.is_read is True
    assert message.message_id == "<m7@example.test>"
    assert message.to_recipients == [Mailbox(name="Alice Example", email_address=ALICE)]
    assert "trailing line" in message.body


def test_it_answers_item_not_found_per_item(server):
    item_id = server.add_message("inbox", mime(1), mailbox=ALICE)
    account = connect(server)

    found, missing = account.fetch(ids=[(item_id, None), ("AAMkAGNvbmUtYnV0LW5vdC1oZXJl", None)])

    assert found.subject == "Message 1"
    assert isinstance(missing, ErrorItemNotFound)


def test_it_sends_and_saves_a_copy_in_sent_items(server):
    account = connect(server)
    list(account.sent.sync_items())  # a baseline
    state = account.sent.item_sync_state

    Message(
        account=account,
        folder=account.sent,
        subject="Quarterly numbers",
        body=HTMLBody("<p>Attached soon.</p>"),
        to_recipients=["bob@example.test"],
        cc_recipients=[Mailbox(name="Carol", email_address="carol@elsewhere.test")],
    ).send_and_save()
    Message(account=account, subject="Quick", body="No copy", to_recipients=[ALICE]).send(
        save_copy=False
    )

    first, second = server.sent
    assert (first.user, first.disposition, first.subject) == (
        ALICE,
        "SendAndSaveCopy",
        "Quarterly numbers",
    )
    assert first.to == ["bob@example.test"] and first.cc == ["carol@elsewhere.test"]
    assert b"Subject: Quarterly numbers" in first.mime and b"<p>Attached soon.</p>" in first.mime
    assert (second.disposition, second.saved_item_id) == ("SendOnly", None)
    [(kind, copy)] = list(account.sent.sync_items(sync_state=state))
    assert kind == "create" and copy.id == first.saved_item_id
    assert copy.subject == "Quarterly numbers" and copy.is_read is True

    with pytest.raises(ErrorInvalidRecipients):
        Message(account=account, subject="To nobody", body="x").send(save_copy=False)
    assert len(server.sent) == 2

    draft = Message(account=account, folder=account.drafts, subject="Later", to_recipients=[ALICE])
    draft.save()  # SaveOnly: stored, not sent, and its id comes back
    assert len(server.sent) == 2
    assert server.item(draft.id).props["item:IsDraft"] is True


def test_it_sends_a_message_given_as_mime(server):
    account = connect(server)
    raw = mime(3, subject="As MIME")

    Message(account=account, folder=account.sent, mime_content=raw).send_and_save()

    [sent] = server.sent
    assert sent.mime == raw and sent.to == [ALICE]
    assert server.item(sent.saved_item_id).props["item:Subject"] == "As MIME"


def test_it_shows_a_calendar_view_between_two_dates(server):
    def at(day: int, hour: int) -> datetime:
        return datetime(2024, 6, day, hour, tzinfo=UTC)

    server.add_calendar_item("Before", at(1, 9), at(1, 10), mailbox=ALICE)
    server.add_calendar_item(
        "Review",
        at(3, 9),
        at(3, 10),
        location="Room 1",
        organizer=("Bob Example", "bob@example.test"),
        required_attendees=[("Alice Example", ALICE)],
        body="Agenda",
        mailbox=ALICE,
    )
    server.add_calendar_item("Holiday", at(4, 0), at(5, 0), is_all_day=True, mailbox=ALICE)
    server.add_calendar_item("After", at(9, 9), at(9, 10), mailbox=ALICE)
    account = connect(server)

    found = list(account.calendar.view(start=at(2, 0), end=at(6, 0)))

    assert [i.subject for i in found] == ["Review", "Holiday"]
    review, holiday = found
    assert (review.start, review.end, review.location) == (at(3, 9), at(3, 10), "Room 1")
    assert review.organizer.email_address == "bob@example.test"
    assert [a.mailbox.email_address for a in review.required_attendees] == [ALICE]
    assert review.body == "Agenda" and review.is_all_day is False
    assert holiday.is_all_day is True and holiday.start == date(2024, 6, 4)


def test_it_lists_contacts_and_tasks(server):
    server.add_contact(
        "Dana Scully",
        given_name="Dana",
        surname="Scully",
        company_name="FBI",
        emails=["dana@fbi.test", "scully@home.test"],
        phones={"BusinessPhone": "+1 555 0100"},
        job_title="Agent",
        mailbox=ALICE,
    )
    server.add_task(
        "File report",
        start_date=date(2024, 6, 1),
        due_date=date(2024, 6, 7),
        status="InProgress",
        body="Before Friday",
        mailbox=ALICE,
    )
    account = connect(server)

    [contact] = list(account.contacts.all())
    [task] = list(account.tasks.all())

    assert (contact.display_name, contact.given_name) == ("Dana Scully", "Dana")
    assert (contact.surname, contact.company_name, contact.job_title) == ("Scully", "FBI", "Agent")
    assert [(e.label, e.email) for e in contact.email_addresses] == [
        ("EmailAddress1", "dana@fbi.test"),
        ("EmailAddress2", "scully@home.test"),
    ]
    assert [(p.label, p.phone_number) for p in contact.phone_numbers] == [
        ("BusinessPhone", "+1 555 0100")
    ]
    assert (task.subject, task.status, task.body) == ("File report", "InProgress", "Before Friday")
    assert (task.start_date, task.due_date) == (date(2024, 6, 1), date(2024, 6, 7))


def test_it_resolves_names_of_users_and_contacts(server):
    server.add_contact("Dana Scully", emails=["dana@fbi.test"], mailbox=ALICE)
    account = connect(server)
    # Protocol-level services (ResolveNames) do not guess the version themselves.
    assert account.protocol.version.build == Build(15, 1, 2507, 6)

    [(mailbox, contact)] = account.protocol.resolve_names(["bob"], return_full_contact_data=True)
    assert (mailbox.name, mailbox.email_address, mailbox.mailbox_type) == (
        "Bob Example",
        "bob@example.test",
        "Mailbox",
    )
    assert contact.display_name == "Bob Example"
    [from_contacts] = account.protocol.resolve_names(["scul"])
    assert (from_contacts.email_address, from_contacts.mailbox_type) == ("dana@fbi.test", "Contact")
    assert len(account.protocol.resolve_names(["example"])) == 2  # a Warning: several
    [miss] = account.protocol.resolve_names(["nobody-like-this"])
    assert isinstance(miss, ErrorNameResolutionNoResults)


def test_it_refuses_a_wrong_password_with_401(server, trusted):
    account = connect(server, password="wrong")

    with pytest.raises(UnauthorizedError):
        account.root  # noqa: B018 -- the first request

    assert ("ConvertId", None) in server.requests  # the version guess, refused
    envelope = (
        b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>'
    )
    response = requests.post(server.ews_url, data=envelope, verify=trusted, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="localhost", Bearer'


def test_it_accepts_a_bearer_token(server):
    def account_with(token: str) -> Account:
        credentials = OAuth2AuthorizationCodeCredentials(
            access_token={"access_token": token, "token_type": "Bearer"}
        )
        configuration = Configuration(
            service_endpoint=server.ews_url, credentials=credentials, auth_type=OAUTH2
        )
        return Account(ALICE, config=configuration, autodiscover=False, access_type=DELEGATE)

    assert account_with("token-of-alice").inbox.name == "Inbox"
    assert ("GetFolder", ALICE) in server.requests
    with pytest.raises(UnauthorizedError):
        account_with("token-of-nobody").inbox  # noqa: B018


def test_it_rejects_unknown_and_invalidated_sync_states(server):
    server.add_message("inbox", mime(1), mailbox=ALICE)
    account = connect(server)
    list(account.inbox.sync_items())
    state = account.inbox.item_sync_state

    with pytest.raises(ErrorInvalidSyncStateData):
        list(account.inbox.sync_items(sync_state="bm90IGEgc3luYyBzdGF0ZQ=="))
    server.invalidate_sync_states()
    with pytest.raises(ErrorInvalidSyncStateData):
        list(account.inbox.sync_items(sync_state=state))
    account.inbox.item_sync_state = None
    [(kind, item)] = account.inbox.sync_items(only_fields=["id"])  # a full resync, IdOnly
    assert kind == "create" and item.id and item.subject is None


def test_it_throttles_with_server_busy_which_fail_fast_raises(server):
    item_id = server.add_message("inbox", mime(1), mailbox=ALICE)
    account = connect(server, retry_policy=FailFast())
    account.root  # noqa: B018 -- connected
    server.fail_next("GetItem", "ErrorServerBusy", back_off_ms=300)

    with pytest.raises(ErrorServerBusy) as raised:
        list(account.fetch(ids=[(item_id, None)]))

    assert raised.value.back_off == 0.3
    assert next(account.fetch(ids=[(item_id, None)])).subject == "Message 1"


def test_it_throttles_with_server_busy_which_fault_tolerance_waits_out(server):
    item_id = server.add_message("inbox", mime(1), mailbox=ALICE)
    account = connect(server, retry_policy=FaultTolerance(max_wait=5))
    account.root  # noqa: B018
    server.fail_next("GetItem", "ErrorServerBusy", back_off_ms=300)
    before, started = server.calls("GetItem"), time.monotonic()

    [message] = account.fetch(ids=[(item_id, None)])

    assert message.subject == "Message 1"
    assert server.calls("GetItem") - before == 2
    assert 0.25 < time.monotonic() - started < 2


def test_it_injects_error_codes_and_dropped_connections(server):
    item_id = server.add_message("inbox", mime(1), mailbox=ALICE)
    account = connect(server)
    account.root  # noqa: B018
    server.fail_next("GetItem", "ErrorAccessDenied")
    with pytest.raises(ErrorAccessDenied):
        list(account.fetch(ids=[(item_id, None)]))

    server.drop_next("GetItem")
    with pytest.raises(ErrorTimeoutExpired):
        list(account.fetch(ids=[(item_id, None)]))
    assert next(account.fetch(ids=[(item_id, None)])).subject == "Message 1"


def test_it_refuses_what_it_does_not_implement(server):
    item_id = server.add_message("inbox", mime(1), mailbox=ALICE)
    account = connect(server)
    [message] = account.fetch(ids=[(item_id, None)])

    with pytest.raises(ErrorInvalidOperation):
        message.delete()
    with pytest.raises(ErrorInvalidOperation):
        list(account.inbox.filter(subject="Message 1"))
    assert server.unsupported == ["DeleteItem", "FindItem with a restriction"]


def test_it_answers_soap_autodiscover(server, tmp_path, monkeypatch):
    # exchangelib's autodiscover looks up https://<domain>/ on port 443 through DNS; this
    # port is neither, so it is pointed at the fake through its autodiscover cache, which
    # is where it keeps (and first tries) a domain's endpoint.
    monkeypatch.setattr(
        autodiscover_cache_module, "AUTODISCOVER_PERSISTENT_STORAGE", tmp_path / "ad-cache"
    )
    credentials = Credentials(ALICE, ALICE_PASSWORD)
    protocol = AutodiscoverProtocol(
        config=Configuration(
            service_endpoint=server.autodiscover_url, credentials=credentials, auth_type=BASIC
        )
    )
    try:
        settings = protocol.get_user_settings(user=ALICE)
        assert settings.ews_url == server.ews_url
        assert settings.autodiscover_smtp_address == ALICE
        assert settings.user_settings["user_display_name"] == "Alice Example"

        autodiscover_cache_module.autodiscover_cache[("example.test", credentials)] = protocol
        account = Account(ALICE, credentials=credentials, autodiscover=True, access_type=DELEGATE)
        assert account.protocol.service_endpoint == server.ews_url
        assert account.inbox.name == "Inbox"  # auth type probed, version from the headers
        assert account.protocol.auth_type == BASIC
        assert account.version.build == Build(15, 1, 2507, 6)
        assert server.calls("GetUserSettings") == 2  # the direct call, then the cached one
    finally:
        clear_autodiscover_cache()
