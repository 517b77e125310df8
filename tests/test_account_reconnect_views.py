"""A mailbox whose OAuth 2.0 sign-in the provider no longer honours: the owner's banner,
the one-click "Reconnect" (the real flow again, against the suite's authorization
server, Dovecot and SMTP server), and the warning before the app's client secret ends."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import AccountChange
from accounts.oauth import ReconnectNeeded, access_token
from mailsetup import crypto
from sync.models import Email, MailboxSync, SyncRun
from sync.services import mailbox_sync, mailboxes_due
from tests.factories import UserFactory
from tests.mailbox import make_message
from tests.servers.oauth import authorize_as

CALLBACK = reverse("accounts:oauth_callback")


@pytest.fixture
def revoked(oauth_mailbox, oauth_server):
    """A synced OAuth mailbox with settings of its own, then its consent revoked and a
    sync that found out: it needs attention and waits for its owner."""
    account, mailbox = oauth_mailbox
    mailbox.append("INBOX", make_message(subject="before the revocation"))
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.SUCCEEDED
    account.display_name, account.sync_period, account.auto_sync = "Sales desk", "1m", True
    account.save()
    oauth_server.expire_access_tokens()
    oauth_server.state.refresh_tokens.clear()
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.FAILED
    account.refresh_from_db()
    assert account.reconnect_needed_at is not None
    oauth_server.state.requests.clear()
    return account, mailbox


def _reconnect(client, account, ca_file: str, login_hint: str | None = None):
    started = client.post(reverse("accounts:reconnect", args=[account.pk]))
    assert started.status_code == 302
    assert started.url.startswith(account.provider.oauth_authorize_url)
    return client.get(CALLBACK, authorize_as(started.url, ca_file, login_hint), follow=True)


def test_it_shows_the_owner_a_banner_with_a_reconnect_button(client, revoked):
    account, _mailbox = revoked
    client.force_login(account.owner)
    action = reverse("accounts:reconnect", args=[account.pk])

    for page in (reverse("accounts:email"), reverse("accounts:list"), account.get_absolute_url()):
        text = client.get(page).text
        assert "needs you to sign in again" in text, page
        assert f'action="{action}"' in text, page

    client.force_login(UserFactory())
    assert "needs you to sign in again" not in client.get(reverse("accounts:email")).text


@pytest.mark.parametrize("oauth_provider_kind", ["standard", "google", "microsoft"])
def test_it_reconnects_and_keeps_every_setting_and_email(
    client, revoked, oauth_server, mail_trust, queued
):
    account, mailbox = revoked
    emails_before = set(Email.objects.filter(account=account).values_list("pk", flat=True))
    assert emails_before
    client.force_login(account.owner)

    response = _reconnect(client, account, str(mail_trust))

    assert response.redirect_chain[-1][0] == account.get_absolute_url()
    assert f"{account.address} is connected again" in response.text
    assert "needs you to sign in again" not in response.text
    account.refresh_from_db()
    assert account.reconnect_needed_at is None and account.uses_oauth
    assert (account.display_name, account.sync_period) == ("Sales desk", "1m")
    assert crypto.decrypt(account.oauth_refresh_token_encrypted) in (
        oauth_server.state.refresh_tokens
    )
    # The new tokens were tried on the real servers before they were kept.
    assert oauth_server.calls("/introspect")
    assert MailboxSync.objects.get(account=account).health == MailboxSync.Health.OK
    assert queued == [account.pk]
    assert AccountChange.objects.filter(
        account=account, field="sign-in", new_value="signed in again"
    ).exists()
    # The dispatcher takes it again, and the next run adds only what is new.
    MailboxSync.objects.filter(account=account).update(last_started_at=None)
    assert account.pk in mailboxes_due()
    mailbox.append("INBOX", make_message(subject="after reconnecting"))
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    emails_after = set(Email.objects.filter(account=account).values_list("pk", flat=True))
    assert emails_before < emails_after and len(emails_after) == len(emails_before) + 1


def test_it_refuses_to_reconnect_as_another_account(client, revoked, mail_trust):
    account, _mailbox = revoked
    client.force_login(account.owner)

    response = _reconnect(client, account, str(mail_trust), login_hint="mallory@oauth.test")

    assert f"as mallory@oauth.test, not as {account.address}" in response.text
    account.refresh_from_db()
    assert account.reconnect_needed_at is not None
    with pytest.raises(ReconnectNeeded):
        access_token(account_id=account.pk)


def test_it_hides_reconnect_from_users_who_may_not_set_the_mailbox_up(client, revoked):
    account, _mailbox = revoked
    client.force_login(UserFactory())
    assert client.post(reverse("accounts:reconnect", args=[account.pk])).status_code == 404


def test_it_has_no_password_to_change_for_an_oauth_mailbox(client, oauth_mailbox):
    account, _mailbox = oauth_mailbox
    client.force_login(account.owner)
    page = client.get(account.get_absolute_url()).text
    assert "Sign in again with OAuth Mail" in page and 'name="credentials-password"' not in page
    response = client.post(
        reverse("accounts:credentials", args=[account.pk]), {"credentials-password": "x"}
    )
    assert response.status_code == 404


def test_it_warns_the_owner_before_the_client_secret_ends(client, oauth_mailbox):
    account, _mailbox = oauth_mailbox
    provider = account.provider
    client.force_login(account.owner)
    email_page = reverse("accounts:email")

    provider.oauth_secret_expires_on = timezone.localdate() + timedelta(days=30)
    provider.save()
    assert "stops working on" not in client.get(email_page).text

    provider.oauth_secret_expires_on = timezone.localdate() + timedelta(days=5)
    provider.save()
    text = client.get(email_page).text
    assert "stops working on" in text and "(in 5 days)" in text
    assert "Ask an administrator to renew it on the OAuth Mail provider card" in text

    provider.oauth_secret_expires_on = timezone.localdate() - timedelta(days=1)
    provider.save()
    assert (
        "may have stopped working: the app's client secret expired on"
        in client.get(email_page).text
    )

    client.force_login(UserFactory())
    assert "client secret" not in client.get(email_page).text


def test_it_gives_the_same_alerts_from_the_listed_mailboxes_as_from_its_own_query(
    db, django_assert_num_queries
):
    from accounts.selectors import accounts_for_user, sign_in_alerts
    from tests.factories import EmailAccountFactory

    owner, today = UserFactory(), timezone.localdate()
    now = timezone.now()
    cases = [
        # (uses OAuth, reconnect needed, the secret's end): alerted?
        (True, True, None),  # reconnect
        (True, False, today + timedelta(days=5)),  # the secret ends soon
        (True, False, today - timedelta(days=1)),  # the secret has ended
        (True, False, today + timedelta(days=14)),  # the last day warned of
        (True, True, today + timedelta(days=30)),  # reconnect; the end far off
        (True, False, today + timedelta(days=15)),  # far off: no
        (True, False, None),  # no
        (False, True, None),  # a password mailbox: no
        (False, False, today + timedelta(days=5)),  # a password mailbox: no
    ]
    for uses_oauth, reconnect, ends_on in cases:
        account = EmailAccountFactory(
            owner=owner, uses_oauth=uses_oauth, reconnect_needed_at=now if reconnect else None
        )
        account.provider.oauth_secret_expires_on = ends_on
        account.provider.save()
    removed = EmailAccountFactory(owner=owner, uses_oauth=True, reconnect_needed_at=now)
    removed.removed_at = now
    removed.save()
    EmailAccountFactory(uses_oauth=True, reconnect_needed_at=now)  # someone else's

    queried = sign_in_alerts(owner)
    accounts = list(accounts_for_user(owner))
    with django_assert_num_queries(0):
        listed = sign_in_alerts(owner, accounts=accounts)
    assert [(a.account.pk, a.reconnect, a.ends_on) for a in listed] == [
        (a.account.pk, a.reconnect, a.ends_on) for a in queried
    ]
    # The first five cases, in the cases' order (the list's is by address).
    assert [(a.reconnect, a.ends_on) for a in sorted(queried, key=lambda a: a.account.pk)] == [
        (True, None), (False, today + timedelta(days=5)), (False, today - timedelta(days=1)),
        (False, today + timedelta(days=14)), (True, None),
    ]  # fmt: skip
