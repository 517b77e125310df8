"""Moved to mail/imap_smtp/connection.py (issue 16): the names stay importable from here
while branches written against the old place are merged."""

from mail.errors import SignInError
from mail.imap_smtp.connection import (
    Endpoint,
    check_sign_in,
    endpoints_for,
    imap_session,
    login_for,
    smtp_session,
)

__all__ = [
    "Endpoint", "SignInError", "check_sign_in", "endpoints_for", "imap_session", "login_for",
    "smtp_session",
]  # fmt: skip
