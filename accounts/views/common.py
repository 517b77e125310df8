"""Small helpers the page families share."""

from urllib.parse import urlencode, urlsplit

from django.http import HttpRequest
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from ..oauth import identity_hosts


def query_url(name: str, **params) -> str:
    """The named URL with the parameters that have a value (the wizard's state)."""
    return f"{reverse(name)}?{urlencode({k: v for k, v in params.items() if v})}"


def reconnect_origins(alerts) -> list[str]:
    """The sign-in origins the page's "Reconnect" forms lead to (its form-action)."""
    return [
        origin
        for alert in alerts
        if alert.reconnect
        for origin in identity_hosts(alert.account.provider).origins
    ]


def same_site_path(request: HttpRequest, url: str | None) -> str | None:
    """`url` as a path (and query) on this site, or None: another host, a scheme-relative
    or odd URL (a backslash, a scheme other than http(s)) never gets through."""
    if not url or len(url) > 2000:
        return None
    if not url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return None
    parts = urlsplit(url)
    if not parts.path.startswith("/") or parts.path.startswith("//") or "\\" in url:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")
