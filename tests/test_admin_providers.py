import pytest
from django.urls import reverse

from providers.models import EmailProvider, ProviderDomain, Source
from tests.factories import EmailProviderFactory, ProviderDomainFactory, UserFactory

MANAGE = "providers.manage_email_providers"
ALL_MODEL_PERMS = [
    f"providers.{action}_{model}"
    for action in ("view", "add", "change", "delete")
    for model in ("emailprovider", "providerdomain")
]


@pytest.fixture
def manager(db):
    return UserFactory(is_staff=True, permissions=[MANAGE])


@pytest.fixture
def provider(db):
    provider = EmailProviderFactory(name="Acme Mail")
    ProviderDomainFactory(domain="acme.test", provider=provider)
    return provider


def _urls(provider):
    return [
        reverse("admin:providers_emailprovider_changelist"),
        reverse("admin:providers_emailprovider_add"),
        reverse("admin:providers_emailprovider_change", args=[provider.pk]),
        reverse("admin:providers_emailprovider_delete", args=[provider.pk]),
        reverse("admin:providers_providerdomain_changelist"),
        reverse("admin:providers_providerdomain_add"),
    ]


@pytest.mark.parametrize("perms", [[], ALL_MODEL_PERMS], ids=["no-perms", "model-perms-only"])
def test_it_hides_providers_from_staff_without_the_permission(client, provider, perms):
    staff = UserFactory(is_staff=True, permissions=perms)
    client.force_login(staff)
    index = client.get(reverse("admin:index"))
    assert "Acme Mail" not in index.text
    assert "Email providers" not in index.text
    for url in _urls(provider):
        assert client.get(url).status_code == 403, url
    response = client.post(
        reverse("admin:providers_emailprovider_change", args=[provider.pk]), {"name": "Hijacked"}
    )
    assert response.status_code == 403
    provider.refresh_from_db()
    assert provider.name == "Acme Mail"


def test_it_lets_a_manager_see_and_search_providers_and_domains(client, manager, provider):
    client.force_login(manager)
    assert "Email providers" in client.get(reverse("admin:index")).text
    listing = client.get(reverse("admin:providers_emailprovider_changelist"), {"q": "acme.test"})
    assert "Acme Mail" in listing.text
    domains = client.get(reverse("admin:providers_providerdomain_changelist"), {"q": "acme"})
    assert "acme.test" in domains.text
    missing = client.get(reverse("admin:providers_providerdomain_changelist"), {"q": "nothing"})
    assert "acme.test" not in missing.text


def _provider_form(**overrides):
    data = {
        "name": "New Mail",
        "service_type": "imap_smtp",
        "receive_enabled": "on",
        "send_enabled": "on",
        "imap_host": "imap.new.test",
        "imap_port": "993",
        "imap_security": "ssl",
        "smtp_host": "smtp.new.test",
        "smtp_port": "587",
        "smtp_security": "starttls",
        "exchange_url": "",
        "login_format": "email",
        "auth_method": "oauth2",
        "oauth_client_id": "client-123",
        "oauth_client_secret": "s3cret-value",
        "app_password_help_url": "",
        "mx_suffixes": "",
        "domains-TOTAL_FORMS": "1",
        "domains-INITIAL_FORMS": "0",
        "domains-MIN_NUM_FORMS": "0",
        "domains-MAX_NUM_FORMS": "1000",
        "domains-0-domain": "New.TEST",
    }
    data.update(overrides)
    return data


def test_it_lets_a_manager_add_a_provider_with_its_domain_and_a_hidden_secret(client, manager):
    client.force_login(manager)
    response = client.post(reverse("admin:providers_emailprovider_add"), _provider_form())
    assert response.status_code == 302, response.text
    provider = EmailProvider.objects.get(name="New Mail")
    assert provider.source == Source.ADMIN
    assert ProviderDomain.objects.get(domain="new.test").provider == provider
    assert provider.get_oauth_client_secret() == "s3cret-value"
    assert "s3cret-value" not in provider.oauth_client_secret_encrypted

    page = client.get(reverse("admin:providers_emailprovider_change", args=[provider.pk]))
    assert "s3cret-value" not in page.text
    assert provider.oauth_client_secret_encrypted not in page.text
    assert "Stored client secret" in page.text


def test_it_keeps_the_secret_when_the_field_is_left_empty(client, manager):
    client.force_login(manager)
    client.post(reverse("admin:providers_emailprovider_add"), _provider_form())
    provider = EmailProvider.objects.get(name="New Mail")
    client.post(
        reverse("admin:providers_emailprovider_change", args=[provider.pk]),
        _provider_form(oauth_client_secret="", **{"domains-TOTAL_FORMS": "0"}),
    )
    provider.refresh_from_db()
    assert provider.get_oauth_client_secret() == "s3cret-value"


def test_it_refuses_one_domain_spelt_twice_on_the_page(client, manager):
    # "dup.test" and "Dup.test" reached the database's unique key: a 500.
    client.force_login(manager)
    response = client.post(
        reverse("admin:providers_emailprovider_add"),
        _provider_form(**{
            "domains-TOTAL_FORMS": "2", "domains-0-domain": "dup.test",
            "domains-1-domain": "Dup.TEST",
        }),
    )  # fmt: skip
    assert response.status_code == 200
    assert "Please correct the duplicate data for domain" in response.text
    assert not EmailProvider.objects.filter(name="New Mail").exists()


