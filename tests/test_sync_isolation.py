"""One message, one folder or one server quirk never stops the rest (issue 14), on the
suite's Dovecot: what cannot be stored is kept with a note or noted to be tried again,
and everything else arrives."""

import gzip
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import DataError, OperationalError
from django.utils import timezone

from sync import engine, store
from sync.models import Email, EmailLocation, Folder, MailboxSync, SyncRun, UnstoredMessage
from sync.services import TransientSyncError, mailbox_sync, mailboxes_due
from tests.mailbox import make_message


def _sync(account):
    run = mailbox_sync(account_id=account.pk)
    assert run is not None
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    return run


def _refusing(real, marker: str, error=DataError):
    """insert_rows, refusing every batch that holds a row with `marker` in its subject:
    the database turning down one message's row, whatever the reason will be."""

    def insert(model, columns, rows):
        subject = columns.index("subject") if "subject" in columns else None
        if subject is not None and any(marker in str(row[subject]) for row in rows):
            raise error(f"refused a row with {marker}")
        return real(model, columns, rows)

    return insert


def test_it_stores_the_rest_of_a_batch_when_one_message_cannot_be_stored(
    synced_mailbox, monkeypatch, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    account, mailbox = synced_mailbox
    poison = make_message(subject="POISON offer")
    mailbox.append("INBOX", *(make_message(subject=f"fine {n}") for n in range(5)), poison)
    mailbox.append("Later", make_message(subject="in a later folder"))
    monkeypatch.setattr(store, "insert_rows", _refusing(store.insert_rows, "POISON"))
    run = _sync(account)
    assert Email.objects.count() == 7
    assert EmailLocation.objects.count() == 7
    kept = Email.objects.get(subject="POISON offer")
    assert kept.problem == Email.Problem.UNREADABLE
    assert "could not be stored normally" in kept.notes and "DataError" in kept.notes
    with gzip.open(kept.original.path) as original:
        assert original.read().replace(b"\r\n", b"\n") == poison.replace(b"\r\n", b"\n")
    assert (run.new_emails, run.new_locations, run.parse_problems) == (7, 7, 1)
    assert not UnstoredMessage.objects.exists()
    idle = _sync(account)
    assert (idle.new_emails, idle.new_locations) == (0, 0)


def test_it_notes_a_message_it_cannot_store_at_all_and_stores_it_on_a_later_run(
    synced_mailbox, monkeypatch
):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="fine"), make_message(subject="POISON"))
    monkeypatch.setattr(store, "insert_rows", _refusing(store.insert_rows, "POISON"))
    real_create = Email.objects.create

    def refusing_create(**fields):
        if "POISON" in fields.get("subject", ""):
            raise DataError("refused again")
        return real_create(**fields)

    monkeypatch.setattr(Email.objects, "create", refusing_create)
    run = _sync(account)
    assert list(Email.objects.values_list("subject", flat=True)) == ["fine"]
    noted = UnstoredMessage.objects.get()
    assert "refused again" in noted.error and noted.attempts == 1
    assert run.state == SyncRun.State.SUCCEEDED
    # Nothing is lost: the next runs try it again, less often the more it failed.
    monkeypatch.undo()
    _sync(account)
    assert UnstoredMessage.objects.count() == 1  # not due yet
    _an_hour_passes()
    _sync(account)
    assert not UnstoredMessage.objects.exists()
    assert sorted(Email.objects.values_list("subject", flat=True)) == ["POISON", "fine"]
    assert EmailLocation.objects.count() == 2


def _an_hour_passes() -> None:
    """For the messages noted as unstored: their retries fall due."""
    earlier = timezone.now() - timedelta(hours=1)
    UnstoredMessage.objects.update(last_failed_at=earlier)
    Folder.objects.exclude(retry_at=None).update(retry_at=earlier)


def _message_file(dovecot, address: str, subject: str) -> Path:
    maildir = Path(dovecot.root) / "mail" / address / "Maildir"
    for path in [*maildir.glob("cur/*"), *maildir.glob("new/*")]:
        if f"Subject: {subject}".encode() in path.read_bytes():
            return path
    raise AssertionError(f"no message file with subject {subject}")


