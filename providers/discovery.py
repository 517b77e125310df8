"""Which provider serves an email address.

Steps, in order, each time-boxed, the whole call bounded:
1. the "Email providers domains" lookup table, for the domain and then the domains it
   belongs to, up to its registrable domain (public suffix list: never "co.uk");
2. the Thunderbird ISPDB over HTTPS (`<base>/<domain>`), for the same domains;
3. the domain's own autoconfig over HTTPS;
4. the domain's MX records, matched against known providers and the hosted-mail
   platform table (providers/platforms.yaml); a mail-security gateway is named as one
   and, with the SPF record's hints offered as suggestions, discovery goes on;
5. Exchange autodiscover by DNS: the CNAME of autodiscover.<domain>, then its HTTPS
   autodiscover (JSON, then POX) and the `_autodiscover._tcp` SRV record's server.
A provider found by steps 2-5 is saved with its domain, so the next lookup is step 1.
Discovery reads configuration documents and DNS only: it never contacts a mail
server and never sees a password (autodiscover is asked without one). Each trace
line says in plain words what a step found, with the technical detail in brackets.
"""

import base64
import contextlib
import http.client
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urljoin, urlsplit
from xml.sax.saxutils import escape

import dns.exception
import dns.resolver
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError
from requests.utils import get_environ_proxies, select_proxy

from mailsetup import net

from .addresses import (
    Address,
    AddressError,
    normalize_address,
    parent_domains,
    registrable_domain,
)
from .ispdb import ClientConfigError, parse_client_config
from .models import EmailProvider, ProviderDomain, Source
from .platforms import GATEWAY, PROVIDER, SERVERS, UNSUPPORTED, Platform, platforms
from .services import (
    UnsupportedProvider,
    provider_domain_remember,
    provider_exchange_discovered,
    provider_for_platform,
    provider_import_config,
)

MAX_REDIRECTS = 3
USER_AGENT = "mailsetup-discovery/1"
XML = "application/xml, text/xml"


class FetchError(Exception):
    """A configuration document could not be fetched; str() is for the trace."""

    def __init__(self, message: str, *, not_found: bool = False, status: int | None = None):
        super().__init__(message)
        self.not_found = not_found
        # The HTTP status when the server answered; None when it could not be reached.
        self.status = status


# Names only a company's own network resolves (RFC 6762, RFC 8375, ICANN's .internal,
# and the endings companies commonly use inside).
PRIVATE_NAME_ENDINGS = (
    ".local", ".localdomain", ".internal", ".lan", ".home.arpa", ".corp", ".home",
    ".intranet", ".private",
)  # fmt: skip

# Characters kept of a line of the discovery trace.
TRACE_LINE = 300


class StepTimeout(FetchError):
    pass


def _system_resolve(host: str, port: int, timeout: float) -> list[tuple]:
    try:
        return net.resolve(host, port, timeout)
    except TimeoutError:
        raise StepTimeout(f"looking up {host} took longer than {timeout:.1f} s") from None
    except (socket.gaierror, UnicodeError):
        raise FetchError(f"{host} does not resolve", not_found=True) from None


