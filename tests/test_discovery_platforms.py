"""Company domains (issue 20): the hosted-mail platform table, mail-security gateways and
SPF hints, Exchange autodiscover by DNS, parent domains.

DNS answers come from a real DNS server on loopback (tests/servers/dns.py) that
discovery's resolver queries over UDP; autodiscover's HTTPS answers from the loopback
HTTPS server with a test CA (tests/servers/https.py). Nothing leaves the machine.
"""

import json
import time

import pytest

from accounts.selectors import providers_matching
from providers.addresses import parent_domains, registrable_domain
from providers.discovery import Discoverer, DnsLookup, FetchError, HttpsFetcher
from providers.ispdb import parse_client_config
from providers.models import EmailProvider, ProviderDomain, ServiceType, Source
from providers.platforms import (
    GATEWAY,
    PROVIDER,
    UNSUPPORTED,
    PlatformTableError,
    parse,
    platforms,
)
from providers.services import provider_import_config, provider_load_builtins
from tests.factories import EmailProviderFactory, ProviderDomainFactory
from tests.servers.dns import ZoneDnsServer
from tests.servers.https import HttpsServer

# Realistic MX answers of a company domain on each platform (as `dig MX` shows them).
EXAMPLES = {
    "google-workspace": ("acme-gmbh.de", ["aspmx.l.google.com", "alt1.aspmx.l.google.com"]),
    "microsoft-365": ("acme-de.com", ["acme-de-com.mail.protection.outlook.com"]),
    "zoho-us": ("brightlabs.io", ["mx.zoho.com", "mx2.zoho.com", "mx3.zoho.com"]),
    "zoho-eu": ("baeckerei-huber.at", ["mx.zoho.eu", "mx2.zoho.eu", "mx3.zoho.eu"]),
    "zoho-in": ("sharma-traders.in", ["mx.zoho.in", "mx2.zoho.in"]),
    "zoho-au": ("koala-design.com.au", ["mx.zoho.com.au", "mx2.zoho.com.au"]),
    "zoho-jp": ("sakura-shoten.jp", ["mx.zoho.jp", "mx2.zoho.jp"]),
    "zoho-ca": ("maple-works.ca", ["mx.zohocloud.ca", "mx2.zohocloud.ca"]),
    "fastmail": ("quietpond.net", ["in1-smtp.messagingengine.com", "in2-smtp.messagingengine.com"]),
    "yandex-360": ("romashka.ru", ["mx.yandex.net"]),
    "mailru-business": ("vector-group.ru", ["emx.mail.ru"]),
    "icloud": ("jones-family.org", ["mx01.mail.icloud.com", "mx02.mail.icloud.com"]),
    "yahoo-business": ("smallshop.us", ["mx-biz.mail.am0.yahoodns.net"]),
    "ionos-de": ("mueller-bau.de", ["mx00.ionos.de", "mx01.ionos.de"]),
    "ionos-uk": ("smith-plumbing.co.uk", ["mx00.ionos.co.uk", "mx01.ionos.co.uk"]),
    "ionos-us": ("lakeside-dental.com", ["mx00.ionos.com", "mx01.ionos.com"]),
    "ionos-es": ("ferreteria-lopez.es", ["mx00.ionos.es", "mx01.ionos.es"]),
    "ionos-fr": ("boulangerie-martin.fr", ["mx00.ionos.fr", "mx01.ionos.fr"]),
    "ovh-mx-plan": ("cabinet-dupont.fr", ["mx1.mail.ovh.net", "mx2.mail.ovh.net"]),
    "strato": ("praxis-weber.de", ["smtpin.rzone.de"]),
    "godaddy": ("sunny-realty.com", ["mailstore1.secureserver.net", "smtp.secureserver.net"]),
    "hetzner": ("schmidt-it.de", ["www309.your-server.de"]),
    "gandi": ("atelier-roux.fr", ["spool.mail.gandi.net", "fb.mail.gandi.net"]),
    "infomaniak": ("fiduciaire-favre.ch", ["mta-gw.infomaniak.ch"]),
    "rackspace": ("harbor-logistics.com", ["mx1.emailsrvr.com", "mx2.emailsrvr.com"]),
    "namecheap": ("pixelforge.dev", ["mx1.privateemail.com", "mx2.privateemail.com"]),
    "workmail-us-east-1": ("northwind.com", ["inbound-smtp.us-east-1.amazonaws.com"]),
    "workmail-us-west-2": ("cascade-labs.com", ["inbound-smtp.us-west-2.amazonaws.com"]),
    "workmail-eu-west-1": ("liffey-analytics.ie", ["inbound-smtp.eu-west-1.amazonaws.com"]),
    "mailbox-org": ("kanzlei-berg.de", ["mxext1.mailbox.org", "mxext2.mailbox.org"]),
    "posteo": ("posteo-kunde.de", ["mx01.posteo.de", "mx02.posteo.de"]),
    "hostinger": ("vilnius-cafe.lt", ["mx1.hostinger.com", "mx2.hostinger.com"]),
    "hostpoint": ("schreinerei-meier.ch", ["mx1.mail.hostpoint.ch", "mx2.mail.hostpoint.ch"]),
    "one-com": (
        "hansen-vvs.dk",
        ["mx1.pub.mailpod8-cph3.one.com", "mx2.pub.mailpod8-cph3.one.com"],
    ),
    "titan": ("greenleaf.shop", ["mx1.titan.email", "mx2.titan.email"]),
    "migadu": ("tinyco.eu", ["aspmx1.migadu.com", "aspmx2.migadu.com"]),
    "dreamhost": ("portland-bikes.com", ["mx1.dreamhost.com", "mx2.dreamhost.com"]),
    "aruba": ("trattoria-rossi.it", ["mx.aruba.it"]),
    "tencent-exmail": ("huaxing-tech.cn", ["mxbiz1.qq.com", "mxbiz2.qq.com"]),
    "alibaba-mail": ("jinlong-trade.com.cn", ["mxw.mxhichina.com", "mxn.mxhichina.com"]),
    "runbox": ("fjord-consult.no", ["mx.runbox.com"]),
    "kolab-now": ("genossenschaft-sonne.ch", ["mx1.kolabnow.com"]),
    "proton": ("privacy-first.org", ["mail.protonmail.ch", "mailsec.protonmail.ch"]),
    "tuta": ("secure-notes.de", ["mail.tutanota.de"]),
}
GATEWAY_EXAMPLES = {
    "mimecast": ("law-partners.co.uk", ["eu-smtp-inbound-1.mimecast.com"]),
    "proofpoint": ("bigbank.com", ["mx0a-00123401.pphosted.com", "mx0b-00123401.pphosted.com"]),
    "barracuda": ("city-council.gov.uk", ["d123456a.ess.barracudanetworks.com"]),
    "cisco": ("global-insurer.com", ["mx1.hc1234-56.iphmx.com"]),
    "trend-micro": ("kaufhaus-klein.de", ["kaufhaus-klein.de.in.tmes.trendmicro.eu"]),
    "sophos": ("school-district.org", ["mx-01-eu-central-1.prod.hydra.sophos.com"]),
    "forcepoint": ("defence-supplier.com", ["cluster1.eu.mailcontrol.com"]),
    "symantec": ("pharma-ag.ch", ["cluster1.eu.messagelabs.com"]),
    "hornetsecurity": ("stadtwerke-nord.de", ["mx01.hornetsecurity.com"]),
    "spamexperts": ("webshop-24.nl", ["mx.spamexperts.com", "fallbackmx.spamexperts.eu"]),
    "trellix": ("energy-corp.com", ["energy-corp.mx.fireeyecloud.com"]),
    "cloudflare-routing": ("side-project.dev", ["route1.mx.cloudflare.net"]),
}
# The SPF include: a gateway's customer has for the provider behind it.
SPF_BEHIND = {
    "mimecast": "spf.protection.outlook.com",
    "proofpoint": "_spf.google.com",
    "barracuda": "spf.protection.outlook.com",
    "cisco": "spf.protection.outlook.com",
    "trend-micro": "_spf-eu.ionos.com",
    "sophos": "_spf.google.com",
    "forcepoint": "spf.protection.outlook.com",
    "symantec": "spf.protection.outlook.com",
    "hornetsecurity": "zoho.eu",
    "spamexperts": "spf.titan.email",
    "trellix": "spf.protection.outlook.com",
    "cloudflare-routing": "_spf.google.com",
}