def test_it_refuses_a_well_known_port_with_the_other_security(client, manager):
    # Saved silently, the card failed every sign-in: TLS spoken to a STARTTLS port.
    client.force_login(manager)
    response = client.post(
        reverse("admin:providers_emailprovider_add"),
        _provider_form(imap_port="143", imap_security="ssl", smtp_port="587", smtp_security="ssl"),
    )
    assert response.status_code == 200
    assert "Port 143 is for STARTTLS: choose STARTTLS, or port 993 for SSL/TLS." in response.text
    assert "Port 587 is for STARTTLS: choose STARTTLS, or port 465 for SSL/TLS." in response.text
    assert not EmailProvider.objects.filter(name="New Mail").exists()
    # Another port is the administrator's to know.
    response = client.post(
        reverse("admin:providers_emailprovider_add"),
        _provider_form(imap_port="10993", imap_security="ssl"),
    )
    assert response.status_code == 302, response.text


def test_it_names_the_missing_field_and_keeps_what_was_typed(client, manager):
    client.force_login(manager)
    response = client.post(
        reverse("admin:providers_emailprovider_add"), _provider_form(imap_host="", imap_port="")
    )
    assert response.status_code == 200
    assert "Enter the IMAP server, or turn off receiving emails." in response.text
    assert 'value="smtp.new.test"' in response.text
    assert not EmailProvider.objects.filter(name="New Mail").exists()


def test_it_refuses_a_malformed_domain_with_its_reason(client, manager, provider):
    client.force_login(manager)
    response = client.post(
        reverse("admin:providers_providerdomain_add"),
        {"domain": "bad domain.test", "provider": provider.pk},
    )
    assert response.status_code == 200
    assert "A domain cannot contain spaces." in response.text
    add = reverse("admin:providers_providerdomain_add")
    response = client.post(add, {"domain": "@gmail.test", "provider": provider.pk})
    assert "Enter the domain alone, without an @" in response.text
    ProviderDomain.objects.create(domain="gmail.test", provider=provider)
    response = client.post(add, {"domain": " Gmail.TEST ", "provider": provider.pk})
    assert f"gmail.test is in the list already, served by {provider.name}" in response.text
    assert ProviderDomain.objects.filter(domain="gmail.test").count() == 1
    # A public suffix: it would have matched every organisation's mail servers under it.
    response = client.post(add, {"domain": "co.uk", "provider": provider.pk})
    assert "co.uk is a public suffix, shared by many organisations" in response.text
    assert not ProviderDomain.objects.filter(domain="co.uk").exists()
    # One stored before (an import, a newer suffix list) does not block the row's page.
    stored = ProviderDomain.objects.create(domain="us.com", provider=provider)
    change = reverse("admin:providers_providerdomain_change", args=[stored.pk])
    response = client.post(change, {"domain": "us.com", "provider": provider.pk})
    assert response.status_code == 302, response.text


def test_it_makes_an_edited_import_the_admins(client, manager):
    imported = EmailProviderFactory(name="Imported", source=Source.ISPDB, ispdb_id="imp.test")
    client.force_login(manager)
    form = _provider_form(name="Imported", auth_method="password", oauth_client_secret="")
    form.update({"domains-TOTAL_FORMS": "0"})
    response = client.post(
        reverse("admin:providers_emailprovider_change", args=[imported.pk]), form
    )
    assert response.status_code == 302, response.text
    imported.refresh_from_db()
    assert imported.source == Source.ADMIN


def test_it_shows_the_redirect_uri_to_register_and_refuses_plain_http(client, manager, provider):
    client.force_login(manager)
    url = reverse("admin:providers_emailprovider_change", args=[provider.pk])
    page = client.get(url).text
    assert "give it this redirect URI: http://testserver/mailboxes/oauth/callback/" in page

    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data |= {"oauth_token_url": "http://login.example/token", "domains-TOTAL_FORMS": "0",
             "domains-INITIAL_FORMS": "0"}  # fmt: skip
    refused = client.post(url, data).text
    assert "Use an https:// address: tokens must travel encrypted." in refused


def test_it_takes_an_exchange_provider_with_an_https_address_or_none(client, manager):
    client.force_login(manager)
    url = reverse("admin:providers_emailprovider_add")
    exchange = {"service_type": "exchange", "imap_host": "", "smtp_host": "",
                "auth_method": "password", "domains-0-domain": ""}  # fmt: skip

    plain = client.post(url, _provider_form(**exchange, exchange_url="http://mail.new.test/EWS/"))
    assert "The Exchange service address must start with https://." in plain.text
    assert not EmailProvider.objects.filter(name="New Mail").exists()

    blank = client.post(url, _provider_form(**exchange))  # found by autodiscover
    assert blank.status_code == 302, blank.text
    assert EmailProvider.objects.get(name="New Mail").exchange_url == ""
