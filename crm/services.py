"""Linking emails to the CRM's contacts and companies, a batch of emails at a time."""

from django.db import transaction

from .models import Company, Contact, ContactAddress

NO_REPLY_MARKERS = ("noreply", "no-reply", "donotreply", "do-not-reply", "mailer-daemon", "bounce")


def _is_no_reply(address: str) -> bool:
    local = address.split("@", 1)[0].lower()
    return any(marker in local for marker in NO_REPLY_MARKERS)


def _domain(address: str) -> str:
    return address.split("@", 1)[-1]


def contacts_link(
    *,
    emails: list[tuple[int, dict[str, str], str]],
    own_domains: set[str],
    create_for_unknown_senders: bool = False,
) -> None:
    """Link each email to the contacts of every address it carries, and to their
    companies or a company whose web domain matches an address's domain.

    `emails` holds (email id, {address: display name}, sender). A contact without a name
    takes the display name from the email. With the option on, an unknown external
    sender becomes a contact, never a no-reply address or one of our own domains.
    Queries do not grow with the number of emails.
    """
    if not emails:
        return
    names: dict[str, str] = {}
    for _email, names_by_address, _sender in emails:
        for address, name in names_by_address.items():
            if address and (name or address not in names):
                names[address] = name
    known = {
        entry.address: entry.contact
        for entry in ContactAddress.objects.filter(address__in=names).select_related("contact")
    }
    if create_for_unknown_senders:
        for _email, _names, sender in emails:
            if (
                sender
                and sender not in known
                and _domain(sender) not in own_domains
                and not _is_no_reply(sender)
            ):
                with transaction.atomic():
                    contact = Contact.objects.create(name=names.get(sender, "")[:255])
                    entry, created = ContactAddress.objects.get_or_create(
                        address=sender, defaults={"contact": contact}
                    )
                    if not created:
                        contact.delete()
                known[sender] = entry.contact
    enriched = []
    for address, contact in known.items():
        name = names.get(address, "").strip()
        if not contact.name and name and name.lower() != address:
            contact.name = name[:255]
            enriched.append(contact)
    if enriched:
        Contact.objects.bulk_update(enriched, ["name"])
    domains = {_domain(a) for a in names} - own_domains
    by_domain = {c.web_domain: c for c in Company.objects.filter(web_domain__in=domains)}

    from sync.models import Email  # the M2M lives on Email

    contact_rows, company_rows = [], []
    for email_id, names_by_address, _sender in emails:
        contacts = {known[a] for a in names_by_address if a in known}
        companies = {c.company_id for c in contacts if c.company_id}
        companies |= {by_domain[_domain(a)].pk for a in names_by_address if _domain(a) in by_domain}
        contact_rows += [
            Email.contacts.through(email_id=email_id, contact_id=c.pk) for c in contacts
        ]
        company_rows += [
            Email.companies.through(email_id=email_id, company_id=c) for c in companies
        ]
    Email.contacts.through.objects.bulk_create(contact_rows, ignore_conflicts=True)
    Email.companies.through.objects.bulk_create(company_rows, ignore_conflicts=True)
