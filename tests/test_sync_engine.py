"""Downloading mail from the suite's Dovecot: what is stored, once, and what is not."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from crm.models import Company, Contact, ContactAddress
from sync import engine
from sync.engine import size_batches
from sync.models import Email, EmailLocation, Folder, MailboxSync, SyncRun
from sync.services import mailbox_sync
from systemsettings.models import SystemSetting
from tests.factories import claim_taken_by_another_run
from tests.mailbox import make_message


def _sync(account):
    run = mailbox_sync(account_id=account.pk)
    assert run is not None
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    return run


def test_it_downloads_the_chosen_period_newest_first(synced_mailbox):
    account, mailbox = synced_mailbox
    now = datetime.now(UTC)
    mailbox.append("INBOX", make_message(subject="old"), when=now - timedelta(days=20))
    mailbox.append("INBOX", make_message(subject="recent"), when=now - timedelta(days=2))
    mailbox.append("INBOX", make_message(subject="today"), when=now)
    run = _sync(account)
    assert set(Email.objects.values_list("subject", flat=True)) == {"recent", "today"}
    assert run.new_emails == 2
    # Extending the period later brings the older email, and nothing twice.
    account.sync_period = "1m"
    account.save()
    _sync(account)
    assert sorted(Email.objects.values_list("subject", flat=True)) == ["old", "recent", "today"]
    assert EmailLocation.objects.count() == 3


def test_it_fetches_only_what_is_new_on_the_next_run(synced_mailbox, server_kind):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="first"))
    _sync(account)
    mailbox.append("INBOX", make_message(subject="second"))
    run = _sync(account)
    assert run.new_emails == 1
    assert Email.objects.count() == 2
    idle = _sync(account)
    assert (idle.new_emails, idle.new_locations) == (0, 0)
    # Without CONDSTORE the folder's flags are asked for on every run, nothing more.
    assert idle.folders == (1 if server_kind == "poor" else 0)


def test_it_stores_an_email_once_however_many_folders_hold_it(synced_mailbox):
    account, mailbox = synced_mailbox
    shared = make_message(subject="shared", message_id="<same@partner.test>")
    mailbox.append("INBOX", shared)
    mailbox.append("Projects", shared)
    without_id = make_message(subject="no id", message_id=None)
    mailbox.append("INBOX", without_id)
    mailbox.append("Projects", without_id)
    _sync(account)
    assert Email.objects.count() == 2
    assert EmailLocation.objects.count() == 4
    assert Email.objects.get(subject="no id").message_key.startswith("fp:")


def test_it_skips_trash_and_junk_unless_chosen_and_never_nested_children(
    synced_mailbox, server_kind
):
    account, mailbox = synced_mailbox
    for folder in ("Trash", "Junk", "Clients", "Clients/Acme"):
        mailbox.append(folder, make_message(subject=f"in {folder}"))
    _sync(account)
    assert set(Email.objects.values_list("subject", flat=True)) == {"in Clients", "in Clients/Acme"}

    account.folder_mode = "custom"
    account.save()
    Folder.objects.filter(account=account, path__in=["Clients", "Trash"]).update(chosen=True)
    Email.objects.all().delete()
    Folder.objects.filter(account=account).update(last_uid=0, uidvalidity=None, uidnext=None)
    _sync(account)
    assert set(Email.objects.values_list("subject", flat=True)) == {"in Clients", "in Trash"}


def test_it_remaps_a_folder_after_a_uidvalidity_change_without_duplicates(synced_mailbox, dovecot):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="a"), make_message(subject="b", message_id=None))
    _sync(account)
    before = set(Email.objects.values_list("pk", flat=True))
    dovecot.doveadm("mailbox", "update", "--uid-validity", "4242", "-u", account.address, "INBOX")
    run = _sync(account)
    assert set(Email.objects.values_list("pk", flat=True)) == before
    assert run.new_emails == 0
    assert set(EmailLocation.objects.values_list("uidvalidity", flat=True)) == {4242}
    assert EmailLocation.objects.count() == 2


@pytest.fixture(params=["dovecot", "no_qresync", "plain", "poor"])
def server_kind(request, monkeypatch):
    """Dovecot as it is (QRESYNC names expunges, LIST-STATUS gives every folder's status
    with the list), without QRESYNC (expunges found by comparing UIDs), plain: neither
    QRESYNC nor LIST-STATUS (a STATUS per folder), and poor: not even CONDSTORE (Courier,
    many hosting servers: flag changes show in no status item)."""
    hidden = {
        "dovecot": set(),
        "no_qresync": {b"QRESYNC"},
        "plain": {b"QRESYNC", b"LIST-STATUS"},
        "poor": {b"QRESYNC", b"LIST-STATUS", b"CONDSTORE", b"SPECIAL-USE"},
    }
    if hidden[request.param]:
        from mail.imap_smtp.connection import _PinnedIMAPClient

        original = _PinnedIMAPClient.capabilities

        def without(self):
            return tuple(c for c in original(self) if c not in hidden[request.param])

        monkeypatch.setattr(_PinnedIMAPClient, "capabilities", without)
    return request.param


def test_it_picks_up_flag_changes_and_expunges(synced_mailbox, server_kind):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="read me"), make_message(subject="delete me"))
    _sync(account)
    assert not Email.objects.filter(seen=True).exists()
    with mailbox.client() as client:
        client.select_folder("INBOX")
        uids = client.search(["SUBJECT", "read me"])
        client.add_flags(uids, [b"\\Seen"])
        client.delete_messages(client.search(["SUBJECT", "delete me"]))
        client.expunge()
    run = _sync(account)
    assert Email.objects.get(subject="read me").seen
    assert not EmailLocation.objects.filter(email__subject="delete me").exists()
    assert run.flag_changes == 1
    assert run.removed_locations == 1


def test_it_links_emails_to_contacts_and_companies(synced_mailbox):
    account, mailbox = synced_mailbox
    partner = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
    contact = Contact.objects.create(name="")
    ContactAddress.objects.create(contact=contact, address="peter@partner.test")
    other = Company.objects.create(name="Other", web_domain="other.test")
    mailbox.append(
        "INBOX",
        make_message(sender="Peter Partner <Peter@Partner.test>", to="someone@other.test"),
    )
    _sync(account)
    email = Email.objects.get()
    assert list(email.contacts.all()) == [contact]
    assert set(email.companies.all()) == {partner, other}
    contact.refresh_from_db()
    assert contact.name == "Peter Partner"  # enriched from the email
    assert not Contact.objects.exclude(pk=contact.pk).exists()  # no contacts made up


def test_it_stores_attachments_and_bodies(synced_mailbox, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    account, mailbox = synced_mailbox
    mailbox.append(
        "INBOX",
        make_message(
            subject="Ünïcode subject",
            body="plain text",
            html="<p>html <b>text</b></p>",
            attachment=("offer.pdf", b"%PDF-1.4 test"),
        ),
    )
    _sync(account)
    email = Email.objects.get()
    assert email.subject == "Ünïcode subject"
    assert "plain text" in email.text_body
    assert "<b>text</b>" in email.html_body
    attachment = email.attachments.get()
    assert (attachment.name, attachment.size) == ("offer.pdf", 13)
    assert attachment.file.read() == b"%PDF-1.4 test"


def test_it_compresses_the_stored_bodies_with_lz4(synced_mailbox):
    """sync 0003: lz4 costs the database several times less CPU than pglz."""
    account, mailbox = synced_mailbox
    words = " ".join(f"word{number % 300}" for number in range(4000))  # well above 2 KB
    mailbox.append("INBOX", make_message(subject="Long", body=words, html=f"<p>{words}</p>"))
    _sync(account)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_compression(text_body), pg_column_compression(html_body)"
            " FROM sync_email"
        )
        assert cursor.fetchall() == [("lz4", "lz4")]
    email = Email.objects.get()
    assert words in email.text_body and words in email.html_body


def test_it_ingests_every_corpus_message_without_losing_one(synced_mailbox, shared_dir):
    account, mailbox = synced_mailbox
    # Zero-byte files are skipped: IMAP cannot hold an empty message at all.
    corpus = [
        p for p in sorted((shared_dir / "corpora").rglob("*"))
        if p.is_file() and p.stat().st_size and p.name not in {"LICENSE", "README.md"}
        and p.suffix not in {".bmp", ".exr", ".gif", ".jpg", ".pbm", ".pgm", ".png", ".ppm",
                             ".ras", ".sgi", ".tiff", ".webp", ".xbm", ".aifc", ".aiff", ".au",
                             ".wav"}
    ]  # fmt: skip
    mailbox.append("INBOX", *(p.read_bytes() for p in corpus))
    with mailbox.client() as client:
        total = client.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"]
    assert total == len(corpus)
    run = _sync(account)
    assert EmailLocation.objects.count() == total
    assert run.new_locations == total
    # Broken messages are kept with their raw source and a note, never dropped.
    for email in Email.objects.exclude(problem=""):
        assert email.notes and email.original


def test_it_runs_one_sync_per_mailbox_at_a_time(synced_mailbox):
    account, _ = synced_mailbox
    MailboxSync.objects.create(
        account=account, claimed_until=datetime.now(UTC) + timedelta(minutes=5), claim_token="x"
    )
    assert mailbox_sync(account_id=account.pk) is None
    assert not SyncRun.objects.exists()


def test_it_marks_the_mailbox_for_its_owner_when_the_password_changed(synced_mailbox):
    account, _ = synced_mailbox
    account.set_password("changed-on-the-server")
    account.save()
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.FAILED
    state = MailboxSync.objects.get(account=account)
    assert state.health == MailboxSync.Health.NEEDS_ATTENTION
    assert "did not accept the login or password" in state.last_error
    assert state.claimed_until is None


def test_it_notices_an_expunge_hidden_by_an_append(synced_mailbox, server_kind):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="stays"), make_message(subject="goes"))
    _sync(account)
    with mailbox.client() as client:
        client.select_folder("INBOX")
        client.delete_messages(client.search(["SUBJECT", "goes"]))
        client.expunge()
        client.append("INBOX", make_message(subject="arrives"))
    run = _sync(account)
    assert run.removed_locations == 1
    assert sorted(EmailLocation.objects.values_list("email__subject", flat=True)) == [
        "arrives",
        "stays",
    ]


def test_it_creates_contacts_for_unknown_external_senders_only_when_asked(synced_mailbox):
    account, mailbox = synced_mailbox
    mailbox.append(
        "INBOX",
        make_message(sender="Nora New <nora@newclient.test>"),
        make_message(sender="Robot <no-reply@service.test>"),
        make_message(sender=f"Colleague <colleague@{account.address.split('@')[1]}>"),
    )
    _sync(account)
    assert not Contact.objects.exists()  # off by default

    SystemSetting.objects.update_or_create(
        code="CreateContactsForUnknownSenders", defaults={"value_type": "boolean", "value": "yes"}
    )
    mailbox.append("INBOX", make_message(sender="Olaf Other <olaf@otherclient.test>"))
    mailbox.append("INBOX", make_message(sender="Robot <noreply@service.test>"))
    _sync(account)
    created = Contact.objects.get()
    assert created.name == "Olaf Other"
    assert list(created.addresses.values_list("address", flat=True)) == ["olaf@otherclient.test"]
    assert list(Email.objects.get(from_address="olaf@otherclient.test").contacts.all()) == [created]


def test_it_notices_a_folder_deleted_on_the_server(synced_mailbox):
    account, mailbox = synced_mailbox
    mailbox.append("Old Project", make_message(subject="x"))
    _sync(account)
    with mailbox.client() as client:
        client.delete_folder("Old Project")
    _sync(account)
    assert not Folder.objects.get(account=account, path="Old Project").exists_on_server


def test_it_re_syncs_an_idle_mailbox_in_the_same_queries_however_many_folders(synced_mailbox):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message())
    _sync(account)
    with CaptureQueriesContext(connection) as few:
        _sync(account)
    for number in range(5):
        mailbox.append(f"Folder {number}", make_message())
    _sync(account)
    with CaptureQueriesContext(connection) as many:
        _sync(account)
    assert len(many) == len(few)


def test_it_bounds_each_fetch_batch_in_bytes_and_in_count():
    sizes = {1: 400, 2: 400, 3: 2_000, 4: 100, 5: 100, 6: 100, 7: 100}
    batches = list(size_batches([1, 2, 3, 4, 5, 6, 7, 8], sizes, max_bytes=1_000, max_count=3))
    # 3 is larger than the bound and goes alone; 8 has no known size (expunged).
    assert batches == [[1, 2], [3], [4, 5, 6], [7, 8]]


def test_it_fetches_a_folder_of_large_messages_in_small_batches(synced_mailbox, monkeypatch):
    account, mailbox = synced_mailbox
    big = [make_message(subject=f"big {n}", body="x" * 50_000) for n in range(6)]
    mailbox.append("INBOX", *big)
    monkeypatch.setattr(engine, "BATCH_BYTES", 120_000)
    fetched = []
    original = engine.AccountSyncer._fetch_and_parse

    def counting(self, uids, sizes):
        fetched.append(len(uids))
        return original(self, uids, sizes)

    monkeypatch.setattr(engine.AccountSyncer, "_fetch_and_parse", counting)
    _sync(account)
    assert fetched == [2, 2, 2]
    assert Email.objects.count() == 6


def test_it_logs_neither_message_bodies_nor_the_password_at_debug_level(synced_mailbox, caplog):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(body="confidential-offer-figures"))
    caplog.set_level(logging.DEBUG)
    _sync(account)
    assert Email.objects.get().text_body.startswith("confidential-offer-figures")
    assert "confidential-offer-figures" not in caplog.text
    assert "sync-secret" not in caplog.text


def test_it_reads_the_uid_ranges_of_vanished_responses():
    from sync.engine import _uid_set_ranges

    ranges = _uid_set_ranges([b"(EARLIER) 41,43:116,200", b"(EARLIER) 7"])
    assert ranges == [(41, 41), (43, 116), (200, 200), (7, 7)]


def test_it_reads_every_folders_status_with_the_list_when_the_server_can(
    synced_mailbox, monkeypatch
):
    from imapclient import IMAPClient

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="one"))
    mailbox.append("Clients/Acme", make_message(subject="two"))
    _sync(account)
    asked = []
    original = IMAPClient.folder_status
    monkeypatch.setattr(
        IMAPClient,
        "folder_status",
        lambda self, *a, **k: asked.append(a) or original(self, *a, **k),
    )
    mailbox.append("Clients/Acme", make_message(subject="three"))

    run = _sync(account)

    assert asked == []  # LIST-STATUS answered for every folder
    assert run.new_emails == 1
    assert Email.objects.filter(subject="three").exists()


def test_it_reads_fetch_responses_in_any_item_order():
    from sync.engine import fetched_bodies

    data = [
        (b"1 (UID 11 FLAGS (\\Seen \\Answered) BODY[] {5}", b"first"),
        b")",
        b"7 (FLAGS (\\Seen) UID 99)",  # volunteered about another message: no body
        (b"2 (BODY[] {6}", b"second"),
        b" UID 12 FLAGS (\\Flagged))",
        (b"3 (UID 13 MODSEQ (4) BODY[] {5}", b"third"),
        b" FLAGS (\\SEEN))",
    ]
    assert fetched_bodies(data) == {
        11: (b"first", True),
        12: (b"second", False),
        13: (b"third", True),
    }


def test_it_keeps_the_read_flag_of_each_message_on_the_first_sync(synced_mailbox):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="read"), flags=[b"\\Seen"])
    mailbox.append("INBOX", make_message(subject="unread"))
    _sync(account)
    assert dict(Email.objects.values_list("subject", "seen")) == {"read": True, "unread": False}


def test_it_stores_a_message_whose_text_decodes_to_nul(synced_mailbox):
    # PostgreSQL text cannot hold NUL; "=00" in quoted-printable or an encoded word
    # decodes to it. Such a message must not fail its batch on every run.
    account, mailbox = synced_mailbox
    raw = (
        b"From: Peter Partner <peter@partner.test>\r\nTo: alice@example.test\r\n"
        b"Subject: =?utf-8?q?Null=00byte?=\r\nMessage-ID: <nul@partner.test>\r\n"
        b"Date: " + datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000").encode() + b"\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nbefore=00after\r\n"
    )
    mailbox.append("INBOX", raw)
    mailbox.append("INBOX", make_message(subject="the next one"))

    run = _sync(account)

    assert run.state == SyncRun.State.SUCCEEDED, run.error
    email = Email.objects.get(account=account, message_id="nul@partner.test")
    assert email.subject == "Null\ufffdbyte" and "before\ufffdafter" in email.text_body
    assert Email.objects.filter(account=account, subject="the next one").exists()


def test_it_renews_a_claim_only_while_it_holds_it(synced_mailbox):
    """Issue 15, point 14: the renewal is conditional on the run's own token."""
    from django.utils import timezone

    from sync.services import ClaimLost, _claim, _renew

    account, _mailbox = synced_mailbox
    token, _ = _claim(account.pk)
    _renew(account.pk, token)
    # The lease ran out (a stalled worker) and another run took the mailbox.
    MailboxSync.objects.filter(account=account).update(claimed_until=timezone.now())
    other, left_behind = _claim(account.pk)
    assert other and other != token and left_behind
    held_until = MailboxSync.objects.get(account=account).claimed_until

    with pytest.raises(ClaimLost):
        _renew(account.pk, token)

    state = MailboxSync.objects.get(account=account)
    assert (state.claim_token, state.claimed_until) == (other, held_until)


