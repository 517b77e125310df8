"""The Email page, the mailbox list, a mailbox's settings page and the add-mailbox wizard.

Each settings section is a form that saves on its own: through htmx it swaps only its
section, without JavaScript it posts and comes back to the page.

Each wizard step is a GET page that also renders as an HTMX partial, and a POST that
redirects to the next step (htmx follows the redirect and swaps the partial in).
The wizard carries the address and the chosen provider in the URL, so every step
works without JavaScript and can be reloaded.
"""

import copy
import secrets
from dataclasses import asdict
from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, push_url

from mail.backend import login_for
from mail.errors import MailError, SignInError
from mail.registry import backend_for
from mailsetup.csp import allow_mail_frame, allow_oauth_forms
from mailsetup.keyset import BoundedPaginator, Cursor, bounded_count, dated_page
from providers.addresses import Address, AddressError, normalize_address
from providers.discovery import FOUND_VIA, discover
from providers.models import AuthMethod, EmailProvider
from providers.services import provider_from_draft
from sending.selectors import outgoing_unsent
from sharing.forms import GrantsForm
from sharing.selectors import (
    can_change_download,
    can_remove,
    can_share,
    emails_for_panel,
    grants_of,
    mailboxes_for_setup,
    mailboxes_shared_with,
    removed_mailboxes_with_grants,
)
from sync.sanitize import email_document
from sync.search import RANKED, highlight, ranked
from sync.selectors import sync_status
from sync.services import (
    FolderListError,
    download_queue,
    folders_choose,
    folders_load,
    mailbox_attention_clear,
)

from .forms import (
    IMAP_DEFAULT_PORT,
    SMTP_DEFAULT_PORT,
    AddressForm,
    ContactsSettingsForm,
    CredentialsForm,
    DownloadSettingsForm,
    FolderChoiceForm,
    MeetingsSettingsForm,
    NewServerForm,
    ProviderPickForm,
    SendSettingsForm,
    SignatureForm,
)
from .guides import GUIDES
from .models import EmailAccount
from .oauth import (
    Pending,
    TokenError,
    authorization_start,
    code_exchange,
    identity_hosts,
    signed_in_address,
)
from .selectors import (
    MANAGE_PROVIDERS,
    accounts_for_user,
    domain_memory,
    guide_for,
    open_notifications,
    provider_managers,
    providers_matching,
    providers_offered,
    sign_in_alert,
    sign_in_alerts,
)
from .services import (
    AccountRemoved,
    Digest,
    DuplicateAccount,
    SettingsConflict,
    account_create,
    account_credentials_change,
    account_reconnect,
    account_remove,
    account_settings_update,
    notification_dismiss,
    shown_text,
)

WIZARD = "accounts/wizard.html"


def _step(request: HttpRequest, step: str, context: dict) -> HttpResponse:
    context["step"] = step
    if request.htmx:
        response = render(request, f"{WIZARD}#{step}", context)
        return push_url(response, request.get_full_path()) if request.method == "GET" else response
    return render(request, WIZARD, context)


def _url(name: str, **params) -> str:
    return f"{reverse(name)}?{urlencode({k: v for k, v in params.items() if v})}"


def _wizard_address(request: HttpRequest) -> Address | None:
    try:
        return normalize_address(request.GET.get("address") or request.POST.get("address"))
    except AddressError:
        return None


def _existing(request: HttpRequest, address: Address) -> EmailAccount | None:
    return accounts_for_user(request.user).filter(address=address.email).first()


def _reconnect_origins(alerts) -> list[str]:
    """The sign-in origins the page's "Reconnect" forms lead to (its form-action)."""
    return [
        origin
        for alert in alerts
        if alert.reconnect
        for origin in identity_hosts(alert.account.provider).origins
    ]


@login_required
def email_page(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:200]
    emails = emails_for_panel(request.user, search=query)
    if query:
        # Search results, best first: pages by number over at most search.RANKED.
        page = BoundedPaginator(ranked(emails), PANEL_PAGE, bound=RANKED)
        page = page.get_page(request.GET.get("page"))
        highlight(page.object_list, query, {email.account_id for email in page})
        listed = {"emails": page, "count": page.paginator.count}
    else:
        # Newest first, a page after another (keyset): nothing counts every email.
        cursor = Cursor.parse(request.GET.get("after"))
        page = dated_page(emails, cursor, PANEL_PAGE)
        listed = {"emails": page, "count": bounded_count(emails, PANEL_COUNTED)}
    context = {**listed, "query": query, "counted": PANEL_COUNTED}
    if request.htmx and request.htmx.target == "panel-emails":
        return render(request, "accounts/email.html#emails", context)
    context |= {
        "outbox": outgoing_unsent(request.user),
        "accounts": accounts_for_user(request.user),
        "shared": mailboxes_shared_with(request.user),
        "notifications": open_notifications(request.user),
        "alerts": sign_in_alerts(request.user),
    }
    response = render(request, "accounts/email.html", context)
    return allow_oauth_forms(response, _reconnect_origins(context["alerts"]))


