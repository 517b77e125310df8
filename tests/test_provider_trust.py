"""Providers users can trust (issue 15, point 4): a provider that discovery made from a
domain's own autoconfig is offered for that domain only; the choose-provider list holds
built-in, administrators' and ISPDB providers; no name passes for a built-in one; the
sign-in step always names the hosts that will receive the password."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from providers.admin import EmailProviderForm
from providers.discovery import Discoverer, FetchError, HttpsFetcher
from providers.ispdb import parse_client_config
from providers.models import AuthMethod, EmailProvider, ServiceType, Source
from providers.services import provider_import_config
from tests.factories import EmailProviderFactory, ProviderDomainFactory, UserFactory
from tests.servers.https import HttpsServer

AUTOCONFIG = """<?xml version="1.0"?>
<clientConfig version="1.1"><emailProvider id="%(domain)s">
  <domain>%(domain)s</domain><domain>gmail.com</domain>
  <displayName>%(name)s</displayName>
  <incomingServer type="imap"><hostname>imap.%(domain)s</hostname><port>993</port>
    <socketType>SSL</socketType><username>%%EMAILADDRESS%%</username>
    <authentication>password-cleartext</authentication></incomingServer>
  <outgoingServer type="smtp"><hostname>smtp.%(domain)s</hostname><port>465</port>
    <socketType>SSL</socketType><username>%%EMAILADDRESS%%</username>
    <authentication>password-cleartext</authentication></outgoingServer>
</emailProvider></clientConfig>"""


def _config(domain: str, name: str):
    return parse_client_config(AUTOCONFIG % {"domain": domain, "name": name})


@pytest.fixture(scope="module")
def autoconfig_server():
    server = HttpsServer(["autoconfig.evil.test"]).start()
    yield server
    server.stop()


def _discover(server, address: str):
    """Discovery for real, against the domain's own autoconfig on loopback."""

    def resolve(host, port, timeout):
        if host in server.hostnames:
            return [("127.0.0.1", server.port)]
        raise FetchError(f"{host} does not resolve", not_found=True)

    fetcher = HttpsFetcher(
        ssl_context=server.client_context(), resolve=resolve, allow_internal=True
    )
    return Discoverer(
        fetcher=fetcher, ispdb_url="https://ispdb.invalid/", mx_resolver=lambda d, t: [],
        step_timeout=3, total_timeout=8, use_ispdb=False, use_autoconfig=True, use_mx=False,
    ).discover(address)  # fmt: skip


def _wizard(name: str, **params) -> str:
    return f"{reverse(name)}?{urlencode(params)}"


def test_it_offers_a_provider_from_a_domains_autoconfig_for_that_domain_only(
    client, db, autoconfig_server
):
    autoconfig_server.routes.add(
        "autoconfig.evil.test", "/mail/config-v1.1.xml",
        (AUTOCONFIG % {"domain": "evil.test", "name": "Evil Corp Mail"}).encode(),
    )  # fmt: skip
    found = _discover(autoconfig_server, "boss@evil.test")
    assert found.step == "autoconfig"
    evil = found.provider
    assert evil.source == Source.AUTOCONFIG
    listed = {
        source: EmailProviderFactory(name=f"{source} provider", source=source)
        for source in (Source.BUILTIN, Source.ADMIN, Source.ISPDB)
    }
    by_mx = EmailProviderFactory(name="Learned by MX", source=Source.MX)
    client.force_login(UserFactory())

    # Someone at another domain: the list, a crafted pick, a crafted sign-in URL.
    page = client.get(_wizard("accounts:wizard_provider", address="ann@victim.test")).text
    for provider in listed.values():
        assert f'value="{provider.pk}"' in page
    assert f'value="{evil.pk}"' not in page and f'value="{by_mx.pk}"' not in page
    searched = client.get(
        _wizard("accounts:wizard_provider", address="ann@victim.test", q="Evil"),
        HTTP_HX_REQUEST="true", HTTP_HX_TARGET="provider-list",
    )  # fmt: skip
    assert "Evil Corp Mail" not in searched.text
    picked = client.post(
        _wizard("accounts:wizard_provider", address="ann@victim.test"), {"provider": evil.pk}
    )
    assert picked.status_code == 200 and "Choose your email provider from the list." in (
        picked.text
    )
    sign_in = _wizard("accounts:wizard_sign_in", address="ann@victim.test", provider=evil.pk)
    assert client.get(sign_in).status_code == 404
    assert client.post(sign_in, {"password": "secret"}).status_code == 404
    start = client.post(
        reverse("accounts:wizard_oauth_start"), {"address": "ann@victim.test", "provider": evil.pk}
    )
    assert start.status_code == 404

    # Someone at the domain itself is offered it.
    own = client.get(_wizard("accounts:wizard_sign_in", address="cfo@evil.test", provider=evil.pk))
    assert own.status_code == 200 and "imap.evil.test" in own.text
    page = client.get(_wizard("accounts:wizard_provider", address="cfo@evil.test")).text
    assert f'value="{evil.pk}"' in page


