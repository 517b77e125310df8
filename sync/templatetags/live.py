from django import template

from ..live import POLL_SECONDS, newest_email_id

register = template.Library()


@register.inclusion_tag("sync/new_emails.html")
def new_emails_poller() -> dict:
    """The poller of a page that lists emails (sync.live): the newest email's id now."""
    return {"after": newest_email_id(), "seconds": POLL_SECONDS}
