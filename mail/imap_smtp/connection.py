"""The real sign-in check: log in to the IMAP server and authenticate to the SMTP server.

Every connection resolves the host once, refuses internal addresses unless the
system setting allows them, connects to exactly the address it checked (so a DNS
answer cannot change in between), and verifies TLS for the server's name with
`ssl.create_default_context()`. Failures become a SignInError whose message names
the cause and what to do; no message ever contains the password.
"""

import contextlib
import errno
import imaplib
import smtplib
import socket
import ssl
import threading
import time

from django.conf import settings
from django.views.decorators.debug import sensitive_variables
from imapclient.exceptions import CapabilityError, LoginError

from mail.backend import Endpoint, credentials_required, login_for  # noqa: F401 (its old place)
from mail.errors import SignInError
from mail.imap_smtp.wire import PinnedIMAP4 as _PinnedIMAP4  # noqa: F401 (tests)
from mail.imap_smtp.wire import PinnedIMAPClient as _PinnedIMAPClient
from mail.pace import Paced
from mail.trust import (
    mail_ssl_context,
    usable_addresses,
)
from mailsetup import net
from providers.addresses import Address
from providers.models import EmailProvider, LoginFormat, Security
from systemsettings.selectors import internal_mail_servers_allowed


def _endpoint(provider: EmailProvider, address: Address, protocol: str) -> Endpoint:
    prefix = protocol.lower()
    return Endpoint(
        protocol,
        provider.host_for(getattr(provider, f"{prefix}_host"), address.domain),
        getattr(provider, f"{prefix}_port"),
        getattr(provider, f"{prefix}_security"),
    )


def endpoints_for(provider: EmailProvider, address: Address) -> list[Endpoint]:
    wanted = [("IMAP", provider.receive_enabled), ("SMTP", provider.send_enabled)]
    return [_endpoint(provider, address, protocol) for protocol, on in wanted if on]


@sensitive_variables("password", "access_token")
def check_sign_in(
    *, provider: EmailProvider, address: Address, login: str, password: str = "",
    access_token: str = "",
) -> str:  # fmt: skip
    """Raises SignInError unless the IMAP and SMTP servers the provider uses accept the
    login (with the password, or an OAuth 2.0 access token). Returns "" (IMAP and SMTP
    do not say the mailbox's display name)."""
    credentials_required(login=login, password=password, access_token=access_token)
    if not (login.isascii() and password.isascii()):
        # IMAP LOGIN and SMTP AUTH carry ASCII only; servers that accept other
        # characters are rare, and encoding errors must not carry the password around.
        raise SignInError(
            "non_ascii",
            "The login or password contains characters (such as letters with accents) that "
            "mail servers do not accept at sign-in. Use an app password, or ask your mail "
            "administrator.",
        )
    endpoints = endpoints_for(provider, address)
    if not endpoints:
        raise SignInError(
            "nothing_to_check",
            f"{provider.name} has neither receiving nor sending turned on; ask an administrator "
            "to fix the provider.",
            field="provider",
        )
    checker = _Checker(
        provider=provider,
        timeout=settings.MAIL_CONNECT_TIMEOUT,
        allow_internal=internal_mail_servers_allowed(),
    )
    for endpoint in endpoints:
        if endpoint.protocol == "IMAP":
            checker.imap(endpoint, login, password, access_token=access_token)
        else:
            checker.smtp(endpoint, login, password, address.email, access_token=access_token)
    return ""


@sensitive_variables("password", "access_token")
def imap_session(
    *, provider: EmailProvider, address: Address, login: str, password: str = "",
    access_token: str = "", allow_internal: bool | None = None,
):  # fmt: skip
    """A logged-in IMAP connection made with exactly the sign-in check's rules (checked
    address, internal-address guard, verified TLS, time limits), signed in with the
    password or, given one, an OAuth 2.0 access token (XOAUTH2). Raises SignInError.
    `allow_internal`: the system setting, when the caller read it already (a thread
    that must not touch the database)."""
    if allow_internal is None:
        allow_internal = internal_mail_servers_allowed()
    checker = _Checker(
        provider=provider, timeout=settings.MAIL_CONNECT_TIMEOUT, allow_internal=allow_internal
    )
    endpoint = _endpoint(provider, address, "IMAP")
    return checker.imap(endpoint, login, password, keep=True, access_token=access_token)


