"""Moved to mail/imap_smtp/connection.py (issue 16): the names stay importable from here
while branches written against the old place are merged."""

from mail.backend import Endpoint
from mail.errors import SignInError
from mail.imap_smtp.connection import (
    endpoints_for,
    imap_session,
    login_for,
    smtp_session,
)
from mail.registry import check_sign_in

__all__ = [
    "Endpoint", "SignInError", "check_sign_in", "endpoints_for", "imap_session", "login_for",
    "smtp_session",
]  # fmt: skip
