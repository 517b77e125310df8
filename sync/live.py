"""New emails on an open page without a reload (issue 18, point 5).

A page that lists emails (the Email page, a contact's or a company's timeline) or shows a
mailbox's status (its settings page) holds a small poller (`{% new_emails_poller %}`,
sync/templatetags/live.py) carrying the id of the newest email stored anywhere when it
was drawn, and which list it watches. Every few seconds htmx asks `new_emails` with that
id:

- nothing stored since: 204, and htmx leaves the page alone. One query, an index's last
  entry, whatever the number of emails: an idle open page costs that and its session.
- emails stored since, none of them the user's to see here: the poller comes back with
  the newer id (so the next question looks past them), and nothing else changes.
- some of them are: the same, and the response triggers `new-emails` on the page; the
  list listens for it and reloads itself through its own view (the same keyset query as
  the page's first load), and so do the mailboxes' statuses. What "the user's to see
  here" means is the page's own rule: the Email page's mailboxes, the timeline's, or the
  one mailbox whose status the user may see (sharing.selectors), checked on the few
  emails stored since. Reloading the list, rather
  than inserting rows, keeps its order by date (a new email may be older than those
  shown: a first download, a delayed message), its count, and an email whose batch
  committed after a later one's: it shows with the next arrival.

The ids are the emails' own, shown in their addresses already; nothing else leaves.
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from sharing.selectors import emails_for_timeline, mailboxes_for_panel, mailboxes_for_status

from .models import Email

# Seconds between two questions of an open page.
POLL_SECONDS = 3


def newest_email_id() -> int:
    """The newest email's id, anyone's: the primary key index's last entry."""
    return Email.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def _visible_since(user, after: int, top: int, scope: dict[str, int]) -> bool:
    """Whether an email stored in (after, top] shows on the user's list: a range of the
    primary key (the few emails stored since the last question), by the list's rule."""
    if "account" in scope:
        mailbox = mailboxes_for_status(user).filter(pk=scope["account"]).values("pk")
        emails = Email.objects.filter(account__in=mailbox)
    elif scope:
        emails = emails_for_timeline(user, **scope)
    else:
        mailboxes = list(mailboxes_for_panel(user).values_list("pk", flat=True))
        emails = Email.objects.filter(account__in=mailboxes)
    return emails.filter(pk__gt=after, pk__lte=top).exists()


def _number(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdecimal() and len(value) < 19 else None


@login_required
@require_GET
def new_emails(request: HttpRequest) -> HttpResponse:
    after = _number(request.GET.get("after", "")) or 0
    # A timeline's list (contact or company) or a mailbox's status, else the Email page's.
    scope = {
        name: number
        for name in ("contact", "company", "account")
        if (number := _number(request.GET.get(name, ""))) is not None
    }
    top = newest_email_id()
    if top <= after:
        return HttpResponse(status=204)
    context = {"after": top, "seconds": POLL_SECONDS, "scope": scope}
    response = render(request, "sync/new_emails.html", context)
    if _visible_since(request.user, after, top, scope):
        response["HX-Trigger"] = "new-emails"
    return response
