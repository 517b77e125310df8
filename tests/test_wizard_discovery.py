"""The wizard shows what discovery found and how (issue 20): the reason in words, the
trace, an SPF hint as a suggestion the user confirms, an unsupported platform with its
reason; and an on-premises Exchange found by autodiscover signs in for real (against
the suite's EWS fake).

The wizard's discovery is the app's own Discoverer, pointed at the loopback DNS and
HTTPS servers instead of the internet (the tests reach no other).
"""

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from accounts.models import EmailAccount
from providers.discovery import Discoverer, DnsLookup, FetchError, HttpsFetcher
from providers.models import EmailProvider, ProviderDomain, Source
from tests.factories import UserFactory
from tests.servers.dns import ZoneDnsServer
from tests.servers.https import HttpsServer

AUTODISCOVER = "autodiscover.e2e-corp.test"


@pytest.fixture(scope="module")
def zone_server():
    server = ZoneDnsServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def web():
    server = HttpsServer([AUTODISCOVER]).start()
    yield server
    server.stop()


@pytest.fixture
def zone(zone_server):
    zone_server.clear()
    return zone_server


@pytest.fixture
def wizard_discovery(monkeypatch, zone, web):
    def resolve(host, port, timeout):
        if host in web.hostnames:
            return [("127.0.0.1", web.port)]
        raise FetchError(f"{host} does not resolve", not_found=True)

    def discover(address):
        return Discoverer(
            fetcher=HttpsFetcher(
                ssl_context=web.client_context(), resolve=resolve, allow_internal=True
            ),
            dns=DnsLookup(zone.resolver()),
            use_ispdb=False,
            use_autoconfig=False,
            use_mx=True,
            use_autodiscover=True,
        ).discover(address)

    monkeypatch.setattr("accounts.views.wizard.discover", discover)
    return zone


@pytest.fixture
def signed_in(client, db):
    client.force_login(UserFactory())
    return client


def _start(client, address):
    return client.post(reverse("accounts:wizard_address"), {"address": address})


def test_it_says_how_it_found_the_provider_on_the_sign_in_step(signed_in, wizard_discovery):
    wizard_discovery.mx("acme-gmbh.de", "acme-gmbh-de.mail.protection.outlook.com")
    response = _start(signed_in, "anna@acme-gmbh.de")
    assert response.status_code == 302
    assert parse_qs(urlsplit(response.url).query)["via"] == ["mx"]
    page = signed_in.get(response.url).text
    assert (
        "Your domain&#x27;s mail is handled by Microsoft 365 (its MX record points to "
        "acme-gmbh-de.mail.protection.outlook.com)."
    ) in page
    assert "How we looked for your provider" in page
    assert "this app&#x27;s list has no entry for acme-gmbh.de" in page


def test_it_offers_the_spf_hint_as_a_suggestion_the_user_confirms(signed_in, wizard_discovery):
    wizard_discovery.mx("lawfirm.de", "eu-smtp-inbound-1.mimecast.com")
    wizard_discovery.txt("lawfirm.de", "v=spf1 include:_spf.google.com include:mimecast.org ~all")
    response = _start(signed_in, "anna@lawfirm.de")
    # Not chosen: the user lands on the provider step, where the hint is a suggestion.
    assert response.url.startswith(reverse("accounts:wizard_provider"))
    gmail = EmailProvider.objects.get(name="Gmail / Google Workspace")
    page = signed_in.get(response.url).text
    assert "first passes through Mimecast, a mail-security service" in page
    assert "Suggestion:" in page
    assert "lets Google Workspace send its email (include:_spf.google.com)" in page
    assert f'data-suggestion="{gmail.pk}"' in page
    assert "Yes, use Gmail / Google Workspace" in page
    assert not ProviderDomain.objects.filter(domain="lawfirm.de").exists()

    confirmed = signed_in.post(response.url, {"provider": gmail.pk, "via": "spf"})
    assert confirmed.status_code == 302
    query = parse_qs(urlsplit(confirmed.url).query)
    assert query["provider"] == [str(gmail.pk)] and query["via"] == ["spf"]
    page = signed_in.get(confirmed.url).text
    assert "suggested by your domain&#x27;s SPF record, confirmed by you" in page
    # The suggestion's buttons are for the provider step only.
    assert "Yes, use" not in page


