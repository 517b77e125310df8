"""Moved to mail/ews/session.py (issue 16): the names stay importable from here while
branches written against the old place are merged."""

from mail.ews.session import directory_name, ews_close, ews_session

__all__ = ["directory_name", "ews_close", "ews_session"]