# Host names the HTTPS server answers for (its certificate covers them all).
AUTODISCOVER_HOSTS = [
    "autodiscover.onprem-json.test",
    "autodiscover.onprem-pox.test",
    "autodiscover.redirect.test",
    "ad.central-exchange.test",
    "autodiscover.moved.test",
    "autodiscover.renamed.test",
    "mail.exchange-hoster.test",
    "autodiscover.locked.test",
    "autodiscover.plain.test",
    "autodiscover.m365-ews.test",
    "autodiscover.bad-ews.test",
    "autodiscover.e2e-corp.test",
    "autodiscover.internal.test",
    "autodiscover.inside-only.test",
    "autodiscover.chatty.test",
]
ISPDB = "https://ispdb.test/v1.1/"


@pytest.fixture(scope="module")
def zone_server():
    server = ZoneDnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def zone(zone_server):
    zone_server.clear()
    return zone_server


@pytest.fixture(scope="module")
def web():
    server = HttpsServer(["ispdb.test", *AUTODISCOVER_HOSTS]).start()
    yield server
    server.stop()


@pytest.fixture
def site(web):
    web.routes.pages.clear()
    web.routes.log.clear()
    return web


def _resolve(server):
    def resolve(host, port, timeout):
        if host in server.hostnames:
            return [("127.0.0.1", server.port)]
        raise FetchError(f"{host} does not resolve", not_found=True)

    return resolve


@pytest.fixture
def discoverer(zone, site):
    def make(**options):
        values = {
            "fetcher": HttpsFetcher(
                ssl_context=site.client_context(), resolve=_resolve(site), allow_internal=True
            ),
            "dns": DnsLookup(zone.resolver()),
            "ispdb_url": ISPDB,
            "step_timeout": 2,
            "total_timeout": 8,
            "use_ispdb": False,
            "use_autoconfig": False,
            "use_mx": True,
            "use_autodiscover": True,
        } | options
        return Discoverer(**values)

    return make


def _expected_card(platform):
    if platform.builtin:
        return EmailProvider.objects.get(name=platform.builtin)
    return EmailProvider.objects.get(ispdb_id=platform.card_id)


# -- the table ---------------------------------------------------------------------------


