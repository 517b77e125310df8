"""Writing an email: new, reply, reply all or forward, from any mailbox the user may
send from; and the outgoing email's page, which follows its delivery."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from sharing.access import email_or_404, outgoing_or_404
from sharing.selectors import sendable_mailboxes

from .delivery import files_sent_copies
from .forms import ComposeForm
from .message import prefixed
from .selectors import forwarded_files, quote, reply_recipients, written_again
from .services import NotResendable, NotWrittenAgain, outgoing_compose, outgoing_resend

TEMPLATE = "sending/compose.html"


def _original(request: HttpRequest, pk: str | None) -> object | None:
    if not pk:
        return None
    # A malformed id is a page that does not exist, not a server error.
    if not (pk.isascii() and pk.isdecimal()):
        raise Http404
    return email_or_404(request.user, int(pk))


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
    # "Edit as a new email": the email written before, on the form and with its post,
    # so that once this one is sent that one is never sent again.
    again = _written_before(request, (data or request.GET).get("again"))
    if again is not None and data is None:
        initial = written_again(again, mailboxes) | {"again": again.pk}
        if "reply" in initial:
            try:
                original, mode = _original(request, str(initial["reply"])), initial["mode"]
            except Http404:  # no longer the user's to see: written again unthreaded
                del initial["reply"], initial["mode"]
    else:
        initial = None if data else _initial(request, mailboxes, original, mode)
    form = ComposeForm(data, request.FILES or None, mailboxes=mailboxes, initial=initial)
    outgoing = None
    if data is not None and form.is_valid():
        account = next(m for m in mailboxes if m.pk == form.cleaned_data["sender"])
        mode = form.cleaned_data["mode"]
        try:
            outgoing = _composed(request, form, account, original, mode, again)
        except NotWrittenAgain as why:
            form.add_error(None, str(why))
    if outgoing is not None:
        target = outgoing.get_absolute_url()
        if request.htmx:
            return HttpResponseClientRedirect(target)
        return redirect(target)
    context = {"form": form, "original": original, "mode": mode, "again": again}
    if again is not None:
        context["again_own_files"] = [f["name"] for f in again.files if not f.get("forwarded")]
        # Sent again, or written again already: this one would go too.
        context["again_gone"] = not again.rewritable
    if original is not None:
        # In the language of the mailbox it goes from (chosen, or to be chosen).
        chosen = str(form["sender"].value())
        sender = next((m for m in mailboxes if str(m.pk) == chosen), mailboxes[0])
        context["quote"] = quote(
            original, forward=mode == "forward", language=sender.message_language
        )[0]
        if mode == "forward":
            context["files_going"], context["files_left"] = forwarded_files(original)
    if request.htmx and data is not None:
        return render(request, f"{TEMPLATE}#form", context)
    return render(request, TEMPLATE, context)


def _composed(request: HttpRequest, form, account, original, mode: str, again):
    return outgoing_compose(
        author=request.user,
        account=account,
        to=form.cleaned_data["to"],
        cc=form.cleaned_data["cc"],
        bcc=form.cleaned_data["bcc"],
        subject=form.cleaned_data["subject"],
        text=form.cleaned_data["body"],
        attachments=[
            (f.name, f.content_type or "application/octet-stream", f.read())
            for f in form.cleaned_data["attachments"]
        ],
        original=original,
        mode=mode,
        written_from=again,
    )


def _written_before(request: HttpRequest, pk: str | None):
    """An email the user wrote, to write again ("Edit as a new email")."""
    if not pk:
        return None
    if not (pk.isascii() and pk.isdecimal()):
        raise Http404
    return outgoing_or_404(request.user, int(pk))


@login_required
def outgoing_detail(request: HttpRequest, pk: int) -> HttpResponse:
    outgoing = outgoing_or_404(request.user, pk)
    context = _outgoing_context(outgoing)
    if request.htmx:
        return render(request, "sending/outgoing.html#status", context)
    return render(request, "sending/outgoing.html", context)


@login_required
@require_POST
def outgoing_resend_view(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Send again": a "Not sent" email, or one that "may have been sent" once its
    author says they checked it was not."""
    outgoing = outgoing_or_404(request.user, pk)
    checked = request.POST.get("checked") == "unsent"
    try:
        outgoing_resend(outgoing=outgoing, checked_unsent=checked)
        refusal = ""
    except NotResendable as why:
        refusal = str(why)
    if not request.htmx:
        if refusal:
            messages.error(request, refusal)
        else:
            messages.success(request, _resent())
        return redirect(outgoing.get_absolute_url())
    outgoing.refresh_from_db()
    # The whole email, so that what it says of the resend stands outside the status
    # its page polls (a poll would take it away at once, and the focus with it).
    context = _outgoing_context(outgoing, resent=_resent() if not refusal else "", refusal=refusal)
    return render(request, "sending/outgoing.html#email", context)


def _resent() -> str:
    # A fact that stays true whatever comes of it: the status above (polled) says that,
    # and this line stays where the focus is (a promise that "it goes out in a moment"
    # read on beside "Not sent" when the server refused it again).
    return f"Queued again at {timezone.localtime():%H:%M}. What became of it shows above."


def _outgoing_context(outgoing, **extra) -> dict:
    # For one that may have been sent: whether its copy would be in Sent if it was (a
    # provider that files sent mail itself); this app files its own copy only once the
    # server confirmed.
    uncertain = outgoing.state == outgoing.State.UNCERTAIN
    return {
        "outgoing": outgoing,
        "files_sent_copies": uncertain and files_sent_copies(outgoing.account),
        **extra,
    }