class HttpsFetcher:
    """GET over verified HTTPS, bounded in time and size.

    `resolve` maps (host, port, timeout) to socket addresses; tests pass one that
    points test host names at loopback while TLS still verifies the real name.
    Internal addresses are refused unless `allow_internal`: the host names come from
    what users type, and must not let anyone probe the company's own network.
    `proxy_for` maps a URL to the http:// proxy to tunnel through, or None: by default
    the environment's (HTTPS_PROXY, NO_PROXY), as exchangelib and the OAuth clients use.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Callable[[str, int, float], list[tuple]] | None = None,
        max_bytes: int = 512 * 1024,
        allow_internal: bool = False,
        proxy_for: Callable[[str], str | None] | None = None,
    ):
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.resolve = resolve or _system_resolve
        self.max_bytes = max_bytes
        self.allow_internal = allow_internal
        self.proxy_for = proxy_for or _environ_proxy

    def get(self, url: str, *, timeout: float, accept: str = XML) -> bytes:
        return self.request("GET", url, timeout=timeout, accept=accept)

    def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        body: bytes = b"",
        content_type: str = "",
        accept: str = XML,
    ) -> bytes:
        """The body of a 200 answer, following up to MAX_REDIRECTS redirects (the same
        request again, as autodiscover clients do), each over verified HTTPS."""
        deadline = time.monotonic() + timeout
        for _ in range(MAX_REDIRECTS + 1):
            try:
                parts = urlsplit(url)
                port = parts.port or 443
            except ValueError:
                raise FetchError(f"refused to fetch {url!r}: not a valid address") from None
            if parts.scheme != "https" or not parts.hostname:
                raise FetchError(f"refused to fetch {url}: only https:// addresses are used")
            head = {"Accept": accept}
            if method != "GET":
                head |= {"Content-Type": content_type, "Content-Length": str(len(body))}
            status, location, answer = self._get_once(parts, port, deadline, method, head, body)
            if status in (301, 302, 303, 307, 308) and location:
                try:
                    url = urljoin(url, location)
                except ValueError:
                    raise FetchError(f"{url} redirected to an invalid address") from None
                continue
            if status == 404 or status == 410:
                raise FetchError(
                    f"{url} answered {status} (not listed)", not_found=True, status=status
                )
            if status == 401:
                raise FetchError(f"{url} asks for a password (HTTP 401)", status=status)
            if status != 200:
                raise FetchError(f"{url} answered HTTP {status}", status=status)
            return answer
        raise FetchError(f"{url} redirected more than {MAX_REDIRECTS} times")

    def _addresses(self, host: str, port: int, deadline: float) -> list[tuple]:
        addresses = self.resolve(host, port, _remaining(deadline, host))
        if not addresses:
            raise FetchError(f"{host} does not resolve", not_found=True)
        if not self.allow_internal:
            addresses = [a for a in addresses if not net.is_internal(a[0])]
            if not addresses:
                raise FetchError(f"{host} is on an internal network address; not contacted")
        return addresses

    def _checked_behind_proxy(self, host: str, port: int, deadline: float) -> None:
        """The internal-address rule for a server reached through a proxy: by its name
        as this machine resolves it, since the proxy makes the connection. A name only
        the proxy can resolve is left to the proxy's own rules."""
        if self.allow_internal:
            return
        try:
            addresses = self.resolve(host, port, _remaining(deadline, host))
        except StepTimeout:
            raise
        except FetchError as error:
            if error.not_found:
                return
            raise
        if any(net.is_internal(a[0]) for a in addresses):
            raise FetchError(f"{host} is on an internal network address; not contacted")

    @staticmethod
    def _proxy_addresses(proxy, deadline: float) -> list[tuple]:
        """The proxy's addresses, looked up within the step's time (a name the system's
        resolver hangs on would hold the step past its box). The proxy is the
        administrator's, whatever its address."""
        name = f"the proxy {_bracketed(proxy.hostname)}"
        try:
            return net.resolve(proxy.hostname, proxy.port or 80, _remaining(deadline, name))
        except TimeoutError:
            raise StepTimeout(f"looking up {name} took too long") from None
        except (OSError, UnicodeError):
            raise FetchError(f"{name} (HTTPS_PROXY) does not resolve") from None

    def _tunnel(self, sock: socket.socket, proxy, host: str, port: int) -> None:
        """CONNECT through the proxy `sock` is connected to; raises FetchError unless it
        opens the tunnel."""
        target = f"{_bracketed(host)}:{port}"
        lines = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if proxy.username is not None:
            who = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            lines += f"Proxy-Authorization: Basic {base64.b64encode(who.encode()).decode()}\r\n"
        sock.sendall((lines + "\r\n").encode("ascii"))
        # Nothing of the server's comes before our TLS hello: the reader takes only
        # the proxy's answer (bounded by the step's watchdog).
        answer = http.client.HTTPResponse(sock, method="CONNECT")
        try:
            answer.begin()
        finally:
            answer.close()
        if not 200 <= answer.status < 300:
            raise FetchError(
                f"the proxy did not open a tunnel to {host} (HTTP {answer.status} {answer.reason})"
            )

    def _connect(self, addresses: list[tuple], host: str, deadline: float) -> socket.socket:
        error: OSError | None = None
        for sockaddr in addresses:
            try:
                return socket.create_connection(sockaddr[:2], timeout=_remaining(deadline, host))
            except OSError as caught:
                error = caught
        raise error  # type: ignore[misc]

    def _get_once(
        self, parts, port: int, deadline: float, method: str, head: dict, body: bytes
    ) -> tuple[int, str, bytes]:
        host = parts.hostname
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
        proxy = _proxy_parts(self.proxy_for(f"https://{_bracketed(host)}:{port}/"))
        if proxy is None:
            addresses = self._addresses(host, port, deadline)
        else:
            self._checked_behind_proxy(host, port, deadline)
            addresses = self._proxy_addresses(proxy, deadline)
        sock = watchdog = None
        # The watchdog must reach whichever socket object is current: wrapping for TLS
        # hands the connection over to a new object.
        current: list[socket.socket] = []
        try:
            try:
                sock = self._connect(addresses, host, deadline)
            except OSError as error:
                if proxy is None or isinstance(error, TimeoutError):
                    raise
                raise FetchError(
                    f"the proxy {_bracketed(proxy.hostname)}:{proxy.port or 80} could not be "
                    f"reached ({type(error).__name__})"
                ) from None
            current.append(sock)
            # Per-read timeouts alone would let a server that drips a byte now and
            # then stretch the step without end; the watchdog ends it at the deadline.
            watchdog = threading.Timer(_remaining(deadline, host), _shut, args=(current,))
            watchdog.daemon = True
            watchdog.start()
            if proxy is not None:
                self._tunnel(sock, proxy, host, port)
            sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
            current.append(sock)
            lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
            request = (
                f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
                f"{lines}Connection: close\r\n\r\n"
            )
            sock.sendall(request.encode("ascii") + body)
            response = http.client.HTTPResponse(sock)
            response.begin()
            location = response.getheader("Location") or ""
            received = bytearray()
            while chunk := response.read1(16384):
                received += chunk
                if len(received) > self.max_bytes:
                    raise FetchError(f"{host} sent more than {self.max_bytes} bytes")
            if time.monotonic() >= deadline:
                raise TimeoutError
            return response.status, location, bytes(received)
        except ssl.SSLCertVerificationError as error:
            raise FetchError(
                f"{host} has an untrusted certificate ({error.verify_message})"
            ) from None
        except (OSError, http.client.HTTPException, ValueError) as error:
            if isinstance(error, TimeoutError) or time.monotonic() >= deadline:
                raise StepTimeout(f"{host} did not answer in time") from None
            if isinstance(error, ssl.SSLError):
                raise FetchError(f"TLS with {host} failed ({error.reason})") from None
            if isinstance(error, ConnectionRefusedError):
                raise FetchError(f"{host} refused the connection", not_found=True) from None
            raise FetchError(f"{host}: {type(error).__name__}: {error}") from None
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if sock is not None:
                sock.close()


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _proxy_parts(proxy: str | None):
    """The proxy to tunnel through, as urlsplit's parts; None for none. A name without
    a scheme is an http:// proxy (as requests reads it); an https:// or SOCKS proxy is
    one discovery cannot speak to, which is said rather than gone around."""
    if not proxy:
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    try:
        parts = urlsplit(proxy)
        parts.port  # noqa: B018 (checked here: a bad one raises ValueError)
    except ValueError:
        raise FetchError("the proxy named by HTTPS_PROXY is not a valid address") from None
    if parts.scheme.lower() != "http" or not parts.hostname:
        raise FetchError(
            f"discovery tunnels only through an http:// proxy, not {parts.scheme}:// (HTTPS_PROXY)"
        )
    return parts


