"""The Contacts and Companies lists' cells, and the timelines' email entries, that every
row repeats."""

from django import template
from django.utils.formats import date_format
from django.utils.html import format_html
from django.utils.timezone import template_localtime

from mailsetup.templating import id_url

register = template.Library()


@register.simple_tag
def latest_email(email) -> str:
    """A row's latest email the user may see: its subject, linked, and its date; what
    crm/latest.html was, as one tag: an include with its `with`, `if`, link and filters
    for each of a page's 50 rows took half of the list's rendering (issue 19)."""
    if email is None:
        return format_html('<span class="muted">{}</span>', "none you can see")
    when = email.sent_at and date_format(template_localtime(email.sent_at), "SHORT_DATETIME_FORMAT")
    return format_html(
        '<a href="{}">{}</a> <span class="muted">{}</span>',
        id_url("sync:email", email.pk), email.subject or "(no subject)", when or "",
    )  # fmt: skip


@register.simple_tag
def timeline_email(email) -> str:
    """An email on a contact's or company's timeline: its date, subject (linked) and
    sender; as one tag for the reason `latest_email` is (a timeline shows 50)."""
    when = email.sent_at and date_format(template_localtime(email.sent_at), "SHORT_DATETIME_FORMAT")
    return format_html(
        '<li class="entry-email"><span class="muted">{}</span>\n'
        '<span class="tag">Email</span> <a href="{}">{}</a>\n'
        '<span class="muted">from {}</span></li>',
        when or "", id_url("sync:email", email.pk), email.subject or "(no subject)",
        email.from_name or email.from_address,
    )  # fmt: skip
