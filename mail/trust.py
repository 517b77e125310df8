"""What every connection to a mail server trusts, and where it may go.

TLS: the system's CAs plus the company's own (settings.MAIL_EXTRA_CA_FILE) and, in
development, `make dev-mail`'s; verification is never turned off. The internal-address
guard: with the system setting AllowInternalMailServers off, no connection reaches an
internal network address, checked on the connected socket itself for HTTP (exchangelib,
msal, google-auth) and on the resolved address for IMAP and SMTP (`usable_addresses`).
"""

import contextlib
import functools
import http.client
import io
import os
import re
import socket
import ssl
import threading
import urllib.parse

from django.conf import settings
from requests.adapters import HTTPAdapter

from mail.pace import Paced, PacedReader, socket_of
from mailsetup import net
from systemsettings.selectors import internal_mail_servers_allowed


def usable_addresses(addresses: list, *, allow_internal: bool) -> list:
    """The resolved addresses a connection may use (getaddrinfo's tuples)."""
    return [a for a in addresses if allow_internal or not net.is_internal(a[0])]


def mail_ssl_context() -> ssl.SSLContext:
    """The system's trusted CAs, plus the company's own CA when one is configured, plus
    in development the CA `make dev-mail` wrote (settings.MAIL_DEV_CA_FILE), once it is
    there: a running app picks it up, or a new one, without a restart."""
    dev_ca = None
    if settings.MAIL_DEV_CA_FILE:
        with contextlib.suppress(OSError):
            dev_ca = (settings.MAIL_DEV_CA_FILE, os.stat(settings.MAIL_DEV_CA_FILE).st_mtime_ns)
    return _ssl_context(settings.MAIL_EXTRA_CA_FILE, dev_ca)


@functools.lru_cache(maxsize=4)
def _ssl_context(extra_ca_file: str | None, dev_ca: tuple[str, int] | None) -> ssl.SSLContext:
    # Loading the system's CA store takes tens of milliseconds: once per process, not
    # once per connection (an idle re-sync is otherwise mostly this).
    context = ssl.create_default_context()
    if extra_ca_file:
        context.load_verify_locations(cafile=extra_ca_file)
    if dev_ca:
        context.load_verify_locations(cafile=dev_ca[0])
    return context


class MailTrustAdapter(HTTPAdapter):
    """requests (under exchangelib, the Graph client and the OAuth clients) verifying
    servers with the same trust as the mail connections, the system's CAs plus the
    company's own, and reading their answers at a pace (mail/pace.py), whether they go
    straight to the server or through a proxy named by the environment (HTTPS_PROXY)."""

    refusal: type["InternalAddressRefused"] | None = None

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = mail_ssl_context()
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pools(self.refusal)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # requests makes a proxy's pools with urllib3's own classes and context: through
        # a company's proxy, answers were not paced, the internal-address rule not
        # applied and the company's CA not trusted (an Exchange server with a
        # certificate of its own CA failed). A SOCKS proxy keeps requests' classes
        # (PySocks' pools), and so none of this: the README says so.
        if proxy.lower().startswith("socks"):
            return super().proxy_manager_for(proxy, **proxy_kwargs)
        if proxy not in self.proxy_manager:
            from urllib3 import proxy_from_url

            context = mail_ssl_context()
            manager = proxy_from_url(
                proxy, proxy_headers=self.proxy_headers(proxy),
                num_pools=self._pool_connections, maxsize=self._pool_maxsize,
                block=self._pool_block, ssl_context=context, proxy_ssl_context=context,
                **proxy_kwargs,
            )  # fmt: skip
            manager.pool_classes_by_scheme = _pools(self.refusal)
            # Published whole: another thread never takes it with urllib3's classes.
            self.proxy_manager[proxy] = manager
        return self.proxy_manager[proxy]

    def cert_verify(self, conn, url, verify, cert):
        # The app's trust is its context alone. requests names a CA bundle for every
        # https pool (certifi's, or REQUESTS_CA_BUNDLE's where the environment is read),
        # and urllib3 loads it into the context it is given: the process's one cached
        # context, which every mail connection shares; a client certificate would be
        # loaded into it the same way, and shown to every server. `verify=False`
        # changes nothing.
        if cert:
            raise ValueError("mail connections take no client certificate")
        conn.cert_reqs, conn.ca_certs, conn.ca_cert_dir = "CERT_REQUIRED", None, None

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        # The pool's key and settings, without the environment's bundle (above).
        return super().build_connection_pool_key_attributes(request, True, cert)


