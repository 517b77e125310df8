"""Sending through Exchange (CreateItem with SendAndSaveCopy), and a Sent copy saved
by hand where one is wanted: Exchange's answers become MailErrors (mail/errors.py)."""

from email.parser import BytesHeaderParser
from email.utils import getaddresses

from mail import trust
from mail.errors import MailError

from .session import ews_close

# Exchange answers these when it could not take the message now; nothing was sent.
EWS_BUSY = {
    "ErrorServerBusy", "ErrorInternalServerTransientError",
    "ErrorMailboxStoreUnavailable", "ErrorMailboxMoveInProgress",
    "ErrorConnectionFailedTransientError",
}  # fmt: skip
# Sign-ins that belong to a connection rather than to each request (exchangelib's names).
CONNECTION_AUTH = {"NTLM", "sspi", "gssapi"}
# The login may not send from this mailbox: its owner or an administrator grants it.
EWS_DENIED = {"ErrorAccessDenied", "ErrorSendAsDenied"}


def deliver(ews, *, recipients: list[str], raw: bytes, handing_over) -> None:
    """CreateItem with SendAndSaveCopy: Exchange sends the MIME message as written and
    files the copy in Sent Items itself. Bcc recipients, absent from the headers, go as
    the item's BccRecipients."""
    from exchangelib import Message
    from exchangelib.errors import ErrorTimeoutExpired, EWSError, ResponseMessageError

    headers = BytesHeaderParser().parsebytes(raw)
    shown = {
        a.lower() for _n, a in getaddresses(headers.get_all("To", []) + headers.get_all("Cc", []))
    }
    bcc = [r for r in recipients if r.lower() not in shown]
    handed_over = False
    try:
        message = Message(
            account=ews, folder=ews.sent, mime_content=raw, bcc_recipients=bcc or None
        )
        # The requests before (the Sent Items folder, the version check) kept their
        # connections alive; one the server or a load balancer has let go of since would
        # fail after the hand-over and read "may have been sent". CreateItem goes on a
        # new one (exchangelib opens sessions again as they are asked for), but for
        # NTLM, which signs in the connection itself: on a new one the message would go
        # up three times (unsigned, then each step of the handshake).
        if ews.protocol.config.auth_type not in CONNECTION_AUTH:
            ews.protocol.close()
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
        # CreateItem goes on a new connection: one that could not be made (the server
        # down, the proxy refusing) took nothing.
        if handed_over and (made_up or isinstance(error, ErrorTimeoutExpired)):
            if not trust.never_sent(error):
                raise _ews_uncertain(error) from None
            raise MailError("connection", _unreached(error)) from None
        if name in EWS_BUSY:
            kind = "busy"
        elif made_up:
            kind = "connection"
        elif name in EWS_DENIED:
            kind = "access_denied"
        else:
            kind = "rejected"
        raise MailError(kind, f"Exchange did not send the message ({name}: {error}).") from None
    except (EWSError, OSError) as error:
        if not handed_over or trust.never_sent(error):
            raise MailError("connection", _unreached(error)) from None
        raise _ews_uncertain(error) from None
    finally:
        ews_close(ews)


def _unreached(error: Exception) -> str:
    why = trust.proxy_refusal(error) or type(error).__name__
    return f"Exchange could not be reached ({why}); nothing was sent."


def _ews_uncertain(error: Exception) -> MailError:
    return MailError(
        "handed_over",
        "The connection to Exchange broke after the message was handed over and before "
        "the server confirmed it. It may have been sent: check the recipient's copy or "
        f"your Sent Items before sending it again ({type(error).__name__}).",
    )


# Newest items of Sent Items looked through for an earlier try's copy.
LOOK_BACK = 50


def copy_to_sent(ews, *, raw: bytes, message_id: str = "", look_first: bool = False) -> str:
    """Save the message in Sent Items, read (CreateItem with SaveOnly), then close the
    session; returns the folder's name. Exchange files what it sends itself, so only a
    message sent some other way needs this. With `look_first`, a copy with the same
    Message-ID among the newest items counts as done."""
    from exchangelib import Message
    from exchangelib.errors import EWSError, ResponseMessageError

    try:
        folder = ews.sent
        if look_first and message_id:
            newest = folder.all().only("message_id").order_by("-datetime_received")[:LOOK_BACK]
            if any(getattr(item, "message_id", None) == message_id for item in newest):
                return folder.name
        Message(account=ews, folder=folder, mime_content=raw, is_read=True).save()
        return folder.name
    except ResponseMessageError as error:
        name = type(error).__name__
        kind = "busy" if name in EWS_BUSY else "server_error"
        raise MailError(kind, f"Exchange did not save the copy ({name}: {error}).") from None
    except (EWSError, OSError) as error:
        raise MailError(
            "connection_lost", f"The connection broke during the copy ({type(error).__name__})."
        ) from None
    finally:
        ews_close(ews)
