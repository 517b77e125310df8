"""An email's links to the CRM's contacts and companies: the rows are the email's (the
many-to-many tables live on sync.models.Email), so sync writes them, here and only here.

The CRM, one layer below, decides who an email is about (crm.services.email_people) and
records manual changes (crm.services.email_link_record); it never imports this app's
models.
"""

import json

from django.db import connection, transaction
from django.db.models import Q

from crm.services import email_link_record, email_people, link_target

from .models import Email


def emails_link(
    *,
    emails: list[tuple[int, dict[str, str], str]],
    own_domains: set[str],
    create_for_unknown_senders: bool = False,
) -> None:
    """Link each new email to the contacts of every address it carries and to their
    companies (crm.services.email_people says who). `emails` holds (email id,
    {address: display name}, sender). Two queries for the links, whatever the batch's
    size; a link already there stays (it is not added twice). Addresses are compared in
    lower case, as contacts keep them (an email this app sent keeps them as typed)."""
    emails = [
        (email_id, {address.lower(): name for address, name in names.items()}, sender.lower())
        for email_id, names, sender in emails
    ]
    people = email_people(
        emails=emails,
        own_domains=own_domains,
        create_for_unknown_senders=create_for_unknown_senders,
    )
    contact_rows, company_rows = [], []
    for email_id, (contacts, companies) in people.items():
        contact_rows += [Email.contacts.through(email_id=email_id, contact_id=c) for c in contacts]
        company_rows += [
            Email.companies.through(email_id=email_id, company_id=c) for c in companies
        ]
    Email.contacts.through.objects.bulk_create(contact_rows, ignore_conflicts=True)
    Email.companies.through.objects.bulk_create(company_rows, ignore_conflicts=True)


class LinkTargetMissing(Exception):
    """The contact or company to link or unlink does not exist (any more)."""


@transaction.atomic
def email_link_change(
    *, email: Email, actor, link: bool, contact_id: int | None = None,
    company_id: int | None = None,
) -> bool:  # fmt: skip
    """Link an email to a contact or a company by hand, or unlink it; recorded (who,
    what, when). A manual unlink stays: the sync links only the emails it stores anew.
    Returns whether anything changed (linking twice, or unlinking what is not linked,
    changes and records nothing)."""
    target = link_target(contact_id=contact_id, company_id=company_id)
    if target is None:
        raise LinkTargetMissing
    if contact_id is not None:
        through, column = Email.contacts.through, "contact_id"
    else:
        through, column = Email.companies.through, "company_id"
    if link:
        _row, changed = through.objects.get_or_create(email_id=email.pk, **{column: target.pk})
    else:
        changed = through.objects.filter(email_id=email.pk, **{column: target.pk}).delete()[0] > 0
    if changed:
        email_link_record(email=email, actor=actor, link=link, target=target)
    return changed


# A later contact's addresses looked for in one pass over the emails at a time: the pass
# costs what the emails do (0.9-1.1 s over 300,000 here, for 50 or 1,000 addresses alike).
ADDRESSES_AT_ONCE = 1000


def emails_link_to_contacts(*, contact_ids: list[int]) -> int:
    """The emails already downloaded, linked to contacts that came after them (imported
    from an address book, added by hand): each email from or to one of a contact's
    addresses, to the contact and its company, as the download would have linked it;
    never to a contact or company a person unlinked it from by hand. Returns the contact
    links written (those there already stay as they are)."""
    from crm.models import Contact, EmailLinkChange

    if not contact_ids:
        return 0
    contacts = {
        address.address.strip().lower(): contact
        for contact in Contact.objects.filter(pk__in=contact_ids).prefetch_related("addresses")
        for address in contact.addresses.all()
    }
    people = set(contacts.values())
    # (email, contact or company) pairs a person unlinked by hand: a later manual link
    # is a row already, which the inserts below leave as it is.
    unlinked = set(
        EmailLinkChange.objects.filter(
            action=EmailLinkChange.Action.UNLINKED,
            target_id__in={c.pk for c in people} | {c.company_id for c in people if c.company_id},
        ).values_list("kind", "email_id", "target_id")
    )
    contact_kind, company_kind = EmailLinkChange.Kind.CONTACT, EmailLinkChange.Kind.COMPANY
    addresses = sorted(contacts)
    contact_rows, company_rows = set(), set()
    for start in range(0, len(addresses), ADDRESSES_AT_ONCE):
        chunk = set(addresses[start : start + ADDRESSES_AT_ONCE])
        for email_id, sender, to, cc in _emails_naming(sorted(chunk)):
            named = {sender.lower(), *(p.get("address", "").lower() for p in [*to, *cc])}
            for address in named & chunk:
                contact = contacts[address]
                if (contact_kind, email_id, contact.pk) not in unlinked:
                    contact_rows.add((email_id, contact.pk))
                company = contact.company_id
                if company and (company_kind, email_id, company) not in unlinked:
                    company_rows.add((email_id, company))
    through = Email.contacts.through
    through.objects.bulk_create(
        [through(email_id=e, contact_id=c) for e, c in sorted(contact_rows)],
        ignore_conflicts=True,
    )
    through = Email.companies.through
    through.objects.bulk_create(
        [through(email_id=e, company_id=c) for e, c in sorted(company_rows)],
        ignore_conflicts=True,
    )
    return len(contact_rows)


def _emails_naming(addresses: list[str]):
    """(id, sender, to, cc) of the emails from or to any of `addresses` (lower case, as
    the parser stores them)."""
    if connection.vendor == "postgresql":
        # One pass: each email's To and Cc read once, the addresses as one array.
        table = connection.ops.quote_name(Email._meta.db_table)
        sql = (
            f'SELECT id, from_address, "to", cc FROM {table} '  # noqa: S608
            "WHERE lower(from_address) = ANY(%s) OR EXISTS (SELECT 1 FROM "
            'jsonb_array_elements("to" || cc) AS person '
            "WHERE lower(person->>'address') = ANY(%s))"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [addresses, addresses])
            while rows := cursor.fetchmany(2000):
                # Django reads jsonb as its text (its fields decode it).
                for pk, sender, to, cc in rows:
                    yield pk, sender, _json(to), _json(cc)
        return
    # SQLite: the text of To and Cc is searched (the caller checks each email), a few
    # addresses a query (its expressions nest no deeper than 1,000).
    seen = set()
    for start in range(0, len(addresses), 100):
        part = addresses[start : start + 100]
        named = Q(from_address__in=part)
        for address in part:
            named |= Q(to__icontains=address) | Q(cc__icontains=address)
        rows = Email.objects.filter(named).order_by().values_list("pk", "from_address", "to", "cc")
        for row in rows:
            if row[0] not in seen:
                seen.add(row[0])
                yield row


def _json(value):
    return json.loads(value) if isinstance(value, str | bytes) else value
