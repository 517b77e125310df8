"""Through a company's egress proxy (HTTPS_PROXY): Exchange is reached with the same
trust, pacing and internal-address rule as directly. The proxy is the suite's own on
loopback (tests/servers/http_proxy.py), Exchange the suite's EWS fake (not Exchange)."""

import contextlib
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


def _proxied_by(monkeypatch, url: str) -> None:
    """The environment names `url` as the proxy for every address."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy(monkeypatch):
    proxy = HttpProxy()
    _proxied_by(monkeypatch, proxy.url)
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
    real = trust._resolve

    def resolving(host, port, timeout):
        if host == PUBLIC_NAME:
            return [(address, port)]
        return real(host, port, timeout)

    monkeypatch.setattr(trust, "_resolve", resolving)


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
    _given_up_in_seconds(_mailbox(ews_server), ews_server, settings)


def _given_up_in_seconds(account, ews_server, settings) -> None:
    """A sync whose SyncFolderItems answer comes a byte at a time for a minute fails in
    seconds: the answer is paced."""
    settings.MAIL_CONNECT_TIMEOUT = 1
    ews_server.state.drips["SyncFolderItems"] = 0.2
    began = time.monotonic()
    try:
        with pytest.raises(TransientSyncError, match="could not be reached"):
            mailbox_sync(account_id=account.pk)
    finally:
        del ews_server.state.drips["SyncFolderItems"]
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


def test_it_says_a_message_may_have_been_sent_when_the_connection_breaks_after_it(
    proxy, ews_server, oauth_server, mail_trust, django_capture_on_commit_callbacks
):
    from sending.message import Draft
    from sending.models import OutgoingEmail
    from sending.services import outgoing_create, outgoing_send

    account = _mailbox(ews_server)
    draft = Draft(
        sender=account.address, sender_name="Erin", subject="Cut", text="Hello",
        to=[{"name": "", "address": "peter@partner.test"}], cc=[], bcc=[],
        signature_html="", attachments=[],
    )  # fmt: skip
    with django_capture_on_commit_callbacks():
        outgoing = outgoing_create(author=account.owner, account=account, draft=draft)
    # Exchange reads CreateItem and the connection closes with no answer: through a
    # proxy urllib3 calls that a ProxyError too, yet the message went up.
    ews_server.drop_next("CreateItem")

    outgoing_send(outgoing_id=outgoing.pk)

    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.UNCERTAIN, outgoing.error
    assert "proxy" not in outgoing.error

    from mail.errors import MailError
    from mail.graph.client import GraphClient
    from tests.servers.graph import GraphServer

    server = GraphServer(token_user=oauth_server.token_user).start()
    try:
        server.add_user("gina@m365.test", name="Gina Graph")
        token = oauth_server.grant("gina@m365.test", "mailsetup-test", scope="Mail.Send")
        server.cut_next("sendMail")
        graph = GraphClient(token["access_token"], base_url=server.graph_url, timeout=5)
        with graph, pytest.raises(MailError) as caught:
            graph.send_mime(b"Subject: x\r\nTo: peter@partner.test\r\n\r\nHello\r\n")
    finally:
        server.stop()
    assert caught.value.kind == "handed_over"


@pytest.mark.parametrize(
    ("refusal", "said"),
    [("403 Blocked by the proxy's policy", "the proxy answered 403 Blocked by the proxy's"),
     ("403 AddressRefused", "the proxy answered 403 AddressRefused"),
     ("", "the proxy gave no usable answer (RemoteDisconnected)")],
)  # fmt: skip
def test_it_names_the_proxy_that_refused_and_never_guesses_the_message_left(
    proxy, oauth_server, mail_trust, refusal, said
):
    from mail.errors import MailError
    from mail.graph.client import GraphClient
    from tests.servers.graph import GraphServer

    server = GraphServer(token_user=oauth_server.token_user).start()
    try:
        server.add_user("gina@m365.test", name="Gina Graph")
        token = oauth_server.grant("gina@m365.test", "mailsetup-test", scope="Mail.Send")
        # A refusal, or a proxy that hangs up on the CONNECT without a word.
        proxy.refuse_after, proxy.refusal = 0, refusal
        graph = GraphClient(token["access_token"], base_url=server.graph_url, timeout=5)
        with graph, pytest.raises(MailError) as caught:
            graph.send_mime(b"Subject: x\r\nTo: peter@partner.test\r\n\r\nHello\r\n")
    finally:
        server.stop()
    assert caught.value.kind == "connection"  # not "handed_over": nothing left
    assert said in str(caught.value)
    assert all(method == "CONNECT" for method, _host, _port in proxy.asked)


@pytest.fixture
def plain_server():
    """A plain-HTTP server on loopback answering 200 "plain" to any GET (exchangelib's
    autodiscover asks http://autodiscover.<domain>/ for a redirect)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"plain")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()


def _guarded_session():
    import requests

    session = requests.Session()
    adapter = trust.guarded_adapter(trust.InternalAddressRefused)()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def test_it_forwards_plain_http_through_a_proxy_on_an_internal_address(
    proxy, plain_server, mail_trust, monkeypatch
):
    import requests

    proxy.routes[PUBLIC_NAME] = plain_server
    _internal_servers(False)
    _resolving(monkeypatch, PUBLIC_ADDRESS)

    with _guarded_session() as session:
        answer = session.get(f"http://{PUBLIC_NAME}:{plain_server}/autodiscover", timeout=5)
        assert answer.text == "plain"
        assert proxy.asked == [("GET", PUBLIC_NAME, plain_server)]
        # An internal server named by the URL is refused before the proxy hears of it,
        # on the connection to the proxy already open too.
        with pytest.raises(requests.exceptions.ConnectionError) as caught:
            session.get(f"http://127.0.0.1:{plain_server}/autodiscover", timeout=5)
    assert trust.refused_internal(caught.value)
    assert len(proxy.asked) == 1


@pytest.mark.parametrize("variable", ["NO_PROXY", "HTTP_PROXY"])
def test_it_still_says_an_exchange_name_does_not_resolve_with_no_proxy_for_it(
    variable, monkeypatch, db
):
    from mail.errors import SignInError
    from mail.ews.session import _guard

    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY",
                 "no_proxy", "ALL_PROXY", "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    # Set, but not for an https:// address: no proxy will look the name up.
    monkeypatch.setenv(variable, "http://127.0.0.1:9" if variable == "HTTP_PROXY" else "x.test")
    with pytest.raises(SignInError) as caught:
        _guard("https://nosuch.invalid/EWS/Exchange.asmx")
    assert caught.value.kind == "dns"


def test_it_keeps_the_apps_own_trust_whatever_a_request_asks_to_verify(settings, tmp_path):
    import requests

    from tests.servers.https import HttpsServer

    server = HttpsServer(["localhost"])
    server.thread.start()
    try:
        bundle = tmp_path / "bundle.pem"  # as REQUESTS_CA_BUNDLE would name it
        server.ca.cert_pem.write_to_path(str(bundle))
        server.routes.add("localhost", "/", b"ok")
        before = trust.mail_ssl_context().cert_store_stats()["x509_ca"]
        url = f"https://localhost:{server.port}/"
        with requests.Session() as session:
            session.mount("https://", trust.MailTrustAdapter())
            for verify in (str(bundle), False, True):
                with pytest.raises(requests.exceptions.SSLError):
                    session.get(url, verify=verify, timeout=5)
    finally:
        server.httpd.shutdown()
    # The bundle was not added to the context every mail connection shares.
    assert trust.mail_ssl_context().cert_store_stats()["x509_ca"] == before


def test_it_reaches_exchange_through_an_https_proxy_and_paces_it_there_too(
    ews_server, mail_trust, settings, monkeypatch
):
    secure = HttpProxy(tls=True)
    try:
        _proxied_by(monkeypatch, secure.url)
        account = _mailbox(ews_server, "erin.tls@corp.test")
        run = mailbox_sync(account_id=account.pk)
        assert run.state == SyncRun.State.SUCCEEDED, run.error
        assert ("CONNECT", "localhost", ews_server.port) in secure.asked

        ews_server.add_message(
            "inbox", make_message(subject="Later", to=account.address, age=timedelta(0)),
            received=datetime.now(UTC), mailbox=account.address,
        )  # fmt: skip
        _given_up_in_seconds(account, ews_server, settings)
    finally:
        secure.close()


def test_it_cuts_a_request_through_an_https_proxy_when_its_work_runs_out_of_time(
    settings, tmp_path, monkeypatch
):
    import threading

    import requests

    from tests.servers.certs import test_ca
    from tests.servers.https import HttpsServer

    server = HttpsServer(["localhost"])
    server.thread.start()
    secure = HttpProxy(tls=True)
    try:
        server.routes.add_drip("localhost", "/slow", 0.2)  # 40 s of one-byte lines
        trusted = tmp_path / "ca.pem"
        trusted.write_bytes(server.ca.cert_pem.bytes() + test_ca().cert_pem.bytes())
        settings.MAIL_EXTRA_CA_FILE = str(trusted)
        settings.MAIL_CONNECT_TIMEOUT = 30  # the pacing alone would wait past the drip
        _proxied_by(monkeypatch, secure.url)
        scope = trust.Cancellable(allow_internal=True)
        failures = []

        def cancel_soon():
            time.sleep(1)
            try:
                scope.cancel()  # as autodiscover's deadline does
            except Exception as error:
                failures.append(error)

        threading.Thread(target=cancel_soon, daemon=True).start()
        began = time.monotonic()
        # Cut, the answer ends: mid-headers, http.client may take that for an answer of
        # its own as often as for an error (autodiscover says it ran out of time).
        with (
            trust.connections_of(scope),
            _guarded_session() as session,
            contextlib.suppress(requests.exceptions.RequestException),
        ):
            session.get(f"https://localhost:{server.port}/slow", timeout=30)
        took = time.monotonic() - began
    finally:
        secure.close()
        server.httpd.shutdown()
    # TLS to the server inside TLS to the proxy: the socket under it is cut.
    assert failures == [] and took < 10


def test_it_never_reads_an_earlier_failure_into_a_later_requests_own():
    import requests
    from urllib3.exceptions import NewConnectionError

    # A request made while an earlier one's failure is being handled: the later one's
    # socket error carries the earlier one as its context, which says nothing of it.
    try:
        raise NewConnectionError(None, "the first server was down")
    except NewConnectionError:
        try:
            try:
                raise ConnectionResetError("the answer to the message was cut")
            except ConnectionResetError as cut:
                raise requests.exceptions.ConnectionError(cut) from cut
        except requests.exceptions.ConnectionError as later:
            caught = later
    assert not trust.never_sent(caught)
