"""Which provider serves an email address.

Steps, in order, each time-boxed, the whole call bounded:
1. the "Email providers domains" lookup table;
2. the Thunderbird ISPDB over HTTPS (`<base>/<domain>`);
3. the domain's own autoconfig over HTTPS;
4. the domain's MX records, matched against known providers.
A provider found by steps 2-4 is saved with its domain, so the next lookup is step 1.
Discovery reads configuration documents and DNS only: it never contacts a mail
server and never sees a password.
"""

import contextlib
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

import dns.exception
import dns.resolver
from django.conf import settings

from mailsetup import net

from .addresses import Address, normalize_address
from .ispdb import ClientConfigError, parse_client_config
from .models import EmailProvider, ProviderDomain, Source
from .services import UnsupportedProvider, provider_domain_remember, provider_import_config

MAX_REDIRECTS = 3
USER_AGENT = "mailsetup-discovery/1"


class FetchError(Exception):
    """A configuration document could not be fetched; str() is for the trace."""

    def __init__(self, message: str, *, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


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
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Callable[[str, int, float], list[tuple]] | None = None,
        max_bytes: int = 512 * 1024,
        allow_internal: bool = False,
    ):
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.resolve = resolve or _system_resolve
        self.max_bytes = max_bytes
        self.allow_internal = allow_internal

    def get(self, url: str, *, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        for _ in range(MAX_REDIRECTS + 1):
            try:
                parts = urlsplit(url)
                port = parts.port or 443
            except ValueError:
                raise FetchError(f"refused to fetch {url!r}: not a valid address") from None
            if parts.scheme != "https" or not parts.hostname:
                raise FetchError(f"refused to fetch {url}: only https:// addresses are used")
            status, location, body = self._get_once(parts, port, deadline)
            if status in (301, 302, 303, 307, 308) and location:
                try:
                    url = urljoin(url, location)
                except ValueError:
                    raise FetchError(f"{url} redirected to an invalid address") from None
                continue
            if status == 404 or status == 410:
                raise FetchError(f"{url} answered {status} (not listed)", not_found=True)
            if status != 200:
                raise FetchError(f"{url} answered HTTP {status}")
            return body
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

    def _connect(self, addresses: list[tuple], host: str, deadline: float) -> socket.socket:
        error: OSError | None = None
        for sockaddr in addresses:
            try:
                return socket.create_connection(sockaddr[:2], timeout=_remaining(deadline, host))
            except OSError as caught:
                error = caught
        raise error  # type: ignore[misc]

    def _get_once(self, parts, port: int, deadline: float) -> tuple[int, str, bytes]:
        host = parts.hostname
        path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        if parts.query:
            path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
        addresses = self._addresses(host, port, deadline)
        sock = watchdog = None
        # The watchdog must reach whichever socket object is current: wrapping for TLS
        # hands the connection over to a new object.
        current: list[socket.socket] = []
        try:
            sock = self._connect(addresses, host, deadline)
            current.append(sock)
            # Per-read timeouts alone would let a server that drips a byte now and
            # then stretch the step without end; the watchdog ends it at the deadline.
            watchdog = threading.Timer(_remaining(deadline, host), _shut, args=(current,))
            watchdog.daemon = True
            watchdog.start()
            sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
            current.append(sock)
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
                "Accept: application/xml, text/xml\r\nConnection: close\r\n\r\n"
            )
            sock.sendall(request.encode("ascii"))
            response = http.client.HTTPResponse(sock)
            response.begin()
            location = response.getheader("Location") or ""
            body = bytearray()
            while chunk := response.read1(16384):
                body += chunk
                if len(body) > self.max_bytes:
                    raise FetchError(f"{host} sent more than {self.max_bytes} bytes")
            if time.monotonic() >= deadline:
                raise TimeoutError
            return response.status, location, bytes(body)
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


def _shut(current: list[socket.socket]) -> None:
    with contextlib.suppress(OSError):
        current[-1].shutdown(socket.SHUT_RDWR)


