import ssl
from functools import cache

import trustme


@cache
def test_ca() -> trustme.CA:
    """One CA for the suite's mail servers; the app trusts it through MAIL_EXTRA_CA_FILE."""
    return trustme.CA()


def server_context(*hostnames: str, ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    (ca or test_ca()).issue_cert(*hostnames).configure_cert(context)
    return context
