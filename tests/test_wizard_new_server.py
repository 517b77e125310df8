"""The wizard's "Add new server" (a draft in the session until a real sign-in passes), the
host-name rule it shares with the provider admin, and what the sign-in step says about
remembering the domain, through Django's test client against Dovecot and aiosmtpd."""

import re
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.urls import reverse

from accounts.models import EmailAccount
from providers.forms import mail_host
from providers.models import EmailProvider, LoginFormat, ProviderDomain, Source
from systemsettings.models import SystemSetting
from tests.conftest import MAIL_USERS
from tests.factories import EmailProviderFactory, ProviderDomainFactory, UserFactory
from tests.servers.dovecot import free_port

MANAGE = "providers.manage_email_providers"
CAROL = "carol@elsewhere.test"
ALICE = "alice@example.test"


@pytest.fixture
def manager(client, db):
    user = UserFactory(permissions=[MANAGE])
    client.force_login(user)
    return user


def _new_server_url(address=CAROL, draft=""):
    params = {"address": address, **({"draft": draft} if draft else {})}
    return f"{reverse('accounts:wizard_new_server')}?{urlencode(params)}"


def _server(dovecot, smtp_servers, **overrides):
    data = {
        "name": "Elsewhere Mail",
        "service_type": "imap_smtp",
        "receive_enabled": "on",
        "send_enabled": "on",
        "imap_host": "localhost",
        "imap_security": "ssl",
        "imap_port": str(dovecot.imaps_port),
        "smtp_host": "localhost",
        "smtp_security": "starttls",
        "smtp_port": str(smtp_servers["starttls"].port),
        "exchange_url": "",
        "login_format": "email",
    }
    data.update(overrides)
    return data


def _draft_of(response) -> str:
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.url).query)
    assert query["via"] == ["new"]
    return query["draft"][0]


def _errors(html: str, field: str) -> list[str]:
    """The messages shown under one field of the wizard's form."""
    block = re.search(rf'data-field="{field}">(.*?)</div>\s*(?=<div class="field"|<p)', html, re.S)
    assert block, field
    shown = re.search(r'class="error" role="alert"[^>]*>(.*?)</div>', block.group(1), re.S)
    return shown.group(1).split("<br>") if shown else []


def test_it_keeps_a_new_server_a_draft_until_a_sign_in_passes(
    client, manager, dovecot, smtp_servers, mail_trust
):
    providers_before = set(EmailProvider.objects.values_list("pk", flat=True))
    response = client.post(_new_server_url(), _server(dovecot, smtp_servers))
    draft = _draft_of(response)
    assert set(EmailProvider.objects.values_list("pk", flat=True)) == providers_before
    assert not ProviderDomain.objects.filter(domain="elsewhere.test").exists()

    page = client.get(response.url)
    assert "the server you are adding" in page.text
    assert f"IMAP localhost:{dovecot.imaps_port}" in page.text
    assert "is added to the email providers and elsewhere.test is remembered" in page.text
    assert _new_server_url(draft=draft).replace("&", "&amp;") in page.text

    wrong = client.post(response.url, {"password": "not-the-password"})
    assert "did not accept the login or password" in wrong.text
    # The login format is chosen with the server: it may be what is wrong.
    assert "Check the password and the server&#x27;s login format" in wrong.text
    assert set(EmailProvider.objects.values_list("pk", flat=True)) == providers_before

    done = client.post(response.url, {"password": MAIL_USERS[CAROL]}, follow=True)
    provider = EmailProvider.objects.get(name="Elsewhere Mail")
    assert (provider.source, provider.imap_port) == (Source.ADMIN, dovecot.imaps_port)
    entry = ProviderDomain.objects.get(domain="elsewhere.test")
    assert (entry.provider, entry.source) == (provider, Source.ADMIN)
    assert EmailAccount.objects.get(address=CAROL).provider == provider
    assert "Elsewhere Mail was added to the email providers" in done.text
    # The draft is spent: its URL does not add a second card.
    again = client.get(response.url)
    assert again.status_code == 302
    assert again.url == _new_server_url()


