"""The Email page and the mailbox list."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from mailsetup.csp import allow_oauth_forms
from mailsetup.http import search_text
from mailsetup.keyset import Cursor, bounded_count, dated_page, dated_page_before
from sending.selectors import outgoing_unsent
from sharing.selectors import (
    emails_for_panel,
    emails_found_for_panel,
    mailboxes_shared_with,
    removed_mailboxes_with_grants,
)
from sync.search import vectors_waiting
from sync.selectors import mailboxes_health

from ..selectors import accounts_for_user, open_notifications, sign_in_alerts
from ..services import notification_dismiss
from .common import reconnect_origins

PANEL_PAGE = 50
# The Email page says how many emails there are up to this many, "more than" past it.
PANEL_COUNTED = 1_000


@login_required
def email_page(request: HttpRequest) -> HttpResponse:
    query = search_text(request)
    if query:
        # Search results, best first: pages by number over at most search.RANKED.
        found = emails_found_for_panel(request.user, search=query)
        page = Paginator(found, PANEL_PAGE).get_page(request.GET.get("page"))
        # The mailboxes as a list of ids: as a subquery, the planner read every
        # mailbox's waiting emails (another user's first sync: 150,000) to count these.
        waiting = vectors_waiting(found.mailboxes)
        listed = {
            "emails": page, "waiting": waiting, "counted": len(found),
            "count": len(found) + found.more,
        }  # fmt: skip
    else:
        emails = emails_for_panel(request.user)
        # Newest first, a page after another (keyset): nothing counts every email.
        before = Cursor.parse(request.GET.get("before"))
        if before is not None:
            page = dated_page_before(emails, before, PANEL_PAGE)
        else:
            page = dated_page(emails, Cursor.parse(request.GET.get("after")), PANEL_PAGE)
        listed = {"emails": page, "count": bounded_count(emails, PANEL_COUNTED)}
        listed["counted"] = PANEL_COUNTED
    context = {**listed, "query": query}
    if request.htmx and request.htmx.target == "panel-emails":
        return render(request, "accounts/email.html#emails", context)
    accounts = list(accounts_for_user(request.user))
    context |= {
        "outbox": outgoing_unsent(request.user),
        "accounts": accounts,
        "shared": mailboxes_shared_with(request.user),
        "notifications": open_notifications(request.user),
        "alerts": sign_in_alerts(request.user, accounts=accounts),
    }
    response = render(request, "accounts/email.html", context)
    return allow_oauth_forms(response, reconnect_origins(context["alerts"]))


@login_required
def mailbox_list(request: HttpRequest) -> HttpResponse:
    accounts = list(accounts_for_user(request.user).select_related("sync"))
    # Each row says how the mailbox is, as its settings page does: a mailbox whose
    # password stopped working must not look like one that works (one read for all).
    healths = mailboxes_health(accounts)
    context = {
        "accounts": [(account, healths[account.pk]) for account in accounts],
        "shared": mailboxes_shared_with(request.user),
        "alerts": sign_in_alerts(request.user, accounts=accounts),
        "removed": removed_mailboxes_with_grants(request.user),
    }
    response = render(request, "accounts/mailboxes.html", context)
    return allow_oauth_forms(response, reconnect_origins(context["alerts"]))


@login_required
@require_POST
def dismiss_notification(request: HttpRequest, pk: int) -> HttpResponse:
    if not notification_dismiss(user=request.user, notification_id=pk):
        raise Http404
    if request.htmx:
        # In its place, with the focus: an empty answer took the element that had it.
        return HttpResponse(
            f'<p class="muted" id="notification-{pk}" role="status" tabindex="-1" autofocus>'
            "Dismissed.</p>"
        )
    return redirect("accounts:email")
