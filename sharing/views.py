"""The "Shared access" section of a mailbox's settings page: the switch and the grants
table, with a picker that finds users and roles. Adding a row or searching comes back
with the table as the user left it; nothing is saved until Save."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts.models import EmailAccount
from accounts.views.settings import section_response
from mailsetup.http import search_text

from .access import mailbox_or_404
from .forms import KEY, GrantsForm
from .selectors import MailboxAction, grant_candidates, grants_of
from .services import GrantConflict, mailbox_sharing_update, removed_mailbox_grants_revoke

SECTION = "sharing/section.html"


def _context(request: HttpRequest, account: EmailAccount, form=None, **extra) -> dict:
    form = form or GrantsForm(account=account, grants=grants_of(account))
    return {"account": account, "sharing_form": form, "can_share": True, **extra}


@login_required
@require_POST
def mailbox_sharing(request: HttpRequest, pk: int) -> HttpResponse:
    account = mailbox_or_404(request.user, pk, MailboxAction.SHARE)
    form = GrantsForm(request.POST, account=account, grants=grants_of(account))
    query = request.POST.get("q", "")
    added = request.POST.get("add", "")
    if added:
        # The person looked for is in the table now: the search is done, and its
        # "no one matches" (they are no candidate any more) would say the opposite.
        query = ""
    saved = False
    if "save" in request.POST and form.is_valid():
        try:
            mailbox_sharing_update(
                account=account, actor=request.user, shared=form.shared,
                shared_shown=form.shared_shown, rows=form.rows,
            )  # fmt: skip
        except GrantConflict as conflict:
            form.conflicted(conflict)
        else:
            saved = True
    if saved:
        context = _context(request, account, sharing_saved=True)
    else:
        # Search, add a row, or a save that failed: the table comes back as it was left.
        context = _context(
            request, account, form,
            query=query, candidates=grant_candidates(account, query, form.keys), added=added,
            sharing_failed="save" in request.POST,
        )  # fmt: skip
    return section_response(
        request, account, anchor="sharing", partial=f"{SECTION}#sharing", context=context,
        saved="Shared access saved." if saved else "",
    )  # fmt: skip


@login_required
@require_GET
def grantee_search(request: HttpRequest, pk: int) -> HttpResponse:
    """The picker's matches as the user types (htmx); without JavaScript the section's
    Search button does the same through mailbox_sharing."""
    account = mailbox_or_404(request.user, pk, MailboxAction.SHARE)
    query = search_text(request)
    exclude = [key for key in request.GET.getlist("row") if KEY.fullmatch(key)]
    context = {"query": query, "candidates": grant_candidates(account, query, exclude)}
    return render(request, f"{SECTION}#candidates", context)


@login_required
@require_POST
def removed_grants_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke the grants a removed mailbox still has: its owner's alone (404 for anyone
    else, and for a mailbox that is not removed)."""
    account = mailbox_or_404(request.user, pk, MailboxAction.REVOKE_KEPT_GRANTS)
    revoked = removed_mailbox_grants_revoke(account=account, actor=request.user)
    if revoked:
        messages.success(request, f"{account.address}: access revoked for {', '.join(revoked)}.")
    target = reverse("accounts:list")
    if request.htmx:
        return HttpResponseClientRedirect(target)
    return redirect(target)
