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

import http.client
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import dns.exception
import dns.resolver
from django.conf import settings

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


# getaddrinfo() has no timeout of its own; a small pool lets us stop waiting for it.
_resolver_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="discovery-dns")


def _system_resolve(host: str, port: int, timeout: float) -> list[tuple]:
    future = _resolver_pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return [info[4] for info in future.result(timeout=timeout)]
    except FutureTimeout:
        raise StepTimeout(f"looking up {host} took longer than {timeout:.1f} s") from None
    except socket.gaierror:
        raise FetchError(f"{host} does not resolve", not_found=True) from None


class HttpsFetcher:
    """GET over verified HTTPS, bounded in time and size.

    `resolve` maps (host, port, timeout) to socket addresses; tests pass one that
    points test host names at loopback while TLS still verifies the real name.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        resolve: Callable[[str, int, float], list[tuple]] | None = None,
        max_bytes: int = 512 * 1024,
    ):
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.resolve = resolve or _system_resolve
        self.max_bytes = max_bytes

    def get(self, url: str, *, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                raise FetchError(f"refused to fetch {url}: only https:// addresses are used")
            status, location, body = self._get_once(parts, deadline)
            if status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                continue
            if status == 404 or status == 410:
                raise FetchError(f"{url} answered {status} (not listed)", not_found=True)
            if status != 200:
                raise FetchError(f"{url} answered HTTP {status}")
            return body
        raise FetchError(f"{url} redirected more than {MAX_REDIRECTS} times")

    def _get_once(self, parts, deadline: float) -> tuple[int, str, bytes]:
        host, port = parts.hostname, parts.port or 443
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        addresses = self.resolve(host, port, _remaining(deadline, host))
        if not addresses:
            raise FetchError(f"{host} does not resolve", not_found=True)
        sock = None
        try:
            sock = socket.create_connection(addresses[0][:2], timeout=_remaining(deadline, host))
            sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
            request = (
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
                "Accept: application/xml, text/xml\r\nConnection: close\r\n\r\n"
            )
            sock.sendall(request.encode("ascii"))
            response = http.client.HTTPResponse(sock)
            sock.settimeout(_remaining(deadline, host))
            response.begin()
            location = response.getheader("Location") or ""
            body = bytearray()
            while chunk := response.read1(16384):
                body += chunk
                if len(body) > self.max_bytes:
                    raise FetchError(f"{host} sent more than {self.max_bytes} bytes")
                # A server that drips bytes must not stretch the step past its bound.
                sock.settimeout(_remaining(deadline, host))
            return response.status, location, bytes(body)
        except TimeoutError:
            raise StepTimeout(f"{host} did not answer in time") from None
        except ssl.SSLCertVerificationError as error:
            raise FetchError(
                f"{host} has an untrusted certificate ({error.verify_message})"
            ) from None
        except ssl.SSLError as error:
            raise FetchError(f"TLS with {host} failed ({error.reason})") from None
        except ConnectionRefusedError:
            raise FetchError(f"{host} refused the connection", not_found=True) from None
        except (OSError, http.client.HTTPException) as error:
            raise FetchError(f"{host}: {error}") from None
        finally:
            if sock is not None:
                sock.close()


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
        records = sorted(answer, key=lambda record: record.preference)
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
        # The document may not list the domain we asked about (ISPDB answers for
        # some domains by their MX); remember it all the same.
        provider_domain_remember(domain=domain, provider=outcome.provider, source=source)
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
        result.trace.append(f"MX: {domain} → {', '.join(hosts)}.")
        for host in hosts:
            for provider, why in _mx_matches(host):
                if provider not in result.candidates:
                    result.candidates.append(provider)
                    result.trace.append(f"MX: {host} {why} → {provider.name}.")
        if not result.candidates:
            # Thunderbird's last resort: ask ISPDB about the MX host's own domain.
            for base in dict.fromkeys(_base_domain(host) for host in hosts):
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
    entries = {
        e.domain: e
        for e in ProviderDomain.objects.select_related("provider").filter(domain__in=parents)
    }
    for parent in parents:
        if parent in entries:
            matches.append((entries[parent].provider, f"is under {parent}, a known domain"))
    return matches


def _base_domain(host: str) -> str:
    """example.co.uk from mx1.example.co.uk; a heuristic without the public suffix list."""
    labels = host.split(".")
    if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def discover(address: str | Address) -> DiscoveryResult:
    return Discoverer().discover(address)
