from django import template

from ..live import POLL_SECONDS, newest_email_id

register = template.Library()

# The pages a poller watches besides the Email page, by the address of the page it is
# on: a contact's and a company's timeline, and a mailbox's settings (its status).
SCOPES = {"crm:contact": "contact", "crm:company": "company", "accounts:settings": "account"}


@register.inclusion_tag("sync/new_emails.html", takes_context=True)
def new_emails_poller(context) -> dict:
    """The poller of a page that lists emails (sync.live): the newest email's id now,
    and the timeline or mailbox it watches, if any."""
    match = getattr(context.get("request"), "resolver_match", None)
    scope = {}
    if match is not None and match.view_name in SCOPES:
        scope = {SCOPES[match.view_name]: match.kwargs["pk"]}
    return {"after": newest_email_id(), "seconds": POLL_SECONDS, "scope": scope}
