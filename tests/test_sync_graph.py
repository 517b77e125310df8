"""Downloading a Microsoft 365 mailbox through Microsoft Graph, whole runs of
sync.services.mailbox_sync, against the suite's Graph protocol fake (tests/servers/graph.py:
not Microsoft's service, a server answering Graph v1.0 over HTTPS with documents shaped
like Graph's) with tokens from the suite's OAuth server. The guarantees are the Exchange
ones (tests/test_sync_ews.py) and the IMAP ones: the period, the chosen folders, no
email lost or stored twice, and a delta link kept with the page it follows so that a cut
run resumes where it stood."""

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from crm.models import Company, Contact, ContactAddress
from mail.graph.reader import GraphReader
from sync.delta import DeltaSyncer
from sync.models import Email, EmailLocation, Folder, MailboxSync, SyncRun, UnstoredMessage
from sync.services import TransientSyncError, mailbox_sync, mailboxes_due
from systemsettings.models import SystemSetting
from tests.mailbox import make_message


def _sync(account) -> SyncRun:
    run = mailbox_sync(account_id=account.pk)
    assert run is not None
    return run


def _release(account) -> None:
    """The claim a run that ended by raising left on the mailbox, let go as its task's
    retry would find it."""
    MailboxSync.objects.filter(account=account).update(claimed_until=None)


def _deliver(graph_server, address, folder, count, *, age=timedelta(hours=1), prefix="m",
             is_read=False) -> list[str]:  # fmt: skip
    received = datetime.now(UTC) - age
    return [
        graph_server.add_message(
            folder,
            make_message(subject=f"{prefix} {n}", to=address, age=age),
            is_read=is_read,
            received=received,
            mailbox=address,
        )
        for n in range(count)
    ]


def _mine(graph_server, address, route=None) -> list[dict]:
    return [
        r
        for r in graph_server.requests
        if r["user"] == address and (route is None or r["route"] == route)
    ]


def _digests(account) -> list[str]:
    return sorted(
        hashlib.sha256(f"{e.message_key}|{e.subject}".encode()).hexdigest()
        for e in Email.objects.filter(account=account)
    )


def _no_duplicates(account) -> None:
    keys = list(Email.objects.filter(account=account).values_list("message_key", flat=True))
    assert len(keys) == len(set(keys))
    where = list(
        EmailLocation.objects.filter(folder__account=account).values_list("folder", "item_id")
    )
    assert len(where) == len(set(where))


@pytest.fixture
def small_pages(monkeypatch):
    """Delta pages of 10 messages (Graph's own default) instead of the reader's 100, so a
    folder of a few dozen is read over several pages."""
    monkeypatch.setattr(GraphReader.__init__, "__kwdefaults__", {"page_size": 10})


def _only(account, *paths) -> None:
    """The mailbox in "customized" folder mode with exactly `paths` chosen (the folders
    known from a run before)."""
    account.folder_mode = "custom"
    account.save(update_fields=["folder_mode"])
    Folder.objects.filter(account=account).update(chosen=False)
    assert Folder.objects.filter(account=account, path__in=paths).update(chosen=True) == len(paths)


# -- 1. the first download of the period --------------------------------------------------