def _pacing(base: type) -> type:
    """urllib3's connection class `base`, its answers paced: a request sent is a command
    asked, the answer's bytes are read through a PacedReader."""

    class PacedConnection(Paced, base):
        def __init__(self, *args, **kwargs):
            self.pace(settings.MAIL_CONNECT_TIMEOUT)
            super().__init__(*args, **kwargs)

        def _new_conn(self):
            # urllib3 connects a pooled connection again after a cut or a close.
            sock = super()._new_conn()
            self.opened()
            return sock

        def close(self):
            # urllib3 closes a connection whose answer was cut and pools it again; over
            # plain HTTP it reconnects inside send(), after asked() would refuse it.
            super().close()
            self.was_cut = False

        def send(self, data):
            self.asked()
            self.in_pieces(super().send, data)

        def _tunnel(self):
            try:
                return super()._tunnel()
            except (OSError, http.client.HTTPException) as error:
                if str(error).startswith("Tunnel connection failed"):
                    raise
                # The proxy hung up, reset or kept silent instead of answering CONNECT:
                # nothing of the request has left. Said in the words of a refusal, on a
                # closed connection, so that urllib3 calls it a ProxyError and
                # `never_sent` knows it (not "timed out": urllib3 would call that a read
                # timeout).
                self.close()
                why = type(error).__name__
                raise OSError(
                    f"Tunnel connection failed: the proxy gave no usable answer ({why})"
                ) from error

        def response_class(self, sock, *args, **kwargs):
            # Called on the connection by http.client (its class attribute, a method
            # here): the answer reads the socket through a paced reader.
            return http.client.HTTPResponse(_ReadPaced(sock, self), *args, **kwargs)

    return PacedConnection


class _ReadPaced:
    # All http.client.HTTPResponse asks of the socket it is given.
    def __init__(self, sock: socket.socket, connection: Paced) -> None:
        self._sock, self._connection = sock, connection

    def makefile(self, mode: str):
        raw = self._sock.makefile(mode, buffering=0)
        return io.BufferedReader(PacedReader(raw, self._connection))


class InternalAddressRefused(ConnectionError):
    """A connection to an internal network address while those are not allowed; a
    subclass's MESSAGE says which server it was, for people."""

    MESSAGE = (
        "The server is on an internal network address, and connecting to internal mail "
        "servers is turned off; an administrator can allow it with the system setting "
        "AllowInternalMailServers."
    )


def refused_internal(error: BaseException | None) -> bool:
    """Whether a guarded adapter stopped the connection; requests and the libraries
    above it wrap the exception, sometimes only as text (its class's repr: a proxy's
    reason phrase or a server's words are not taken for it)."""
    return any(
        isinstance(link, InternalAddressRefused) or _REFUSAL_REPR.search(str(link))
        for link in _chain(error)
    )


_REFUSAL_REPR = re.compile(r"\b\w*AddressRefused\(")


def _chain(error: BaseException | None):
    """`error` and what it was raised from, down to the first socket or HTTP error (the
    one that happened): that one's own context is whatever an outer `except` was
    handling when the request was made, which says nothing of this request."""
    import requests

    seen = 0
    while error is not None and seen < 10:
        yield error
        leaf = isinstance(error, OSError | http.client.HTTPException) and not isinstance(
            error, requests.RequestException
        )
        if leaf or (error.__cause__ is None and error.__suppress_context__):
            return
        error, seen = error.__cause__ or error.__context__, seen + 1


