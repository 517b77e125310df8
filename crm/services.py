"""Linking emails to the CRM's contacts and companies."""

from django.db import transaction

from .models import Company, Contact, ContactAddress

NO_REPLY_MARKERS = ("noreply", "no-reply", "donotreply", "do-not-reply", "mailer-daemon", "bounce")


def _is_no_reply(address: str) -> bool:
    local = address.split("@", 1)[0].lower()
    return any(marker in local for marker in NO_REPLY_MARKERS)


def contacts_link(
    *,
    email,
    names_by_address: dict[str, str],
    sender: str,
    own_domains: set[str],
    create_for_unknown_senders: bool = False,
) -> None:
    """Link an email to the contacts of every address it carries, and to their companies
    (or to a company whose web domain matches an address's domain).

    A contact without a name takes the display name from the email. With the option on,
    an unknown external sender becomes a contact, never a no-reply address or one of
    the company's own domains.
    """
    addresses = {a for a in names_by_address if a}
    if not addresses:
        return
    known = {
        entry.address: entry.contact
        for entry in ContactAddress.objects.filter(address__in=addresses).select_related("contact")
    }
    if (
        create_for_unknown_senders
        and sender
        and sender not in known
        and sender.split("@", 1)[-1] not in own_domains
        and not _is_no_reply(sender)
    ):
        with transaction.atomic():
            contact = Contact.objects.create(name=names_by_address.get(sender, ""))
            entry, created = ContactAddress.objects.get_or_create(
                address=sender, defaults={"contact": contact}
            )
            if not created:
                contact.delete()
            known[sender] = entry.contact
    contacts = set()
    for address, contact in known.items():
        name = names_by_address.get(address, "").strip()
        if not contact.name and name and name.lower() != address:
            contact.name = name[:255]
            contact.save(update_fields=["name"])
        contacts.add(contact)
    companies = {c.company for c in contacts if c.company_id}
    domains = {a.split("@", 1)[-1] for a in addresses} - own_domains
    if domains:
        companies |= set(Company.objects.filter(web_domain__in=domains))
    if contacts:
        email.contacts.add(*contacts)
    if companies:
        email.companies.add(*companies)
