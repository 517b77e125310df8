"""Who may see and do what with a mailbox and its emails: the one place that decides.

Every view, partial and task asks here; none filters mailboxes or emails on its own.

- The owner has every right on their mailbox.
- Anyone else holds rights only through a grant, to them or to a role (Django group)
  they belong to, and only while the mailbox allows shared access:
  - Access emails: its emails show in the CRM's sections (a contact's or company's
    timeline) and open from there, but not on the grantee's Email page.
  - Send emails: the mailbox is offered in the grantee's From list, and its emails
    show on the grantee's Email page (and open from there).
  - Setup mailbox: the grantee may open and change the mailbox's settings.
- An email a user wrote in the app stays theirs to see on timelines and to open, from
  whichever mailbox it went out.
- Contacts and companies are the company's: every user sees them all, in the lists and
  on their pages; the emails, meetings and tasks there, and the latest email a list
  sorts and shows them by, are only those the user may see on a timeline. Whoever may
  see an email may link it to a contact or company by hand, or unlink it.
- Nobody else sees anything of the mailbox; its URLs answer 404 for them. Being a
  superuser gives the two system operations, not a look into other people's mail.
- Two system operations narrow what "Setup mailbox" allows: turning on shared access
  and editing the grants needs "Access to shared account setup" (the owner too);
  changing a shared mailbox's download settings needs "Shared mailbox synchronization
  setup" (everyone but the owner).

Each rule is a subquery evaluated by the database on every request, so a revoked grant
or a change of role membership counts at once, and the number of queries does not
depend on the number of grants, roles or mailboxes.
"""

from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL

from accounts.models import EmailAccount
from sync.models import Email

from .models import RIGHT_FIELDS, SHARE_SETUP, SYNC_SETUP, MailboxGrant, Right, grantee_label


@cache
def _rule_sql(rights: tuple[Right, ...], removed: bool) -> str:
    """The mailboxes on which a user (the three parameters) holds any of `rights`: their
    own, or granted to them or to one of their roles while the mailbox is shared and not
    removed (a removed mailbox's kept emails are its owner's alone; its grants wait for
    the owner, who may revoke them, see `removed_mailboxes_with_grants`); removed ones
    only when asked.

    Written once per set of rights, the user as parameters, and evaluated by the
    database on every request like any other query: the same rule built with the ORM
    (an OR of Exists with a subquery of the user's roles) took 2 ms of CPU to compile,
    and a page compiled it three to five times (issue 19, B6)."""
    account = EmailAccount._meta.db_table
    grant = MailboxGrant._meta.db_table
    membership = get_user_model().groups.through._meta.db_table
    columns = " OR ".join(
        f"g.{MailboxGrant._meta.get_field(RIGHT_FIELDS[right]).column}" for right in rights
    )
    sql = (
        f"SELECT a.id FROM {account} a WHERE (a.owner_id = %s OR (a.shared_access"  # noqa: S608 - our tables
        f" AND a.removed_at IS NULL AND EXISTS (SELECT 1 FROM {grant} g"
        f" WHERE g.account_id = a.id AND ({columns}) AND (g.user_id = %s OR g.group_id IN"
        f" (SELECT m.group_id FROM {membership} m WHERE m.user_id = %s)))))"
    )
    return sql if removed else f"{sql} AND a.removed_at IS NULL"


def _rule(user, rights: tuple[Right, ...], removed: bool) -> RawSQL:
    if not rights:
        raise ValueError("name at least one right")
    sql = _rule_sql(tuple(sorted(set(rights))), removed)
    return RawSQL(sql, [user.pk] * 3)  # noqa: S611 - our SQL, the user as parameters


def _allowed(user) -> bool:
    """Only a signed-in, active user holds anything (an inactive one keeps nothing)."""
    return user.is_authenticated and user.is_active


def mailboxes_with(user, *rights: Right, removed: bool = False) -> QuerySet[EmailAccount]:
    """Mailboxes on which the user holds any of the rights (`_rule_sql`); removed ones
    (whose emails were kept for the CRM) only when asked."""
    rule = _rule(user, rights, removed)
    if not _allowed(user):
        return EmailAccount.objects.none()
    return EmailAccount.objects.filter(pk__in=rule).select_related("provider")