def test_it_goes_on_when_the_server_ends_the_session_over_one_message(synced_mailbox, dovecot):
    """Dovecot answers a message file it cannot open with "BYE FETCH failed: Internal
    error" and closes the connection: every run used to fail there, for good."""
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *(make_message(subject=f"inbox {n}") for n in range(6)))
    mailbox.append("Later", *(make_message(subject=f"later {n}") for n in range(3)))
    broken = _message_file(dovecot, account.address, "inbox 3")
    os.chmod(broken, 0)
    try:
        run = _sync(account)
        subjects = set(Email.objects.values_list("subject", flat=True))
        assert subjects == {f"inbox {n}" for n in (0, 1, 2, 4, 5)} | {
            f"later {n}" for n in range(3)
        }
        noted = UnstoredMessage.objects.get()
        assert "ended the session" in noted.error
        assert run.new_locations == 8
    finally:
        os.chmod(broken, 0o600)
    _an_hour_passes()
    _sync(account)
    assert Email.objects.filter(subject="inbox 3").exists()
    assert not UnstoredMessage.objects.exists()


def test_it_keeps_going_past_a_folder_the_server_refuses(synced_mailbox, dovecot):
    account, mailbox = synced_mailbox
    mailbox.append("Refused", make_message(subject="behind a refusal"))
    mailbox.append("Zebra", make_message(subject="after it"))
    mailbox.append("INBOX", make_message(subject="before it"))
    refused = Path(dovecot.root) / "mail" / account.address / "Maildir" / ".Refused"
    os.chmod(refused, 0)
    try:
        run = _sync(account)
        folder = Folder.objects.get(account=account, path="Refused")
        assert folder.last_error and folder.failing_since
        assert run.folder_errors == 1
        assert set(Email.objects.values_list("subject", flat=True)) == {"before it", "after it"}
    finally:
        os.chmod(refused, 0o700)
    _sync(account)
    folder.refresh_from_db()
    assert (folder.last_error, folder.failing_since) == ("", None)
    assert Email.objects.filter(subject="behind a refusal").exists()


@pytest.mark.parametrize("hidden", [{b"CONDSTORE", b"QRESYNC"}, set()], ids=["poor", "dovecot"])
def test_it_picks_up_a_flag_change_alone(synced_mailbox, monkeypatch, hidden):
    """Read elsewhere, nothing else changed: without CONDSTORE no status item shows it."""
    from mail.imap_smtp.connection import _PinnedIMAPClient

    original = _PinnedIMAPClient.capabilities
    monkeypatch.setattr(
        _PinnedIMAPClient, "capabilities", lambda self: tuple(set(original(self)) - hidden)
    )
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="read me"), make_message(subject="other"))
    _sync(account)
    with mailbox.client() as client:
        client.select_folder("INBOX")
        client.add_flags(client.search(["SUBJECT", "read me"]), [b"\\Seen"])
    run = _sync(account)
    assert run.flag_changes == 1
    assert Email.objects.get(subject="read me").seen
    assert not Email.objects.get(subject="other").seen
    with mailbox.client() as client:
        client.select_folder("INBOX")
        client.remove_flags(client.search(["SUBJECT", "read me"]), [b"\\Seen"])
    assert _sync(account).flag_changes == 1
    assert not Email.objects.get(subject="read me").seen


def test_it_checks_the_flags_of_a_large_folder_a_slice_per_run(synced_mailbox, monkeypatch):
    from mail.imap_smtp.connection import _PinnedIMAPClient

    original = _PinnedIMAPClient.capabilities
    monkeypatch.setattr(
        _PinnedIMAPClient,
        "capabilities",
        lambda self: tuple(c for c in original(self) if c not in {b"CONDSTORE", b"QRESYNC"}),
    )
    monkeypatch.setattr(engine, "FLAGS_NEWEST", 2)
    monkeypatch.setattr(engine, "FLAGS_SLICE", 3)
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *(make_message(subject=f"m{n}") for n in range(12)))
    _sync(account)
    with mailbox.client() as client:
        client.select_folder("INBOX")
        client.add_flags(client.search(["SUBJECT", "m0"]), [b"\\Seen"])  # the oldest
    # 2 newest + 3 older per run: the oldest of 12 is reached by the fourth run at most.
    runs = 0
    while not Email.objects.get(subject="m0").seen:
        runs += 1
        assert runs <= 4, "the oldest message's flags were never checked"
        _sync(account)
    assert runs >= 2  # not all at once: each run asks for a bounded slice