def _proxy_would_not_connect(link: BaseException) -> bool:
    """Whether urllib3's ProxyError `link` is for a connection the proxy never opened.
    urllib3 says ProxyError for any failure on a proxied connection it finds closed by
    then, and http.client closes it on a reset or a hang-up after the request went out:
    those may have been sent."""
    from urllib3.exceptions import ConnectTimeoutError

    original = link.original_error
    return (
        isinstance(original, ConnectTimeoutError)  # NewConnectionError is one
        or str(original).startswith("Tunnel connection failed")
        or isinstance(original, InternalAddressRefused)
    )


def never_sent(error: BaseException | None) -> bool:
    """Whether a failed request never left: no connection to the server was made, or
    the proxy would not open one. A request sent on a new connection fails so when the
    server is down or the proxy refuses, which must not read "may have been sent"."""
    from requests.exceptions import ConnectTimeout
    from urllib3.exceptions import NewConnectionError
    from urllib3.exceptions import ProxyError as Urllib3ProxyError

    for link in _chain(error):
        if isinstance(link, Urllib3ProxyError):
            return _proxy_would_not_connect(link)
        if isinstance(link, ConnectTimeout | NewConnectionError | InternalAddressRefused):
            return True
    return False


def proxy_refusal(error: BaseException | None) -> str | None:
    """What the environment's proxy said when it would not open a connection, if that is
    what stopped a request: its status line (a 407 wants credentials in HTTPS_PROXY, a
    403 is its policy), or that it could not be reached. None for a connection that
    broke once open, and for the app's own internal-address refusal."""
    from urllib3.exceptions import ProxyError as Urllib3ProxyError

    if refused_internal(error):
        return None
    for link in _chain(error):
        if isinstance(link, Urllib3ProxyError):
            if not _proxy_would_not_connect(link):
                return None
            said = str(link.original_error)
            if not said.startswith("Tunnel connection failed: "):
                return "the proxy could not be reached"
            said = said.removeprefix("Tunnel connection failed: ")[:80]
            return f"the proxy answered {said}" if said[:1].isdigit() else said
    return None


def through_proxy(service: str, refusal: str) -> str:
    """What people read when the environment's proxy would not connect them: `service`
    could not be reached, `refusal` (proxy_refusal's words) why, and who fixes it."""
    return (
        f"{service} could not be reached through the proxy this app is set up with "
        f"({refusal}). Ask an administrator to check HTTPS_PROXY."
    )


def untrusted_certificate(error: BaseException | None) -> str | None:
    """Why the server's certificate was not trusted (OpenSSL's words), if that is what
    stopped a connection; requests, urllib3 and the libraries above them wrap the
    ssl.SSLCertVerificationError a few levels down."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, ssl.SSLCertVerificationError):
            return error.verify_message or str(error)
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


class Cancellable:
    """The HTTP connections one piece of work opens, so that another thread can cut them
    when the work runs out of time: a server that answers a byte at a time never trips a
    socket's timeout (that is per read), and the thread waiting on it cannot be stopped
    from outside, only its sockets. The internal-address rule is read once, by whoever
    makes the scope, so that the work's thread needs no database connection of its own."""

    def __init__(self, *, allow_internal: bool) -> None:
        self.allow_internal = allow_internal
        self.cancelled = False
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def add(self, sock) -> None:
        sock = socket_of(sock)
        with self._lock:
            if self.cancelled:
                sock.close()
                raise TimeoutError("the work this connection was for ran out of time")
            self._sockets.add(sock)

    def cancel(self) -> None:
        """Refuse new connections and end those open: a read waiting on one returns."""
        with self._lock:
            self.cancelled = True
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            # socket.socket's own shutdown: an SSLSocket's would also drop its TLS
            # object under the thread still reading from it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


_scope = threading.local()


