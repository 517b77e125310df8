"""An email's links to the CRM's contacts and companies: the rows are the email's (the
many-to-many tables live on sync.models.Email), so sync writes them, here and only here.

The CRM, one layer below, decides who an email is about (crm.services.email_people) and
records manual changes (crm.services.email_link_record); it never imports this app's
models.
"""

from django.db import transaction

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
    size; a link already there stays (it is not added twice)."""
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
