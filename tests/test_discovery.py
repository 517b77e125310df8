import time

import dns.resolver
import pytest
from defusedxml import ElementTree as ET

from providers.addresses import AddressError
from providers.discovery import Discoverer, DnsLookup, DnsMxResolver, FetchError, HttpsFetcher
from providers.models import EmailProvider, ProviderDomain, Source
from tests.factories import EmailProviderFactory, ProviderDomainFactory
from tests.servers.dns import ZoneDnsServer
from tests.servers.https import HttpsServer, SilentDnsServer, SilentServer

ISPDB_HOST = "ispdb.test"
ISPDB_BASE = f"https://{ISPDB_HOST}/v1.1/"
AUTOCONFIG_DOMAINS = ["acme.test", "wellknown.test", "pop-only.test", "hijack.test"]


def _raw_listing(path):
    """Domains and the IMAP host of an ISPDB file, read without the code under test."""
    root = ET.fromstring(path.read_bytes())
    provider = root.find("emailProvider")
    domains = [d.text.strip().lower() for d in provider.findall("domain") if d.text]
    imap = [
        # Stored lower case, Thunderbird's placeholder as it is written.
        s.findtext("hostname").strip().lower().replace("%emaildomain%", "%EMAILDOMAIN%")
        for s in provider.findall("incomingServer")
        if s.get("type") == "imap"
    ]
    return provider.get("id"), domains, (imap[0] if imap else None)


@pytest.fixture(scope="module")
def https_server():
    names = [ISPDB_HOST]
    for domain in AUTOCONFIG_DOMAINS:
        names += [domain, f"autoconfig.{domain}"]
    server = HttpsServer(names).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ispdb_listing(https_server, shared_dir):
    """Serves ../shared/ispdb in the ISPDB layout, one URL per listed domain."""
    listing = {}
    duplicates = set()
    for path in sorted((shared_dir / "ispdb").glob("*.xml")):
        provider_id, domains, imap_host = _raw_listing(path)
        for domain in domains:
            if domain in listing:
                duplicates.add(domain)
                continue
            listing[domain] = (path, provider_id, imap_host)
            https_server.routes.add(ISPDB_HOST, f"/v1.1/{domain}", path.read_bytes())
    return listing, duplicates


def _loopback_resolver(server_port, names):
    def resolve(host, port, timeout):
        if host in names:
            return [("127.0.0.1", server_port)]
        raise FetchError(f"{host} does not resolve", not_found=True)

    return resolve


@pytest.fixture(scope="module")
def zone():
    """The DNS of the tests: a real server on loopback, answering from its own table."""
    server = ZoneDnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def dns_zone(zone):
    zone.clear()
    return zone


@pytest.fixture
def discoverer(https_server, dns_zone):
    def make(**kwargs):
        fetcher = HttpsFetcher(
            ssl_context=https_server.client_context(),
            resolve=_loopback_resolver(https_server.port, https_server.hostnames),
            allow_internal=True,
        )
        options = {
            "fetcher": fetcher,
            "dns": DnsLookup(dns_zone.resolver()),
            "ispdb_url": ISPDB_BASE,
            "step_timeout": 3,
            "total_timeout": 8,
            # Every step on: this fixture's network is the loopback server above.
            "use_ispdb": True,
            "use_autoconfig": True,
            "use_mx": True,
            "use_autodiscover": True,
        }
        options.update(kwargs)
        return Discoverer(**options)

    return make


def test_it_resolves_every_ispdb_domain_to_its_provider(db, discoverer, ispdb_listing, capsys):
    listing, duplicates = ispdb_listing
    discover = discoverer(use_autoconfig=False, use_mx=False)
    hits, misses, pop_only = [], [], []
    for domain, (path, provider_id, imap_host) in listing.items():
        # Forget every mapping so each domain goes over HTTPS to the ISPDB server.
        ProviderDomain.objects.all().delete()
        result = discover.discover(f"someone@{domain}")
        if imap_host is None:
            assert result.provider is None, domain
            assert any("only pop3" in line for line in result.trace), result.trace
            pop_only.append(domain)
            continue
        if (
            result.found
            and result.step == "ispdb"
            and result.provider.ispdb_id == provider_id.lower()
            and result.provider.imap_host == imap_host
        ):
            hits.append(domain)
        else:
            misses.append((domain, path.name, result.trace))
    usable = len(listing) - len(pop_only)
    with capsys.disabled():
        print(
            f"\nISPDB discovery over HTTPS: {len(hits)}/{usable} IMAP domains resolved to their "
            f"provider ({100 * len(hits) / usable:.1f}%); {len(pop_only)} POP3-only domains "
            f"refused with a reason; {len(duplicates)} domains listed by two files skipped."
        )
    assert misses == []