def test_it_downloads_the_period_of_the_chosen_nested_folders_once_per_mailbox(
    graph_mailbox, graph_server, client, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    account, address = graph_mailbox
    partner = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
    peter = Contact.objects.create(name="")
    ContactAddress.objects.create(contact=peter, address="peter@partner.test")
    projects = graph_server.add_folder("inbox", "Projects", mailbox=address)
    graph_server.add_folder(projects, "2024", mailbox=address)
    unread, _ = _deliver(graph_server, address, "inbox", 2, prefix="recent")
    read = _deliver(graph_server, address, "inbox", 1, prefix="read", is_read=True)[0]
    _deliver(graph_server, address, "inbox", 1, prefix="old", age=timedelta(days=30))
    offer = make_message(subject="offer", to=address, attachment=("offer.pdf", b"%PDF-1.4 x"))
    graph_server.add_message("inbox/Projects/2024", offer, mailbox=address)
    twice = make_message(subject="twice", to=address)
    graph_server.add_message("inbox", twice, mailbox=address)
    graph_server.add_message("inbox/Projects/2024", twice, mailbox=address)
    _deliver(graph_server, address, "inbox/Projects", 1, prefix="not chosen")
    _deliver(graph_server, address, "sentitems", 1, prefix="not chosen either")
    client.force_login(account.owner)

    picker = client.post(
        reverse("accounts:folders_refresh", args=[account.pk]), HTTP_HX_REQUEST="true"
    )
    assert 'data-path="Inbox/Projects/2024"' in picker.text  # read from Graph's mailFolders
    chosen = Folder.objects.filter(account=account, path__in=["Inbox", "Inbox/Projects/2024"])
    response = client.post(
        reverse("accounts:folders", args=[account.pk]),
        {"folder_mode": "custom", "chosen": [f.pk for f in chosen]},
    )
    assert response.status_code == 302
    graph_server.state.requests.clear()

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    subjects = sorted(Email.objects.filter(account=account).values_list("subject", flat=True))
    # A week by default: the 30-day-old message is not downloaded; the folders not
    # chosen (the nested one's parent, Sent Items) are not read.
    assert subjects == ["offer", "read 0", "recent 0", "recent 1", "twice"]
    assert (run.new_emails, run.new_locations) == (5, 6)
    delta_folders = {
        r["path"].split("/")[4] for r in _mine(graph_server, address, "messages.delta")
    }
    assert delta_folders == {f.server_id for f in chosen}
    # Every source came through /$value, the old one's not at all.
    assert len(_mine(graph_server, address, "message.value")) == 6
    twice_email = Email.objects.get(account=account, subject="twice")
    assert sorted(twice_email.locations.values_list("folder__path", flat=True)) == [
        "Inbox",
        "Inbox/Projects/2024",
    ]
    assert Email.objects.get(account=account, locations__item_id=read).seen
    assert not Email.objects.get(account=account, locations__item_id=unread).seen
    attachment = Email.objects.get(account=account, subject="offer").attachments.get()
    assert (attachment.name, attachment.file.read()) == ("offer.pdf", b"%PDF-1.4 x")
    email = Email.objects.get(account=account, subject="recent 0")
    assert list(email.contacts.all()) == [peter] and partner in email.companies.all()
    peter.refresh_from_db()
    assert peter.name == "Peter Partner"  # enriched from the email, as over IMAP
    folders = {f.path: f for f in Folder.objects.filter(account=account)}
    # What the folder list said the folder holds, the old message too.
    assert (folders["Inbox"].messages, folders["Inbox/Projects/2024"].messages) == (5, 2)
    assert folders["Inbox"].sync_state and folders["Inbox/Projects/2024"].sync_state
    assert folders["Sent Items"].special_use == "\\sent" and not folders["Sent Items"].sync_state
    locations = EmailLocation.objects.filter(folder__account=account)
    assert all(where.uid is None and where.item_id for where in locations)
    assert read in set(locations.values_list("item_id", flat=True))


# -- 2. later runs: only the changes ------------------------------------------------------


def test_it_applies_a_new_message_a_read_flag_and_a_deletion_and_stays_quiet_when_idle(
    graph_mailbox, graph_server
):
    account, address = graph_mailbox
    read, deleted, _kept = _deliver(graph_server, address, "inbox", 3)
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    deleted_email = Email.objects.get(account=account, locations__item_id=deleted)

    graph_server.set_read(read, True)
    graph_server.delete(deleted)
    new = _deliver(graph_server, address, "inbox", 1, prefix="new")[0]
    graph_server.state.requests.clear()
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert (run.new_emails, run.flag_changes, run.removed_locations) == (1, 1, 1)
    assert Email.objects.get(account=account, locations__item_id=read).seen
    assert Email.objects.filter(account=account, locations__item_id=new).exists()
    # The location is gone; the email stays (on the timelines, as over IMAP).
    assert not EmailLocation.objects.filter(item_id=deleted).exists()
    assert Email.objects.filter(pk=deleted_email.pk).exists()
    # Graph lists the changed message again among the new ones: only the new one's
    # source is fetched.
    assert [r["path"].split("/")[-2] for r in _mine(graph_server, address, "message.value")] == [
        new
    ]
    assert Email.objects.filter(account=account).count() == 4

    graph_server.state.requests.clear()
    idle = _sync(account)

    assert idle.state == SyncRun.State.SUCCEEDED, idle.error
    assert (idle.new_emails, idle.new_locations, idle.flag_changes) == (0, 0, 0)
    synced = Folder.objects.filter(account=account).exclude(sync_state="").count()
    asked = _mine(graph_server, address)
    # The sign-in, the folder list (with the address book's folders), one delta request
    # per folder read; no message, no well-known folder asked for again (their uses are
    # known).
    routes = [r["route"] for r in asked]
    # (childFolders only for a folder that has some.)
    assert {"me", "mailFolders", "messages.delta"} <= set(routes)
    assert set(routes) <= {
        "me", "mailFolders", "childFolders", "messages.delta", "contactFolders",
    }  # fmt: skip
    assert routes.count("contactFolders") == 1
    assert routes.count("me") == 1 and routes.count("messages.delta") == synced
    assert len(asked) <= 3 + synced + Folder.objects.filter(account=account).count()


def test_it_moves_the_location_of_a_message_moved_to_another_folder_keeping_its_email(
    graph_mailbox, graph_server
):
    account, address = graph_mailbox
    graph_server.add_folder("inbox", "Done", mailbox=address)
    moved = _deliver(graph_server, address, "inbox", 1, prefix="moved")[0]
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    email = Email.objects.get(account=account)

    new_id = graph_server.move(moved, "inbox/Done")  # a new id, as Exchange gives it
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert (run.new_emails, run.new_locations, run.removed_locations) == (0, 1, 1)
    where = EmailLocation.objects.get(folder__account=account)
    assert (where.email_id, where.folder.path, where.item_id) == (email.pk, "Inbox/Done", new_id)


# -- 3. a delta link Graph forgot --------------------------------------------------------


@pytest.mark.parametrize("code", ["syncStateNotFound", "resyncRequired"])
def test_it_reads_a_folder_again_when_graph_forgets_its_delta_link_without_duplicates(
    graph_mailbox, graph_server, small_pages, code
):
    account, address = graph_mailbox
    _deliver(graph_server, address, "inbox", 30)
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    before = _digests(account)
    inbox = Folder.objects.get(account=account, path="Inbox")
    old_link = inbox.sync_state

    graph_server.forget_delta_links(code)  # as after a mailbox move
    _deliver(graph_server, address, "inbox", 2, prefix="after")
    graph_server.state.requests.clear()
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert len(_mine(graph_server, address, "message.value")) == 32  # read again, whole
    after = _digests(account)
    assert len(after) == 32 and set(before) < set(after)
    assert run.new_emails == 2 and run.new_locations == 32 and run.removed_locations == 30
    inbox.refresh_from_db()
    assert inbox.sync_state and inbox.sync_state != old_link and inbox.last_error == ""
    assert inbox.locations.count() == 32
    _no_duplicates(account)
    # The link it was given now is honoured again: nothing more.
    assert _sync(account).new_locations == 0


def test_it_reads_a_folder_again_when_graph_forgets_the_round_it_is_paging_through(
    graph_mailbox, graph_server, small_pages, monkeypatch
):
    """The links are forgotten between two pages of the first round: the folder's
    first page is stored, then the folder is read from its start, nothing twice."""
    account, address = graph_mailbox
    _deliver(graph_server, address, "inbox", 25)
    changes = GraphReader.changes
    forgotten = []

    def forgets_once(self, server_id, state):
        page = changes(self, server_id, state)
        if page.created and not forgotten:
            forgotten.append(server_id)
            graph_server.forget_delta_links()
        return page

    monkeypatch.setattr(GraphReader, "changes", forgets_once)
    graph_server.state.requests.clear()
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.filter(account=account).count() == 25
    assert run.new_emails == 25 and run.removed_locations == 10
    inbox = Folder.objects.get(account=account, path="Inbox")
    assert inbox.locations.count() == 25 and inbox.last_error == ""
    assert len(_mine(graph_server, address, "message.value")) == 35  # the first ten twice
    _no_duplicates(account)


# -- 4. a connection cut mid-page --------------------------------------------------------


def test_it_resumes_after_connections_cut_mid_page_without_losing_or_repeating_an_email(
    graph_mailbox, graph_server, small_pages
):
    account, address = graph_mailbox
    assert _sync(account).state == SyncRun.State.SUCCEEDED  # the folders, empty
    _only(account, "Inbox")
    _deliver(graph_server, address, "inbox", 25)

    # The second page of changes breaks off halfway through.
    graph_server.cut_next("messages.delta", after=1, mailbox=address)
    with pytest.raises(TransientSyncError, match="broke"):
        _sync(account)
    stored = Email.objects.filter(account=account).count()
    assert stored == 10  # the first page, kept with its link
    assert MailboxSync.objects.get(account=account).health == MailboxSync.Health.OK
    _release(account)
    # A message's source breaks off in the next run.
    graph_server.cut_next("message.value", after=3, mailbox=address)
    with pytest.raises(TransientSyncError, match="broke"):
        _sync(account)
    # The page's messages are stored together: none of the ten, not a half one.
    assert Email.objects.filter(account=account).count() == stored
    _release(account)

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.filter(account=account).count() == 25
    assert EmailLocation.objects.filter(folder__account=account).count() == 25
    _no_duplicates(account)
    # No half message was stored as a whole one.
    assert all("Hi there." in e.text_body for e in Email.objects.filter(account=account))
    assert not Email.objects.filter(account=account).exclude(problem="").exists()


# -- 5. throttling -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "route"),
    [(429, "me"), (503, "mailFolders"), (429, "messages.delta"), (503, "message.value")],
)
def test_it_ends_the_run_for_later_when_graph_asks_for_a_long_wait(
    graph_mailbox, graph_server, status, route
):
    account, address = graph_mailbox
    _deliver(graph_server, address, "inbox", 2)
    graph_server.throttle_next(route, retry_after=600, status=status, mailbox=address)
    started = datetime.now(UTC)

    with pytest.raises(TransientSyncError, match="wait 600 s"):
        _sync(account)

    assert datetime.now(UTC) - started < timedelta(seconds=30)  # not slept out in a worker
    state = MailboxSync.objects.get(account=account)
    assert state.last_error_kind == "busy" and state.health == MailboxSync.Health.OK
    assert SyncRun.objects.get(account=account).state == SyncRun.State.FAILED
    # Honoured for this mailbox: neither the dispatcher nor a retry asks Graph before then.
    waited = state.not_before - timezone.now()
    assert timedelta(seconds=590) < waited <= timedelta(seconds=600)
    _release(account)
    MailboxSync.objects.filter(account=account).update(last_started_at=None)
    assert account.pk not in mailboxes_due()
    graph_server.state.requests.clear()
    with pytest.raises(TransientSyncError) as early:
        _sync(account)
    assert 590 < early.value.wait <= 600 and not _mine(graph_server, address)
    MailboxSync.objects.filter(account=account).update(not_before=timezone.now())
    run = _sync(account)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.filter(account=account).count() == 2
    assert MailboxSync.objects.get(account=account).not_before is None
    _no_duplicates(account)


