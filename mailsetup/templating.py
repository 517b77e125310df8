"""What every template may use without `{% load %}` (settings.TEMPLATES builtins), and
the navigation's current section (a context processor)."""

from datetime import datetime
from functools import cache
from html import escape

from django import template
from django.conf import settings
from django.http import HttpRequest
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.utils.formats import get_format
from django.utils.functional import Promise
from django.utils.safestring import SafeString
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
    return _id_url(name, pk, get_script_prefix(), get_urlconf() or settings.ROOT_URLCONF)


def _id_url(name: str, pk: int, prefix: str, urlconf: str) -> str:
    if type(pk) is not int or pk < 0:
        return reverse(name, args=[pk])  # as `{% url %}` would take it, or refuse it
    head, tail = _route_of_id(name, prefix, urlconf)
    return f"{head}{pk}{tail}"


def html_row(format_string: str, *args) -> SafeString:
    """`format_html` for the tags that write a list's rows, escaping each argument as
    it does (`conditional_escape`: a value's own `__html__`, else `html.escape` of its
    text, quotes included) without Django's lazy-string wrappers around every call:
    they were a third of a 50-row page's rows (issue 19)."""
    return SafeString(format_string.format(*map(_escaped, args)))


def _escaped(value) -> str:
    if isinstance(value, Promise):
        value = str(value)
    if hasattr(value, "__html__"):
        return value.__html__()
    return escape(str(value))


class RowKit:
    """What every row of a list reads from the request, read once a page: the URL
    configuration and script prefix of `id_url`'s links (thread-local lookups, 2-4 us a
    link), and the format and time zone of `{{ value|date:"SHORT_DATETIME_FORMAT" }}`
    (looked up per row, 12-16 us a date). `RowKit.of(context)` gives the template's
    own, made at its first row, so a template that switched language or time zone
    between its rows ({% language %}, {% timezone %}: none does) would keep the first.
    A page's 50 rows, each with two links and a date, spent about 1.5 ms on these
    (issue 19)."""

    def __init__(self) -> None:
        self._urlconf = get_urlconf() or settings.ROOT_URLCONF
        self._prefix = get_script_prefix()
        self._format = get_format("SHORT_DATETIME_FORMAT")
        self._zone = timezone.get_current_timezone() if settings.USE_TZ else None

    @classmethod
    def of(cls, context) -> "RowKit":
        kit = context.render_context.get(cls)
        if kit is None:
            kit = context.render_context[cls] = cls()
        return kit

    def url(self, name: str, pk: int) -> str:
        """`id_url(name, pk)`."""
        return _id_url(name, pk, self._prefix, self._urlconf)

    def when(self, value: datetime | None) -> str:
        """`{{ value|date:"SHORT_DATETIME_FORMAT" }}`: in the current time zone, empty
        for none."""
        if not value:
            return ""
        if (
            self._zone is not None
            and isinstance(value, datetime)
            and value.utcoffset() is not None  # aware: as template_localtime converts
            and getattr(value, "convert_to_local_time", True)
        ):
            value = value.astimezone(self._zone)
        return format_date(value, self._format)
