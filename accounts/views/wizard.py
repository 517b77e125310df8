"""The add-mailbox wizard: address, provider, new server, sign-in; and its help page.

Each step is a GET page that also renders as an HTMX partial, and a POST that redirects
to the next step (htmx follows the redirect and swaps the partial in). The wizard
carries the address and the chosen provider in the URL, so every step works without
JavaScript and can be reloaded.
"""

import secrets

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect, push_url

from mail.backend import login_for
from mail.errors import SignInError
from mail.registry import backend_for
from mailsetup.csp import allow_oauth_forms
from mailsetup.http import search_text
from providers.addresses import Address, AddressError, normalize_address
from providers.discovery import FOUND_VIA, discover
from providers.models import AuthMethod, EmailProvider
from providers.services import provider_from_draft

from ..forms import (
    IMAP_DEFAULT_PORT,
    SMTP_DEFAULT_PORT,
    AddressForm,
    CredentialsForm,
    NewServerForm,
    ProviderPickForm,
)
from ..guides import GUIDES
from ..models import EmailAccount
from ..oauth import identity_hosts
from ..selectors import (
    MANAGE_PROVIDERS,
    accounts_for_user,
    domain_memory,
    guide_for,
    provider_managers,
    providers_by_pk,
    providers_matching,
    providers_offered,
    same_sign_in_elsewhere,
)
from ..services import DuplicateAccount, account_create
from .common import query_url, same_site_path

WIZARD = "accounts/wizard.html"


def _step(request: HttpRequest, step: str, context: dict) -> HttpResponse:
    context["step"] = step
    if request.htmx:
        response = render(request, f"{WIZARD}#{step}", context)
        return push_url(response, request.get_full_path()) if request.method == "GET" else response
    return render(request, WIZARD, context)


def wizard_address_of(request: HttpRequest) -> Address | None:
    try:
        return normalize_address(request.GET.get("address") or request.POST.get("address"))
    except AddressError:
        return None


def _existing(request: HttpRequest, address: Address) -> EmailAccount | None:
    return accounts_for_user(request.user).filter(address=address.email).first()


def _manager_or_403(request: HttpRequest) -> None:
    """Adding a new server for everyone is a provider manager's."""
    if not request.user.has_perm(MANAGE_PROVIDERS):
        raise PermissionDenied


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


def _discovery_found(request: HttpRequest, address: Address) -> bool:
    note = request.session.get(DISCOVERY_NOTE)
    return (
        isinstance(note, dict)
        and note.get("address") == address.email
        and bool(note.get("provider"))
    )


def _discovery_note(request: HttpRequest, address: Address, provider=None) -> dict | None:
    """What discovery said about this address; on the sign-in step, its reason only
    when that is the provider it found (not one the user chose instead)."""
    note = request.session.get(DISCOVERY_NOTE)
    if not isinstance(note, dict) or note.get("address") != address.email:
        return None
    cards = providers_by_pk([pk for pk, _ in note.get("suggestions", [])])
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
                    query_url(
                        "accounts:wizard_sign_in",
                        address=address.email,
                        provider=result.provider.pk,
                        via=result.step,
                    )
                )
            return redirect(query_url("accounts:wizard_provider", address=address.email))
    return _step(request, "address", context)