def test_it_retries_the_task_no_sooner_than_graph_asked(graph_mailbox, graph_server, monkeypatch):
    from sync.tasks import sync_mailbox

    account, address = graph_mailbox
    graph_server.throttle_next("mailFolders", retry_after=600, status=429, mailbox=address)

    asked = {}

    class Retried(Exception):
        pass

    def retry(**kwargs):  # Celery's Task.retry, which needs a worker; what it is asked
        asked.update(kwargs)
        return Retried()

    monkeypatch.setattr(sync_mailbox, "retry", retry)
    with pytest.raises(Retried):
        sync_mailbox.run(account.pk)

    assert 600 <= asked["countdown"] <= 630  # the server's wait, a little spread
    assert isinstance(asked["exc"], TransientSyncError)


def test_it_waits_out_a_short_retry_after_and_goes_on(graph_mailbox, graph_server):
    account, address = graph_mailbox
    _deliver(graph_server, address, "inbox", 2)
    graph_server.throttle_next("message.value", retry_after=1, status=429, mailbox=address)
    graph_server.state.requests.clear()

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.filter(account=account).count() == 2
    first, *later = _mine(graph_server, address, "message.value")
    again = next(r for r in later if r["path"] == first["path"])
    assert again["at"] - first["at"] >= 1.0
    assert MailboxSync.objects.get(account=account).last_error_kind == ""