@pytest.mark.parametrize("hidden", [{b"QRESYNC"}, {b"CONDSTORE", b"QRESYNC"}])
def test_it_finds_an_expunge_when_the_period_leaves_older_mail_on_the_server(
    synced_mailbox, monkeypatch, hidden
):
    from mail.imap_smtp.connection import _PinnedIMAPClient

    original = _PinnedIMAPClient.capabilities
    monkeypatch.setattr(
        _PinnedIMAPClient, "capabilities", lambda self: tuple(set(original(self)) - hidden)
    )
    account, mailbox = synced_mailbox
    old = timezone.now() - timedelta(days=60)
    mailbox.append("INBOX", *(make_message(subject=f"old {n}") for n in range(5)), when=old)
    mailbox.append("INBOX", make_message(subject="stays"), make_message(subject="goes"))
    _sync(account)
    assert EmailLocation.objects.count() == 2  # a week's mail only
    with mailbox.client() as client:
        client.select_folder("INBOX")
        client.delete_messages(client.search(["SUBJECT", "goes"]))
        client.expunge()
    run = _sync(account)
    assert run.removed_locations == 1
    assert list(EmailLocation.objects.values_list("email__subject", flat=True)) == ["stays"]


def test_it_keeps_both_messages_that_share_a_message_id(synced_mailbox):
    account, mailbox = synced_mailbox
    first = make_message(subject="Invoice 1", message_id="<same@mailer.test>")
    second = make_message(subject="Invoice 2", message_id="<same@mailer.test>")
    mailbox.append("INBOX", first, second)
    mailbox.append("Archive", first, second)  # each a second time: no third email
    run = _sync(account)
    assert sorted(Email.objects.values_list("subject", flat=True)) == ["Invoice 1", "Invoice 2"]
    assert EmailLocation.objects.count() == 4
    assert run.new_emails == 2
    noted = Email.objects.exclude(notes="").get()
    assert "same Message-ID <same@mailer.test>" in noted.notes
    assert not noted.problem  # both are whole; the note only says why there are two
    assert {e.message_id for e in Email.objects.all()} == {"same@mailer.test"}
    idle = _sync(account)
    assert idle.new_locations == 0


def test_it_counts_only_what_a_failed_run_committed(transactional_db, synced_mailbox, monkeypatch):
    # Transactional: losing the database ends the connection, which a test transaction
    # around everything would not survive.
    account, mailbox = synced_mailbox
    monkeypatch.setattr(engine, "BATCH", 3)
    mailbox.append("INBOX", *(make_message(subject=f"m{n}") for n in range(9)))
    calls = []
    real = store.insert_rows_skipping_existing

    def database_goes_away(*args):
        calls.append(1)
        if len(calls) == 2:  # the second batch, after its emails' rows were written
            raise OperationalError("terminating connection due to administrator command")
        return real(*args)

    monkeypatch.setattr(store, "insert_rows_skipping_existing", database_goes_away)
    with pytest.raises(TransientSyncError, match="database"):
        mailbox_sync(account_id=account.pk)
    run = SyncRun.objects.get()
    assert run.state == SyncRun.State.FAILED
    assert EmailLocation.objects.count() == Email.objects.count() == 3
    assert (run.new_emails, run.new_locations) == (3, 3)
    state = MailboxSync.objects.get(account=account)
    assert state.claimed_until is None and state.last_error_kind == "database"
    assert state.failing_since is not None
    monkeypatch.undo()
    _sync(account)
    assert EmailLocation.objects.count() == 9
    assert MailboxSync.objects.get(account=account).failing_since is None


def test_it_closes_runs_whose_worker_died(synced_mailbox):
    account, _ = synced_mailbox
    MailboxSync.objects.create(account=account)
    dead = SyncRun.objects.create(account=account, new_emails=4)
    mailboxes_due()  # the dispatcher: nobody holds the claim, so the run is over
    dead.refresh_from_db()
    assert dead.state == SyncRun.State.INTERRUPTED
    assert dead.finished_at is not None and "stopped before it finished" in dead.error
    # One a live worker holds is left alone.
    MailboxSync.objects.filter(account=account).update(
        claimed_until=timezone.now() + timedelta(minutes=5), claim_token="live"
    )
    live = SyncRun.objects.create(account=account)
    mailboxes_due()
    live.refresh_from_db()
    assert live.state == SyncRun.State.RUNNING


