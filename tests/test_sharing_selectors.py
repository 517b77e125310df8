"""sharing.selectors beyond the matrix: the switch, changes that count at once, and a
number of queries that does not grow with grants, roles or mailboxes."""

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sharing.selectors import (
    email_for_user,
    emails_for_panel,
    emails_for_timeline,
    mailboxes_for_setup,
    sendable_mailboxes,
)
from sharing.services import GrantRow, mailbox_sharing_update
from sync.models import Email
from tests.factories import EmailAccountFactory, GroupFactory, MailboxGrantFactory, UserFactory


def _email(account, n=0):
    return Email.objects.create(account=account, message_key=f"k{account.pk}-{n}", subject="Hi")


def test_it_stops_every_grant_while_shared_access_is_off_and_keeps_them(db):
    member = UserFactory()
    grant = MailboxGrantFactory(
        group=GroupFactory(members=[member]), can_access=True, can_send=True, can_setup=True
    )
    account = grant.account
    email = _email(account)
    assert email_for_user(member, email.pk) == email

    mailbox_sharing_update(account=account, actor=account.owner, shared=False, rows=[])

    assert email_for_user(member, email.pk) is None
    assert not emails_for_panel(member).exists()
    assert not sendable_mailboxes(member).exists()
    assert not mailboxes_for_setup(member).exists()
    assert grant.account.grants.count() == 1

    mailbox_sharing_update(account=account, actor=account.owner, shared=True, rows=[])
    assert list(emails_for_panel(member)) == [email]


def test_it_counts_role_changes_and_revocations_on_the_next_request(client, db):
    member = UserFactory()
    role = GroupFactory(members=[member])
    grant = MailboxGrantFactory(group=role, can_access=True)
    email = _email(grant.account)
    detail = reverse("sync:email", args=[email.pk])
    client.force_login(member)
    assert client.get(detail).status_code == 200

    member.groups.remove(role)
    assert client.get(detail).status_code == 404
    member.groups.add(role)
    assert client.get(detail).status_code == 200

    row = GrantRow(key=grant.grantee_key, label="role", group=role, shown={"access"}, remove=True)
    mailbox_sharing_update(
        account=grant.account, actor=grant.account.owner, shared=True, rows=[row]
    )
    assert client.get(detail).status_code == 404


def test_it_shows_a_removed_mailboxs_kept_emails_to_its_owner_alone_on_timelines(db):
    from crm.models import Contact

    reader = UserFactory()
    grant = MailboxGrantFactory(user=reader, can_access=True, can_send=True)
    email = _email(grant.account)
    contact = Contact.objects.create(name="Peter")
    email.contacts.add(contact)
    assert list(emails_for_timeline(reader, contact=contact)) == [email]
    # Even with its shared access left on, a removed mailbox's grants count for nobody.
    type(grant.account).objects.filter(pk=grant.account.pk).update(removed_at="2026-11-01T00:00Z")

    assert not emails_for_timeline(reader, contact=contact).exists()
    assert not emails_for_panel(reader).exists()
    assert not sendable_mailboxes(reader).exists()
    owner = grant.account.owner
    assert list(emails_for_timeline(owner, contact=contact)) == [email]
    assert not emails_for_panel(owner).exists()


