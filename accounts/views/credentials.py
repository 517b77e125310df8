"""The settings page's "Change email settings": a new password (or login)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from mail.backend import login_for
from mail.errors import SignInError
from providers.addresses import normalize_address
from sharing.access import mailbox_or_404

from ..forms import CredentialsForm
from ..services import AccountRemoved, account_credentials_change
from .settings import SETTINGS, leave_for_list, section_response


@login_required
@require_POST
@sensitive_post_parameters("credentials-password")
def account_credentials(request: HttpRequest, pk: int) -> HttpResponse:
    """A new password (or login) takes effect only after the same real sign-in check as
    the wizard's; until then the old one stays. Once saved, the mailbox's download goes
    on at once (accounts.services)."""
    account = mailbox_or_404(request.user, pk)
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
            return leave_for_list(request)
        else:
            saved = True
            form = CredentialsForm(provider=account.provider, prefix="credentials")
    return section_response(
        request, account, anchor="credentials", partial=f"{SETTINGS}#credentials",
        context={"credentials_form": form, "credentials_saved": saved},
        saved="The new password works and is saved." if saved else "",
    )  # fmt: skip
