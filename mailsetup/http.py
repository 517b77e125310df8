"""Small readers of what a request carries, shared by the apps' views."""

from django.http import HttpRequest

SEARCH_CHARS = 200


def search_text(request: HttpRequest, name: str = "q") -> str:
    """What was typed in a search box: trimmed, at most SEARCH_CHARS characters, without
    NUL (PostgreSQL refuses it in a text parameter: `?q=%00` was a server error)."""
    return request.GET.get(name, "").replace("\x00", "").strip()[:SEARCH_CHARS]
