"""One contract, every backend: the same checks run against the IMAP/SMTP backend (the
suite's Dovecot and aiosmtpd), the EWS backend (tests/servers/ews.py, a protocol fake
of Exchange 2016, not Exchange) and the Graph backend (tests/servers/graph.py, a protocol
fake of Microsoft Graph v1.0, not Microsoft's service). A new protocol is one new backend
module, one registry line and one `Door` here.

Sign in, list folders, read a folder incrementally, deliver, the Sent copy, and failures
of each retry decision (later, owner, never, unknown) as the backend reports them."""

import ssl
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser

import pytest

from mail.backend import ListedFolder, MailBackend
from mail.errors import ACTIONS, PROVIDER_KINDS, MailError, Retry, SignInError
from mail.registry import BACKENDS, backend_for
from providers.addresses import normalize_address
from providers.models import ServiceType
from sync.models import Email, SyncRun
from sync.readers import READERS
from sync.services import mailbox_sync
from tests.mailbox import make_message
from tests.servers.dovecot import free_port

PARTNER = "peter@partner.test"


@dataclass
class Door:
    """A mailbox behind one backend, and the test's view of its server."""

    account: object
    put: object  # (raw) -> None: a message arrives in the inbox
    in_sent: object  # (message_id) -> bool: the server's Sent folder holds it
    delivered: object  # () -> list of (recipients, raw) the server sent on
    fail_sending: object  # (retry) -> None: the next delivery fails with that decision
    # (session) -> None: a request of the protocol's own library through a reading
    # session, as a reader makes them (its exceptions are the library's, untranslated)
    read: object = None
    extra: dict = field(default_factory=dict)

    @property
    def backend(self) -> MailBackend:
        return backend_for(self.account.provider)

    def credentials(self, **changes) -> dict:
        account = self.account
        given = {
            "provider": account.provider,
            "address": normalize_address(account.address),
            "login": account.login,
            "password": account.get_password(),
        }
        if account.uses_oauth:
            from accounts.oauth import access_token

            # The secret of a mailbox that signs in with OAuth 2.0 is its access token:
            # a wrong "password" is a token the server refuses.
            given["access_token"] = access_token(account_id=account.pk)
            del given["password"]
            if "password" in changes:
                changes["access_token"] = changes.pop("password")
        return given | changes


def _imap_door(request) -> Door:
    account, mailbox = request.getfixturevalue("synced_mailbox")
    outbox = request.getfixturevalue("outbox")

    def put(raw: bytes) -> None:
        mailbox.append("INBOX", raw)

    def in_sent(message_id: str) -> bool:
        with mailbox.client() as client:
            for flags, _delimiter, name in client.list_folders():
                if b"\\Sent" in flags or name == "Sent":
                    client.select_folder(name, readonly=True)
                    if client.search(["HEADER", "Message-ID", message_id]):
                        return True
        return False

    def delivered() -> list:
        return [(list(m.rcpt_tos), m.content) for m in outbox.messages]

    def fail_sending(retry: Retry) -> None:
        if retry == Retry.LATER:
            outbox.recipient_replies[PARTNER] = "421 4.3.2 Try again later"
        elif retry == Retry.NEVER:
            outbox.recipient_replies[PARTNER] = "550 5.1.1 No such user"
        elif retry == Retry.UNKNOWN:
            outbox.cut_after_data.add(PARTNER)

    def read(session) -> None:
        session.select_folder("INBOX", readonly=True)

    return Door(account, put, in_sent, delivered, fail_sending, read=read)


