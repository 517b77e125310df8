"""Downloading an Exchange mailbox over EWS, against the suite's EWS protocol fake
(tests/servers/ews.py). That server is not Exchange: it answers EWS SOAP requests
(GetFolder, FindFolder, SyncFolderItems, GetItem, ...) with documents shaped like an
Exchange 2016 server's and keeps its mailboxes in memory. Exchange itself cannot run
here. The same guarantees as the IMAP sync are asserted: the period, the folders, no
duplicates, and a sync state that lets a cut run resume."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from sync.models import Email, EmailLocation, Folder, MailboxSync, SyncRun
from sync.services import TransientSyncError, mailbox_sync
from tests.factories import claim_taken_by_another_run
from tests.mailbox import make_message


def _sync(account) -> SyncRun:
    run = mailbox_sync(account_id=account.pk)
    assert run is not None
    return run


def _deliver(ews_server, address, folder, count, *, age=timedelta(hours=1), prefix="m"):
    ids = []
    for n in range(count):
        mime = make_message(subject=f"{prefix} {n}", to=address, age=age)
        received = datetime.now(UTC) - age
        ids.append(ews_server.add_message(folder, mime, received=received, mailbox=address))
    return ids


def _digests(account) -> list[str]:
    return sorted(
        hashlib.sha256(f"{e.message_key}|{e.subject}".encode()).hexdigest()
        for e in Email.objects.filter(account=account)
    )


def test_it_downloads_the_period_from_every_mail_folder(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    projects = ews_server.add_folder("inbox", "Projects", mailbox=address)
    ews_server.add_folder(projects, "2024", mailbox=address)
    _deliver(ews_server, address, "inbox", 2, prefix="recent")
    _deliver(ews_server, address, "inbox", 1, prefix="old", age=timedelta(days=30))
    _deliver(ews_server, address, "inbox/Projects/2024", 1, prefix="nested")
    _deliver(ews_server, address, "sentitems", 1, prefix="sent")
    _deliver(ews_server, address, "deleteditems", 1, prefix="trash")

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    subjects = set(Email.objects.filter(account=account).values_list("subject", flat=True))
    # A week by default: the 30-day-old one waits; Deleted Items is not downloaded.
    assert subjects == {"recent 0", "recent 1", "nested 0", "sent 0"}
    folders = {f.path: f for f in Folder.objects.filter(account=account)}
    assert "Inbox/Projects/2024" in folders and folders["Inbox/Projects/2024"].sync_state
    assert folders["Sent Items"].special_use == "\\sent"
    assert folders["Deleted Items"].special_use == "\\trash"
    assert not folders["Calendar"].selectable and not folders["Contacts"].selectable
    assert run.new_emails == 4 and run.new_locations == 4


def test_it_pages_through_a_large_folder_and_then_asks_only_for_changes(
    exchange_mailbox, ews_server
):
    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 450)
    ews_server.state.requests.clear()

    first = _sync(account)
    assert first.state == SyncRun.State.SUCCEEDED, first.error
    assert Email.objects.filter(account=account).count() == 450
    inbox = Folder.objects.get(account=account, path="Inbox")
    assert inbox.locations.count() == 450
    # Pages of 200 changes, each committed with the state that follows it.
    assert ews_server.calls("SyncFolderItems") >= 3

    ews_server.state.requests.clear()
    again = _sync(account)

    assert again.state == SyncRun.State.SUCCEEDED and again.new_emails == 0
    assert ews_server.calls("GetItem") == 0  # nothing new: no message fetched


def test_it_applies_read_flags_deletions_and_new_items(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    read, deleted, _kept = _deliver(ews_server, address, "inbox", 3)
    assert _sync(account).state == SyncRun.State.SUCCEEDED

    ews_server.set_read(read, True)
    ews_server.delete_item(deleted)
    _deliver(ews_server, address, "inbox", 1, prefix="new")
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert (run.new_emails, run.flag_changes, run.removed_locations) == (1, 1, 1)
    assert Email.objects.get(account=account, locations__item_id=read).seen
    assert not EmailLocation.objects.filter(item_id=deleted).exists()


def test_it_stores_a_message_in_two_folders_once(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    ews_server.add_folder("inbox", "Copies", mailbox=address)
    mime = make_message(subject="twice", to=address)
    ews_server.add_message("inbox", mime, mailbox=address)
    ews_server.add_message("inbox/Copies", mime, mailbox=address)

    assert _sync(account).state == SyncRun.State.SUCCEEDED

    email = Email.objects.get(account=account, subject="twice")
    assert email.locations.count() == 2


def test_it_resumes_a_cut_run_without_losing_or_repeating_an_email(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 120)
    # The connection drops in the middle of the downloads, twice.
    ews_server.drop_next("GetItem", count=1)
    with pytest.raises(TransientSyncError):
        _sync(account)
    stored = Email.objects.filter(account=account).count()
    ews_server.drop_next("GetItem", count=1)
    MailboxSync.objects.filter(account=account).update(claimed_until=None)
    with pytest.raises(TransientSyncError):
        _sync(account)
    MailboxSync.objects.filter(account=account).update(claimed_until=None)

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert stored < 120
    assert Email.objects.filter(account=account).count() == 120
    assert EmailLocation.objects.filter(folder__account=account).count() == 120


def test_it_recovers_from_a_sync_state_the_server_forgot_without_duplicates(
    exchange_mailbox, ews_server
):
    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 30)
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    before = _digests(account)

    ews_server.invalidate_sync_states()  # as after a move to another mailbox database
    _deliver(ews_server, address, "inbox", 2, prefix="after")
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    after = _digests(account)
    assert len(after) == 32 and set(before) < set(after)
    assert EmailLocation.objects.filter(folder__account=account).count() == 32


def test_it_fetches_older_mail_when_the_period_grows(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 1, prefix="recent")
    _deliver(ews_server, address, "inbox", 2, prefix="old", age=timedelta(days=20))
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    assert Email.objects.filter(account=account).count() == 1

    account.sync_period = "1m"
    account.save()
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.filter(account=account).count() == 3
    # Asked again: nothing more, nothing twice.
    assert _sync(account).new_emails == 0
    assert EmailLocation.objects.filter(folder__account=account).count() == 3


def test_it_needs_the_owner_when_exchange_refuses_the_password(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    ews_server.state.users[address].password = "changed on the server"

    run = _sync(account)

    assert run.state == SyncRun.State.FAILED
    assert "login" in run.error
    state = MailboxSync.objects.get(account=account)
    assert state.health == MailboxSync.Health.NEEDS_ATTENTION


def test_it_tries_again_later_when_the_server_is_busy(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 2)
    ews_server.fail_next("SyncFolderItems", "ErrorServerBusy")

    with pytest.raises(TransientSyncError, match="busy"):
        _sync(account)

    assert MailboxSync.objects.get(account=account).health == MailboxSync.Health.OK
    MailboxSync.objects.filter(account=account).update(claimed_until=None)
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    assert Email.objects.filter(account=account).count() == 2


@pytest.fixture
def ews_oauth_mailbox(exchange_mailbox, ews_server, oauth_server, oauth_provider):
    """An Exchange mailbox that signs in only with tokens from the suite's OAuth server."""
    from accounts.oauth import tokens_store

    account, address = exchange_mailbox
    provider = account.provider
    provider.auth_method = "oauth2"
    provider.oauth_client_id = "mailsetup-test"
    provider.oauth_token_url = oauth_provider.oauth_token_url
    provider.oauth_authorize_url = oauth_provider.oauth_authorize_url
    provider.set_oauth_client_secret("client-secret-1")
    provider.save()
    ews_server.state.users[address].password = None  # only a token signs in now
    account.set_password("")
    account.save()
    tokens_store(account=account, answer=oauth_server.grant(address, "mailsetup-test"))
    return account, address