def current_scope() -> Cancellable | None:
    return getattr(_scope, "current", None)


@contextlib.contextmanager
def connections_of(scope: Cancellable):
    """Connections opened by a guarded adapter on this thread belong to `scope`."""
    outer = current_scope()
    _scope.current = scope
    try:
        yield scope
    finally:
        _scope.current = outer


@functools.cache
def _pools(refusal: type[InternalAddressRefused] | None) -> dict[str, type]:
    """urllib3's pool classes by scheme, their connections paced and, with `refusal`,
    held to the internal-address rule."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def internal_allowed() -> bool:
        scope = current_scope()
        allowed = scope.allow_internal if scope else None
        return internal_mail_servers_allowed() if allowed is None else allowed

    def checked(sock, *, proxied: bool, target: str | None):
        """`sock` connected to the server itself, or to a proxy (`proxied`) on its way
        to `target`, the tunnel's host name (None: plain HTTP, whose requests each name
        their server and are checked in `request`)."""
        if not proxied:
            refused = net.is_internal(sock.getpeername()[0])
        else:
            # The proxy is the administrator's (the environment names it), whatever its
            # address; the server behind it is held to the rule by its name as this
            # machine resolves it. A name only the proxy can resolve is left to the
            # proxy's own rules: the socket's peer, checked on direct connections
            # whatever DNS said, is the proxy here.
            refused = target is not None and _resolves_internal(target)
        if refused and not internal_allowed():
            sock.close()
            raise refusal(refusal.MESSAGE)
        scope = current_scope()
        if scope is not None:
            scope.add(sock)
        return sock

    def waiting(connection) -> None:
        # A connection from the pool, opened before the scope, is cut as well.
        scope = current_scope()
        if scope is not None and connection.sock is not None:
            scope.add(connection.sock)

    def guarded(base: type) -> type:
        class GuardedConnection(_pacing(base)):
            def _new_conn(self):
                # Through a proxy: a tunnel's server is known before the CONNECT goes
                # out; a plain-HTTP request names its server in its URL (`request`).
                proxied = getattr(self, "proxy", None) is not None
                return checked(super()._new_conn(), proxied=proxied, target=self._tunnel_host)

            def request(self, method, url, *args, **kwargs):
                if getattr(self, "proxy", None) is not None and not self._tunnel_host:
                    host = urllib.parse.urlsplit(url).hostname
                    if host and _resolves_internal(host) and not internal_allowed():
                        raise refusal(refusal.MESSAGE)
                return super().request(method, url, *args, **kwargs)

            def getresponse(self, *args, **kwargs):
                waiting(self)
                return super().getresponse(*args, **kwargs)

        return GuardedConnection

    made = guarded if refusal is not None else _pacing

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = made(HTTPConnection)

    class HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = made(HTTPSConnection)

    return {"http": HTTPPool, "https": HTTPSPool}


_resolve = net.resolve  # a test names a public server through it


def _resolves_internal(host: str) -> bool:
    """Whether a server's name (or address) is, or resolves to, an internal address; a
    name this machine cannot resolve in time is not (only the proxy knows it)."""
    try:
        return net.is_internal(host.strip("[]"))
    except ValueError:
        pass  # a name, not an address
    try:
        found = _resolve(host, 0, settings.MAIL_CONNECT_TIMEOUT)
    except (OSError, UnicodeError):
        return False
    return any(net.is_internal(address[0]) for address in found)


@functools.cache
def guarded_adapter(refusal: type[InternalAddressRefused]) -> type[MailTrustAdapter]:
    """A MailTrustAdapter that applies the internal-address rule to every connection it
    opens, checked on the socket itself once connected (so a name that resolves
    differently the second time, or a redirect, gains nothing), before any request or
    credential is sent; through a proxy, on the server's name (`_pools`)."""

    class GuardedTrustAdapter(MailTrustAdapter):
        pass

    GuardedTrustAdapter.refusal = refusal
    return GuardedTrustAdapter