@sensitive_variables("password", "access_token")
def smtp_session(
    *, provider: EmailProvider, address: Address, login: str, password: str = "",
    access_token: str = "",
):  # fmt: skip
    """A signed-in SMTP connection made with the sign-in check's rules, for sending,
    with the password or an OAuth 2.0 access token (XOAUTH2). Raises SignInError (its
    kind says whether trying again later may help)."""
    checker = _Checker(
        provider=provider,
        timeout=settings.MAIL_CONNECT_TIMEOUT,
        allow_internal=internal_mail_servers_allowed(),
    )
    endpoint = _endpoint(provider, address, "SMTP")
    return checker.smtp(endpoint, login, password, "", keep=True, access_token=access_token)


class _Checker:
    def __init__(self, *, provider: EmailProvider, timeout: float, allow_internal: bool):
        self.provider = provider
        self.timeout = timeout
        # One conversation (connect, TLS, login, for SMTP the sender check) may take
        # a few round trips, each bounded by `timeout`; the whole is bounded too.
        self.total = 3 * timeout
        self.allow_internal = allow_internal
        self.context = mail_ssl_context()

    # -- connecting ---------------------------------------------------------------

    def _open(self, endpoint: Endpoint) -> socket.socket:
        try:
            addresses = net.resolve(endpoint.host, endpoint.port, self.timeout)
        except (socket.gaierror, UnicodeError):
            raise SignInError(
                "dns",
                f"We could not find the server {endpoint.host} (DNS lookup failed). Check the "
                "server name in the provider's settings, or ask your administrator.",
                field="provider",
            ) from None
        except TimeoutError:
            raise SignInError(
                "dns",
                f"Looking up the server {endpoint.host} took too long (DNS did not answer). "
                "Try again in a minute.",
                field="provider",
            ) from None
        usable = usable_addresses(addresses, allow_internal=self.allow_internal)
        if not usable:
            # The address itself is not shown: the message must not turn the wizard into
            # a way to look up the company's internal host names.
            raise SignInError(
                "internal_address",
                f"{endpoint.host} is on an internal network address. Connecting to internal "
                "mail servers is turned off; an administrator can allow it with the system "
                "setting AllowInternalMailServers.",
                field="provider",
            )
        if endpoint.security == Security.NONE and not all(net.is_internal(a[0]) for a in usable):
            raise SignInError(
                "insecure",
                f"{endpoint.label} is set up without encryption, which would send your password "
                "readable over the internet. Choose SSL/TLS or STARTTLS security in the "
                "provider's settings.",
                field="provider",
            )
        error: OSError | None = None
        for sockaddr in usable:
            try:
                sock = socket.create_connection(sockaddr[:2], timeout=self.timeout)
            except OSError as caught:
                error = caught
                continue
            self._watch(sock)
            return sock
        raise error  # type: ignore[misc]

    def _watch(self, sock: socket.socket) -> None:
        """End the conversation at the overall limit, however the server drips bytes:
        per-operation timeouts alone would let it hold a web worker indefinitely."""
        self._stop_watch()
        self._deadline = time.monotonic() + self.total
        self._watchdog = threading.Timer(self.total, _shut, args=(sock,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def _stop_watch(self) -> None:
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.cancel()
            self._watchdog = None

    def _explain(self, endpoint: Endpoint, error: BaseException) -> SignInError:
        where = endpoint.label
        if isinstance(error, SignInError):
            return error
        if time.monotonic() >= getattr(self, "_deadline", float("inf")):
            return SignInError(
                "timeout",
                f"{where} did not finish signing in within {self.total:g} seconds. Try again "
                "later, or check the port and security in the provider's settings.",
                field="provider",
            )
        if isinstance(error, OSError) and error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return SignInError(
                "unreachable",
                f"{where} cannot be reached from this server (no route to it). Check the server "
                "name, or ask your administrator whether outgoing connections are allowed.",
                field="provider",
            )
        if isinstance(error, smtplib.SMTPConnectError):
            return SignInError(
                "refused",
                f"{where} refused the session ({error.smtp_code} {_decode(error.smtp_error)}).",
                field="provider",
            )
        if isinstance(error, ConnectionRefusedError):
            return SignInError(
                "refused",
                f"{where} refused the connection. Check the port in the provider's settings, "
                "or whether the server is running.",
                field="provider",
            )
        if isinstance(error, TimeoutError):
            return SignInError(
                "timeout",
                f"{where} did not answer within {self.timeout:g} seconds. Check the port and "
                "security in the provider's settings, or try again later.",
                field="provider",
            )
        if isinstance(error, ssl.SSLCertVerificationError):
            return SignInError(
                "certificate",
                f"{where} presented a security certificate that could not be verified "
                f"({error.verify_message}). Your password was not sent. Ask your "
                "administrator to check the server's certificate and name.",
                field="provider",
            )
        if isinstance(error, ssl.SSLError) and not _tls_mismatch(error):
            # The handshake was cut short (closed, reset, garbled on the way): the
            # network's failure, worth another try, not a wrong setting.
            return SignInError(
                "connection",
                f"{where} closed the connection while setting up encryption "
                f"({error.reason or type(error).__name__}). Try again later; if it keeps "
                "happening, check whether the port expects SSL/TLS or STARTTLS.",
                field="provider",
            )
        if isinstance(error, ssl.SSLError):
            return SignInError(
                "tls",
                f"{where} could not set up an encrypted connection ({error.reason or error}). "
                "Check whether the port expects SSL/TLS or STARTTLS.",
                field="provider",
            )
        return SignInError(
            "connection",
            f"{where} closed the connection unexpectedly ({type(error).__name__}). Check the "
            "port and security in the provider's settings, or try again later.",
            field="provider",
        )

    def _password_hint(self) -> str:
        if self.provider.app_password_required:
            return (
                f" {self.provider.name} needs an app password here, not your normal password: "
                "create one in your account's security settings and paste it."
            )
        if self.provider.login_format == LoginFormat.MANUAL:
            return " Check the login and password and try again."
        if self.provider.pk is None:
            # A server being added (the wizard's new-server step): its login format is
            # chosen on the same page, and may be what is wrong.
            return " Check the password and the server's login format, and try again."
        # The login is made from the address by the provider's rule: not the person's to
        # change here, and the wizard does not ask for it.
        return " Check the password and try again."

    # -- IMAP ---------------------------------------------------------------------

    def imap(
        self, endpoint: Endpoint, login: str, password: str, *, keep: bool = False,
        access_token: str = "",
    ):  # fmt: skip
        """Log in; with `keep`, return the logged-in client instead of logging out."""
        client = None
        try:
            client = _PinnedIMAPClient(
                endpoint,
                opener=lambda: self._open(endpoint),
                context=self.context,
                timeout=self.timeout,
            )
            if endpoint.security == Security.STARTTLS:
                try:
                    client.starttls(self.context)
                except CapabilityError:
                    raise SignInError(
                        "starttls_unsupported",
                        f"{endpoint.label} does not offer STARTTLS. Choose SSL/TLS security "
                        "(usually port 993) in the provider's settings.",
                        field="provider",
                    ) from None
            if b"LOGINDISABLED" in client.capabilities():
                raise SignInError(
                    "auth_unsupported",
                    f"{endpoint.label} does not accept a password on this connection "
                    "(LOGINDISABLED). Choose SSL/TLS or STARTTLS security in the provider's "
                    "settings.",
                    field="provider",
                )
            if access_token:
                client.oauth2_login(login, access_token)
            else:
                client.login(_imap_quoted(login), password)
            if keep:
                self._stop_watch()
                kept, client = client, None
                return kept
        except LoginError as error:
            raise self._imap_login_error(endpoint, error) from None
        except (OSError, imaplib.IMAP4.error, SignInError) as error:
            raise self._explain(endpoint, error) from None
        finally:
            if client is not None:
                self._stop_watch()
                _quietly(client.logout)
        return None

    def _imap_login_error(self, endpoint: Endpoint, error: LoginError) -> SignInError:
        text = _server_text(error)
        lowered = text.lower()
        if "application-specific password" in lowered or "app password" in lowered:
            return SignInError(
                "app_password",
                f"{self.provider.name} needs an app password for mail programs. Create one in "
                f"your account's security settings and enter it instead of your normal "
                f"password. (Server said: {text})",
            )
        if "imap" in lowered and any(w in lowered for w in ("disabled", "not enabled")):
            return SignInError(
                "imap_disabled",
                "IMAP access is turned off for this mailbox. Turn on IMAP in the mailbox's "
                f"settings at {self.provider.name} (or ask your mail administrator), then sign "
                f"in again. (Server said: {text})",
            )
        if "[expired]" in lowered:
            return SignInError(
                "expired",
                "The mail server says this password has expired. Change it with your provider, "
                f"then sign in with the new one. (Server said: {text})",
            )
        if "[contactadmin]" in lowered:
            return SignInError(
                "contact_admin",
                "The mail server refused the sign-in and asks you to contact your mail "
                f"administrator. (Server said: {text})",
            )
        refused = any(code in lowered for code in _LOGIN_REFUSED_CODES)
        if not refused and (reason := _login_refused_for_now(lowered)):
            # Read before the words below: "[UNAVAILABLE] ... command" is not a syntax error.
            return SignInError(
                "temporary",
                f"{endpoint.label} refused the sign-in for now ({reason}). Nothing needs to "
                f"change: try again in a few minutes. (Server said: {text})",
            )
        if not refused and any(word in lowered for word in ("bad", "command", "syntax", "parse")):
            return SignInError(
                "protocol",
                f"{endpoint.label} did not understand the sign-in (Server said: {text}). Check "
                "the login name, or ask your administrator.",
            )
        if "[privacyrequired]" in lowered:
            return SignInError(
                "auth_unsupported",
                f"{endpoint.label} accepts passwords only over an encrypted connection. Choose "
                "SSL/TLS or STARTTLS security in the provider's settings.",
                field="provider",
            )
        return SignInError(
            "credentials",
            f"The mail server did not accept the login or password.{self._password_hint()} "
            f"(IMAP server said: {text})",
        )

    # -- SMTP ---------------------------------------------------------------------

    def smtp(
        self, endpoint: Endpoint, login: str, password: str, sender: str, *, keep: bool = False,
        access_token: str = "",
    ):  # fmt: skip
        """Sign in, and check the server takes `sender`; with `keep`, return the signed-in
        client instead (the sender is then checked by the message's own MAIL FROM)."""
        kept = None
        client = _PinnedSMTP(
            opener=lambda: self._open(endpoint),
            implicit_context=self.context if endpoint.security == Security.SSL_TLS else None,
            timeout=self.timeout,
        )
        try:
            client.connect(endpoint.host, endpoint.port)
            client.ehlo()
            if endpoint.security == Security.STARTTLS:
                if not client.has_extn("starttls"):
                    raise SignInError(
                        "starttls_unsupported",
                        f"{endpoint.label} does not offer STARTTLS. Choose SSL/TLS security "
                        "(usually port 465) in the provider's settings.",
                        field="provider",
                    )
                client.starttls(context=self.context)
                client.ehlo()
            if not client.has_extn("auth"):
                raise SignInError(
                    "auth_unsupported",
                    f"{endpoint.label} does not offer sign-in (no AUTH). Check the port and "
                    "security in the provider's settings: sending usually needs port 465 "
                    "(SSL/TLS) or 587 (STARTTLS).",
                    field="provider",
                )
            if access_token:
                client.auth(
                    "XOAUTH2",
                    lambda challenge=None: f"user={login}\x01auth=Bearer {access_token}\x01\x01",
                    initial_response_ok=True,
                )
            else:
                client.login(login, password)
            if keep:
                kept = client
                return kept
            code, reply = client.mail(sender)
            if 400 <= code < 500:
                raise SignInError(
                    "temporary",
                    f"{endpoint.label} accepted the login but put off the sender check "
                    f"({code} {_decode(reply)}). Try again in a few minutes.",
                )
            if code >= 500:
                raise SignInError(
                    "smtp_refuses",
                    f"{endpoint.label} accepted the login but refuses to send as {sender} "
                    f"({code} {_decode(reply)}). Check that this login may send from this "
                    "address, or turn off sending for it.",
                )
            client.rset()
        except smtplib.SMTPAuthenticationError as error:
            raise self._smtp_login_error(endpoint, error) from None
        except smtplib.SMTPNotSupportedError:
            raise SignInError(
                "auth_unsupported",
                f"{endpoint.label} does not offer sign-in on this connection.",
                field="provider",
            ) from None
        except smtplib.SMTPException as error:
            if "No suitable authentication method" in str(error):
                raise SignInError(
                    "auth_unsupported",
                    f"{endpoint.label} offers no sign-in method mailsetup supports "
                    "(PLAIN or LOGIN).",
                    field="provider",
                ) from None
            raise self._explain(endpoint, error) from None
        except (OSError, SignInError) as error:
            raise self._explain(endpoint, error) from None
        finally:
            self._stop_watch()
            if kept is None:
                _quietly(client.quit)
                _quietly(client.close)

    def _smtp_login_error(self, endpoint, error: smtplib.SMTPAuthenticationError) -> SignInError:
        code, text = error.smtp_code, _decode(error.smtp_error)
        said = f"(Server said: {code} {text})"
        if "application-specific password" in text.lower():
            return SignInError(
                "app_password",
                f"{self.provider.name} needs an app password for sending. Create one in your "
                f"account's security settings and enter it. {said}",
            )
        if "5.7.139" in text or ("smtp auth" in text.lower() and "disabled" in text.lower()):
            return SignInError(
                "smtp_auth_disabled",
                "Sending with a password (SMTP AUTH) is turned off for this mailbox. Ask your "
                f"mail administrator to turn on authenticated SMTP for it. {said}",
            )
        if code == 530:
            return SignInError(
                "auth_unsupported",
                f"{endpoint.label} wants an encrypted connection before sign-in. Choose "
                f"STARTTLS or SSL/TLS security in the provider's settings. {said}",
                field="provider",
            )
        if 400 <= code < 500:
            return SignInError(
                "temporary",
                f"{endpoint.label} could not check the password right now. Try again in a few "
                f"minutes. {said}",
            )
        return SignInError(
            "credentials",
            f"The outgoing mail server did not accept the login or password."
            f"{self._password_hint()} (SMTP server said: {code} {text})",
        )


class _PinnedSMTP(Paced, smtplib.SMTP):
    counts_bytes = False

    def __init__(self, *, opener, implicit_context, timeout):
        self._opener = opener
        self._implicit_context = implicit_context
        self.pace(timeout)
        # No DNS lookup of our own name: the EHLO name is this machine's host name.
        super().__init__(local_hostname=socket.gethostname(), timeout=timeout)

    def _get_socket(self, host, port, timeout):
        # SMTP() only records the host when given it at construction; STARTTLS and
        # implicit TLS verify the certificate against it.
        self._host = host
        sock = self._opener()
        if self._implicit_context is not None:
            sock = self._implicit_context.wrap_socket(sock, server_hostname=self._host)
        self.opened()  # the greeting is timed from here, not from the DNS look-up
        return sock

    # Where smtplib writes and reads (mail/pace.py). A cut reply is the
    # disconnection smtplib makes of a read that timed out, so that what follows (was
    # the message handed over?) is decided as it was.
    def send(self, s):
        self.asked()
        self.in_pieces(super().send, s)

    def getreply(self):
        return self.paced(0, super().getreply)

    def overdue(self) -> Exception:
        return smtplib.SMTPServerDisconnected(self.overdue_text())


# OpenSSL's reasons for a handshake that cannot work as configured: TLS spoken to a
# plaintext port (the greeting read as a record), or no protocol or cipher in common.
TLS_MISMATCH_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST",
        "PACKET_LENGTH_TOO_LONG", "RECORD_LENGTH_MISMATCH", "UNSUPPORTED_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_SHARED_CIPHER",
        "NO_CIPHERS_AVAILABLE", "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_INSUFFICIENT_SECURITY", "DH_KEY_TOO_SMALL",
        "UNSAFE_LEGACY_RENEGOTIATION_DISABLED", "WRONG_SSL_VERSION",
    }
)  # fmt: skip


