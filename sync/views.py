import re

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from crm.selectors import email_links, link_candidates
from mailsetup.csp import allow_mail_frame
from mailsetup.http import search_text
from sharing.access import email_or_404, mailbox_or_404
from sharing.selectors import (
    MailboxAction,
    emails_for_poller,
    emails_for_user,
    mailbox_access,
    sendable_mailboxes,
)

from .files import original_open, safe_download_name
from .live import POLL_SECONDS, PollState, newest_email_id, window_mark
from .models import Attachment, Email
from .sanitize import cids_shown, email_document, hold_back_remote_images, inline_images
from .selectors import advice_for_colleague, folder_overview, problem_emails, sync_status
from .services import download_request


@login_required
def email_detail(request: HttpRequest, pk: int) -> HttpResponse:
    email = email_or_404(request.user, pk)
    allow_images = request.GET.get("images") == "1"
    link_query = search_text(request, "link")
    # Stored safe when the email was downloaded (sync.parsing); here only the remote
    # images are held back, unless asked for: a linear rewrite, whatever the HTML.
    html, blocked = email.html_body, 0
    if html and not allow_images:
        html, blocked = hold_back_remote_images(html)
    attachments, inline = _parts(email, html)
    document = ""
    if html:
        # The email's own images ("cid:") from the app, under the email's access rules;
        # the frame's policy allows that one address and nothing else of ours.
        base = request.build_absolute_uri(f"{email.get_absolute_url()}inline/")
        key = inline_key(request.user, email)
        html = inline_images(
            html, {cid: f"{base}{part.pk}/?k={key}" for cid, part in inline.items()}
        )
        document = email_document(
            html, allow_remote_images=allow_images, inline_source=base if inline else ""
        )
    response = render(
        request,
        "sync/email_detail.html",
        {
            "email": email,
            "document": document,
            "blocked_images": blocked,
            "attachments": attachments,
            # Whom it is linked to (and the links changed by hand); `link` is what was
            # typed to find another one, when the page works without JavaScript.
            **email_links(email),
            "link_query": link_query,
            "candidates": link_candidates(email, link_query) if link_query else None,
            "problem": PROBLEMS.get(email.problem, ""),
            # Reply and Forward only for someone who may send from some mailbox.
            "can_answer": sendable_mailboxes(request.user).exists(),
            "notes": [note for note in email.notes.splitlines() if note.strip()],
        },
    )
    return allow_mail_frame(response, remote_images=allow_images)


def _parts(email: Email, html: str) -> tuple[list[Attachment], dict[str, Attachment]]:
    """The email's real attachments, listed; and the pictures its HTML shows (by
    Content-ID), which are part of its text and not listed. A part the HTML points at
    that is no picture (Apple Mail shows a PDF so) stays listed: it must stay findable.
    Emails stored before Content-IDs were kept: a "cid:image001.png@…" finds the part
    named image001.png."""
    shown = cids_shown(html) if html else set()
    by_name = {cid.split("@", 1)[0]: cid for cid in shown}
    listed, inline = [], {}
    for part in email.attachments.all():
        cid = part.content_id.lower() or by_name.get(part.name.lower(), "")
        picture = part.content_type.lower() in INLINE_TYPES
        if cid and cid in shown and part.file and picture and cid not in inline:
            inline[cid] = part
        else:
            listed.append(part)
    return listed, inline


# Served for an <img>: types a browser shows as pictures and nothing else (an SVG or
# HTML part would be a document of our origin if opened on its own).
INLINE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"}


# The sandboxed frame has no origin of its own, so its requests carry no session cookie
# (they are cross-site): its image addresses carry a key instead, made for the user and
# the email when the page is shown. The key only says who asks; the email's access rules
# are checked again for that user at every request, so a revoked grant counts at once.
INLINE_KEY_SALT = "sync.inline"
# The frame asks for its images as the page is shown: minutes are plenty, and the key is
# in the address (proxies log it).
INLINE_KEY_MAX_AGE = 600


def inline_key(user, email: Email) -> str:
    return signing.dumps([user.pk, email.pk], salt=INLINE_KEY_SALT, compress=False)


def _inline_user(request: HttpRequest, pk: int):
    if request.user.is_authenticated:
        return request.user
    try:
        user_pk, email_pk = signing.loads(
            request.GET.get("k", ""), salt=INLINE_KEY_SALT, max_age=INLINE_KEY_MAX_AGE
        )
    except (signing.BadSignature, ValueError, TypeError):
        return None
    if email_pk != pk:
        return None
    return get_user_model().objects.filter(pk=user_pk, is_active=True).first()


