"""One table of failure kinds (mail/errors.py) decides how a sync run ends: kind
by kind, and for real against the suite's Dovecot where a kind can be provoked."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from mail.errors import ACTIONS, MailError, Retry, SignInError, action_of
from sync import readers
from sync.models import MailboxSync, SyncRun
from sync.services import TransientSyncError, heartbeat_record, mailbox_sync, mailboxes_due
from tests.servers.dovecot import free_port


def _due(account) -> bool:
    MailboxSync.objects.filter(account=account).update(
        last_started_at=timezone.now() - timedelta(days=1)
    )
    return account.pk in mailboxes_due()


@pytest.mark.parametrize("kind", sorted(ACTIONS))
def test_it_ends_a_run_as_the_kind_of_its_failure_says(synced_mailbox, monkeypatch, kind):
    account, _ = synced_mailbox

    def failing(account):
        raise SignInError(kind, f"It failed ({kind}).")

    monkeypatch.setattr(readers, "session_open", failing)
    action = action_of(kind)
    if action == Retry.LATER:
        with pytest.raises(TransientSyncError, match=f"It failed \\({kind}\\)"):
            mailbox_sync(account_id=account.pk)
    else:
        mailbox_sync(account_id=account.pk)
    run = SyncRun.objects.get(account=account)
    assert run.state == SyncRun.State.FAILED and f"({kind})" in run.error
    state = MailboxSync.objects.get(account=account)
    assert state.last_error_kind == kind and state.failing_since is not None
    assert state.claimed_until is None
    # Only a failure a person must fix stops the dispatcher; the rest are tried again.
    assert (state.health == MailboxSync.Health.NEEDS_ATTENTION) == (action == Retry.OWNER)
    assert _due(account) == (action != Retry.OWNER)


def test_it_refuses_a_kind_the_table_does_not_know():
    with pytest.raises(ValueError, match="not classified"):
        MailError("something_new", "?")


def test_it_keeps_the_first_failure_time_while_runs_keep_failing(synced_mailbox, monkeypatch):
    account, _ = synced_mailbox
    monkeypatch.setattr(
        readers,
        "session_open",
        lambda account: (_ for _ in ()).throw(SignInError("timeout", "slow")),
    )
    with pytest.raises(TransientSyncError):
        mailbox_sync(account_id=account.pk)
    first = MailboxSync.objects.get(account=account).failing_since
    with pytest.raises(TransientSyncError):
        mailbox_sync(account_id=account.pk)
    assert MailboxSync.objects.get(account=account).failing_since == first


def test_it_says_a_mailbox_is_failing_and_since_when(synced_mailbox, test_provider, client):
    account, _ = synced_mailbox
    test_provider.imap_port = free_port()  # nothing listens there: refused
    test_provider.save()
    with pytest.raises(TransientSyncError, match="refused the connection"):
        mailbox_sync(account_id=account.pk)
    state = MailboxSync.objects.get(account=account)
    assert (state.last_error_kind, state.health) == ("refused", MailboxSync.Health.OK)
    client.force_login(account.owner)
    heartbeat_record(hostname="worker@test")  # a worker runs: it will try again
    page = client.get(reverse("sync:status", args=[account.pk])).text
    assert "Downloads have failed since" in page and "refused the connection" in page
    assert "tries again by itself" in page


def test_it_tries_again_once_an_administrator_fixes_the_provider(synced_mailbox, test_provider):
    """A certificate that does not fit the server's name: the owner can do nothing, the
    administrator fixes the provider card, and the mailbox downloads again by itself."""
    account, _ = synced_mailbox
    test_provider.imap_host = "127.0.0.1"  # the test certificate is for "localhost"
    test_provider.save()
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.FAILED
    state = MailboxSync.objects.get(account=account)
    assert state.last_error_kind == "certificate"
    assert state.health == MailboxSync.Health.NEEDS_ATTENTION
    assert not _due(account)
    test_provider.imap_host = "localhost"
    test_provider.save()
    assert _due(account)
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.SUCCEEDED
    assert MailboxSync.objects.get(account=account).failing_since is None


def test_it_waits_for_the_owner_when_the_password_is_wrong(synced_mailbox, test_provider):
    account, _ = synced_mailbox
    account.set_password("not the password")
    account.save()
    mailbox_sync(account_id=account.pk)
    state = MailboxSync.objects.get(account=account)
    assert (state.last_error_kind, state.health) == ("credentials", "needs_attention")
    test_provider.save()  # an administrator's save does not help a wrong password
    assert not _due(account)


def test_it_carries_a_failure_through_pickling_as_celery_does():
    import pickle

    from accounts.oauth import ReconnectNeeded

    for error in (
        MailError("busy", "The server was busy."),
        SignInError("certificate", "Bad certificate.", field="provider"),
        ReconnectNeeded("Sign in again."),
    ):
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
        assert (type(copy), copy.kind, str(copy), copy.retry) == (
            type(error), error.kind, str(error), error.retry,
        )  # fmt: skip
    tls = SignInError("tls", "x", field="provider")
    assert pickle.loads(pickle.dumps(tls)).field == "provider"  # noqa: S301 (our own bytes)


def test_it_says_a_full_disk_is_the_apps_storage_not_the_mail_server(
    synced_mailbox, settings, tmp_path
):
    from tests.mailbox import make_message

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="with a file", attachment=("a.pdf", b"%PDF")))
    media = tmp_path / "media"
    media.mkdir()
    settings.MEDIA_ROOT = str(media)
    from django.core.files.storage import FileSystemStorage

    real = FileSystemStorage._save

    def full(self, name, content):
        # As a write to a full disk says it: no file name.
        with open("/dev/full", "wb") as device:
            device.write(b"x" * 65536)

    FileSystemStorage._save = full
    try:
        with pytest.raises(TransientSyncError, match="could not write its files"):
            mailbox_sync(account_id=account.pk)
    finally:
        FileSystemStorage._save = real
    state = MailboxSync.objects.get(account=account)
    assert state.last_error_kind == "storage"
    assert "mail server" not in state.last_error


def test_it_closes_the_imap_session_when_the_syncer_cannot_be_made(synced_mailbox, monkeypatch):
    import imaplib

    account, _ = synced_mailbox
    opened = []
    real = readers.session_open

    def recorded(account):
        opened.append(real(account))
        return opened[-1]

    def broken(**kwargs):
        raise RuntimeError("the syncer could not be made")

    monkeypatch.setattr(readers, "session_open", recorded)
    monkeypatch.setattr(readers, "AccountSyncer", broken)
    with pytest.raises(RuntimeError, match="could not be made"):  # our bug, raised again
        mailbox_sync(account_id=account.pk)
    (client,) = opened
    with pytest.raises((OSError, imaplib.IMAP4.abort)):
        client.noop()  # logged out and shut down, not left open to the server's timeout
    assert MailboxSync.objects.get(account=account).claimed_until is None


def test_it_releases_the_mailbox_when_its_reader_cannot_be_found(synced_mailbox, monkeypatch):
    from sync import services

    account, _ = synced_mailbox
    monkeypatch.delitem(services.READERS, "imap")  # a backend whose reader is missing

    with pytest.raises(KeyError):  # our bug: raised again, for Celery's log
        mailbox_sync(account_id=account.pk)

    run = SyncRun.objects.get(account=account)
    assert run.state == SyncRun.State.FAILED
    assert "no way to download mailboxes of the service type 'imap_smtp'" in run.error
    state = MailboxSync.objects.get(account=account)
    assert state.claimed_until is None and state.claim_token == ""
    monkeypatch.undo()
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.SUCCEEDED


def test_it_keeps_the_field_of_a_failure_to_list_the_folders(synced_mailbox):
    from sync.services import FolderListError, folders_load

    account, _ = synced_mailbox
    account.set_password("not the password")
    account.save()
    with pytest.raises(FolderListError) as caught:
        folders_load(account=account)
    error = caught.value
    assert (error.kind, error.field, error.retry) == ("credentials", "password", Retry.OWNER)


@pytest.mark.parametrize("where", ["session_open", "list_folders"])
def test_it_keeps_the_retry_decision_of_a_failure_to_list_the_folders(
    synced_mailbox, monkeypatch, where
):
    from mail.registry import backend_for
    from sync import services

    account, _ = synced_mailbox
    # The one who met it knew better than the table (MailError's `retry`).
    decided = MailError(
        "busy", "The mailbox is moving for good.", field="provider", retry=Retry.OWNER
    )

    def failing(*args, **kwargs):
        raise decided

    if where == "session_open":
        monkeypatch.setattr(services, "session_open", failing)
    else:
        monkeypatch.setattr(type(backend_for(account.provider)), "list_folders", failing)
    with pytest.raises(services.FolderListError) as caught:
        services.folders_load(account=account)
    error = caught.value
    assert (error.kind, error.field, error.retry) == ("busy", "provider", Retry.OWNER)
    assert str(error) == "The mailbox is moving for good."


# A refused LOGIN, as servers word it: (reply, kind). RFC 5530's codes say whether the
# credentials are wrong (the owner acts) or the server cannot take the sign-in now (it is
# tried again later); Gmail says "too many connections" in words. One classification
# serves the wizard's check, the sync and the push listener: all three are asked.
LOGIN_REFUSALS = [
    ("NO [UNAVAILABLE] Temporary authentication failure", "temporary"),
    ("NO [INUSE] Mailbox in use by another command", "temporary"),
    ("NO [LIMIT] Too many sessions for this user", "temporary"),
    ("NO [SERVERBUG] Internal error occurred. Refer to server log for more information.",
     "temporary"),
    ("NO [ALERT] Too many simultaneous connections. (Failure)", "temporary"),
    ("NO Too many simultaneous connections", "temporary"),
    ("NO [ALERT] Too many failed login attempts", "credentials"),
    ("NO [AUTHENTICATIONFAILED] Authentication failed.", "credentials"),
    ("NO [AUTHORIZATIONFAILED] Not allowed to use this mailbox", "credentials"),
    ("NO [AUTHENTICATIONFAILED] Too many invalid attempts", "credentials"),
    ("NO [EXPIRED] Password expired", "expired"),
    ("NO [CONTACTADMIN] Ask your administrator", "contact_admin"),
    ("NO Login failed", "credentials"),
]  # fmt: skip


@pytest.fixture
def scripted_login(request, test_provider):
    """A mailbox whose IMAP server (scripted, plain text on loopback) answers LOGIN with
    the test's reply."""
    from tests.factories import EmailAccountFactory
    from tests.servers.faults import ImapScript, ScriptedImap

    server = ScriptedImap(ImapScript(login_reply=request.param))
    server.start()
    request.addfinalizer(server.stop)
    test_provider.imap_host, test_provider.imap_port = "127.0.0.1", server.port
    test_provider.imap_security = "none"
    test_provider.save()
    return EmailAccountFactory(
        provider=test_provider, address="alice@example.test", login="alice@example.test",
        password="right-or-not",
    )  # fmt: skip