def _ews_door(request) -> Door:
    from datetime import UTC, datetime

    account, address = request.getfixturevalue("exchange_mailbox")
    server = request.getfixturevalue("ews_server")
    sent_before = len(server.sent)

    def put(raw: bytes) -> None:
        server.add_message("inbox", raw, received=datetime.now(UTC), mailbox=address)

    def in_sent(message_id: str) -> bool:
        state = server.state
        folder = server.folder_id("sentitems", mailbox=address)
        with state.lock:
            for item in state.items_in(state.folders[folder]):
                mime = item.props.get("item:MimeContent") or b""
                if BytesHeaderParser().parsebytes(mime).get("Message-ID") == message_id:
                    return True
        return False

    def delivered() -> list:
        return [(m.to + m.cc + m.bcc, m.mime) for m in server.sent[sent_before:]]

    def fail_sending(retry: Retry) -> None:
        code = {
            Retry.LATER: ("ErrorServerBusy", 1, 10),
            Retry.NEVER: ("ErrorInvalidRecipients",),
            # Exchange's own word that its time ran out after the message went in.
            Retry.UNKNOWN: ("ErrorTimeoutExpired",),
        }.get(retry)
        if code:
            server.fail_next("CreateItem", *code)

    def password_changed(_session) -> None:
        # Exchange checks the sign-in with every request: the next one is refused.
        with server.state.lock:
            server.state.users[address.lower()].password = "changed by its owner"

    return Door(
        account, put, in_sent, delivered, fail_sending, read=read_by_changes,
        extra={"server": server, "password_changed": password_changed},
    )  # fmt: skip


def read_by_changes(reader) -> None:
    """A read through mail.reading.DeltaReader: the folders, then a folder's first page."""
    folder = next(listed for listed in reader.folders() if listed.selectable)
    reader.changes(folder.server_id, "")


def _graph_door(request) -> Door:
    from email.utils import getaddresses

    from accounts.models import EmailAccount
    from mailsetup import crypto

    account, address = request.getfixturevalue("graph_mailbox")
    server = request.getfixturevalue("graph_server")
    oauth_server = request.getfixturevalue("oauth_server")
    sent_before = len(server.sent)

    def put(raw: bytes) -> None:
        server.add_message("inbox", raw, mailbox=address)

    def sent_copies(message_id: str) -> int:
        folder = server.folder_id("sentitems", mailbox=address)
        with server.state.lock:
            return sum(
                item.data.get("internetMessageId") == message_id
                for item in server.state.in_container(folder)
            )

    def delivered() -> list:
        found = []
        for sent in server.sent[sent_before:]:
            if sent["user"] != address:
                continue
            headers = BytesHeaderParser().parsebytes(sent["mime"])
            named = [v for h in ("To", "Cc", "Bcc") for v in headers.get_all(h, [])]
            found.append(([a for _n, a in getaddresses(named)], sent["mime"]))
        return found

    def fail_sending(retry: Retry) -> None:
        if retry == Retry.LATER:
            # Longer than the client waits by itself: handed back to the queue.
            server.throttle_next("sendMail", retry_after=120, mailbox=address)
        elif retry == Retry.NEVER:
            server.fail_next("sendMail", 400, "ErrorInvalidRecipients", mailbox=address)
        elif retry == Retry.UNKNOWN:
            server.cut_next("sendMail", mailbox=address)  # taken, and no answer comes

    def refuse_sign_in(account) -> tuple[str, Retry]:
        # The grant was revoked: the access token is refused, and so is its refresh.
        oauth_server.expire_access_tokens()
        EmailAccount.objects.filter(pk=account.pk).update(
            oauth_refresh_token_encrypted=crypto.encrypt("revoked by its owner")
        )
        return "reconnect", Retry.OWNER

    return Door(
        account, put, lambda message_id: sent_copies(message_id) > 0, delivered, fail_sending,
        read=read_by_changes,
        extra={
            "sent_copies": sent_copies, "refuse_sign_in": refuse_sign_in,
            "no_password_change": "Microsoft Graph signs in with OAuth tokens only: a token "
            "refused during a run is the token's, for the next run to refresh "
            "(tests/test_graph_backend.py checks that decision)",
        },
    )  # fmt: skip


DOORS = {
    ServiceType.IMAP_SMTP: _imap_door,
    ServiceType.EXCHANGE: _ews_door,
    ServiceType.GRAPH: _graph_door,
}


@pytest.fixture(params=sorted(DOORS))
def door(request, db) -> Door:
    return DOORS[request.param](request)


def _message(to: str = PARTNER, subject: str = "Contract") -> tuple[bytes, str]:
    raw = make_message(subject=subject, sender="Owner <owner@example.test>", to=to)
    return raw, BytesHeaderParser().parsebytes(raw)["Message-ID"]


# -- the registry --------------------------------------------------------------------


