from django import template

from ..live import POLL_SECONDS, newest_email_id

register = template.Library()

# The pages whose list of emails a poller watches besides the Email page: a contact's
# and a company's timeline, by the address of the page it is on.
TIMELINES = {"crm:contact": "contact", "crm:company": "company"}


@register.inclusion_tag("sync/new_emails.html", takes_context=True)
def new_emails_poller(context) -> dict:
    """The poller of a page that lists emails (sync.live): the newest email's id now,
    and the timeline it is on, if any."""
    match = getattr(context.get("request"), "resolver_match", None)
    scope = {}
    if match is not None and match.view_name in TIMELINES:
        scope = {TIMELINES[match.view_name]: match.kwargs["pk"]}
    return {"after": newest_email_id(), "seconds": POLL_SECONDS, "scope": scope}
