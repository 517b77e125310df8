"""The Sent copy on other families of servers, each a real Dovecot configured to behave
like one (../shared/notes/imap-server-families.md): the Sent folder is found by its
special-use flag in any case, else by a common name inside the personal namespace, else
made there; without NAMESPACE the namespace is inferred from the folder list."""

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest
from imapclient.exceptions import IMAPClientError

from sending.message import Draft
from sending.models import OutgoingEmail
from sending.services import outgoing_copy_store, outgoing_create, outgoing_send
from tests.factories import EmailAccountFactory, EmailProviderFactory
from tests.mailbox import Mailbox
from tests.servers.dovecot import Dovecot, DovecotUser

PASSWORD = "family-secret"
USERS_PER_FAMILY = 8

FAMILIES = {
    # Courier 5: everything under "INBOX." with ".", no SPECIAL-USE, no CONDSTORE.
    "courier": {
        "capabilities": "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT "
        "THREAD=REFERENCES SORT QUOTA IDLE",
        "namespace_prefix": "INBOX.",
        "separator": ".",
        "special_use": {},
    },
    # Cyrus 3 as Debian ships it: "INBOX." with ".", special-use flags in lower case.
    "cyrus": {
        "namespace_prefix": "INBOX.",
        "separator": ".",
        "special_use": {"Sent Items": "\\sent"},
    },
    # An older or smaller server: "INBOX." with ".", and no NAMESPACE to say so.
    "no_namespace": {
        "capabilities": "IMAP4rev1 UIDPLUS IDLE",
        "namespace_prefix": "INBOX.",
        "separator": ".",
        "special_use": {},
    },
}


@pytest.fixture(scope="module")
def families(oauth_server):
    servers, roots = {}, []
    try:
        for family, options in FAMILIES.items():
            root = Path(tempfile.mkdtemp(prefix=f"mailsetup-{family}-"))
            roots.append(root)
            users = [
                DovecotUser(f"{family}-{n}@example.test", PASSWORD) for n in range(USERS_PER_FAMILY)
            ]
            servers[family] = Dovecot(root=root, users=users, **options).start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


_next_user = {family: itertools.count() for family in FAMILIES}


@pytest.fixture
def mailbox_on(families, smtp_servers, mail_trust, monkeypatch):
    """(account, mailbox) of a fresh user on the family's Dovecot; it sends through the
    suite's aiosmtpd."""

    def make(family: str):
        number = next(_next_user[family])
        assert number < USERS_PER_FAMILY, "raise USERS_PER_FAMILY"
        address = f"{family}-{number}@example.test"
        monkeypatch.setitem(smtp_servers["starttls"].users, address, PASSWORD)
        provider = EmailProviderFactory(
            name=f"{family} mail", imap_host="localhost", imap_port=families[family].imaps_port,
            imap_security="ssl", smtp_host="localhost", smtp_port=smtp_servers["starttls"].port,
            smtp_security="starttls",
        )  # fmt: skip
        account = EmailAccountFactory(provider=provider, address=address, password=PASSWORD)
        return account, Mailbox(families[family], address, PASSWORD)

    return make


