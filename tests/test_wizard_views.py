"""The wizard's pages through Django's test client, signing in against Dovecot and aiosmtpd."""

from urllib.parse import urlencode

import pytest
from django.urls import reverse

from accounts.models import AccountNotification, EmailAccount, SignInAttempt
from providers.models import EmailProvider, ProviderDomain, Source
from tests.conftest import MAIL_USERS
from tests.factories import UserFactory

ALICE = "alice@example.test"


@pytest.fixture
def member(db):
    return UserFactory(first_name="Alice", last_name="Archer")


@pytest.fixture
def signed_in(client, member):
    client.force_login(member)
    return client


def _sign_in_url(provider, address=ALICE, via=""):
    params = {"address": address, "provider": provider.pk, **({"via": via} if via else {})}
    return f"{reverse('accounts:wizard_sign_in')}?{urlencode(params)}"


def test_it_sends_a_known_domain_straight_to_sign_in(signed_in, test_provider):
    response = signed_in.post(
        reverse("accounts:wizard_address"), {"address": " Alice@Example.TEST "}
    )
    assert response.status_code == 302
    assert response.url == _sign_in_url(test_provider, via="table")
    page = signed_in.get(response.url)
    assert "found in Email providers domains" in page.text
    assert "You sign in as <strong>alice@example.test</strong>" in page.text


def test_it_names_the_problem_with_a_bad_address_and_keeps_it(signed_in):
    response = signed_in.post(reverse("accounts:wizard_address"), {"address": "alice.example.test"})
    assert response.status_code == 200
    assert "needs an @ between the name and the domain" in response.text
    assert 'value="alice.example.test"' in response.text


def test_it_asks_for_the_provider_of_an_unknown_domain(signed_in, test_provider):
    response = signed_in.post(reverse("accounts:wizard_address"), {"address": "anna@unknown.test"})
    assert response.url == f"{reverse('accounts:wizard_provider')}?address=anna%40unknown.test"
    page = signed_in.get(f"{response.url}&q=test+mail")
    assert "Test Mail" in page.text
    assert "Gmail" not in page.text
    assert "Only administrators can add a mail server" in page.text
    assert "We could not tell which provider serves" in page.text
    change = f'href="{reverse("accounts:wizard_address")}?address=anna%40unknown.test"'
    assert change in page.text  # back to the address, as typed, to mend its spelling


def test_it_does_not_say_it_could_not_tell_when_the_user_asks_for_another(signed_in, test_provider):
    # "Not your provider? Choose another" led to "We could not tell which provider
    # serves …", though it had found one.
    from accounts.views.wizard import DISCOVERY_NOTE

    session = signed_in.session
    session[DISCOVERY_NOTE] = {"address": "anna@unknown.test", "provider": test_provider.pk}
    session.save()
    page = signed_in.get(reverse("accounts:wizard_provider"), {"address": "anna@unknown.test"})
    assert "could not tell" not in page.text
    assert "Choose the provider that serves <strong>anna@unknown.test</strong>" in page.text


def test_it_searches_providers_by_domain_as_an_htmx_partial(signed_in, test_provider):
    response = signed_in.get(
        reverse("accounts:wizard_provider"),
        {"address": "anna@unknown.test", "q": "gmail.com"},
        headers={"HX-Request": "true", "HX-Target": "provider-list"},
    )
    assert response.text.strip().startswith('<div id="provider-list">')
    assert "Gmail / Google Workspace" in response.text
    assert "<html" not in response.text


def test_it_renders_a_step_as_a_partial_for_htmx(signed_in, test_provider):
    response = signed_in.get(_sign_in_url(test_provider), headers={"HX-Request": "true"})
    assert response.text.strip().startswith('<section id="wizard"')
    assert response.headers["HX-Push-Url"] == _sign_in_url(test_provider)


def test_it_creates_the_account_with_defaults_after_a_real_sign_in(
    signed_in, member, test_provider
):
    response = signed_in.post(_sign_in_url(test_provider), {"password": MAIL_USERS[ALICE]})
    assert response.status_code == 302
    assert response.url == reverse("accounts:email")
    account = EmailAccount.objects.get(owner=member)
    assert (account.address, account.login, account.provider) == (ALICE, ALICE, test_provider)
    assert (account.sync_period, account.auto_sync, account.folder_mode) == ("1w", True, "all")
    assert (account.send_enabled, account.is_default_sender) == (True, True)
    assert account.display_name == "Alice Archer"
    assert account.signature_html == ""
    assert account.get_password() == MAIL_USERS[ALICE]
    assert MAIL_USERS[ALICE] not in account.password_encrypted
    note = AccountNotification.objects.get(account=account)
    page = signed_in.get(reverse("accounts:email"))
    assert "alice@example.test</strong> is connected" in page.text
    # Issue 17, point 12: said once (the notification), not again in a message above it.
    assert page.text.count("is connected") == 1
    assert reverse("accounts:settings", args=[account.pk]) in page.text
    assert "Download emails" in page.text
    assert f"notifications/{note.pk}/dismiss/" in page.text