def test_it_takes_back_its_own_claim_on_a_retry(synced_mailbox):
    """The first attempt lost the database and could not release the mailbox; its retry
    (the same task, the same token) goes on at once instead of waiting out the lease."""
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="waiting"))
    MailboxSync.objects.create(
        account=account, claimed_until=timezone.now() + timedelta(minutes=5), claim_token="task-1"
    )
    stale = SyncRun.objects.create(account=account)
    assert mailbox_sync(account_id=account.pk, claim_token="task-2") is None  # someone else's
    run = mailbox_sync(account_id=account.pk, claim_token="task-1")
    assert run.state == SyncRun.State.SUCCEEDED
    assert Email.objects.filter(subject="waiting").exists()
    stale.refresh_from_db()
    assert stale.state == SyncRun.State.INTERRUPTED


def test_it_keeps_a_forged_correction_that_reuses_a_message_id(synced_mailbox):
    """Same Message-ID, sender and subject, five minutes apart, other content: a forged
    "correction" must not replace the real invoice, nor disappear behind it."""
    account, mailbox = synced_mailbox
    real = make_message(
        subject="Invoice 42", message_id="<inv-42@partner.test>",
        body="Please pay to IBAN DE11 1111.", age=timedelta(minutes=10),
    )  # fmt: skip
    forged = make_message(
        subject="Invoice 42", message_id="<inv-42@partner.test>",
        body="CORRECTION: pay to IBAN XX99 9999 instead.", age=timedelta(minutes=5),
    )  # fmt: skip
    mailbox.append("INBOX", real, forged)
    mailbox.append("Archive", real)  # a copy of the real one: the same email
    _sync(account)
    texts = sorted(Email.objects.values_list("text_body", flat=True))
    assert len(texts) == 2
    assert "DE11" in texts[1] and "XX99" in texts[0]
    assert EmailLocation.objects.count() == 3
    assert Email.objects.exclude(notes="").count() == 1


def test_it_sets_aside_many_messages_the_server_ends_the_session_over(synced_mailbox, dovecot):
    """Ten unreadable message files among 120 in one batch: each costs its message, and
    the next run does not ask for them again until their retry falls due."""
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *(make_message(subject=f"m {n:03}") for n in range(120)))
    broken = [_message_file(dovecot, account.address, f"m {n:03}") for n in range(5, 120, 12)]
    for path in broken:
        os.chmod(path, 0)
    try:
        run = _sync(account)
        assert run.new_locations == 110
        assert UnstoredMessage.objects.count() == len(broken) == 10
        assert Email.objects.count() == 110
        again = _sync(account)
        assert (again.new_locations, again.new_emails) == (0, 0)
        assert UnstoredMessage.objects.filter(attempts=1).count() == 10  # not asked again
    finally:
        for path in broken:
            os.chmod(path, 0o600)
    _an_hour_passes()
    _sync(account)
    assert Email.objects.count() == 120 and not UnstoredMessage.objects.exists()


def test_it_knows_a_copy_read_under_other_limits_for_the_same_email(synced_mailbox):
    """The content key comes from the server's bytes, not from what the parser made of
    them: a copy filed later, read under a lower parts limit, is the same email."""
    from email.message import EmailMessage

    from systemsettings.models import SystemSetting

    account, mailbox = synced_mailbox
    message = EmailMessage()
    message["Subject"] = "Photos"
    message["From"] = "peter@partner.test"
    message["Message-ID"] = "<photos-1@partner.test>"
    message.set_content("Fifteen photos.")
    for number in range(15):
        message.add_attachment(b"jpeg %d" % number, maintype="image", subtype="jpeg",
                               filename=f"p{number}.jpg")  # fmt: skip
    mailbox.append("INBOX", message.as_bytes())
    _sync(account)
    SystemSetting.objects.update_or_create(
        code="MaxMessageParts", defaults={"value_type": "integer", "value": "10"}
    )
    mailbox.append("Archive", message.as_bytes())
    _sync(account)
    assert Email.objects.count() == 1
    assert EmailLocation.objects.count() == 2