def test_it_has_a_backend_and_a_reader_for_every_service_type():
    assert set(BACKENDS) == set(ServiceType.values)
    for service_type, backend in BACKENDS.items():
        assert isinstance(backend, MailBackend)
        assert backend.service_type == service_type
        assert backend.reader in READERS
    assert set(DOORS) == set(ServiceType.values), "every backend runs this contract"


def test_it_declares_and_validates_the_provider_card_fields_it_uses():
    from providers.models import EmailProvider

    card_fields = {f.name for f in EmailProvider._meta.get_fields()}
    # Fields no backend owns are every type's (auth_method, login_format, ...): a type may
    # ask something of them (Graph: OAuth 2.0 only), but never of another type's own.
    shared = card_fields - {name for b in BACKENDS.values() for name in b.provider_fields}
    for service_type, backend in BACKENDS.items():
        assert set(backend.provider_fields) <= card_fields, service_type
        # An empty card of its type: what is wrong is named on fields the type uses.
        empty = EmailProvider(
            service_type=service_type, imap_host="", imap_port=None, smtp_host="",
            smtp_port=None, exchange_url="http://mail.example.test/EWS/Exchange.asmx",
        )  # fmt: skip
        errors = backend.validate_provider(empty)
        uses = set(backend.provider_fields) | shared
        assert errors and set(errors) <= uses, (service_type, errors)


# The decisions written out again, not read from mail.errors.ACTIONS: a changed decision,
# a kind added or removed, fails here and has to be changed in both places on purpose.
DECISIONS = {
    Retry.LATER: {
        "temporary", "timeout", "refused", "connection", "connection_lost", "dns",
        "unreachable", "busy", "token_unavailable", "database", "queue", "storage",
    },
    Retry.OWNER: {
        "credentials", "app_password", "imap_disabled", "expired", "contact_admin",
        "non_ascii", "login_missing", "password_missing", "protocol", "smtp_auth_disabled",
        "smtp_refuses", "reconnect", "access_denied", "sending_off", "certificate", "tls",
        "insecure", "internal_address", "auth_unsupported", "starttls_unsupported",
        "nothing_to_check", "autodiscover", "rate_limited",
    },
    Retry.NEVER: {"rejected", "server_error"},
    Retry.UNKNOWN: {"handed_over"},
}  # fmt: skip


def test_it_gives_every_failure_kind_one_retry_decision():
    expected = {kind: retry for retry, kinds in DECISIONS.items() for kind in kinds}
    assert sum(len(kinds) for kinds in DECISIONS.values()) == len(expected), "one each"
    assert {kind: MailError(kind, "x").retry for kind in ACTIONS} == expected
    assert MailError("busy", "x", retry=Retry.OWNER).retry == Retry.OWNER
    assert MailError("credentials", "x", field="password").field == "password"


# -- sign in ---------------------------------------------------------------------------


def test_it_signs_in_with_the_mailboxs_credentials(door):
    assert isinstance(door.backend.check_sign_in(**door.credentials()), str)


def test_it_refuses_a_wrong_password_for_the_owner_to_fix(door):
    with pytest.raises(SignInError) as caught:
        door.backend.check_sign_in(**door.credentials(password="not the password"))
    assert (caught.value.kind, caught.value.retry) == ("credentials", Retry.OWNER)


def test_it_asks_for_a_missing_login_before_any_server(door):
    with pytest.raises(SignInError) as caught:
        door.backend.check_sign_in(**door.credentials(login=""))
    error = caught.value
    assert (error.kind, error.field, error.retry) == ("login_missing", "login", Retry.OWNER)


def test_it_says_an_unreachable_server_is_worth_another_try_later(door, settings):
    provider = door.account.provider
    closed = free_port()
    if provider.service_type == ServiceType.EXCHANGE:
        provider.exchange_url = f"https://localhost:{closed}/EWS/Exchange.asmx"
    elif provider.service_type == ServiceType.GRAPH:
        settings.GRAPH_URL = f"https://localhost:{closed}/v1.0"
    else:
        provider.imap_port = closed
    provider.save()
    with pytest.raises(SignInError) as caught:
        door.backend.check_sign_in(**door.credentials())
    assert caught.value.retry == Retry.LATER, caught.value.kind