def test_it_loads_a_table_of_at_least_thirty_platforms_with_their_sources(capsys):
    table = platforms()
    kinds = {
        kind: [p for p in table.platforms if p.kind == kind]
        for kind in (PROVIDER, GATEWAY, UNSUPPORTED)
    }
    # Regional rows of one platform (Zoho Mail (Europe), IONOS's countries) count once.
    names = {p.name.split(" (")[0] for p in kinds[PROVIDER]}
    with capsys.disabled():
        print(
            f"\nPlatform table: {len(table)} rows: {len(kinds[PROVIDER])} provider rows "
            f"({len(names)} platforms), {len(kinds[UNSUPPORTED])} unsupported, "
            f"{len(kinds[GATEWAY])} mail-security gateways."
        )
    assert len(names) >= 30
    for platform in table.platforms:
        assert platform.source.startswith("https://"), platform.key
        if platform.kind == PROVIDER and not platform.builtin:
            assert platform.imap.port == 993 and platform.smtp.port in (465, 587), platform.key


# A company's own mail server on a machine rented at a hoster: named under the hoster's
# domain, and not the hoster's mail service.
SERVER_EXAMPLES = {
    "hetzner-servers": ("schmidt-selbst.de", ["static.88.99.12.34.clients.your-server.de"]),
    "godaddy-servers": ("lone-star-tools.com", ["ip-166-62-1-2.ip.secureserver.net"]),
}


def test_it_has_an_example_domain_for_every_platform_and_gateway():
    keys = {p.key for p in platforms().platforms}
    assert set(EXAMPLES) | set(GATEWAY_EXAMPLES) | set(SERVER_EXAMPLES) == keys
    assert {p.key for p in platforms().platforms if p.kind == GATEWAY} == set(GATEWAY_EXAMPLES)


def test_it_keeps_the_table_consistent_with_the_builtin_providers():
    from providers.builtin import BUILTIN_PROVIDERS

    table = platforms()
    builtin = {spec["name"]: spec for spec in BUILTIN_PROVIDERS}
    for platform in table.platforms:
        if platform.builtin:
            # Every MX ending the built-in card knows is the same platform in the table.
            spec = builtin[platform.builtin]
            for suffix in filter(None, (s.strip() for s in spec.get("mx_suffixes", "").split(","))):
                match = table.match_mx(f"mx.{suffix}")
                assert match and match.platform.key == platform.key, (platform.key, suffix)
        elif platform.kind == PROVIDER:
            # A platform whose servers a built-in card has must use that card.
            hosts = {spec["imap_host"] for spec in BUILTIN_PROVIDERS}
            assert platform.imap.host not in hosts, platform.key


def _row(**fields):
    row = {
        "key": "x", "name": "X", "kind": "provider", "card": "X Mail", "mx": ["*.x-mail.net"],
        "imap": "imap.x-mail.net:993/ssl", "smtp": "smtp.x-mail.net:465/ssl",
        "source": "https://x-mail.net/help",
    }  # fmt: skip
    row.update(fields)
    return {k: v for k, v in row.items() if v is not None}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([_row(mx=["*.co.uk"])], "public suffix"),
        ([_row(mx=["*.github.io"])], "public suffix"),
        ([_row(mx=["mx.x-mail.net/"])], "not a host name"),
        ([_row(imap="imap.x-mail.net:993/plain")], "host:port/ssl"),
        ([_row(imap="imap.x-mail.net:143/ssl")], "does not take ssl"),
        ([_row(smtp="smtp.x-mail.net:99999/ssl")], "outside 1-65535"),
        ([_row(source="http://x-mail.net/help")], "https://"),
        ([_row(card=None, builtin="No Such Mail")], "no built-in provider"),
        ([_row(card=None, imap=None, smtp=None, builtin="Fastmail", login="email")], "drop login"),
        ([_row(kind="gateway")], "a gateway row has no"),
        ([_row(kind="unsupported", card=None, imap=None, smtp=None)], "reason"),
        ([_row(), _row(key="y", card="Y Mail")], "claimed by row x"),
        ([_row(), _row(key="x", mx=["*.y-mail.net"], card="Y")], "key 'x' is used twice"),
        ([_row(colour="blue")], "unknown field"),
        ([_row(spf=["in valid"])], "not a DNS name"),
        ("just: text", "expected a list"),
    ],
)
def test_it_refuses_a_malformed_table_naming_the_row(rows, message):
    import yaml

    with pytest.raises(PlatformTableError, match=message):
        parse(rows if isinstance(rows, str) else yaml.safe_dump(rows))


def test_it_loads_the_platform_cards_with_the_builtins(db):
    provider_load_builtins()
    for platform in platforms().platforms:
        if platform.kind == PROVIDER:
            card = _expected_card(platform)
            card.full_clean()
            assert card.source == Source.BUILTIN
    before = EmailProvider.objects.count()
    provider_load_builtins()
    assert EmailProvider.objects.count() == before


# -- every platform by its MX records -------------------------------------------------------


