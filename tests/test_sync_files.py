"""Attachment and original files: generated names, gone with a rolled-back transaction,
swept when a killed worker left them, and downloads named as the sender named them."""

import os
import time
from pathlib import Path

import pytest
from django.db import DataError, transaction
from django.urls import reverse

from sync import store
from sync.files import WrittenFiles, files_for_transaction, orphans_delete, safe_download_name
from sync.models import Attachment, Email, SyncRun
from sync.services import mailbox_sync
from tests.factories import EmailAccountFactory
from tests.mailbox import make_message


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def media(settings, tmp_path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def test_it_stores_attachments_under_generated_names_and_downloads_them_by_theirs(
    synced_mailbox, media, client
):
    account, mailbox = synced_mailbox
    names = ["/home/user/scan.jpg", "..", "!!!", "★", "😀", "()", "C:\\Users\\x\\a.pdf"]
    for name in names:
        mailbox.append(
            "INBOX", make_message(subject=name, attachment=(name, b"data " + name.encode()))
        )
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.count() == len(names)
    stored = {a.name: a for a in Attachment.objects.all()}
    assert set(stored) == set(names)
    for attachment in stored.values():
        path = Path(attachment.file.path)
        assert path.is_relative_to(media / "attachments") and len(path.stem) == 32
    client.force_login(account.owner)
    scan = stored["/home/user/scan.jpg"]
    answer = client.get(reverse("sync:attachment", args=[scan.email_id, scan.pk]))
    assert answer["Content-Disposition"] == 'attachment; filename="scan.jpg"'
    assert b"".join(answer.streaming_content) == b"data /home/user/scan.jpg"
    star = stored["★"]
    answer = client.get(reverse("sync:attachment", args=[star.email_id, star.pk]))
    assert answer["Content-Disposition"] == "attachment; filename*=utf-8''%E2%98%85"


def test_it_names_a_download_safely():
    assert safe_download_name("/home/user/scan.jpg") == "scan.jpg"
    assert safe_download_name("C:\\Users\\x\\a.pdf") == "a.pdf"
    assert safe_download_name("..") == "attachment"
    assert safe_download_name("a\x00b\r\nc.txt") == "abc.txt"
    assert safe_download_name("Präsentation.pdf") == "Präsentation.pdf"


def test_it_removes_the_files_of_a_batch_that_rolled_back(synced_mailbox, media, monkeypatch):
    account, mailbox = synced_mailbox
    mailbox.append(
        "INBOX",
        *(make_message(subject=f"m{n}", attachment=(f"f{n}.bin", b"x" * 100)) for n in range(3)),
    )
    real = store.emails_link
    failures = []

    def failing_link(**kwargs):
        # After the batch's files were written: every attempt of the batch fails here,
        # then each message alone, which ends as "unreadable" with its original kept.
        failures.append(1)
        raise DataError("refused")

    monkeypatch.setattr(store, "emails_link", failing_link)
    run = mailbox_sync(account_id=account.pk)
    assert failures and run.state == SyncRun.State.SUCCEEDED
    # Only the three originals remain: every attachment written by a failed attempt went.
    assert Attachment.objects.count() == 0
    left = _files(media)
    assert len(left) == 3 and all(name.startswith("originals/") for name in left)
    assert {str(e.original) for e in Email.objects.all()} == left
    monkeypatch.setattr(store, "emails_link", real)


def test_it_leaves_to_the_outer_transaction_what_an_inner_one_wrote(media):
    with pytest.raises(RuntimeError), files_for_transaction(), transaction.atomic():
        with files_for_transaction() as inner, transaction.atomic():
            inner.save("attachments", b"inner")
        assert len(_files(media)) == 1
        raise RuntimeError("the outer transaction fails")
    assert _files(media) == set()


def test_it_sweeps_files_no_row_names(db, media):
    files = WrittenFiles()
    orphan = files.save("attachments", b"left by a killed worker")
    young = files.save("attachments", b"a transaction may still commit this one")
    original = files.save_original(b"Subject: kept\r\n\r\nbody")
    named = files.save("attachments", b"named")
    email = Email.objects.create(account=EmailAccountFactory(), message_key="k", original=original)
    Attachment.objects.create(email=email, file=named, name="n", content_type="x", size=5)
    old = time.time() - 2 * 3600
    for name in (orphan, original, named):
        os.utime(media / name, (old, old))
    assert orphans_delete() == 1
    assert _files(media) == {young, original, named}


def test_it_stores_a_sent_email_once_whoever_comes_first(synced_mailbox, media):
    # sending's "sent email on the timeline" and the download of its Sent copy are one
    # email, made by the store: the second to come finds the first's.
    from crm.models import Contact, ContactAddress

    account, mailbox = synced_mailbox
    peter = Contact.objects.create(name="Peter")
    ContactAddress.objects.create(contact=peter, address="peter@partner.test")
    raw = make_message(
        subject="Offer", sender=f"Owner <{account.address}>", to="peter@partner.test",
        message_id="<offer-1@example.test>", attachment=("offer.pdf", b"%PDF offer"),
    )  # fmt: skip
    sent = {
        "account": account, "raw": raw, "message_id": "offer-1@example.test",
        "to": [{"address": "peter@partner.test", "name": "Peter"}], "cc": [], "bcc": [],
        "in_reply_to": "", "references": "",
    }  # fmt: skip
    with files_for_transaction() as files, transaction.atomic():
        email = store.sent_email_store(**sent, files=files)
    with files_for_transaction() as files, transaction.atomic():
        again = store.sent_email_store(**sent, files=files)
    assert again.pk == email.pk and Email.objects.count() == 1
    assert Attachment.objects.get().email_id == email.pk  # made once
    assert list(email.contacts.all()) == [peter]
    # The Sent copy's download adds its folder to the same email.
    mailbox.append("INBOX", raw)
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert Email.objects.count() == 1 and email.locations.count() == 1
    assert Attachment.objects.count() == 1
