"""Through a company's egress proxy (HTTPS_PROXY): Exchange is reached with the same
trust, pacing and internal-address rule as directly. The proxy is the suite's own on
loopback (tests/servers/http_proxy.py), Exchange the suite's EWS fake (not Exchange)."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from mail import trust
from mail.pace import PACE_CONNECTS
from sync.models import Email, SyncRun
from sync.services import TransientSyncError, mailbox_sync
from systemsettings.models import SystemSetting
from systemsettings.selectors import cache_clear
from tests.factories import EmailAccountFactory, EmailProviderFactory
from tests.mailbox import make_message
from tests.servers.ews import EwsServer
from tests.servers.http_proxy import HttpProxy

# A name with a public address, which only the proxy can reach here (its route leads to
# the EWS fake): the company's Exchange as this machine's DNS and the proxy see it.
PUBLIC_NAME, PUBLIC_ADDRESS = "exchange.corp.example", "93.184.215.14"


@pytest.fixture
def proxy(monkeypatch):
    proxy = HttpProxy()
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield proxy
    proxy.close()


def _internal_servers(allowed: bool) -> None:
    SystemSetting.objects.filter(code="AllowInternalMailServers").update(
        value="yes" if allowed else "no"
    )
    cache_clear()


def _mailbox(ews_server, address="erin@corp.test"):
    provider = EmailProviderFactory(
        name="Corp Exchange", service_type="exchange", exchange_url=ews_server.ews_url,
        imap_host="", smtp_host="",
    )  # fmt: skip
    ews_server.add_user(address, "ews-secret", name="Erin Exchange")
    received = datetime.now(UTC) - timedelta(hours=1)
    mime = make_message(subject="Through the proxy", to=address, age=timedelta(hours=1))
    ews_server.add_message("inbox", mime, received=received, mailbox=address)
    return EmailAccountFactory(
        provider=provider, address=address, login=address, password="ews-secret"
    )


def test_it_reaches_exchange_through_the_proxy_trusting_the_companys_ca(
    proxy, ews_server, mail_trust
):
    account = _mailbox(ews_server)

    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.get(account=account).subject == "Through the proxy"
    assert ("CONNECT", "localhost", ews_server.port) in proxy.asked


def _resolving(monkeypatch, address: str) -> None:
    """This machine's DNS gives PUBLIC_NAME `address` when a connection is made (the
    session's own look-up before it finds nothing: only the proxy knows the name)."""
    real = trust._getaddrinfo

    def resolving(host, *args, **kwargs):
        if host == PUBLIC_NAME:
            return [(trust.socket.AF_INET, trust.socket.SOCK_STREAM, 6, "", (address, 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(trust, "_getaddrinfo", resolving)


@pytest.fixture
def public_server(proxy):
    server = EwsServer(hostname=PUBLIC_NAME).start()
    proxy.routes[PUBLIC_NAME] = server.port
    yield server
    server.stop()


def test_it_keeps_the_internal_address_rule_for_the_server_behind_the_proxy(
    proxy, public_server, mail_trust, monkeypatch
):
    account = _mailbox(public_server)
    _internal_servers(False)
    # The name leads somewhere internal by the time the connection is made.
    _resolving(monkeypatch, "10.1.2.3")

    run = mailbox_sync(account_id=account.pk)

    # No tunnel is asked for, no password leaves.
    assert run.state == SyncRun.State.FAILED
    assert "AllowInternalMailServers" in run.error
    assert proxy.asked == []


def test_it_lets_a_proxy_on_an_internal_address_lead_to_a_public_server(
    proxy, public_server, mail_trust, monkeypatch
):
    account = _mailbox(public_server)
    _internal_servers(False)
    _resolving(monkeypatch, PUBLIC_ADDRESS)

    run = mailbox_sync(account_id=account.pk)

    # The proxy itself is on loopback: it is the administrator's, and allowed.
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert proxy.asked[0] == ("CONNECT", PUBLIC_NAME, public_server.port)


def test_it_paces_an_answer_that_comes_a_byte_at_a_time_through_the_proxy(
    proxy, ews_server, mail_trust, settings
):
    account = _mailbox(ews_server)
    settings.MAIL_CONNECT_TIMEOUT = 1
    ews_server.state.drips["SyncFolderItems"] = 0.2
    began = time.monotonic()
    try:
        with pytest.raises(TransientSyncError, match="could not be reached"):
            mailbox_sync(account_id=account.pk)
    finally:
        del ews_server.state.drips["SyncFolderItems"]

    # The drip lasts a minute; paced, the answer is given up in seconds.
    assert PACE_CONNECTS <= time.monotonic() - began < 30


def test_it_reaches_microsoft_graph_through_the_proxy(proxy, oauth_server, mail_trust):
    from mail.graph.client import GraphClient
    from tests.servers.graph import GraphServer

    server = GraphServer(token_user=oauth_server.token_user).start()
    try:
        server.add_user("gina@m365.test", name="Gina Graph")
        token = oauth_server.grant("gina@m365.test", "mailsetup-test", scope="User.Read")
        with GraphClient(token["access_token"], base_url=server.graph_url, timeout=5) as graph:
            assert graph.me().address == "gina@m365.test"
        assert ("CONNECT", "localhost", server.port) in proxy.asked
    finally:
        server.stop()


def test_it_goes_straight_to_a_server_no_proxy_names(proxy, ews_server, mail_trust, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "localhost")
    monkeypatch.setenv("no_proxy", "localhost")
    account = _mailbox(ews_server)

    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert proxy.asked == []


def test_it_says_nothing_was_sent_when_the_proxy_refuses_the_sending_connection(
    proxy, ews_server, mail_trust, django_capture_on_commit_callbacks
):
    from sending.message import Draft
    from sending.models import OutgoingEmail
    from sending.services import TransientSendError, outgoing_create, outgoing_send

    account = _mailbox(ews_server)

    def queued(subject: str) -> OutgoingEmail:
        draft = Draft(
            sender=account.address, sender_name="Erin", subject=subject, text="Hello",
            to=[{"name": "", "address": "peter@partner.test"}], cc=[], bcc=[],
            signature_html="", attachments=[],
        )  # fmt: skip
        with django_capture_on_commit_callbacks():
            return outgoing_create(author=account.owner, account=account, draft=draft)

    for subject in ("First", "Second"):  # the first also learns the server's version
        proxy.asked = []
        with django_capture_on_commit_callbacks():
            outgoing_send(outgoing_id=queued(subject).pk)
    # CreateItem goes on the last new connection a send opens: the proxy refuses that
    # one next time, before anything reaches Exchange.
    proxy.refuse_after, proxy.asked = len(proxy.asked) - 1, []
    third = queued("Third")

    with pytest.raises(TransientSendError):
        outgoing_send(outgoing_id=third.pk)

    third.refresh_from_db()
    assert third.state == OutgoingEmail.State.QUEUED, third.error
    assert "407 Proxy Authentication Required" in third.error
    assert [m.subject for m in ews_server.sent] == ["First", "Second"]


def test_it_names_the_proxy_that_refused_and_never_guesses_the_message_left(
    proxy, oauth_server, mail_trust
):
    from mail.errors import MailError
    from mail.graph.client import GraphClient
    from tests.servers.graph import GraphServer

    server = GraphServer(token_user=oauth_server.token_user).start()
    try:
        server.add_user("gina@m365.test", name="Gina Graph")
        token = oauth_server.grant("gina@m365.test", "mailsetup-test", scope="Mail.Send")
        proxy.refuse_after, proxy.refusal = 0, "403 Forbidden"
        graph = GraphClient(token["access_token"], base_url=server.graph_url, timeout=5)
        with graph, pytest.raises(MailError) as caught:
            graph.send_mime(b"Subject: x\r\nTo: peter@partner.test\r\n\r\nHello\r\n")
    finally:
        server.stop()
    assert caught.value.kind == "connection"  # not "handed_over": nothing left
    assert "the proxy answered 403 Forbidden" in str(caught.value)