def test_it_downloads_with_an_oauth_token_instead_of_a_password(
    ews_oauth_mailbox, ews_server, oauth_server
):
    account, address = ews_oauth_mailbox
    _deliver(ews_server, address, "inbox", 2)
    ews_server.state.requests.clear()

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.filter(account=account).count() == 2
    assert all(user == address for _op, user in ews_server.requests)

    # The server stops honouring the token (expired by its clock): refreshed once.
    oauth_server.expire_access_tokens()
    oauth_server.state.requests.clear()
    MailboxSync.objects.filter(account=account).update(claimed_until=None)
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    assert len(oauth_server.calls("/token")) == 1


def test_it_downloads_only_the_folders_chosen_in_the_exchange_folder_picker(
    exchange_mailbox, ews_server, client
):
    from django.urls import reverse

    account, address = exchange_mailbox
    ews_server.add_folder("inbox", "Projects", mailbox=address)
    _deliver(ews_server, address, "inbox", 1, prefix="inbox")
    _deliver(ews_server, address, "inbox/Projects", 1, prefix="project")
    client.force_login(account.owner)

    picker = client.post(
        reverse("accounts:folders_refresh", args=[account.pk]), HTTP_HX_REQUEST="true"
    )

    assert 'data-path="Inbox/Projects"' in picker.text  # read from Exchange (FindFolder)
    chosen = Folder.objects.get(account=account, path="Inbox/Projects")
    response = client.post(
        reverse("accounts:folders", args=[account.pk]),
        {"folder_mode": "custom", "chosen": [chosen.pk]},
    )
    assert response.status_code == 302
    run = _sync(account)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    subjects = set(Email.objects.filter(account=account).values_list("subject", flat=True))
    assert subjects == {"project 0"}