def _remaining(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise StepTimeout(f"{what} did not answer in time")
    return left


class DnsMxResolver:
    """MX hosts of a domain, most preferred first; [] when it has none."""

    def __init__(self, resolver: dns.resolver.Resolver | None = None):
        self.resolver = resolver

    def __call__(self, domain: str, timeout: float) -> list[str]:
        resolver = self.resolver or dns.resolver.get_default_resolver()
        try:
            answer = resolver.resolve(domain, "MX", lifetime=timeout)
        except dns.exception.Timeout:
            raise StepTimeout(f"the DNS query for MX of {domain} timed out") from None
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.DNSException as error:
            raise FetchError(f"the DNS query for MX of {domain} failed ({error})") from None
        records = sorted(answer, key=lambda record: record.preference)
        # A null MX (RFC 7505, exchange ".") comes back as "": the domain takes no mail.
        return [record.exchange.to_text().rstrip(".").lower() for record in records]


FOUND_VIA = {
    "table": "found in Email providers domains",
    "ispdb": "found in ISPDB",
    "autoconfig": "found in the domain's autoconfig",
    "mx": "found via MX",
}


@dataclass
class DiscoveryResult:
    address: Address
    provider: EmailProvider | None = None
    # The step that answered ("table", "ispdb", "autoconfig", "mx"), and the source
    # recorded on the domain's entry (for a table hit, where the entry came from).
    step: str | None = None
    source: str | None = None
    candidates: list[EmailProvider] = field(default_factory=list)
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


class Discoverer:
    def __init__(
        self,
        *,
        fetcher: HttpsFetcher | None = None,
        mx_resolver: Callable[[str, float], list[str]] | None = None,
        ispdb_url: str | None = None,
        step_timeout: float | None = None,
        total_timeout: float | None = None,
        use_ispdb: bool | None = None,
        use_autoconfig: bool | None = None,
        use_mx: bool | None = None,
    ):
        self.fetcher = fetcher or HttpsFetcher()
        self.mx_resolver = mx_resolver or DnsMxResolver()
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

    def discover(self, address: str | Address) -> DiscoveryResult:
        """Raises AddressError for an unusable address; never for network trouble."""
        if not isinstance(address, Address):
            address = normalize_address(address)
        result = DiscoveryResult(address=address)
        self._deadline = time.monotonic() + self.total_timeout
        domain = address.domain

        entry = ProviderDomain.objects.select_related("provider").filter(domain=domain).first()
        if entry is not None:
            result.trace.append(f"Email providers domains: {domain} → {entry.provider.name}.")
            self._found(result, entry.provider, "table", entry.source)
            return result
        result.trace.append(f"Email providers domains: no entry for {domain}.")

        steps = []
        if self.use_ispdb:
            steps.append(self._step_ispdb)
        if self.use_autoconfig:
            steps.append(self._step_autoconfig)
        if self.use_mx:
            steps.append(self._step_mx)
        for step in steps:
            if self._left() <= 0:
                result.trace.append("Stopped: discovery used up its time.")
                break
            if step(domain, result):
                return result
        result.trace.append("No provider found: the user will be asked to choose one.")
        return result

    def _left(self) -> float:
        return self._deadline - time.monotonic()

    def _timeout(self) -> float:
        return max(0.05, min(self.step_timeout, self._left()))

    def _found(
        self, result: DiscoveryResult, provider: EmailProvider, step: str, source: str
    ) -> bool:
        result.provider = provider
        result.step = step
        result.source = source
        if provider not in result.candidates:
            result.candidates.insert(0, provider)
        return True

    def _fetch_config(self, url: str, label: str, result: DiscoveryResult):
        try:
            body = self.fetcher.get(url, timeout=self._timeout())
        except FetchError as error:
            result.trace.append(f"{label}: {error}.")
            return None
        try:
            return parse_client_config(body)
        except ClientConfigError as error:
            result.trace.append(f"{label}: {url} is not a usable clientConfig: {error}.")
            return None

    def _save(self, config, *, source, domain, result, label, config_id=None, only=None):
        try:
            outcome = provider_import_config(
                config=config, source=source, only_domains=only, config_id=config_id
            )
        except UnsupportedProvider as error:
            result.trace.append(f"{label}: {error}")
            return None
        # The document may not list the domain we asked about (ISPDB answers for some
        # domains by their MX); remember it all the same, but not as listed by the file,
        # or the next import of that file would drop it as no longer listed.
        listed = only is not None or domain in config.domains
        provider_domain_remember(
            domain=domain, provider=outcome.provider, source=source if listed else Source.MX
        )
        return outcome.provider

    def _step_ispdb(self, domain: str, result: DiscoveryResult) -> bool:
        url = self.ispdb_url + domain
        config = self._fetch_config(url, "ISPDB", result)
        if config is None:
            return False
        provider = self._save(
            config, source=Source.ISPDB, domain=domain, result=result, label="ISPDB"
        )
        if provider is None:
            return False
        result.trace.append(f"ISPDB: {url} describes {provider.name}.")
        return self._found(result, provider, "ispdb", Source.ISPDB)

    def _step_autoconfig(self, domain: str, result: DiscoveryResult) -> bool:
        urls = [
            f"https://autoconfig.{domain}/mail/config-v1.1.xml",
            f"https://{domain}/.well-known/autoconfig/mail/config-v1.1.xml",
        ]
        for url in urls:
            if self._left() <= 0:
                return False
            config = self._fetch_config(url, "Autoconfig", result)
            if config is None:
                continue
            # A domain's own file speaks for that domain only, under an id of its own.
            provider = self._save(
                config,
                source=Source.AUTOCONFIG,
                domain=domain,
                result=result,
                label="Autoconfig",
                config_id=f"autoconfig:{domain}",
                only=[domain],
            )
            if provider is not None:
                result.trace.append(f"Autoconfig: {url} describes {provider.name}.")
                return self._found(result, provider, "autoconfig", Source.AUTOCONFIG)
        return False

    def _step_mx(self, domain: str, result: DiscoveryResult) -> bool:
        try:
            hosts = self.mx_resolver(domain, self._timeout())
        except FetchError as error:
            result.trace.append(f"MX: {error}.")
            return False
        if not hosts:
            result.trace.append(f"MX: {domain} has no MX records.")
            return False
        if not any(hosts):
            result.trace.append(f"MX: {domain} has a null MX record: it receives no email.")
            return False
        hosts = [host for host in hosts if host]
        result.trace.append(f"MX: {domain} → {', '.join(hosts)}.")
        for host in hosts:
            for provider, why in _mx_matches(host):
                if provider not in result.candidates:
                    result.candidates.append(provider)
                    result.trace.append(f"MX: {host} {why} → {provider.name}.")
        if not result.candidates:
            # Thunderbird's last resort: ask ISPDB about the MX host's own domain.
            bases = [base for host in hosts for base in _base_domains(host)]
            for base in dict.fromkeys(bases):
                if not self.use_ispdb or self._left() <= 0:
                    break
                config = self._fetch_config(self.ispdb_url + base, f"MX → ISPDB {base}", result)
                if config is None:
                    continue
                provider = self._save(
                    config, source=Source.ISPDB, domain=base, result=result, label="MX → ISPDB"
                )
                if provider is not None:
                    result.candidates.append(provider)
                    result.trace.append(f"MX: ISPDB knows {base} as {provider.name}.")
                    break
        if not result.candidates:
            result.trace.append("MX: no known provider runs these servers.")
            return False
        provider = result.candidates[0]
        provider_domain_remember(domain=domain, provider=provider, source=Source.MX)
        return self._found(result, provider, "mx", Source.MX)


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


def _base_domains(host: str) -> list[str]:
    """Candidate registrable domains of an MX host, shortest first.

    Without the public suffix list "example.co.uk" and "web.de" cannot be told apart
    from "co.uk", so both the two- and three-label endings are tried.
    """
    labels = host.split(".")
    return [".".join(labels[-n:]) for n in (2, 3) if len(labels) > n]


def discover(address: str | Address) -> DiscoveryResult:
    return Discoverer().discover(address)
