"""What every template may use without `{% load %}` (settings.TEMPLATES builtins), and
the navigation's current section (a context processor)."""

from datetime import datetime
from functools import cache

from django import template
from django.conf import settings
from django.http import HttpRequest
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.timesince import timesince

register = template.Library()

# The navigation's sections by the first part of the path: the link of the page's
# section carries aria-current="page".
SECTIONS = {
    "email": "email",
    "emails": "email",
    "compose": "email",
    "outgoing": "email",
    "contacts": "contacts",
    "companies": "companies",
    "mailboxes": "mailboxes",
    "help": "mailboxes",
    "admin": "admin",
}


def navigation(request: HttpRequest) -> dict:
    first = request.path.strip("/").split("/", 1)[0]
    return {"nav_section": SECTIONS.get(first, "")}


@register.filter
def ago(value: datetime | None) -> str:
    """ "just now" under a minute, else "5 minutes ago": never "0 minutes ago"."""
    if not value:
        return ""
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value)} ago"


def short_datetime(value: datetime | None) -> str:
    """`{{ value|date:"SHORT_DATETIME_FORMAT" }}` for the tags that write a list's rows
    in Python: in the current time zone, empty for none."""
    return date_format(timezone.template_localtime(value), "SHORT_DATETIME_FORMAT") if value else ""


# Stands for the id in a route reversed once: no route or script prefix holds it.
_ID = 987_654_321_987_654_321


@cache
def _route_of_id(name: str, prefix: str, urlconf: str | None) -> tuple[str, str]:
    head, tail = reverse(name, args=[_ID], urlconf=urlconf).split(str(_ID))
    return head, tail


@register.simple_tag
def id_url(name: str, pk: int) -> str:
    """`{% url name pk %}` for a route whose one argument is an integer id, reversed
    once per route instead of once per row: a list's links took a third of its
    rendering (issue 19)."""
    if type(pk) is not int or pk < 0:
        return reverse(name, args=[pk])  # as `{% url %}` would take it, or refuse it
    urlconf = get_urlconf() or settings.ROOT_URLCONF
    head, tail = _route_of_id(name, get_script_prefix(), urlconf)
    return f"{head}{pk}{tail}"