@pytest.mark.parametrize(
    "name", ["Gmail", "GMaiI", "Gmai1 / Google Workspace", "Outl00k.com", "Micros0ft 365",
             "Gm\u0430il", "Yahoo! Mail", "Google Mail", "Hotmail", "Fastmai1"],
)  # fmt: skip
def test_it_suffixes_a_discovered_or_imported_name_that_passes_for_a_built_in(
    db, builtin_providers, name
):
    outcome = provider_import_config(
        config=_config("evil.test", name), source=Source.AUTOCONFIG,
        only_domains=["evil.test"], config_id="autoconfig:evil.test",
    )  # fmt: skip
    assert outcome.provider.name == f"{name} (autoconfig:evil.test)"
    imported = provider_import_config(config=_config("isp.test", name), source=Source.ISPDB)
    assert imported.provider.name == f"{name} (isp.test)"


def test_it_keeps_an_ordinary_name(db, builtin_providers):
    outcome = provider_import_config(
        config=_config("acme.test", "Acme Mail"), source=Source.AUTOCONFIG,
        only_domains=["acme.test"], config_id="autoconfig:acme.test",
    )  # fmt: skip
    assert outcome.provider.name == "Acme Mail"


def _card(**overrides) -> dict:
    return {
        "name": "Acme Mail", "service_type": "imap_smtp", "receive_enabled": "on",
        "send_enabled": "on", "imap_host": "imap.acme.test", "imap_port": 993,
        "imap_security": "ssl", "smtp_host": "smtp.acme.test", "smtp_port": 465,
        "smtp_security": "ssl", "login_format": "email", "auth_method": "password",
        **overrides,
    }  # fmt: skip


@pytest.mark.parametrize("name", ["Gmail", "G mail", "Outlook", "iCl0ud Mail", "Zoho Mail"])
def test_it_refuses_a_name_that_passes_for_a_built_in_on_cards_people_make(client, db, name):
    form = EmailProviderForm(data=_card(name=name))
    assert not form.is_valid()
    assert "could be taken for the built-in provider" in form.errors["name"][0]
    manager = UserFactory()
    from django.contrib.auth.models import Permission

    manager.user_permissions.add(Permission.objects.get(codename="manage_email_providers"))
    client.force_login(manager)
    url = _wizard("accounts:wizard_new_server", address="it@acme.test")
    before = EmailProvider.objects.count()
    response = client.post(url, _card(name=name))
    assert "could be taken for the built-in provider" in response.text
    assert EmailProvider.objects.count() == before
    assert EmailProviderForm(data=_card(name="Acme Mail")).is_valid()


def test_it_lets_a_built_in_card_keep_its_own_name(db, builtin_providers):
    gmail = EmailProvider.objects.get(name="Gmail / Google Workspace")
    data = {
        field: getattr(gmail, field) for field in EmailProviderForm.Meta.fields
        if getattr(gmail, field) not in (None, False)
    }  # fmt: skip
    form = EmailProviderForm(data={**data, "imap_port": 993}, instance=gmail)
    assert form.is_valid(), form.errors


def test_it_always_names_the_hosts_that_receive_the_password(client, db):
    client.force_login(UserFactory())
    imap = EmailProviderFactory(
        name="Acme", imap_host="imap.%EMAILDOMAIN%", smtp_host="smtp.out.test"
    )
    oauth = EmailProviderFactory(
        name="Corp SSO", auth_method=AuthMethod.OAUTH2,
        oauth_authorize_url="https://login.corp.test/oauth2/authorize",
    )  # fmt: skip
    exchange = EmailProviderFactory(
        name="Corp Exchange", service_type=ServiceType.EXCHANGE, imap_host="", smtp_host=""
    )
    for provider in (imap, oauth, exchange):
        ProviderDomainFactory(domain=f"{provider.pk}.corp.test", provider=provider)

    def page(provider):
        url = _wizard(
            "accounts:wizard_sign_in", address=f"ann@{provider.pk}.corp.test", provider=provider.pk
        )
        return client.get(url).text

    assert f"imap.{imap.pk}.corp.test" in page(imap) and "smtp.out.test" in page(imap)
    assert "You type your password on <strong>login.corp.test</strong>" in page(oauth)
    shown = page(exchange)
    assert f"<strong>{exchange.pk}.corp.test</strong>" in shown
    assert f"<strong>autodiscover.{exchange.pk}.corp.test</strong>" in shown


