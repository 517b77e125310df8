"""Large messages, read part by part (sync/large.py), on the suite's Dovecot: the same
email as the whole message would give, attachments byte for byte, and above the size
limit the text with the attachments listed."""

import gzip
import hashlib
import random
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from sync import engine
from sync.models import Email, SyncRun
from sync.parsing import parse_message
from sync.services import mailbox_sync
from systemsettings.models import SystemSetting


def _sync(account):
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    return run


def _noise(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _large_message(*, attachment: int = 4_000_000) -> tuple[bytes, dict[str, bytes]]:
    forwarded = EmailMessage()
    forwarded["Subject"] = "The original offer"
    forwarded["From"] = "Olga <olga@partner.test>"
    forwarded["Message-ID"] = make_msgid(domain="partner.test")
    forwarded.set_content("Olga's own words.")
    forwarded.add_attachment(
        _noise(200_000, 2), maintype="application", subtype="pdf", filename="inner.pdf"
    )
    message = EmailMessage()
    message["Subject"] = "Großes Angebot"
    message["From"] = "Peter Partner <peter@partner.test>"
    message["To"] = "alice@example.test"
    message["Message-ID"] = make_msgid(domain="partner.test")
    message.set_content("The text before the files.")
    message.add_alternative("<p>The <b>text</b> before the files.</p>", subtype="html")
    message.add_attachment(
        _noise(attachment), maintype="application", subtype="zip", filename="Präsentation.zip"
    )
    message.add_attachment(b"small one", maintype="text", subtype="csv", filename="rows.csv")
    message.add_attachment(forwarded)
    files = {
        "Präsentation.zip": _noise(attachment),
        "rows.csv": b"small one",
        "inner.pdf": _noise(200_000, 2),
    }
    return message.as_bytes(), files


def _stored_files(email) -> dict[str, bytes]:
    return {a.name: a.file.read() for a in email.attachments.exclude(file="")}


@pytest.fixture
def spool(settings, tmp_path):
    settings.SYNC_SPOOL_DIR = str(tmp_path / "spool")
    (tmp_path / "spool").mkdir()
    return tmp_path / "spool"


def test_it_stores_a_large_message_part_by_part_as_the_whole_would_be(
    synced_mailbox, settings, tmp_path, spool
):
    settings.MEDIA_ROOT = tmp_path
    account, mailbox = synced_mailbox
    raw, files = _large_message()
    assert len(raw) > engine.LARGE
    mailbox.append("INBOX", raw)
    _sync(account)
    email = Email.objects.get()
    whole = parse_message(raw)
    assert (email.subject, email.from_address) == (whole.subject, whole.from_address)
    assert "The text before the files." in email.text_body
    assert "<b>text</b>" in email.html_body
    assert "Olga's own words." in email.text_body
    assert not email.problem, email.notes
    stored = _stored_files(email)
    assert {n: hashlib.sha256(d).hexdigest() for n, d in stored.items()} == {
        n: hashlib.sha256(d).hexdigest() for n, d in files.items()
    }
    assert email.size == len(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert not list(spool.iterdir())  # no spooled part left behind


def test_it_reads_a_single_part_large_message(synced_mailbox, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    account, mailbox = synced_mailbox
    message = EmailMessage()
    message["Subject"] = "Just a file"
    message["From"] = "scanner@partner.test"
    message.set_content(_noise(3_500_000, 5), maintype="application", subtype="pdf")
    mailbox.append("INBOX", message.as_bytes())
    _sync(account)
    email = Email.objects.get()
    attachment = email.attachments.get()
    assert attachment.file.read() == _noise(3_500_000, 5)
    assert attachment.content_type == "application/pdf"


def test_it_lists_the_attachments_of_a_message_above_the_size_limit(
    synced_mailbox, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    SystemSetting.objects.update_or_create(
        code="MaxMessageSizeMB", defaults={"value_type": "integer", "value": "1"}
    )
    account, mailbox = synced_mailbox
    raw, _files = _large_message(attachment=3_000_000)
    mailbox.append("INBOX", raw)
    _sync(account)
    email = Email.objects.get()
    assert email.problem == Email.Problem.INCOMPLETE
    assert "above the limit of 1 MB" in email.notes and "MaxMessageSizeMB" in email.notes
    assert "The text before the files." in email.text_body
    listed = email.attachments.get(name="Präsentation.zip")
    assert not listed.file and 2_900_000 < listed.size < 3_100_000
    with gzip.open(email.original.path) as original:
        kept = original.read()
    assert len(kept) == 1_000_000
    with mailbox.client() as client:
        client.select_folder("INBOX")
        (server,) = client.fetch(client.search("ALL"), ["BODY.PEEK[]"]).values()
    assert kept == server[b"BODY[]"][:1_000_000]


def test_it_gives_the_same_email_part_by_part_as_whole(
    synced_mailbox, monkeypatch, settings, tmp_path
):
    """Every message of a varied set read both ways: the text, the HTML and every
    attachment agree (the part-by-part path is used for messages above 3 MB only; here it
    is forced for all)."""
    settings.MEDIA_ROOT = tmp_path
    account, mailbox = synced_mailbox
    messages = []
    for number in range(6):
        message = EmailMessage()
        message["Subject"] = f"Variant {number} — Grüße"
        message["From"] = "peter@partner.test"
        message["Message-ID"] = make_msgid(idstring=str(number), domain="partner.test")
        message.set_content("Plain text " * (number + 1))
        if number % 2:
            message.add_alternative(f"<p>HTML {number}</p>", subtype="html")
        for index in range(number % 3):
            message.add_attachment(
                _noise(40_000 + index, number), maintype="image", subtype="png",
                filename=f"image-{index}.png",
            )  # fmt: skip
        if number == 5:
            inner = EmailMessage()
            inner["Subject"] = "inner"
            inner.set_content("inner text")
            message.add_attachment(inner)
        messages.append(message.as_bytes())
    mailbox.append("INBOX", *messages)
    monkeypatch.setattr(engine, "LARGE", 0)
    # A message is read part by part only in a batch of its own.
    monkeypatch.setattr(engine, "BATCH", 1)
    read_in_parts, large = [], engine.AccountSyncer.large

    def counting(self, uid, size):
        read_in_parts.append(uid)
        return large(self, uid, size)

    monkeypatch.setattr(engine.AccountSyncer, "large", counting)
    _sync(account)
    assert len(read_in_parts) == len(messages)
    assert Email.objects.count() == len(messages)
    for raw in messages:
        whole = parse_message(raw)
        email = Email.objects.get(message_id=whole.message_id)
        assert email.subject == whole.subject
        assert email.text_body.strip() == whole.text_body.strip()
        assert email.html_body.strip() == whole.html_body.strip()
        assert _stored_files(email) == {a.name: a.data for a in whole.attachments}


def test_it_leaves_no_spooled_part_behind_when_the_connection_breaks(
    synced_mailbox, test_provider, dovecot, spool, settings, tmp_path
):
    from sync.services import TransientSyncError
    from tests.servers.proxy import CuttingProxy

    settings.MEDIA_ROOT = tmp_path / "media"
    account, mailbox = synced_mailbox
    raw, _files = _large_message(attachment=3_500_000)
    mailbox.append("INBOX", raw)
    # Cut once the first megabytes of the large part have come (the structure, the
    # header, the small parts and some chunks), then relay faithfully.
    proxy = CuttingProxy(dovecot.imaps_port, cuts=1, low=2_500_000, high=2_600_000)
    test_provider.imap_port = proxy.port
    test_provider.save()
    try:
        with pytest.raises(TransientSyncError):
            mailbox_sync(account_id=account.pk)
        assert proxy.cut_count == 1
        assert not list(spool.iterdir())
        _sync(account)
    finally:
        proxy.close()
    assert Email.objects.get().attachments.exclude(file="").count() == 3
    assert not list(spool.iterdir())