def mailbox_ids_with(user, *rights: Right, removed: bool = False) -> list[int]:
    """The ids of `mailboxes_with`, read in one query without building a queryset (a
    page asks for them several times: the Email page's list and its poller, a timeline
    and its search)."""
    rule = _rule(user, rights, removed)
    if not _allowed(user):
        return []
    sql, params = rule.sql, rule.params
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} ORDER BY a.id", params)
        return [row[0] for row in cursor.fetchall()]


# The mailboxes whose emails fill the user's Email page: own and "Send emails".
_PANEL = (Right.SEND,)


def mailboxes_for_panel(user) -> QuerySet[EmailAccount]:
    """The mailboxes whose emails fill the user's Email page (`_PANEL`)."""
    return mailboxes_with(user, *_PANEL)


def mailboxes_shared_with(user) -> QuerySet[EmailAccount]:
    """Other people's mailboxes the user may send from or set up: listed for them, each
    saying whether its settings page opens for them."""
    return (
        mailboxes_with(user, Right.SEND, Right.SETUP)
        .exclude(owner=user)
        .select_related("owner")
        # Listed, not the user's: shared and not removed, so "setup" is a grant of it.
        .annotate(
            can_setup=ExpressionWrapper(
                Q(pk__in=_rule(user, (Right.SETUP,), False)), BooleanField()
            ),
            # "Set up mailbox" alone lists it too, and sends nothing from it.
            can_send=ExpressionWrapper(Q(pk__in=_rule(user, (Right.SEND,), False)), BooleanField()),
        )
        .order_by("address")
    )


def mailboxes_for_setup(user) -> QuerySet[EmailAccount]:
    """The mailboxes whose settings page the user may open and change."""
    return mailboxes_with(user, Right.SETUP)


def mailboxes_for_status(user) -> QuerySet[EmailAccount]:
    """The mailboxes whose sync status the user may see: those listed for them."""
    return mailboxes_with(user, Right.SEND, Right.SETUP)


def sendable_mailboxes(user) -> QuerySet[EmailAccount]:
    """The From list: own and "Send emails" mailboxes with "send emails using this
    mailbox" on, whose provider sends ("send emails" on its card), the user's default
    first."""
    return (
        mailboxes_with(user, Right.SEND)
        .filter(send_enabled=True, provider__send_enabled=True)
        # Only the user's own default counts: another owner's default is theirs.
        .annotate(
            own_default=ExpressionWrapper(Q(owner=user, is_default_sender=True), BooleanField())
        )
        .order_by("-own_default", "address")
    )


def can_setup(user, account: EmailAccount) -> bool:
    return mailboxes_for_setup(user).filter(pk=account.pk).exists()


def can_share(user, account: EmailAccount) -> bool:
    """May turn shared access on or off and edit the grants (the caller has already
    checked that the user may set up the mailbox)."""
    return user.has_perm(SHARE_SETUP)


def can_change_download(user, account: EmailAccount) -> bool:
    """May change the download settings (period, new emails, folders) of a mailbox the
    user may set up: the owner always, others with the system operation."""
    return account.owner_id == user.pk or user.has_perm(SYNC_SETUP)


def can_remove(user, account: EmailAccount) -> bool:
    """Removing a mailbox takes it away from its owner: the owner's decision alone."""
    return account.owner_id == user.pk


def mailbox_rights(user, account: EmailAccount) -> dict[str, bool]:
    """What the user may do with a mailbox they may set up beyond the sections every
    setup user may change: shown on its settings page, enforced by `mailbox_access`."""
    return {
        "is_owner": account.owner_id == user.pk,
        "can_change_download": can_change_download(user, account),
        "can_remove": can_remove(user, account),
        "can_share": can_share(user, account),
    }