def test_it_orders_the_from_list_with_the_users_own_default_first(db):
    user = UserFactory()
    own = EmailAccountFactory(owner=user, address="zz@example.test", is_default_sender=True)
    shared = MailboxGrantFactory(
        user=user, can_send=True,
        account=EmailAccountFactory(address="aa@example.test", is_default_sender=True,
                                    shared_access=True),
    )  # fmt: skip
    off = MailboxGrantFactory(
        user=user,
        can_send=True,
        account=EmailAccountFactory(shared_access=True, send_enabled=False),
    )
    mailboxes = list(sendable_mailboxes(user))
    assert mailboxes == [own, shared.account]
    assert off.account not in mailboxes


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_it_keeps_the_panels_queries_constant_in_grants_roles_and_mailboxes(
    client, db, django_assert_num_queries
):
    user = UserFactory()
    role = GroupFactory(members=[user])
    first = MailboxGrantFactory(user=user, can_send=True)
    _email(first.account)
    # One of their own from the start: the mailbox list reads its mailboxes' health in
    # a few queries, none for a user who owns none.
    EmailAccountFactory(owner=user)
    client.force_login(user)
    pages = [reverse("accounts:email"), reverse("accounts:list")]
    for url in pages:  # system settings read once per process, then cached
        client.get(url)
    before = [_queries(client, url) for url in pages]

    for n in range(12):
        grant = MailboxGrantFactory(can_send=True, can_access=True, can_setup=n % 2 == 0,
                                    **({"user": user} if n % 2 else {"group": role}))  # fmt: skip
        for m in range(3):
            _email(grant.account, m)
        GroupFactory(members=[user])
        MailboxGrantFactory(account=grant.account, user=UserFactory(), can_access=True)
    EmailAccountFactory(owner=user)

    for url, queries in zip(pages, before, strict=True):
        with django_assert_num_queries(queries):
            client.get(url)
    assert emails_for_panel(user).count() == 1 + 12 * 3


def test_it_does_not_open_a_removed_mailboxs_emails_to_any_grantee(db):
    sender, reader = UserFactory(), UserFactory()
    grant = MailboxGrantFactory(user=sender, can_send=True)
    MailboxGrantFactory(account=grant.account, user=reader, can_access=True)
    email = _email(grant.account)
    assert email_for_user(sender, email.pk) == email

    type(grant.account).objects.filter(pk=grant.account.pk).update(removed_at="2026-11-01T00:00Z")

    assert email_for_user(sender, email.pk) is None
    # Removing the mailbox ended its shares: the "Access emails" grantee loses it too.
    assert email_for_user(reader, email.pk) is None
    assert email_for_user(grant.account.owner, email.pk) == email


def test_it_refuses_to_answer_for_no_right_at_all(db):
    import pytest

    from sharing.selectors import mailboxes_with

    with pytest.raises(ValueError):
        mailboxes_with(UserFactory())


def test_it_shows_a_user_the_emails_they_wrote_from_a_send_only_mailbox(db):
    from crm.models import Contact
    from sending.models import OutgoingEmail

    writer, other = UserFactory(), UserFactory()
    grant = MailboxGrantFactory(user=writer, can_send=True)
    MailboxGrantFactory(account=grant.account, user=other, can_send=True)
    contact = Contact.objects.create(name="Peter")
    written, received = _email(grant.account, 1), _email(grant.account, 2)
    for email in (written, received):
        email.contacts.add(contact)
    OutgoingEmail.objects.create(
        account=grant.account, author=writer, message_id="m1@x", raw=b"", email=written
    )

    assert list(emails_for_timeline(writer, contact=contact)) == [written]
    assert not emails_for_timeline(other, contact=contact).exists()
    assert email_for_user(writer, written.pk) == written


def _rule_by_the_orm(user, rights, removed):
    """The rule as the ORM built it before it was written as SQL (issue 19): the
    reference the SQL must agree with."""
    from django.db.models import Exists, OuterRef, Q

    from accounts.models import EmailAccount
    from sharing.models import RIGHT_FIELDS, MailboxGrant

    if not (user.is_authenticated and user.is_active):
        return []
    condition = Q()
    for right in rights:
        grants = MailboxGrant.objects.filter(
            Q(user=user) | Q(group__in=user.groups.values("pk")),
            account=OuterRef("pk"),
            **{RIGHT_FIELDS[right]: True},
        )
        shared = Q(shared_access=True, removed_at__isnull=True)
        condition |= Q(owner=user) | shared & Exists(grants)
    mailboxes = EmailAccount.objects.filter(condition)
    if not removed:
        mailboxes = mailboxes.filter(removed_at__isnull=True)
    return sorted(mailboxes.values_list("pk", flat=True))