def test_it_makes_only_the_first_mailbox_the_default_sender(signed_in, member, test_provider):
    signed_in.post(_sign_in_url(test_provider), {"password": MAIL_USERS[ALICE]})
    signed_in.post(
        _sign_in_url(test_provider, address="bob@example.test"),
        {"password": MAIL_USERS["bob@example.test"]},
    )
    defaults = dict(EmailAccount.objects.values_list("address", "is_default_sender"))
    assert defaults == {ALICE: True, "bob@example.test": False}


def test_it_saves_nothing_and_never_echoes_the_password_on_failure(signed_in, test_provider):
    response = signed_in.post(_sign_in_url(test_provider), {"password": "wrong-password"})
    assert response.status_code == 200
    assert "did not accept the login or password" in response.text
    # The login is made from the address here: the person can only check the password.
    assert "Check the password and try again." in response.text
    assert "wrong-password" not in response.text
    assert not EmailAccount.objects.exists()
    assert not AccountNotification.objects.exists()
    assert SignInAttempt.objects.get().succeeded is False


def test_it_links_the_existing_mailbox_when_added_twice(signed_in, test_provider):
    signed_in.post(_sign_in_url(test_provider), {"password": MAIL_USERS[ALICE]})
    account = EmailAccount.objects.get()
    for response in (
        signed_in.post(reverse("accounts:wizard_address"), {"address": ALICE}),
        signed_in.post(_sign_in_url(test_provider), {"password": MAIL_USERS[ALICE]}),
    ):
        assert "You have already added alice@example.test" in response.text
        assert reverse("accounts:settings", args=[account.pk]) in response.text
    assert EmailAccount.objects.count() == 1


def test_it_limits_sign_in_attempts_and_says_when_to_retry(signed_in, test_provider):
    for _ in range(5):
        signed_in.post(_sign_in_url(test_provider), {"password": "wrong"})
    response = signed_in.post(_sign_in_url(test_provider), {"password": MAIL_USERS[ALICE]})
    assert "Too many sign-in attempts" in response.text
    assert "Try again after" in response.text
    assert not EmailAccount.objects.exists()
    assert SignInAttempt.objects.count() == 5


def test_it_never_lets_other_users_lock_someone_out_of_their_own_address(client, test_provider):
    """Issue 15, point 7: the limit was per address alone, so anyone could spend an
    address's attempts and lock its owner out of adding it."""
    for _ in range(12):
        client.force_login(UserFactory())
        client.post(_sign_in_url(test_provider), {"password": "wrong"})
    owner = UserFactory()
    client.force_login(owner)
    response = client.post(_sign_in_url(test_provider), {"password": MAIL_USERS[ALICE]})
    assert "Too many sign-in attempts" not in response.text
    assert EmailAccount.objects.filter(owner=owner, address=ALICE).exists()


def test_it_limits_attempts_per_address_and_per_user(signed_in, test_provider, settings):
    from accounts.services import SIGN_IN_LIMIT_PER_USER

    for _ in range(5):
        signed_in.post(_sign_in_url(test_provider), {"password": "wrong"})
    # Locked for this address only: another of the user's addresses still works...
    response = signed_in.post(
        _sign_in_url(test_provider, "bob@example.test"),
        {"password": MAIL_USERS["bob@example.test"]},
    )
    assert "Too many sign-in attempts" not in response.text
    assert EmailAccount.objects.filter(address="bob@example.test").exists()
    # ...until the user's own attempts reach the limit for every address.
    for n in range(SIGN_IN_LIMIT_PER_USER - 6):
        signed_in.post(_sign_in_url(test_provider, f"x{n}@example.test"), {"password": "wrong"})
    response = signed_in.post(
        _sign_in_url(test_provider, "carol@example.test"), {"password": "wrong"}
    )
    assert "Too many sign-in attempts from your user account (20 in 10 minutes)" in response.text


