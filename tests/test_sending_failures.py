"""One classification (mail.errors) decides every outcome of sending, kind by kind.

Each kind of the table that sending can meet is provoked through the real code path:
the suite's aiosmtpd, Dovecot, EWS fake and OAuth server, small loopback servers that
fail on purpose (tests/servers/faults.py), or, where the outside world cannot be
reached from the tests (DNS, a route to the internet, autodiscover), the resolver or
the connect call answering as it would. The test then asserts the state it leads to:
RETRY → queued again (a TransientSendError), OWNER and NEVER → "Not sent" at once with
the reason, UNKNOWN → "May have been sent"; for the Sent copy, pending or failed."""

import contextlib
import errno
import socket
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

from mail.errors import ACTIONS, Retry
from sending.message import Draft
from sending.models import OutgoingEmail
from sending.services import TransientSendError, outgoing_copy_store, outgoing_create, outgoing_send
from systemsettings.models import SystemSetting
from tests.conftest import MAIL_USERS
from tests.factories import EmailAccountFactory
from tests.servers.dovecot import free_port
from tests.servers.faults import HandshakeFault, ImapScript, ScriptedImap
from tests.servers.https import SilentServer

# Kinds that only the sign-in check of the wizard meets, never a delivery or a copy.
NOT_MET_BY_SENDING = {
    "nothing_to_check": "a provider with neither receiving nor sending: nothing is checked "
    "in the wizard; sending always has its one server",
    "rate_limited": "the wizard's own limit on sign-in checks",
}


def _account(request, address="alice@example.test", password=None, **fields):
    provider = request.getfixturevalue("test_provider")
    return EmailAccountFactory(
        provider=provider, address=address, password=password or MAIL_USERS.get(address, "x-1"),
        **{"login": address} | fields,
    )  # fmt: skip


def _serve(request, server):
    server.start()
    request.addfinalizer(server.stop)
    return server


def _scripted_copy(request, **script) -> tuple:
    """A mailbox whose IMAP server is the scripted one (plain text on loopback)."""
    server = _serve(request, ScriptedImap(ImapScript(**script)))
    account = _account(request)
    provider = account.provider
    provider.imap_host, provider.imap_port, provider.imap_security = (
        "127.0.0.1",
        server.port,
        "none",
    )
    provider.save()
    return account, "copy"


def _smtp(request, **fields) -> tuple:
    account = _account(request)
    for name, value in fields.items():
        setattr(account.provider, name, value)
    account.provider.save()
    return account, "delivery"


def _resolving(request, answer):
    from mailsetup import net

    request.getfixturevalue("monkeypatch").setattr(net, "resolve", answer)


def _temporary(request):
    request.getfixturevalue("outbox").recipient_replies["peter@partner.test"] = "421 4.3.2 Later"
    return _smtp(request)


def _timeout(request):
    # Over IMAP: smtplib reports a silent server as SMTPServerDisconnected ("connection").
    account = _account(request)
    request.getfixturevalue("settings").MAIL_CONNECT_TIMEOUT = 1
    account.provider.imap_port = _serve(request, SilentServer()).port
    account.provider.save()
    return account, "copy"


def _refused(request):
    return _smtp(request, smtp_port=free_port())


def _connection(request):
    # Implicit TLS; the server drops the handshake after the ClientHello.
    return _smtp(request, smtp_port=_serve(request, HandshakeFault("eof")).port,
                 smtp_security="ssl")  # fmt: skip


def _connection_lost(request):
    return _scripted_copy(request, append_reply="close")


def _dns(request):
    def unknown(host, port, timeout):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    _resolving(request, unknown)
    return _smtp(request, smtp_host="smtp.nowhere.test")


def _unreachable(request):
    from mail.imap_smtp import connection

    def no_route(*args, **kwargs):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    request.getfixturevalue("monkeypatch").setattr(connection.socket, "create_connection", no_route)
    return _smtp(request)


def _exchange(request, *failure) -> tuple:
    account, _address = request.getfixturevalue("exchange_mailbox")
    request.getfixturevalue("ews_server").fail_next("CreateItem", *failure)
    return account, "delivery"