class MailboxAction(StrEnum):
    """What a page or a form wants to do with one mailbox. Each names the mailboxes the
    user may know of for it (any other is "not found", so its existence does not leak)
    and the right needed on top (without it: "forbidden", the page shows it read-only)."""

    # Its download status and the "See why" page: those listed for the user.
    STATUS = "status"
    # Its settings page, and the sections every setup user may change.
    SETUP = "setup"
    # The download settings: period, new emails, folders, Exchange's imports.
    CHANGE_DOWNLOAD = "change_download"
    SHARE = "share"
    REMOVE = "remove"
    # A removed mailbox's kept grants: its owner's alone.
    REVOKE_KEPT_GRANTS = "revoke_kept_grants"


# The right each action needs on a mailbox the user may set up.
_NEEDS = {
    MailboxAction.CHANGE_DOWNLOAD: can_change_download,
    MailboxAction.SHARE: can_share,
    MailboxAction.REMOVE: can_remove,
}


def _known_for(user, action: MailboxAction) -> QuerySet[EmailAccount]:
    if action is MailboxAction.STATUS:
        return mailboxes_for_status(user)
    if action is MailboxAction.REVOKE_KEPT_GRANTS:
        if not _allowed(user):
            return EmailAccount.objects.none()
        return EmailAccount.objects.filter(owner=user, removed_at__isnull=False)
    return mailboxes_for_setup(user)


@dataclass(frozen=True)
class MailboxAccess:
    """`account` is None when the user may not know the mailbox exists; else `allowed`
    says whether they may do what they asked with it."""

    account: EmailAccount | None
    allowed: bool


def mailbox_access(user, pk: int, action: MailboxAction) -> MailboxAccess:
    """The mailbox `pk` as `action` may see it, and whether the user may do `action`."""
    account = _known_for(user, MailboxAction(action)).filter(pk=pk).first()
    if account is None:
        return MailboxAccess(None, False)
    needs = _NEEDS.get(action)
    return MailboxAccess(account, needs is None or needs(user, account))


def emails_for_panel(user) -> QuerySet[Email]:
    """The Email page: emails of the user's own and "Send emails" mailboxes, newest
    first. A removed mailbox's kept emails stay on timelines, not here.

    The mailboxes are read first, as a list of ids: with the rule as a subquery the
    planner cannot tell how many emails it keeps, and walked the date index through
    most of the table to find a page of them (issue 19)."""
    return _panel(mailbox_ids_with(user, *_PANEL))


def emails_found_for_panel(user, *, search: str):
    """The Email page's search: the emails of `emails_for_panel` that match `search`,
    best first (a sync.search.Found: its `mailboxes` are those it searched)."""
    from sync.search import found

    mailboxes = mailbox_ids_with(user, *_PANEL)
    return found(_panel(mailboxes), search, mailboxes)


def _panel(mailboxes: list[int]) -> QuerySet[Email]:
    # What the list shows, and no more: its rows were most of a search page's time in
    # Python (B6), each with its mailbox and recipients' JSON read for nothing.
    return (
        Email.objects.filter(account__in=mailboxes)
        .only("account_id", "subject", "from_name", "from_address", "sent_at", "seen")
        .order_by("-sent_at", "-pk")
    )


def emails_for_timeline(user, *, contact=None, company=None) -> QuerySet[Email]:
    """A contact's or company's emails that the user may see there: those of their own
    and "Access emails" mailboxes, kept emails of removed mailboxes included, and the
    emails they wrote themselves in the app, from whichever mailbox."""
    return _timeline_emails(user, contact, company, access=None)


def _timeline_emails(user, contact, company, *, access: list[int] | None) -> QuerySet[Email]:
    """`emails_for_timeline`, given the ids of the user's "Access emails" mailboxes
    (removed ones included) when this module has just read them; never a caller's list,
    which could widen the rule."""
    emails = Email.objects.filter(_timeline_rule(user, access))
    # EXISTS rather than a join: the planner may then walk the emails by date and stop
    # at a page, for a contact with thousands of them (issue 19).
    if contact is not None:
        links = Email.contacts.through.objects.filter(email=OuterRef("pk"), contact=contact)
        emails = emails.filter(Exists(links))
    if company is not None:
        links = Email.companies.through.objects.filter(email=OuterRef("pk"), company=company)
        emails = emails.filter(Exists(links))
    return emails.defer("text_body", "html_body", "search").order_by("-sent_at", "-pk")