PANEL_PAGE = 50
# The Email page says how many emails there are up to this many, "more than" past it.
PANEL_COUNTED = 1_000


@login_required
def mailbox_list(request: HttpRequest) -> HttpResponse:
    context = {
        "accounts": accounts_for_user(request.user),
        "shared": mailboxes_shared_with(request.user),
        "alerts": sign_in_alerts(request.user),
        "removed": removed_mailboxes_with_grants(request.user),
    }
    response = render(request, "accounts/mailboxes.html", context)
    return allow_oauth_forms(response, _reconnect_origins(context["alerts"]))


SETTINGS = "accounts/settings.html"
SECTIONS = {"download": DownloadSettingsForm, "send": SendSettingsForm}
# Only an Exchange mailbox has a calendar, tasks and an address book to import.
EXCHANGE_SECTIONS = {"meetings": MeetingsSettingsForm, "contacts": ContactsSettingsForm}


def _sections(account: EmailAccount) -> dict:
    extra = backend_for(account.provider).settings_sections
    return SECTIONS | {name: EXCHANGE_SECTIONS[name] for name in extra}


def _setup(request: HttpRequest, pk: int) -> EmailAccount:
    """The mailbox, if the user may set it up: its owner, or a "Setup mailbox" grantee
    while it is shared. Anyone else gets 404, so its existence does not leak."""
    return get_object_or_404(mailboxes_for_setup(request.user), pk=pk)


def _rights(request: HttpRequest, account: EmailAccount) -> dict:
    """What the user may change beyond the sections every setup user may: shown in
    the page, and enforced by the views (403)."""
    user = request.user
    return {
        "is_owner": account.owner_id == user.pk,
        "can_change_download": can_change_download(user, account),
        "can_remove": can_remove(user, account),
        "can_share": can_share(user, account),
    }


def close_url(request: HttpRequest, account: EmailAccount) -> str:
    """Where "Close" goes: the page the user came from (`back`, else the Referer), as a
    path on this site only; else the mailbox list. Another site, a scheme-relative or
    odd URL, or the settings page itself never gets through."""
    for candidate in (request.GET.get("back"), request.headers.get("Referer")):
        path = same_site_path(request, candidate)
        if path and not path.startswith(account.get_absolute_url()):
            return path
    return reverse("accounts:list")


def same_site_path(request: HttpRequest, url: str | None) -> str | None:
    """`url` as a path (and query) on this site, or None: another host, a scheme-relative
    or odd URL (a backslash, a scheme other than http(s)) never gets through."""
    if not url or len(url) > 2000:
        return None
    if not url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return None
    parts = urlsplit(url)
    if not parts.path.startswith("/") or parts.path.startswith("//") or "\\" in url:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def settings_page(
    request: HttpRequest, account: EmailAccount, extra: dict | None = None, **bound
) -> HttpResponse:
    rights = _rights(request, account)
    forms = {
        name: bound.get(name) or _section_form(form_class, account, rights, prefix=name)
        for name, form_class in _sections(account).items()
    }
    context = {
        **rights,
        "sharing_form": GrantsForm(account=account, grants=grants_of(account)),
        "account": account,
        "close_url": close_url(request, account),
        "forms": forms,
        "credentials_form": CredentialsForm(provider=account.provider, prefix="credentials"),
        "signature_form": _signature_form(account),
        "preview": account.signature_html
        and email_document(account.signature_html, allow_remote_images=False),
        "alerts": [alert] if (alert := sign_in_alert(account)) else [],
        **sync_status(account),
        **(extra or {}),
    }
    # The signature preview is a sandboxed srcdoc frame.
    response = allow_mail_frame(render(request, SETTINGS, context))
    # "Sign in again" / "Reconnect" (the credentials section) and the banner's button.
    origins = identity_hosts(account.provider).origins if account.uses_oauth else ()
    return allow_oauth_forms(response, [*origins, *_reconnect_origins(context["alerts"])])


