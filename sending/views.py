"""Writing an email: new, reply, reply all or forward, from any mailbox the user may
send from; and the outgoing email's page, which follows its delivery."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from sharing.selectors import email_for_user, sendable_mailboxes

from .forms import ComposeForm
from .message import Draft, prefixed
from .models import OutgoingEmail
from .selectors import forwarded_attachments, quote, reply_recipients
from .services import outgoing_create

TEMPLATE = "sending/compose.html"


def _original(request: HttpRequest, pk: str | None) -> object | None:
    if not pk:
        return None
    # A malformed id is a page that does not exist, not a server error.
    if not (pk.isascii() and pk.isdecimal()):
        raise Http404
    email = email_for_user(request.user, int(pk))
    if email is None:
        raise Http404
    return email


def _initial(request: HttpRequest, mailboxes: list, original, mode: str) -> dict:
    own = {m.address.lower() for m in mailboxes}
    # Answer from the mailbox the email came to, when the user may send from it.
    sender = next((m for m in mailboxes if original and m.pk == original.account_id), None)
    sender = sender or mailboxes[0]
    initial = {"sender": sender.pk, "to": request.GET.get("to", "")}
    if original is not None:
        initial |= {"reply": original.pk, "mode": mode}
        initial["subject"] = prefixed(
            original.subject, forward=mode == "forward", language=sender.message_language
        )
        if mode in ("reply", "all"):
            to, cc = reply_recipients(original, reply_all=mode == "all", own=own)
            initial |= {"to": to, "cc": cc}
    return initial


@login_required
@require_http_methods(["GET", "POST"])
def compose(request: HttpRequest) -> HttpResponse:
    mailboxes = list(sendable_mailboxes(request.user))
    if not mailboxes:
        return render(request, TEMPLATE, {"no_mailbox": True})
    data = request.POST if request.method == "POST" else None
    mode = (data or request.GET).get("mode", "reply")
    original = _original(request, (data or request.GET).get("reply"))
    form = ComposeForm(
        data,
        request.FILES or None,
        mailboxes=mailboxes,
        initial=None if data else _initial(request, mailboxes, original, mode),
    )
    if data is not None and form.is_valid():
        account = next(m for m in mailboxes if m.pk == form.cleaned_data["sender"])
        mode = form.cleaned_data["mode"]
        draft = Draft(
            sender=account.address,
            sender_name=account.display_name,
            to=form.cleaned_data["to"],
            cc=form.cleaned_data["cc"],
            bcc=form.cleaned_data["bcc"],
            subject=form.cleaned_data["subject"],
            text=form.cleaned_data["body"],
            signature_html=account.signature_html if account.add_signature else "",
            language=account.message_language,
            attachments=[
                (f.name, f.content_type or "application/octet-stream", f.read())
                for f in form.cleaned_data["attachments"]
            ],
        )
        if original is not None:
            draft.quote_text, draft.quote_html = quote(original, forward=mode == "forward")
            if mode == "forward":
                draft.attachments += forwarded_attachments(original)
            else:
                draft.in_reply_to = original.message_id
                draft.references = " ".join(
                    filter(
                        None,
                        [
                            original.references,
                            f"<{original.message_id}>" if original.message_id else "",
                        ],
                    )
                )
        outgoing = outgoing_create(author=request.user, account=account, draft=draft)
        target = outgoing.get_absolute_url()
        if request.htmx:
            return HttpResponseClientRedirect(target)
        return redirect(target)
    context = {"form": form, "original": original, "mode": mode}
    if original is not None:
        context["quote"] = quote(original, forward=mode == "forward")[0]
    if request.htmx and data is not None:
        return render(request, f"{TEMPLATE}#form", context)
    return render(request, TEMPLATE, context)


@login_required
def outgoing_detail(request: HttpRequest, pk: int) -> HttpResponse:
    outgoing = get_object_or_404(
        OutgoingEmail.objects.select_related("account", "email"), pk=pk, author=request.user
    )
    context = {"outgoing": outgoing}
    if request.htmx:
        return render(request, "sending/outgoing.html#status", context)
    return render(request, "sending/outgoing.html", context)
