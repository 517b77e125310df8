"""Re-entering a mailbox's password on its settings page, checked for real."""

import pytest
from django.urls import reverse

from accounts.models import AccountChange
from sync.models import MailboxSync
from tests.factories import EmailAccountFactory, UserFactory

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def alice(test_provider):
    account = EmailAccountFactory(
        provider=test_provider, address="alice@example.test", password="the-old-password"
    )
    MailboxSync.objects.create(
        account=account,
        health=MailboxSync.Health.NEEDS_ATTENTION,
        last_error="The mail server did not accept the login or password.",
    )
    return account


def _post(client, account, password, **headers):
    url = reverse("accounts:credentials", args=[account.pk])
    return client.post(url, {"credentials-password": password}, **headers)


def test_it_saves_a_password_that_works_and_resumes_the_sync(client, alice, queued):
    client.force_login(alice.owner)
    response = _post(client, alice, "alice-secret", **HTMX)
    body = response.content.decode()
    assert "The new password works and is saved." in body
    # Never sent back, not even masked.
    assert "alice-secret" not in body
    alice.refresh_from_db()
    assert alice.get_password() == "alice-secret"
    sync = MailboxSync.objects.get(account=alice)
    assert (sync.health, sync.last_error) == (MailboxSync.Health.OK, "")
    assert queued == [alice.pk]
    change = AccountChange.objects.get()
    assert (change.field, change.old_value, change.new_value) == ("password", "", "changed")
    assert "alice-secret" not in str(list(AccountChange.objects.values()))


def test_it_keeps_the_old_password_until_the_new_one_works(client, alice, queued):
    client.force_login(alice.owner)
    for headers in (HTMX, {}):
        response = _post(client, alice, "not-it", **headers)
        body = response.content.decode()
        assert response.status_code == 200
        assert "did not accept the login or password" in body
    alice.refresh_from_db()
    assert alice.get_password() == "the-old-password"
    assert MailboxSync.objects.get(account=alice).health == MailboxSync.Health.NEEDS_ATTENTION
    assert queued == []
    assert not AccountChange.objects.exists()


def test_it_saves_without_javascript(client, alice, queued):
    client.force_login(alice.owner)
    response = _post(client, alice, "alice-secret")
    assert response.status_code == 302
    assert response.url.endswith("#settings-credentials")
    assert "The new password works and is saved." in client.get(response.url).content.decode()


def test_it_names_the_missing_password(client, alice):
    client.force_login(alice.owner)
    body = _post(client, alice, "", **HTMX).content.decode()
    assert "Password: Enter the password (or app password) of this mailbox." in body


def test_it_hides_another_users_mailbox(client, alice):
    client.force_login(UserFactory())
    assert _post(client, alice, "alice-secret", **HTMX).status_code == 404
    alice.refresh_from_db()
    assert alice.get_password() == "the-old-password"


def test_it_changes_the_login_where_the_provider_lets_users_choose_it(client, test_provider):
    test_provider.login_format = "manual"
    test_provider.save()
    account = EmailAccountFactory(
        provider=test_provider, address="bob@example.test", login="old-login", password="x"
    )
    client.force_login(account.owner)
    url = reverse("accounts:credentials", args=[account.pk])
    body = client.post(url, {"credentials-password": "bob-secret"}, **HTMX).content.decode()
    assert "Login: Enter the login name Test Mail gave you for this mailbox." in body
    data = {"credentials-login": "bob@example.test", "credentials-password": "bob-secret"}
    assert "is saved" in client.post(url, data, **HTMX).content.decode()
    account.refresh_from_db()
    assert (account.login, account.get_password()) == ("bob@example.test", "bob-secret")
    login = AccountChange.objects.get(field="login")
    assert (login.old_value, login.new_value) == ("old-login", "bob@example.test")