def test_it_remembers_a_picked_provider_for_the_next_person(client, test_provider):
    # carol's domain is unknown; she picks the test provider by hand.
    address = "carol@elsewhere.test"
    client.force_login(UserFactory())
    pick = client.post(
        f"{reverse('accounts:wizard_provider')}?address={address}", {"provider": test_provider.pk}
    )
    assert pick.url == _sign_in_url(test_provider, address=address, via="pick")
    assert not ProviderDomain.objects.filter(domain="elsewhere.test").exists()
    client.post(pick.url, {"password": MAIL_USERS[address]})
    entry = ProviderDomain.objects.get(domain="elsewhere.test")
    assert (entry.provider, entry.source) == (test_provider, Source.USER)

    client.force_login(UserFactory())
    response = client.post(reverse("accounts:wizard_address"), {"address": "dave@elsewhere.test"})
    assert response.url == _sign_in_url(test_provider, address="dave@elsewhere.test", via="table")


def test_it_does_not_remember_a_domain_the_login_does_not_prove(client, test_provider):
    # mallory signs in to a server she controls with a login of her own choosing: that
    # says nothing about who serves other.test, so nobody else is sent there.
    test_provider.login_format = "manual"
    test_provider.save()
    client.force_login(UserFactory())
    response = client.post(
        _sign_in_url(test_provider, address="boss@other.test", via="pick"),
        {"login": ALICE, "password": MAIL_USERS[ALICE]},
    )
    assert response.status_code == 302
    assert EmailAccount.objects.filter(address="boss@other.test").exists()
    assert not ProviderDomain.objects.filter(domain="other.test").exists()


def test_it_shows_app_password_guidance_for_gmail(signed_in, builtin_providers):
    gmail = EmailProvider.objects.get(name="Gmail / Google Workspace")
    page = signed_in.get(_sign_in_url(gmail, address="anna@gmail.com", via="table"))
    assert "App password" in page.text
    assert "https://support.google.com/accounts/answer/185833" in page.text
    assert reverse("accounts:secure_connection") in page.text


def test_it_disables_oauth_sign_in_until_the_app_is_registered(signed_in, builtin_providers):
    outlook = EmailProvider.objects.get(name="Outlook.com")
    page = signed_in.get(_sign_in_url(outlook, address="anna@outlook.com"))
    assert 'disabled aria-describedby="oauth-reason">Sign in with Outlook.com' in page.text
    assert "its OAuth application is not registered yet" in page.text
    assert 'type="password"' not in page.text
    # Not where a password would go, from a card that names no sign-in address yet.
    assert "(no sign-in address on the provider card)" not in page.text

    outlook.oauth_client_id = "app-id"
    outlook.set_oauth_client_secret("secret")
    outlook.oauth_authorize_url = "https://login.example/authorize"
    outlook.oauth_token_url = "https://login.example/token"
    outlook.save()
    page = signed_in.get(_sign_in_url(outlook, address="anna@outlook.com"))
    assert '<button type="submit" class="primary">Sign in with Outlook.com</button>' in page.text
    assert 'type="password"' not in page.text


def test_it_asks_for_a_login_when_the_provider_wants_it_typed(signed_in, test_provider):
    test_provider.login_format = "manual"
    test_provider.save()
    response = signed_in.post(_sign_in_url(test_provider), {"password": MAIL_USERS[ALICE]})
    assert "Enter the login name Test Mail gave you" in response.text
    assert not EmailAccount.objects.exists()
    typed = {"login": "someone-else", "password": "wrong-password"}
    response = signed_in.post(_sign_in_url(test_provider), typed)
    assert "Check the login and password and try again." in response.text


def test_it_lets_only_managers_add_a_server(signed_in, member, test_provider):
    url = f"{reverse('accounts:wizard_new_server')}?address=anna@newcorp.test"
    assert signed_in.get(url).status_code == 403
    assert signed_in.post(url, {"name": "x"}).status_code == 403


def test_it_hides_other_users_mailboxes(client, signed_in, test_provider):
    signed_in.post(_sign_in_url(test_provider), {"password": MAIL_USERS[ALICE]})
    account = EmailAccount.objects.get()
    client.force_login(UserFactory())
    assert client.get(reverse("accounts:settings", args=[account.pk])).status_code == 404
    note = AccountNotification.objects.get()
    assert client.post(reverse("accounts:dismiss_notification", args=[note.pk])).status_code == 404