def test_it_leaves_a_certificate_the_app_does_not_trust_to_an_administrator(door, settings):
    # The suite's servers present certificates of the suite's CA: trusted no longer.
    settings.MAIL_EXTRA_CA_FILE = None
    with pytest.raises(SignInError) as caught:
        door.backend.check_sign_in(**door.credentials())
    error = caught.value
    assert (error.kind, error.retry, error.field) == ("certificate", Retry.OWNER, "provider")
    assert error.kind in PROVIDER_KINDS  # saving the provider card tries it again


def test_it_refuses_an_internal_address_unless_an_administrator_allows_it(door):
    from systemsettings.models import SystemSetting
    from systemsettings.selectors import cache_clear

    # The suite's servers are on loopback, an internal address.
    SystemSetting.objects.filter(code="AllowInternalMailServers").update(value="no")
    cache_clear()
    with pytest.raises(SignInError) as caught:
        door.backend.check_sign_in(**door.credentials())
    error = caught.value
    assert (error.kind, error.retry, error.field) == ("internal_address", Retry.OWNER, "provider")
    assert error.kind in PROVIDER_KINDS
    assert "AllowInternalMailServers" in str(error)


# -- reading ---------------------------------------------------------------------------


def test_it_reads_a_folder_by_changes_through_the_neutral_reader(door):
    """A backend that reads by changes gives sync.delta everything through
    mail.reading.DeltaReader: new messages with their ids, then nothing new after the
    state the last page gave; a message read comes whole."""
    from mail.reading import DeltaReader

    backend = door.backend
    if backend.reader != "delta":
        pytest.skip("IMAP is read by UIDs (sync.engine), not by changes")
    raw, message_id = _message(to=door.account.address, subject="By changes")
    door.put(raw)
    reader = backend.open_reader(**door.credentials())
    try:
        assert isinstance(reader, DeltaReader)
        folders = reader.folders()
        inbox = next(f for f in folders if f.path.lower() == "inbox")
        assert inbox.server_id and inbox.messages == 1
        page, state, created = None, "", []
        while page is None or not page.last:
            page = reader.changes(inbox.server_id, state)
            created += page.created
            state = page.state
        assert len(created) == 1 and state
        assert not reader.changes(inbox.server_id, state).created
        [read] = reader.read(created, size_limit=10_000_000)
        assert read.id == created[0].id and not read.problem
        assert BytesHeaderParser().parsebytes(read.raw)["Message-ID"] == message_id
    finally:
        backend.close_reader(reader)


def test_it_lists_the_folders_with_the_inbox_and_the_sent_folder(door):
    from sending.delivery import copy_to_sent

    # A fresh Dovecot mailbox has only INBOX: the copy makes its Sent folder.
    raw, message_id = _message()
    sent = copy_to_sent(account=door.account, raw=raw, message_id=message_id)
    backend = door.backend
    session = backend.open_reader(**door.credentials())
    try:
        listed = backend.list_folders(session)
    finally:
        backend.close_reader(session)
    assert all(isinstance(folder, ListedFolder) for folder in listed)
    by_path = {folder.path: folder for folder in listed}
    assert "inbox" in {path.lower() for path, folder in by_path.items() if folder.selectable}
    assert by_path[sent].selectable
    # Both servers say which folder is the Sent one (IMAP SPECIAL-USE, EWS sentitems).
    assert by_path[sent].special_use == "\\sent"
    assert [path for path, f in by_path.items() if f.special_use == "\\sent"] == [sent]
    assert all(isinstance(folder.delimiter, str) for folder in listed)


def test_it_reads_a_folder_incrementally(door):
    door.put(_message(to=door.account.address, subject="first")[0])
    door.put(_message(to=door.account.address, subject="second")[0])
    first = mailbox_sync(account_id=door.account.pk)
    assert first.state == SyncRun.State.SUCCEEDED, first.error
    door.put(_message(to=door.account.address, subject="third")[0])

    second = mailbox_sync(account_id=door.account.pk)
    idle = mailbox_sync(account_id=door.account.pk)

    assert second.state == SyncRun.State.SUCCEEDED, second.error
    assert (first.new_emails, second.new_emails, idle.new_emails) == (2, 1, 0)
    subjects = sorted(Email.objects.filter(account=door.account).values_list("subject", flat=True))
    assert subjects == ["first", "second", "third"]