# -- 6. sending ----------------------------------------------------------------------------


def test_it_finds_the_sent_copy_of_a_message_sent_through_graph_as_the_same_email(
    graph_mailbox, graph_server, django_capture_on_commit_callbacks
):
    from sending.message import Draft
    from sending.models import OutgoingEmail
    from sending.services import outgoing_create, outgoing_send

    account, address = graph_mailbox
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    draft = Draft(
        sender=address, sender_name="Gina Graph",
        to=[{"name": "Peter Partner", "address": "peter@partner.test"}],
        cc=[{"name": "Gina Graph", "address": address}], bcc=[],
        subject="Quote from Microsoft 365", text="Hello Peter,\n\nthe quote.",
        signature_html="", attachments=[("quote.pdf", "application/pdf", b"%PDF-1.4 quote")],
    )  # fmt: skip
    with django_capture_on_commit_callbacks():
        outgoing = outgoing_create(author=account.owner, account=account, draft=draft)
    with django_capture_on_commit_callbacks():
        outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.SENT, outgoing.error
    assert outgoing.sent_copy == OutgoingEmail.Copy.BY_SERVER  # the app appends none
    [sent] = [s for s in graph_server.sent if s["user"] == address]
    sent_items = graph_server.folder_id("sentitems", address)
    [copy] = graph_server.state.in_container(sent_items)  # Graph kept the copy
    # The mailbox got the message too (it was on Cc): another copy, another id.
    graph_server.add_message("inbox", sent["mime"], is_read=True, mailbox=address)

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    stored = Email.objects.get(account=account)  # one email for both copies
    assert stored.message_key == outgoing.message_id  # found by its Message-ID
    assert stored.subject == "Quote from Microsoft 365" and stored.seen
    assert stored.attachments.get().name == "quote.pdf"
    assert sorted(stored.locations.values_list("folder__path", flat=True)) == [
        "Inbox",
        "Sent Items",
    ]
    assert stored.locations.get(folder__path="Sent Items").item_id == copy.id