def _section_form(form_class, account: EmailAccount, rights: dict, *args, **kwargs):
    form = form_class(*args, instance=account, **kwargs)
    if not rights["is_owner"] and "is_default_sender" in form.fields:
        # The default sender is the owner's choice among their own mailboxes.
        del form.fields["is_default_sender"]
    return form


@login_required
def account_settings(request: HttpRequest, pk: int) -> HttpResponse:
    return settings_page(request, _setup(request, pk))


def _section(
    request: HttpRequest, account: EmailAccount, partial: str, context: dict
) -> HttpResponse:
    """A settings section after a POST: just its partial for htmx, else the whole page
    with the section's state (errors, what was typed) in place."""
    if request.htmx:
        context = {"account": account, **_rights(request, account), **context}
        return render(request, f"{SETTINGS}#{partial}", context)
    return settings_page(request, account, extra=context)


FOLDER_INDENTS = 12


def _folder_rows(folders, form: FolderChoiceForm) -> list[dict]:
    """The folder tree as rows with depth, showing what the user ticked if the form
    came back with an error, else what is saved."""
    if form.is_bound:
        chosen = set(form.data.getlist("chosen"))
        subfolders = set(form.data.getlist("subfolders"))
    else:
        chosen = {str(f.pk) for f in folders if f.chosen and f.selectable}
        subfolders = {str(f.pk) for f in folders if f.include_subfolders}
    rows = []
    for folder in sorted(folders, key=lambda f: f.path.lower() if f.path != "INBOX" else ""):
        parts = folder.path.split(folder.delimiter) if folder.delimiter else [folder.path]
        rows.append(
            {
                "folder": folder,
                "depth": len(parts) - 1,
                # Indented by classes (the page's policy has no inline styles), so
                # the deepest levels share the last step.
                "indent": min(len(parts) - 1, FOLDER_INDENTS),
                "name": parts[-1],
                "chosen": str(folder.pk) in chosen,
                "subfolders": str(folder.pk) in subfolders,
            }
        )
    return rows


def _folders_response(
    request: HttpRequest, account: EmailAccount, form: FolderChoiceForm, **extra
) -> HttpResponse:
    folders = list(account.folders.filter(exists_on_server=True))
    context = {
        "folders_form": form,
        "folder_rows": _folder_rows(folders, form),
        "folders_open": True,
        **extra,
    }
    return _section(request, account, "folders", context)


@login_required
@require_http_methods(["GET", "POST"])
def account_folders(request: HttpRequest, pk: int) -> HttpResponse:
    """The folder picker. GET shows the folders as saved (it reads only); "Choose
    folders" reads the server's real tree first, as a POST (account_folders_refresh)."""
    account = _setup(request, pk)
    if not can_change_download(request.user, account):
        raise PermissionDenied
    folders = account.folders.filter(exists_on_server=True)
    if request.method == "POST":
        form = FolderChoiceForm(request.POST, folders=folders)
        if not form.is_valid():
            return _folders_response(request, account, form)
        folders_choose(
            account=account,
            actor=request.user,
            mode=form.cleaned_data["folder_mode"],
            chosen=set(form.cleaned_data["chosen"]),
            with_subfolders=set(form.cleaned_data["subfolders"]),
        )
        download_queue(account_id=account.pk)
        if request.htmx:
            form = FolderChoiceForm(initial={"folder_mode": account.folder_mode}, folders=folders)
            return _folders_response(request, account, form, folders_saved=True)
        messages.success(request, "Folders saved.")
        return redirect(f"{account.get_absolute_url()}#settings-folders")
    form = FolderChoiceForm(initial={"folder_mode": account.folder_mode}, folders=folders)
    return _folders_response(request, account, form)


