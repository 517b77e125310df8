"""Handing a message to the mailbox's SMTP server, and putting a copy in its Sent folder.

Outcomes are exceptions with a kind: `transient` (nothing was handed over, or the
server said "try later": safe to try again), `permanent` (the server refused: the user
must change something), `uncertain` (the connection broke after the message was handed
over, before the server's answer: trying again could deliver it twice, so we do not).
"""

import contextlib
import imaplib
import re
import smtplib
import ssl
from email.parser import BytesHeaderParser
from email.utils import getaddresses

from accounts.connection import SignInError, imap_session, smtp_session
from accounts.oauth import ReconnectNeeded, TokenError, session_for
from providers.models import ServiceType

# Sign-in failures worth another try later; the rest need the owner.
TRANSIENT_SIGN_IN = {"temporary", "timeout", "refused", "connection", "dns", "unreachable"}
SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail", "INBOX.Sent", "INBOX/Sent")


class DeliveryError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _signed_in(session, account):
    """A signed-in SMTP or IMAP session of the mailbox (password or OAuth 2.0); a failed
    sign-in becomes a DeliveryError that says whether trying again later may help."""
    try:
        return session_for(session, account)
    except SignInError as error:
        kind = "transient" if error.kind in TRANSIENT_SIGN_IN else "permanent"
        raise DeliveryError(kind, str(error)) from None
    except ReconnectNeeded as error:
        raise DeliveryError("permanent", str(error)) from None
    except TokenError as error:
        raise DeliveryError("transient", str(error)) from None


def _said(code: int, reply) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"[:300]


def _refusal(code: int, reply, what: str) -> DeliveryError:
    kind = "transient" if 400 <= code < 500 else "permanent"
    return DeliveryError(kind, f"{what} (the server said: {_said(code, reply)})")


def _dot_stuffed(raw: bytes) -> bytes:
    data = re.sub(rb"(?m)^\.", b"..", raw)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def deliver(*, account, sender: str, recipients: list[str], raw: bytes, handing_over) -> None:
    """Send `raw` to `recipients`; `handing_over()` is called just before the message's
    bytes go out, so the caller can record that a retry is no longer safe."""
    if account.provider.service_type == ServiceType.EXCHANGE:
        return _deliver_ews(account=account, recipients=recipients, raw=raw,
                            handing_over=handing_over)  # fmt: skip
    client = _signed_in(smtp_session, account)
    handed_over = False
    try:
        code, reply = client.mail(sender)
        if code != 250:
            raise _refusal(code, reply, f"The server would not send as {sender}")
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                raise _refusal(code, reply, f"The server refused the recipient {recipient}")
        code, reply = client.docmd("DATA")
        if code != 354:
            raise _refusal(code, reply, "The server would not take the message")
        handing_over()
        handed_over = True
        client.send(_dot_stuffed(raw))
        code, reply = client.getreply()
        if code != 250:
            raise _refusal(code, reply, "The server did not accept the message")
    except DeliveryError:
        raise
    except (OSError, smtplib.SMTPException, ssl.SSLError) as error:
        if handed_over:
            raise DeliveryError(
                "uncertain",
                "The connection to the mail server broke after the message was handed over "
                "and before the server confirmed it. It may have been sent: check the "
                "recipient's copy or your Sent folder before sending it again.",
            ) from None
        raise DeliveryError(
            "transient",
            f"The connection to the mail server broke before the message was handed over "
            f"({type(error).__name__}).",
        ) from None
    finally:
        with contextlib.suppress(Exception):
            client.quit()
        with contextlib.suppress(Exception):
            client.close()


# Exchange answers these when it could not take the message now; nothing was sent.
EWS_BUSY = {
    "ErrorServerBusy", "ErrorInternalServerTransientError",
    "ErrorMailboxStoreUnavailable", "ErrorMailboxMoveInProgress",
    "ErrorConnectionFailedTransientError",
}  # fmt: skip


def _deliver_ews(*, account, recipients: list[str], raw: bytes, handing_over) -> None:
    """CreateItem with SendAndSaveCopy: Exchange sends the MIME message as written and
    files the copy in Sent Items itself. Bcc recipients, absent from the headers, go as
    the item's BccRecipients."""
    from exchangelib import Message
    from exchangelib.errors import ErrorTimeoutExpired, EWSError, ResponseMessageError

    from accounts.exchange import ews_close, ews_session

    headers = BytesHeaderParser().parsebytes(raw)
    shown = {
        a.lower() for _n, a in getaddresses(headers.get_all("To", []) + headers.get_all("Cc", []))
    }
    bcc = [r for r in recipients if r.lower() not in shown]
    ews = _signed_in(ews_session, account)
    handed_over = False
    try:
        message = Message(
            account=ews, folder=ews.sent, mime_content=raw, bcc_recipients=bcc or None
        )
        handing_over()
        handed_over = True
        message.send_and_save()
    except ResponseMessageError as error:
        name = type(error).__name__
        # exchangelib also makes these up from the HTTP layer (a 503, a timeout, a cut
        # connection: "Reraised from ...", "Caused by ..."). Only an answer the server
        # wrote itself says the message was not taken; anything else after the
        # hand-over may have been sent.
        made_up = str(error).startswith(("Reraised from", "Caused by"))
        if handed_over and (made_up or isinstance(error, ErrorTimeoutExpired)):
            raise _ews_uncertain(error) from None
        kind = "transient" if name in EWS_BUSY or made_up else "permanent"
        raise DeliveryError(kind, f"Exchange did not send the message ({name}: {error}).") from None
    except (EWSError, OSError) as error:
        if not handed_over:
            raise DeliveryError(
                "transient", f"Exchange could not be reached ({type(error).__name__})."
            ) from None
        raise _ews_uncertain(error) from None
    finally:
        ews_close(ews)


def _ews_uncertain(error: Exception) -> DeliveryError:
    return DeliveryError(
        "uncertain",
        "The connection to Exchange broke after the message was handed over and before "
        "the server confirmed it. It may have been sent: check the recipient's copy or "
        f"your Sent Items before sending it again ({type(error).__name__}).",
    )


def sent_folder(client) -> str:
    """The folder the server marks \\Sent (SPECIAL-USE), else one with a common name;
    made if there is none."""
    folders = client.list_folders()
    for flags, _delimiter, name in folders:
        if b"\\Sent" in flags:
            return name
    names = {name.lower(): name for _flags, _delimiter, name in folders}
    for candidate in SENT_NAMES:
        if candidate.lower() in names:
            return names[candidate.lower()]
    client.create_folder("Sent")
    with contextlib.suppress(Exception):
        client.subscribe_folder("Sent")
    return "Sent"


def copy_to_sent(*, account, raw: bytes) -> str:
    """Append the message to the mailbox's Sent folder, read; returns the folder."""
    client = _signed_in(imap_session, account)
    try:
        folder = sent_folder(client)
        client.append(folder, raw, flags=[b"\\Seen"])
        return folder
    except (OSError, EOFError, imaplib.IMAP4.abort) as error:
        raise DeliveryError(
            "transient", f"The connection broke ({type(error).__name__})."
        ) from None
    except imaplib.IMAP4.error as error:
        raise DeliveryError("permanent", f"The server refused the copy ({error}).") from None
    finally:
        with contextlib.suppress(Exception):
            client.logout()