def inline_part(request: HttpRequest, pk: int, part_pk: int) -> FileResponse:
    """A part an email's HTML shows (cid:), for its page's frame: the email's own access
    rules (whoever may download its attachments), a picture or nothing runnable."""
    user = _inline_user(request, pk)
    if user is None:
        raise Http404
    email = email_or_404(user, pk)
    # A part with a Content-ID, or a picture (an email stored before Content-IDs were
    # kept shows its pictures by name): nothing else is this address's business.
    parts = Attachment.objects.exclude(file="").filter(
        ~Q(content_id="") | Q(content_type__in=INLINE_TYPES)
    )
    part = get_object_or_404(parts, pk=part_pk, email=email)
    content_type = part.content_type.lower()
    response = FileResponse(
        part.file.open("rb"),
        content_type=content_type if content_type in INLINE_TYPES else "application/octet-stream",
    )
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = f"private, max-age={INLINE_KEY_MAX_AGE}"
    return response


PROBLEMS = {
    Email.Problem.UNREADABLE: "This email could not be read: only what little could be read "
    "is shown. Its original is kept as it came.",
    Email.Problem.INCOMPLETE: "This email could not be read completely: what could be read "
    "is shown. Its original is kept as it came.",
}


@login_required
def original_download(request: HttpRequest, pk: int) -> FileResponse:
    """The message as the server sent it (.eml), for an email whose original was kept."""
    email = email_or_404(request.user, pk)
    if not email.original:
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
    email = email_or_404(request.user, pk)
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
    account = mailbox_or_404(request.user, pk)
    queued = download_request(account_id=account.pk)
    queue_down = ""
    if not queued:
        later = (
            "automatic downloads go on by themselves once it is back"
            if account.auto_sync
            else "try again in a few minutes"
        )
        queue_down = f"The app's task queue cannot be reached right now: {later}."
    if request.htmx:
        # The status in place of the button's section, looking again every 2 s from now.
        context = {"account": account, "queue_down": queue_down, **sync_status(account)}
        return render(request, "sync/status.html", context)
    if queue_down:
        messages.warning(request, queue_down)
    return redirect(f"{account.get_absolute_url()}#sync")


@login_required
def mailbox_problems(request: HttpRequest, pk: int) -> HttpResponse:
    """ "See why": each folder's count on the server beside what is stored, what could not
    be stored and why, and the emails stored with a problem."""
    account = mailbox_or_404(request.user, pk, MailboxAction.STATUS)
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
    account = mailbox_or_404(request.user, pk, MailboxAction.STATUS)
    status = sync_status(account)
    # A colleague's view (the owner's needs no question: the status is polled).
    colleague = account.owner_id != request.user.pk
    if colleague and not mailbox_access(request.user, pk, MailboxAction.SETUP).allowed:
        status["health"] = advice_for_colleague(status["health"], account)
    return render(request, "sync/status.html", {"account": account, **status})


# -- New emails on an open page without a reload (issue 18; the mechanism: sync/live.py) --


def _number(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdecimal() and len(value) < 19 else None


@login_required
@require_GET
def new_emails(request: HttpRequest) -> HttpResponse:
    after = _number(request.GET.get("after", "")) or 0
    # A timeline's list (contact or company) or a mailbox's status, else the Email page's.
    scope = {
        name: number
        for name in ("contact", "company", "account")
        if (number := _number(request.GET.get(name, ""))) is not None
    }
    mailboxes, shown = emails_for_poller(request.user, **scope)
    state = PollState(after, _number(request.GET.get("mark", "")) or 0)
    newest = newest_email_id(mailboxes)
    mark = window_mark(shown, mailboxes, state.after)
    if (newest, mark) == (state.after, state.mark):
        return HttpResponse(status=204)
    # The newest id moved (in the mailboxes the user may see there), or the list has an
    # email it did not show (newer, or committed late behind the newest): a new state.
    fresh = PollState(
        newest, mark if newest == state.after else window_mark(shown, mailboxes, newest)
    )
    context = {"state": fresh, "seconds": POLL_SECONDS, "scope": scope}
    response = render(request, "sync/new_emails.html", context)
    if mark != state.mark:
        response["HX-Trigger"] = "new-emails"
    return response
