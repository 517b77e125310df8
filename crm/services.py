"""Linking emails to the CRM's contacts and companies, a batch of emails at a time."""

from django.db import transaction

from .models import Activity, Company, Contact, ContactAddress, ContactLink, address_key
from .selectors import company_by_name, contact_by_name

NO_REPLY_MARKERS = ("noreply", "no-reply", "donotreply", "do-not-reply", "mailer-daemon", "bounce")


def _is_no_reply(address: str) -> bool:
    local = address.split("@", 1)[0].lower()
    return any(marker in local for marker in NO_REPLY_MARKERS)


def _domain(address: str) -> str:
    return address.split("@", 1)[-1]


def email_people(
    *,
    emails: list[tuple[int, dict[str, str], str]],
    own_domains: set[str],
    create_for_unknown_senders: bool = False,
) -> dict[int, tuple[set[int], set[int]]]:
    """Who each email is about: {email id: (contact ids, company ids)}, the contacts of
    every address it carries, and their companies or a company whose web domain matches
    an address's domain. The CRM decides who is who; the link rows themselves are the
    email's, written by sync (sync/links.py), so that this app never writes the tables of
    the app above it.

    `emails` holds (email id, {address: display name}, sender). A contact without a name
    takes the display name from the email. With the option on, an unknown external
    sender becomes a contact, never a no-reply address or one of our own domains.
    Queries do not grow with the number of emails.
    """
    if not emails:
        return {}
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
    people = {}
    for email_id, names_by_address, _sender in emails:
        contacts = {known[a] for a in names_by_address if a in known}
        companies = {c.company_id for c in contacts if c.company_id}
        companies |= {by_domain[_domain(a)].pk for a in names_by_address if _domain(a) in by_domain}
        people[email_id] = ({c.pk for c in contacts}, companies)
    return people


def _people(addresses: set[str], own_domains: set[str]) -> tuple[set[Contact], set[int]]:
    """The contacts who own the addresses, and their companies or those whose web
    domain matches an outside address."""
    contacts = {
        entry.contact
        for entry in ContactAddress.objects.filter(address__in=addresses).select_related("contact")
    }
    companies = {c.company_id for c in contacts if c.company_id}
    domains = {_domain(a) for a in addresses} - own_domains
    if domains:
        companies |= set(
            Company.objects.filter(web_domain__in=domains).values_list("pk", flat=True)
        )
    return contacts, companies


@transaction.atomic
def activity_save(
    *, account, kind: str, external_id: str, values: dict, people: set[str], own_domains: set[str],
    contact_names: set[str] = frozenset(), company_names: set[str] = frozenset(),
) -> Activity:  # fmt: skip
    """A meeting or task from the mailbox, written once per item (a second import
    updates it) and linked to the contacts and companies of the people in it (by
    address), and to those a task names (the one contact or company of that name)."""
    activity, _created = Activity.objects.update_or_create(
        account=account, external_id=external_id, defaults={"kind": kind, **values}
    )
    contacts, companies = _people({p.lower() for p in people if p}, own_domains)
    for name in contact_names:
        if (contact := contact_by_name(name)) is not None:
            contacts.add(contact)
            if contact.company_id:
                companies.add(contact.company_id)
    companies |= {c.pk for name in company_names if (c := company_by_name(name))}
    activity.contacts.set(contacts)
    activity.companies.set(companies)
    return activity


def activities_prune(*, account, kind: str, keep: set[str], starts_from=None, starts_until=None):
    """Remove the mailbox's activities of a kind that the server no longer has (within
    the window that was read, for meetings); returns how many went."""
    gone = Activity.objects.filter(account=account, kind=kind).exclude(external_id__in=keep)
    if starts_from is not None:
        gone = gone.filter(starts_at__gte=starts_from, starts_at__lt=starts_until)
    removed, _ = gone.delete()
    return removed


def contact_export_record(*, account, contact: Contact, item_id: str, folder: str) -> None:
    """A contact written into the mailbox's address book: remembered, so that neither
    the next export writes it again nor an import takes it for a new one."""
    ContactLink.objects.get_or_create(
        account=account, contact=contact, defaults={"item_id": item_id, "folder": folder}
    )


@transaction.atomic
def contact_import(
    *, account, item_id: str, folder: str, name: str, company_name: str, addresses: list[str],
    phone: str, job_title: str,
) -> tuple[Contact, bool]:  # fmt: skip
    """One contact of the mailbox's address book into the CRM: found again by its item
    (an earlier import) or by one of its addresses, else made. What the CRM already
    knows is kept; what it lacks is filled in. Its company is the one company of that
    name, none when the name is ambiguous. Returns (contact, created)."""
    addresses = list(dict.fromkeys(address_key(a) for a in addresses if a and "@" in a))
    link = (
        ContactLink.objects.select_for_update()
        .filter(account=account, item_id=item_id)
        .select_related("contact")
        .first()
    )
    contact = link.contact if link else None
    if contact is None and addresses:
        known = (
            ContactAddress.objects.filter(address__in=addresses).select_related("contact").first()
        )
        contact = known.contact if known else None
    created = contact is None
    if contact is None:
        contact = Contact()
    name = " ".join(name.split())[:255]
    if name and not contact.name:
        contact.name = name
    contact.job_title = contact.job_title or job_title[:255]
    contact.phone = contact.phone or phone[:100]
    if contact.company_id is None:
        contact.company = company_by_name(company_name)
    contact.save()
    for address in addresses:
        # An address that is another contact's stays theirs.
        ContactAddress.objects.get_or_create(address=address, defaults={"contact": contact})
    if link is None:
        already = ContactLink.objects.filter(account=account, contact=contact).exists()
        if not already:
            ContactLink.objects.create(
                account=account, item_id=item_id, contact=contact, folder=folder
            )
    return contact, created


def link_target(*, contact_id: int | None = None, company_id: int | None = None):
    """The contact or company an email is to be linked to or unlinked from by hand, or
    None if it does not exist (any more)."""
    if (contact_id is None) == (company_id is None):
        raise ValueError("name one contact or one company")
    if contact_id is not None:
        return Contact.objects.filter(pk=contact_id).first()
    return Company.objects.filter(pk=company_id).first()


def email_link_record(*, email, actor, link: bool, target: Contact | Company) -> None:
    """Record a link made or undone by hand (who, what, when); sync.links writes the
    link itself."""
    from .models import EmailLinkChange

    EmailLinkChange.objects.create(
        email=email, subject=(email.subject or "")[:300], actor=actor,
        action=EmailLinkChange.Action.LINKED if link else EmailLinkChange.Action.UNLINKED,
        kind="contact" if isinstance(target, Contact) else "company", target_id=target.pk,
        target=str(target)[:300],
    )  # fmt: skip