def test_it_stops_a_run_after_its_new_sessions_and_goes_on_later(
    synced_mailbox, dovecot, monkeypatch
):
    """A server that ends the session over many messages: a run opens a bounded number
    of new sessions, keeps what it set aside, and the next runs go on from there."""
    monkeypatch.setattr(engine, "MAX_REOPEN", 6)
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *(make_message(subject=f"m {n:03}") for n in range(40)))
    mailbox.append("Later", *(make_message(subject=f"later {n}") for n in range(3)))
    broken = [_message_file(dovecot, account.address, f"m {n:03}") for n in range(0, 40, 3)]
    for path in broken:
        os.chmod(path, 0)
    runs, errors = 0, []
    try:
        while True:
            runs += 1
            assert runs <= 12, errors
            try:
                run = mailbox_sync(account_id=account.pk)
            except TransientSyncError as error:
                errors.append(str(error))
                _an_hour_passes()
                continue
            if run.state == SyncRun.State.SUCCEEDED:
                break
    finally:
        for path in broken:
            os.chmod(path, 0o600)
    assert errors and all("kept ending the session" in error for error in errors)
    assert Email.objects.count() == 40 - len(broken) + 3
    assert UnstoredMessage.objects.count() == len(broken)


def _size_unreadable(path: Path) -> None:
    """A message file without its size in the name (",S=", ",W="), made unreadable:
    Dovecot then ends the session when asked for its RFC822.SIZE, not only its body."""
    base, colon, flags = path.name.partition(":")
    target = path.parent / (base.split(",")[0] + colon + flags)
    os.rename(path, target)
    os.chmod(target, 0)
    return target


def test_it_loses_nothing_when_its_sessions_run_out_while_asking_for_sizes(
    synced_mailbox, dovecot, monkeypatch
):
    """The run spent its new sessions isolating messages whose sizes the server would not
    give: it went on as if the folder were done (only that chunk of sizes noted, the
    folder's position saved past the older chunks), and those were never asked again."""
    monkeypatch.setattr(engine, "MAX_REOPEN", 4)
    monkeypatch.setattr(engine, "SIZES_AT_ONCE", 10)
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *(make_message(subject=f"m {n:03}") for n in range(40)))
    broken = [
        _size_unreadable(_message_file(dovecot, account.address, f"m {n:03}"))
        for n in (36, 33, 31, 30, 29)  # among the newest: the first chunk asked for
    ]
    outcomes = []
    try:
        for _ in range(3):
            try:
                outcomes.append(mailbox_sync(account_id=account.pk).state)
            except TransientSyncError as error:
                outcomes.append(str(error))
            _an_hour_passes()
    finally:
        for path in broken:
            os.chmod(path, 0o600)
    assert any("kept ending the session" in str(outcome) for outcome in outcomes), outcomes
    for _ in range(3):  # the server reads them all again
        _an_hour_passes()
        assert mailbox_sync(account_id=account.pk).state == SyncRun.State.SUCCEEDED
    subjects = set(Email.objects.values_list("subject", flat=True))
    assert subjects == {f"m {n:03}" for n in range(40)}
    assert not UnstoredMessage.objects.exists()


def _through_slow_proxy(test_provider, dovecot, settings, marker: bytes, holds=None):
    """The mailbox's server behind a relay holding back commands with `marker` longer
    than the read timeout (shortened to 2 s)."""
    from tests.servers.proxy import SlowCommandProxy

    settings.MAIL_CONNECT_TIMEOUT = 2
    proxy = SlowCommandProxy(dovecot.imap_port, marker, delay=3, holds=holds)
    test_provider.imap_host, test_provider.imap_port = "127.0.0.1", proxy.port
    test_provider.imap_security = "none"
    test_provider.save()
    return proxy


def _direct(test_provider, dovecot) -> None:
    test_provider.imap_host, test_provider.imap_port = "localhost", dovecot.imaps_port
    test_provider.imap_security = "ssl"
    test_provider.save()


def test_it_reads_the_other_folders_when_the_server_is_too_slow_for_one(
    synced_mailbox, dovecot, test_provider, settings
):
    """A folder the server answered too slowly ended every run there, and the folders
    after it were never read."""
    account, mailbox = synced_mailbox
    for name in ("INBOX", "Alpha", "Beta", "Slow"):  # Dovecot lists the newest first
        mailbox.append(name, make_message(subject=f"in {name}"))
    with mailbox.client() as client:
        order = [name for _flags, _sep, name in client.list_folders()]
    assert order.index("Slow") < order.index("INBOX")
    proxy = _through_slow_proxy(test_provider, dovecot, settings, b'"Slow"')
    try:
        run = mailbox_sync(account_id=account.pk)
    finally:
        proxy.close()
    assert proxy.held
    assert set(EmailLocation.objects.values_list("folder__path", flat=True)) == {
        "INBOX", "Alpha", "Beta",
    }  # fmt: skip
    slow = Folder.objects.get(account=account, path="Slow")
    assert "did not answer in time while this folder was read" in slow.last_error
    assert (run.state, run.folder_errors) == (SyncRun.State.SUCCEEDED, 1)
    # Read last from now on; once the server answers, it is read.
    _direct(test_provider, dovecot)
    _an_hour_passes()
    mailbox_sync(account_id=account.pk)
    assert Email.objects.filter(subject="in Slow").exists()
    assert not Folder.objects.get(pk=slow.pk).last_error


