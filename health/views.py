import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from accounts.selectors import MANAGE_PROVIDERS
from mailsetup.http import search_text
from mailsetup.keyset import Cursor, dated_page, dated_page_before
from sync.models import SyncRun

from . import listener
from .metrics import registry
from .selectors import SORTS, STATES, classify, health_rows, mailboxes, with_counts

PAGE_SIZE = 50
RUNS_PAGE_SIZE = 50


def _operator(request: HttpRequest) -> None:
    """Staff with "manage email providers", as for the provider directory (the caller
    is signed in: login_required sends the others to the sign-in page)."""
    user = request.user
    if not (user.is_staff and user.has_perm(MANAGE_PROVIDERS)):
        raise PermissionDenied


@login_required
@require_GET
def health_page(request: HttpRequest) -> HttpResponse:
    _operator(request)
    state = request.GET.get("state", "")
    state = state if state in STATES else ""
    sort = request.GET.get("sort", "state")
    sort = sort if sort in SORTS else "state"
    search = search_text(request)
    found = health_rows(state=state, sort=sort, search=search)
    page = Paginator(found["rows"], PAGE_SIZE).get_page(request.GET.get("page"))
    with_counts(list(page.object_list))
    return render(
        request,
        "health/mailboxes.html",
        {
            "page": page,
            "choices": [(key, label, found["counts"][key]) for key, label in STATES.items()],
            "total": sum(found["counts"].values()),
            "state": state,
            "state_label": STATES.get(state, ""),
            "sort": sort,
            "search": search,
            "push_enabled": listener.enabled(),
            "sorts": {
                "state": "State",
                "lag": "Longest lag",
                "-lag": "Shortest lag",
                "address": "Address",
                "owner": "Owner",
            },
        },
    )


@login_required
@require_GET
def mailbox_runs(request: HttpRequest, pk: int) -> HttpResponse:
    """A mailbox's sync runs, newest first, a keyset page at a time."""
    _operator(request)
    account = get_object_or_404(mailboxes(), pk=pk)
    (row,) = with_counts(classify([account]))
    rows = SyncRun.objects.filter(account=account)
    before = Cursor.parse(request.GET.get("before"))
    if before is not None:
        runs = dated_page_before(rows, before, RUNS_PAGE_SIZE, date="started_at")
    else:
        cursor = Cursor.parse(request.GET.get("after"))
        runs = dated_page(rows, cursor, RUNS_PAGE_SIZE, date="started_at")
    for run in runs:
        run.took = _took(run)
    context = {"row": row, "account": account, "runs": runs}
    return render(
        request, "health/runs.html", {**context, "history_days": settings.SYNC_RUN_HISTORY_DAYS}
    )


def _took(run: SyncRun) -> str:
    if run.finished_at is None:
        return ""
    seconds = max(0, round((run.finished_at - run.started_at).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' scrape: with METRICS_TOKEN as a bearer token, or as a signed-in staff
    user; anyone else is refused (403), and so is everyone but staff while no token is
    set."""
    if not _may_scrape(request):
        raise PermissionDenied
    response = HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


def _may_scrape(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    offered = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    if token and offered and hmac.compare_digest(offered.encode(), token.encode()):
        return True
    user = request.user
    return bool(user.is_authenticated and user.is_active and user.is_staff)
