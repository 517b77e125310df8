"""The settings page's signature section: its save and its preview."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from sharing.access import mailbox_or_404
from sync.sanitize import email_document

from ..forms import SignatureForm
from ..services import Digest, SettingsConflict, account_settings_update, shown_text
from .settings import SETTINGS, section_response, signature_form


def _values(request: HttpRequest, form: SignatureForm, account) -> tuple[dict, bool]:
    """What the save writes, and whether the signature itself is among it."""
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
    return values, bool(touched)


@login_required
@require_POST
def account_signature(request: HttpRequest, pk: int) -> HttpResponse:
    account = mailbox_or_404(request.user, pk)
    form = SignatureForm(request.POST, request.FILES, prefix="signature")
    saved = False
    if form.is_valid():
        values, touched = _values(request, form, account)
        shown = form.cleaned_data["shown"]
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
            form = signature_form(account)
    return section_response(
        request, account, anchor="signature", partial=f"{SETTINGS}#signature",
        context={"signature_form": form, "signature_saved": saved},
        saved="Signature saved." if saved else "",
    )  # fmt: skip


@login_required
@require_POST
def account_signature_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """What the signature will look like once saved: sanitised, in a sandboxed frame."""
    account = mailbox_or_404(request.user, pk)
    form = SignatureForm(request.POST, prefix="signature")
    context = {"account": account, "signature_form": form}
    if form.is_valid():
        context["preview"] = email_document(
            form.cleaned_data["signature_html"], allow_remote_images=False
        )
    return render(request, f"{SETTINGS}#signature_preview", context)
