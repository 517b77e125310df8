"""Small readers of what a request carries, shared by the apps' views."""

from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpRequest
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect

SEARCH_CHARS = 200


def search_text(request: HttpRequest, name: str = "q") -> str:
    """What was typed in a search box: trimmed, at most SEARCH_CHARS characters, without
    NUL (PostgreSQL refuses it in a text parameter: `?q=%00` was a server error)."""
    return request.GET.get(name, "").replace("\x00", "").strip()[:SEARCH_CHARS]


class SignInAgainMiddleware:
    """An htmx request made after the session ended: Django's login_required answers it
    with a redirect to the sign-in page, which htmx followed and swapped into the part of
    the page it was updating (a wizard step showing the sign-in page inside it, whose
    form posted to the wizard's address). It gets the whole sign-in page instead (htmx's
    HX-Redirect), and after signing in the page the user was on. After
    django_htmx.middleware.HtmxMiddleware (it reads `request.htmx`)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not (request.htmx and response.status_code == 302):
            return response
        login = resolve_url(settings.LOGIN_URL)
        if urlsplit(response["Location"]).path != urlsplit(login).path:
            return response
        back = request.htmx.current_url_abs_path or "/"
        return HttpResponseClientRedirect(f"{login}?{urlencode({REDIRECT_FIELD_NAME: back})}")