def _tls_mismatch(error: ssl.SSLError) -> bool:
    if isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return False
    return (error.reason or "") in TLS_MISMATCH_REASONS


def _imap_quoted(login: str) -> str:
    """imaplib quotes the password but not the login; a login with a space or a quote
    would otherwise be a syntax error that looks like a wrong password."""
    if login and all(ch.isalnum() or ch in "@.-_+" for ch in login):
        return login
    return '"' + login.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _decode(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:300]


# RFC 5530 response codes of a refused sign-in. These say the login or password (or the
# account's rights) are wrong: only the owner can fix them.
_LOGIN_REFUSED_CODES = ("[authenticationfailed]", "[authorizationfailed]")
# These say the server cannot take the sign-in now, the credentials being fine: the
# mailbox is tried again later, never stopped for its owner.
_LOGIN_LATER_CODES = {
    "[unavailable]": "the server could not check the password right now",
    "[inuse]": "the mailbox is in use by another connection",
    "[limit]": "too many connections or sign-ins for this mailbox",
    "[serverbug]": "the server had an internal error",
}
# Servers that say it in words: Gmail answers "[ALERT] Too many simultaneous connections.
# (Failure)" to a LOGIN over its limit of 15 connections a mailbox.
_LOGIN_LATER_WORDS = ("too many simultaneous connections", "too many connections")


def _login_refused_for_now(lowered: str) -> str:
    """Why a refused sign-in (its text, lowercased) is temporary, or "" if it is not."""
    for code, reason in _LOGIN_LATER_CODES.items():
        if code in lowered:
            return reason
    # Only words about connections: "[ALERT] Too many failed login attempts" is a
    # password the owner must fix, and retrying it would lock the mailbox out.
    if any(words in lowered for words in _LOGIN_LATER_WORDS):
        return "too many connections or sign-ins for this mailbox"
    return ""


def _server_text(error: LoginError) -> str:
    text = str(error)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return _decode(text)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _quietly(call) -> None:
    # Closing after a failure: the failure is what matters, not how the close went.
    with contextlib.suppress(Exception):
        call()