def test_it_names_an_unsupported_platform_and_why(signed_in, wizard_discovery):
    wizard_discovery.mx("privacy.de", "mail.protonmail.ch")
    response = _start(signed_in, "anna@privacy.de")
    page = signed_in.get(response.url).text
    assert 'id="discovery-unsupported"' in page
    assert "handled by Proton Mail, which this app cannot connect to" in page
    assert "Proton Mail Bridge" in page


def test_it_shows_nothing_for_another_address(signed_in, wizard_discovery):
    wizard_discovery.mx("privacy.de", "mail.protonmail.ch")
    _start(signed_in, "anna@privacy.de")
    url = f"{reverse('accounts:wizard_provider')}?address=ben%40other.test"
    assert 'id="discovery-note"' not in signed_in.get(url).text


def test_it_signs_in_to_an_exchange_found_by_autodiscover(
    signed_in, wizard_discovery, web, ews_server, mail_trust
):
    ews_server.add_user("anna@e2e-corp.test", "anna-secret", name="Anna Admin")
    web.routes.add(
        AUTODISCOVER,
        "/autodiscover/autodiscover.json/v1.0/anna@e2e-corp.test?Protocol=EWS",
        json.dumps({"Protocol": "EWS", "Url": ews_server.ews_url}).encode(),
    )
    response = _start(signed_in, "anna@e2e-corp.test")
    assert parse_qs(urlsplit(response.url).query)["via"] == ["autodiscover"]
    card = EmailProvider.objects.get(ispdb_id="autodiscover:e2e-corp.test")
    assert card.source == Source.AUTOCONFIG
    # Discovery sent no password anywhere; the page names the server before one is typed.
    assert all("Authorization" not in r["headers"] for r in web.routes.log)
    page = signed_in.get(response.url).text
    assert f"Signing in checks Exchange (EWS) at {ews_server.ews_url}" in page
    assert "found by Exchange autodiscover" in page
    assert "Your domain runs its own Microsoft Exchange server" in page

    ews_server.state.requests.clear()
    try:
        done = signed_in.post(response.url, {"password": "anna-secret"})
        assert done.status_code == 302, done.text
        account = EmailAccount.objects.get(address="anna@e2e-corp.test")
        assert account.provider == card
        assert ews_server.calls("GetFolder") >= 1
    finally:
        # The fake is the session's: tests after this one count its calls from zero.
        ews_server.state.requests.clear()


def test_it_offers_a_parents_own_server_to_an_address_of_a_subdomain(signed_in, db):
    """A card a domain's own records made speaks for that domain and its subdomains
    (found for sales.corp.test through corp.test): the sign-in step opens, it was a 404."""
    from providers.models import ProviderDomain

    card = EmailProvider.objects.create(
        name="Exchange server of corp-parent.test", service_type="exchange",
        exchange_url="https://mail.corp-parent.test/EWS/Exchange.asmx", imap_host="",
        smtp_host="", source=Source.AUTOCONFIG, ispdb_id="autodiscover:corp-parent.test",
    )  # fmt: skip
    ProviderDomain.objects.create(
        domain="corp-parent.test", provider=card, source=Source.AUTOCONFIG
    )
    response = _start(signed_in, "ben@sales.corp-parent.test")
    assert response.status_code == 302
    assert f"provider={card.pk}" in response.url
    assert signed_in.get(response.url).status_code == 200
    # Never to a stranger's domain.
    other = signed_in.get(response.url.replace("sales.corp-parent.test", "else.test"))
    assert other.status_code in (302, 404)