@login_required
@require_POST
def account_folders_refresh(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Choose folders": the server's folder tree read now and saved (a write, hence a
    POST), then the picker."""
    account = _setup(request, pk)
    if not can_change_download(request.user, account):
        raise PermissionDenied
    error = ""
    try:
        folders_load(account=account)
    except FolderListError as problem:
        error = str(problem)
    if not request.htmx:
        if error:
            messages.error(request, f"Could not read the folder list from the server: {error}")
        return redirect(reverse("accounts:folders", args=[account.pk]))
    folders = account.folders.filter(exists_on_server=True)
    form = FolderChoiceForm(initial={"folder_mode": account.folder_mode}, folders=folders)
    return _folders_response(request, account, form, folders_error=error, folders_fresh=not error)


@login_required
@require_POST
@sensitive_post_parameters("credentials-password")
def account_credentials(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Change email settings": a new password (or login) takes effect only after the
    same real sign-in check as the wizard; until then the old one stays."""
    account = _setup(request, pk)
    if account.uses_oauth:
        # Its sign-in is renewed with "Reconnect"; there is no password to change.
        raise Http404
    form = CredentialsForm(request.POST, provider=account.provider, prefix="credentials")
    saved = False
    if form.is_valid():
        login = login_for(
            account.provider, normalize_address(account.address), form.cleaned_data.get("login", "")
        )
        try:
            account_credentials_change(
                account=account, actor=request.user, login=login,
                password=form.cleaned_data["password"],
            )  # fmt: skip
        except SignInError as error:
            field = error.field if error.field in form.fields else None
            form.add_error(field, str(error))
        except AccountRemoved as removed:
            messages.error(request, str(removed))
            target = reverse("accounts:list")
            return HttpResponseClientRedirect(target) if request.htmx else redirect(target)
        else:
            saved = True
            mailbox_attention_clear(account_id=account.pk)
            download_queue(account_id=account.pk)
    if saved and not request.htmx:
        messages.success(request, "The new password works and is saved.")
        return redirect(f"{account.get_absolute_url()}#settings-credentials")
    if saved:
        form = CredentialsForm(provider=account.provider, prefix="credentials")
    context = {"credentials_form": form, "credentials_saved": saved}
    return _section(request, account, "credentials", context)


@login_required
@require_POST
def account_signature(request: HttpRequest, pk: int) -> HttpResponse:
    account = _setup(request, pk)
    form = SignatureForm(request.POST, request.FILES, prefix="signature")
    saved = False
    if form.is_valid():
        html = form.cleaned_data["signature_html"]
        shown = form.cleaned_data["shown"]
        # Without the editor's field (a page that lost it), nothing was typed: the
        # signature stays as it is rather than becoming empty.
        sent = form.add_prefix("signature_html") in request.POST or form.cleaned_data["image"]
        touched = sent and (Digest(shown) != html if shown else html != account.signature_html)
        values = {"signature_html": html} if touched else {}
        # The box as the page showed it; a post without it (a client of its own) leaves
        # the setting alone.
        box_shown = request.POST.get(form.add_prefix("add_signature_shown"))
        if box_shown is not None and (box_shown == "1") != form.cleaned_data["add_signature"]:
            values["add_signature"] = form.cleaned_data["add_signature"]
        try:
            if values:
                account_settings_update(
                    account=account, actor=request.user, values=values,
                    shown={"signature_html": Digest(shown)} if shown and touched else None,
                )  # fmt: skip
        except SettingsConflict:
            account.refresh_from_db(fields=["signature_html"])
            data = request.POST.copy()
            data[form.add_prefix("shown")] = Digest.of(account.signature_html).hex
            form = SignatureForm(data, prefix="signature")
            form.is_valid()
            form.add_error(
                "signature_html",
                "Someone changed this signature since the page was shown (it now reads "
                f"“{shown_text('signature_html', account.signature_html)}”). Save again to "
                "replace it with yours, or reload the page to see theirs.",
            )
        else:
            saved = True
            if not request.htmx:
                messages.success(request, "Signature saved.")
                return redirect(f"{account.get_absolute_url()}#settings-signature")
            form = _signature_form(account)
    return _section(
        request, account, "signature", {"signature_form": form, "signature_saved": saved}
    )


@login_required
@require_POST
def account_signature_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """What the signature will look like once saved: sanitised, in a sandboxed frame."""
    account = _setup(request, pk)
    form = SignatureForm(request.POST, prefix="signature")
    context = {"account": account, "signature_form": form}
    if form.is_valid():
        context["preview"] = email_document(
            form.cleaned_data["signature_html"], allow_remote_images=False
        )
    return render(request, f"{SETTINGS}#signature_preview", context)


def _signature_form(account: EmailAccount) -> SignatureForm:
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


@login_required
@require_POST
def account_remove_view(request: HttpRequest, pk: int) -> HttpResponse:
    account = _setup(request, pk)
    if not can_remove(request.user, account):
        raise PermissionDenied
    choice = request.POST.get("emails")
    if choice not in {"keep", "delete"}:
        problem = "Choose whether to keep or delete the downloaded emails."
        return _section(request, account, "remove", {"remove_error": problem})
    account_remove(account=account, actor=request.user, keep_emails=choice == "keep")
    kept = (
        "Its downloaded emails stay on the CRM's timelines."
        if choice == "keep"
        else ("Its downloaded emails were deleted.")
    )
    messages.success(
        request, f"{account.address} is removed. Nothing was deleted on the mail server. {kept}"
    )
    target = reverse("accounts:list")
    if request.htmx:
        return HttpResponseClientRedirect(target)
    return redirect(target)