@pytest.mark.parametrize(
    "name",
    [
        # Unicode look-alikes: Cyrillic, Greek, Armenian, full-width, mathematical letters,
        # Latin small capitals and dotless letters, zero-width and soft hyphens.
        "G\u043e\u043egle", "\u041e\u0075tlook", "Y\u0430h\u03bfo Mail", "O\u057dtlook",
        "\uff27\uff4d\uff41\uff49\uff4c", "\U0001d406\U0001d426\U0001d41a\U0001d422\U0001d425",
        "\u0262mail", "\u0262\u1d0d\u1d00\u026a\u029f", "\u1d00\u1d0f\u029f Mail",
        "\u0262\u1d0d\u0445", "\u1d0f\u1d1c\u1d1b\u029f\u1d0f\u1d0f\u1d0b", "i\u1d04loud",
        "G\u200bmail", "Out\u00adlook", "G\u2060o\u200do\u200cgle", "\u0262oogle",
        # Digits for letters, spaces and punctuation between them.
        "G00gle", "0utlook", "G m a i l", "G.M.A.I.L", "O-u-t-l-o-o-k", "Yah00",
        "Micr0s0ft", "Ya\u0578dex",
        # Scripts a hand-kept table missed (Cherokee, Cyrillic Komi, mathematical sans),
        # and short brands spelt across separators.
        "\u13c0mail", "\u050cMX", "\u13aa\U0001d5aeL", "\uab7a\u1d0f\u029f", "GM X", "G.M.X",
        "A.O.L. Mail",
    ],
)  # fmt: skip
def test_it_finds_the_built_in_a_look_alike_name_passes_for(name):
    from providers.naming import mimicked_builtin

    assert mimicked_builtin(name) is not None, name


@pytest.mark.parametrize(
    "name", ["Acme Mail", "Example Hosting", "Posteo", "Mailbox.org", "IONOS", "Web.de",
             "T-Online", "Proton Mail", "Corp Exchange", "Stadtwerke Mail",
             # Names in other scripts are not look-alikes of anything.
             "Почта Компании", "株式会社メール", "Ταχυδρομείο", "Електронна пошта",
             "بريد الشركة", "דואר החברה", "메일 서비스", "\u1d29roton"],
)  # fmt: skip
def test_it_lets_an_ordinary_name_be(name):
    from providers.naming import mimicked_builtin

    assert mimicked_builtin(name) is None, name


@pytest.mark.parametrize(
    ("look_alike", "plain"),
    [("\u1d29roton", "Proton"), ("\u13c0mail", "Gmail"), ("\uab7a\u1d0f\u029f", "AOL")],
)
def test_it_reads_a_look_alike_letter_as_the_letter_it_passes_for(look_alike, plain):
    from providers.naming import skeleton

    assert skeleton(look_alike) == skeleton(plain)


@pytest.mark.parametrize(
    ("guide", "tenant", "authorize", "token", "shown_sign_in", "shown_tokens"),
    [
        ("", "", "https://login.corp.test/authorize", "https://api.corp.test/token",
         "login.corp.test", "api.corp.test"),
        ("gmail", "", "https://accounts.google.com/o/oauth2/auth",
         "https://oauth2.googleapis.com/token", "accounts.google.com", "oauth2.googleapis.com"),
        # msal signs in at its authority: the card's tenant at Microsoft, whatever the
        # card's authorization address says.
        ("outlook", "contoso", "https://login.partner-sso.test/contoso/oauth2/authorize",
         "https://login.partner-sso.test/contoso/oauth2/token",
         "login.microsoftonline.com", "login.microsoftonline.com"),
        ("outlook", "", "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
         "https://login.microsoftonline.com/common/oauth2/v2.0/token",
         "login.microsoftonline.com", "login.microsoftonline.com"),
    ],
)  # fmt: skip
def test_it_names_the_identity_provider_and_mail_hosts_of_an_oauth_sign_in(
    client, db, guide, tenant, authorize, token, shown_sign_in, shown_tokens
):
    client.force_login(UserFactory())
    provider = EmailProviderFactory(
        name="Corp SSO", auth_method=AuthMethod.OAUTH2, security_guide=guide,
        oauth_tenant=tenant, oauth_authorize_url=authorize, oauth_token_url=token,
        oauth_client_id="app", imap_host="imap.corp.test", smtp_host="smtp.corp.test",
    )  # fmt: skip
    ProviderDomainFactory(domain="corp.test", provider=provider)
    url = _wizard("accounts:wizard_sign_in", address="ann@corp.test", provider=provider.pk)

    page = client.get(url).text

    assert f"You type your password on <strong>{shown_sign_in}</strong>" in page
    assert f'<strong id="token-host">{shown_tokens}</strong>' in page
    assert "<strong>imap.corp.test</strong>" in page and "<strong>smtp.corp.test</strong>" in page


