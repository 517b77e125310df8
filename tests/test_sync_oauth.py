"""Downloading a mailbox signed in with OAuth 2.0: XOAUTH2 against the suite's Dovecot,
whose oauth2 passdb checks each token with the suite's authorization server."""

from sync.models import Email, MailboxSync, SyncRun
from sync.services import mailbox_sync, mailboxes_due
from tests.mailbox import make_message


def test_it_downloads_with_an_access_token(oauth_mailbox, oauth_server):
    account, mailbox = oauth_mailbox
    mailbox.append("INBOX", make_message(subject="over xoauth2"))

    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.filter(subject="over xoauth2").exists()
    assert [form["token"] for form in oauth_server.calls("/introspect")]
    assert oauth_server.calls("/token") == []


def test_it_refreshes_once_when_the_server_refuses_the_token(oauth_mailbox, oauth_server):
    account, _mailbox = oauth_mailbox
    oauth_server.expire_access_tokens()  # our copy still looks fresh; the server says no

    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert len(oauth_server.calls("/token")) == 1


def test_it_stops_for_good_when_the_grant_is_revoked(oauth_mailbox, oauth_server):
    account, _mailbox = oauth_mailbox
    oauth_server.expire_access_tokens()
    oauth_server.state.refresh_tokens.clear()  # consent revoked

    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.FAILED
    assert "Reconnect" in run.error
    state = MailboxSync.objects.get(account=account)
    assert state.health == MailboxSync.Health.NEEDS_ATTENTION
    account.refresh_from_db()
    assert account.reconnect_needed_at is not None
    # Ten dispatcher ticks later: never queued again, and the token endpoint asked once.
    MailboxSync.objects.filter(account=account).update(last_started_at=None)
    assert all(account.pk not in mailboxes_due() for _ in range(10))
    assert len(oauth_server.calls("/token")) == 1