def test_it_tries_again_when_the_token_runs_out_during_the_download(
    ews_oauth_mailbox, ews_server, oauth_server, monkeypatch
):
    from sync.delta import DeltaSyncer

    account, address = ews_oauth_mailbox
    _deliver(ews_server, address, "inbox", 1)
    signed_in = DeltaSyncer.sync_folder

    def token_expires_first(self, folder):
        oauth_server.expire_access_tokens()  # by the server's clock, mid-run
        return signed_in(self, folder)

    monkeypatch.setattr(DeltaSyncer, "sync_folder", token_expires_first)
    with pytest.raises(TransientSyncError, match="sign-in token"):
        _sync(account)
    assert MailboxSync.objects.get(account=account).health == MailboxSync.Health.OK

    monkeypatch.setattr(DeltaSyncer, "sync_folder", signed_in)
    MailboxSync.objects.filter(account=account).update(claimed_until=None)
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    assert Email.objects.filter(account=account).count() == 1


def test_it_keeps_a_message_exchange_cannot_convert_with_a_note(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 1, prefix="unconvertible")
    # The first GetItem (the MIME source) fails for that item; its properties still come.
    ews_server.fail_next("GetItem", "ErrorMimeContentConversionFailed")

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    email = Email.objects.get(account=account)
    assert email.subject == "unconvertible 0" and email.from_address == "peter@partner.test"
    assert "ErrorMimeContentConversionFailed" in email.notes
    assert run.parse_problems == 1


def test_it_logs_no_credential_even_at_debug_level(exchange_mailbox, ews_server, caplog):
    import base64
    import logging

    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 1)
    caplog.set_level(logging.DEBUG)

    assert _sync(account).state == SyncRun.State.SUCCEEDED

    basic = base64.b64encode(f"{address}:ews-secret".encode()).decode()
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    assert "ews-secret" not in logged and basic not in logged
    assert "Hi there." not in logged  # nor the messages themselves


def test_it_keeps_the_headers_of_a_message_above_the_size_limit(exchange_mailbox, ews_server):
    from systemsettings.models import SystemSetting

    SystemSetting.objects.update_or_create(
        code="MaxMessageSizeMB", defaults={"value_type": "integer", "value": "1"}
    )
    account, address = exchange_mailbox
    ews_server.add_message("inbox", make_message(subject="small"), mailbox=address)
    huge = make_message(subject="huge", attachment=("big.bin", b"x" * 1_500_000))
    ews_server.add_message("inbox", huge, mailbox=address)
    _sync(account)
    huge = Email.objects.get(subject="huge")
    assert huge.problem == Email.Problem.INCOMPLETE
    assert "above the limit of 1 MB" in huge.notes
    assert "Hi there." in huge.text_body  # its text, from Exchange's properties
    assert not huge.attachments.exists()
    assert Email.objects.get(subject="small").problem == ""


