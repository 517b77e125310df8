"""Adding a mailbox with "Sign in with …" (OAuth 2.0 authorization code + PKCE) against
the suite's authorization server, Dovecot (XOAUTH2) and SMTP server (XOAUTH2)."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from accounts.models import EmailAccount
from accounts.oauth import TokenError
from mailsetup import crypto
from tests.factories import UserFactory
from tests.servers.oauth import authorize_as

START = reverse("accounts:wizard_oauth_start")
CALLBACK = reverse("accounts:oauth_callback")


@pytest.fixture
def provider(oauth_provider, dovecot, smtp_servers):
    oauth_provider.imap_host, oauth_provider.imap_port = "localhost", dovecot.imaps_port
    oauth_provider.imap_security = "ssl"
    oauth_provider.smtp_host, oauth_provider.smtp_port = "localhost", smtp_servers["starttls"].port
    oauth_provider.smtp_security = "starttls"
    oauth_provider.save()
    return oauth_provider


def _start(client, provider, address: str) -> str:
    response = client.post(START, {"address": address, "provider": provider.pk})
    assert response.status_code == 302
    return response.url


@pytest.mark.parametrize("oauth_provider_kind", ["standard", "google", "microsoft"])
def test_it_adds_a_mailbox_after_signing_in_at_the_provider(
    client, provider, oauth_server, mail_trust, synced_mailbox, oauth_provider_kind
):
    pooled, _mailbox = synced_mailbox  # a Dovecot user the suite owns; this test adds it anew
    address = pooled.address
    pooled.delete()
    user = UserFactory()
    client.force_login(user)

    url = _start(client, provider, address)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(provider.oauth_authorize_url)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["login_hint"] == [address] and query["state"][0]
    back = authorize_as(url, str(mail_trust))
    response = client.get(CALLBACK, back)

    assert response.status_code == 302 and response.url == reverse("accounts:email")
    account = EmailAccount.objects.get(owner=user, address=address)
    assert account.uses_oauth and account.reconnect_needed_at is None
    assert (
        crypto.decrypt(account.oauth_refresh_token_encrypted) in oauth_server.state.refresh_tokens
    )
    [exchange] = oauth_server.calls("/token")
    assert exchange["grant_type"] == "authorization_code" and exchange["code_verifier"]
    # Each kind went through its own client: msal discovers the tenant's endpoints and
    # binds the ID token to a nonce; google-auth-oauthlib asks for offline access.
    discovered = oauth_server.calls("/.well-known/openid-configuration")
    assert bool(discovered) == (oauth_provider_kind == "microsoft")
    assert ("nonce" in query) == (oauth_provider_kind == "microsoft")
    assert ("access_type" in query) == (oauth_provider_kind != "microsoft")
    # Dovecot and the SMTP server each checked the token (introspection by Dovecot).
    assert oauth_server.calls("/introspect")


def test_it_refuses_a_callback_this_session_did_not_start(client, provider, oauth_server):
    client.force_login(UserFactory())
    _start(client, provider, "ann@oauth.test")
    response = client.get(CALLBACK, {"code": "stolen", "state": "not-ours"})
    assert response.status_code == 400
    assert oauth_server.calls("/token") == []
    # No state at all is refused the same way.
    other = client.get(CALLBACK, {"code": "x"})
    assert other.status_code == 400 and not EmailAccount.objects.exists()


@pytest.mark.parametrize("oauth_provider_kind", ["standard", "google", "microsoft"])
def test_it_refuses_an_account_other_than_the_address_typed(
    client, provider, oauth_server, mail_trust
):
    client.force_login(UserFactory())
    url = _start(client, provider, "ann@oauth.test")
    back = authorize_as(url, str(mail_trust), login_hint="mallory@oauth.test")

    response = client.get(CALLBACK, back, follow=True)

    assert "You signed in to OAuth Mail as mallory@oauth.test, not as ann@oauth.test." in (
        response.text
    )
    assert not EmailAccount.objects.exists()


def test_it_says_why_when_the_user_declines_at_the_provider(client, provider, oauth_server):
    client.force_login(UserFactory())
    url = _start(client, provider, "ann@oauth.test")
    state = parse_qs(urlsplit(url).query)["state"][0]
    response = client.get(CALLBACK, {"state": state, "error": "access_denied"}, follow=True)
    assert "OAuth Mail did not sign you in (access_denied)." in response.text
    assert oauth_server.calls("/token") == []


@pytest.mark.parametrize("oauth_provider_kind", ["google"])
def test_it_refuses_a_google_sign_in_without_mail_access(
    client, provider, oauth_server, mail_trust, oauth_provider_kind
):
    client.force_login(UserFactory())
    url = _start(client, provider, "ann@oauth.test")
    # On the consent page the user unticked Gmail access: the grant comes back without it.
    oauth_server.state.granted_scope = "openid https://www.googleapis.com/auth/userinfo.email"
    try:
        response = client.get(CALLBACK, authorize_as(url, str(mail_trust)), follow=True)
    finally:
        oauth_server.state.granted_scope = None

    assert "Google did not allow access to the mailbox." in response.text
    assert not EmailAccount.objects.exists()


@pytest.mark.parametrize("oauth_provider_kind", ["standard", "google", "microsoft"])
def test_it_refuses_an_id_token_from_another_issuer(client, provider, oauth_server, mail_trust):
    # Issue 15, point 13: the audience and expiry were right, the issuer someone else's.
    oauth_server.state.forged_issuer = "https://accounts.evil.test"
    client.force_login(UserFactory())
    url = _start(client, provider, "ann@oauth.test")

    response = client.get(CALLBACK, authorize_as(url, str(mail_trust)), follow=True)

    assert "answer was not meant for this app, or has expired." in response.text
    assert not EmailAccount.objects.exists()


@pytest.mark.parametrize("oauth_provider_kind", ["standard", "google", "microsoft"])
def test_it_refuses_an_address_the_provider_has_not_verified(
    client, provider, oauth_server, mail_trust
):
    oauth_server.state.email_verified = False
    client.force_login(UserFactory())
    url = _start(client, provider, "ann@oauth.test")

    response = client.get(CALLBACK, authorize_as(url, str(mail_trust)), follow=True)

    assert "OAuth Mail has not verified the address of the account you signed in with" in (
        response.text
    )
    assert not EmailAccount.objects.exists()


def test_it_checks_the_issuer_against_the_provider_card():
    from accounts.oauth import signed_in_address
    from providers.models import EmailProvider

    def claims(issuer, **extra):
        return {"id_token_claims": {"iss": issuer, "aud": "app", "exp": 4_000_000_000,
                                    "email": "ann@example.com", **extra}}  # fmt: skip

    google = EmailProvider(
        name="Google", security_guide="gmail", oauth_client_id="app",
        oauth_authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
    )  # fmt: skip
    for issuer in ("https://accounts.google.com", "accounts.google.com"):
        assert signed_in_address(answer=claims(issuer), provider=google) == "ann@example.com"
    microsoft = EmailProvider(
        name="Microsoft 365", security_guide="outlook", oauth_client_id="app",
        oauth_authorize_url="https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize",
    )  # fmt: skip
    tid = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    ms_issuer = f"https://login.microsoftonline.com/{tid}/v2.0"
    assert signed_in_address(answer=claims(ms_issuer, tid=tid), provider=microsoft)
    keycloak = EmailProvider(
        name="Corp SSO", oauth_client_id="app",
        oauth_authorize_url="https://sso.corp.test/realms/staff/protocol/openid-connect/auth",
    )  # fmt: skip
    assert signed_in_address(answer=claims("https://sso.corp.test/realms/staff"), provider=keycloak)

    refused = [
        (google, claims("https://accounts.google.com.evil.test")),
        (google, claims("https://evil.test")),
        (google, claims("")),
        (microsoft, claims(ms_issuer, tid="another-tenant")),  # tid and issuer disagree
        (microsoft, claims(ms_issuer)),
        (keycloak, claims("https://sso.corp.test/realms/other")),
        (keycloak, claims("http://sso.corp.test/realms/staff")),
        (google, claims("https://accounts.google.com", email_verified=False)),
        (google, claims("https://accounts.google.com", email_verified="false")),
    ]
    for provider, answer in refused:
        with pytest.raises(TokenError):
            signed_in_address(answer=answer, provider=provider)
    # A card naming its tenant id takes only that tenant's tokens.
    microsoft.oauth_tenant = "00000000-0000-0000-0000-000000000001"
    with pytest.raises(TokenError):
        signed_in_address(answer=claims(ms_issuer, tid=tid), provider=microsoft)


def test_it_refuses_to_send_the_browser_to_an_internal_authorization_address(
    client, provider, oauth_server
):
    from systemsettings.models import SystemSetting

    # Issue 15, point 5: the suite's server is on loopback; internal servers not allowed.
    SystemSetting.objects.filter(code="AllowInternalMailServers").update(value="no")
    client.force_login(UserFactory())

    response = client.post(START, {"address": "ann@oauth.test", "provider": provider.pk})

    assert response.status_code == 302
    assert response.url.startswith(reverse("accounts:wizard_sign_in"))
    page = client.get(response.url).text
    assert "is on an internal network address" in page
    assert oauth_server.calls("/authorize") == []


def _form_action(response) -> list[str]:
    header = response.headers["Content-Security-Policy"]
    [directive] = [part for part in header.split("; ") if part.startswith("form-action ")]
    return directive.split()[1:]


def _sign_in_page(provider, address: str) -> str:
    return f"{reverse('accounts:wizard_sign_in')}?address={address}&provider={provider.pk}"


@pytest.mark.parametrize("oauth_provider_kind", ["standard", "google", "microsoft"])
def test_it_lets_the_sign_in_step_send_the_browser_to_its_provider_and_nowhere_else(
    client, provider, oauth_server, oauth_provider_kind
):
    from tests.factories import ProviderDomainFactory

    ProviderDomainFactory(domain="oauth.test", provider=provider)
    client.force_login(UserFactory())
    origin = f"https://{urlsplit(oauth_server.url).netloc}"

    page = client.get(_sign_in_page(provider, "ann@oauth.test"))
    assert page.status_code == 200
    assert _form_action(page) == ["'self'", origin]
    # Reached by an htmx swap, the step loads as a page of its own: the policy of the
    # page it would land in does not allow the provider.
    swapped = client.get(_sign_in_page(provider, "ann@oauth.test"), HTTP_HX_REQUEST="true")
    assert swapped.headers["HX-Redirect"] == _sign_in_page(provider, "ann@oauth.test")
    # Every other page posts to this site only.
    for url in (
        reverse("accounts:email"),
        reverse("accounts:list"),
        reverse("accounts:wizard_address"),
    ):
        assert _form_action(client.get(url)) == ["'self'"], url


def test_it_lets_a_reconnect_button_send_the_browser_to_that_provider_only(
    client, oauth_mailbox, oauth_server
):
    from django.utils import timezone

    account, _mailbox = oauth_mailbox
    origin = f"https://{urlsplit(oauth_server.url).netloc}"
    client.force_login(account.owner)
    # Signed in with OAuth: the settings page's "Sign in again" form.
    assert _form_action(client.get(account.get_absolute_url())) == ["'self'", origin]
    assert _form_action(client.get(reverse("accounts:email"))) == ["'self'"]
    account.reconnect_needed_at = timezone.now()
    account.save()
    for url in (reverse("accounts:email"), reverse("accounts:list"), account.get_absolute_url()):
        assert _form_action(client.get(url)) == ["'self'", origin], url
    client.force_login(UserFactory())
    assert _form_action(client.get(reverse("accounts:email"))) == ["'self'"]


def test_it_explains_a_token_address_that_is_internal(client, provider, oauth_server):
    # Found by a review: only the authorization address was checked at the start; the
    # token address refused at the callback (OAuthInternalAddress) was a 500, its error
    # report holding the authorization code.
    import socket

    from systemsettings.models import SystemSetting
    from systemsettings.selectors import cache_clear

    listener = socket.socket()  # something answers there: only the rule refuses it
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        client.force_login(UserFactory())
        _start(client, provider, "ann@oauth.test")
        keys = client.session.keys()
        [state] = [key[len("oauth:") :] for key in keys if key.startswith("oauth:")]
        provider.oauth_token_url = f"https://127.0.0.1:{listener.getsockname()[1]}/token"
        provider.save()
        SystemSetting.objects.filter(code="AllowInternalMailServers").update(value="no")
        cache_clear()
        response = client.get(CALLBACK, {"state": state, "code": "c"})
    finally:
        listener.close()
    assert response.status_code == 302
    assert "is on an internal network address" in client.get(response.url).text
    assert oauth_server.calls("/token") == []


def _oauth_card():
    from tests.factories import EmailProviderFactory

    return EmailProviderFactory(auth_method="oauth2")


def test_it_keeps_a_mailbox_only_with_its_tokens(db, monkeypatch):
    # The mailbox was committed before its tokens: a token answer that could not be
    # kept left it saved without them, and adding it again said "already added".
    from datetime import timedelta

    from django.utils import timezone

    from accounts import services
    from providers.addresses import normalize_address

    monkeypatch.setattr(services, "check_sign_in", lambda **kw: "")
    user, provider = UserFactory(), _oauth_card()
    address = normalize_address("anna@example.test")
    monkeypatch.setattr(services, "tokens_store", lambda **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        services.account_create(
            user=user, provider=provider, address=address, login=address.email,
            oauth={"access_token": "t", "refresh_token": "r"},
        )  # fmt: skip
    assert not EmailAccount.objects.filter(owner=user).exists()
    monkeypatch.undo()
    monkeypatch.setattr(services, "check_sign_in", lambda **kw: "")
    # A lifetime written otherwise than RFC 6749's integer is read, not a crash.
    for lifetime, hours in [(None, 1), ("7200.0", 2), (10**30, 24 * 365), ("soon", 1)]:
        EmailAccount.objects.filter(owner=user).delete()
        account = services.account_create(
            user=user, provider=provider, address=address, login=address.email,
            oauth={"access_token": "t", "refresh_token": "r", "expires_in": lifetime},
        )  # fmt: skip
        left = account.oauth_expires_at - timezone.now()
        assert timedelta(hours=hours) - timedelta(minutes=1) < left <= timedelta(hours=hours)


def test_it_signs_a_mailbox_added_back_in_with_what_it_is_added_with(db, monkeypatch):
    # Removed while it used OAuth (waiting for "Reconnect"), added back with a password:
    # it kept uses_oauth and the banner, and every sign-in tried OAuth with no tokens.
    from django.utils import timezone

    from accounts import services
    from providers.addresses import normalize_address
    from tests.factories import EmailAccountFactory, EmailProviderFactory

    monkeypatch.setattr(services, "check_sign_in", lambda **kw: "")
    user = UserFactory()
    account = EmailAccountFactory(owner=user, provider=_oauth_card(), address="anna@example.test")
    account.uses_oauth, account.reconnect_needed_at = True, timezone.now()
    account.oauth_refresh_token_encrypted = crypto.encrypt("r")
    account.save()
    services.account_remove(account=account, actor=user, keep_emails=True)
    address = normalize_address("anna@example.test")
    again = services.account_create(
        user=user, provider=EmailProviderFactory(), address=address, login=address.email,
        password="app-password",
    )  # fmt: skip
    again.refresh_from_db()
    assert again.pk == account.pk
    assert (again.uses_oauth, again.reconnect_needed_at) == (False, None)
    assert again.oauth_refresh_token_encrypted == "" and again.get_password() == "app-password"


def test_it_takes_the_unicode_spelling_of_an_international_address(db, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from accounts import oauth
    from providers.addresses import normalize_address
    from tests.factories import EmailProviderFactory

    provider = EmailProviderFactory(
        auth_method="oauth2", oauth_client_id="cid",
        oauth_authorize_url="https://id.example.test/auth",
        oauth_token_url="https://id.example.test/token",
    )  # fmt: skip
    claims = {
        "aud": "cid", "iss": "https://id.example.test", "email_verified": True,
        "exp": (timezone.now() + timedelta(hours=1)).timestamp(),
    }  # fmt: skip
    answer = {"access_token": "t", "id_token_claims": claims}
    monkeypatch.setattr(oauth, "code_exchange", lambda **kw: answer)
    address = normalize_address("anna@bücher.example").email
    for claimed in ("Anna@Bücher.example", "anna@xn--bcher-kva.example"):
        claims["email"] = claimed
        assert oauth.sign_in_answer(
            provider=provider, pending=None, query={"code": "c"}, redirect_uri="https://x/cb",
            address=address, reconnecting=False,
        ) is answer  # fmt: skip
    claims["email"] = "someone@bücher.example"
    with pytest.raises(TokenError, match=r"as someone@xn--bcher-kva\.example, not as"):
        oauth.sign_in_answer(
            provider=provider, pending=None, query={"code": "c"}, redirect_uri="https://x/cb",
            address=address, reconnecting=False,
        )  # fmt: skip


def test_it_keeps_a_few_unfinished_sign_ins_and_says_when_one_comes_back(
    client, provider, oauth_server, mail_trust, synced_mailbox
):
    # Every click on "Sign in with …" kept its state in the session for good; a reload
    # of the callback said the sign-in "did not start in this browser session".
    from accounts.views.oauth import MAX_PENDING

    client.force_login(UserFactory())
    for _ in range(MAX_PENDING + 7):
        _start(client, provider, "ann@oauth.test")
    started = [key for key in client.session.keys() if key.startswith("oauth:")]  # noqa: SIM118
    assert len(started) == MAX_PENDING
    pooled, _mailbox = synced_mailbox
    address = pooled.address
    pooled.delete()
    back = authorize_as(_start(client, provider, address), str(mail_trust))
    assert client.get(CALLBACK, back).url == reverse("accounts:email")
    again = client.get(CALLBACK, back)
    assert again.status_code == 302 and again.url == reverse("accounts:list")
    assert "That sign-in was used already" in client.get(again.url).text