def test_it_saves_an_ispdb_find_so_the_next_lookup_uses_the_table(db, discoverer, ispdb_listing):
    discover = discoverer(use_autoconfig=False, use_mx=False)
    first = discover.discover("anna@posteo.de")
    assert first.step == "ispdb"
    assert first.found_via == "found in ISPDB"
    assert ProviderDomain.objects.get(domain="posteo.de").source == Source.ISPDB

    second = discover.discover("ben@POSTEO.DE")
    assert second.step == "table"
    assert second.provider == first.provider
    assert second.found_via == "found in Email providers domains"


def test_it_answers_from_the_table_without_any_network(db, discoverer, https_server):
    entry = ProviderDomainFactory(domain="corp.test")
    before = len(https_server.routes.requests)
    result = discoverer().discover("Anna@Corp.Test")
    assert result.provider == entry.provider
    assert result.candidates == [entry.provider]
    assert len(https_server.routes.requests) == before


AUTOCONFIG_XML = b"""<?xml version="1.0"?>
<clientConfig version="1.1">
  <emailProvider id="%s">
    <domain>%s</domain>
    <domain>gmail.com</domain>
    <displayName>%s</displayName>
    <incomingServer type="%s">
      <hostname>mail.%s</hostname><port>993</port><socketType>SSL</socketType>
      <authentication>password-cleartext</authentication><username>%%EMAILLOCALPART%%</username>
    </incomingServer>
    <outgoingServer type="smtp">
      <hostname>mail.%s</hostname><port>587</port><socketType>STARTTLS</socketType>
      <authentication>password-cleartext</authentication><username>%%EMAILADDRESS%%</username>
    </outgoingServer>
  </emailProvider>
</clientConfig>"""


def _autoconfig(domain, provider_id=None, kind="imap", name=None):
    return AUTOCONFIG_XML % (
        (provider_id or domain).encode(),
        domain.encode(),
        (name or f"{domain} mail").encode(),
        kind.encode(),
        domain.encode(),
        domain.encode(),
    )


def test_it_finds_a_provider_in_the_domains_autoconfig(db, discoverer, https_server):
    https_server.routes.add(
        "autoconfig.acme.test", "/mail/config-v1.1.xml", _autoconfig("acme.test")
    )
    result = discoverer(use_mx=False).discover("anna@acme.test")
    assert result.step == "autoconfig"
    assert result.found_via == "found in the domain's autoconfig"
    assert result.provider.imap_host == "mail.acme.test"
    assert result.provider.login_format == "local_part"
    assert result.provider.smtp_security == "starttls"
    # The domain's own file speaks for that domain only, not for gmail.com it also lists.
    assert list(result.provider.domains.values_list("domain", "source")) == [
        ("acme.test", Source.AUTOCONFIG)
    ]
    assert ProviderDomain.objects.get(domain="gmail.com").provider != result.provider


def test_it_tries_the_well_known_autoconfig_address_second(db, discoverer, https_server):
    https_server.routes.add(
        "wellknown.test",
        "/.well-known/autoconfig/mail/config-v1.1.xml",
        _autoconfig("wellknown.test"),
    )
    result = discoverer(use_mx=False).discover("anna@wellknown.test")
    assert result.step == "autoconfig"
    assert any("autoconfig.wellknown.test" in line and "404" in line for line in result.trace)


def test_it_does_not_let_an_autoconfig_file_rewrite_an_ispdb_provider(
    db, discoverer, https_server, builtin_providers
):
    gmail = EmailProvider.objects.get(ispdb_id="googlemail.com")
    https_server.routes.add(
        "autoconfig.hijack.test",
        "/mail/config-v1.1.xml",
        _autoconfig("hijack.test", provider_id="googlemail.com", name=gmail.name),
    )
    result = discoverer(use_mx=False).discover("anna@hijack.test")
    assert result.provider != gmail
    gmail.refresh_from_db()
    assert gmail.imap_host == "imap.gmail.com"
    assert ProviderDomain.objects.get(domain="gmail.com").provider == gmail


def test_it_reports_a_pop_only_autoconfig_and_goes_on(db, discoverer, https_server):
    https_server.routes.add(
        "autoconfig.pop-only.test",
        "/mail/config-v1.1.xml",
        _autoconfig("pop-only.test", kind="pop3"),
    )
    result = discoverer(use_mx=False).discover("anna@pop-only.test")
    assert result.provider is None
    assert any("only pop3" in line for line in result.trace)
    assert result.trace[-1].startswith("No provider found")