# -- 7. a token that runs out during the download -----------------------------------------


@pytest.mark.parametrize("when", ["before its changes", "before its sources"])
def test_it_tries_again_when_the_token_runs_out_during_the_download(
    graph_mailbox, graph_server, oauth_server, monkeypatch, when
):
    account, address = graph_mailbox
    _deliver(graph_server, address, "inbox", 3)
    sync_folder, read = DeltaSyncer.sync_folder, GraphReader.read

    def expires_before_changes(self, folder):
        oauth_server.expire_access_tokens()  # by the server's clock, mid-run
        return sync_folder(self, folder)

    def expires_before_sources(self, items, **kwargs):
        oauth_server.expire_access_tokens()
        return read(self, items, **kwargs)

    if when == "before its sources":
        monkeypatch.setattr(GraphReader, "read", expires_before_sources)
    else:
        monkeypatch.setattr(DeltaSyncer, "sync_folder", expires_before_changes)
    with pytest.raises(TransientSyncError, match="sign-in token"):
        _sync(account)
    state = MailboxSync.objects.get(account=account)
    assert state.health == MailboxSync.Health.OK
    assert state.last_error_kind == "token_unavailable"
    assert not Email.objects.filter(account=account).exists()

    monkeypatch.setattr(DeltaSyncer, "sync_folder", sync_folder)
    monkeypatch.setattr(GraphReader, "read", read)
    _release(account)
    oauth_server.state.requests.clear()
    run = _sync(account)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert len(oauth_server.calls("/token")) == 1  # refreshed once
    assert Email.objects.filter(account=account).count() == 3
    _no_duplicates(account)


# -- 8. a longer period --------------------------------------------------------------------


def test_it_fetches_older_mail_when_the_period_grows_without_duplicates(
    graph_mailbox, graph_server
):
    account, address = graph_mailbox
    _deliver(graph_server, address, "inbox", 1, prefix="recent")
    _deliver(graph_server, address, "inbox", 2, prefix="old", age=timedelta(days=20))
    _deliver(graph_server, address, "inbox", 1, prefix="ancient", age=timedelta(days=60))
    assert _sync(account).state == SyncRun.State.SUCCEEDED
    assert Email.objects.filter(account=account).count() == 1

    account.sync_period = "1m"
    account.save()
    graph_server.state.requests.clear()
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    subjects = set(Email.objects.filter(account=account).values_list("subject", flat=True))
    assert subjects == {"recent 0", "old 0", "old 1"}
    asked = [r["query"].get("$filter", "") for r in _mine(graph_server, address, "messages")]
    assert asked and all("receivedDateTime ge" in f for f in asked)
    inbox = Folder.objects.get(account=account, path="Inbox")
    assert inbox.synced_since <= (timezone.now() - timedelta(days=20)).date()
    # Asked again: nothing more, nothing twice.
    again = _sync(account)
    assert (again.new_emails, again.new_locations) == (0, 0)
    assert EmailLocation.objects.filter(folder__account=account).count() == 3
    _no_duplicates(account)