def mailboxes_on_timelines(user) -> list[int]:
    """The ids of every mailbox whose emails `emails_for_timeline` may show the user:
    their "Access emails" ones, removed included, and those of the emails they wrote
    in the app. Read from the mailboxes and the user's own writing, not from a
    timeline's emails: a search asks for the mailboxes' languages, and reading them
    off a contact with 6,000 emails took 25 ms a request (issue 19, B6)."""
    if not _allowed(user):
        return []
    access = mailbox_ids_with(user, Right.ACCESS, removed=True)
    written = (
        _written(user)
        .filter(email__isnull=False)
        .order_by()
        .values_list("email__account", flat=True)
        .distinct()
    )
    return sorted(set(access) | set(written))


def _written(user) -> QuerySet:
    """The emails the user wrote in the app: sending's rows, through their author's
    reverse relation (sending is above this module, and asks it who may send)."""
    return user.outgoing_written.all()


def _timeline_rule(user, access: list[int] | None = None) -> Q:
    """`seen_on_timelines` for emails themselves: the mailboxes as a list of ids (read
    here unless `access` gives them), the user's own emails as an EXISTS. An OR with a
    LEFT JOIN on the outgoing emails made the planner scan every email, however few the
    user may see (issue 19)."""
    if not _allowed(user):
        return Q(pk__in=[])
    mailboxes = mailbox_ids_with(user, Right.ACCESS, removed=True) if access is None else access
    mine = _written(user).filter(email=OuterRef("pk"))
    return Q(account__in=mailboxes) | Exists(mine)


def seen_on_timelines(user, via: str = "") -> Q:
    """The emails that `emails_for_timeline` shows the user, as a condition on an email,
    or through a relation to emails (`via`, e.g. "emails__": a contact's or company's
    emails, for the latest one in a list)."""
    if not via:
        return _timeline_rule(user)
    mailboxes = mailboxes_with(user, Right.ACCESS, removed=True)
    if user.is_authenticated:
        # Through a relation: the user's own emails as a set read once, not a join per
        # email (the list of every contact grouped with their emails).
        mine = _written(user).filter(email__isnull=False)
        written = Q(**{f"{via}pk__in": mine.values("email")})
    else:
        written = Q(pk__in=[])
    return written | Q(**{f"{via}account__in": mailboxes.values("pk")})


def activities_for_timeline(user, *, contact=None, company=None) -> QuerySet:
    """A contact's or company's meetings and tasks that the user may see there: those
    imported from their own and "Access emails" mailboxes, as for emails."""
    from crm.models import Activity

    mailboxes = mailboxes_with(user, Right.ACCESS, removed=True)
    activities = Activity.objects.filter(account__in=mailboxes.values("pk"))
    if contact is not None:
        activities = activities.filter(contacts=contact)
    if company is not None:
        activities = activities.filter(companies=company)
    return activities.order_by("-starts_at", "-due_on", "-pk")


def _written_by(user) -> Q:
    # The sending app's row for an email sent from this app (reverse one-to-one).
    return Q(outgoing__author=user) if user.is_authenticated else Q(pk__in=[])


def emails_for_user(user) -> QuerySet[Email]:
    """Every email the user may see anywhere: on a timeline or their Email page."""
    on_timelines = mailboxes_with(user, Right.ACCESS, removed=True).values("pk")
    on_panel = mailboxes_for_panel(user).values("pk")
    return Email.objects.filter(
        Q(account__in=on_timelines) | Q(account__in=on_panel) | _written_by(user)
    )


def email_for_user(user, pk: int) -> Email | None:
    """One email, if the user may see it anywhere: on a timeline or their Email page."""
    return emails_for_user(user).filter(pk=pk).select_related("account").first()


