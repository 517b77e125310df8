from django import template

from sync.live import POLL_SECONDS, poll_state

from ..selectors import emails_for_poller

register = template.Library()

# The pages a poller watches besides the Email page, by the address of the page it is
# on: a contact's and a company's timeline, and a mailbox's settings (its status).
SCOPES = {"crm:contact": "contact", "crm:company": "company", "accounts:settings": "account"}


@register.inclusion_tag("sync/new_emails.html", takes_context=True)
def new_emails_poller(context) -> dict:
    """The poller of a page that lists emails (sync.live): its state now, read from the
    mailboxes the user may see there only, and the timeline or mailbox it watches, if
    any. Here (sharing) rather than in sync: who may see what is sharing's to say."""
    request = context.get("request")
    match = getattr(request, "resolver_match", None)
    scope = {}
    if match is not None and match.view_name in SCOPES:
        scope = {SCOPES[match.view_name]: match.kwargs["pk"]}
    mailboxes, shown = emails_for_poller(request.user, **scope)
    state = poll_state(shown, mailboxes)
    return {"state": state, "seconds": POLL_SECONDS, "scope": scope}