def test_it_leaves_nothing_for_others_and_takes_the_same_domain_again(
    client, manager, dovecot, smtp_servers, mail_trust
):
    client.post(_new_server_url(), _server(dovecot, smtp_servers))
    # Abandoned at the sign-in step. Someone else looks for a provider:
    other = client.__class__()
    other.force_login(UserFactory())
    listing = other.get(
        f"{reverse('accounts:wizard_provider')}?address=dave@elsewhere.test&q=Elsewhere"
    )
    assert "Elsewhere Mail" not in listing.text
    assert not EmailProvider.objects.filter(name="Elsewhere Mail").exists()

    # The manager starts over with the same domain and name: no "already exists".
    page = client.get(_new_server_url())
    assert 'value="elsewhere.test"' in page.text
    retry = client.post(_new_server_url(), _server(dovecot, smtp_servers))
    _draft_of(retry)
    client.post(retry.url, {"password": MAIL_USERS[CAROL]})
    assert EmailProvider.objects.filter(name="Elsewhere Mail").count() == 1


def test_it_edits_the_draft_after_a_failed_check(
    client, manager, dovecot, smtp_servers, mail_trust
):
    # The IMAP port is wrong: nothing listens there.
    closed = str(free_port())  # nothing listens there
    response = client.post(_new_server_url(), _server(dovecot, smtp_servers, imap_port=closed))
    draft = _draft_of(response)
    failed = client.post(response.url, {"password": MAIL_USERS[CAROL]})
    assert 'class="error"' in failed.text
    assert not EmailProvider.objects.filter(name="Elsewhere Mail").exists()

    edit = client.get(_new_server_url(draft=draft))
    assert f'value="{closed}"' in edit.text
    fixed = client.post(_new_server_url(draft=draft), _server(dovecot, smtp_servers))
    assert _draft_of(fixed) == draft
    client.post(fixed.url, {"password": MAIL_USERS[CAROL]})
    assert EmailProvider.objects.get(name="Elsewhere Mail").imap_port == dovecot.imaps_port


def test_it_fills_in_the_usual_ports(client, manager, dovecot, smtp_servers, mail_trust):
    page = client.get(_new_server_url(address="anna@newcorp.test"))
    assert 'value="imap.newcorp.test"' in page.text
    response = client.post(
        _new_server_url(address="anna@newcorp.test"),
        _server(dovecot, smtp_servers, name="NewCorp", imap_host=" IMAP.newcorp.test ",
                imap_security="starttls", imap_port="", smtp_host="smtp.newcorp.test",
                smtp_port=""),
    )  # fmt: skip
    page = client.get(response.url)
    assert "IMAP imap.newcorp.test:143" in page.text
    assert "SMTP smtp.newcorp.test:587" in page.text


def test_it_saves_under_a_free_name_when_another_took_it_meanwhile(
    client, manager, dovecot, smtp_servers, mail_trust
):
    response = client.post(_new_server_url(), _server(dovecot, smtp_servers))
    EmailProviderFactory(name="Elsewhere Mail")  # another manager, in the admin
    client.post(response.url, {"password": MAIL_USERS[CAROL]})
    assert EmailAccount.objects.get(address=CAROL).provider.name == "Elsewhere Mail (2)"


def test_it_names_a_provider_that_exists_already(client, manager, dovecot, smtp_servers):
    EmailProviderFactory(name="Elsewhere Mail")
    response = client.post(_new_server_url(), _server(dovecot, smtp_servers))
    assert _errors(response.text, "name") == [
        "A provider of this name exists already: go back and choose it from the list, or "
        "give this server another name."
    ]


def test_it_keeps_drafts_to_their_session_and_to_managers(
    client, manager, dovecot, smtp_servers, mail_trust
):
    response = client.post(_new_server_url(), _server(dovecot, smtp_servers))
    _draft_of(response)
    other = client.__class__()
    other.force_login(UserFactory(permissions=[MANAGE]))
    elsewhere = other.get(response.url)
    assert elsewhere.status_code == 302
    assert elsewhere.url == _new_server_url()

    manager.user_permissions.remove(Permission.objects.get(codename="manage_email_providers"))
    assert client.get(response.url).status_code == 403
    assert client.post(response.url, {"password": MAIL_USERS[CAROL]}).status_code == 403
    assert not EmailProvider.objects.filter(name="Elsewhere Mail").exists()


# -- one message per field, one rule for host names ----------------------------------


def _internal(on: bool) -> None:
    SystemSetting.objects.update_or_create(
        code="AllowInternalMailServers",
        defaults={"value_type": "boolean", "value": "yes" if on else "no"},
    )