# -- 9. messages that cannot be stored whole ---------------------------------------------


def test_it_keeps_the_headers_and_text_of_a_message_above_the_size_limit(
    graph_mailbox, graph_server
):
    SystemSetting.objects.update_or_create(
        code="MaxMessageSizeMB", defaults={"value_type": "integer", "value": "1"}
    )
    account, address = graph_mailbox
    graph_server.add_message("inbox", make_message(subject="small"), mailbox=address)
    huge = make_message(subject="huge", attachment=("big.bin", b"x" * 1_500_000))
    graph_server.add_message("inbox", huge, mailbox=address)

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    huge = Email.objects.get(account=account, subject="huge")
    assert huge.problem == Email.Problem.INCOMPLETE
    assert "above the limit of 1 MB" in huge.notes
    assert "Hi there." in huge.text_body  # its text, from Graph's properties
    assert huge.from_address == "peter@partner.test" and not huge.attachments.exists()
    assert Email.objects.get(account=account, subject="small").problem == ""
    assert huge.locations.get().uid is None


def test_it_keeps_a_message_whose_source_graph_cannot_give_from_its_properties(
    graph_mailbox, graph_server
):
    account, address = graph_mailbox
    _deliver(graph_server, address, "inbox", 1, prefix="unconvertible")
    graph_server.fail_next("message.value", 500, "ErrorInternalServerError", mailbox=address)

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    email = Email.objects.get(account=account)
    assert email.subject == "unconvertible 0" and email.from_address == "peter@partner.test"
    assert email.problem == Email.Problem.UNREADABLE
    assert "ErrorInternalServerError" in email.notes and "Hi there." in email.text_body
    assert run.parse_problems == 1


def test_it_notes_a_message_graph_gives_nothing_of_by_its_id_and_asks_again_later(
    graph_mailbox, graph_server
):
    account, address = graph_mailbox
    # Alone in its folder, so its source is asked for alone (not in a batch); the other
    # is in a folder read after it.
    stubborn = _deliver(graph_server, address, "inbox", 1, prefix="stubborn")[0]
    later = graph_server.add_folder("msgfolderroot", "Later", mailbox=address)
    _deliver(graph_server, address, later, 1, prefix="beside it")
    # Neither its source nor its properties come: it is noted, not stored.
    graph_server.fail_next("message.value", 500, "ErrorInternalServerError", mailbox=address)
    graph_server.fail_next("message", 500, "ErrorInternalServerError", mailbox=address)

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    noted = UnstoredMessage.objects.get(folder__account=account)
    assert noted.error.startswith("Microsoft 365 gave neither this message nor its properties")
    assert (noted.uid, noted.attempts, noted.item_id) == (None, 1, stubborn)
    assert not EmailLocation.objects.filter(item_id=stubborn).exists()
    assert Email.objects.get(account=account).subject == "beside it 0"
    assert _sync(account).state == SyncRun.State.SUCCEEDED  # not due yet: not asked
    assert UnstoredMessage.objects.get(folder__account=account).attempts == 1

    UnstoredMessage.objects.update(last_failed_at=timezone.now() - timedelta(hours=1))
    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert not UnstoredMessage.objects.filter(folder__account=account).exists()
    assert Email.objects.filter(account=account).count() == 2
    stored = EmailLocation.objects.get(item_id=stubborn)
    assert stored.uid is None and stored.email.subject == "stubborn 0"
    assert stored.email.problem == ""  # its source, whole, this time
    _no_duplicates(account)


def test_it_reads_a_first_download_twenty_sources_to_a_round_trip(graph_mailbox, graph_server):
    account, address = graph_mailbox
    _deliver(graph_server, address, "inbox", 45)
    graph_server.state.requests.clear()

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED and run.new_emails == 45
    routes = [r["route"] for r in _mine(graph_server, address) if not r.get("batch")]
    assert routes.count("$batch") == 3 and "message.value" not in routes
