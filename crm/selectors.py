"""Reads of the CRM's contacts and companies."""

from dataclasses import dataclass

from django.core.paginator import Paginator
from django.db.models import (
    CharField,
    Count,
    DateTimeField,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Cast, Coalesce, Lower

from .models import Company, Contact, ContactAddress


def _one(queryset):
    found = list(queryset[:2])
    return found[0] if len(found) == 1 else None


def company_by_name(name: str) -> Company | None:
    """The one company of that name (any case); none when there is none or several."""
    name = " ".join(name.split())
    return _one(Company.objects.filter(name__iexact=name)) if name else None


def contact_by_name(name: str) -> Contact | None:
    """The one contact of that name (any case), or with that address; else none."""
    name = " ".join(name.split())
    if not name:
        return None
    if "@" in name:
        return _one(Contact.objects.filter(addresses__address=name.lower()))
    return _one(Contact.objects.filter(name__iexact=name))


# -- lists, pages and an email's links (issue 17) --------------------------------------
# What a user may see of the emails, meetings and tasks is decided in sharing.selectors;
# these only arrange it.

PAGE_SIZE = 50
TIMELINE_PAGE = 30
CANDIDATES = 8


def _latest(visible, **link) -> dict:
    """The latest email among `visible` for each row (by `link`, e.g. contacts=OuterRef):
    its date and its id, newest first, those without a date last."""
    latest = (
        visible.filter(**link)
        .order_by(F("sent_at").desc(nulls_last=True), "-pk")
        .values_list("pk", flat=True)
    )
    return {
        "latest_id": Subquery(latest[:1]),
        "latest_at": Subquery(
            visible.filter(**link)
            .order_by(F("sent_at").desc(nulls_last=True), "-pk")
            .values("sent_at")[:1]
        ),
    }


def contacts_for_list(user, *, search: str = "") -> QuerySet[Contact]:
    """Every contact, those with the most recent email the user may see first (then by
    name); matching `search` in the name, an address, the job title or the company."""
    from sharing.selectors import emails_for_timeline

    contacts = Contact.objects.select_related("company").annotate(
        **_latest(emails_for_timeline(user), contacts=OuterRef("pk"))
    )
    search = " ".join(search.split())
    if search:
        contacts = contacts.filter(
            Q(name__icontains=search)
            | Q(job_title__icontains=search)
            | Q(company__name__icontains=search)
            | Q(pk__in=ContactAddress.objects.filter(address__icontains=search).values("contact"))
        )
    return contacts.order_by(F("latest_at").desc(nulls_last=True), Lower("name"), "pk")


def companies_for_list(user, *, search: str = "") -> QuerySet[Company]:
    """Every company, as contacts_for_list; matching `search` in its name or web domain."""
    from sharing.selectors import emails_for_timeline

    people = Contact.objects.filter(company=OuterRef("pk")).order_by().values("company")
    companies = Company.objects.annotate(
        **_latest(emails_for_timeline(user), companies=OuterRef("pk")),
        contact_count=Coalesce(Subquery(people.annotate(n=Count("pk")).values("n")), 0),
    )
    search = " ".join(search.split())
    if search:
        companies = companies.filter(Q(name__icontains=search) | Q(web_domain__icontains=search))
    return companies.order_by(F("latest_at").desc(nulls_last=True), Lower("name"), "pk")


def latest_emails(rows) -> dict[int, object]:
    """The latest emails of a page of listed contacts or companies, by id: one query."""
    from sync.models import Email

    ids = [row.latest_id for row in rows if row.latest_id]
    return {e.pk: e for e in Email.objects.filter(pk__in=ids).only("pk", "subject", "sent_at")}


@dataclass
class Entry:
    """One line of a timeline: an email, a meeting or a task."""

    kind: str  # "email" or "activity"
    when: object
    item: object


def timeline(user, *, contact: Contact | None = None, company: Company | None = None):
    """A contact's or company's emails, meetings and tasks that the user may see, newest
    first (undated last), as one list to page through: a paginator of Entry pages."""
    from sharing.selectors import activities_for_timeline, emails_for_timeline

    emails = (
        emails_for_timeline(user, contact=contact, company=company)
        .order_by()
        .annotate(entry=Value("email", output_field=CharField()), at=F("sent_at"))
        .values_list("entry", "pk", "at")
    )
    activities = (
        activities_for_timeline(user, contact=contact, company=company)
        .order_by()
        .annotate(
            entry=Value("activity", output_field=CharField()),
            at=Coalesce("starts_at", Cast("due_on", DateTimeField())),
        )
        .values_list("entry", "pk", "at")
    )
    rows = emails.union(activities, all=True).order_by(
        F("at").desc(nulls_last=True), "-entry", "-pk"
    )
    return TimelinePaginator(rows, TIMELINE_PAGE)


class TimelinePaginator(Paginator):
    """Pages of (kind, id, when) rows, each page turned into Entry objects with two
    queries (its emails, its activities)."""

    def _get_page(self, rows, number, paginator):
        from sync.models import Email

        from .models import Activity

        rows = list(rows)
        email_ids = [pk for kind, pk, _when in rows if kind == "email"]
        activity_ids = [pk for kind, pk, _when in rows if kind == "activity"]
        emails = Email.objects.filter(pk__in=email_ids).select_related("account")
        emails = {e.pk: e for e in emails.defer("text_body", "html_body", "references")}
        activities = {a.pk: a for a in Activity.objects.filter(pk__in=activity_ids)}
        entries = [
            Entry(kind, when, (emails if kind == "email" else activities)[pk])
            for kind, pk, when in rows
            if pk in (emails if kind == "email" else activities)
        ]
        return super()._get_page(entries, number, paginator)


def link_candidates(email, query: str) -> dict[str, list]:
    """Contacts and companies matching what was typed to link the email to, without
    those it is linked to already: at most CANDIDATES of each."""
    query = " ".join(query.split())
    if not query:
        return {"contacts": [], "companies": []}
    addresses = ContactAddress.objects.filter(address__icontains=query).values("contact")
    contacts = (
        Contact.objects.filter(Q(name__icontains=query) | Q(pk__in=addresses))
        .exclude(pk__in=email.contacts.values("pk"))
        .select_related("company")
        .prefetch_related("addresses")
        .order_by(Lower("name"), "pk")[:CANDIDATES]
    )
    companies = (
        Company.objects.filter(Q(name__icontains=query) | Q(web_domain__icontains=query))
        .exclude(pk__in=email.companies.values("pk"))
        .order_by(Lower("name"), "pk")[:CANDIDATES]
    )
    return {"contacts": list(contacts), "companies": list(companies)}


def email_links(email) -> dict:
    """Whom an email is linked to, and the changes made to that by hand."""
    from .models import EmailLinkChange

    return {
        "linked_contacts": list(
            email.contacts.select_related("company").prefetch_related("addresses")
        ),
        "linked_companies": list(email.companies.all()),
        "link_changes": list(
            EmailLinkChange.objects.filter(email=email).select_related("actor")[:20]
        ),
    }
