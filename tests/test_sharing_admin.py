"""Administrators and grants: the grants are read in the admin, never changed there, and
a user or role an administrator deletes takes its grants with it, logged."""

from django.contrib.auth.models import Group
from django.urls import reverse

from sharing.models import GrantChange, MailboxGrant
from tests.factories import MailboxGrantFactory, UserFactory


def test_it_deletes_a_user_or_role_that_holds_a_grant_and_logs_it(admin_client, db):
    # "Cannot delete group: your account doesn't have permission to delete the following
    # types of objects: mailbox grant", even for a superuser.
    role = Group.objects.create(name="Temp")
    by_role = MailboxGrantFactory(group=role, can_access=True)
    alice = UserFactory(username="alice")
    MailboxGrantFactory(user=alice, account=by_role.account, can_send=True)

    page = admin_client.get(reverse("admin:auth_group_delete", args=[role.pk])).text
    assert "permission to delete" not in page
    admin_client.post(reverse("admin:auth_group_delete", args=[role.pk]), {"post": "yes"})
    admin_client.post(reverse("admin:auth_user_delete", args=[alice.pk]), {"post": "yes"})

    assert not MailboxGrant.objects.exists() and not Group.objects.filter(name="Temp").exists()
    logged = sorted(GrantChange.objects.values_list("grantee", "before", "after"))
    assert logged == [
        ("Temp (role), deleted", "Access emails", "none"),
        ("alice, deleted", "Send emails", "none"),
    ]
    assert all(change.address == by_role.account.address for change in GrantChange.objects.all())


def test_it_never_deletes_a_grant_from_the_grants_own_pages(admin_client, db):
    grant = MailboxGrantFactory(user=UserFactory(), can_access=True)
    page = admin_client.get(reverse("admin:sharing_mailboxgrant_change", args=[grant.pk])).text
    assert reverse("admin:sharing_mailboxgrant_delete", args=[grant.pk]) not in page
    answer = admin_client.post(
        reverse("admin:sharing_mailboxgrant_delete", args=[grant.pk]), {"post": "yes"}
    )
    assert answer.status_code == 403 and MailboxGrant.objects.filter(pk=grant.pk).exists()


def test_it_logs_nothing_for_a_grantee_when_the_mailbox_s_owner_is_deleted(admin_client, db):
    # The owner deleted takes the mailbox and its grants: bob, who is still there, was
    # logged as "bob, deleted".
    bob = UserFactory(username="bob")
    grant = MailboxGrantFactory(user=bob, can_access=True)
    admin_client.post(
        reverse("admin:auth_user_delete", args=[grant.account.owner.pk]), {"post": "yes"}
    )
    assert not MailboxGrant.objects.exists()
    assert not GrantChange.objects.filter(grantee__startswith="bob").exists()
    # A staff member who may delete users may delete one holding a grant.
    from django.contrib.auth.models import Permission

    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["delete_user", "view_user"])
    )
    carol = UserFactory(username="carol")
    MailboxGrantFactory(user=carol, can_send=True)
    admin_client.force_login(staff)
    admin_client.post(reverse("admin:auth_user_delete", args=[carol.pk]), {"post": "yes"})
    assert not type(carol).objects.filter(pk=carol.pk).exists()
    assert GrantChange.objects.filter(grantee="carol, deleted").exists()
