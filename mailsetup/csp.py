"""What a page that shows an email or a signature in a sandboxed srcdoc frame adds to
the site's Content-Security-Policy (settings.CONTENT_SECURITY_POLICY).

A srcdoc document inherits its page's policy and adds its own (sync.sanitize's meta
policy); both apply. The sanitised HTML keeps style attributes, inline images (data:,
cid:) and, when the user asks, remote images: the page's policy must allow those, for
the frame alone to narrow them. Scripts stay forbidden by both, and by the sandbox.
"""

from django.http import HttpResponse

UNSAFE_INLINE = "'unsafe-inline'"


def allow_mail_frame(response: HttpResponse, *, remote_images: bool = False) -> HttpResponse:
    images = ["cid:", *(["https:", "http:"] if remote_images else [])]
    response._csp_update = {"style-src-attr": [UNSAFE_INLINE], "img-src": images}
    return response
