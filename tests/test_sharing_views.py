"""The "Shared access" section of a mailbox's settings page."""

from django.contrib.auth.models import Permission
from django.urls import reverse

from accounts.models import AccountChange
from sharing.models import GrantChange, MailboxGrant
from tests.factories import (
    EmailAccountFactory,
    GroupFactory,
    MailboxGrantFactory,
    UserFactory,
)

HTMX = {"HTTP_HX_REQUEST": "true"}
SHARE = "sharing.setup_shared_access"
SYNC = "sharing.setup_shared_sync"


def _sharer(**account):
    """A mailbox whose owner holds "Access to shared account setup"."""
    return EmailAccountFactory(owner=UserFactory(permissions=[SHARE]), **account)


def _url(account) -> str:
    return reverse("sharing:mailbox", args=[account.pk])


def test_it_adds_a_role_with_the_picker_and_saves_it_with_htmx(client, db):
    account = _sharer()
    sales = GroupFactory(name="Sales team")
    client.force_login(account.owner)

    found = client.get(reverse("sharing:grantees", args=[account.pk]), {"q": "sales"}, **HTMX)
    assert found.status_code == 200
    assert f'name="add" value="group-{sales.pk}"' in found.text

    added = client.post(
        _url(account), {"shared_access": "on", "q": "sales", "add": f"group-{sales.pk}"}, **HTMX
    )
    assert "Sales team (role)" in added.text and "not saved yet" in added.text
    # The search is done: no "No user or role matches", and the new row has the focus.
    assert "matches" not in added.text and 'id="grantee-search" name="q" value=""' in added.text
    ticked = f'value="group-{sales.pk}" aria-label="Access emails: Sales team (role)" checked'
    assert ticked + " autofocus" in added.text
    assert not MailboxGrant.objects.exists()

    key = f"group-{sales.pk}"
    saved = client.post(
        _url(account),
        {"shared_access": "on", "row": key, "access": key, "send": key, "save": "1"},
        **HTMX,
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    assert "not saved yet" not in saved.text
    grant = MailboxGrant.objects.get()
    assert (grant.group, grant.can_access, grant.can_send, grant.can_setup) == (
        sales, True, True, False,
    )  # fmt: skip
    account.refresh_from_db()
    assert account.shared_access
    change = GrantChange.objects.get()
    assert (change.actor, change.grantee, change.before, change.after) == (
        account.owner, "Sales team (role)", "none", "Access emails, Send emails",
    )  # fmt: skip
    assert AccountChange.objects.filter(field="shared_access", new_value="On").exists()


def test_it_works_without_javascript(client, db):
    account = _sharer()
    colleague = UserFactory(first_name="Carla", last_name="Colleague")
    client.force_login(account.owner)

    page = client.post(_url(account), {"q": "carla", "search": "1"})
    assert page.status_code == 200 and "<h1>" in page.text
    assert f'value="user-{colleague.pk}"' in page.text and "Carla Colleague" in page.text

    key = f"user-{colleague.pk}"
    page = client.post(_url(account), {"q": "carla", "add": key})
    assert "not saved yet" in page.text and 'id="settings-download"' in page.text

    saved = client.post(
        _url(account), {"shared_access": "on", "row": key, "setup": key, "save": "1"}
    )
    assert saved.status_code == 302
    assert saved.url.endswith("#settings-sharing")
    assert MailboxGrant.objects.get().user == colleague
    assert "Shared access saved." in client.get(saved.url).text


def test_it_names_a_row_left_without_a_right_and_loses_nothing(client, db):
    account = _sharer(shared_access=True)
    kept = MailboxGrantFactory(account=account, user=UserFactory(), can_access=True)
    sales = GroupFactory(name="Sales team")
    client.force_login(account.owner)
    new, old = f"group-{sales.pk}", kept.grantee_key

    page = client.post(
        _url(account),
        {"shared_access": "on", "row": [old, new], "send": old, "save": "1"},
        **HTMX,
    )
    assert "Sales team (role): tick Access emails, Send emails or Setup mailbox" in page.text
    assert "autofocus data-save-state>Not saved: see what is marked above." in page.text
    # What the user ticked is shown as they left it, and nothing was saved.
    assert f'name="send" value="{old}"' in page.text
    assert f'value="{old}" aria-label="Send emails: {kept.grantee_label}" checked' in page.text
    assert "Sales team (role)" in page.text and "not saved yet" in page.text
    kept.refresh_from_db()
    assert (kept.can_access, kept.can_send) == (True, False)
    assert MailboxGrant.objects.count() == 1 and not GrantChange.objects.exists()


def test_it_removes_a_row_and_logs_what_it_was(client, db):
    account = _sharer(shared_access=True)
    grant = MailboxGrantFactory(account=account, user=UserFactory(), can_send=True, can_setup=True)
    key = grant.grantee_key
    client.force_login(account.owner)

    client.post(
        _url(account),
        {"shared_access": "on", "shared_shown": "on", "row": key, f"shown-{key}": "send,setup",
         "send": key, "remove": key, "save": "1"},
        **HTMX,
    )  # fmt: skip
    assert not MailboxGrant.objects.exists()
    change = GrantChange.objects.get()
    assert (change.before, change.after) == ("Send emails, Setup mailbox", "none")


def test_it_leaves_alone_a_grant_someone_added_meanwhile(client, db):
    account = _sharer(shared_access=True)
    meanwhile = MailboxGrantFactory(account=account, group=GroupFactory(), can_access=True)
    client.force_login(account.owner)

    client.post(_url(account), {"shared_access": "on", "save": "1"}, **HTMX)

    assert MailboxGrant.objects.get() == meanwhile


def test_it_does_not_offer_the_owner_or_those_already_in_the_table(client, db):
    account = _sharer(shared_access=True)
    account.owner.first_name = "Zed"
    account.owner.save()
    present = MailboxGrantFactory(account=account, user=UserFactory(first_name="Zelda"))
    other = UserFactory(first_name="Zoe")
    inactive = UserFactory(first_name="Zack", is_active=False)
    client.force_login(account.owner)

    found = client.get(
        reverse("sharing:grantees", args=[account.pk]),
        # Past any id ("user-" and 20 digits: the database's integer overflowed, a 500).
        {"q": "z", "row": [present.grantee_key, "user-x; drop", "user-" + "9" * 20]},
        **HTMX,
    ).text
    assert f"user-{other.pk}" in found
    for absent in (account.owner, present.user, inactive):
        assert f'value="user-{absent.pk}"' not in found

    refused = client.post(
        _url(account),
        {"row": f"user-{account.owner.pk}", "access": f"user-{account.owner.pk}", "save": "1"},
        **HTMX,
    )
    assert "owns this mailbox and has every right already" in refused.text
    assert MailboxGrant.objects.count() == 1


def test_it_refuses_an_owner_without_the_operation_and_shows_the_section_read_only(client, db):
    account = EmailAccountFactory(shared_access=True)
    MailboxGrantFactory(account=account, group=GroupFactory(name="Support"), can_access=True)
    client.force_login(account.owner)

    assert client.post(_url(account), {"save": "1"}, **HTMX).status_code == 403
    assert client.get(reverse("sharing:grantees", args=[account.pk]), {"q": "s"}).status_code == 403
    page = client.get(reverse("accounts:settings", args=[account.pk])).text
    assert "Support (role)" in page
    assert '<fieldset class="plain" disabled>' in page
    # Whom to ask, too.
    assert "shares this mailbox: ask your administrator to allow it" in page
    assert "Save shared access" not in page


def test_it_grants_the_operations_through_a_role(client, db):
    account = EmailAccountFactory()
    admins = GroupFactory(members=[account.owner])
    client.force_login(account.owner)
    assert client.post(_url(account), {"save": "1"}, **HTMX).status_code == 403

    admins.permissions.add(Permission.objects.get(codename="setup_shared_access"))
    assert (
        client.post(_url(account), {"shared_access": "on", "save": "1"}, **HTMX).status_code == 200
    )
    account.refresh_from_db()
    assert account.shared_access


def test_it_lets_a_setup_grantee_change_downloads_only_with_the_sync_operation(client, db, queued):
    account = EmailAccountFactory(shared_access=True)
    lead = UserFactory()
    MailboxGrantFactory(account=account, user=lead, can_setup=True)
    client.force_login(lead)
    save = reverse("accounts:settings_save", args=[account.pk, "download"])
    data = {"download-sync_period": "1m", "download-auto_sync": "on"}

    page = client.get(reverse("accounts:settings", args=[account.pk])).text
    assert "Shared with you by" in page
    assert "“Shared mailbox synchronization setup” operation" in page
    assert 'name="download-sync_period"' not in page
    # The owner's own choices stay the owner's: no default-sender switch, no removal.
    assert "send-is_default_sender" not in page and "Remove mailbox" not in page
    assert client.post(save, data, **HTMX).status_code == 403
    assert (
        client.post(reverse("accounts:remove", args=[account.pk]), {"emails": "keep"}).status_code
        == 403
    )

    lead.user_permissions.add(Permission.objects.get(codename="setup_shared_sync"))
    lead = type(lead).objects.get(pk=lead.pk)  # a fresh permission cache
    client.force_login(lead)
    assert client.post(save, data, **HTMX).status_code == 200
    account.refresh_from_db()
    assert account.sync_period == "1m"
    assert queued == [account.pk]
    change = AccountChange.objects.get(field="sync_period")
    assert change.actor == lead


def test_it_shows_the_grants_audit_to_admins(client, db):
    account = _sharer(shared_access=True)
    client.force_login(account.owner)
    key = f"group-{GroupFactory(name='Support').pk}"
    client.post(_url(account), {"row": key, "access": key, "shared_access": "on", "save": "1"})
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    page = client.get(reverse("admin:sharing_grantchange_changelist")).text

    assert "Support (role)" in page and "Access emails" in page and account.address in page


def test_it_does_not_undo_what_someone_else_changed_since_the_page_was_shown(client, db):
    account = _sharer(shared_access=True)
    revoked = MailboxGrantFactory(account=account, user=UserFactory(), can_access=True)
    other = MailboxGrantFactory(account=account, group=GroupFactory(), can_access=True)
    client.force_login(account.owner)
    page = client.get(reverse("accounts:settings", args=[account.pk])).text
    assert f'name="shown-{revoked.grantee_key}" value="access"' in page
    # Another admin revokes a grant and turns sharing off after this page was shown.
    revoked.delete()
    type(account).objects.filter(pk=account.pk).update(shared_access=False)

    a, b = revoked.grantee_key, other.grantee_key
    client.post(
        _url(account),
        {"shared_access": "on", "shared_shown": "on", "row": [a, b],
         f"shown-{a}": "access", f"shown-{b}": "access",
         "access": [a, b], "send": b, "save": "1"},
        **HTMX,
    )  # fmt: skip

    assert list(MailboxGrant.objects.all()) == [other]
    other.refresh_from_db()
    assert other.can_send
    account.refresh_from_db()
    assert not account.shared_access


def test_it_reports_a_row_both_admins_changed_and_saves_nothing(client, db):
    account = _sharer(shared_access=True)
    grant = MailboxGrantFactory(account=account, user=UserFactory(), can_access=True)
    untouched = GroupFactory(name="Late role")
    client.force_login(account.owner)
    grant.can_setup = True
    grant.save()
    key, new = grant.grantee_key, f"group-{untouched.pk}"

    page = client.post(
        _url(account),
        {"shared_access": "on", "shared_shown": "on", "row": [key, new],
         f"shown-{key}": "access", "send": key, "access": new, "save": "1"},
        **HTMX,
    ).text  # fmt: skip

    assert "changed by someone else while you were editing" in page
    assert f'name="shown-{key}" value="access,setup"' in page
    assert "Late role (role)" in page and "not saved yet" in page
    grant.refresh_from_db()
    assert (grant.can_access, grant.can_send, grant.can_setup) == (True, False, True)
    assert MailboxGrant.objects.count() == 1 and not GrantChange.objects.exists()


def test_it_refuses_an_inactive_user_sent_by_hand(client, db):
    account = _sharer()
    gone = UserFactory(is_active=False)
    client.force_login(account.owner)
    key = f"user-{gone.pk}"

    page = client.post(_url(account), {"row": key, "access": key, "save": "1"}, **HTMX).text

    assert "is not an active user" in page
    assert not MailboxGrant.objects.exists()


def test_it_says_on_saving_that_grants_give_nobody_access_while_sharing_is_off(client, db):
    account = _sharer()
    colleague = UserFactory(username="bart")
    client.force_login(account.owner)
    key = f"user-{colleague.pk}"
    saved = client.post(_url(account), {"row": key, "send": key, "save": "1"}, **HTMX).text
    assert "Saved. Shared access is off, so these grants give nobody access" in saved
    assert MailboxGrant.objects.get().can_send
    allowed = {"shared_access": "on", "row": key, "send": key, "save": "1"}
    saved = client.post(_url(account), allowed, **HTMX).text
    assert "Saved.</span>" in saved


def test_it_tells_a_setup_grantee_the_mailbox_is_not_theirs_to_send_from(client, db):
    # "you can send from it", while the compose page said there was no mailbox to send
    # from.
    from tests.factories import MailboxGrantFactory

    dave = UserFactory()
    setup = MailboxGrantFactory(user=dave, can_setup=True).account
    sender = MailboxGrantFactory(user=dave, can_send=True).account
    client.force_login(dave)
    page = client.get(reverse("accounts:email")).text
    listed = page[page.index('id="shared-mailboxes"') :]
    mine = listed[listed.index(setup.address) : listed.index("</li>", listed.index(setup.address))]
    assert "sending from it is not shared with you" in mine and "you can send" not in mine
    theirs = listed[listed.index(sender.address) :]
    assert "you can send from it" in theirs[: theirs.index("</li>")]
