"""TLS failures told apart on real loopback sockets: a handshake the network cut short is
"connection" (tried again later), a real mismatch between the port and the provider
card's security is "tls" (an administrator fixes the card)."""

import pytest

from mail.errors import Retry, SignInError
from mail.imap_smtp.connection import imap_session
from providers.addresses import normalize_address
from tests.conftest import MAIL_USERS
from tests.servers.faults import HandshakeFault

ALICE = normalize_address("alice@example.test")


def _error(provider) -> SignInError:
    with pytest.raises(SignInError) as caught:
        imap_session(
            provider=provider, address=ALICE, login=ALICE.email,
            password=MAIL_USERS[ALICE.email],
        )  # fmt: skip
    return caught.value


@pytest.mark.parametrize("mode", ["eof", "reset"])
def test_it_tries_again_when_the_handshake_is_cut_short(test_provider, mode):
    server = HandshakeFault(mode).start()
    try:
        test_provider.imap_port = server.port
        error = _error(test_provider)
    finally:
        server.stop()
    assert server.connections == 1
    assert (error.kind, error.retry) == ("connection", Retry.LATER)
    assert f"port {server.port})" in str(error)


def test_it_says_tls_does_not_fit_when_the_port_speaks_plain_text(test_provider, dovecot):
    test_provider.imap_port = dovecot.imap_port  # plain IMAP; the card says SSL/TLS
    error = _error(test_provider)
    assert (error.kind, error.retry) == ("tls", Retry.OWNER)
    assert "WRONG_VERSION_NUMBER" in str(error) and "SSL/TLS or STARTTLS" in str(error)


@pytest.mark.parametrize("mode", ["old_tls", "no_shared_cipher"])
def test_it_says_tls_does_not_fit_when_nothing_is_shared(test_provider, mode):
    server = HandshakeFault(mode).start()
    try:
        test_provider.imap_port = server.port
        error = _error(test_provider)
    finally:
        server.stop()
    assert (error.kind, error.retry) == ("tls", Retry.OWNER), str(error)