@login_required
@require_POST
def account_settings_save(request: HttpRequest, pk: int, section: str) -> HttpResponse:
    account = _setup(request, pk)
    form_class = _sections(account).get(section)
    if form_class is None:
        raise Http404
    rights = _rights(request, account)
    if section in {"download", *EXCHANGE_SECTIONS} and not rights["can_change_download"]:
        raise PermissionDenied
    # The form gets its own copy: a rejected save must not touch the shown values.
    form = _section_form(form_class, copy.copy(account), rights, request.POST, prefix=section)
    changed = None
    if form.is_valid():
        # Only what this user changed on the page is written: the other fields keep
        # what is saved, whoever saved it since the page was shown.
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
    if changed is None:
        if request.htmx:
            return _section_form_response(request, account, rights, section, form)
        return settings_page(request, account, **{section: form})
    # A new period may reach further back: fetch the older emails now, not at the
    # next scheduled run.
    download_queued = "sync_period" in changed
    if download_queued:
        download_queue(account_id=account.pk)
    # Saving an import section with its import on runs it now, whatever the schedule.
    import_queued = section in EXCHANGE_SECTIONS and (
        account.meetings_import if section == "meetings" else account.contacts_import != "off"
    )
    if import_queued:
        download_queue(account_id=account.pk, items_only=True)
    if request.htmx:
        return _section_form_response(
            request, account, rights, section,
            _section_form(form_class, account, rights, prefix=section),
            saved=True, download_queued=download_queued, import_queued=import_queued,
        )  # fmt: skip
    messages.success(request, "Settings saved.")
    return redirect(f"{account.get_absolute_url()}#settings-{section}")


def _section_form_response(request, account, rights, section: str, form, **extra):
    """Just the section's form: the section's other parts (the signature editor beside
    "Send emails", the folder picker under "Download emails") stay as the user left
    them."""
    context = {"account": account, **rights, "form": form, "section": section, **extra}
    return render(request, f"{SETTINGS}#section_form", context)


@login_required
@require_POST
def dismiss_notification(request: HttpRequest, pk: int) -> HttpResponse:
    if not notification_dismiss(user=request.user, notification_id=pk):
        raise Http404
    if request.htmx:
        return HttpResponse("")
    return redirect("accounts:email")


def secure_connection_help(request: HttpRequest) -> HttpResponse:
    # Opened from the wizard's sign-in step: a way back to it, with the address.
    back = same_site_path(request, request.GET.get("back"))
    wizard = back if back and back.startswith(reverse("accounts:wizard_address")) else None
    context = {"guides": GUIDES.values(), "wizard": wizard}
    return render(request, "accounts/secure_connection.html", context)


# -- What discovery found, shown on the next step (issue 20) --------------------------
# The wizard keeps its state in the URL; discovery's explanation, its suggestions and
# its trace are too long for that, so the last one is kept in the session, for its
# address only.
DISCOVERY_NOTE = "wizard:discovery"
DISCOVERY_TRACE_LINES = 40


def _discovery_note_keep(request: HttpRequest, result) -> None:
    request.session[DISCOVERY_NOTE] = {
        "address": result.address.email,
        "provider": result.provider.pk if result.provider else None,
        "reason": result.reason,
        "unsupported": result.unsupported,
        "suggestions": [[s.provider.pk, s.text] for s in result.suggestions],
        "trace": result.trace[:DISCOVERY_TRACE_LINES],
    }


def _discovery_note(request: HttpRequest, address: Address, provider=None) -> dict | None:
    """What discovery said about this address; on the sign-in step, its reason only
    when that is the provider it found (not one the user chose instead)."""
    note = request.session.get(DISCOVERY_NOTE)
    if not isinstance(note, dict) or note.get("address") != address.email:
        return None
    cards = EmailProvider.objects.in_bulk([pk for pk, _ in note.get("suggestions", [])])
    suggestions = [
        {"provider": cards[pk], "text": text}
        for pk, text in note.get("suggestions", [])
        if pk in cards
    ]
    same = provider is not None and note.get("provider") == provider.pk
    return {
        "reason": note.get("reason", "") if same else "",
        "unsupported": note.get("unsupported", "") if provider is None else "",
        "suggestions": suggestions if provider is None else [],
        "trace": note.get("trace", []),
    }