@login_required
@require_http_methods(["GET", "POST"])
def wizard_provider(request: HttpRequest) -> HttpResponse:
    address = wizard_address_of(request)
    if address is None:
        return redirect("accounts:wizard_address")
    query = search_text(request)
    offered = providers_offered(address.domain)
    form = ProviderPickForm(request.POST or None, offered=offered)
    if request.method == "POST" and form.is_valid():
        provider = form.cleaned_data["provider"]
        # A suggestion of discovery (the SPF record) the user confirmed with its button.
        via = "spf" if request.POST.get("via") == "spf" else "pick"
        return redirect(
            query_url(
                "accounts:wizard_sign_in", address=address.email, provider=provider.pk, via=via
            )
        )
    context = {
        "form": form,
        "address": address,
        "query": query,
        "providers": providers_matching(query, address.domain),
        "can_add_server": request.user.has_perm(MANAGE_PROVIDERS),
        "managers": provider_managers(),
        "discovery": _discovery_note(request, address),
        # Discovery found one and the user asked for another ("Not your provider?"):
        # not "we could not tell".
        "found_before": _discovery_found(request, address),
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
    _manager_or_403(request)
    address = wizard_address_of(request)
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
            query_url("accounts:wizard_sign_in", address=address.email, draft=token, via="new")
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


# How the wizard came to the provider (`via`), in words; these three were chosen by
# hand, and the step says whether the domain will lead everyone there afterwards.
CHOSEN = {"pick", "new", "spf"}


def _sign_in_provider(
    request: HttpRequest, address: Address
) -> tuple[EmailProvider, str, str] | HttpResponse:
    """The provider to sign in with, how the wizard came to it and the new server's
    draft token; or where to go instead."""
    via = request.GET.get("via", "")
    token = request.GET.get("draft", "")
    if token:
        # A drafted new server: checked here, saved with the mailbox if the check passes.
        _manager_or_403(request)
        drafted = _draft(request, token, address)
        if drafted is None:
            messages.info(request, "That new server was not saved: enter it again.")
            return redirect(query_url("accounts:wizard_new_server", address=address.email))
        return provider_from_draft(fields=drafted), "new", token
    provider_id = str(request.GET.get("provider") or request.POST.get("provider") or "")
    if not (provider_id.isascii() and provider_id.isdecimal()):
        return redirect(query_url("accounts:wizard_provider", address=address.email))
    # A provider that discovery made for another domain is not offered for this one.
    provider = get_object_or_404(providers_offered(address.domain), pk=int(provider_id))
    return provider, via, ""


def _sign_in_context(request, address: Address, provider, form, *, via: str, token: str):
    oauth_only = provider.auth_method == AuthMethod.OAUTH2
    backend = backend_for(provider)
    context = {
        "form": form,
        "address": address,
        "provider": provider,
        "via": VIA_TEXT.get(via, ""),
        "found_via_mx": via == "mx",
        "guide": guide_for(provider),
        "login": login_for(provider, address),
        "oauth_only": oauth_only,
        "exchange": backend.discovers_endpoints,
        "other_provider_url": query_url("accounts:wizard_provider", address=address.email),
        "endpoints": backend.endpoints(provider, address),
        # Where the password goes, always said: the provider's sign-in page for OAuth,
        # the hosts Exchange autodiscover asks first when the card names no server.
        "identity": identity_hosts(provider) if oauth_only else None,
        "autodiscover_hosts": [address.domain, f"autodiscover.{address.domain}"],
        "draft": token,
        "draft_url": token
        and query_url("accounts:wizard_new_server", address=address.email, draft=token),
        "discovery": _discovery_note(request, address, provider=provider),
        # Cards of the same sign-in through another protocol (Microsoft 365 over IMAP
        # or over Graph), offered beside this one.
        "alternatives": [
            {
                "provider": card,
                "url": query_url(
                    "accounts:wizard_sign_in", address=address.email, provider=card.pk
                ),
            }
            for card in same_sign_in_elsewhere(provider, address.domain)
        ],
    }
    if via in CHOSEN:
        context["domain_memory"] = domain_memory(provider=provider, address=address, login=None)
    return context


@sensitive_post_parameters("password")
@login_required
@require_http_methods(["GET", "POST"])
def wizard_sign_in(request: HttpRequest) -> HttpResponse:
    address = wizard_address_of(request)
    if address is None:
        return redirect("accounts:wizard_address")
    found = _sign_in_provider(request, address)
    if isinstance(found, HttpResponse):
        return found
    provider, via, token = found
    form = CredentialsForm(request.POST or None, provider=provider, autofocus=True)
    oauth_only = provider.auth_method == AuthMethod.OAUTH2
    if oauth_only and provider.oauth_ready and request.htmx:
        # The "Sign in with …" form leads to the provider's page, which the document's
        # form-action must allow: a swap would keep the policy of the page it lands in,
        # so this step loads as a page of its own, with its own policy.
        return HttpResponseClientRedirect(request.get_full_path())
    context = _sign_in_context(request, address, provider, form, via=via, token=token)
    if request.method == "POST" and not oauth_only and form.is_valid():
        login = login_for(provider, address, form.cleaned_data.get("login", ""))
        memory = via in CHOSEN and domain_memory(provider=provider, address=address, login=login)
        try:
            account_create(
                user=request.user, provider=provider, address=address, login=login,
                password=form.cleaned_data["password"],
            )  # fmt: skip
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
            return HttpResponseClientRedirect(target) if request.htmx else redirect(target)
    response = _step(request, "sign_in", context)
    if oauth_only and provider.oauth_ready:
        allow_oauth_forms(response, list(context["identity"].origins))
    return response
