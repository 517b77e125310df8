"""What a page that shows an email or a signature in a sandboxed srcdoc frame adds to
the site's Content-Security-Policy (settings.CONTENT_SECURITY_POLICY).

A srcdoc document inherits its page's policy and adds its own (sync.sanitize's meta
policy); both apply. The sanitised HTML keeps style attributes, inline images (data:,
cid:) and, when the user asks, remote images: the page's policy must allow those, for
the frame alone to narrow them. Scripts stay forbidden by both, and by the sandbox.
"""

from django.http import HttpResponse

UNSAFE_INLINE = "'unsafe-inline'"


def _add(response: HttpResponse, directive: str, sources: list[str]) -> None:
    # What django-csp's @csp_update decorator sets, merged: a page may need both.
    update = dict(getattr(response, "_csp_update", None) or {})
    update[directive] = [*update.get(directive, []), *sources]
    response._csp_update = update


def allow_mail_frame(response: HttpResponse, *, remote_images: bool = False) -> HttpResponse:
    images = ["cid:", *(["https:", "http:"] if remote_images else [])]
    _add(response, "style-src-attr", [UNSAFE_INLINE])
    _add(response, "img-src", images)
    return response


def allow_oauth_forms(response: HttpResponse, origins: list[str]) -> HttpResponse:
    """A page with a "Sign in with …" or "Reconnect" form: the form posts to this site,
    which answers with a redirect to the provider's sign-in page, and the browser holds
    that redirect to the page's form-action too. Only the sign-in origins of the
    providers whose forms the page shows are added; every other page keeps 'self'."""
    if origins:
        _add(response, "form-action", sorted(set(origins)))
    return response