def test_it_matches_mx_hosts_to_a_known_provider(db, discoverer, builtin_providers):
    mx = {"shop.test": ["alt1.aspmx.l.google.com", "aspmx.l.google.com"]}
    discover = discoverer(use_ispdb=False, use_autoconfig=False, mx_resolver=lambda d, t: mx[d])
    result = discover.discover("anna@shop.test")
    assert result.step == "mx"
    assert result.found_via == "found via MX: Gmail / Google Workspace"
    assert ProviderDomain.objects.get(domain="shop.test").source == Source.MX
    assert discover.discover("ben@shop.test").step == "table"


def test_it_prefers_the_longest_mx_suffix(db, discoverer, builtin_providers):
    # AOL's MX servers live under Yahoo's DNS; the longer suffix must win.
    mx = {"aolish.test": ["mx-aol.mail.gm0.yahoodns.net"]}
    result = discoverer(use_ispdb=False, use_autoconfig=False, mx_resolver=lambda d, t: mx[d])
    found = result.discover("anna@aolish.test")
    assert found.provider.name == "AOL Mail"


def test_it_matches_an_mx_host_under_a_known_domain(db, discoverer):
    provider = EmailProviderFactory(name="Hosted Mail")
    ProviderDomainFactory(domain="hosted.test", provider=provider)
    mx = {"client.test": ["mx2.eu.hosted.test"]}
    result = discoverer(use_ispdb=False, use_autoconfig=False, mx_resolver=lambda d, t: mx[d])
    found = result.discover("anna@client.test")
    assert found.provider == provider
    assert any("is under hosted.test" in line for line in found.trace)


def test_it_asks_ispdb_about_the_mx_hosts_domain_as_a_last_resort(db, discoverer, ispdb_listing):
    # webhuset.no is in ISPDB and not in the platform table.
    mx = {"customer.test": ["mx1.pub.mailpod3.webhuset.no"]}
    found = discoverer(use_autoconfig=False, mx_resolver=lambda d, t: mx[d]).discover(
        "anna@customer.test"
    )
    assert found.step == "mx"
    assert found.provider.ispdb_id == "webhuset.no"
    assert ProviderDomain.objects.get(domain="customer.test").source == Source.MX


def test_it_finds_nothing_and_says_what_it_tried(db, discoverer):
    found = discoverer().discover("anna@unknown.test")
    assert found.provider is None
    assert found.found_via == "not found"
    text = "\n".join(found.trace)
    assert "no entry for unknown.test" in text
    assert "ISPDB" in text and "404" in text
    assert "autoconfig.unknown.test does not resolve" in text
    assert "no MX records" in text


def test_it_refuses_plain_http_addresses(db, discoverer):
    found = discoverer(
        ispdb_url="http://ispdb.test/v1.1/", use_autoconfig=False, use_mx=False
    ).discover("anna@plain.test")
    assert any("only https://" in line for line in found.trace)


def test_it_rejects_a_certificate_the_client_does_not_trust(db, https_server):
    fetcher = HttpsFetcher(
        resolve=_loopback_resolver(https_server.port, https_server.hostnames), allow_internal=True
    )
    with pytest.raises(FetchError, match="untrusted certificate"):
        fetcher.get(ISPDB_BASE + "posteo.de", timeout=3)


@pytest.fixture
def silent_discoverer():
    """A Discoverer whose every server, HTTPS and DNS, accepts and never answers."""
    silent = SilentServer().start()
    silent_dns = SilentDnsServer()
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = silent_dns.port

    def make(**options):
        return Discoverer(
            fetcher=HttpsFetcher(
                resolve=lambda host, port, timeout: [("127.0.0.1", silent.port)],
                allow_internal=True,
            ),
            dns=DnsLookup(resolver),
            mx_resolver=DnsMxResolver(resolver),
            ispdb_url="https://ispdb.test/v1.1/",
            step_timeout=1,
            **options,
        )

    yield make
    silent.stop()
    silent_dns.stop()


def _timed(discoverer):
    started = time.monotonic()
    found = discoverer.discover("anna@slow.test")
    return found, time.monotonic() - started


def test_it_keeps_the_whole_call_within_its_bound_when_nothing_answers(db, silent_discoverer):
    found, elapsed = _timed(
        silent_discoverer(
            total_timeout=2.5,
            use_ispdb=True,
            use_autoconfig=True,
            use_mx=True,
            use_autodiscover=True,
        )
    )
    assert found.provider is None
    assert any("did not answer in time" in line for line in found.trace), found.trace
    # Each step waited its own second at most, and the bound cut the rest short.
    assert elapsed < 2.5 + 1.0, found.trace


