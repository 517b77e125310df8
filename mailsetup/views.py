from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from sync.selectors import heartbeat_age


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


def healthz(request: HttpRequest) -> JsonResponse:
    """Database reachable, and whether beat and a worker ran the heartbeat lately."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    age = heartbeat_age()
    workers_ok = age is not None and age.total_seconds() < 3 * settings.HEARTBEAT_INTERVAL
    return JsonResponse(
        {
            "database": "ok",
            "workers": "ok" if workers_ok else "no recent heartbeat",
            "heartbeat_age_seconds": None if age is None else round(age.total_seconds()),
        }
    )