# -- sending ---------------------------------------------------------------------------


def _deliver(door, raw: bytes, recipients=(PARTNER,)) -> list:
    from sending.delivery import deliver

    handed = []
    deliver(
        account=door.account, sender=door.account.address, recipients=list(recipients),
        raw=raw, handing_over=lambda: handed.append(True),
    )  # fmt: skip
    return handed


def test_it_delivers_the_message_as_written(door):
    raw, message_id = _message()
    assert _deliver(door, raw) == [True]
    (recipients, sent), *_ = door.delivered()
    assert recipients == [PARTNER]
    assert BytesHeaderParser().parsebytes(sent)["Message-ID"] == message_id


def test_it_keeps_the_sent_copy_where_the_server_does_not(door):
    from sending.delivery import copy_to_sent, files_sent_copies

    raw, message_id = _message()
    _deliver(door, raw)
    if files_sent_copies(door.account):
        assert door.in_sent(message_id)  # filed by the server itself
    else:
        assert not door.in_sent(message_id)
        copy_to_sent(account=door.account, raw=raw, message_id=message_id)
        assert door.in_sent(message_id)


def test_it_stores_a_sent_copy_once_when_asked_to_look_first(door):
    from sending.delivery import copy_to_sent

    raw, message_id = _message(subject="Copied by hand")
    first = copy_to_sent(account=door.account, raw=raw, message_id=message_id)
    again = copy_to_sent(account=door.account, raw=raw, message_id=message_id, look_first=True)
    assert first == again and door.in_sent(message_id)
    stored = _sent_copies(door, message_id)
    assert stored == 1


def _sent_copies(door, message_id: str) -> int:
    if "sent_copies" in door.extra:
        return door.extra["sent_copies"](message_id)
    if "server" in door.extra:
        server = door.extra["server"]
        state = server.state
        folder = state.folders[server.folder_id("sentitems", mailbox=door.account.address)]
        return sum(
            BytesHeaderParser().parsebytes(i.props.get("item:MimeContent") or b"")["Message-ID"]
            == message_id
            for i in state.items_in(folder)
        )
    from mail.imap_smtp.delivery import sent_folder

    backend = door.backend
    client = backend.open_reader(**door.credentials())
    try:
        client.select_folder(sent_folder(client), readonly=True)
        return len(client.search(["HEADER", "Message-ID", message_id]))
    finally:
        backend.close_reader(client)


@pytest.mark.parametrize("retry", [Retry.LATER, Retry.NEVER, Retry.UNKNOWN])
def test_it_reports_a_failed_delivery_with_its_retry_decision(door, retry):
    door.fail_sending(retry)
    raw, _message_id = _message()
    with pytest.raises(MailError) as caught:
        _deliver(door, raw)
    assert caught.value.retry == retry, (caught.value.kind, str(caught.value))
    if retry == Retry.UNKNOWN:
        assert caught.value.kind == "handed_over"


def _refuse_sign_in(door) -> tuple[str, Retry]:
    """The mailbox's stored secret no longer works; what the backend then says."""
    account = door.account
    if "refuse_sign_in" in door.extra:
        return door.extra["refuse_sign_in"](account)
    account.set_password("not the password")
    account.save()
    return "credentials", Retry.OWNER


def test_it_reports_a_refused_sign_in_while_sending_for_the_owner(door):
    expected = _refuse_sign_in(door)
    raw, _message_id = _message()
    with pytest.raises(MailError) as caught:
        _deliver(door, raw)
    assert (caught.value.kind, caught.value.retry) == expected
    assert door.delivered() == []


