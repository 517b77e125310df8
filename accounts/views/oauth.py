"""Signing in with OAuth 2.0: a new mailbox from the wizard, or "Reconnect" for one
whose provider no longer accepts its tokens."""

from dataclasses import asdict

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_http_methods, require_POST

from mail.backend import login_for
from mail.errors import MailError
from providers.addresses import normalize_address
from providers.models import AuthMethod, EmailProvider
from sharing.access import mailbox_or_404

from ..oauth import Pending, authorization_start, sign_in_answer
from ..selectors import providers_offered, same_sign_in_elsewhere
from ..services import AccountRemoved, DuplicateAccount, account_create, account_reconnect
from .common import query_url
from .wizard import wizard_address_of

OAUTH_SESSION = "oauth:"
# Sign-ins started and not finished a session keeps (a click on "Sign in with …" each,
# abandoned at the provider); the oldest goes first. And the states of those finished
# lately, to say so when one comes back (a reload, the back button).
MAX_PENDING = 5
USED = "oauth_used"


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
    started = [key for key in request.session.keys() if key.startswith(OAUTH_SESSION)]  # noqa: SIM118
    for key in started[: max(0, len(started) - MAX_PENDING + 1)]:
        del request.session[key]
    request.session[OAUTH_SESSION + state] = asdict(pending)
    return redirect(url)


@login_required
@require_POST
def wizard_oauth_start(request: HttpRequest) -> HttpResponse:
    """Send the browser to the provider's sign-in page; `state` and the PKCE verifier
    stay in this user's session, so only this browser can finish the sign-in."""
    address = wizard_address_of(request)
    provider_id = str(request.POST.get("provider") or "")
    if address is None or not (provider_id.isascii() and provider_id.isdecimal()):
        return redirect("accounts:wizard_address")
    provider = get_object_or_404(
        providers_offered(address.domain), pk=int(provider_id), auth_method=AuthMethod.OAUTH2
    )
    if not provider.oauth_ready:
        raise Http404
    back = query_url("accounts:wizard_sign_in", address=address.email, provider=provider.pk)
    return _oauth_redirect(request, provider, address.email, back=back)


@login_required
@require_POST
def account_reconnect_start(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Reconnect": the same sign-in as the wizard's, for a mailbox whose provider no
    longer accepts its tokens; the mailbox, its settings and emails stay."""
    account = mailbox_or_404(request.user, pk)
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
@require_POST
def account_move_start(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Move to …": sign in again through a card of the same accounts with another
    protocol (accounts.selectors.same_sign_in_elsewhere); the mailbox moves once that
    sign-in works, keeping its settings and emails."""
    account = mailbox_or_404(request.user, pk)
    target = str(request.POST.get("provider") or "")
    domain = normalize_address(account.address).domain
    offered = {str(card.pk): card for card in same_sign_in_elsewhere(account.provider, domain)}
    if not account.uses_oauth or target not in offered:
        raise Http404
    return _oauth_redirect(
        request, offered[target], account.address, account_id=account.pk,
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
        if state and state in request.session.get(USED, []):
            messages.info(
                request,
                "That sign-in was used already (a page reloaded, or the back button). If "
                "its mailbox is not in your list, add it again.",
            )
            return redirect("accounts:list")
        return HttpResponseBadRequest(
            "This sign-in did not start in this browser session. Start adding the mailbox again."
        )
    request.session[USED] = [*request.session.get(USED, [])[-(MAX_PENDING - 1) :], state]
    pending = Pending(**pending)
    provider = get_object_or_404(EmailProvider, pk=pending.provider_id)
    address = normalize_address(pending.address)
    reconnecting = moving_to = None
    if pending.account_id is not None:
        # Asked again: a grant may have been taken away since the sign-in started.
        reconnecting = mailbox_or_404(request.user, pending.account_id)
        back = reconnecting.get_absolute_url()
    else:
        back = query_url("accounts:wizard_sign_in", address=address.email, provider=provider.pk)
    redirect_uri = request.build_absolute_uri(reverse("accounts:oauth_callback"))
    try:
        answer = sign_in_answer(
            provider=provider, pending=pending, query=request.GET.dict(),
            redirect_uri=redirect_uri, address=address.email,
            reconnecting=reconnecting is not None,
        )  # fmt: skip
        if reconnecting is not None:
            # The card the sign-in went through: the mailbox's own, or one it moves to
            # (account_move_start offered only those).
            moving_to = provider if provider.pk != reconnecting.provider_id else None
            if moving_to is not None and moving_to not in same_sign_in_elsewhere(
                reconnecting.provider, address.domain
            ):
                raise Http404
            account_reconnect(
                account=reconnecting, actor=request.user, oauth=answer, provider=moving_to
            )
        else:
            account_create(
                user=request.user, provider=provider, address=address,
                login=login_for(provider, address), oauth=answer,
            )  # fmt: skip
    except MailError as error:
        # Any refusal, said on the page it came from: a token endpoint's address that
        # resolved to an internal one (OAuthInternalAddress) was a 500, its report
        # holding the authorization code.
        messages.error(request, str(error))
        return redirect(back)
    except AccountRemoved as removed:
        messages.error(request, str(removed))
        return redirect("accounts:list")
    except DuplicateAccount as duplicate:
        messages.info(request, f"{duplicate.account.address} is already connected.")
        return redirect(duplicate.account.get_absolute_url())
    if reconnecting is not None:
        # Its download goes on at once (accounts.services).
        messages.success(
            request,
            f"{reconnecting.address} is connected again; its emails download as before."
            if moving_to is None
            else f"{reconnecting.address} now connects through {provider.name}; its "
            "emails and settings are kept, and its folders are read again (no email is "
            "stored twice).",
        )
        return redirect(back)
    # The Email page's notification says it is connected.
    return redirect("accounts:email")