def test_it_loads_unicodes_confusables_only_once_a_name_is_checked():
    # Every process imports providers.naming (through the admin); the table costs a
    # worker about 6 MB, and only a process that names a provider needs it.
    code = (
        "import sys, django; django.setup(); import providers.admin;"
        "from providers.naming import mimicked_builtin;"
        "before = 'confusable_homoglyphs' in sys.modules;"
        "mimicked = mimicked_builtin('GMaiI');"
        "print(before, mimicked, 'confusable_homoglyphs' in sys.modules)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mailsetup.settings"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=Path(__file__).resolve().parent.parent,
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert out == "False Gmail / Google Workspace True"


def test_it_gives_two_cards_of_one_long_name_two_names_within_the_column(db, builtin_providers):
    # Two domains' autoconfig files with the same 300-character name: the first card
    # takes the name cut to its column, the second its own spelling (it took the same
    # cut name, checked whole, and failed on the unique column).
    name = "Acme Hosting " + "x" * 287
    first = provider_import_config(
        config=_config("a.test", name), source=Source.AUTOCONFIG,
        only_domains=["a.test"], config_id="autoconfig:a.test",
    )  # fmt: skip
    second = provider_import_config(
        config=_config("b.test", name), source=Source.AUTOCONFIG,
        only_domains=["b.test"], config_id="autoconfig:b.test",
    )  # fmt: skip
    names = [first.provider.name, second.provider.name]
    assert names[0] == name[:199] + "…"
    assert names[1].endswith("… (autoconfig:b.test)") and names[1].startswith("Acme Hosting x")
    assert all(len(n) == 200 for n in names)
    # Imported again, each keeps its own.
    again = provider_import_config(
        config=_config("b.test", name), source=Source.AUTOCONFIG,
        only_domains=["b.test"], config_id="autoconfig:b.test",
    )  # fmt: skip
    assert again.provider.pk == second.provider.pk and again.provider.name == names[1]


def test_it_keeps_the_suffix_that_tells_a_mimicking_name_apart_whole(db, builtin_providers):
    # Ids as long as their column (an autoconfig id is "autoconfig:" and the domain).
    ids = [f"autoconfig:{'d' * 240}.test", f"autoconfig:{'d' * 240}.test2"]
    made = [
        provider_import_config(
            config=_config("g.test", "Gmail"), source=Source.AUTOCONFIG,
            only_domains=["g.test"], config_id=config_id,
        ).provider.name
        for config_id in ids
    ]  # fmt: skip
    assert made[0] == f"Gmail ({ids[0][:59]}…)"
    assert made[1] == f"Gmail ({ids[0][:59]}…, 2)"


@pytest.mark.parametrize(
    "name, config_id",
    [("Gmail", f"autoconfig:{'d' * 60}.test"), ("Acme " + "x" * 300, "autoconfig:acme.test")],
)
def test_it_finds_its_own_card_again_by_name_once_its_domains_are_unmapped(
    db, builtin_providers, name, config_id
):
    # A card whose domains were unmapped is found by its id and name; with the name cut
    # to fit or the id shortened in its suffix, it was missed, and a second card made.
    from providers.models import EmailProvider, ProviderDomain

    first = provider_import_config(
        config=_config("g.test", name), source=Source.AUTOCONFIG,
        only_domains=["g.test"], config_id=config_id,
    )  # fmt: skip
    ProviderDomain.objects.filter(provider=first.provider).delete()
    again = provider_import_config(
        config=_config("g.test", name), source=Source.AUTOCONFIG,
        only_domains=["g.test"], config_id=config_id,
    )  # fmt: skip
    assert again.provider.pk == first.provider.pk and not again.created
    assert EmailProvider.objects.filter(ispdb_id=config_id).count() == 1