# How many waits each step has when nothing answers: autoconfig has two addresses;
# autodiscover asks DNS for the CNAME, autodiscover.<domain> over HTTPS (the POX address
# on the same silent server is not tried again) and DNS for the SRV record.
WAITS = {"ispdb": 1, "autoconfig": 2, "mx": 1, "autodiscover": 3}


@pytest.mark.parametrize("step", list(WAITS))
def test_it_times_out_each_step_on_its_own(db, silent_discoverer, step):
    found, elapsed = _timed(
        silent_discoverer(
            total_timeout=10,
            use_ispdb=step == "ispdb",
            use_autoconfig=step == "autoconfig",
            use_mx=step == "mx",
            use_autodiscover=step == "autodiscover",
        )
    )
    timeouts = [line for line in found.trace if "in time" in line or "timed out" in line]
    assert len(timeouts) == WAITS[step], found.trace
    assert elapsed < len(timeouts) * 1 + 1.0


def test_it_raises_address_errors_before_any_lookup(db, discoverer):
    with pytest.raises(AddressError, match="needs an @"):
        discoverer().discover("anna.example.com")


@pytest.fixture
def fetcher(https_server):
    return HttpsFetcher(
        ssl_context=https_server.client_context(),
        resolve=_loopback_resolver(https_server.port, https_server.hostnames),
        allow_internal=True,
    )


def test_it_follows_a_redirect_on_https(fetcher, https_server):
    https_server.routes.add("acme.test", "/moved", b"<clientConfig/>")
    https_server.routes.add(
        "autoconfig.acme.test", "/old", b"", status=301, Location="https://acme.test/moved"
    )
    assert fetcher.get("https://autoconfig.acme.test/old", timeout=3) == b"<clientConfig/>"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://acme.test/moved", "only https://"),
        ("https://acme.test:99999/x", "not a valid address"),
        ("https://[::1/x", "invalid address"),
    ],
)
def test_it_reports_a_bad_redirect_instead_of_crashing(fetcher, https_server, location, reason):
    https_server.routes.add("wellknown.test", "/bad", b"", status=302, Location=location)
    with pytest.raises(FetchError, match=reason.replace("/", r"\/")):
        fetcher.get("https://wellknown.test/bad", timeout=3)


def test_it_stops_following_redirects_in_a_loop(fetcher, https_server):
    https_server.routes.add("hijack.test", "/loop", b"", status=302, Location="/loop")
    with pytest.raises(FetchError, match="redirected more than 3 times"):
        fetcher.get("https://hijack.test/loop", timeout=3)


def test_it_ends_a_step_whose_server_drips_bytes(fetcher, https_server):
    https_server.routes.add_drip("pop-only.test", "/drip", interval=0.2)
    started = time.monotonic()
    with pytest.raises(FetchError, match="did not answer in time"):
        fetcher.get("https://pop-only.test/drip", timeout=1.5)
    assert time.monotonic() - started < 1.5 + 1.0


def test_it_does_not_contact_internal_addresses_by_default(db, https_server):
    fetcher = HttpsFetcher(
        ssl_context=https_server.client_context(),
        resolve=_loopback_resolver(https_server.port, https_server.hostnames),
    )
    before = len(https_server.routes.requests)
    found = Discoverer(
        fetcher=fetcher,
        mx_resolver=lambda d, t: [],
        use_ispdb=False,
        use_autoconfig=True,
        use_mx=False,
    ).discover("anna@acme.test")
    assert found.provider is None
    assert any("internal network address; not contacted" in line for line in found.trace)
    assert len(https_server.routes.requests) == before


def test_it_says_a_null_mx_domain_takes_no_mail(db, discoverer):
    found = discoverer(use_ispdb=False, use_autoconfig=False, mx_resolver=lambda d, t: [""])
    result = found.discover("anna@nomail.test")
    assert result.provider is None
    assert any("null MX" in line for line in result.trace)


def test_it_does_not_trust_domains_learned_from_customers_for_mx(db, discoverer):
    provider = EmailProviderFactory(name="Some Host")
    ProviderDomainFactory(domain="customer-a.test", provider=provider, source=Source.MX)
    mx = {"customer-b.test": ["mail.customer-a.test"]}
    found = discoverer(use_ispdb=False, use_autoconfig=False, mx_resolver=lambda d, t: mx[d])
    assert found.discover("anna@customer-b.test").provider is None


