"""Removing a mailbox wipes every credential and revokes its OAuth refresh token at the
provider (RFC 7009) in the background, logged (issue 15, point 2). Who still sees its
kept emails is asserted cell by cell in tests/test_sharing_matrix.py."""

import logging
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError

from accounts import services, tasks
from accounts.models import EmailAccount, TokenRevocation
from accounts.services import revocations_due
from mailsetup import crypto

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def published(monkeypatch):
    """What the removal handed to the task queue: (task name, arguments)."""
    calls = []

    def capture(task, *args):
        calls.append((task.name, args))
        return True

    monkeypatch.setattr(services, "publish_on_commit", capture)
    return calls


@pytest.mark.parametrize("emails", ["keep", "delete"])
def test_it_wipes_every_credential_and_revokes_the_refresh_token_in_the_background(
    client, oauth_mailbox, oauth_server, published, caplog, emails
):
    caplog.set_level(logging.INFO)
    account, _mailbox = oauth_mailbox
    refresh = crypto.decrypt(account.oauth_refresh_token_encrypted)
    access = crypto.decrypt(account.oauth_access_token_encrypted)
    client.force_login(account.owner)

    response = client.post(reverse("accounts:remove", args=[account.pk]), {"emails": emails})

    assert response.status_code == 302
    if emails == "keep":
        account.refresh_from_db()
        assert account.password_encrypted == ""
        assert account.oauth_access_token_encrypted == ""
        assert account.oauth_refresh_token_encrypted == ""
        assert account.oauth_expires_at is None
    else:
        assert not EmailAccount.objects.filter(pk=account.pk).exists()
    # Only the mailbox's id goes to the task; the provider is not asked in the request.
    assert published == [("accounts.revoke_tokens", (account.pk,))]
    assert oauth_server.calls("/revoke") == []
    assert refresh in oauth_server.state.refresh_tokens

    tasks.revoke_tokens(account.pk)

    [revoked] = oauth_server.calls("/revoke")
    assert revoked["token"] == refresh and revoked["token_type_hint"] == "refresh_token"
    assert refresh not in oauth_server.state.refresh_tokens
    assert not TokenRevocation.objects.exists()
    logged = caplog.text
    assert f"Revoked the refresh token of removed mailbox {account.address}" in logged
    assert "refresh token queued for revocation" in logged
    assert refresh not in logged and access not in logged


def test_it_removes_the_mailbox_with_the_task_queue_down_and_revokes_later(
    client, oauth_mailbox, oauth_server, monkeypatch, django_capture_on_commit_callbacks
):
    account, _mailbox = oauth_mailbox
    refresh = crypto.decrypt(account.oauth_refresh_token_encrypted)

    def down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to the broker. Connection refused.")

    monkeypatch.setattr(tasks.revoke_tokens, "delay", down)
    client.force_login(account.owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("accounts:remove", args=[account.pk]), {"emails": "keep"}, **HTMX
        )

    assert response.headers["HX-Redirect"] == reverse("accounts:list")
    account.refresh_from_db()
    assert account.removed_at is not None and account.oauth_refresh_token_encrypted == ""
    # Kept encrypted until the sweep queues the revocation again.
    assert revocations_due() == []
    TokenRevocation.objects.update(created_at=timezone.now() - timedelta(minutes=11))
    assert revocations_due() == [account.pk]
    tasks.revoke_tokens(account.pk)
    assert refresh not in oauth_server.state.refresh_tokens
    assert revocations_due() == []


def test_it_tries_again_when_the_provider_cannot_be_reached(oauth_mailbox, oauth_server, caplog):
    account, _mailbox = oauth_mailbox
    services.account_remove(account=account, actor=account.owner, keep_emails=True)
    provider = account.provider
    provider.oauth_revoke_url = "https://localhost:1/revoke"  # nothing listens there
    provider.save()

    with pytest.raises(services.RevocationPending):
        tasks.revoke_tokens(account.pk)

    row = TokenRevocation.objects.get()
    assert row.attempts == 1 and "could not be reached" in row.last_error
    assert "failed (attempt 1, tried again later)" in caplog.text


def test_it_wipes_the_refresh_token_of_a_provider_without_a_revocation_address(
    oauth_mailbox, published, caplog
):
    caplog.set_level(logging.INFO)
    account, _mailbox = oauth_mailbox
    account.provider.oauth_revoke_url = ""
    account.provider.save()

    services.account_remove(account=account, actor=account.owner, keep_emails=True)

    account.refresh_from_db()
    assert account.oauth_refresh_token_encrypted == ""
    assert not TokenRevocation.objects.exists()
    assert published == []
    assert "has no revocation address; its refresh token is wiped, not revoked" in caplog.text