def test_it_notes_an_item_exchange_gives_nothing_of_and_asks_again_later(
    exchange_mailbox, ews_server
):
    from datetime import timedelta

    from django.utils import timezone

    from sync.models import UnstoredMessage

    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 1, prefix="stubborn")
    # Neither its MIME source nor its properties come: nothing is stored, it is noted.
    ews_server.fail_next("GetItem", "ErrorMimeContentConversionFailed", count=2)
    run = _sync(account)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert not Email.objects.filter(account=account).exists()
    noted = UnstoredMessage.objects.get()
    assert noted.item_id and "neither this message nor its properties" in noted.error
    _sync(account)  # not due yet: asked for no sooner than its backoff says
    assert UnstoredMessage.objects.get().attempts == 1
    UnstoredMessage.objects.update(last_failed_at=timezone.now() - timedelta(hours=1))
    _sync(account)
    assert Email.objects.get(account=account).subject == "stubborn 0"
    assert not UnstoredMessage.objects.exists()
    assert EmailLocation.objects.filter(email__account=account).count() == 1


def test_it_knows_exchange_copies_by_their_item_id_without_counting_uids(
    exchange_mailbox, ews_server
):
    """Exchange has no UIDs: a location and a note are known by the item's id alone,
    and a note is kept once however often the item fails."""
    from datetime import timedelta

    from django.utils import timezone

    from sync.models import UnstoredMessage

    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 2)
    _sync(account)
    locations = list(EmailLocation.objects.filter(email__account=account))
    assert len(locations) == 2
    assert all(where.uid is None and where.item_id for where in locations)

    _deliver(ews_server, address, "inbox", 1, prefix="stubborn")
    # The first run: its source, its properties; the retry: its size, source, properties.
    ews_server.fail_next("GetItem", "ErrorMimeContentConversionFailed", count=5)
    _sync(account)
    UnstoredMessage.objects.update(last_failed_at=timezone.now() - timedelta(hours=1))
    _sync(account)
    noted = UnstoredMessage.objects.get()
    assert (noted.uid, noted.attempts) == (None, 2) and noted.item_id
    assert noted.where.startswith("item …")
    UnstoredMessage.objects.update(last_failed_at=timezone.now() - timedelta(hours=1))
    _sync(account)
    assert not UnstoredMessage.objects.exists()
    locations = EmailLocation.objects.filter(email__account=account)
    assert locations.count() == 3 and not locations.filter(uid__isnull=False).exists()


def test_it_stops_reading_a_folder_whose_state_the_server_keeps_forgetting(
    exchange_mailbox, ews_server, monkeypatch
):
    """A server that forgets each state it gives: the folder is read from its start once,
    then left with the server's trouble named on it; the other folders are read, and
    nothing is stored twice."""
    from mail.ews import reader as ews_reader

    account, address = exchange_mailbox
    monkeypatch.setattr(ews_reader, "PAGE", 2)
    _deliver(ews_server, address, "inbox", 5)
    archive = ews_server.add_folder("inbox", "Archive", mailbox=address)
    _deliver(ews_server, address, archive, 1, prefix="kept")
    changes = ews_reader.EwsReader.changes

    def forgetful(self, server_id, state):
        page = changes(self, server_id, state)
        if self.by_path["Inbox"].id == server_id:
            ews_server.invalidate_sync_states()
        return page

    monkeypatch.setattr(ews_reader.EwsReader, "changes", forgetful)
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    inbox = Folder.objects.get(account=account, path="Inbox")
    assert "forgot where the download of this folder stood" in inbox.last_error
    assert Email.objects.filter(account=account, subject="kept 0").exists()
    keys = list(Email.objects.filter(account=account).values_list("message_key", flat=True))
    assert len(keys) == len(set(keys))
    assert EmailLocation.objects.filter(folder=inbox).count() <= 5


