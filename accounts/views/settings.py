"""A mailbox's settings page and its sections.

Each section is a form that saves on its own: through htmx it swaps only its section,
without JavaScript it posts and comes back to the page (`section_response`, the one
answer every section's save gives, sharing's included).
"""

import copy

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from mail.registry import backend_for
from mailsetup.csp import allow_mail_frame, allow_oauth_forms
from providers.addresses import normalize_address
from sharing.access import mailbox_or_404
from sharing.forms import GrantsForm
from sharing.selectors import MailboxAction, grants_of, mailbox_rights
from sync.sanitize import email_document
from sync.selectors import sync_status

from ..forms import (
    ContactsSettingsForm,
    CredentialsForm,
    DownloadSettingsForm,
    MeetingsSettingsForm,
    SendSettingsForm,
    SignatureForm,
)
from ..models import EmailAccount
from ..oauth import identity_hosts
from ..selectors import same_sign_in_elsewhere, sign_in_alert
from ..services import (
    DOWNLOAD_FIELDS,
    Digest,
    SettingsConflict,
    account_import_now,
    account_remove,
    account_settings_update,
    shown_text,
)
from .common import reconnect_origins, same_site_path

SETTINGS = "accounts/settings.html"
SECTIONS = {"download": DownloadSettingsForm, "send": SendSettingsForm}
# Only an Exchange mailbox has a calendar, tasks and an address book to import.
EXCHANGE_SECTIONS = {"meetings": MeetingsSettingsForm, "contacts": ContactsSettingsForm}
# The sections that change what is downloaded: not every setup user's to change.
DOWNLOAD_SECTIONS = {"download", *EXCHANGE_SECTIONS}


def _sections(account: EmailAccount) -> dict:
    extra = backend_for(account.provider).settings_sections
    return SECTIONS | {name: EXCHANGE_SECTIONS[name] for name in extra}


def close_url(request: HttpRequest, account: EmailAccount) -> str:
    """Where "Close" goes: the page the user came from (`back`, else the Referer), as a
    path on this site only; else the mailbox list. Another site, a scheme-relative or
    odd URL, or the settings page itself never gets through."""
    for candidate in (request.GET.get("back"), request.headers.get("Referer")):
        path = same_site_path(request, candidate)
        if path and not path.startswith(account.get_absolute_url()):
            return path
    return reverse("accounts:list")


def signature_form(account: EmailAccount) -> SignatureForm:
    # The box as saved, even with no signature written yet (a new mailbox's is on:
    # whatever signature is written gets added): a tick saved stays ticked.
    ticked = account.add_signature
    initial = {
        "signature_html": account.signature_html,
        "shown": Digest.of(account.signature_html).hex,
        "add_signature": ticked,
        "add_signature_shown": "1" if ticked else "",
    }
    return SignatureForm(initial=initial, prefix="signature")


def settings_page(
    request: HttpRequest,
    account: EmailAccount,
    extra: dict | None = None,
    bound: dict | None = None,
) -> HttpResponse:
    """The whole page; `extra`, a section's state after a POST; `bound`, a section's
    form as it came back (by section name)."""
    rights = mailbox_rights(request.user, account)
    forms = {
        name: (bound or {}).get(name) or _section_form(form_class, account, rights, prefix=name)
        for name, form_class in _sections(account).items()
    }
    context = {
        **rights,
        "sharing_form": GrantsForm(account=account, grants=grants_of(account)),
        "account": account,
        "close_url": close_url(request, account),
        "forms": forms,
        "credentials_form": CredentialsForm(provider=account.provider, prefix="credentials"),
        "signature_form": signature_form(account),
        "preview": account.signature_html
        and email_document(account.signature_html, allow_remote_images=False),
        "alerts": [alert] if (alert := sign_in_alert(account)) else [],
        # Cards of the same accounts through another protocol ("Move to …").
        "move_to": (
            same_sign_in_elsewhere(account.provider, normalize_address(account.address).domain)
            if account.uses_oauth
            else []
        ),
        **sync_status(account),
        **(extra or {}),
    }
    # The signature preview is a sandboxed srcdoc frame.
    response = allow_mail_frame(render(request, SETTINGS, context))
    # "Sign in again" / "Reconnect" (the credentials section) and the banner's button.
    origins = identity_hosts(account.provider).origins if account.uses_oauth else ()
    origins = [*origins, *(o for card in context["move_to"] for o in identity_hosts(card).origins)]
    return allow_oauth_forms(response, [*origins, *reconnect_origins(context["alerts"])])