def test_it_dismisses_the_notification_for_good(signed_in, test_provider):
    signed_in.post(_sign_in_url(test_provider), {"password": MAIL_USERS[ALICE]})
    note = AccountNotification.objects.get()
    response = signed_in.post(
        reverse("accounts:dismiss_notification", args=[note.pk]), headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    # In its place, with the focus (the element that had it is gone).
    assert f'id="notification-{note.pk}" role="status" tabindex="-1" autofocus>' in response.text
    assert f'id="notification-{note.pk}"' not in signed_in.get(reverse("accounts:email")).text


def test_it_moves_the_focus_to_the_missing_provider(signed_in, test_provider):
    url = f"{reverse('accounts:wizard_provider')}?address=anna%40unknown.test"
    page = signed_in.post(url, {"provider": ""}, headers={"HX-Request": "true"}).text
    assert 'tabindex="-1" autofocus>Choose your email provider from the list.</div>' in page
    assert 'id="provider-search"' in page and 'Name or domain" autofocus' not in page
    assert 'placeholder="Name or domain" autofocus' in signed_in.get(url).text


def test_it_requires_signing_in(client, db):
    response = client.get(reverse("accounts:wizard_address"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_it_answers_a_non_ascii_password_with_a_message_not_an_error_page(signed_in, test_provider):
    response = signed_in.post(_sign_in_url(test_provider), {"password": "pässwörd"})
    assert response.status_code == 200
    assert "characters (such as letters with accents)" in response.text
    assert "pässwörd" not in response.text


def test_it_refuses_a_password_post_for_an_oauth_only_provider(signed_in, builtin_providers):
    outlook = EmailProvider.objects.get(name="Outlook.com")
    response = signed_in.post(_sign_in_url(outlook, address="anna@outlook.com"), {"password": "x"})
    assert response.status_code == 200
    assert not SignInAttempt.objects.exists()
    assert not EmailAccount.objects.exists()


def test_it_sends_a_malformed_provider_back_to_the_choice(signed_in, db):
    response = signed_in.get(f"{reverse('accounts:wizard_sign_in')}?address={ALICE}&provider=²")
    assert response.status_code == 302
    assert response.url.startswith(reverse("accounts:wizard_provider"))


def test_it_shows_which_servers_the_sign_in_will_check(signed_in, test_provider):
    page = signed_in.get(_sign_in_url(test_provider))
    assert f"IMAP localhost:{test_provider.imap_port} (SSL)" in page.text
    assert f"SMTP localhost:{test_provider.smtp_port} (STARTTLS)" in page.text


def test_it_lets_an_address_outside_ascii_reach_the_server_and_finds_it_added(signed_in):
    # type="email" made browsers refuse "jürgen@…" (RFC 6531, which the app takes) with
    # a message of their own; and its NFD spelling passed as another mailbox.
    import unicodedata

    from django.contrib.auth import get_user_model

    from tests.factories import EmailAccountFactory

    page = signed_in.get(reverse("accounts:wizard_address")).text
    assert 'type="email"' not in page and 'inputmode="email"' in page
    user = get_user_model().objects.get(pk=signed_in.session["_auth_user_id"])
    EmailAccountFactory(owner=user, address="jürgen@example.com")
    typed = unicodedata.normalize("NFD", "jürgen@example.com")
    response = signed_in.post(reverse("accounts:wizard_address"), {"address": typed})
    assert response.status_code == 200
    assert "You have already added" in response.text


def test_it_sends_an_htmx_request_whose_session_ended_to_the_whole_sign_in_page(client, db):
    # htmx followed login_required's redirect and swapped the sign-in page into the
    # wizard, whose form then posted the user's name and password to the wizard.
    url = reverse("accounts:wizard_address")
    response = client.post(
        url, {"address": "ann@example.test"}, headers={"HX-Request": "true",
        "HX-Current-URL": f"http://testserver{url}?x=1"},
    )  # fmt: skip
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"{reverse('login')}?next=%2Fmailboxes%2Fnew%2F%3Fx%3D1"
    # Without htmx, Django's own redirect; and the sign-in form posts to itself.
    assert client.get(url).status_code == 302
    page = client.get(reverse("login"), {"next": url}).text
    assert f'action="{reverse("login")}"' in page and f'value="{url}"' in page


def test_it_does_not_offer_a_card_that_neither_receives_nor_sends(signed_in, test_provider):
    from accounts.selectors import providers_matching

    assert test_provider in providers_matching("", "unknown.test")
    test_provider.receive_enabled = test_provider.send_enabled = False
    test_provider.save()
    assert test_provider not in providers_matching("", "unknown.test")
    # Discovery finds it by its domain no more (its sign-in step was a 404).
    response = signed_in.post(reverse("accounts:wizard_address"), {"address": ALICE})
    assert response.url.startswith(reverse("accounts:wizard_provider"))
    assert signed_in.get(response.url).status_code == 200
    test_provider.send_enabled = True  # sending only: offered
    test_provider.save()
    assert test_provider in providers_matching("", "unknown.test")