def _environ_proxy(url: str) -> str | None:
    # requests' own choice, as exchangelib and the EWS session's look-up make it.
    return select_proxy(url, get_environ_proxies(url))


def _shut(current: list[socket.socket]) -> None:
    with contextlib.suppress(OSError):
        current[-1].shutdown(socket.SHUT_RDWR)


def _remaining(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise StepTimeout(f"{what} did not answer in time")
    return left


class DnsLookup:
    """The DNS records discovery reads (MX, TXT, SRV, CNAME), each query bounded in
    time; a name without the record gives an empty answer, not an error."""

    MAX_RECORDS = 20

    def __init__(self, resolver: dns.resolver.Resolver | None = None):
        self.resolver = resolver

    def _answer(self, name: str, rdtype: str, timeout: float):
        try:
            resolver = self.resolver or dns.resolver.get_default_resolver()
            return resolver.resolve(name, rdtype, lifetime=timeout)
        except dns.exception.Timeout:
            raise StepTimeout(f"the DNS query for {rdtype} of {name} timed out") from None
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.DNSException as error:
            raise FetchError(f"the DNS query for {rdtype} of {name} failed ({error})") from None

    def mx(self, domain: str, timeout: float) -> list[str]:
        """MX hosts of a domain, most preferred first; [] when it has none."""
        records = sorted(self._answer(domain, "MX", timeout), key=lambda r: r.preference)
        # A null MX (RFC 7505, exchange ".") comes back as "": the domain takes no mail.
        return [r.exchange.to_text().rstrip(".").lower() for r in records][: self.MAX_RECORDS]

    def txt(self, name: str, timeout: float) -> list[str]:
        """Each TXT record as one string (a long SPF record comes in several pieces)."""
        records = list(self._answer(name, "TXT", timeout))[: self.MAX_RECORDS]
        return [b"".join(r.strings)[:4096].decode("utf-8", "replace") for r in records]

    def srv(self, name: str, timeout: float) -> list[tuple[str, int]]:
        """(host, port) of SRV records, by priority, then heavier weight first."""
        records = sorted(self._answer(name, "SRV", timeout), key=lambda r: (r.priority, -r.weight))
        targets = [(r.target.to_text().rstrip(".").lower(), r.port) for r in records]
        # A target of "." says the service is decidedly not offered (RFC 2782).
        return [(host, port) for host, port in targets if host][: self.MAX_RECORDS]

    def cname(self, name: str, timeout: float) -> str | None:
        records = list(self._answer(name, "CNAME", timeout))
        return records[0].target.to_text().rstrip(".").lower() if records else None


class DnsMxResolver(DnsLookup):
    """MX hosts of a domain as a callable, (domain, timeout) -> hosts."""

    def __call__(self, domain: str, timeout: float) -> list[str]:
        return self.mx(domain, timeout)


FOUND_VIA = {
    "table": "found in Email providers domains",
    "ispdb": "found in ISPDB",
    "autoconfig": "found in the domain's autoconfig",
    "mx": "found via MX",
    "autodiscover": "found by Exchange autodiscover",
}

# The step names of the trace, as users read them.
TABLE = "Email providers domains"
ISPDB = "Thunderbird's provider database (ISPDB)"
AUTOCONFIG = "Your domain's settings file (autoconfig)"
MX = "Your domain's MX records"
SPF = "Your domain's SPF record"
AUTODISCOVER = "Exchange autodiscover"


@dataclass
class Suggestion:
    """A provider a hint (the SPF record) points to: shown, confirmed by the user."""

    provider: EmailProvider
    platform: str
    evidence: str

    @property
    def text(self) -> str:
        return (
            f"Your domain's SPF record lets {self.platform} send its email ({self.evidence}), "
            f"so your mailbox may well be at {self.platform}."
        )


@dataclass
class DiscoveryResult:
    address: Address
    provider: EmailProvider | None = None
    # The step that answered ("table", "ispdb", "autoconfig", "mx", "autodiscover"), and
    # the source recorded on the domain's entry (for a table hit, where it came from).
    step: str | None = None
    source: str | None = None
    # How the provider was found, in one sentence for the user.
    reason: str = ""
    candidates: list[EmailProvider] = field(default_factory=list)
    # Hints the user may confirm; never chosen by discovery itself.
    suggestions: list[Suggestion] = field(default_factory=list)
    # A platform the domain's mail is at that this app cannot connect to, and why.
    unsupported: str = ""
    trace: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return self.provider is not None

    @property
    def found_via(self) -> str:
        """How the provider was found, for the wizard: "found via MX: Google"."""
        if self.provider is None:
            return "not found"
        text = FOUND_VIA[self.step]
        return f"{text}: {self.provider.name}" if self.step == "mx" else text


@dataclass
class _MxFinding:
    host: str
    kind: str  # provider, gateway, unsupported, unknown
    provider: EmailProvider | None = None
    platform: Platform | None = None
    why: str = ""
    # For a card matched by its own MX endings or domains: how ("ends with zoho.com").
    detail: str = ""


class Discoverer:
    def __init__(
        self,
        *,
        fetcher: HttpsFetcher | None = None,
        dns: DnsLookup | None = None,
        mx_resolver: Callable[[str, float], list[str]] | None = None,
        ispdb_url: str | None = None,
        step_timeout: float | None = None,
        total_timeout: float | None = None,
        use_ispdb: bool | None = None,
        use_autoconfig: bool | None = None,
        use_mx: bool | None = None,
        use_autodiscover: bool | None = None,
    ):
        self.fetcher = fetcher or HttpsFetcher()
        self.dns = dns or DnsLookup()
        self.mx_resolver = mx_resolver or self.dns.mx
        self.ispdb_url = ispdb_url or settings.DISCOVERY_ISPDB_URL
        if not self.ispdb_url.endswith("/"):
            self.ispdb_url += "/"
        self.step_timeout = step_timeout or settings.DISCOVERY_STEP_TIMEOUT
        self.total_timeout = total_timeout or settings.DISCOVERY_TOTAL_TIMEOUT
        self.use_ispdb = settings.DISCOVERY_USE_ISPDB if use_ispdb is None else use_ispdb
        self.use_autoconfig = (
            settings.DISCOVERY_USE_AUTOCONFIG if use_autoconfig is None else use_autoconfig
        )
        self.use_mx = settings.DISCOVERY_USE_MX if use_mx is None else use_mx
        self.use_autodiscover = (
            settings.DISCOVERY_USE_AUTODISCOVER if use_autodiscover is None else use_autodiscover
        )

    def discover(self, address: str | Address) -> DiscoveryResult:
        """Raises AddressError for an unusable address; never for network trouble. The
        trace's lines are cut to TRACE_LINE characters: they quote what servers said
        (a redirect's address, an error), which is kept in the session and shown."""
        result = self._discover(address)
        result.trace = [
            line if len(line) <= TRACE_LINE else line[: TRACE_LINE - 1] + "…"
            for line in result.trace
        ]
        return result

    def _discover(self, address: str | Address) -> DiscoveryResult:
        if not isinstance(address, Address):
            address = normalize_address(address)
        result = DiscoveryResult(address=address)
        self._deadline = time.monotonic() + self.total_timeout
        domain = address.domain
        lineage = [domain, *parent_domains(domain)]

        if self._step_table(lineage, result):
            return result
        steps = []
        if self.use_ispdb:
            steps.append(lambda: self._step_ispdb(lineage, result))
        if self.use_autoconfig:
            steps.append(lambda: self._step_autoconfig(domain, result))
        if self.use_mx:
            steps.append(lambda: self._step_mx(domain, result))
        if self.use_autodiscover:
            steps.append(lambda: self._step_autodiscover(domain, result))
        for step in steps:
            if self._left() <= 0:
                result.trace.append("Stopped: discovery used up its time.")
                break
            if step():
                break
        if result.found:
            return result
        if result.unsupported:
            result.trace.append(
                "No provider found that this app can connect to: your domain's mail is at a "
                "service that does not allow it (see above)."
            )
        elif result.suggestions:
            names = ", ".join(s.provider.name for s in result.suggestions)
            result.trace.append(
                f"No provider found for certain: please confirm the suggestion ({names}) "
                "or choose your provider from the list."
            )
        else:
            result.trace.append("No provider found: please choose yours from the list.")
        return result

    def _left(self) -> float:
        return self._deadline - time.monotonic()

    def _timeout(self) -> float:
        return max(0.05, min(self.step_timeout, self._left()))

    def _found(
        self,
        result: DiscoveryResult,
        provider: EmailProvider,
        step: str,
        source: str,
        reason: str = "",
    ) -> bool:
        if not (provider.receive_enabled or provider.send_enabled):
            # Not offered in the wizard (accounts.selectors.providers_offered): its
            # sign-in step would be "not found". The next steps go on.
            result.trace.append(
                f"{provider.name} neither receives nor sends (both are off on its card): skipped."
            )
            return False
        result.provider = provider
        result.step = step
        result.source = source
        result.reason = reason
        if provider not in result.candidates:
            result.candidates.insert(0, provider)
        return True

    # -- 1. Email providers domains ------------------------------------------------

    def _step_table(self, lineage: list[str], result: DiscoveryResult) -> bool:
        domain = lineage[0]
        entries = {
            e.domain: e
            for e in ProviderDomain.objects.select_related("provider").filter(domain__in=lineage)
        }
        for name in lineage:
            entry = entries.get(name)
            if entry is None:
                continue
            if name == domain:
                reason = f"{domain} is served by {entry.provider.name}."
            else:
                reason = (
                    f"{name}, the domain {domain} belongs to, is served by {entry.provider.name}."
                )
            result.trace.append(f"{TABLE}: {reason}")
            return self._found(result, entry.provider, "table", entry.source, reason)
        parents = f" or the domains it belongs to ({', '.join(lineage[1:])})" if lineage[1:] else ""
        result.trace.append(f"{TABLE}: this app's list has no entry for {domain}{parents}.")
        return False

    # -- 2. ISPDB and 3. autoconfig --------------------------------------------------

    def _fetch_config(self, url: str, label: str, name: str, result: DiscoveryResult):
        """The clientConfig at url, or None; the trace says why not. Raises StepTimeout
        so that a walk over several addresses stops at an unresponsive server."""
        try:
            body = self.fetcher.get(url, timeout=self._timeout())
        except FetchError as error:
            what = "no entry for" if error.not_found else "could not be asked about"
            result.trace.append(f"{label}: {what} {name} ({error}).")
            if isinstance(error, StepTimeout):
                raise
            return None
        try:
            return parse_client_config(body)
        except ClientConfigError as error:
            result.trace.append(f"{label}: {url} is not a usable settings file: {error}.")
            return None

    def _save(self, config, *, source, domain, result, label, config_id=None, only=None):
        try:
            outcome = provider_import_config(
                config=config, source=source, only_domains=only, config_id=config_id
            )
        except UnsupportedProvider as error:
            result.trace.append(f"{label}: {error}")
            return None
        except (DataError, IntegrityError) as error:
            # A file no card can hold (its checks missed something): the step fails,
            # the wizard goes on to the next one, not a 500.
            result.trace.append(f"{label}: could not be saved ({type(error).__name__})")
            return None
        # The document may not list the domain we asked about (ISPDB answers for some
        # domains by their MX); remember it all the same, but not as listed by the file,
        # or the next import of that file would drop it as no longer listed.
        listed = only is not None or domain in config.domains
        provider_domain_remember(
            domain=domain, provider=outcome.provider, source=source if listed else Source.MX
        )
        return outcome.provider

    def _step_ispdb(self, lineage: list[str], result: DiscoveryResult) -> bool:
        domain = lineage[0]
        for name in lineage:
            if self._left() <= 0:
                return False
            url = self.ispdb_url + name
            try:
                config = self._fetch_config(url, ISPDB, name, result)
            except StepTimeout:
                return False
            if config is None:
                continue
            provider = self._save(
                config, source=Source.ISPDB, domain=name, result=result, label=ISPDB
            )
            if provider is None:
                return False
            if name == domain:
                reason = f"{domain} is served by {provider.name} ({url})."
            else:
                reason = (
                    f"{name}, the domain {domain} belongs to, is served by {provider.name} ({url})."
                )
            result.trace.append(f"{ISPDB}: {reason}")
            return self._found(result, provider, "ispdb", Source.ISPDB, reason)
        return False

    def _step_autoconfig(self, domain: str, result: DiscoveryResult) -> bool:
        urls = [
            f"https://autoconfig.{domain}/mail/config-v1.1.xml",
            f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml",
        ]
        for url in urls:
            if self._left() <= 0:
                return False
            with contextlib.suppress(StepTimeout):
                config = self._fetch_config(url, AUTOCONFIG, url, result)
                if config is None:
                    continue
                # A domain's own file speaks for that domain only, under an id of its own.
                provider = self._save(
                    config,
                    source=Source.AUTOCONFIG,
                    domain=domain,
                    result=result,
                    label=AUTOCONFIG,
                    config_id=f"autoconfig:{domain}",
                    only=[domain],
                )
                if provider is not None:
                    reason = f"{url} says your mail is served by {provider.name}."
                    result.trace.append(f"{AUTOCONFIG}: {reason}")
                    return self._found(result, provider, "autoconfig", Source.AUTOCONFIG, reason)
        return False

    # -- 4. MX, the platform table, SPF hints -------------------------------------------

    def _step_mx(self, domain: str, result: DiscoveryResult) -> bool:
        try:
            hosts = self.mx_resolver(domain, self._timeout())
        except FetchError as error:
            result.trace.append(f"{MX}: could not be read ({error}).")
            return False
        if not hosts:
            result.trace.append(
                f"{MX}: {domain} has no MX records, so they tell nothing about its provider."
            )
            return False
        if not any(hosts):
            result.trace.append(f"{MX}: {domain} has a null MX record: it receives no email.")
            return False
        hosts = [host for host in hosts if host]
        findings = [self._mx_finding(host) for host in dict.fromkeys(hosts)]
        providers = [f for f in findings if f.kind == PROVIDER]
        for finding in providers:
            if finding.provider not in result.candidates:
                result.candidates.append(finding.provider)
        for finding in findings:
            if finding.kind == GATEWAY and finding.platform is not None:
                self._trace_gateway(finding, result)
            elif finding.kind == SERVERS:
                result.trace.append(
                    f"{MX}: your domain's mail goes to {finding.host}, a server rented at "
                    f"{finding.platform.name}: the company's own, not {finding.platform.name}'s "
                    "mail service, so discovery looks further."
                )
        if providers:
            first = providers[0]
            which = f", which {first.detail}" if first.detail else ""
            reason = (
                f"Your domain's mail is handled by {first.why} (its MX record points to "
                f"{first.host}{which})."
            )
            result.trace.append(f"{MX}: {reason}")
            provider_domain_remember(domain=domain, provider=first.provider, source=Source.MX)
            return self._found(result, first.provider, "mx", Source.MX, reason)
        unsupported = next((f for f in findings if f.kind == UNSUPPORTED), None)
        if unsupported is not None:
            platform = unsupported.platform
            result.unsupported = (
                f"Your domain's mail is handled by {platform.name}, which this app cannot "
                f"connect to: {platform.reason}"
            )
            result.trace.append(
                f"{MX}: {result.unsupported} (its MX record points to {unsupported.host}; "
                f"{platform.source})"
            )
            return True
        unknown = [f.host for f in findings if f.kind == "unknown"]
        if unknown and self._mx_host_in_ispdb(domain, unknown, result):
            return True
        if unknown:
            result.trace.append(
                f"{MX}: your domain's mail goes to {', '.join(unknown)}, which no provider "
                "this app knows runs."
            )
        if any(f.kind == GATEWAY for f in findings):
            self._spf_hints(domain, result)
        return False

    def _mx_finding(self, host: str) -> _MxFinding:
        """Who runs an MX host: a provider card an administrator gave that MX ending
        first (their word overrides), then the platform table, then the other cards'
        MX endings and known domains."""
        matches = _mx_matches(host)
        admin = [(p, why) for p, why in matches if p.source == Source.ADMIN]
        if admin:
            provider, detail = admin[0]
            return _MxFinding(host, PROVIDER, provider=provider, why=provider.name, detail=detail)
        match = platforms().match_mx(host)
        if match is not None:
            platform = match.platform
            if platform.kind == PROVIDER:
                provider = provider_for_platform(platform=platform)
                return _MxFinding(host, PROVIDER, provider, platform, why=platform.name)
            return _MxFinding(host, platform.kind, platform=platform)
        if matches:
            provider, detail = matches[0]
            return _MxFinding(host, PROVIDER, provider=provider, why=provider.name, detail=detail)
        return _MxFinding(host, "unknown")

    def _trace_gateway(self, finding: _MxFinding, result: DiscoveryResult) -> None:
        line = (
            f"{MX}: your domain's mail first passes through {finding.platform.name}, a "
            f"mail-security service (its MX record points to {finding.host}); that does "
            "not tell where the mailboxes are, so discovery looks further."
        )
        if not any(f"through {finding.platform.name}," in seen for seen in result.trace):
            result.trace.append(line)

    def _mx_host_in_ispdb(self, domain: str, hosts: list[str], result: DiscoveryResult) -> bool:
        """Thunderbird's last resort: ask ISPDB about the MX host's own domain."""
        bases = [base for host in hosts for base in _mx_host_domains(host)]
        for base in dict.fromkeys(bases):
            if not self.use_ispdb or self._left() <= 0:
                return False
            try:
                config = self._fetch_config(self.ispdb_url + base, ISPDB, base, result)
            except StepTimeout:
                return False
            if config is None:
                continue
            provider = self._save(
                config, source=Source.ISPDB, domain=base, result=result, label=ISPDB
            )
            if provider is None:
                continue
            host = next(h for h in hosts if h == base or h.endswith("." + base))
            reason = (
                f"Your domain's mail is handled by {provider.name} (its MX record points to "
                f"{host}, and ISPDB describes {base} as {provider.name})."
            )
            result.trace.append(f"{MX}: {reason}")
            if provider not in result.candidates:
                result.candidates.append(provider)
            provider_domain_remember(domain=domain, provider=provider, source=Source.MX)
            return self._found(result, provider, "mx", Source.MX, reason)
        return False

    def _spf_hints(self, domain: str, result: DiscoveryResult) -> None:
        """Providers the SPF record lets send for the domain: suggestions, never a choice."""
        if self._left() <= 0:
            return
        try:
            records = self.dns.txt(domain, self._timeout())
        except FetchError as error:
            result.trace.append(f"{SPF}: could not be read ({error}).")
            return
        spf = [r for r in records if r.lower().split(" ", 1)[0] == "v=spf1"]
        if not spf:
            result.trace.append(f"{SPF}: {domain} has none, so it gives no hint either.")
            return
        hinted = False
        for term in spf[0].split()[1:40]:
            name = _spf_target(term)
            platform = platforms().match_spf(name) if name else None
            if platform is None:
                continue
            hinted = True
            if platform.kind == PROVIDER:
                provider = provider_for_platform(platform=platform)
                if any(s.provider == provider for s in result.suggestions):
                    continue
                suggestion = Suggestion(provider, platform.name, term)
                result.suggestions.append(suggestion)
                result.trace.append(
                    f"{SPF}: it lets {platform.name} send your domain's email ({term}), so "
                    f"your mailbox may well be at {platform.name}. This is a suggestion for "
                    "you to confirm, not a choice."
                )
            elif platform.kind == UNSUPPORTED:
                result.trace.append(
                    f"{SPF}: it names {platform.name} ({term}), which this app cannot "
                    f"connect to: {platform.reason}"
                )
        if not hinted:
            result.trace.append(f"{SPF}: it names no email provider this app knows.")

    # -- 5. Exchange autodiscover ---------------------------------------------------------

    def _step_autodiscover(self, domain: str, result: DiscoveryResult) -> bool:
        name = f"autodiscover.{domain}"
        try:
            alias = self.dns.cname(name, self._timeout())
        except FetchError as error:
            result.trace.append(f"{AUTODISCOVER}: {name} could not be looked up ({error}).")
            alias = None
        if alias:
            platform = platforms().match_autodiscover(alias)
            if platform is not None and platform.kind == PROVIDER:
                provider = provider_for_platform(platform=platform)
                reason = (
                    f"Your domain's mail is handled by {platform.name} ({name} points to "
                    f"{alias}, {platform.name}'s autodiscover service)."
                )
                result.trace.append(f"{AUTODISCOVER}: {reason}")
                provider_domain_remember(domain=domain, provider=provider, source=Source.AUTOCONFIG)
                return self._found(result, provider, "autodiscover", Source.AUTOCONFIG, reason)
        budget = [AUTODISCOVER_MAX_HOPS]
        found = self._autodiscover_at(name, 443, result.address.email, result, budget)
        if found is None and self._left() > 0:
            record = f"_autodiscover._tcp.{domain}"
            try:
                targets = self.dns.srv(record, self._timeout())
            except FetchError as error:
                result.trace.append(f"{AUTODISCOVER}: {record} could not be looked up ({error}).")
                targets = []
            if not targets and self._left() > 0:
                result.trace.append(f"{AUTODISCOVER}: {domain} has no {record} record.")
            for host, port in targets[:2]:
                if self._left() <= 0:
                    break
                result.trace.append(
                    f"{AUTODISCOVER}: the {record} record names the server {host} (port {port})."
                )
                found = self._autodiscover_at(host, port, result.address.email, result, budget)
                if found is not None:
                    break
        if found is None:
            return False
        ews_url, asked = found
        return self._exchange_found(domain, ews_url, asked, result)

    def _autodiscover_at(
        self, host: str, port: int, email: str, result: DiscoveryResult, budget: list[int]
    ) -> tuple[str, str] | None:
        """(EWS address, who said it) from one autodiscover server: JSON, then POX."""
        base = f"https://{host}" if port == 443 else f"https://{host}:{port}"
        mailbox = quote(email, safe="@")
        json_url = f"{base}/autodiscover/autodiscover.json/v1.0/{mailbox}?Protocol=EWS"
        try:
            body = self.fetcher.get(json_url, timeout=self._timeout(), accept=JSON)
        except FetchError as error:
            result.trace.append(f"{AUTODISCOVER}: {_why_not(error, host)}.")
            if error.status is None:
                return None  # Nobody there (or not in time): the POX address is there too.
        else:
            try:
                return _json_ews_url(body), host
            except ValueError as error:
                result.trace.append(f"{AUTODISCOVER}: {json_url} gave no server address ({error}).")
        if self._left() <= 0:
            return None
        pox_url = f"{base}/autodiscover/autodiscover.xml"
        return self._autodiscover_pox(pox_url, email, result, budget)

    def _autodiscover_pox(
        self, url: str, email: str, result: DiscoveryResult, budget: list[int]
    ) -> tuple[str, str] | None:
        while self._left() > 0:
            host = urlsplit(url).hostname or url
            try:
                body = self.fetcher.request(
                    "POST",
                    url,
                    timeout=self._timeout(),
                    body=_pox_request(email),
                    content_type="text/xml; charset=utf-8",
                )
                action, value = _pox_answer(body)
            except FetchError as error:
                result.trace.append(f"{AUTODISCOVER}: {_why_not(error, host)}.")
                return None
            except ValueError as error:
                result.trace.append(f"{AUTODISCOVER}: {url} gave no usable answer ({error}).")
                return None
            if action == "settings":
                return value, host
            budget[0] -= 1
            if budget[0] < 0:
                result.trace.append(
                    f"{AUTODISCOVER}: stopped after {AUTODISCOVER_MAX_HOPS} redirects."
                )
                return None
            if action == "redirectUrl":
                result.trace.append(f"{AUTODISCOVER}: {host} sends discovery on to {value}.")
                url = value
                continue
            try:
                email = normalize_address(value).email
            except AddressError:
                result.trace.append(
                    f"{AUTODISCOVER}: {host} redirected to {value!r}, which is not an address."
                )
                return None
            domain = email.split("@", 1)[1]
            result.trace.append(f"{AUTODISCOVER}: {host} says the mailbox is known as {email}.")
            url = f"https://autodiscover.{domain}/autodiscover/autodiscover.xml"
        return None

    def _exchange_found(
        self, domain: str, ews_url: str, asked: str, result: DiscoveryResult
    ) -> bool:
        try:
            ews_url = _checked_ews_url(ews_url)
        except ValueError as error:
            shown = ews_url if len(ews_url) <= 100 else ews_url[:99] + "…"
            result.trace.append(f"{AUTODISCOVER}: {asked} named {shown!r}, {error}; not used.")
            return False
        host = urlsplit(ews_url).hostname
        platform = platforms().match_ews(host)
        if platform is not None and platform.kind == PROVIDER:
            provider = provider_for_platform(platform=platform)
            reason = (
                f"Your domain's mail is handled by {platform.name} (Exchange autodiscover at "
                f"{asked} named the server {host})."
            )
            provider_domain_remember(domain=domain, provider=provider, source=Source.AUTOCONFIG)
        else:
            try:
                provider = provider_exchange_discovered(domain=domain, ews_url=ews_url)
            except ValidationError as error:
                result.trace.append(f"{AUTODISCOVER}: {ews_url} cannot be used ({error}).")
                return False
            reason = (
                f"Your domain runs its own Microsoft Exchange server: autodiscover at {asked} "
                f"named its address, {ews_url}."
            )
        result.trace.append(f"{AUTODISCOVER}: {reason}")
        return self._found(result, provider, "autodiscover", Source.AUTOCONFIG, reason)


AUTODISCOVER_MAX_HOPS = 3
JSON = "application/json"
_POX_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
_POX_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


def _why_not(error: FetchError, host: str) -> str:
    if error.status == 401:
        return (
            f"{host} runs Exchange autodiscover but asks for a password before it names the "
            "server; discovery never sends one"
        )
    return str(error)


def _json_ews_url(body: bytes) -> str:
    """The EWS address of an autodiscover v1.0 JSON answer; ValueError says why not."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(answer, dict):
        raise ValueError("not a JSON object")
    url = answer.get("Url")
    if not isinstance(url, str) or not url:
        raise ValueError(str(answer.get("ErrorMessage") or "no Url")[:200])
    if str(answer.get("Protocol", "EWS")).upper() != "EWS":
        raise ValueError(f"protocol {answer.get('Protocol')!r}, not EWS")
    return url


def _pox_request(email: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="{_POX_REQUEST}">'
        f"<Request><EMailAddress>{escape(email)}</EMailAddress>"
        f"<AcceptableResponseSchema>{_POX_RESPONSE}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _child_text(element, name: str) -> str:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""


def _pox_answer(body: bytes) -> tuple[str, str]:
    """("settings", EWS address), ("redirectUrl", url) or ("redirectAddr", address) from a
    POX autodiscover answer; ValueError says why none."""
    try:
        root = ElementTree.fromstring(body)
    except (DefusedXmlException, ElementTree.ParseError) as error:
        raise ValueError(f"not usable XML ({error})") from None
    elements = list(root.iter())
    errors = [e for e in elements if _local(e.tag) == "Error"]
    accounts = [e for e in elements if _local(e.tag) == "Account"]
    if not accounts:
        message = _child_text(errors[0], "Message") if errors else ""
        raise ValueError(message[:200] or "no Account in the answer")
    account = accounts[0]
    action = _child_text(account, "Action")
    if action == "redirectUrl":
        return action, _child_text(account, "RedirectUrl")
    if action == "redirectAddr":
        return action, _child_text(account, "RedirectAddr")
    # External (EXPR) first: its address is the one reachable from outside the company.
    by_type = {}
    for protocol in account:
        if _local(protocol.tag) == "Protocol":
            url = _child_text(protocol, "EwsUrl")
            if url:
                by_type.setdefault(_child_text(protocol, "Type").upper(), url)
    # Internal addresses (EXCH, WEB) serve only under a name the internet knows:
    # "ex01.corp.local" would make a card that can never sign in, saved for the domain.
    # An answer naming only such an address returns it, to be refused with its reason.
    urls = [by_type[kind] for kind in ("EXPR", "EXCH", "WEB") if kind in by_type]
    for url in urls:
        if not _private_name(urlsplit(url).hostname or ""):
            return "settings", url
    if urls:
        return "settings", urls[0]
    raise ValueError("the answer names no EWS address")


def _private_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host.endswith(ending) or host == ending[1:] for ending in PRIVATE_NAME_ENDINGS)


_HOST_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _checked_ews_url(url: str) -> str:
    """An EWS address from an autodiscover answer, if usable: https, a host name the
    internet knows (an internal address it resolves to is refused later, at sign-in,
    by the internal-address rule)."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        _ = parts.port
    except ValueError:
        raise ValueError("not a valid address") from None
    labels = host.split(".")
    if not host or not all(_HOST_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValueError("not a server name")
    if _private_name(host):
        raise ValueError("a name only the company's own network knows")
    if parts.scheme.lower() != "https":
        raise ValueError("which is not encrypted (https)")
    if len(url) > 200:
        raise ValueError("longer than 200 characters")
    return parts._replace(scheme="https", netloc=parts.netloc.lower()).geturl()


def _spf_target(term: str) -> str:
    """The domain of an SPF include: or redirect= term that passes mail ("+" or none)."""
    term = term.lower()
    if term.startswith("+"):
        term = term[1:]
    for prefix in ("include:", "redirect="):
        if term.startswith(prefix):
            return term[len(prefix) :].rstrip(".")
    return ""


def _mx_matches(host: str) -> list[tuple[EmailProvider, str]]:
    """Providers that run an MX host: by MX suffix (longest first), then by the table."""
    matches: list[tuple[EmailProvider, str]] = []
    by_suffix = []
    for provider in EmailProvider.objects.exclude(mx_suffixes=""):
        for suffix in provider.mx_suffix_list():
            if host == suffix or host.endswith("." + suffix):
                by_suffix.append((len(suffix), provider, suffix))
    for _, provider, suffix in sorted(by_suffix, key=lambda item: -item[0]):
        matches.append((provider, f"ends with {suffix}"))
    labels = host.split(".")
    parents = [".".join(labels[i:]) for i in range(len(labels) - 1)]
    # Only entries someone vouched for: a customer domain learned by MX or chosen by a
    # user says nothing about who runs the mail servers under it.
    trusted = [Source.BUILTIN, Source.ADMIN, Source.ISPDB]
    entries = {
        e.domain: e
        for e in ProviderDomain.objects.select_related("provider").filter(
            domain__in=parents, source__in=trusted
        )
    }
    for parent in parents:
        if parent in entries:
            matches.append((entries[parent].provider, f"is under {parent}, a known domain"))
    return matches


def _mx_host_domains(host: str) -> list[str]:
    """Domains to ask ISPDB about for an MX host: its registrable domain (by the public
    suffix list, so "web.de" and "example.co.uk" alike), then the host's parent."""
    bases = []
    base = registrable_domain(host)
    if base and base != host:
        bases.append(base)
    parent = host.split(".", 1)[1] if "." in host else ""
    if parent and parent != base and base and parent.endswith("." + base):
        bases.append(parent)
    return bases


def discover(address: str | Address) -> DiscoveryResult:
    return Discoverer().discover(address)