def test_it_recognises_a_company_domain_on_every_platform(db, discoverer, zone):
    discover = discoverer()
    table = platforms()
    for key, (domain, hosts) in EXAMPLES.items():
        platform = table.get(key)
        zone.mx(domain, *hosts)
        found = discover.discover(f"anna@{domain}")
        mx = f"(its MX record points to {hosts[0]})"
        if platform.kind == UNSUPPORTED:
            assert found.provider is None, key
            assert found.unsupported.startswith(f"Your domain's mail is handled by {platform.name}")
            assert platform.reason in found.unsupported
            assert not ProviderDomain.objects.filter(domain=domain).exists()
            continue
        assert found.step == "mx", (key, found.trace)
        assert found.provider == _expected_card(platform), key
        assert found.reason == f"Your domain's mail is handled by {platform.name} {mx}.", key
        if not platform.builtin:
            assert found.provider.imap_host == platform.imap.host
            assert found.provider.smtp_host == platform.smtp.host
            assert (found.provider.imap_port, found.provider.smtp_port) == (
                platform.imap.port,
                platform.smtp.port,
            )
        # Remembered: the next address at that domain is answered by the table.
        assert ProviderDomain.objects.get(domain=domain).source == Source.MX


def test_it_takes_a_rented_server_for_the_companys_own_not_the_hosters_service(
    db, discoverer, zone
):
    discover = discoverer()
    for key, (domain, hosts) in SERVER_EXAMPLES.items():
        zone.mx(domain, *hosts)
        found = discover.discover(f"anna@{domain}")
        assert found.provider is None, (key, found.trace)
        assert any("a server rented at" in line for line in found.trace), found.trace
        assert not ProviderDomain.objects.filter(domain=domain).exists()


def test_it_recognises_nothing_in_mx_hosts_no_platform_runs(db, discoverer, zone):
    """Negative examples beside the table's own: a company's own server, a look-alike of
    a platform's name, an unknown hoster."""
    discover = discoverer()
    for domain, host in [
        ("acme-corp.de", "mail.acme-corp.de"),
        ("evil-twin.test", "aspmx.l.google.com.evil-twin.test"),
        ("smallhost-customer.de", "mx1.smallhost-unknown.de"),
    ]:
        zone.mx(domain, host)
        found = discover.discover(f"anna@{domain}")
        assert found.provider is None, (domain, found.trace)
        assert not ProviderDomain.objects.filter(domain=domain).exists()


def test_it_says_how_it_recognised_microsoft_365_in_words_users_understand(db, discoverer, zone):
    zone.mx("acme-gmbh.de", "acme-gmbh-de.mail.protection.outlook.com")
    found = discoverer().discover("anna@acme-gmbh.de")
    assert found.provider.name == "Microsoft 365"
    assert (
        "Your domain's mail is handled by Microsoft 365 (its MX record points to "
        "acme-gmbh-de.mail.protection.outlook.com)."
    ) in found.trace[-1]
    assert found.found_via == "found via MX: Microsoft 365"


def test_it_reuses_the_ispdb_card_a_platform_row_names(db, discoverer, zone, shared_dir):
    config = parse_client_config((shared_dir / "ispdb" / "posteo.de.xml").read_bytes())
    imported = provider_import_config(config=config, source=Source.ISPDB).provider
    zone.mx("posteo-kunde.de", "mx01.posteo.de")
    found = discoverer().discover("anna@posteo-kunde.de")
    assert found.provider == imported
    assert not EmailProvider.objects.filter(ispdb_id="platform:posteo").exists()


def test_it_lets_an_administrators_card_override_the_table(db, discoverer, zone):
    ours = EmailProviderFactory(name="ACME Google (OAuth)", mx_suffixes="google.com")
    ours.source = Source.ADMIN
    ours.save()
    zone.mx("acme.test", "aspmx.l.google.com")
    assert discoverer().discover("anna@acme.test").provider == ours


def test_it_never_overwrites_an_edited_platform_card(db, discoverer, zone):
    provider_load_builtins()
    card = EmailProvider.objects.get(ispdb_id="platform:strato")
    card.imap_host = "imap.strato.example"
    card.save()
    zone.mx("praxis.test", "smtpin.rzone.de")
    found = discoverer().discover("anna@praxis.test")
    assert found.provider == card
    card.refresh_from_db()
    assert card.imap_host == "imap.strato.example"


# -- gateways and SPF hints ------------------------------------------------------------------


@pytest.mark.parametrize("key", list(GATEWAY_EXAMPLES))
def test_it_recognises_a_gateway_and_goes_on_without_guessing(db, discoverer, zone, key):
    domain, hosts = GATEWAY_EXAMPLES[key]
    gateway = platforms().get(key)
    zone.mx(domain, *hosts)
    zone.txt(domain, "v=spf1 ip4:192.0.2.0/24 -all")
    found = discoverer().discover(f"anna@{domain}")
    assert found.provider is None
    assert found.suggestions == []
    text = "\n".join(found.trace)
    assert f"first passes through {gateway.name}, a mail-security service" in text
    assert f"points to {hosts[0]}" in text
    # "Goes on": the next step (Exchange autodiscover) was asked.
    assert f"autodiscover.{domain}" in text
    assert "names no email provider this app knows" in text
    assert not ProviderDomain.objects.filter(domain=domain).exists()


