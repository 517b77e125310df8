"""Moved to mail/errors.py (issue 16): the names stay importable from here while
branches written against the old place are merged."""

from mail.errors import ACTIONS, PROVIDER_KINDS, Action, MailError, action_of

__all__ = ["ACTIONS", "PROVIDER_KINDS", "Action", "MailError", "action_of"]