@pytest.mark.parametrize(
    ("imap_host", "smtp_host", "message"),
    [
        ("", "", "Enter the IMAP server, or turn off receiving emails."),
        ("bad host", "bad host", "Enter a server name such as mail.example.com."),
        ("127.0.0.1", "localhost", "accepted only while the system setting"),
    ],
    ids=["empty", "malformed", "internal"],
)
def test_it_shows_one_message_per_server_field(
    client, manager, dovecot, smtp_servers, imap_host, smtp_host, message
):
    _internal(False)
    response = client.post(
        _new_server_url(),
        _server(dovecot, smtp_servers, imap_host=imap_host, smtp_host=smtp_host, imap_port="x"),
    )
    assert response.status_code == 200
    imap, smtp, port = (_errors(response.text, f) for f in ("imap_host", "smtp_host", "imap_port"))
    assert len(imap) == 1 and message in imap[0], imap
    assert len(smtp) == 1, smtp
    assert port == ["Enter a whole number."]
    assert not EmailProvider.objects.filter(name="Elsewhere Mail").exists()


def test_it_takes_localhost_and_ip_addresses_while_internal_servers_are_allowed(
    client, manager, dovecot, smtp_servers, mail_trust
):
    _internal(True)
    response = client.post(_new_server_url(), _server(dovecot, smtp_servers, imap_host="127.0.0.1"))
    page = client.get(response.url)
    assert f"IMAP 127.0.0.1:{dovecot.imaps_port}" in page.text
    # Taken, and checked for real: the suite's server has a certificate for localhost
    # only, so the check fails on it and nothing is saved.
    failed = client.post(response.url, {"password": MAIL_USERS[CAROL]})
    assert "security certificate that could not be verified" in failed.text
    assert not EmailProvider.objects.filter(name="Elsewhere Mail").exists()


def _admin_form(**overrides):
    data = {
        "name": "Internal Mail", "service_type": "imap_smtp", "receive_enabled": "on",
        "send_enabled": "on", "imap_host": "localhost", "imap_port": "993",
        "imap_security": "ssl", "smtp_host": "10.1.2.3", "smtp_port": "587",
        "smtp_security": "starttls", "exchange_url": "", "login_format": "email",
        "auth_method": "password", "app_password_help_url": "", "mx_suffixes": "",
        "domains-TOTAL_FORMS": "0", "domains-INITIAL_FORMS": "0",
        "domains-MIN_NUM_FORMS": "0", "domains-MAX_NUM_FORMS": "1000",
    }  # fmt: skip
    data.update(overrides)
    return data


@pytest.mark.parametrize("allowed", [True, False], ids=["allowed", "refused"])
def test_it_applies_the_same_host_rule_in_the_admin(client, db, allowed):
    client.force_login(UserFactory(is_staff=True, permissions=[MANAGE]))
    _internal(allowed)
    add = reverse("admin:providers_emailprovider_add")
    response = client.post(add, _admin_form())
    if allowed:
        assert response.status_code == 302, response.text
        provider = EmailProvider.objects.get(name="Internal Mail")
        assert (provider.imap_host, provider.smtp_host) == ("localhost", "10.1.2.3")
        return
    assert response.status_code == 200
    assert not EmailProvider.objects.filter(name="Internal Mail").exists()
    for value, what in (("localhost", "localhost"), ("10.1.2.3", "an IP address")):
        assert f"{value} is {what}: enter the server&#x27;s name" in response.text
    # One message per field there too: an empty server is only "Enter the IMAP server".
    empty = client.post(add, _admin_form(imap_host="bad host", smtp_host="", smtp_port="x"))
    imap = re.search(r'errorlist[^>]*id="id_imap_host_error">(.*?)</ul>', empty.text, re.S)
    assert imap and imap.group(1).count("<li>") == 1, empty.text
    assert "Enter the IMAP server" not in empty.text


@pytest.mark.parametrize(
    ("typed", "allowed", "stored"),
    [
        (" IMAP.%EmailDomain% ", False, "imap.%EMAILDOMAIN%"),
        ("Mail.Example.COM", False, "mail.example.com"),
        ("[::1]", True, "::1"),
        ("LOCALHOST", True, "localhost"),
        ("192.0.2.7", True, "192.0.2.7"),
        ("", False, ""),
    ],
)
def test_it_stores_a_host_in_one_spelling(typed, allowed, stored):
    assert mail_host(typed, allow_internal=allowed) == stored


