"""The sign-in check against the suite's real Dovecot and aiosmtpd servers."""

import pytest

from accounts.models import EmailAccount
from accounts.services import account_create
from mail.errors import SignInError
from mail.imap_smtp.connection import check_sign_in
from providers.addresses import normalize_address
from systemsettings.models import SystemSetting
from tests.conftest import MAIL_USERS
from tests.factories import UserFactory
from tests.servers.dovecot import free_port
from tests.servers.https import SilentServer

ALICE = normalize_address("alice@example.test")


def _check(provider, password=MAIL_USERS["alice@example.test"], address=ALICE, login=None):
    check_sign_in(
        provider=provider, address=address, login=login or address.email, password=password
    )


def _error(provider, password=MAIL_USERS["alice@example.test"], address=ALICE) -> SignInError:
    """Provoke the failure through the service that adds a mailbox: nothing may be saved."""
    with pytest.raises(SignInError) as caught:
        account_create(
            user=UserFactory(),
            provider=provider,
            address=address,
            login=address.email,
            password=password,
        )
    assert password not in str(caught.value)
    assert not EmailAccount.objects.exists()
    return caught.value


def test_it_accepts_good_credentials_over_ssl_imap_and_starttls_smtp(test_provider):
    _check(test_provider)


def test_it_accepts_starttls_imap_and_implicit_tls_smtp(test_provider, dovecot, smtp_servers):
    test_provider.imap_port, test_provider.imap_security = dovecot.imap_port, "starttls"
    test_provider.smtp_port, test_provider.smtp_security = smtp_servers["implicit"].port, "ssl"
    _check(test_provider)


def test_it_says_the_password_is_wrong(test_provider):
    error = _error(test_provider, password="wrong")
    assert error.kind == "credentials"
    assert "did not accept the login or password" in str(error)
    assert "AUTHENTICATIONFAILED" in str(error)


def test_it_says_this_provider_needs_an_app_password(test_provider):
    test_provider.app_password_required = True
    test_provider.name = "Gmail"
    error = _error(test_provider, password="wrong")
    assert "Gmail needs an app password here, not your normal password" in str(error)


def test_it_says_imap_is_turned_off(test_provider):
    error = _error(
        test_provider,
        address=normalize_address("noimap@example.test"),
        password="noimap-secret",
    )
    assert error.kind == "imap_disabled"
    assert "IMAP access is turned off for this mailbox" in str(error)


def test_it_says_the_smtp_password_is_wrong(test_provider):
    test_provider.receive_enabled = False
    error = _error(test_provider, password="wrong")
    assert error.kind == "credentials"
    assert "outgoing mail server did not accept" in str(error)
    assert "535" in str(error)


def test_it_says_smtp_refuses_sending_as_the_address(test_provider):
    error = _error(
        test_provider,
        address=normalize_address("refused@example.test"),
        password="refused-secret",
    )
    assert error.kind == "smtp_refuses"
    assert "refuses to send as refused@example.test (550" in str(error)


def test_it_says_the_smtp_server_offers_no_sign_in(test_provider, smtp_servers):
    test_provider.smtp_port = smtp_servers["no_auth"].port
    error = _error(test_provider)
    assert error.kind == "auth_unsupported"
    # aiosmtpd still says "AUTH" with no mechanism after it; either wording names the cause.
    assert "sign-in" in str(error)
    assert "port" in str(error)


def test_it_says_the_imap_server_refuses_passwords_in_the_clear(test_provider, dovecot):
    test_provider.imap_host, test_provider.imap_port = "127.0.0.2", dovecot.strict_imap_port
    test_provider.imap_security = "none"
    error = _error(test_provider)
    assert error.kind == "auth_unsupported"
    assert "LOGINDISABLED" in str(error)


def test_it_says_the_connection_was_refused(test_provider):
    test_provider.imap_port = free_port()
    error = _error(test_provider)
    assert error.kind == "refused"
    assert f"port {test_provider.imap_port}) refused the connection" in str(error)


def test_it_says_the_server_did_not_answer_in_time(test_provider, settings):
    settings.MAIL_CONNECT_TIMEOUT = 1
    silent = SilentServer().start()
    try:
        test_provider.imap_port = silent.port
        error = _error(test_provider)
    finally:
        silent.stop()
    assert error.kind == "timeout"
    assert "did not answer within 1 seconds" in str(error)