def outgoing_for_user(user, pk: int):
    """An email written in the app, as its page follows its delivery: its author's alone."""
    if not _allowed(user):
        return None
    return _written(user).select_related("account", "email").filter(pk=pk).first()


def removed_mailboxes_with_grants(user) -> list[EmailAccount]:
    """The user's removed mailboxes (emails kept) that still have grants: the grants
    count for nobody, and come back only if the owner adds the mailbox and shares it
    again. Listed for the owner, who may revoke them; each with `kept_grants`."""
    if not _allowed(user):
        return []
    mailboxes = list(
        EmailAccount.objects.filter(owner=user, removed_at__isnull=False, grants__isnull=False)
        .distinct()
        .order_by("address")
    )
    grants = MailboxGrant.objects.filter(account__in=mailboxes).select_related("user", "group")
    by_mailbox: dict[int, list[MailboxGrant]] = {}
    for grant in grants.order_by("group__name", "user__username", "pk"):
        by_mailbox.setdefault(grant.account_id, []).append(grant)
    for mailbox in mailboxes:
        mailbox.kept_grants = by_mailbox.get(mailbox.pk, [])
    return mailboxes


def email_for_linking(user, pk: int) -> Email | None:
    """One email whose contacts and companies the user may change by hand: any email
    they may see. A link only decides on which timelines the email shows, and there
    only to those who may see it anyway; every change is recorded (crm.EmailLinkChange)."""
    return email_for_user(user, pk)


def grants_of(account: EmailAccount) -> list[MailboxGrant]:
    return list(
        account.grants.select_related("user", "group").order_by(
            "group__name", "user__username", "pk"
        )
    )


CANDIDATES = 8


def grant_candidates(account: EmailAccount, query: str, exclude: list[str]) -> list[dict]:
    """Users and roles matching what was typed in the grants picker, without the owner
    and those already in the table: at most CANDIDATES of each."""
    query = query.strip()
    if not query:
        return []
    users = (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(
            Q(username__icontains=query)
            | Q(first_name__icontains=query)
            | Q(last_name__icontains=query)
            | Q(email__icontains=query)
        )
        .exclude(pk=account.owner_id)
        .exclude(pk__in=[int(key[5:]) for key in exclude if key.startswith("user-")])
        .order_by("last_name", "first_name", "username")[:CANDIDATES]
    )
    groups = (
        Group.objects.filter(name__icontains=query)
        .exclude(pk__in=[int(key[6:]) for key in exclude if key.startswith("group-")])
        .order_by("name")[:CANDIDATES]
    )
    return [{"key": f"group-{group.pk}", "label": f"{group.name} (role)"} for group in groups] + [
        {"key": f"user-{user.pk}", "label": grantee_label(user)} for user in users
    ]


def emails_for_poller(
    user, *, contact=None, company=None, account: int | None = None
) -> tuple[list[int], QuerySet[Email]]:
    """An open page's poller (sync.live): the mailboxes whose newest email it may follow,
    and the emails its list shows. The Email page: its own mailboxes and emails; a
    mailbox's settings page: that mailbox, if its status is the user's to see; a
    contact's or company's timeline: the mailboxes whose emails may show there (the
    user's "Access emails" ones, removed ones included, and those they send from, where
    the emails they write go out) and the timeline's emails. Never a mailbox the user
    may not see: the poller's answers would tell when mail arrives there."""
    if account is not None:
        mailboxes = list(mailboxes_for_status(user).filter(pk=account).values_list("pk", flat=True))
        return mailboxes, Email.objects.filter(account__in=mailboxes)
    if contact is not None or company is not None:
        seen = mailbox_ids_with(user, Right.ACCESS, removed=True)
        sending = mailbox_ids_with(user, *_PANEL)
        mailboxes = sorted(set(seen) | set(sending))
        return mailboxes, _timeline_emails(user, contact, company, access=seen)
    mailboxes = mailbox_ids_with(user, *_PANEL)
    return mailboxes, Email.objects.filter(account__in=mailboxes)