def _send(account, outbox, capture, subject="Offer") -> OutgoingEmail:
    draft = Draft(
        sender=account.address, sender_name="", subject=subject, text="Hello",
        to=[{"name": "", "address": "peter@partner.test"}], cc=[], bcc=[],
    )  # fmt: skip
    with capture():
        outgoing = outgoing_create(author=account.owner, account=account, draft=draft)
    with capture():
        outgoing_send(outgoing_id=outgoing.pk)
    outgoing_copy_store(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.SENT
    assert outgoing.sent_copy == OutgoingEmail.Copy.STORED, outgoing.sent_copy_error
    return outgoing


def _in(mailbox, folder: str, outgoing) -> list[int]:
    with mailbox.client() as client:
        client.select_folder(folder, readonly=True)
        uids = client.search(["HEADER", "Message-ID", outgoing.message_id])
        assert all(b"\\Seen" in flags for flags in client.get_flags(uids).values())
        return uids


def _folders(mailbox) -> list[str]:
    with mailbox.client() as client:
        return sorted(name for _flags, _delimiter, name in client.list_folders())


def test_it_makes_the_sent_folder_inside_courier_s_namespace(
    db, mailbox_on, outbox, django_capture_on_commit_callbacks
):
    account, mailbox = mailbox_on("courier")
    with mailbox.client() as client, pytest.raises(IMAPClientError, match="nonexistent namespace"):
        client.create_folder("Sent")  # what the Sent copy used to try here

    first = _send(account, outbox, django_capture_on_commit_callbacks)
    second = _send(account, outbox, django_capture_on_commit_callbacks, subject="Second")

    assert (first.sent_copy_error, second.sent_copy_error) == ("in INBOX.Sent", "in INBOX.Sent")
    assert _folders(mailbox) == ["INBOX", "INBOX.Sent"]
    assert len(_in(mailbox, "INBOX.Sent", first)) == len(_in(mailbox, "INBOX.Sent", second)) == 1
    with mailbox.client() as client:
        assert "INBOX.Sent" in [name for _f, _d, name in client.list_sub_folders()]


def test_it_finds_a_sent_folder_by_its_common_name_inside_the_namespace(
    db, mailbox_on, outbox, django_capture_on_commit_callbacks
):
    account, mailbox = mailbox_on("courier")
    mailbox.create("INBOX.Sent Messages")  # as Apple Mail names it

    outgoing = _send(account, outbox, django_capture_on_commit_callbacks)

    assert outgoing.sent_copy_error == "in INBOX.Sent Messages"
    assert _folders(mailbox) == ["INBOX", "INBOX.Sent Messages"]
    assert len(_in(mailbox, "INBOX.Sent Messages", outgoing)) == 1


def test_it_finds_cyrus_s_lowercase_sent_flag_before_a_common_name(
    db, mailbox_on, outbox, django_capture_on_commit_callbacks
):
    account, mailbox = mailbox_on("cyrus")
    mailbox.create("INBOX.Sent Items")  # marked \sent, in lower case, by the server
    mailbox.create("INBOX.Sent")  # a common name, not marked
    with mailbox.client() as client:
        flags = {name: flags for flags, _d, name in client.list_folders()}
    assert b"\\sent" in flags["INBOX.Sent Items"] and b"\\Sent" not in flags["INBOX.Sent Items"]

    outgoing = _send(account, outbox, django_capture_on_commit_callbacks)

    assert outgoing.sent_copy_error == "in INBOX.Sent Items"
    assert len(_in(mailbox, "INBOX.Sent Items", outgoing)) == 1
    assert _in(mailbox, "INBOX.Sent", outgoing) == []


def test_it_makes_the_sent_folder_under_cyrus_s_inbox_when_none_is_marked(
    db, mailbox_on, outbox, django_capture_on_commit_callbacks
):
    account, mailbox = mailbox_on("cyrus")
    outgoing = _send(account, outbox, django_capture_on_commit_callbacks)
    assert outgoing.sent_copy_error == "in INBOX.Sent"
    assert len(_in(mailbox, "INBOX.Sent", outgoing)) == 1


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], "INBOX.Sent"),  # a fresh mailbox lists only INBOX: "Sent" is refused, then this
        (["INBOX.Drafts"], "INBOX.Sent"),  # the listing shows the namespace
        (["INBOX.Drafts", "INBOX.Sent Mail"], "INBOX.Sent Mail"),
    ],
)
def test_it_infers_the_namespace_from_the_listing_without_namespace(
    db, mailbox_on, outbox, django_capture_on_commit_callbacks, existing, expected
):
    account, mailbox = mailbox_on("no_namespace")
    with mailbox.client() as client:
        assert not client.has_capability("NAMESPACE")
    for folder in existing:
        mailbox.create(folder)

    outgoing = _send(account, outbox, django_capture_on_commit_callbacks)

    assert outgoing.sent_copy_error == f"in {expected}"
    assert _folders(mailbox) == sorted({"INBOX", expected, *existing})
    assert len(_in(mailbox, expected, outgoing)) == 1


def test_it_does_not_store_a_second_copy_when_an_earlier_try_stored_it(
    db, mailbox_on, outbox, django_capture_on_commit_callbacks
):
    """A copy whose answer was lost (the worker died after the APPEND): the next try
    finds it by its Message-ID instead of storing it twice."""
    account, mailbox = mailbox_on("courier")
    outgoing = _send(account, outbox, django_capture_on_commit_callbacks)
    OutgoingEmail.objects.filter(pk=outgoing.pk).update(sent_copy=OutgoingEmail.Copy.PENDING)

    outgoing_copy_store(outgoing_id=outgoing.pk)

    outgoing.refresh_from_db()
    assert (outgoing.sent_copy, outgoing.sent_copy_attempts) == (OutgoingEmail.Copy.STORED, 2)
    assert len(_in(mailbox, "INBOX.Sent", outgoing)) == 1
