"""The IMAP/SMTP backend: IMAP reads (sync.engine's reader) and keeps the Sent copy,
SMTP sends."""

import imaplib
from typing import ClassVar

from providers.models import ServiceType

from ..backend import ListedFolder, MailBackend
from ..errors import MailError
from . import connection, delivery, wire

# RFC 6154's special uses the app shows, lowercased (Cyrus writes \sent).
SPECIAL_USE = {"\\sent", "\\trash", "\\junk", "\\drafts", "\\archive", "\\all", "\\flagged"}


def listed_folders(listing) -> list[ListedFolder]:
    """imapclient's list_folders() triples (flags, delimiter, name) in the app's terms."""
    folders = []
    for flags, delimiter, name in listing:
        lowered = {f.decode(errors="replace").lower() for f in flags}
        folders.append(
            ListedFolder(
                path=name,
                delimiter=(delimiter or b"").decode(errors="replace"),
                special_use=min((f for f in lowered if f in SPECIAL_USE), default=""),
                selectable="\\noselect" not in lowered and "\\nonexistent" not in lowered,
            )
        )
    return folders


class ImapSmtpBackend(MailBackend):
    service_type = ServiceType.IMAP_SMTP
    reader = "imap"
    microsoft_scopes: ClassVar[tuple[str, ...]] = (
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "email",
    )
    provider_fields = (
        "imap_host", "imap_port", "imap_security", "smtp_host", "smtp_port", "smtp_security",
        "stores_sent_copy",
    )  # fmt: skip

    def validate_provider(self, provider) -> dict[str, str]:
        errors = {}
        if provider.receive_enabled and not provider.imap_host:
            errors["imap_host"] = "Enter the IMAP server, or turn off receiving emails."
        if provider.receive_enabled and not provider.imap_port:
            errors["imap_port"] = "Enter the IMAP port (993 for SSL/TLS, 143 for STARTTLS)."
        if provider.send_enabled and not provider.smtp_host:
            errors["smtp_host"] = "Enter the SMTP server, or turn off sending emails."
        if provider.send_enabled and not provider.smtp_port:
            errors["smtp_port"] = "Enter the SMTP port (465 for SSL/TLS, 587 for STARTTLS)."
        return errors

    def endpoints(self, provider, address):
        return connection.endpoints_for(provider, address)

    def check_sign_in(self, **kwargs) -> str:
        return connection.check_sign_in(**kwargs)

    def open_reader(self, **kwargs):
        return connection.imap_session(**kwargs)

    def close_reader(self, session) -> None:
        wire.goodbye(session)

    def read_failure(self, error: Exception, *, oauth: bool = False) -> MailError | None:
        # A refused login never gets here: IMAP signs in when the session opens, and
        # open_reader raises its SignInError then.
        if isinstance(error, OSError | EOFError | imaplib.IMAP4.abort):
            return MailError(
                "connection_lost",
                f"The connection to the mail server broke off ({type(error).__name__}).",
            )
        if isinstance(error, imaplib.IMAP4.error):
            return MailError(
                "server_error",
                f"The mail server refused a command of the download ({error})."[:500],
            )
        return None

    def list_folders(self, session) -> list[ListedFolder]:
        try:
            return listed_folders(session.list_folders())
        except (OSError, EOFError, imaplib.IMAP4.abort) as error:
            raise MailError(
                "connection_lost",
                f"The connection to the mail server broke off ({type(error).__name__}).",
            ) from None
        except imaplib.IMAP4.error as error:
            raise MailError(
                "server_error", f"The mail server refused to list the folders ({error})."[:500]
            ) from None

    def open_sender(self, **kwargs):
        return connection.smtp_session(**kwargs)

    def deliver(self, session, *, sender, recipients, raw, handing_over) -> None:
        delivery.deliver(
            session, sender=sender, recipients=recipients, raw=raw, handing_over=handing_over
        )

    def store_sent_copy(self, session, *, raw, message_id="", look_first=False) -> str:
        return delivery.copy_to_sent(session, raw=raw, message_id=message_id, look_first=look_first)

    def files_sent_copies(self, provider) -> bool:
        # Gmail and the like file what SMTP sends; the provider card says so.
        return provider.stores_sent_copy

    def watcher(self, **kwargs):
        # Imported here: aioimaplib is only the listener's (push), not every worker's.
        from django.conf import settings

        from .watch import ImapWatcher

        if not kwargs["provider"].receive_enabled:
            return None
        return ImapWatcher(timeout=settings.MAIL_CONNECT_TIMEOUT, **kwargs)