@pytest.mark.parametrize("emails", ["keep", "delete"])
def test_it_keeps_nothing_of_a_reconnect_that_finishes_after_the_mailbox_was_removed(
    client, oauth_mailbox, oauth_server, mail_trust, published, monkeypatch, emails
):
    """The removal lands while the reconnect's new tokens are being checked with the
    real servers: the removal wins, and the new refresh token is revoked too."""
    from tests.servers.oauth import authorize_as

    account, _mailbox = oauth_mailbox
    old_refresh = crypto.decrypt(account.oauth_refresh_token_encrypted)
    client.force_login(account.owner)
    real_check = services.check_sign_in

    def removed_meanwhile(**kwargs):
        real_check(**kwargs)
        services.account_remove(account=account, actor=account.owner, keep_emails=emails == "keep")

    monkeypatch.setattr(services, "check_sign_in", removed_meanwhile)
    started = client.post(reverse("accounts:reconnect", args=[account.pk]))
    response = client.get(
        reverse("accounts:oauth_callback"), authorize_as(started.url, str(mail_trust)), follow=True
    )

    assert response.redirect_chain[-1][0] == reverse("accounts:list")
    assert f"{account.address} was removed meanwhile; nothing was saved." in response.text
    if emails == "keep":
        account.refresh_from_db()
        assert account.removed_at is not None
        secrets = (account.oauth_access_token_encrypted, account.oauth_refresh_token_encrypted,
                   account.password_encrypted, account.oauth_expires_at)  # fmt: skip
        assert secrets == ("", "", "", None)
    else:
        assert not EmailAccount.objects.filter(pk=account.pk).exists()
    # Both refresh tokens, the old one and the one the reconnect got, wait for revocation
    # and nothing else holds a secret of the mailbox.
    kept = TokenRevocation.objects.values_list("token_encrypted", flat=True)
    waiting = {crypto.decrypt(token) for token in kept}
    assert len(waiting) == 2 and old_refresh in waiting
    assert set(published) == {("accounts.revoke_tokens", (account.pk,))}
    tasks.revoke_tokens(account.pk)
    revoked = {call["token"] for call in oauth_server.calls("/revoke")}
    assert revoked == waiting
    assert not (waiting & set(oauth_server.state.refresh_tokens))
    assert not TokenRevocation.objects.exists()


@pytest.mark.parametrize("emails", ["keep", "delete"])
def test_it_keeps_no_password_entered_while_the_mailbox_was_being_removed(
    client, synced_mailbox, monkeypatch, emails
):
    account, _mailbox = synced_mailbox
    client.force_login(account.owner)
    real_check = services.check_sign_in

    def removed_meanwhile(**kwargs):
        real_check(**kwargs)
        services.account_remove(account=account, actor=account.owner, keep_emails=emails == "keep")

    monkeypatch.setattr(services, "check_sign_in", removed_meanwhile)
    response = client.post(
        reverse("accounts:credentials", args=[account.pk]),
        {"credentials-password": "sync-secret"}, **HTMX,
    )  # fmt: skip

    assert response.headers["HX-Redirect"] == reverse("accounts:list")
    if emails == "keep":
        account.refresh_from_db()
        assert account.removed_at is not None and account.password_encrypted == ""
    else:
        assert not EmailAccount.objects.filter(pk=account.pk).exists()


def test_it_revokes_once_when_two_workers_run_the_revocation_at_once(
    transactional_db, oauth_mailbox, oauth_server, published, caplog
):
    """The removal's task and the sweep's (or a retry) may run together: the one that
    holds the row does the revocation; the other skips it, neither raising nor forgetting
    it, and the token is asked to be revoked once."""
    import threading

    from django.db import connection, transaction

    account, _mailbox = oauth_mailbox
    refresh = crypto.decrypt(account.oauth_refresh_token_encrypted)
    services.account_remove(account=account, actor=account.owner, keep_emails=True)
    row = TokenRevocation.objects.get()
    claimed, finish = threading.Event(), threading.Event()

    def first_worker():
        # Stands for a worker in the middle of its request to the provider.
        try:
            with transaction.atomic():
                TokenRevocation.objects.select_for_update().get(pk=row.pk)
                claimed.set()
                finish.wait(30)
        finally:
            connection.close()

    worker = threading.Thread(target=first_worker)
    worker.start()
    assert claimed.wait(30)
    try:
        assert tasks.revoke_tokens(account.pk) is None  # the second worker: nothing to do
        assert oauth_server.calls("/revoke") == []
        assert TokenRevocation.objects.filter(pk=row.pk).exists()
    finally:
        finish.set()
        worker.join(30)

    # The first worker died before finishing: its lock went with its connection, and the
    # revocation is still there for the next run, which revokes it once.
    tasks.revoke_tokens(account.pk)
    tasks.revoke_tokens(account.pk)
    assert [call["token"] for call in oauth_server.calls("/revoke")] == [refresh]
    assert not TokenRevocation.objects.exists()
    assert refresh not in caplog.text