@login_required
@require_http_methods(["GET", "POST"])
def wizard_address(request: HttpRequest) -> HttpResponse:
    form = AddressForm(request.POST or None, initial={"address": request.GET.get("address", "")})
    context = {"form": form}
    if request.method == "POST" and form.is_valid():
        address: Address = form.cleaned_data["address"]
        existing = _existing(request, address)
        if existing is not None:
            context["existing"] = existing
        else:
            result = discover(address)
            _discovery_note_keep(request, result)
            if result.found:
                return redirect(
                    _url(
                        "accounts:wizard_sign_in",
                        address=address.email,
                        provider=result.provider.pk,
                        via=result.step,
                    )
                )
            return redirect(_url("accounts:wizard_provider", address=address.email))
    return _step(request, "address", context)


@login_required
@require_http_methods(["GET", "POST"])
def wizard_provider(request: HttpRequest) -> HttpResponse:
    address = _wizard_address(request)
    if address is None:
        return redirect("accounts:wizard_address")
    query = request.GET.get("q", "")
    offered = providers_offered(address.domain)
    form = ProviderPickForm(request.POST or None, offered=offered)
    if request.method == "POST" and form.is_valid():
        provider = form.cleaned_data["provider"]
        # A suggestion of discovery (the SPF record) the user confirmed with its button.
        via = "spf" if request.POST.get("via") == "spf" else "pick"
        return redirect(
            _url("accounts:wizard_sign_in", address=address.email, provider=provider.pk, via=via)
        )
    context = {
        "form": form,
        "address": address,
        "query": query,
        "providers": providers_matching(query, address.domain),
        "can_add_server": request.user.has_perm(MANAGE_PROVIDERS),
        "managers": provider_managers(),
        "discovery": _discovery_note(request, address),
    }
    if request.htmx and request.htmx.target == "provider-list":
        return render(request, f"{WIZARD}#provider_list", context)
    return _step(request, "provider", context)


# A manager's "Add new server" drafts, unchecked, by token: {token: {address, fields}}.
# Nothing is saved for everyone until a sign-in to the servers passes (wizard_sign_in).
DRAFTS = "wizard:new_servers"
MAX_DRAFTS = 5


def _draft(request: HttpRequest, token: str, address: Address) -> dict | None:
    draft = request.session.get(DRAFTS, {}).get(token)
    if draft is None or draft["address"] != address.email:
        return None
    return draft["fields"]


def _draft_keep(request: HttpRequest, address: Address, fields: dict, token: str = "") -> str:
    drafts = request.session.get(DRAFTS, {})
    token = token if token in drafts else secrets.token_urlsafe(9)
    drafts.pop(token, None)
    drafts[token] = {"address": address.email, "fields": fields}
    # Only the latest few: a session is no store of abandoned attempts.
    request.session[DRAFTS] = dict(list(drafts.items())[-MAX_DRAFTS:])
    return token


def _draft_drop(request: HttpRequest, token: str) -> None:
    drafts = request.session.get(DRAFTS, {})
    if drafts.pop(token, None) is not None:
        request.session[DRAFTS] = drafts


@login_required
@require_http_methods(["GET", "POST"])
def wizard_new_server(request: HttpRequest) -> HttpResponse:
    """ "Add new server": the card is a draft in this session until the sign-in step
    checks it against the real servers; only then is it saved for everyone."""
    if not request.user.has_perm(MANAGE_PROVIDERS):
        raise PermissionDenied
    address = _wizard_address(request)
    if address is None:
        return redirect("accounts:wizard_address")
    token = request.GET.get("draft", "")
    drafted = _draft(request, token, address) if token else None
    if drafted is None:
        token = ""
    initial = drafted or {
        "name": address.domain, "imap_host": f"imap.{address.domain}",
        "smtp_host": f"smtp.{address.domain}", "imap_port": 993, "smtp_port": 465,
    }  # fmt: skip
    form = NewServerForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in form.fields}
        token = _draft_keep(request, address, fields, token)
        return redirect(
            _url("accounts:wizard_sign_in", address=address.email, draft=token, via="new")
        )
    return _step(
        request,
        "new_server",
        {
            "form": form,
            "address": address,
            "draft": token,
            "imap_ports": IMAP_DEFAULT_PORT,
            "smtp_ports": SMTP_DEFAULT_PORT,
        },
    )


VIA_TEXT = {
    **FOUND_VIA,
    "pick": "chosen by you",
    "new": "the server you are adding",
    "spf": "suggested by your domain's SPF record, confirmed by you",
}