def _synced_through_drip(account, dovecot, test_provider, settings, marker: bytes, **drip):
    """A run whose server's answers drip a byte every half second, under a read timeout
    of 2 s, once a command holds `marker`: (the run, the relay, its seconds)."""
    from tests.servers.proxy import DripProxy

    settings.MAIL_CONNECT_TIMEOUT = 2
    proxy = DripProxy(dovecot.imap_port, marker, interval=0.5, limit=120, **drip)
    test_provider.imap_host, test_provider.imap_port = "127.0.0.1", proxy.port
    test_provider.imap_security = "none"
    test_provider.save()
    began = time.monotonic()
    try:
        run = mailbox_sync(account_id=account.pk)
    finally:
        proxy.close()
    return run, proxy, time.monotonic() - began


def test_it_gives_up_on_a_folder_whose_answer_comes_a_byte_at_a_time(
    synced_mailbox, dovecot, test_provider, settings
):
    """A server that sends a byte every half second never lets a read time out (2 s):
    the run, and the worker it ran on, waited for as long as the server went on."""
    from mail.pace import PACE_CONNECTS

    account, mailbox = synced_mailbox
    for name in ("INBOX", "Alpha", "Slow"):
        mailbox.append(name, make_message(subject=f"in {name}"))
    run, proxy, took = _synced_through_drip(account, dovecot, test_provider, settings, b'"Slow"')

    assert proxy.dripped == 1
    # The answer's allowance (8 s and a second a KB) and the pacer's second, not the
    # two minutes the server would have gone on for.
    assert PACE_CONNECTS * 2 < took < 60
    assert set(EmailLocation.objects.values_list("folder__path", flat=True)) == {"INBOX", "Alpha"}
    slow = Folder.objects.get(account=account, path="Slow")
    assert "did not answer in time while this folder was read" in slow.last_error
    assert (run.state, run.folder_errors) == (SyncRun.State.SUCCEEDED, 1)


def test_it_gives_up_on_a_fetch_whose_bodies_come_a_byte_at_a_time(
    synced_mailbox, dovecot, test_provider, settings
):
    """The same, for the bodies: their FETCH is read by the run's helper thread, whose
    read the pacer cuts; the folder is set aside and the next one read in a new
    session."""
    account, mailbox = synced_mailbox
    for name in ("INBOX", "Alpha"):
        mailbox.append(name, make_message(subject=f"in {name}"))
    run, proxy, took = _synced_through_drip(
        account, dovecot, test_provider, settings, b"BODY.PEEK[]", times=1
    )

    assert proxy.dripped == 1 and took < 60
    failed = Folder.objects.filter(account=account).exclude(last_error="")
    assert [f.path for f in failed] != [] and len(failed) == 1
    assert "answer did not arrive in full within" in failed[0].last_error
    stored = set(EmailLocation.objects.values_list("folder__path", flat=True))
    assert stored == {"INBOX", "Alpha"} - {failed[0].path}
    assert (run.state, run.folder_errors) == (SyncRun.State.SUCCEEDED, 1)


def test_it_notes_nothing_of_a_failed_folder_against_the_next(synced_mailbox, monkeypatch):
    """A UID set aside in a folder that then failed was noted as unstored in the next
    folder, under its UIDVALIDITY (found by a review)."""
    import imaplib

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="in INBOX"), make_message(subject="two"))
    mailbox.append("Slow", make_message(subject="s1"), make_message(subject="s2"))
    current, refused = {}, []
    real_sync_folder, real_sizes = engine.AccountSyncer.sync_folder, engine.fetch_sizes

    def sync_folder(self, folder):
        current["path"] = folder.path
        return real_sync_folder(self, folder)

    def fetch_sizes(client, uids):
        if current["path"] != "Slow":
            return real_sizes(client, uids)
        if len(uids) > 1:
            raise imaplib.IMAP4.error("FETCH failed: one message is broken")
        if not refused:
            refused.append(uids[0])
            raise imaplib.IMAP4.error("FETCH failed: this message is broken")
        raise TimeoutError("The read operation timed out")

    monkeypatch.setattr(engine.AccountSyncer, "sync_folder", sync_folder)
    monkeypatch.setattr(engine, "fetch_sizes", fetch_sizes)
    Folder.objects.filter(account=account, path="INBOX").update(failing_since=timezone.now())
    run = mailbox_sync(account_id=account.pk)  # INBOX, which failed before, last
    assert run.folder_errors == 1 and refused
    assert "did not answer in time" in Folder.objects.get(account=account, path="Slow").last_error
    assert set(Email.objects.values_list("subject", flat=True)) == {"in INBOX", "two"}
    assert not UnstoredMessage.objects.exists()


