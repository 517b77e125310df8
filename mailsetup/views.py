import hmac

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from sync.selectors import heartbeat_age


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


def healthz(request: HttpRequest) -> JsonResponse:
    """The public learns only "ok" or "not ok" (and the status code says the same);
    staff users, and callers with HEALTHZ_TOKEN as a bearer token, get the details:
    the database reachable, and whether beat and a worker ran the heartbeat lately."""
    age = None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database_ok = True
        age = heartbeat_age()
    except DatabaseError:
        database_ok = False
    # A heartbeat stamped in the future (a worker's clock ahead) proves nothing about now.
    workers_ok = (
        age is not None
        and -settings.HEARTBEAT_INTERVAL <= age.total_seconds() < 3 * settings.HEARTBEAT_INTERVAL
    )
    ok = database_ok and workers_ok
    status = 200 if ok else 503
    if not _may_see_details(request, database_ok=database_ok):
        return JsonResponse({"status": "ok" if ok else "not ok"}, status=status)
    return JsonResponse(
        {
            "status": "ok" if ok else "not ok",
            "database": "ok" if database_ok else "unreachable",
            "workers": "ok"
            if workers_ok
            else "heartbeat stamped in the future: a server's clock is wrong"
            if age is not None and age.total_seconds() < 0
            else "no recent heartbeat",
            "heartbeat_age_seconds": None if age is None else round(age.total_seconds()),
        },
        status=status,
    )


def _may_see_details(request: HttpRequest, *, database_ok: bool) -> bool:
    token = settings.HEALTHZ_TOKEN
    offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if token and offered and hmac.compare_digest(offered.encode(), token.encode()):
        return True
    if not database_ok:
        # Who the caller is (session, user) lives in the database: a staff user is
        # told only what the public is, rather than answered with a 500.
        return False
    try:
        user = getattr(request, "user", None)
        return bool(user and user.is_active and user.is_staff)
    except DatabaseError:
        return False


def locked_out(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """django-axes' answer to a login while its user name and address are paused."""
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    context = {
        "username": username[:150],
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "minutes": minutes,
    }
    return render(request, "registration/locked_out.html", context, status=429)