@sensitive_post_parameters("password")
@login_required
@require_http_methods(["GET", "POST"])
def wizard_sign_in(request: HttpRequest) -> HttpResponse:
    address = _wizard_address(request)
    if address is None:
        return redirect("accounts:wizard_address")
    via = request.GET.get("via", "")
    token = request.GET.get("draft", "")
    if token:
        # A drafted new server: checked here, saved with the mailbox if the check passes.
        if not request.user.has_perm(MANAGE_PROVIDERS):
            raise PermissionDenied
        drafted = _draft(request, token, address)
        if drafted is None:
            messages.info(request, "That new server was not saved: enter it again.")
            return redirect(_url("accounts:wizard_new_server", address=address.email))
        provider, via = provider_from_draft(fields=drafted), "new"
    else:
        provider_id = str(request.GET.get("provider") or request.POST.get("provider") or "")
        if not (provider_id.isascii() and provider_id.isdecimal()):
            return redirect(_url("accounts:wizard_provider", address=address.email))
        # A provider that discovery made for another domain is not offered for this one.
        provider = get_object_or_404(providers_offered(address.domain), pk=int(provider_id))
    form = CredentialsForm(request.POST or None, provider=provider, autofocus=True)
    oauth_only = provider.auth_method == AuthMethod.OAUTH2
    if oauth_only and provider.oauth_ready and request.htmx:
        # The "Sign in with …" form leads to the provider's page, which the document's
        # form-action must allow: a swap would keep the policy of the page it lands in,
        # so this step loads as a page of its own, with its own policy.
        return HttpResponseClientRedirect(request.get_full_path())
    context = {
        "form": form,
        "address": address,
        "provider": provider,
        "via": VIA_TEXT.get(via, ""),
        "found_via_mx": via == "mx",
        "guide": guide_for(provider),
        "login": login_for(provider, address),
        "oauth_only": oauth_only,
        "exchange": backend_for(provider).discovers_endpoints,
        "other_provider_url": _url("accounts:wizard_provider", address=address.email),
        "endpoints": backend_for(provider).endpoints(provider, address),
        # Where the password goes, always said: the provider's sign-in page for OAuth,
        # the hosts Exchange autodiscover asks first when the card names no server.
        "identity": identity_hosts(provider) if oauth_only else None,
        "autodiscover_hosts": [address.domain, f"autodiscover.{address.domain}"],
        "draft": token,
        "draft_url": token
        and _url("accounts:wizard_new_server", address=address.email, draft=token),
        "discovery": _discovery_note(request, address, provider=provider),
    }
    # A provider chosen by hand (or drafted): say whether the domain will lead everyone
    # there once the sign-in passes, and why.
    chosen = via in {"pick", "new", "spf"}
    if chosen:
        context["domain_memory"] = domain_memory(provider=provider, address=address, login=None)
    usable = not context["oauth_only"]
    if request.method == "POST" and usable and form.is_valid():
        login = login_for(provider, address, form.cleaned_data.get("login", ""))
        memory = chosen and domain_memory(provider=provider, address=address, login=login)
        try:
            account_create(
                user=request.user,
                provider=provider,
                address=address,
                login=login,
                password=form.cleaned_data["password"],
            )
        except DuplicateAccount as duplicate:
            context["existing"] = duplicate.account
        except SignInError as error:
            field = error.field if error.field in form.fields else None
            form.add_error(field, str(error))
            context["error_kind"] = error.kind
        else:
            if token:
                _draft_drop(request, token)
            # The Email page's notification says the mailbox is connected (once); the
            # message says only what the sign-in taught the app about the domain.
            if memory and memory.after:
                messages.success(request, memory.after)
            target = reverse("accounts:email")
            if request.htmx:
                return HttpResponseClientRedirect(target)
            return redirect(target)
    response = _step(request, "sign_in", context)
    if oauth_only and provider.oauth_ready:
        allow_oauth_forms(response, list(context["identity"].origins))
    return response


OAUTH_SESSION = "oauth:"


def _oauth_redirect(request: HttpRequest, provider, address: str, account_id=None, *, back: str):
    try:
        url, state, pending = authorization_start(
            provider=provider,
            address=address,
            redirect_uri=request.build_absolute_uri(reverse("accounts:oauth_callback")),
            account_id=account_id,
        )
    except MailError as error:
        # The card's OAuth addresses cannot be used (an internal address, the service
        # unreachable): said, not a 500.
        messages.error(request, str(error))
        return redirect(back)
    request.session[OAUTH_SESSION + state] = asdict(pending)
    return redirect(url)