@pytest.mark.parametrize(("scripted_login", "kind"), LOGIN_REFUSALS, indirect=["scripted_login"])
def test_it_tells_a_refusal_for_now_from_one_the_owner_must_fix(scripted_login, kind):
    from mail.registry import backend_for
    from providers.addresses import normalize_address
    from tests.push_servers import run_apart

    account = scripted_login
    backend = backend_for(account.provider)
    credentials = {
        "provider": account.provider,
        "address": normalize_address(account.address),
        "login": account.login,
        "password": "right-or-not",
    }
    later = action_of(kind) == Retry.LATER
    # The wizard's check.
    with pytest.raises(SignInError) as caught:
        backend.check_sign_in(**credentials)
    assert (caught.value.kind, caught.value.retry) == (kind, action_of(kind))
    if later:
        assert "try again in a few minutes" in str(caught.value)
    # The push listener's sign-in.
    watcher = backend.watcher(**credentials, allow_internal=True)

    async def watch():
        try:
            await watcher.open()
        finally:
            await watcher.close()

    with pytest.raises(MailError) as caught:
        run_apart(watch())
    assert caught.value.kind == kind
    # The sync: tried again later, or stopped until the owner acts.
    if later:
        with pytest.raises(TransientSyncError):
            mailbox_sync(account_id=account.pk)
    else:
        mailbox_sync(account_id=account.pk)
    state = MailboxSync.objects.get(account=account)
    assert state.last_error_kind == kind
    assert (state.health == MailboxSync.Health.NEEDS_ATTENTION) == (not later)
    assert _due(account) == later