def test_it_keeps_going_when_a_property_would_break_a_header(exchange_mailbox, ews_server):
    """A subject with a line separator (U+2028), on a message stored from its properties:
    it made the email library refuse the whole page of changes, on every run."""
    from systemsettings.models import SystemSetting

    SystemSetting.objects.update_or_create(
        code="MaxMessageSizeMB", defaults={"value_type": "integer", "value": "1"}
    )
    account, address = exchange_mailbox
    odd = make_message(subject="PLACEHOLDER", attachment=("big.bin", b"x" * 1_500_000))
    odd = odd.replace(b"PLACEHOLDER", b"=?utf-8?q?Invoice=E2=80=A8due?=")
    ews_server.add_message("inbox", odd, mailbox=address)
    ews_server.add_message("inbox", make_message(subject="beside it"), mailbox=address)
    run = _sync(account)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert set(Email.objects.values_list("subject", flat=True)) == {"Invoice due", "beside it"}


def test_it_stores_no_page_fetched_after_another_run_took_its_claim(
    exchange_mailbox, ews_server, monkeypatch
):
    """Issue 15, point 14, over EWS: the claim is taken while a page of items is being
    fetched; the run stops before storing that page."""

    from mail.ews.reader import EwsReader

    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 3)
    fetch = EwsReader.read

    def taken_while_fetching(self, items, **kwargs):
        answer = fetch(self, items, **kwargs)
        if items:
            claim_taken_by_another_run(account.pk)
        return answer

    monkeypatch.setattr(EwsReader, "read", taken_while_fetching)
    run = _sync(account)

    assert run.state == SyncRun.State.INTERRUPTED
    assert "another download of the mailbox took over" in run.error
    assert not Email.objects.filter(account=account).exists()
    monkeypatch.setattr(EwsReader, "read", fetch)
    MailboxSync.objects.filter(account=account).update(claimed_until=None)
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    assert Email.objects.filter(account=account).count() == 3


def test_it_stores_no_retried_item_after_another_run_took_its_claim(
    exchange_mailbox, ews_server, monkeypatch
):
    """An item an earlier run could not store is asked for again; the claim is taken while
    it is fetched, and the run stops before storing it (found in review: the retry stored
    it anyway)."""
    from datetime import timedelta

    from django.utils import timezone

    from mail.ews.reader import EwsReader
    from sync.models import UnstoredMessage

    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 1, prefix="stubborn")
    ews_server.fail_next("GetItem", "ErrorMimeContentConversionFailed", count=2)
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    assert UnstoredMessage.objects.count() == 1
    UnstoredMessage.objects.update(last_failed_at=timezone.now() - timedelta(hours=1))
    fetch = EwsReader.read

    def taken_while_fetching(self, items, **kwargs):
        answer = fetch(self, items, **kwargs)
        if items:
            claim_taken_by_another_run(account.pk)
        return answer

    monkeypatch.setattr(EwsReader, "read", taken_while_fetching)
    run = _sync(account)

    assert run.state == SyncRun.State.INTERRUPTED
    assert not Email.objects.filter(account=account).exists()
    assert UnstoredMessage.objects.count() == 1


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("ErrorMailboxConfiguration", "server_error"),
        ("ErrorInvalidRequest", "server_error"),
        ("ErrorInternalServerError", "server_error"),
        ("ErrorMailboxStoreUnavailable", "busy"),
    ],
)
def test_it_means_the_same_by_an_exchange_answer_at_sign_in_as_while_reading(
    exchange_mailbox, ews_server, code, kind
):
    # Exchange wrote the answer itself: the network did not fail, so it is not
    # "connection"; the sign-in reads it as the read path does (EwsBackend.read_failure).
    from exchangelib import errors

    from mail.errors import SignInError
    from mail.ews.backend import exchange_failure
    from mail.registry import backend_for
    from providers.addresses import normalize_address

    account, address = exchange_mailbox
    read = exchange_failure(getattr(errors, code)("x"))
    assert read.kind == kind
    ews_server.fail_next("GetFolder", code)
    with pytest.raises(SignInError) as caught:
        backend_for(account.provider).check_sign_in(
            provider=account.provider, address=normalize_address(address), login=address,
            password="ews-secret",
        )  # fmt: skip
    assert (caught.value.kind, caught.value.retry) == (read.kind, read.retry), str(caught.value)
    assert code in str(caught.value)