def _busy(request):
    return _exchange(request, "ErrorServerBusy", 1, 10)


def _token_unavailable(request):
    account, _mailbox = request.getfixturevalue("oauth_mailbox")
    account.oauth_expires_at = timezone.now() - timedelta(minutes=1)
    account.save()
    account.provider.oauth_token_url = f"https://127.0.0.1:{free_port()}/token"
    account.provider.save()
    return account, "delivery"


def _credentials(request):
    return _account(request, password="not the password"), "delivery"


def _canned_smtp(address):
    def provoke(request):
        return _account(request, address=address), "delivery"

    return provoke


def _imap_disabled(request):
    return _account(request, address="noimap@example.test", password="noimap-secret"), "copy"


def _expired(request):
    return _scripted_copy(request, login_reply="NO [EXPIRED] Password expired")


def _contact_admin(request):
    return _scripted_copy(request, login_reply="NO [CONTACTADMIN] Ask your administrator")


def _protocol(request):
    return _scripted_copy(request, login_reply="BAD Command syntax error")


def _non_ascii(request):
    return _account(request, password="pässwörd"), "delivery"


def _login_missing(request):
    return _account(request, login=""), "delivery"


def _password_missing(request):
    account = _account(request)
    # Encrypted with a key the app no longer holds (CREDENTIAL_KEYS rotated badly).
    account.password_encrypted = Fernet(Fernet.generate_key()).encrypt(b"secret").decode()
    account.save()
    return account, "delivery"


def _reconnect(request):
    account, _mailbox = request.getfixturevalue("oauth_mailbox")
    oauth_server = request.getfixturevalue("oauth_server")
    oauth_server.expire_access_tokens()
    oauth_server.state.refresh_tokens.clear()
    return account, "delivery"


def _access_denied(request):
    return _exchange(request, "ErrorSendAsDenied")


def _sending_off(request):
    return _account(request, send_enabled=False), "delivery"


def _certificate(request):
    # The certificate is for "localhost"; the same server reached as 127.0.0.1.
    return _smtp(request, smtp_host="127.0.0.1")


def _tls(request):
    return _smtp(request, smtp_security="ssl")  # TLS spoken to the STARTTLS port


def _insecure(request):
    def no_connection(*args, **kwargs):
        raise AssertionError("connected to a public address")

    _resolving(request, lambda host, port, timeout: [("93.184.215.14", port)])
    request.getfixturevalue("monkeypatch").setattr(socket, "create_connection", no_connection)
    return _smtp(request, smtp_security="none")


def _internal_address(request):
    account, phase = _smtp(request)
    SystemSetting.objects.filter(code="AllowInternalMailServers").update(value="no")
    return account, phase


def _auth_unsupported(request):
    return _smtp(request, smtp_port=request.getfixturevalue("smtp_servers")["no_auth"].port)


def _starttls_unsupported(request):
    account, phase = _scripted_copy(request)
    account.provider.imap_security = "starttls"
    account.provider.save()
    return account, phase


def _autodiscover(request):
    from exchangelib.autodiscover import Autodiscovery
    from exchangelib.errors import AutoDiscoverFailed

    # Autodiscover asks DNS and the internet, which the tests cannot reach: it fails as
    # it does when nothing answers.
    def nothing_found(self):
        raise AutoDiscoverFailed("All steps in the autodiscover protocol failed")

    request.getfixturevalue("monkeypatch").setattr(Autodiscovery, "discover", nothing_found)
    account, _address = request.getfixturevalue("exchange_mailbox")
    account.provider.exchange_url = ""
    account.provider.save()
    return account, "delivery"


def _rejected(request):
    outbox = request.getfixturevalue("outbox")
    outbox.recipient_replies["carol@partner.test"] = "550 5.1.1 No such user"
    return _smtp(request)


def _server_error(request):
    return _scripted_copy(request, append_reply="NO [OVERQUOTA] Mailbox is full")


def _handed_over(request):
    request.getfixturevalue("outbox").cut_after_data.add("peter@partner.test")
    return _smtp(request)


