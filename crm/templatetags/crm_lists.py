"""The Contacts and Companies lists' cells, and the timelines' email entries, that every
row repeats."""

from django import template
from django.utils.formats import localize

from mailsetup.templating import RowKit, html_row

register = template.Library()


def latest_email(kit: RowKit, email) -> str:
    """A row's latest email the user may see: its subject, linked, and its date; what
    crm/latest.html was, as one function: an include with its `with`, `if`, link and
    filters for each of a page's 50 rows took half of the list's rendering (issue 19)."""
    if email is None:
        return html_row('<span class="muted">{}</span>', "none you can see")
    return html_row(
        '<a href="{}">{}</a> <span class="muted">{}</span>',
        kit.url("sync:email", email.pk), email.subject or "(no subject)", kit.when(email.sent_at),
    )  # fmt: skip


@register.simple_tag(takes_context=True)
def timeline_email(context, email) -> str:
    """An email on a contact's or company's timeline: its date, subject (linked) and
    sender; as one tag for the reason `latest_email` is (a timeline shows 50)."""
    kit = RowKit.of(context)
    return html_row(
        '<li class="entry-email"><span class="muted">{}</span>\n'
        '<span class="tag">Email</span> <a href="{}">{}</a>\n'
        '<span class="muted">from {}</span></li>',
        kit.when(email.sent_at), kit.url("sync:email", email.pk),
        email.subject or "(no subject)", email.from_name or email.from_address,
    )  # fmt: skip


@register.simple_tag(takes_context=True)
def contact_row(context, contact) -> str:
    """A row of the Contacts list: the contact (linked) and job title, company (linked),
    addresses and latest email; one tag for the reason `latest_email` is. The row as
    crm.views.timelines.page_details gives it (`label`, `address_list`, `latest_email`)."""
    kit = RowKit.of(context)
    title = contact.job_title and html_row(' <span class="muted">{}</span>', contact.job_title)
    company = contact.company
    company = company and html_row(
        '<a href="{}">{}</a>', kit.url("crm:company", contact.company_id), company.name
    )
    return html_row(
        '<tr>\n<td><a href="{}">{}</a>{}</td>\n'
        '<td data-label="Company">{}</td>\n'
        '<td data-label="Email addresses">{}</td>\n'
        '<td data-label="Latest email">{}</td>\n</tr>\n',
        kit.url("crm:contact", contact.pk), contact.label, title or "", company or "",
        html_row(", ".join(["{}"] * len(contact.address_list)), *contact.address_list),
        latest_email(kit, contact.latest_email),
    )  # fmt: skip


@register.simple_tag(takes_context=True)
def company_row(context, company) -> str:
    """A row of the Companies list: the company (linked), web domain, number of contacts
    and latest email; one tag for the reason `latest_email` is. The row as
    crm.views.timelines.page_details gives it (`contact_count`, `latest_email`)."""
    kit = RowKit.of(context)
    return html_row(
        '<tr>\n<td><a href="{}">{}</a></td>\n'
        '<td data-label="Web domain">{}</td>\n'
        '<td data-label="Contacts">{}</td>\n'
        '<td data-label="Latest email">{}</td>\n</tr>\n',
        kit.url("crm:company", company.pk), company.name, company.web_domain,
        localize(company.contact_count), latest_email(kit, company.latest_email),
    )  # fmt: skip
