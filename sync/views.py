import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from mailsetup.csp import allow_mail_frame
from sharing.selectors import (
    email_for_user,
    emails_for_user,
    mailboxes_for_setup,
    mailboxes_for_status,
)

from .files import original_open, safe_download_name
from .models import Attachment, Email
from .sanitize import email_document, hold_back_remote_images
from .selectors import folder_overview, problem_emails, sync_status
from .services import download_queue


@login_required
def email_detail(request: HttpRequest, pk: int) -> HttpResponse:
    email = email_for_user(request.user, pk)
    if email is None:
        raise Http404
    allow_images = request.GET.get("images") == "1"
    # Stored safe when the email was downloaded (sync.parsing); here only the remote
    # images are held back, unless asked for: a linear rewrite, whatever the HTML.
    html, blocked = email.html_body, 0
    if html and not allow_images:
        html, blocked = hold_back_remote_images(html)
    response = render(
        request,
        "sync/email_detail.html",
        {
            "email": email,
            "document": email_document(html, allow_remote_images=allow_images) if html else "",
            "blocked_images": blocked,
            "attachments": email.attachments.all(),
            "problem": PROBLEMS.get(email.problem, ""),
            "notes": [note for note in email.notes.splitlines() if note.strip()],
        },
    )
    return allow_mail_frame(response, remote_images=allow_images)


PROBLEMS = {
    Email.Problem.UNREADABLE: "This email could not be read: only what little could be read "
    "is shown. Its original is kept as it came.",
    Email.Problem.INCOMPLETE: "This email could not be read completely: what could be read "
    "is shown. Its original is kept as it came.",
}


@login_required
def original_download(request: HttpRequest, pk: int) -> FileResponse:
    """The message as the server sent it (.eml), for an email whose original was kept."""
    email = email_for_user(request.user, pk)
    if email is None or not email.original:
        raise Http404
    try:
        original = original_open(email.original.name)
    except OSError as error:
        raise Http404 from error
    name = re.sub(r"[/\\]", "-", email.subject)[:100].strip() or "email"
    return FileResponse(
        original,
        as_attachment=True,
        filename=f"{safe_download_name(name)}.eml",
        content_type="message/rfc822",
    )


@login_required
def attachment_download(request: HttpRequest, pk: int, attachment_pk: int) -> FileResponse:
    email = email_for_user(request.user, pk)
    if email is None:
        raise Http404
    stored = Attachment.objects.exclude(file="")
    attachment = get_object_or_404(stored, pk=attachment_pk, email=email)
    # Always a download, never rendered inline: an attachment may be HTML or SVG.
    return FileResponse(
        attachment.file.open("rb"),
        as_attachment=True,
        filename=safe_download_name(attachment.name),
        content_type="application/octet-stream",
    )


@login_required
@require_POST
def download_now(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(mailboxes_for_setup(request.user), pk=pk)
    if not download_queue(account_id=account.pk, now=True):
        later = (
            "automatic downloads go on by themselves once it is back"
            if account.auto_sync
            else "try again in a few minutes"
        )
        messages.warning(request, f"The app's task queue cannot be reached right now: {later}.")
    target = f"{account.get_absolute_url()}#sync"
    if request.htmx:
        return HttpResponseClientRedirect(target)
    return redirect(target)


@login_required
def mailbox_problems(request: HttpRequest, pk: int) -> HttpResponse:
    """ "See why": each folder's count on the server beside what is stored, what could not
    be stored and why, and the emails stored with a problem."""
    account = get_object_or_404(mailboxes_for_status(request.user), pk=pk)
    emails = problem_emails(emails_for_user(request.user), account)
    return render(
        request,
        "sync/problems.html",
        {
            "account": account,
            "folders": folder_overview(account),
            "problem_emails": emails[:PROBLEM_EMAILS_SHOWN],
            "more": max(0, emails.count() - PROBLEM_EMAILS_SHOWN),
            **sync_status(account),
        },
    )


# Enough to see what went wrong; the rest are counted.
PROBLEM_EMAILS_SHOWN = 200


@login_required
def sync_status_partial(request: HttpRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(mailboxes_for_status(request.user), pk=pk)
    return render(request, "sync/status.html", {"account": account, **sync_status(account)})