@pytest.mark.parametrize("key", list(GATEWAY_EXAMPLES))
def test_it_suggests_the_provider_the_spf_record_names_behind_a_gateway(db, discoverer, zone, key):
    domain, hosts = GATEWAY_EXAMPLES[key]
    include = SPF_BEHIND[key]
    behind = platforms().match_spf(include)
    zone.mx(domain, *hosts)
    zone.txt(domain, f"v=spf1 include:{include} include:_netblocks.gateway.example ~all")
    found = discoverer().discover(f"anna@{domain}")
    # A hint is never chosen: the user confirms it in the wizard.
    assert found.provider is None
    assert [s.provider for s in found.suggestions] == [_expected_card(behind)]
    assert found.suggestions[0].evidence == f"include:{include}"
    assert f"lets {behind.name} send its email (include:{include})" in found.suggestions[0].text
    assert found.trace[-1].startswith("No provider found for certain: please confirm")
    assert not ProviderDomain.objects.filter(domain=domain).exists()


def test_it_reads_an_spf_record_split_into_several_strings(db, discoverer, zone):
    # Real SPF records longer than 255 bytes come in pieces; the include may straddle one.
    spf = "v=spf1 " + " ".join(f"ip4:198.51.100.{n}" for n in range(30))
    spf += " include:spf.protection.outlook.com -all"
    assert len(spf) > 400
    zone.mx("longspf.test", "eu-smtp-inbound-1.mimecast.com")
    zone.txt("longspf.test", spf)
    found = discoverer().discover("anna@longspf.test")
    assert [s.provider.name for s in found.suggestions] == ["Microsoft 365"]


def test_it_finds_microsoft_365_behind_a_gateway_by_its_autodiscover_alias(db, discoverer, zone):
    zone.mx("lawfirm.test", "eu-smtp-inbound-1.mimecast.com")
    zone.txt("lawfirm.test", "v=spf1 include:spf.protection.outlook.com ~all")
    zone.cname("autodiscover.lawfirm.test", "autodiscover.outlook.com")
    found = discoverer().discover("anna@lawfirm.test")
    assert found.provider.name == "Microsoft 365"
    assert found.step == "autodiscover"
    assert "autodiscover.lawfirm.test points to autodiscover.outlook.com" in found.reason


def test_it_offers_an_unsupported_platform_with_its_reason(db, discoverer, zone):
    zone.mx("privacy.test", "mail.protonmail.ch", "mailsec.protonmail.ch")
    found = discoverer().discover("anna@privacy.test")
    assert found.provider is None
    assert "Proton Mail" in found.unsupported
    assert "Proton Mail Bridge" in found.unsupported
    assert found.trace[-1].startswith("No provider found that this app can connect to")


# -- Exchange autodiscover by DNS ------------------------------------------------------------

JSON_PATH = "/autodiscover/autodiscover.json/v1.0/{email}?Protocol=EWS"
POX_PATH = "/autodiscover/autodiscover.xml"


def _json(url):
    return json.dumps({"Protocol": "EWS", "Url": url}).encode()


def _pox(*, ews=None, redirect_url=None, redirect_addr=None, error=None, internal_only=False):
    if internal_only:
        inner = (
            "<Account><AccountType>email</AccountType><Action>settings</Action>"
            "<Protocol><Type>EXCH</Type><Server>ex01.corp.local</Server>"
            "<EwsUrl>https://ex01.corp.local/EWS/Exchange.asmx</EwsUrl></Protocol></Account>"
        )
    elif error:
        inner = f"<Error><ErrorCode>500</ErrorCode><Message>{error}</Message></Error>"
    elif redirect_url:
        inner = (
            "<Account><Action>redirectUrl</Action>"
            f"<RedirectUrl>{redirect_url}</RedirectUrl></Account>"
        )
    elif redirect_addr:
        inner = (
            "<Account><Action>redirectAddr</Action>"
            f"<RedirectAddr>{redirect_addr}</RedirectAddr></Account>"
        )
    else:
        inner = (
            "<Account><AccountType>email</AccountType><Action>settings</Action>"
            "<Protocol><Type>EXCH</Type><Server>ex01.corp.local</Server>"
            "<EwsUrl>https://ex01.corp.local/EWS/Exchange.asmx</EwsUrl></Protocol>"
            f"<Protocol><Type>EXPR</Type><EwsUrl>{ews}</EwsUrl></Protocol></Account>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">'
        '<Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">'
        f"{inner}</Response></Autodiscover>"
    ).encode()


def _no_password_sent(site):
    for request in site.routes.log:
        assert "Authorization" not in request["headers"], request
        assert b"secret" not in request["body"].lower()


def test_it_finds_an_on_premises_exchange_by_autodiscover_json(db, discoverer, zone, site):
    ews = "https://mail.onprem-json.test/EWS/Exchange.asmx"
    site.routes.add(
        "autodiscover.onprem-json.test",
        JSON_PATH.format(email="anna@onprem-json.test"),
        _json(ews),
        Content_Type="application/json",
    )
    zone.mx("onprem-json.test", "mail.onprem-json.test")
    found = discoverer().discover("anna@onprem-json.test")
    assert found.step == "autodiscover"
    assert found.found_via == "found by Exchange autodiscover"
    card = found.provider
    assert card.service_type == ServiceType.EXCHANGE
    assert card.exchange_url == ews
    assert card.source == Source.AUTOCONFIG
    assert card.name == "Exchange server of onprem-json.test"
    assert list(card.domains.values_list("domain", flat=True)) == ["onprem-json.test"]
    assert found.reason == (
        "Your domain runs its own Microsoft Exchange server: autodiscover at "
        f"autodiscover.onprem-json.test named its address, {ews}."
    )
    # The MX step said what it saw first, in words.
    assert any(
        "mail.onprem-json.test, which no provider this app knows runs" in line
        for line in found.trace
    )
    _no_password_sent(site)
    # Next time the table answers, and the card is not offered to other domains.
    assert discoverer().discover("ben@onprem-json.test").step == "table"
    assert card not in providers_matching("Exchange", "elsewhere.test")
    assert card in providers_matching("Exchange", "onprem-json.test")


