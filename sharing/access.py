"""The views' one access check: the mailbox, email or outgoing email a URL names, or
"not found" (404) when the user may not know it exists, or "forbidden" (403) when they
see it but lack the right for what they ask. The rules themselves are
sharing.selectors'; this only turns their answer into the HTTP one."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from accounts.models import EmailAccount

from .selectors import (
    MailboxAction,
    email_for_linking,
    email_for_user,
    mailbox_access,
    outgoing_for_user,
)


def mailbox_or_404(user, pk: int, action: MailboxAction = MailboxAction.SETUP) -> EmailAccount:
    access = mailbox_access(user, pk, action)
    if access.account is None:
        raise Http404
    if not access.allowed:
        raise PermissionDenied
    return access.account


def email_or_404(user, pk: int, *, linking: bool = False):
    """An email the user may see anywhere; `linking`: one whose contacts and companies
    they may change by hand."""
    email = (email_for_linking if linking else email_for_user)(user, pk)
    if email is None:
        raise Http404
    return email


def outgoing_or_404(user, pk: int):
    outgoing = outgoing_for_user(user, pk)
    if outgoing is None:
        raise Http404
    return outgoing
