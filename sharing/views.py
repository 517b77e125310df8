"""The "Shared access" section of a mailbox's settings page: the switch and the grants
table, with a picker that finds users and roles. Adding a row or searching comes back
with the table as the user left it; nothing is saved until Save."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts.models import EmailAccount
from accounts.views import settings_page

from .forms import KEY, GrantsForm
from .selectors import can_share, grant_candidates, grants_of, mailboxes_for_setup
from .services import GrantConflict, mailbox_sharing_update, removed_mailbox_grants_revoke

SECTION = "sharing/section.html"


def _shareable(request: HttpRequest, pk: int) -> EmailAccount:
    """The mailbox, if the user may set it up (else 404) and edit who shares it (else
    403: they can see the section, read-only)."""
    account = get_object_or_404(mailboxes_for_setup(request.user), pk=pk)
    if not can_share(request.user, account):
        raise PermissionDenied
    return account


def _context(request: HttpRequest, account: EmailAccount, form=None, **extra) -> dict:
    form = form or GrantsForm(account=account, grants=grants_of(account))
    return {"account": account, "sharing_form": form, "can_share": True, **extra}


@login_required
@require_POST
def mailbox_sharing(request: HttpRequest, pk: int) -> HttpResponse:
    account = _shareable(request, pk)
    form = GrantsForm(request.POST, account=account, grants=grants_of(account))
    query = request.POST.get("q", "")
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
    if saved and not request.htmx:
        messages.success(request, "Shared access saved.")
        return redirect(f"{account.get_absolute_url()}#settings-sharing")
    if saved:
        context = _context(request, account, sharing_saved=True)
    else:
        # Search, add a row, or a save that failed: the table comes back as it was left.
        context = _context(
            request, account, form,
            query=query, candidates=grant_candidates(account, query, form.keys),
        )  # fmt: skip
    if request.htmx:
        return render(request, f"{SECTION}#sharing", context)
    return settings_page(request, account, extra=context)


@login_required
@require_GET
def grantee_search(request: HttpRequest, pk: int) -> HttpResponse:
    """The picker's matches as the user types (htmx); without JavaScript the section's
    Search button does the same through mailbox_sharing."""
    account = _shareable(request, pk)
    query = request.GET.get("q", "")
    exclude = [key for key in request.GET.getlist("row") if KEY.match(key)]
    context = {"query": query, "candidates": grant_candidates(account, query, exclude)}
    return render(request, f"{SECTION}#candidates", context)


@login_required
@require_POST
def removed_grants_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke the grants a removed mailbox still has: its owner's alone (404 for anyone
    else, and for a mailbox that is not removed)."""
    account = get_object_or_404(EmailAccount, pk=pk, owner=request.user, removed_at__isnull=False)
    revoked = removed_mailbox_grants_revoke(account=account, actor=request.user)
    if revoked:
        messages.success(request, f"{account.address}: access revoked for {', '.join(revoked)}.")
    target = reverse("accounts:list")
    if request.htmx:
        return HttpResponseClientRedirect(target)
    return redirect(target)
