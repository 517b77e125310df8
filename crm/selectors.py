"""Reads of the CRM's contacts and companies themselves: below sync, which links each
email to them (sync.links, sync.items), so nothing here reads an email or an access
rule; the lists and timelines that do are crm/views/timelines.py."""

from django.db.models import Q
from django.db.models.functions import Lower

from .models import Company, Contact, ContactAddress, ContactLink


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


# -- an email's links, the contacts and companies to link it to (issue 17) --------------
# The Contacts and Companies lists and the timelines, which show the emails each user may
# see, are crm/views/timelines.py's.

CANDIDATES = 8


def contacts_to_export(*, account, limit: int):
    """The people the mailbox's emails are linked to that its address book does not hold
    yet (neither imported from it nor exported to it), at most `limit`."""
    linked = ContactLink.objects.filter(account=account).values("contact_id")
    return (
        Contact.objects.filter(emails__account=account)
        .exclude(pk__in=linked)
        .distinct()
        .select_related("company")
        .prefetch_related("addresses")[:limit]
    )


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


def company_recipients(company: Company) -> str:
    """Write email from a company's page: to its contacts, one address each."""
    first = {}
    rows = ContactAddress.objects.filter(contact__company=company).order_by("contact_id", "address")
    for contact_id, address in rows.values_list("contact_id", "address")[:200]:
        first.setdefault(contact_id, address)
    return ", ".join(list(first.values())[:20])
