"""The Contacts and Companies lists' cells, and the timelines' email entries, that every
row repeats."""

from django import template
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join

from mailsetup.templating import id_url, short_datetime

register = template.Library()


@register.simple_tag
def latest_email(email) -> str:
    """A row's latest email the user may see: its subject, linked, and its date; what
    crm/latest.html was, as one tag: an include with its `with`, `if`, link and filters
    for each of a page's 50 rows took half of the list's rendering (issue 19)."""
    if email is None:
        return format_html('<span class="muted">{}</span>', "none you can see")
    return format_html(
        '<a href="{}">{}</a> <span class="muted">{}</span>',
        id_url("sync:email", email.pk), email.subject or "(no subject)",
        short_datetime(email.sent_at),
    )  # fmt: skip


@register.simple_tag
def timeline_email(email) -> str:
    """An email on a contact's or company's timeline: its date, subject (linked) and
    sender; as one tag for the reason `latest_email` is (a timeline shows 50)."""
    return format_html(
        '<li class="entry-email"><span class="muted">{}</span>\n'
        '<span class="tag">Email</span> <a href="{}">{}</a>\n'
        '<span class="muted">from {}</span></li>',
        short_datetime(email.sent_at), id_url("sync:email", email.pk),
        email.subject or "(no subject)", email.from_name or email.from_address,
    )  # fmt: skip


@register.simple_tag
def contact_row(contact) -> str:
    """A row of the Contacts list: the contact (linked) and job title, company (linked),
    addresses and latest email; one tag for the reason `latest_email` is. The row as
    crm.views.timelines.page_details gives it (`label`, `address_list`, `latest_email`)."""
    title = contact.job_title and format_html(' <span class="muted">{}</span>', contact.job_title)
    company = contact.company
    company = company and format_html(
        '<a href="{}">{}</a>', id_url("crm:company", contact.company_id), company.name
    )
    return format_html(
        '<tr>\n<td><a href="{}">{}</a>{}</td>\n'
        '<td data-label="Company">{}</td>\n'
        '<td data-label="Email addresses">{}</td>\n'
        '<td data-label="Latest email">{}</td>\n</tr>\n',
        id_url("crm:contact", contact.pk), contact.label, title or "", company or "",
        format_html_join(", ", "{}", ((address,) for address in contact.address_list)),
        latest_email(contact.latest_email),
    )  # fmt: skip


@register.simple_tag
def company_row(company) -> str:
    """A row of the Companies list: the company (linked), web domain, number of contacts
    and latest email; one tag for the reason `latest_email` is. The row as
    crm.views.timelines.page_details gives it (`contact_count`, `latest_email`)."""
    return format_html(
        '<tr>\n<td><a href="{}">{}</a></td>\n'
        '<td data-label="Web domain">{}</td>\n'
        '<td data-label="Contacts">{}</td>\n'
        '<td data-label="Latest email">{}</td>\n</tr>\n',
        id_url("crm:company", company.pk), company.name, company.web_domain,
        localize(company.contact_count), latest_email(company.latest_email),
    )  # fmt: skip