def test_it_stops_a_run_whose_claim_another_run_took(synced_mailbox, monkeypatch):
    """A run that outlived its lease finds out at its next renewal (before it stores a
    batch, or while it waits for a fetch) and stops, leaving the mailbox to the run that
    holds it: taken before its first batch, it stores nothing."""
    from django.db import connection

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *[make_message(subject=f"m {n}", body="x" * 50_000) for n in range(6)])
    monkeypatch.setattr(engine, "BATCH_BYTES", 120_000)  # three batches of two
    stolen = []

    def take_over_after_the_first_batch(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not stolen and sql.startswith("INSERT") and '"sync_syncrun"' in sql:
            claim_taken_by_another_run(account.pk, context["connection"])
            stolen.append(True)
        return result

    with connection.execute_wrapper(take_over_after_the_first_batch):
        run = mailbox_sync(account_id=account.pk)

    assert stolen
    assert run.state == SyncRun.State.INTERRUPTED
    assert "another download of the mailbox took over" in run.error
    assert Email.objects.filter(account=account).count() == 0
    state = MailboxSync.objects.get(account=account)
    assert state.claim_token == "other-run" and state.claimed_until is not None
    assert state.last_error == "" and state.health == MailboxSync.Health.OK


def test_it_stores_no_batch_fetched_after_another_run_took_its_claim(synced_mailbox, monkeypatch):
    """Issue 15, point 14, against Dovecot: the claim is taken while the second batch is
    being fetched. The run stops before storing it; the one that holds the claim now
    downloads the rest, and every message is stored once."""

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *[make_message(subject=f"m {n}", body="x" * 50_000) for n in range(6)])
    monkeypatch.setattr(engine, "BATCH_BYTES", 120_000)  # three batches of two
    fetched = engine.AccountSyncer._fetched

    def taken_during_the_second_fetch(self, uids):
        for number, batch in enumerate(fetched(self, uids)):
            if number == 1:
                claim_taken_by_another_run(account.pk)
            yield batch

    monkeypatch.setattr(engine.AccountSyncer, "_fetched", taken_during_the_second_fetch)
    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.INTERRUPTED
    assert Email.objects.filter(account=account).count() == 2  # the first batch only
    monkeypatch.setattr(engine.AccountSyncer, "_fetched", fetched)
    # The other run (its lease over) takes the mailbox and finishes the download.
    MailboxSync.objects.filter(account=account).update(claimed_until=None)
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.SUCCEEDED
    subjects = list(Email.objects.filter(account=account).values_list("subject", flat=True))
    assert sorted(subjects) == [f"m {n}" for n in range(6)]


def test_it_lets_only_the_claim_holder_judge_a_folder_renumbered(synced_mailbox, monkeypatch):
    """A run that lost its claim while it waited for the server compares the folder with
    what it read at its start; were it to judge the folder renumbered then, it would
    delete the locations the new holder stored. It stops first."""
    from imapclient import IMAPClient

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="kept"))
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.SUCCEEDED
    inbox = Folder.objects.get(account=account, path="INBOX")
    located = EmailLocation.objects.filter(folder=inbox).count()
    assert located == 1
    # What a stale run sees: a UIDVALIDITY that is not the server's any more.
    Folder.objects.filter(pk=inbox.pk).update(uidvalidity=inbox.uidvalidity + 1)
    select = IMAPClient.select_folder

    def taken_while_selecting(client, *args, **kwargs):
        claim_taken_by_another_run(account.pk)
        return select(client, *args, **kwargs)

    monkeypatch.setattr(IMAPClient, "select_folder", taken_while_selecting)
    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.INTERRUPTED
    assert EmailLocation.objects.filter(folder=inbox).count() == located
