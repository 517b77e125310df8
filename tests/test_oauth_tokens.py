"""OAuth 2.0 token lifecycle against the suite's authorization server (real HTTPS on
loopback): refresh before expiry, rotation stored, one refresh for concurrent askers,
and a revoked grant turned into "reconnect needed" with no further requests."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import EmailAccount
from accounts.oauth import ReconnectNeeded, TokenError, access_token, tokens_store
from mailsetup import crypto
from tests.factories import EmailAccountFactory


def _account(oauth_server, provider, *, expires_in: int) -> EmailAccount:
    account = EmailAccountFactory(provider=provider, address="ann@oauth.test")
    answer = oauth_server.grant("ann@oauth.test", "mailsetup-test")
    tokens_store(account=account, answer=answer | {"expires_in": expires_in})
    return account


def test_it_uses_a_fresh_token_without_asking_the_server(oauth_server, oauth_provider):
    account = _account(oauth_server, oauth_provider, expires_in=3600)
    token = crypto.decrypt(account.oauth_access_token_encrypted)
    assert access_token(account_id=account.pk) == token
    assert oauth_server.calls("/token") == []


@pytest.mark.parametrize("oauth_provider_kind", ["standard", "google", "microsoft"])
def test_it_refreshes_before_expiry_and_keeps_the_rotated_refresh_token(
    oauth_server, oauth_provider
):
    account = _account(oauth_server, oauth_provider, expires_in=120)  # inside the margin
    old_refresh = crypto.decrypt(account.oauth_refresh_token_encrypted)

    token = access_token(account_id=account.pk)

    [call] = oauth_server.calls("/token")
    assert (call["grant_type"], call["refresh_token"]) == ("refresh_token", old_refresh)
    account.refresh_from_db()
    assert crypto.decrypt(account.oauth_access_token_encrypted) == token
    new_refresh = crypto.decrypt(account.oauth_refresh_token_encrypted)
    assert new_refresh != old_refresh and new_refresh in oauth_server.state.refresh_tokens
    assert account.oauth_expires_at > timezone.now() + timedelta(minutes=50)
    # Stored encrypted: neither token appears in the row as written.
    raw = EmailAccount.objects.filter(pk=account.pk).values().get()
    assert token not in str(raw) and new_refresh not in str(raw)
    # The server refused a token: refresh on demand even though it has not expired.
    assert access_token(account_id=account.pk, force_refresh=True) != token


@pytest.mark.parametrize("oauth_provider_kind", ["standard", "google", "microsoft"])
def test_it_marks_reconnect_needed_when_the_grant_was_revoked_and_stops_asking(
    oauth_server, oauth_provider
):
    account = _account(oauth_server, oauth_provider, expires_in=0)
    oauth_server.state.refresh_tokens.clear()  # the user revoked the app's access

    with pytest.raises(ReconnectNeeded, match="no longer accepts this mailbox's sign-in"):
        access_token(account_id=account.pk)
    account.refresh_from_db()
    assert account.reconnect_needed_at is not None
    for _ in range(10):
        with pytest.raises(ReconnectNeeded):
            access_token(account_id=account.pk)
    assert len(oauth_server.calls("/token")) == 1


def test_it_tells_a_transient_failure_apart(oauth_server, oauth_provider, monkeypatch):
    account = _account(oauth_server, oauth_provider, expires_in=0)
    oauth_provider.oauth_token_url = "https://localhost:1/token"  # nothing listens there
    oauth_provider.save()
    with pytest.raises(TokenError):
        access_token(account_id=account.pk)
    account.refresh_from_db()
    assert account.reconnect_needed_at is None


def test_it_refuses_a_token_address_without_tls(oauth_server, oauth_provider):
    account = _account(oauth_server, oauth_provider, expires_in=0)
    oauth_provider.oauth_token_url = oauth_provider.oauth_token_url.replace("https", "http")
    oauth_provider.save()
    with pytest.raises(TokenError, match="must start with https://"):
        access_token(account_id=account.pk)


@pytest.mark.django_db(transaction=True)
def test_it_refreshes_once_when_workers_ask_at_the_same_time(oauth_server, oauth_provider):
    account = _account(oauth_server, oauth_provider, expires_in=0)
    tokens, errors = [], []

    def ask():
        try:
            tokens.append(access_token(account_id=account.pk))
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(oauth_server.calls("/token")) == 1
    assert len(set(tokens)) == 1


def test_it_asks_msal_at_the_tenant_the_card_names():
    from accounts.oauth import microsoft_authority
    from providers.models import EmailProvider

    card = EmailProvider(
        oauth_authorize_url="https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize"
    )
    assert microsoft_authority(card) == "https://login.microsoftonline.com/organizations"
    card.oauth_tenant = "contoso.onmicrosoft.com"
    assert microsoft_authority(card) == "https://login.microsoftonline.com/contoso.onmicrosoft.com"
    card.oauth_authorize_url = "https://login.example.test/t1/oauth2/v2.0/authorize"
    assert microsoft_authority(card) == "https://login.example.test/t1"


def test_it_commits_a_rotated_refresh_token_durably_even_during_a_sync(
    oauth_server, oauth_provider
):
    """Issue 15, point 3: a sync turns synchronous_commit off for its own commits; the
    transaction that stores a rotated refresh token must wait for the disk all the same
    (the provider spent the old token: a crash would leave the mailbox unusable)."""
    from sync.services import _commits_without_waiting_for_disk

    account = _account(oauth_server, oauth_provider, expires_in=0)
    seen = []

    def watch(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.startswith("UPDATE") and "oauth_refresh_token_encrypted" in sql:
            with context["connection"].cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                seen.append(cursor.fetchone()[0])
        return result

    with _commits_without_waiting_for_disk(), connection.execute_wrapper(watch):
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "off"
        access_token(account_id=account.pk)

    assert seen == ["on"]
    account.refresh_from_db()
    assert (
        crypto.decrypt(account.oauth_refresh_token_encrypted) in oauth_server.state.refresh_tokens
    )


@pytest.mark.parametrize("oauth_provider_kind", ["standard", "google", "microsoft"])
def test_it_never_sends_tokens_to_an_internal_address_unless_allowed(
    oauth_server, oauth_provider, oauth_provider_kind
):
    """Issue 15, point 5: the token (and, for Microsoft, the OpenID discovery) address
    of the card is on loopback; with internal servers not allowed nothing is sent."""
    from accounts.oauth import OAuthInternalAddress
    from systemsettings.models import SystemSetting

    account = _account(oauth_server, oauth_provider, expires_in=0)
    SystemSetting.objects.filter(code="AllowInternalMailServers").update(value="no")

    with pytest.raises(OAuthInternalAddress, match="internal network address"):
        access_token(account_id=account.pk)

    assert oauth_server.state.requests == []
    account.refresh_from_db()
    assert account.reconnect_needed_at is None


def test_it_refuses_oauth_addresses_on_internal_networks_on_the_provider_card(db):
    from providers.admin import EmailProviderForm
    from tests.factories import EmailProviderFactory

    provider = EmailProviderFactory(name="Corp")
    data = {
        "name": "Corp", "service_type": "imap_smtp", "receive_enabled": "on",
        "imap_host": "imap.corp.test", "imap_port": 993, "imap_security": "ssl",
        "smtp_host": "smtp.corp.test", "smtp_port": 465, "smtp_security": "ssl",
        "login_format": "email", "auth_method": "oauth2", "oauth_client_id": "app",
    }  # fmt: skip
    for name in ("oauth_authorize_url", "oauth_token_url", "oauth_revoke_url"):
        for address in (
            "https://127.0.0.1/x",
            "https://[64:ff9b::a9fe:a9fe]/x",
            "https://[::10.0.0.1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://[::ffff:0:169.254.169.254]/x",
        ):
            form = EmailProviderForm(data={**data, name: address}, instance=provider)
            assert not form.is_valid()
            assert "is on an internal network address" in form.errors[name][0], (name, address)
    form = EmailProviderForm(data={**data, "oauth_token_url": "https://93.184.215.14/token"},
                             instance=provider)  # fmt: skip
    assert form.is_valid(), form.errors