@login_required
@require_POST
def wizard_oauth_start(request: HttpRequest) -> HttpResponse:
    """Send the browser to the provider's sign-in page; `state` and the PKCE verifier
    stay in this user's session, so only this browser can finish the sign-in."""
    address = _wizard_address(request)
    provider_id = str(request.POST.get("provider") or "")
    if address is None or not (provider_id.isascii() and provider_id.isdecimal()):
        return redirect("accounts:wizard_address")
    provider = get_object_or_404(
        providers_offered(address.domain), pk=int(provider_id), auth_method=AuthMethod.OAUTH2
    )
    if not provider.oauth_ready:
        raise Http404
    back = _url("accounts:wizard_sign_in", address=address.email, provider=provider.pk)
    return _oauth_redirect(request, provider, address.email, back=back)


@login_required
@require_POST
def account_reconnect_start(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Reconnect": the same sign-in as the wizard's, for a mailbox whose provider no
    longer accepts its tokens; the mailbox, its settings and emails stay."""
    account = _setup(request, pk)
    provider = account.provider
    if not account.uses_oauth:
        raise Http404
    if not provider.oauth_ready:
        messages.error(
            request,
            f"Signing in with {provider.name} is not set up any more. Ask an administrator "
            "to register the app on the provider card.",
        )
        return redirect(account.get_absolute_url())
    return _oauth_redirect(
        request, provider, account.address, account_id=account.pk,
        back=account.get_absolute_url(),
    )  # fmt: skip


@login_required
@require_http_methods(["GET"])
@sensitive_variables("answer", "pending")
def wizard_oauth_callback(request: HttpRequest) -> HttpResponse:
    """The provider sends the browser back here with a code: checked against the state
    this session started, traded for tokens, the account checked to be the address the
    user typed, then the real IMAP and SMTP sign-ins (XOAUTH2), then the mailbox (a new
    one, or the one being reconnected)."""
    state = request.GET.get("state", "")
    pending = request.session.pop(OAUTH_SESSION + state, None) if state else None
    if pending is None:
        return HttpResponseBadRequest(
            "This sign-in did not start in this browser session. Start adding the mailbox again."
        )
    pending = Pending(**pending)
    provider = get_object_or_404(EmailProvider, pk=pending.provider_id)
    address = normalize_address(pending.address)
    reconnecting = None
    if pending.account_id is not None:
        # Asked again: a grant may have been taken away since the sign-in started.
        reconnecting = get_object_or_404(mailboxes_for_setup(request.user), pk=pending.account_id)
        back = reconnecting.get_absolute_url()
    else:
        back = _url("accounts:wizard_sign_in", address=address.email, provider=provider.pk)
    redirect_uri = request.build_absolute_uri(reverse("accounts:oauth_callback"))
    try:
        if request.GET.get("error"):
            reason = request.GET.get("error_description") or request.GET["error"]
            raise TokenError(f"{provider.name} did not sign you in ({reason}).")
        answer = code_exchange(
            provider=provider, pending=pending, query=request.GET.dict(), redirect_uri=redirect_uri
        )
        signed_in = signed_in_address(answer=answer, provider=provider)
        if signed_in != address.email:
            instead = "" if reconnecting else f", or add {signed_in or 'that account'} instead"
            raise TokenError(
                f"You signed in to {provider.name} as {signed_in or 'another account'}, "
                f"not as {address.email}. Sign in with {address.email}{instead}."
            )
        if reconnecting is not None:
            account_reconnect(account=reconnecting, actor=request.user, oauth=answer)
        else:
            account_create(
                user=request.user, provider=provider, address=address,
                login=login_for(provider, address), oauth=answer,
            )  # fmt: skip
    except (TokenError, SignInError) as error:
        messages.error(request, str(error))
        return redirect(back)
    except AccountRemoved as removed:
        messages.error(request, str(removed))
        return redirect("accounts:list")
    except DuplicateAccount as duplicate:
        messages.info(request, f"{duplicate.account.address} is already connected.")
        return redirect(duplicate.account.get_absolute_url())
    if reconnecting is not None:
        mailbox_attention_clear(account_id=reconnecting.pk)
        download_queue(account_id=reconnecting.pk)
        messages.success(
            request,
            f"{reconnecting.address} is connected again; its emails download as before.",
        )
        return redirect(back)
    # The Email page's notification says it is connected.
    return redirect("accounts:email")