PROVOKE = {
    "temporary": _temporary,
    "timeout": _timeout,
    "refused": _refused,
    "connection": _connection,
    "connection_lost": _connection_lost,
    "dns": _dns,
    "unreachable": _unreachable,
    "busy": _busy,
    "token_unavailable": _token_unavailable,
    "credentials": _credentials,
    "app_password": _canned_smtp("apppw@example.test"),
    "imap_disabled": _imap_disabled,
    "expired": _expired,
    "contact_admin": _contact_admin,
    "non_ascii": _non_ascii,
    "login_missing": _login_missing,
    "password_missing": _password_missing,
    "protocol": _protocol,
    "smtp_auth_disabled": _canned_smtp("noauth@example.test"),
    "smtp_refuses": _canned_smtp("refused@example.test"),
    "reconnect": _reconnect,
    "access_denied": _access_denied,
    "sending_off": _sending_off,
    "certificate": _certificate,
    "tls": _tls,
    "insecure": _insecure,
    "internal_address": _internal_address,
    "auth_unsupported": _auth_unsupported,
    "starttls_unsupported": _starttls_unsupported,
    "autodiscover": _autodiscover,
    "rejected": _rejected,
    "server_error": _server_error,
    "handed_over": _handed_over,
}
# The Sent copy keeps no kind, only its reason for people: which names the cause.
COPY_SAYS = {
    "timeout": "did not answer within 1 seconds",
    "connection_lost": "The connection broke during the copy",
    "imap_disabled": "IMAP access is turned off for this mailbox",
    "expired": "this password has expired",
    "contact_admin": "asks you to contact your mail administrator",
    "protocol": "did not understand the sign-in",
    "starttls_unsupported": "does not offer STARTTLS",
    "server_error": "The server refused the copy (append failed: [OVERQUOTA] Mailbox is full)",
}
# Met outside a delivery's or a copy's own run, each tested below.
SEPARATE = {"database", "queue", "storage"}


def _draft(account) -> Draft:
    return Draft(
        sender=account.address, sender_name="", subject="Kinds", text="Hello",
        to=[{"name": "", "address": "peter@partner.test"}],
        cc=[{"name": "", "address": "carol@partner.test"}], bcc=[],
    )  # fmt: skip


def _queued(account, capture) -> OutgoingEmail:
    with capture():  # the task is not queued: the test runs the service itself
        return outgoing_create(author=account.owner, account=account, draft=_draft(account))


def test_it_decides_for_every_kind_of_the_table():
    met = set(PROVOKE) | SEPARATE
    assert not met & set(NOT_MET_BY_SENDING)
    assert met | set(NOT_MET_BY_SENDING) == set(ACTIONS)


@pytest.mark.parametrize("kind", sorted(PROVOKE))
def test_it_follows_the_table_for(kind, request, db, outbox, django_capture_on_commit_callbacks):
    account, phase = PROVOKE[kind](request)
    outgoing = _queued(account, django_capture_on_commit_callbacks)
    before = timezone.now()
    retried = None
    if phase == "copy":
        OutgoingEmail.objects.filter(pk=outgoing.pk).update(
            state=OutgoingEmail.State.SENT, sent_at=before
        )
        try:
            outgoing_copy_store(outgoing_id=outgoing.pk)
        except TransientSendError as error:
            retried = error
    else:
        try:
            outgoing_send(outgoing_id=outgoing.pk)
        except TransientSendError as error:
            retried = error
    outgoing.refresh_from_db()
    action = ACTIONS[kind]
    if phase == "copy":
        assert outgoing.state == OutgoingEmail.State.SENT
        expected = (
            OutgoingEmail.Copy.PENDING if action == Retry.LATER else OutgoingEmail.Copy.FAILED
        )
        assert (outgoing.sent_copy, outgoing.sent_copy_attempts) == (expected, 1)
        reason = outgoing.sent_copy_error
        assert COPY_SAYS[kind] in reason, reason
    else:
        expected = {
            Retry.LATER: OutgoingEmail.State.QUEUED,
            Retry.OWNER: OutgoingEmail.State.FAILED,
            Retry.NEVER: OutgoingEmail.State.FAILED,
            Retry.UNKNOWN: OutgoingEmail.State.UNCERTAIN,
        }[action]
        assert (outgoing.state, outgoing.error_kind) == (expected, kind), outgoing.error
        assert outgoing.attempts == 1 and outgoing.error
        reason = outgoing.error
    if action == Retry.LATER:
        assert retried is not None and retried.error.kind == kind
        # Queued again for later, with backoff: 15 to 30 s after the first try.
        assert before + timedelta(seconds=14) < outgoing.next_attempt_at
        assert outgoing.next_attempt_at < timezone.now() + timedelta(seconds=31)
    else:
        assert retried is None, retried
    if action != Retry.UNKNOWN:
        assert outbox.messages == []
    assert MAIL_USERS["alice@example.test"] not in reason


