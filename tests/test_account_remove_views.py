"""Removing a mailbox from its settings page: keep or delete its emails."""

from pathlib import Path

from django.urls import reverse

from accounts.models import AccountChange, EmailAccount
from accounts.selectors import accounts_for_user
from crm.models import Contact, ContactAddress
from sharing.models import MailboxGrant
from sharing.selectors import emails_for_panel, emails_for_timeline, sendable_mailboxes
from sync.models import Attachment, Email, EmailLocation, Folder
from sync.services import mailbox_sync, mailboxes_due
from tests.factories import EmailAccountFactory, UserFactory
from tests.mailbox import make_message

HTMX = {"HTTP_HX_REQUEST": "true"}


def _remove(client, account, choice, **headers):
    data = {"emails": choice} if choice else {}
    return client.post(reverse("accounts:remove", args=[account.pk]), data, **headers)


def test_it_keeps_the_emails_on_timelines_and_forgets_the_secret(client, synced_mailbox):
    account, mailbox = synced_mailbox
    contact = Contact.objects.create(name="Pat")
    ContactAddress.objects.create(contact=contact, address="pat@partner.test")
    mailbox.append("INBOX", make_message(subject="offer", sender="Pat <pat@partner.test>"))
    mailbox_sync(account_id=account.pk)
    client.force_login(account.owner)
    response = _remove(client, account, "keep", **HTMX)
    assert response.headers["HX-Redirect"] == reverse("accounts:list")
    account.refresh_from_db()
    assert account.removed_at is not None
    assert account.password_encrypted == ""
    assert not accounts_for_user(account.owner).exists()
    assert not sendable_mailboxes(account.owner).exists()
    # The emails stay where the CRM shows them; the mailbox no longer syncs.
    email = Email.objects.get(subject="offer")
    assert list(emails_for_timeline(account.owner, contact=contact)) == [email]
    assert not emails_for_panel(account.owner).exists()
    assert account.pk not in mailboxes_due()
    assert mailbox_sync(account_id=account.pk) is None
    assert client.get(reverse("accounts:settings", args=[account.pk])).status_code == 404
    removed = AccountChange.objects.get(field="removed")
    assert (removed.address, removed.new_value) == (account.address, "emails kept")
    # Nothing on the server was touched.
    with mailbox.client() as imap:
        assert imap.folder_status("INBOX", [b"MESSAGES"])[b"MESSAGES"] == 1


def test_it_resumes_where_it_stopped_when_the_address_is_added_again(client, synced_mailbox):
    from accounts.services import _account_save
    from providers.addresses import normalize_address

    account, mailbox = synced_mailbox
    type(account).objects.filter(pk=account.pk).update(shared_access=True)
    MailboxGrant.objects.create(account=account, user=UserFactory(), can_send=True)
    mailbox.append("INBOX", make_message(subject="first"))
    mailbox_sync(account_id=account.pk)
    client.force_login(account.owner)
    _remove(client, account, "keep")
    mailbox.append("INBOX", make_message(subject="second"))
    revived = _account_save(
        account.owner, account.provider, normalize_address(account.address),
        account.address, "sync-secret",
    )  # fmt: skip
    assert revived.pk == account.pk and revived.removed_at is None
    # Its grants are kept, but coming back does not hand anyone their rights again.
    assert not revived.shared_access and revived.grants.count() == 1
    run = mailbox_sync(account_id=account.pk)
    # Only the new email is downloaded: the kept one is not fetched or stored again.
    assert run.new_emails == 1
    assert sorted(Email.objects.values_list("subject", flat=True)) == ["first", "second"]