def test_it_decides_each_right_as_the_orm_rule_did_for_owners_users_and_roles(db):
    from itertools import combinations

    from django.contrib.auth.models import AnonymousUser
    from django.utils import timezone

    from accounts.models import EmailAccount
    from sharing.models import Right
    from sharing.selectors import mailbox_ids_with, mailboxes_shared_with, mailboxes_with

    def owned(user):
        return set(EmailAccount.objects.filter(owner=user).values_list("pk", flat=True))

    owner, alice, bob, idle = UserFactory(), UserFactory(), UserFactory(), UserFactory()
    gone = UserFactory(is_active=False)
    sales, support = GroupFactory(), GroupFactory()
    alice.groups.add(sales)
    bob.groups.add(sales, support)
    gone.groups.add(support)
    shared = EmailAccountFactory(owner=owner, shared_access=True)
    closed = EmailAccountFactory(owner=owner, shared_access=False)
    removed = EmailAccountFactory(owner=owner, shared_access=True, removed_at=timezone.now())
    bobs = EmailAccountFactory(owner=bob, shared_access=True)
    bobs_removed = EmailAccountFactory(owner=bob, removed_at=timezone.now())
    EmailAccountFactory(owner=idle)
    for account in (shared, closed, removed):
        MailboxGrantFactory(account=account, user=alice, can_access=True)
        MailboxGrantFactory(account=account, group=sales, can_send=True)
        MailboxGrantFactory(account=account, group=support, can_setup=True, can_access=True)
    MailboxGrantFactory(account=bobs, user=alice, can_setup=True)
    MailboxGrantFactory(account=bobs, group=support, can_send=True)
    MailboxGrantFactory(account=bobs_removed, user=alice, can_access=True)
    sets = [c for n in (1, 2, 3) for c in combinations(list(Right), n)]
    decided = 0
    for user in (owner, alice, bob, idle, gone, AnonymousUser()):
        for rights in sets:
            for with_removed in (False, True):
                expected = _rule_by_the_orm(user, rights, with_removed)
                got = sorted(
                    mailboxes_with(user, *rights, removed=with_removed).values_list("pk", flat=True)
                )
                assert got == expected, (user, rights, with_removed)
                assert mailbox_ids_with(user, *rights, removed=with_removed) == expected
                decided += bool(expected)
    assert decided > 40  # most cases hold some mailbox: the comparison is not of empties
    # Listed for the user as shared with them, each saying whether it opens for setup.
    # And whether they may send from it ("Set up mailbox" alone lists it too).
    for user in (owner, alice, bob, idle, gone):
        listed = {(m.pk, m.can_setup, m.can_send) for m in mailboxes_shared_with(user)}
        setup = set(_rule_by_the_orm(user, [Right.SETUP], False))
        send = set(_rule_by_the_orm(user, [Right.SEND], False))
        theirs = _rule_by_the_orm(user, [Right.SEND, Right.SETUP], False)
        expected = {(pk, pk in setup, pk in send) for pk in theirs if pk not in owned(user)}
        assert listed == expected, user
    assert {(m.pk, m.can_setup) for m in mailboxes_shared_with(alice)} == {(bobs.pk, True)} | {
        (m.pk, False) for m in (shared,)
    }
    # Through roles alone, each right, and never a removed or unshared mailbox's grant.
    assert mailbox_ids_with(bob, Right.ACCESS) == sorted([shared.pk, bobs.pk])
    assert mailbox_ids_with(bob, Right.ACCESS, removed=True) == sorted(
        [shared.pk, bobs.pk, bobs_removed.pk]
    )
    assert mailbox_ids_with(alice, Right.SETUP) == [bobs.pk]