def test_it_tries_again_when_its_own_database_goes_away(
    transactional_db, test_provider, outbox, django_capture_on_commit_callbacks
):
    from django.db import connection

    account = EmailAccountFactory(
        provider=test_provider, address="alice@example.test", login="alice@example.test",
        password=MAIL_USERS["alice@example.test"],
    )  # fmt: skip
    outgoing = _queued(account, django_capture_on_commit_callbacks)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [pid] = cursor.fetchone()
    other = connection.copy()
    with other.cursor() as cursor:  # a restart of the database, as this connection sees it
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    other.close()

    with pytest.raises(TransientSendError) as caught:
        outgoing_send(outgoing_id=outgoing.pk)
    assert (caught.value.error.kind, caught.value.error.retry) == ("database", Retry.LATER)
    assert caught.value.countdown > 0
    connection.close()  # what the task's signal does with a broken connection

    outgoing.refresh_from_db()
    assert (outgoing.state, outgoing.attempts) == (OutgoingEmail.State.QUEUED, 0)
    with django_capture_on_commit_callbacks():
        outgoing_send(outgoing_id=outgoing.pk)  # the retry
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.SENT and len(outbox.messages) == 1


def test_it_keeps_the_email_queued_when_the_task_queue_is_down(
    test_provider, request, django_capture_on_commit_callbacks
):
    from tests.servers.broker import publishing_to

    account = _account(request)
    with (
        publishing_to(f"redis://127.0.0.1:{free_port()}/0"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        outgoing = outgoing_create(author=account.owner, account=account, draft=_draft(account))
    outgoing.refresh_from_db()
    assert ACTIONS["queue"] == Retry.LATER
    assert (outgoing.state, outgoing.error_kind, outgoing.attempts) == ("queued", "queue", 0)
    assert "will be sent automatically" in outgoing.error


def test_it_leaves_an_email_to_the_sweep_when_the_database_stays_away(monkeypatch, caplog):
    """The row cannot count tries while the database is away: the task stops after
    DATABASE_RETRIES, and the sweep queues the email again once it is back."""
    from mail.errors import MailError
    from sending import tasks

    calls = []

    def database_away(*, outgoing_id):
        calls.append(outgoing_id)
        raise TransientSendError(MailError("database", "The app's database is away."), 0.01)

    monkeypatch.setattr(tasks, "outgoing_send", database_away)
    result = tasks.send_email.apply(args=[7])
    assert isinstance(result.result, TransientSendError)
    assert calls == [7] * (tasks.DATABASE_RETRIES + 1)
    assert caplog.text.count("Retry in") == tasks.DATABASE_RETRIES


def test_it_calls_an_email_sent_when_only_its_timeline_copy_could_not_be_written(
    request, db, outbox, monkeypatch
):
    """Kind "storage": a full disk while the sent email's attachments are written for the
    timelines. The server took the message, so it is sent, not "May have been sent"."""
    import errno

    from sending import services

    account = _account(request)
    # Not queued (nothing would run it here): the test runs the service itself.
    outgoing = _queued(account, contextlib.nullcontext)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/media/attachments/x")

    monkeypatch.setattr(services, "_sent_record", disk_full)
    services.outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.SENT
    assert "could not be put on the timelines yet" in outgoing.error
    assert len(outbox.messages) == 1