def test_it_deletes_the_emails_and_their_files_when_asked(
    client, synced_mailbox, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.MEDIA_ROOT = tmp_path
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="with file", attachment=("a.pdf", b"%PDF")))
    mailbox_sync(account_id=account.pk)
    stored = Attachment.objects.get().file.path
    client.force_login(account.owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = _remove(client, account, "delete")
    assert response.status_code == 302
    assert not EmailAccount.objects.filter(pk=account.pk).exists()
    assert not Email.objects.exists() and not EmailLocation.objects.exists()
    assert not Folder.objects.exists()
    assert not Path(stored).exists()
    assert AccountChange.objects.get(field="removed").new_value == "emails deleted"


def test_it_hands_the_default_to_the_next_mailbox(client, db):
    user = UserFactory()
    default = EmailAccountFactory(owner=user, is_default_sender=True, address="a@example.test")
    other = EmailAccountFactory(owner=user, address="b@example.test")
    client.force_login(user)
    _remove(client, default, "delete")
    other.refresh_from_db()
    assert other.is_default_sender


def test_it_takes_away_a_removed_mailbox_s_notification(client, db):
    # "demo@… is connected. What next?" stayed on the Email page after the mailbox was
    # removed, its buttons leading to pages that no longer exist.
    from accounts.models import AccountNotification

    kept = EmailAccountFactory(address="kept@example.test")
    account = EmailAccountFactory(owner=kept.owner, address="gone@example.test")
    for mailbox in (kept, account):
        AccountNotification.objects.create(
            account=mailbox, kind=AccountNotification.Kind.ACCOUNT_ADDED
        )
    client.force_login(account.owner)
    assert (
        "<strong>gone@example.test</strong> is connected"
        in client.get(reverse("accounts:email")).text
    )
    _remove(client, account, "keep")
    page = client.get(reverse("accounts:email")).text
    assert "<strong>gone@example.test</strong> is connected" not in page
    assert "<strong>kept@example.test</strong> is connected" in page
    # Dismissed with it: added again, it would come back beside the new one.
    assert AccountNotification.objects.get(account=account).dismissed_at is not None


def test_it_asks_what_to_do_with_the_emails(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    for headers in (HTMX, {}):
        body = _remove(client, account, "", **headers).content.decode()
        assert "Downloaded emails: Choose whether to keep or delete the downloaded emails." in body
        assert 'id="remove-error" tabindex="-1" autofocus>' in body
        # The browser asks first (before "Remove …?"): a choice is required.
        assert 'name="emails" value="keep" required>' in body
    assert EmailAccount.objects.get(pk=account.pk).removed_at is None


def test_it_hides_another_users_mailbox(client, db):
    account = EmailAccountFactory()
    client.force_login(UserFactory())
    assert _remove(client, account, "delete").status_code == 404
    assert EmailAccount.objects.filter(pk=account.pk).exists()


def test_it_deletes_the_files_only_once_the_removal_commits(
    synced_mailbox, settings, tmp_path, django_capture_on_commit_callbacks
):
    # accounts knows nothing of sync's files: sync hears accounts.signals.mailbox_deleting
    # and deletes them after the commit; a removal that rolls back keeps every one.
    import pytest
    from django.db import transaction

    from accounts.services import account_remove

    settings.MEDIA_ROOT = tmp_path
    account, mailbox = synced_mailbox
    mailbox.append(
        "INBOX",
        make_message(subject="a", attachment=("a.pdf", b"%PDF")),
        make_message(subject="b", attachment=("b.txt", b"b")),
    )
    mailbox_sync(account_id=account.pk)
    files = [Path(a.file.path) for a in Attachment.objects.all()]
    assert len(files) == 2 and all(f.exists() for f in files)
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        account_remove(account=account, actor=account.owner, keep_emails=False)
        raise RuntimeError("the removal's transaction rolls back")
    assert callbacks == []
    assert Email.objects.count() == 2 and all(f.exists() for f in files)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        account_remove(account=account, actor=account.owner, keep_emails=False)
    # The rows are gone, the files still there until the commit's callback runs.
    assert not Email.objects.exists() and all(f.exists() for f in files)
    for callback in callbacks:
        callback()
    assert not any(f.exists() for f in files)


def test_it_keeps_the_files_of_kept_emails(
    synced_mailbox, settings, tmp_path, django_capture_on_commit_callbacks
):
    from accounts.services import account_remove

    settings.MEDIA_ROOT = tmp_path
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="with file", attachment=("a.pdf", b"%PDF")))
    mailbox_sync(account_id=account.pk)
    stored = Path(Attachment.objects.get().file.path)
    with django_capture_on_commit_callbacks(execute=True):
        account_remove(account=account, actor=account.owner, keep_emails=True)
    assert stored.exists() and Attachment.objects.get().file.path == str(stored)