def test_it_does_not_retry_a_mailbox_exchange_refuses_at_sign_in(exchange_mailbox, ews_server):
    account, _address = exchange_mailbox
    ews_server.fail_next("GetFolder", "ErrorMailboxConfiguration")

    run = _sync(account)  # not TransientSyncError: another try would get the same answer

    assert run.state == SyncRun.State.FAILED
    assert "ErrorMailboxConfiguration" in run.error
    assert MailboxSync.objects.get(account=account).last_error_kind == "server_error"


def test_it_tries_again_later_when_the_server_is_busy_at_sign_in(exchange_mailbox, ews_server):
    account, _address = exchange_mailbox
    ews_server.fail_next("GetFolder", "ErrorServerBusy", back_off_ms=10)

    with pytest.raises(TransientSyncError):
        _sync(account)

    state = MailboxSync.objects.get(account=account)
    assert state.last_error_kind == "busy" and state.health == MailboxSync.Health.OK


@pytest.mark.parametrize("code", ["ErrorInternalServerError", "ErrorAccessDenied"])
def test_it_keeps_going_past_a_folder_exchange_refuses(exchange_mailbox, ews_server, code):
    account, address = exchange_mailbox
    ews_server.add_folder("inbox", "Projects", mailbox=address)
    by_folder = {
        "Drafts": _deliver(ews_server, address, "drafts", 1, prefix="draft"),
        "Inbox": _deliver(ews_server, address, "inbox", 2, prefix="inbox"),
        "Inbox/Projects": _deliver(ews_server, address, "inbox/Projects", 2, prefix="projects"),
        "Sent Items": _deliver(ews_server, address, "sentitems", 1, prefix="sent"),
    }
    ews_server.fail_next("SyncFolderItems", code)  # the first folder's read, once

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert run.folder_errors == 1
    (refused,) = Folder.objects.filter(account=account).exclude(last_error="")
    assert refused.last_error.startswith(f"The server refused to read this folder: {code}")
    assert refused.failing_since is not None and not refused.locations.exists()
    # Every other folder was read; the refused one (with mail of its own) waits.
    assert by_folder[refused.path]
    expected = sum(len(ids) for path, ids in by_folder.items() if path != refused.path)
    assert Email.objects.filter(account=account).count() == expected

    again = _sync(account)

    assert (again.state, again.folder_errors) == (SyncRun.State.SUCCEEDED, 0)
    refused.refresh_from_db()
    assert (refused.last_error, refused.failing_since) == ("", None)
    assert Email.objects.filter(account=account).count() == 6


def test_it_ends_the_run_when_the_busy_server_is_met_in_a_folder(exchange_mailbox, ews_server):
    # Busy is the server's, not one folder's: the run ends and is tried again, no folder
    # is marked as refused.
    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 1)
    ews_server.fail_next("SyncFolderItems", "ErrorMailboxStoreUnavailable")

    with pytest.raises(TransientSyncError):
        _sync(account)

    assert not Folder.objects.filter(account=account).exclude(last_error="").exists()


def test_it_gives_up_on_an_answer_that_comes_a_byte_at_a_time(
    exchange_mailbox, ews_server, settings
):
    # The server answers SyncFolderItems a byte every 0.2 s for a minute, under a read
    # timeout of 1 s it never lets run out: the run waited the whole minute.
    import time

    from mail.pace import PACE_CONNECTS

    account, address = exchange_mailbox
    _deliver(ews_server, address, "inbox", 1)
    settings.MAIL_CONNECT_TIMEOUT = 1
    ews_server.state.drips["SyncFolderItems"] = 0.2
    began = time.monotonic()
    with pytest.raises(TransientSyncError, match="could not be reached"):
        _sync(account)
    took = time.monotonic() - began

    assert PACE_CONNECTS <= took < 30
    for _ in range(50):  # the cut connection's answer ends on the server too
        if ews_server.state.dripping == 0:
            break
        time.sleep(0.1)
    assert ews_server.state.dripping == 0
    del ews_server.state.drips["SyncFolderItems"]
    MailboxSync.objects.filter(account=account).update(claimed_until=None)
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    assert Email.objects.filter(account=account).count() == 1