def test_it_reads_the_folders_that_failed_last_time_last(synced_mailbox, monkeypatch):
    account, mailbox = synced_mailbox
    for name in ("INBOX", "Alpha", "Beta"):
        mailbox.append(name, make_message(subject=f"in {name}"))
    mailbox_sync(account_id=account.pk)
    read = []
    real = engine.AccountSyncer.sync_folder
    monkeypatch.setattr(
        engine.AccountSyncer, "sync_folder", lambda self, f: read.append(f.path) or real(self, f)
    )
    _an_hour_passes()
    mailbox_sync(account_id=account.pk)
    first = list(read)
    Folder.objects.filter(account=account, path=first[0]).update(
        last_error="slow", failing_since=timezone.now()
    )
    read.clear()
    mailbox_sync(account_id=account.pk)
    assert read == [*first[1:], first[0]]


def test_it_gives_up_a_fetch_the_server_stopped_answering(
    synced_mailbox, dovecot, test_provider, settings
):
    """The helper thread's FETCH timed out, and the timeout was taken for the wait's own
    (concurrent.futures.TimeoutError is TimeoutError): the run waited for it again and
    again, renewing its claim, for ever."""
    account, mailbox = synced_mailbox
    for name in ("INBOX", "Alpha", "Beta"):
        mailbox.append(name, make_message(subject=f"in {name}"))
    proxy = _through_slow_proxy(test_provider, dovecot, settings, b"BODY.PEEK[]", holds=1)
    try:
        run = mailbox_sync(account_id=account.pk)
    finally:
        proxy.close()
    assert proxy.held == 1
    [stalled] = Folder.objects.filter(account=account).exclude(last_error="")
    assert "did not answer in time" in stalled.last_error
    stored = set(EmailLocation.objects.values_list("folder__path", flat=True))
    assert stored == {"INBOX", "Alpha", "Beta"} - {stalled.path}
    assert (run.state, run.folder_errors) == (SyncRun.State.SUCCEEDED, 1)


def test_it_ends_the_run_when_the_server_is_too_slow_for_every_folder(
    synced_mailbox, dovecot, test_provider, settings
):
    account, mailbox = synced_mailbox
    for name in ("INBOX", "A", "B", "C", "D"):
        mailbox.append(name, make_message(subject=f"in {name}"))
    proxy = _through_slow_proxy(test_provider, dovecot, settings, b"BODY.PEEK[]")
    try:
        with pytest.raises(TransientSyncError, match="TimeoutError"):
            mailbox_sync(account_id=account.pk)
    finally:
        proxy.close()
    assert proxy.held == engine.MAX_STALLED_FOLDERS + 1
    assert Folder.objects.exclude(last_error="").count() == engine.MAX_STALLED_FOLDERS


def test_it_takes_a_refusal_about_the_server_for_the_folders_not_each_messages(
    synced_mailbox, monkeypatch
):
    import imaplib

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *(make_message(subject=f"m{n}") for n in range(30)))

    def unavailable(client, uids):
        raise imaplib.IMAP4.error("UID FETCH failed: NO [UNAVAILABLE] Try again later")

    monkeypatch.setattr(engine, "fetch_bodies", unavailable)
    run = _sync(account)
    assert run.folder_errors == 1
    assert not UnstoredMessage.objects.exists()  # not thirty messages noted one by one
    assert "UNAVAILABLE" in Folder.objects.get(account=account, path="INBOX").last_error
    monkeypatch.undo()
    _sync(account)
    assert Email.objects.count() == 30
    assert Folder.objects.get(account=account, path="INBOX").last_error == ""