def test_it_refuses_a_certificate_for_another_name(test_provider):
    # The certificate is for "localhost"; the same server reached as 127.0.0.1 must fail.
    test_provider.imap_host = "127.0.0.1"
    error = _error(test_provider)
    assert error.kind == "certificate"
    assert "could not be verified" in str(error)
    assert "Your password was not sent" in str(error)


def test_it_refuses_a_certificate_from_an_unknown_authority(test_provider, settings):
    settings.MAIL_EXTRA_CA_FILE = None
    error = _error(test_provider)
    assert error.kind == "certificate"


def test_it_says_tls_failed_when_the_port_speaks_plain_text(test_provider, dovecot):
    test_provider.imap_port = dovecot.imap_port  # plain IMAP, but the provider says SSL/TLS
    error = _error(test_provider)
    assert error.kind in {"tls", "connection"}
    assert "encrypted connection" in str(error) or "closed the connection" in str(error)


def test_it_says_the_server_name_does_not_resolve(test_provider, monkeypatch):
    import socket

    from mailsetup import net

    # No DNS server is reachable from the tests: the resolver answers as a real one
    # does for an unknown name.
    def unknown(host, port, timeout):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(net, "resolve", unknown)
    test_provider.imap_host = "imap.nowhere.test"
    error = _error(test_provider)
    assert error.kind == "dns"
    assert "could not find the server imap.nowhere.test" in str(error)


def test_it_refuses_internal_addresses_unless_an_admin_allows_them(test_provider):
    SystemSetting.objects.filter(code="AllowInternalMailServers").update(value="no")
    error = _error(test_provider)
    assert error.kind == "internal_address"
    assert "AllowInternalMailServers" in str(error)
    # The resolved address is not shown: the wizard must not reveal internal host names.
    assert "127.0.0.1" not in str(error)
    assert "::1" not in str(error)


def test_it_uses_the_local_part_when_the_provider_says_so(test_provider, dovecot):
    from mail.imap_smtp.connection import login_for

    test_provider.login_format = "local_part"
    assert login_for(test_provider, ALICE) == "alice"
    test_provider.login_format = "manual"
    assert login_for(test_provider, ALICE, " custom-login ") == "custom-login"


def test_it_verifies_the_certificate_after_imap_starttls(test_provider, dovecot):
    test_provider.imap_host, test_provider.imap_port = "127.0.0.1", dovecot.imap_port
    test_provider.imap_security = "starttls"
    assert _error(test_provider).kind == "certificate"


def test_it_verifies_the_certificate_after_smtp_starttls(test_provider):
    test_provider.receive_enabled = False
    test_provider.smtp_host = "127.0.0.1"
    assert _error(test_provider).kind == "certificate"


def test_it_verifies_the_certificate_of_implicit_tls_smtp(test_provider, smtp_servers):
    test_provider.receive_enabled = False
    test_provider.smtp_host, test_provider.smtp_port = "127.0.0.1", smtp_servers["implicit"].port
    test_provider.smtp_security = "ssl"
    assert _error(test_provider).kind == "certificate"


def test_it_says_the_smtp_connection_was_refused(test_provider):
    test_provider.receive_enabled = False
    test_provider.smtp_port = free_port()
    assert _error(test_provider).kind == "refused"


@pytest.mark.parametrize(
    ("login", "kind", "words"),
    [
        ("apppw@example.test", "app_password", "needs an app password for sending"),
        ("noauth@example.test", "smtp_auth_disabled", "(SMTP AUTH) is turned off"),
    ],
)
def test_it_reads_what_big_providers_smtp_servers_say(test_provider, login, kind, words):
    test_provider.receive_enabled = False
    error = _error(test_provider, address=normalize_address(login), password="whatever-1")
    assert error.kind == kind
    assert words in str(error)


def test_it_refuses_a_non_ascii_password_with_a_clear_message(test_provider):
    error = _error(test_provider, password="pässwörd")
    assert error.kind == "non_ascii"


def test_it_never_sends_a_password_unencrypted_over_the_internet(test_provider, monkeypatch):
    import socket

    from mailsetup import net

    # A public address for the host, and a connect that must never happen.
    monkeypatch.setattr(net, "resolve", lambda host, port, timeout: [("93.184.215.14", port)])

    def no_connection(*args, **kwargs):
        raise AssertionError("connected to a public address")

    monkeypatch.setattr(socket, "create_connection", no_connection)
    test_provider.imap_security = "none"
    error = _error(test_provider)
    assert error.kind == "insecure"
    assert "readable over the internet" in str(error)