def test_it_reports_a_broken_connection_while_reading_as_worth_another_try(door, monkeypatch):
    from sync import readers, services

    real = readers.session_open

    def cut(account):
        session = real(account)
        # The connection breaks under the signed-in session: the next request fails.
        monkeypatch.setattr(ssl.SSLSocket, "sendall", _broken)
        monkeypatch.setattr(ssl.SSLSocket, "send", _broken)
        return session

    monkeypatch.setattr(readers, "session_open", cut)
    with pytest.raises(services.TransientSyncError):
        mailbox_sync(account_id=door.account.pk)
    monkeypatch.undo()
    run = SyncRun.objects.get(account=door.account)
    assert run.state == SyncRun.State.FAILED
    assert ACTIONS[door.account.sync.last_error_kind] == Retry.LATER


IMAP_SIGNS_IN_ONCE = "IMAP signs in once per session: a signed-in session stays signed in"


def _broken(*args, **kwargs):
    raise ConnectionResetError(104, "Connection reset by peer")


def _read_failure(door, *, password: str | None = None, before_read=None) -> MailError:
    """What a request of the reader's meets, in the backend's terms: the library's own
    exception through MailBackend.read_failure, or the MailError the backend raised."""
    backend = door.backend
    given = door.credentials() if password is None else door.credentials(password=password)
    try:
        session = backend.open_reader(**given)
    except MailError as error:
        return error  # IMAP signs in when the session opens
    try:
        if before_read:
            before_read(session)
        door.read(session)
    except MailError as error:
        return error
    except Exception as error:
        failure = backend.read_failure(error)
        assert failure is not None, f"{type(error).__name__} is the protocol's: {error}"
        return failure
    finally:
        backend.close_reader(session)
    raise AssertionError("the read did not fail")


def test_it_reads_through_a_session_that_works(door):
    # The checks below fail for the reason they name, not for a read that never works.
    backend = door.backend
    session = backend.open_reader(**door.credentials())
    try:
        door.read(session)
    finally:
        backend.close_reader(session)


def test_it_reports_a_refused_password_while_reading_for_the_owner(door):
    # A reader opens sessions as it goes (sync.readers.session_opener): a password
    # changed since is refused when the next one signs in.
    failure = _read_failure(door, password="not the password")
    assert (failure.kind, failure.retry) == ("credentials", Retry.OWNER), str(failure)


def test_it_reports_a_password_changed_in_the_middle_of_a_read_for_the_owner(door):
    if "password_changed" not in door.extra:
        pytest.skip(door.extra.get("no_password_change", IMAP_SIGNS_IN_ONCE))
    failure = _read_failure(door, before_read=door.extra["password_changed"])
    assert (failure.kind, failure.retry) == ("credentials", Retry.OWNER), str(failure)


def test_it_reports_a_connection_reset_while_reading_as_worth_another_try(door, monkeypatch):
    def cut(session):
        door.read(session)  # signed in and connected; then the connection breaks
        monkeypatch.setattr(ssl.SSLSocket, "sendall", _broken)
        monkeypatch.setattr(ssl.SSLSocket, "send", _broken)

    failure = _read_failure(door, before_read=cut)
    monkeypatch.undo()
    assert failure.retry == Retry.LATER, (failure.kind, str(failure))


def _list_failure(door, before_list) -> MailError:
    backend = door.backend
    session = backend.open_reader(**door.credentials())
    try:
        before_list(session)
        backend.list_folders(session)
    except MailError as error:
        return error
    finally:
        backend.close_reader(session)
    raise AssertionError("the folders were listed")


def test_it_reports_a_password_changed_before_listing_the_folders_for_the_owner(door):
    if "password_changed" not in door.extra:
        pytest.skip(door.extra.get("no_password_change", IMAP_SIGNS_IN_ONCE))
    failure = _list_failure(door, door.extra["password_changed"])
    assert (failure.kind, failure.retry) == ("credentials", Retry.OWNER), str(failure)


def test_it_reports_a_connection_reset_while_listing_the_folders_as_worth_another_try(
    door, monkeypatch
):
    def cut(session):
        door.read(session)  # signed in and connected; then the connection breaks
        monkeypatch.setattr(ssl.SSLSocket, "sendall", _broken)
        monkeypatch.setattr(ssl.SSLSocket, "send", _broken)

    failure = _list_failure(door, cut)
    monkeypatch.undo()
    assert failure.retry == Retry.LATER, (failure.kind, str(failure))


