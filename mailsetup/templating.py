"""What every template may use without `{% load %}` (settings.TEMPLATES builtins), and
the navigation's current section (a context processor)."""

from datetime import datetime

from django import template
from django.http import HttpRequest
from django.utils import timezone
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