def test_it_finds_the_ispdb_entry_of_a_short_mx_domain(db, discoverer, ispdb_listing):
    ProviderDomain.objects.filter(domain="web.de").delete()
    mx = {"smallshop.test": ["mx-ha03.web.de"]}
    found = discoverer(use_autoconfig=False, mx_resolver=lambda d, t: mx[d]).discover(
        "anna@smallshop.test"
    )
    assert found.step == "mx"
    assert found.provider.ispdb_id == "web.de"


def _behind_proxy(https_server, resolved: str | None):
    """A fetcher whose HTTPS goes through the suite's proxy (as HTTPS_PROXY names one),
    which leads every name to the test server; this machine's DNS gives the names
    `resolved`, or nothing (only the proxy knows them)."""
    from tests.servers.http_proxy import HttpProxy

    proxy = HttpProxy(routes=dict.fromkeys(https_server.hostnames, https_server.port))

    def resolve(host, port, timeout):
        if resolved is None:
            raise FetchError(f"{host} does not resolve", not_found=True)
        return [(resolved, port)]

    fetcher = HttpsFetcher(
        ssl_context=https_server.client_context(), resolve=resolve,
        proxy_for=lambda url: proxy.url,
    )  # fmt: skip
    return proxy, fetcher


@pytest.mark.parametrize("resolved", ["93.184.215.14", None])
def test_it_fetches_through_the_environments_proxy(https_server, resolved):
    https_server.routes.add("acme.test", "/through-proxy.xml", b"<clientConfig/>")
    proxy, fetcher = _behind_proxy(https_server, resolved)
    try:
        body = fetcher.get("https://acme.test/through-proxy.xml", timeout=5)
    finally:
        proxy.close()
    assert body == b"<clientConfig/>"
    # The proxy, on loopback, is the administrator's: allowed although internal.
    assert proxy.asked == [("CONNECT", "acme.test", 443)]


def test_it_keeps_the_internal_address_rule_behind_the_proxy(https_server):
    proxy, fetcher = _behind_proxy(https_server, "10.0.0.8")
    try:
        with pytest.raises(FetchError, match="internal network address; not contacted"):
            fetcher.get("https://acme.test/through-proxy.xml", timeout=5)
    finally:
        proxy.close()
    assert proxy.asked == []


def test_it_takes_the_proxy_the_environment_names_and_skips_those_no_proxy_lists(monkeypatch):
    from providers.discovery import _environ_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.test:3128")
    monkeypatch.setenv("https_proxy", "http://proxy.corp.test:3128")
    monkeypatch.setenv("NO_PROXY", "intranet.corp.test")
    monkeypatch.setenv("no_proxy", "intranet.corp.test")
    assert _environ_proxy("https://autoconfig.acme.test:443/") == "http://proxy.corp.test:3128"
    assert _environ_proxy("https://intranet.corp.test:443/") is None


@pytest.mark.parametrize(
    ("named", "said"),
    [
        ("https://proxy.corp.test:3128", "only through an http:// proxy, not https://"),
        ("socks5://proxy.corp.test:1080", "only through an http:// proxy, not socks5://"),
        ("http://proxy.corp.test:99999", "not a valid address"),
    ],
)
def test_it_says_which_proxy_it_cannot_tunnel_through(https_server, named, said):
    fetcher = HttpsFetcher(
        ssl_context=https_server.client_context(),
        resolve=_loopback_resolver(https_server.port, https_server.hostnames),
        proxy_for=lambda url: named,
    )
    with pytest.raises(FetchError, match=said):
        fetcher.get("https://acme.test/through-proxy.xml", timeout=5)


def test_it_names_the_proxy_that_refused_or_could_not_be_reached(https_server):
    from tests.servers.dovecot import free_port

    proxy, fetcher = _behind_proxy(https_server, None)
    try:
        proxy.refuse_after = 0
        with pytest.raises(
            FetchError, match=r"tunnel to acme\.test \(HTTP 407 Proxy Authentication Required\)"
        ):
            fetcher.get("https://acme.test/through-proxy.xml", timeout=5)
    finally:
        proxy.close()
    closed = free_port()
    # A name without a scheme is an http:// proxy, as requests reads it.
    fetcher.proxy_for = lambda url: f"127.0.0.1:{closed}"
    with pytest.raises(FetchError, match=f"the proxy 127.0.0.1:{closed} could not be reached"):
        fetcher.get("https://acme.test/through-proxy.xml", timeout=5)
    fetcher.proxy_for = lambda url: "http://proxy.nowhere.invalid:3128"
    with pytest.raises(FetchError, match=r"proxy\.nowhere\.invalid \(HTTPS_PROXY\) does not"):
        fetcher.get("https://acme.test/through-proxy.xml", timeout=5)