def test_it_stops_a_sync_whose_password_is_refused_until_the_owner_acts(door):
    from sync.models import MailboxSync

    account = door.account
    kind, _retry = _refuse_sign_in(door)
    run = mailbox_sync(account_id=account.pk)  # not retried: no TransientSyncError
    assert run.state == SyncRun.State.FAILED
    state = MailboxSync.objects.get(account=account)
    assert state.last_error_kind == kind
    assert state.health == MailboxSync.Health.NEEDS_ATTENTION


@pytest.mark.parametrize("service_type", sorted(BACKENDS))
def test_it_leaves_an_error_of_ours_to_the_caller(service_type):
    # A bug of ours met during a read is not the server's: sync reports it as a bug.
    backend = BACKENDS[service_type]
    assert backend.read_failure(KeyError("folder")) is None
    assert backend.read_failure(ValueError("parse")) is None


# -- the one module that knows imapclient's private parts -----------------------------


def test_it_pins_the_imapclient_internals_the_wire_module_relies_on(synced_mailbox):
    import imapclient

    from mail.imap_smtp import wire

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(to=account.address), make_message(to=account.address))
    mailbox.create("Archive")
    door = Door(account, None, None, None, None)
    client = door.backend.open_reader(**door.credentials())
    try:
        assert b"LIST-STATUS" in client.capabilities()
        listing, statuses = wire.list_with_status(
            client, [b"UIDVALIDITY", b"MESSAGES"], special_use=True
        )
        assert sorted(name for _f, _d, name in listing) == sorted(
            name for _f, _d, name in client.list_folders()
        )
        assert statuses["INBOX"][b"MESSAGES"] == 2 and statuses["Archive"][b"MESSAGES"] == 0
        imap = wire.imaplib_of(client)
        assert isinstance(imap, wire.PinnedIMAP4) and imap.debug == 0  # no repr() of bodies
        client.select_folder("INBOX", readonly=True)
        typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS)")
        assert typ == "OK" and len([line for line in data if b"UID" in line]) == 2
        # The pace of answers (wire.PACE_RATE) is read where imaplib reads: its read()
        # and readline(), a literal's bytes too.
        typ, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
        assert typ == "OK" and imap.brought > len(data[0][1]) > 0
        assert not imap.reading and imap.due < float("inf")
    finally:
        wire.goodbye(client)
    import imaplib

    with pytest.raises((OSError, imaplib.IMAP4.abort)):
        client.noop()  # the session is gone, without waiting for the server's answer
    # Written for 4.1.0; 3.x shares the private parts used. A new major: read them again.
    assert imapclient.__version__.split(".")[0] in {"3", "4"}


def test_it_pins_that_quiet_turns_off_the_debug_output_imapclient_turns_on(synced_mailbox):
    from imapclient import IMAPClient

    from mail import trust
    from mail.imap_smtp import wire

    account, _mailbox = synced_mailbox
    port = account.provider.imap_port
    with IMAPClient("localhost", port=port, ssl_context=trust.mail_ssl_context()) as client:
        # imapclient sets imaplib's debug level: every response formatted for a log.
        assert wire.imaplib_of(client).debug > 0
        assert wire.quiet(client) is client
        assert wire.imaplib_of(client).debug == 0
        client.login(account.login, account.get_password())
        assert client.select_folder("INBOX", readonly=True)[b"EXISTS"] == 0


def test_it_keeps_imapclients_private_parts_inside_the_wire_module():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    private = re.compile(
        r"\._(imap|checkok|proc_folder_list|create_IMAP4|simple_command|new_tag"
        r"|untagged_response)\b"
    )
    wire = root / "mail" / "imap_smtp" / "wire.py"
    # The push watcher's protocol subclasses aioimaplib's (not imapclient's), whose
    # untagged-line hook has imaplib's name: that one call to its parent is aioimaplib's.
    watch = root / "mail" / "imap_smtp" / "watch.py"
    found = [
        f"{path.relative_to(root)}:{number}"
        for path in root.rglob("*.py")
        if path != wire and not any(part.startswith(".") for part in path.relative_to(root).parts)
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if private.search(line) and not (path == watch and "super()" in line)
    ]
    assert found == [], "use (or add) a helper in mail/imap_smtp/wire.py"