def section_response(
    request: HttpRequest,
    account: EmailAccount,
    *,
    anchor: str,
    partial: str,
    context: dict,
    saved: str = "",
    bound: dict | None = None,
) -> HttpResponse:
    """The answer to a settings section's POST. Saved (`saved` is its message) without
    htmx: the message, and back to the page at the section (`#settings-<anchor>`), so a
    reload does not post again. Otherwise the section: just its `partial` for htmx (the
    other sections keep their state), else the whole page with the section's state
    (`context`, or its `bound` form) in place."""
    if saved and not request.htmx:
        messages.success(request, saved)
        return redirect(f"{account.get_absolute_url()}#settings-{anchor}")
    if request.htmx:
        rights = mailbox_rights(request.user, account)
        response = render(request, partial, {"account": account, **rights, **context})
        if saved:
            # The page's sync status reads again: what was saved may change it (a new
            # period's download asked for, folders chosen), and it polls only while
            # something runs.
            response["HX-Trigger"] = "sync-settings-saved"
        return response
    if bound is not None:
        return settings_page(request, account, bound=bound)
    return settings_page(request, account, extra=context)


def leave_for_list(request: HttpRequest) -> HttpResponse:
    """Off to the mailbox list: a mailbox that is gone has no settings page."""
    target = reverse("accounts:list")
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


def _section_form(form_class, account: EmailAccount, rights: dict, *args, **kwargs):
    form = form_class(*args, instance=account, **kwargs)
    if not rights["is_owner"] and "is_default_sender" in form.fields:
        # The default sender is the owner's choice among their own mailboxes.
        del form.fields["is_default_sender"]
    return form


@login_required
def account_settings(request: HttpRequest, pk: int) -> HttpResponse:
    return settings_page(request, mailbox_or_404(request.user, pk))


def _section_save(request, account, rights, section: str, form_class):
    """The section's form as posted, and what its save changed (None when nothing was
    saved: the form has the errors, or what someone else saved meanwhile)."""
    # The form gets its own copy: a rejected save must not touch the shown values.
    form = _section_form(form_class, copy.copy(account), rights, request.POST, prefix=section)
    if not form.is_valid():
        return form, None
    # Only what this user changed on the page is written: the other fields keep what
    # is saved, whoever saved it since the page was shown.
    touched = form.touched()
    try:
        changed = account_settings_update(
            account=account, actor=request.user,
            values={name: form.cleaned_data[name] for name in touched},
            shown=form.shown(touched),
        )  # fmt: skip
    except SettingsConflict as conflict:
        form = _section_form(
            form_class, copy.copy(account), rights, form.data_reshown(conflict.now),
            prefix=section,
        )  # fmt: skip
        form.is_valid()
        for name, now in conflict.now.items():
            form.add_error(
                name,
                f"Someone changed this to “{shown_text(name, now)}” since the page was "
                "shown. Save again to replace it with yours.",
            )
        return form, None
    return form, changed


@login_required
@require_POST
def account_settings_save(request: HttpRequest, pk: int, section: str) -> HttpResponse:
    action = MailboxAction.CHANGE_DOWNLOAD if section in DOWNLOAD_SECTIONS else None
    account = mailbox_or_404(request.user, pk, action or MailboxAction.SETUP)
    form_class = _sections(account).get(section)
    if form_class is None:
        raise Http404
    rights = mailbox_rights(request.user, account)
    form, changed = _section_save(request, account, rights, section, form_class)
    context = {"form": form, "section": section}
    if changed is not None:
        # What the save queued (accounts.services): said beside the section.
        context |= {
            "form": _section_form(form_class, account, rights, prefix=section),
            "saved": True,
            "download_queued": bool(DOWNLOAD_FIELDS & set(changed)),
            "import_queued": section in EXCHANGE_SECTIONS
            and account_import_now(account=account, items=section),
        }
    # Just the section's form for htmx: the section's other parts (the signature
    # editor beside "Send emails", the folder picker under "Download emails") stay as
    # the user left them.
    return section_response(
        request, account, anchor=section, partial=f"{SETTINGS}#section_form", context=context,
        saved="Settings saved." if changed is not None else "",
        bound={section: form},
    )  # fmt: skip


@login_required
@require_POST
def account_remove_view(request: HttpRequest, pk: int) -> HttpResponse:
    account = mailbox_or_404(request.user, pk, MailboxAction.REMOVE)
    choice = request.POST.get("emails")
    if choice not in {"keep", "delete"}:
        problem = "Choose whether to keep or delete the downloaded emails."
        return section_response(
            request, account, anchor="remove", partial=f"{SETTINGS}#remove",
            context={"remove_error": problem},
        )  # fmt: skip
    account_remove(account=account, actor=request.user, keep_emails=choice == "keep")
    kept = (
        "Its downloaded emails stay on the CRM's timelines."
        if choice == "keep"
        else "Its downloaded emails were deleted."
    )
    messages.success(
        request, f"{account.address} is removed. Nothing was deleted on the mail server. {kept}"
    )
    return leave_for_list(request)