def test_it_finds_an_exchange_by_autodiscover_pox_without_a_password(db, discoverer, site):
    ews = "https://owa.onprem-pox.test/EWS/Exchange.asmx"
    site.routes.add("autodiscover.onprem-pox.test", POX_PATH, _pox(ews=ews))
    found = discoverer().discover("anna@onprem-pox.test")
    assert found.provider.exchange_url == ews  # the external (EXPR) address, not EXCH's
    posts = [r for r in site.routes.log if r["method"] == "POST"]
    assert len(posts) == 1
    assert b"<EMailAddress>anna@onprem-pox.test</EMailAddress>" in posts[0]["body"]
    assert posts[0]["headers"]["Content-Type"].startswith("text/xml")
    _no_password_sent(site)


def test_it_follows_autodiscover_redirects_on_https_only(db, discoverer, site):
    ews = "https://mail.central-exchange.test/EWS/Exchange.asmx"
    # An HTTP redirect of the JSON address, then a POX redirectUrl elsewhere.
    site.routes.add(
        "autodiscover.redirect.test",
        JSON_PATH.format(email="anna@redirect.test"),
        b"",
        status=302,
        Location="https://ad.central-exchange.test/nothing-here",
    )
    site.routes.add(
        "autodiscover.redirect.test",
        POX_PATH,
        _pox(redirect_url="https://ad.central-exchange.test/autodiscover/autodiscover.xml"),
    )
    site.routes.add("ad.central-exchange.test", POX_PATH, _pox(ews=ews))
    found = discoverer().discover("anna@redirect.test")
    assert found.provider.exchange_url == ews
    assert ("ad.central-exchange.test", "/nothing-here") in site.routes.requests
    assert any("sends discovery on to https://ad.central-exchange.test" in t for t in found.trace)
    _no_password_sent(site)


def test_it_follows_a_redirect_to_another_address(db, discoverer, site):
    ews = "https://mail.renamed.test/EWS/Exchange.asmx"
    site.routes.add("autodiscover.moved.test", POX_PATH, _pox(redirect_addr="anna@renamed.test"))
    site.routes.add("autodiscover.renamed.test", POX_PATH, _pox(ews=ews))
    found = discoverer().discover("anna@moved.test")
    assert found.provider.exchange_url == ews
    # The card is for the domain the user typed.
    assert found.provider.domains.get().domain == "moved.test"
    posts = [r for r in site.routes.log if r["method"] == "POST"]
    assert b"anna@renamed.test" in posts[-1]["body"]


def test_it_refuses_a_redirect_to_plain_http(db, discoverer, site):
    site.routes.add(
        "autodiscover.plain.test",
        POX_PATH,
        _pox(redirect_url="http://autodiscover.plain.test/autodiscover/autodiscover.xml"),
    )
    found = discoverer().discover("anna@plain.test")
    assert found.provider is None
    assert any("only https:// addresses are used" in line for line in found.trace)


def test_it_stops_a_redirect_loop(db, discoverer, site):
    site.routes.add(
        "autodiscover.plain.test",
        POX_PATH,
        _pox(redirect_url="https://autodiscover.plain.test/autodiscover/autodiscover.xml"),
    )
    found = discoverer().discover("anna@plain.test")
    assert found.provider is None
    assert any("stopped after 3 redirects" in line for line in found.trace)


def test_it_finds_the_autodiscover_server_of_the_srv_record(db, discoverer, zone, site):
    ews = "https://mail.exchange-hoster.test/EWS/Exchange.asmx"
    # autodiscover.srv-corp.test does not exist; the SRV record names a hoster's server.
    zone.srv("_autodiscover._tcp.srv-corp.test", "mail.exchange-hoster.test", 443)
    site.routes.add(
        "mail.exchange-hoster.test", JSON_PATH.format(email="anna@srv-corp.test"), _json(ews)
    )
    found = discoverer().discover("anna@srv-corp.test")
    assert found.provider.exchange_url == ews
    text = "\n".join(found.trace)
    assert "autodiscover.srv-corp.test does not resolve" in text
    assert (
        "_autodiscover._tcp.srv-corp.test record names the server mail.exchange-hoster.test" in text
    )


def test_it_sends_no_password_to_an_autodiscover_that_asks_for_one(db, discoverer, site):
    site.routes.add("autodiscover.locked.test", POX_PATH, b"", status=401, WWW_Authenticate="NTLM")
    found = discoverer().discover("anna@locked.test")
    assert found.provider is None
    assert any(
        "asks for a password before it names the server; discovery never sends one" in line
        for line in found.trace
    )
    _no_password_sent(site)


def test_it_recognises_microsoft_365_in_an_autodiscover_answer(db, discoverer, site):
    site.routes.add(
        "autodiscover.m365-ews.test",
        JSON_PATH.format(email="anna@m365-ews.test"),
        _json("https://outlook.office365.com/EWS/Exchange.asmx"),
    )
    found = discoverer().discover("anna@m365-ews.test")
    assert found.provider.name == "Microsoft 365"
    assert not EmailProvider.objects.filter(ispdb_id="autodiscover:m365-ews.test").exists()


