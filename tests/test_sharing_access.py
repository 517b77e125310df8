"""The views' one access check (sharing.access over sharing.selectors.mailbox_access):
not found (404) for whoever may not know the mailbox or email exists, forbidden (403)
for whoever sees it but lacks the right."""

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from sending.models import OutgoingEmail
from sharing.access import email_or_404, mailbox_or_404, outgoing_or_404
from sharing.models import SHARE_SETUP, SYNC_SETUP
from sharing.selectors import MailboxAction, mailbox_access
from sync.models import Email
from tests.factories import EmailAccountFactory, MailboxGrantFactory, UserFactory

EVERY = list(MailboxAction)


def _outcome(user, account, action) -> str:
    try:
        mailbox_or_404(user, account.pk, action)
    except Http404:
        return "404"
    except PermissionDenied:
        return "403"
    return "ok"


def _outcomes(user, account) -> dict[str, str]:
    return {action.value: _outcome(user, account, action) for action in EVERY}


def test_it_gives_the_owner_everything_but_the_system_operation_of_sharing(db):
    account = EmailAccountFactory()
    assert _outcomes(account.owner, account) == {
        "status": "ok",
        "setup": "ok",
        "change_download": "ok",
        # Sharing needs "Access to shared account setup", the owner too.
        "share": "403",
        "remove": "ok",
        # Only a removed mailbox has kept grants to revoke.
        "revoke_kept_grants": "404",
    }
    sharer = UserFactory(permissions=[SHARE_SETUP])
    mine = EmailAccountFactory(owner=sharer)
    assert _outcome(sharer, mine, MailboxAction.SHARE) == "ok"


def test_it_answers_not_found_to_anyone_without_a_right(db):
    account = EmailAccountFactory()
    stranger = UserFactory(permissions=[SHARE_SETUP, SYNC_SETUP])
    assert set(_outcomes(stranger, account).values()) == {"404"}
    # A grant counts only while the mailbox is shared.
    grant = MailboxGrantFactory(user=UserFactory(), can_access=True, can_send=True, can_setup=True)
    grant.account.shared_access = False
    grant.account.save()
    assert set(_outcomes(grant.user, grant.account).values()) == {"404"}


def test_it_shows_the_status_to_a_sender_and_nothing_of_the_settings(db):
    grant = MailboxGrantFactory(user=UserFactory(), can_send=True)
    assert _outcomes(grant.user, grant.account) == {
        "status": "ok",
        "setup": "404",
        "change_download": "404",
        "share": "404",
        "remove": "404",
        "revoke_kept_grants": "404",
    }


def test_it_forbids_a_setup_grantee_what_their_grant_does_not_cover(db):
    grant = MailboxGrantFactory(user=UserFactory(), can_setup=True)
    assert _outcomes(grant.user, grant.account) == {
        "status": "ok",
        "setup": "ok",
        "change_download": "403",
        "share": "403",
        # Removing a mailbox takes it from its owner: theirs alone.
        "remove": "403",
        "revoke_kept_grants": "404",
    }
    operator = UserFactory(permissions=[SHARE_SETUP, SYNC_SETUP])
    grant = MailboxGrantFactory(user=operator, can_setup=True)
    assert _outcome(operator, grant.account, MailboxAction.CHANGE_DOWNLOAD) == "ok"
    assert _outcome(operator, grant.account, MailboxAction.SHARE) == "ok"
    assert _outcome(operator, grant.account, MailboxAction.REMOVE) == "403"


def test_it_leaves_a_removed_mailbox_to_its_owner_for_its_kept_grants_alone(db):
    grant = MailboxGrantFactory(user=UserFactory(), can_setup=True, can_send=True)
    account = grant.account
    account.removed_at = timezone.now()
    account.save()
    assert _outcomes(account.owner, account) == {
        action.value: "ok" if action is MailboxAction.REVOKE_KEPT_GRANTS else "404"
        for action in EVERY
    }
    assert set(_outcomes(grant.user, account).values()) == {"404"}


def test_it_answers_not_found_to_an_inactive_user(db):
    account = EmailAccountFactory()
    account.owner.is_active = False
    account.owner.save()
    assert set(_outcomes(account.owner, account).values()) == {"404"}


def test_it_says_what_the_selector_decided(db):
    account = EmailAccountFactory(shared_access=True)
    grant = MailboxGrantFactory(account=account, user=UserFactory(), can_setup=True)
    assert mailbox_access(grant.user, account.pk, MailboxAction.REMOVE).account == account
    assert not mailbox_access(grant.user, account.pk, MailboxAction.REMOVE).allowed
    assert mailbox_access(UserFactory(), account.pk, MailboxAction.SETUP).account is None
    assert mailbox_access(account.owner, 0, MailboxAction.SETUP).account is None


@pytest.mark.parametrize("linking", [False, True])
def test_it_opens_an_email_to_whoever_may_see_it_and_no_one_else(db, linking):
    account = EmailAccountFactory(shared_access=True)
    email = Email.objects.create(account=account, message_key="k", subject="Hi")
    assert email_or_404(account.owner, email.pk, linking=linking) == email
    reader = MailboxGrantFactory(account=account, user=UserFactory(), can_access=True).user
    assert email_or_404(reader, email.pk, linking=linking) == email
    with pytest.raises(Http404):
        email_or_404(UserFactory(), email.pk, linking=linking)


def test_it_follows_an_outgoing_email_for_its_author_alone(db):
    account = EmailAccountFactory(shared_access=True)
    outgoing = OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id="m@example.test", raw=b""
    )
    assert outgoing_or_404(account.owner, outgoing.pk) == outgoing
    # Another user who may even set the mailbox up does not follow someone else's email.
    grant = MailboxGrantFactory(account=account, user=UserFactory(), can_setup=True)
    with pytest.raises(Http404):
        outgoing_or_404(grant.user, outgoing.pk)


def test_it_answers_the_pages_as_the_check_decides(client, db):
    # Through the pages: the settings page (setup), the download section (a right on
    # top), removal (the owner's), the status partial (listed mailboxes).
    grant = MailboxGrantFactory(user=UserFactory(), can_setup=True)
    account = grant.account
    client.force_login(grant.user)
    assert client.get(reverse("accounts:settings", args=[account.pk])).status_code == 200
    download = reverse("accounts:settings_save", args=[account.pk, "download"])
    assert client.post(download, {"download-sync_period": "3m"}).status_code == 403
    remove = reverse("accounts:remove", args=[account.pk])
    assert client.post(remove, {"emails": "keep"}).status_code == 403
    assert client.get(reverse("sync:status", args=[account.pk])).status_code == 200
    client.force_login(UserFactory())
    assert client.get(reverse("accounts:settings", args=[account.pk])).status_code == 404
    assert client.post(download, {"download-sync_period": "3m"}).status_code == 404
    assert client.get(reverse("sync:status", args=[account.pk])).status_code == 404