@pytest.mark.parametrize("typed", ["::1", "localhost", "192.0.2.7", "mail", "a..b.test"])
def test_it_refuses_a_host_with_one_message(typed):
    with pytest.raises(ValidationError) as error:
        mail_host(typed, allow_internal=False)
    assert len(error.value.messages) == 1


# -- what the sign-in step says about remembering the domain ------------------------


def _pick(client, provider, address=CAROL):
    response = client.post(
        f"{reverse('accounts:wizard_provider')}?address={address}", {"provider": provider.pk}
    )
    assert response.status_code == 302
    return response.url


@pytest.mark.parametrize(
    ("change", "before", "after", "remembered"),
    [
        (
            {},
            "Once you sign in, elsewhere.test is remembered for everyone: people with an "
            "@elsewhere.test address go straight to Test Mail, since its servers accept "
            "carol@elsewhere.test as the login.",
            "elsewhere.test is now remembered for everyone",
            True,
        ),
        (
            {"source": Source.ISPDB},
            "elsewhere.test will not be remembered for everyone: Test Mail was not set up by "
            "an administrator (its card came from Thunderbird ISPDB)",
            "elsewhere.test was not remembered for everyone: Test Mail was not set up",
            False,
        ),
        (
            {"login_format": LoginFormat.LOCAL_PART},
            "elsewhere.test will not be remembered for everyone: you sign in with the login "
            "carol, not your full address",
            None,  # the suite's server knows carol by her full address only
            False,
        ),
    ],
    ids=["remembered", "not-an-admins-card", "login-is-not-the-address"],
)
def test_it_explains_whether_a_picked_provider_is_remembered_for_the_domain(
    client, test_provider, change, before, after, remembered
):
    for name, value in change.items():
        setattr(test_provider, name, value)
    test_provider.save()
    client.force_login(UserFactory())
    url = _pick(client, test_provider)
    page = client.get(url)
    shown = re.search(r'id="domain-memory">([^<]*)<', page.text)
    assert shown and before in shown.group(1).replace("&#x27;", "'"), page.text
    if after is None:
        return
    done = client.post(url, {"password": MAIL_USERS[CAROL]}, follow=True)
    assert after in done.text.replace("&#x27;", "'")
    assert ProviderDomain.objects.filter(domain="elsewhere.test").exists() is remembered


def test_it_explains_a_typed_login_and_a_domain_served_by_another(client, test_provider):
    test_provider.login_format = LoginFormat.MANUAL
    test_provider.save()
    client.force_login(UserFactory())
    url = _pick(client, test_provider)
    assert "only if you sign in with your full address carol@elsewhere.test" in (
        client.get(url).text
    )
    # Signed in with another mailbox's login: that shows nothing about elsewhere.test.
    done = client.post(url, {"login": ALICE, "password": MAIL_USERS[ALICE]}, follow=True)
    assert (
        "was not remembered for everyone: you sign in with the login alice@example.test, not "
        "your full address" in done.text
    )
    assert not ProviderDomain.objects.filter(domain="elsewhere.test").exists()

    client.force_login(UserFactory())

    other = EmailProviderFactory(name="Other Mail")
    mapping = ProviderDomainFactory(domain="elsewhere.test", provider=other, source=Source.ISPDB)
    page = client.get(url)
    assert (
        "elsewhere.test stays remembered for everyone as served by Other Mail "
        "(source: Thunderbird ISPDB): one person&#x27;s choice does not change that." in page.text
    )
    done = client.post(url, {"login": CAROL, "password": MAIL_USERS[CAROL]}, follow=True)
    assert "stays remembered for everyone as served by Other Mail" in done.text
    assert ProviderDomain.objects.get(domain="elsewhere.test").provider == other

    # Only guessed by discovery (from MX): a sign-in with the full address proves better.
    EmailAccount.objects.filter(address=CAROL).delete()
    mapping.source = Source.MX
    mapping.save()
    client.force_login(UserFactory())
    url = _pick(client, test_provider)
    client.post(url, {"login": CAROL, "password": MAIL_USERS[CAROL]}, follow=True)
    entry = ProviderDomain.objects.get(domain="elsewhere.test")
    assert (entry.provider, entry.source) == (test_provider, Source.USER)


def test_it_says_nothing_of_remembering_a_domain_found_by_itself(client, test_provider):
    client.force_login(UserFactory())
    response = client.post(reverse("accounts:wizard_address"), {"address": "alice@example.test"})
    assert 'id="domain-memory"' not in client.get(response.url).text
