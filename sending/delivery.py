"""Handing a message to the mailbox's server, and putting a copy in its Sent folder,
through the mailbox's backend (mail/registry.py), which does the talking.

Every failure is a MailError whose kind (mail.errors) decides what becomes of the email:
LATER (nothing was handed over, or the server said "try later"), OWNER or NEVER (the
owner, an administrator or the message must change), UNKNOWN ("handed_over": the
connection broke after the message was handed over and before the server's answer;
trying again could deliver it twice, so nothing is).
"""

from accounts.oauth import session_for
from mail.errors import MailError
from mail.registry import backend_for
from mailsetup.crypto import CredentialError

# The name sending's code has always used for a MailError met while delivering.
DeliveryError = MailError


def _signed_in(open_session, account):
    """A signed-in session of the mailbox's backend (password or OAuth 2.0); a failed
    sign-in raises its own MailError (SignInError, ReconnectNeeded, TokenError)."""
    if not account.login:
        raise DeliveryError(
            "login_missing",
            f"{account.address} has no login name stored. Enter it in the mailbox's settings.",
        )
    try:
        return session_for(open_session, account)
    except CredentialError:
        raise DeliveryError(
            "password_missing",
            f"The stored password of {account.address} can no longer be read (the app's "
            "credential keys changed). Enter the password again in the mailbox's settings.",
        ) from None
    except UnicodeEncodeError:
        # smtplib and imaplib encode the login as ASCII; the sign-in check refuses other
        # characters, but a password stored before that check must not crash the task.
        raise DeliveryError(
            "non_ascii",
            "The login or password contains characters (such as letters with accents) that "
            "mail servers do not accept at sign-in. Enter an app password in the mailbox's "
            "settings, or ask your mail administrator.",
        ) from None


def deliver(*, account, sender: str, recipients: list[str], raw: bytes, handing_over) -> None:
    """Send `raw` to `recipients`; `handing_over()` is called just before the message's
    bytes go out, so the caller can record that a retry is no longer safe (or raise to
    stop: the connection is then dropped, which makes the server discard it)."""
    backend = backend_for(account.provider)
    session = _signed_in(backend.open_sender, account)
    backend.deliver(
        session, sender=sender, recipients=recipients, raw=raw, handing_over=handing_over
    )


def copy_to_sent(*, account, raw: bytes, message_id: str = "", look_first: bool = False) -> str:
    """Put the message in the mailbox's Sent folder, read; returns the folder. With
    `look_first`, an earlier try may have stored it already (its answer was lost), so a
    copy with the same Message-ID found there counts as done."""
    backend = backend_for(account.provider)
    session = _signed_in(backend.open_reader, account)
    return backend.store_sent_copy(session, raw=raw, message_id=message_id, look_first=look_first)


def files_sent_copies(account) -> bool:
    """Whether the mailbox's server files what it sends in Sent by itself."""
    return backend_for(account.provider).files_sent_copies(account.provider)
