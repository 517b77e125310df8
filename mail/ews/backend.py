"""The Exchange Web Services backend: exchangelib reads (a mail.reading.DeltaReader,
mail/ews/reader.py) and sends; Exchange files what it sends in Sent Items itself."""

from typing import ClassVar
from urllib.parse import urlsplit

from providers.models import ServiceType

from .. import trust
from ..backend import Endpoint, ListedFolder, MailBackend, credentials_required
from ..errors import MailError
from . import delivery, session
from .items import EwsItems
from .reader import EwsReader


class EwsBackend(MailBackend):
    service_type = ServiceType.EXCHANGE
    reader = "delta"
    settings_sections = ("meetings", "contacts")
    microsoft_scopes: ClassVar[tuple[str, ...]] = (
        "https://outlook.office.com/EWS.AccessAsUser.All",
        "email",
    )
    discovers_endpoints = True
    provider_fields = ("exchange_url",)

    def validate_provider(self, provider) -> dict[str, str]:
        url = provider.exchange_url
        if url and not url.lower().startswith("https://"):
            # Blank means autodiscover; an address given must be encrypted.
            return {"exchange_url": "The Exchange service address must start with https://."}
        return {}

    def endpoints(self, provider, address) -> list[Endpoint]:
        """The service address on the provider card; none when autodiscover finds it."""
        parts = urlsplit(provider.exchange_url or "")
        if not parts.hostname:
            return []
        return [Endpoint("EWS", parts.hostname, parts.port or 443, "ssl")]

    def check_sign_in(
        self, *, provider, address, login, password="", access_token=""
    ) -> str:  # fmt: skip
        credentials_required(login=login, password=password, access_token=access_token)
        ews = session.ews_session(
            provider=provider, address=address, login=login, password=password,
            access_token=access_token,
        )  # fmt: skip
        try:
            return session.directory_name(ews, address.email)
        finally:
            session.ews_close(ews)

    def open_reader(self, *, allow_internal=None, **kwargs) -> EwsReader:
        # exchangelib's adapter reads the internal-address setting on each connection.
        return EwsReader(session.ews_session(**kwargs))

    def close_reader(self, reader: EwsReader) -> None:
        reader.close()

    def read_failure(self, error: Exception, *, oauth: bool = False) -> MailError | None:
        from exchangelib.errors import EWSError

        if isinstance(error, EWSError):
            return exchange_failure(error, oauth=oauth)
        if isinstance(error, OSError | EOFError):
            return MailError(
                "connection_lost",
                f"The connection to the mail server broke off ({type(error).__name__}).",
            )
        return None

    def list_folders(self, reader: EwsReader) -> list[ListedFolder]:
        from exchangelib.errors import EWSError

        try:
            return reader.folders()
        except (EWSError, OSError, EOFError) as error:
            # Exchange checks the sign-in with every request: a refused login or a
            # denied mailbox is the owner's to fix, as while reading, not the network's.
            raise self.read_failure(error) from None

    def items_reader(self, reader: EwsReader) -> EwsItems:
        # The folders are the run's listing (the address book folders among them).
        return EwsItems(reader.ews, reader.by_path)

    def open_sender(self, **kwargs):
        return session.ews_session(**kwargs)

    def deliver(self, ews, *, sender, recipients, raw, handing_over) -> None:
        # The sender is the mailbox itself: Exchange sends as the signed-in account.
        delivery.deliver(ews, recipients=recipients, raw=raw, handing_over=handing_over)

    def store_sent_copy(self, reader: EwsReader, *, raw, message_id="", look_first=False) -> str:
        return delivery.copy_to_sent(
            reader.ews, raw=raw, message_id=message_id, look_first=look_first
        )

    def files_sent_copies(self, provider) -> bool:
        return True

    def watcher(self, *, allow_internal=False, folders=(), **kwargs):
        # A pull subscription polled every PUSH_EWS_POLL_SECONDS (mail/ews/watch.py), on
        # the inbox alone for now (`folders` would need their EWS ids); exchangelib's
        # adapter reads the internal-address setting on each connection.
        from django.conf import settings

        from .watch import EwsWatcher

        return EwsWatcher(poll=settings.PUSH_EWS_POLL_SECONDS, **kwargs)


def exchange_failure(error: Exception, *, oauth: bool = False) -> MailError:
    """An exchangelib error as a MailError whose kind says what it means."""
    from exchangelib import errors

    name = type(error).__name__
    if isinstance(error, errors.UnauthorizedError):
        # exchangelib signs in with the first request, so a refused login is met here,
        # during the read.
        if oauth:
            # The token ran out or was revoked during the run: the next run's sign-in
            # refreshes it, or finds out that the owner must reconnect.
            return MailError(
                "token_unavailable",
                "Exchange stopped accepting the sign-in token during the download.",
            )
        return MailError(
            "credentials",
            "Exchange no longer accepts the mailbox's login. Enter the password again.",
        )
    busy = (
        errors.ErrorServerBusy, errors.ErrorTimeoutExpired,
        errors.ErrorInternalServerTransientError, errors.ErrorMailboxMoveInProgress,
        errors.ErrorMailboxStoreUnavailable, errors.ErrorConnectionFailedTransientError,
        errors.RateLimitError,
    )  # fmt: skip
    unreachable = isinstance(error, errors.TransportError) and not isinstance(
        error, errors.ResponseMessageError
    )
    if refusal := trust.proxy_refusal(error):
        return MailError("connection", trust.through_proxy("The Exchange server", refusal))
    if isinstance(error, busy) or unreachable:
        return MailError("busy", f"The Exchange server was busy or could not be reached ({name}).")
    if isinstance(error, errors.ErrorAccessDenied | errors.ErrorNonExistentMailbox):
        return MailError(
            "access_denied",
            f"Exchange refused access to the mailbox ({name}); ask its administrator.",
        )
    return MailError("server_error", f"Exchange answered with an error ({name}: {error}).")