@pytest.mark.parametrize(
    ("ews", "why"),
    [
        ("http://mail.bad-ews.test/EWS/Exchange.asmx", "not encrypted"),
        ("https://[::1]/EWS/Exchange.asmx", "not a server name"),
        ("https://192.0.2.7/EWS/Exchange.asmx", "not a server name"),
        (f"https://mail.bad-ews.test/{'x' * 200}", "longer than 200"),
        ("https://ex01.corp.local/EWS/Exchange.asmx", "only the company's own network"),
        ("https://mail.home.arpa/EWS/Exchange.asmx", "only the company's own network"),
    ],
)
def test_it_refuses_an_unusable_exchange_address(db, discoverer, site, ews, why):
    site.routes.add(
        "autodiscover.bad-ews.test", JSON_PATH.format(email="anna@bad-ews.test"), _json(ews)
    )
    found = discoverer().discover("anna@bad-ews.test")
    assert found.provider is None
    assert any(why in line for line in found.trace), found.trace


def test_it_never_saves_an_exchange_only_the_companys_network_knows(db, discoverer, site):
    site.routes.add("autodiscover.inside-only.test", POX_PATH, _pox(internal_only=True))
    found = discoverer().discover("anna@inside-only.test")
    assert found.provider is None
    assert not EmailProvider.objects.filter(exchange_url__contains="corp.local").exists()
    assert any("only the company's own network" in line for line in found.trace), found.trace


def test_it_cuts_long_lines_of_the_trace(db, discoverer, site):
    site.routes.add("autodiscover.chatty.test", POX_PATH, _pox(error="x" * 5000))
    found = discoverer().discover("anna@chatty.test")
    assert found.trace
    assert max(len(line) for line in found.trace) <= 300
    assert any(line.endswith("…") for line in found.trace), found.trace


def test_it_keeps_the_internal_address_rule_for_autodiscover(db, zone, site):
    site.routes.add(
        "autodiscover.internal.test",
        JSON_PATH.format(email="anna@internal.test"),
        _json("https://mail.internal.test/EWS/Exchange.asmx"),
    )
    zone.srv("_autodiscover._tcp.internal.test", "autodiscover.internal.test", 443)
    discover = Discoverer(
        # Loopback is internal: without allow_internal nothing may be fetched from it.
        fetcher=HttpsFetcher(ssl_context=site.client_context(), resolve=_resolve(site)),
        dns=DnsLookup(zone.resolver()),
        use_ispdb=False,
        use_autoconfig=False,
        use_mx=False,
        use_autodiscover=True,
    )
    found = discover.discover("anna@internal.test")
    assert found.provider is None
    assert sum("internal network address; not contacted" in t for t in found.trace) == 2
    assert site.routes.log == []


# -- parent domains ----------------------------------------------------------------------------


def test_it_walks_parent_domains_only_down_to_the_registrable_domain():
    assert parent_domains("mail.sub.example.co.uk") == ["sub.example.co.uk", "example.co.uk"]
    assert parent_domains("a.b.example.co.uk") == ["b.example.co.uk", "example.co.uk"]
    assert parent_domains("example.co.uk") == []
    assert parent_domains("de.acme.com") == ["acme.com"]
    # Private suffixes of the list separate owners too.
    assert parent_domains("shop.alice.github.io") == ["alice.github.io"]
    assert registrable_domain("co.uk") is None


def test_it_finds_a_subdomain_by_its_parent_in_the_table_never_a_public_suffix(db, discoverer):
    acme = EmailProviderFactory(name="ACME Mail")
    ProviderDomainFactory(domain="example.co.uk", provider=acme)
    ProviderDomainFactory(domain="co.uk", provider=EmailProviderFactory(name="Wrong"))
    found = discoverer(use_mx=False, use_autodiscover=False).discover("anna@a.b.example.co.uk")
    assert found.provider == acme
    assert found.step == "table"
    assert (
        found.reason
        == "example.co.uk, the domain a.b.example.co.uk belongs to, is served by ACME Mail."
    )
    other = discoverer(use_mx=False, use_autodiscover=False).discover("anna@a.b.other.co.uk")
    assert other.provider is None
    assert (
        "no entry for a.b.other.co.uk or the domains it belongs to (b.other.co.uk, other.co.uk)"
        in other.trace[0]
    )


def test_it_asks_ispdb_about_parent_domains_but_never_a_public_suffix(
    db, discoverer, site, shared_dir
):
    posteo = (shared_dir / "ispdb" / "posteo.de.xml").read_bytes()
    site.routes.add("ispdb.test", "/v1.1/posteo.de", posteo)
    site.routes.add("ispdb.test", "/v1.1/co.uk", posteo)
    discover = discoverer(use_ispdb=True, use_mx=False, use_autodiscover=False)

    found = discover.discover("anna@mail.team.posteo.de")
    assert found.step == "ispdb"
    assert found.provider.ispdb_id == "posteo.de"
    assert "posteo.de, the domain mail.team.posteo.de belongs to, is served by" in found.reason
    asked = [path for host, path in site.routes.requests if host == "ispdb.test"]
    assert asked == ["/v1.1/mail.team.posteo.de", "/v1.1/team.posteo.de", "/v1.1/posteo.de"]

    site.routes.requests.clear()
    missing = discover.discover("anna@a.b.example.co.uk")
    assert missing.provider is None
    asked = [path for host, path in site.routes.requests if host == "ispdb.test"]
    assert asked == ["/v1.1/a.b.example.co.uk", "/v1.1/b.example.co.uk", "/v1.1/example.co.uk"]


# -- time bounds -------------------------------------------------------------------------------


def test_it_bounds_the_spf_lookup_behind_a_gateway(db, discoverer, zone):
    zone.mx("slowspf.test", "eu-smtp-inbound-1.mimecast.com")
    zone.silence("slowspf.test", "TXT")
    started = time.monotonic()
    found = discoverer(step_timeout=1, total_timeout=10, use_autodiscover=False).discover(
        "anna@slowspf.test"
    )
    elapsed = time.monotonic() - started
    assert any(
        "SPF record: could not be read" in line and "timed out" in line for line in found.trace
    )
    assert elapsed < 1 + 1.0


def test_it_keeps_the_whole_call_within_its_bound_when_dns_hangs(db, discoverer, zone):
    # MX answers with a gateway; TXT, CNAME and SRV never answer: the total bound cuts in.
    zone.mx("hang.test", "eu-smtp-inbound-1.mimecast.com")
    for rdtype in ("TXT", "CNAME"):
        zone.silence("hang.test" if rdtype == "TXT" else "autodiscover.hang.test", rdtype)
    zone.silence("_autodiscover._tcp.hang.test", "SRV")
    started = time.monotonic()
    found = discoverer(step_timeout=1, total_timeout=2.5).discover("anna@hang.test")
    elapsed = time.monotonic() - started
    assert found.provider is None
    assert elapsed < 2.5 + 1.0, found.trace


# -- the closing figure ------------------------------------------------------------------------


def test_it_measures_the_recognition_rate_over_the_example_domains(
    db, discoverer, zone, site, capsys
):
    """Every example domain of this file, counted as a user meets it: recognised with no
    manual step (a provider found, or an unsupported platform named with its reason), or
    a suggestion to confirm (a gateway with an SPF hint), or nothing."""
    discover = discoverer()
    outcomes = {"automatic": [], "suggested": [], "missed": []}

    def count(address, ok_automatic, ok_suggested=lambda r: False):
        found = discover.discover(address)
        if ok_automatic(found):
            outcomes["automatic"].append(address)
        elif ok_suggested(found):
            outcomes["suggested"].append(address)
        else:
            outcomes["missed"].append((address, found.trace))

    table = platforms()
    for key, (domain, hosts) in EXAMPLES.items():
        platform = table.get(key)
        zone.mx(domain, *hosts)
        if platform.kind == UNSUPPORTED:
            count(f"anna@{domain}", lambda r, p=platform: p.reason in r.unsupported)
        else:
            count(f"anna@{domain}", lambda r, p=platform: r.provider == _expected_card(p))
    for key, (domain, hosts) in GATEWAY_EXAMPLES.items():
        behind = table.match_spf(SPF_BEHIND[key])
        zone.mx(domain, *hosts)
        zone.txt(domain, f"v=spf1 include:{SPF_BEHIND[key]} ~all")
        if behind.key == "microsoft-365":
            # Microsoft 365 customers have autodiscover.<domain> pointing to Microsoft.
            zone.cname(f"autodiscover.{domain}", "autodiscover.outlook.com")
        count(
            f"anna@{domain}",
            lambda r, b=behind: r.provider is not None and r.provider == _expected_card(b),
            lambda r, b=behind: [s.provider for s in r.suggestions] == [_expected_card(b)],
        )
    # On-premises Exchange by autodiscover, and subdomains of known domains.
    ews = "https://mail.onprem-json.test/EWS/Exchange.asmx"
    site.routes.add(
        "autodiscover.onprem-json.test", JSON_PATH.format(email="anna@onprem-json.test"), _json(ews)
    )
    count(
        "anna@onprem-json.test", lambda r: r.provider is not None and r.provider.exchange_url == ews
    )
    count(
        "anna@sales.acme-gmbh.de",
        lambda r: r.provider is not None and r.provider.name == "Gmail / Google Workspace",
    )
    count(
        "anna@eu.acme-de.com",
        lambda r: r.provider is not None and r.provider.name == "Microsoft 365",
    )

    total = sum(len(v) for v in outcomes.values())
    automatic, suggested = len(outcomes["automatic"]), len(outcomes["suggested"])
    with capsys.disabled():
        print(
            f"\nCompany domains: {automatic}/{total} example domains recognised with no manual "
            f"step ({100 * automatic / total:.1f}%), {suggested} more offered as a suggestion "
            f"to confirm (a gateway with an SPF hint), {len(outcomes['missed'])} missed."
        )
    assert outcomes["missed"] == []


def test_it_prints_the_trace_and_the_outcome_on_the_command_line(db):
    from io import StringIO

    from django.core.management import call_command

    ProviderDomainFactory(domain="acme.test", provider=EmailProviderFactory(name="ACME Mail"))
    out = StringIO()
    call_command("discover_provider", "anna@de.acme.test", stdout=out)
    assert (
        "acme.test, the domain de.acme.test belongs to, is served by ACME Mail." in out.getvalue()
    )
    assert "anna@de.acme.test: found in Email providers domains: ACME Mail" in out.getvalue()
