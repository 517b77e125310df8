"""The Microsoft Graph backend (Microsoft 365 after EWS is switched off): mail read as
delta pages (mail/graph/reader.py, read by sync's delta reader), sent through sendMail,
which files the Sent copy itself. Graph signs in with OAuth 2.0 access tokens only.

Graph's address is the setting GRAPH_URL (Microsoft's global service unless a national
cloud or the suite's protocol fake is meant): no provider card field names it."""

from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import ClassVar
from urllib.parse import urlsplit

import requests
from django.conf import settings

from providers.models import AuthMethod, ServiceType

from ..backend import Endpoint, ListedFolder, MailBackend, credentials_required
from ..errors import PROVIDER_KINDS, MailError, SignInError
from .client import GraphClient, GraphUser, TokenRejected
from .items import GraphItems
from .reader import GraphReader

GRAPH = "https://graph.microsoft.com"


def _graph_url() -> str:
    return settings.GRAPH_URL


def _as_sign_in(error: MailError) -> SignInError:
    """A failure met while signing in, in the sign-in's terms. A refused token is
    "credentials", which accounts.oauth.session_for answers with one forced refresh."""
    if isinstance(error, TokenRejected):
        return SignInError(
            "credentials",
            f"Microsoft 365 did not accept the mailbox's sign-in token ({error}).",
            field="sign-in",
        )
    # The client's decisions are the table's for these kinds (a throttled check: later).
    field = "provider" if error.kind in PROVIDER_KINDS else error.field or "sign-in"
    converted = SignInError(error.kind, str(error), field=field)
    converted.wait = error.wait  # Graph's Retry-After holds for the next try too
    return converted


class GraphBackend(MailBackend):
    service_type = ServiceType.GRAPH
    reader = "delta"
    # The calendar, To Do and the address book (mail.graph.items).
    settings_sections = ("meetings", "contacts")
    # msal adds openid, profile and offline_access itself (and refuses them as input).
    # User.Read: GET /me, the sign-in check's address and display name.
    microsoft_scopes: ClassVar[tuple[str, ...]] = (
        f"{GRAPH}/Mail.ReadWrite",
        f"{GRAPH}/Mail.Send",
        f"{GRAPH}/Calendars.Read",
        f"{GRAPH}/Contacts.ReadWrite",
        f"{GRAPH}/Tasks.Read",
        f"{GRAPH}/User.Read",
        "email",
    )
    provider_fields = ()

    def validate_provider(self, provider) -> dict[str, str]:
        if provider.auth_method != AuthMethod.OAUTH2:
            # On the service type, which every provider form has: the wizard's "Add new
            # server" has no authentication field (a ModelForm error on a field it lacks
            # is a crash), and cannot set up the OAuth client Graph needs.
            return {
                "service_type": "Microsoft 365 (Graph) signs in with OAuth 2.0 only: set the "
                "authentication to OAuth 2.0, with the Microsoft OAuth client's id, secret and "
                "tenant (an administrator does this on the provider card)."
            }
        return {}

    def endpoints(self, provider, address) -> list[Endpoint]:
        parts = urlsplit(_graph_url())
        return [Endpoint("Microsoft Graph", parts.hostname or "", parts.port or 443, "ssl")]

    def _client(self, access_token: str, allow_internal: bool | None = None) -> GraphClient:
        try:
            return GraphClient(access_token, base_url=_graph_url(), allow_internal=allow_internal)
        except MailError as error:
            raise _as_sign_in(error) from None

    def _signed_in(
        self, access_token: str, allow_internal: bool | None = None
    ) -> tuple[GraphClient, GraphUser]:
        """A client whose token Graph accepted (GET /me), and who it signed in as."""
        if not access_token:
            raise SignInError(
                "auth_unsupported",
                "Microsoft 365 through Microsoft Graph signs in with OAuth 2.0 only, not with "
                "a password: an administrator chooses OAuth 2.0 on the provider card.",
                field="provider",
            )
        client = self._client(access_token, allow_internal)
        try:
            return client, client.me()
        except MailError as error:
            client.close()
            raise _as_sign_in(error) from None

    def check_sign_in(
        self, *, provider, address, login, password="", access_token=""
    ) -> str:  # fmt: skip
        credentials_required(login=login, password=password, access_token=access_token)
        client, me = self._signed_in(access_token)
        client.close()
        names = {me.address.lower(), me.user_principal_name.lower()}
        if address.email.lower() not in names:
            raise SignInError(
                "reconnect",
                f"The sign-in is for {me.address or 'another account'}, not for "
                f"{address.email}. Sign in with {address.email}.",
                field="sign-in",
            )
        return " ".join(me.display_name.split())[:200]

    def open_reader(
        self, *, provider, address, login, password="", access_token="", allow_internal=None
    ) -> GraphReader:  # fmt: skip
        client, _me = self._signed_in(access_token, allow_internal)
        return GraphReader(client)

    def close_reader(self, session) -> None:
        session.close()

    def read_failure(self, error: Exception, *, oauth: bool = False) -> MailError | None:
        if isinstance(error, TokenRejected) and oauth:
            # The token ran out or was revoked during the run: the next run's sign-in
            # refreshes it, or finds out that the owner must reconnect.
            return MailError(
                "token_unavailable",
                "Microsoft 365 stopped accepting the sign-in token during the download.",
            )
        if isinstance(error, MailError):
            return error
        if isinstance(error, requests.exceptions.Timeout):
            return MailError("timeout", "Microsoft Graph did not answer in time.")
        if isinstance(error, requests.exceptions.ConnectionError | OSError | EOFError):
            return MailError(
                "connection_lost",
                f"The connection to Microsoft Graph broke off ({type(error).__name__}).",
            )
        return None

    def list_folders(self, session: GraphReader) -> list[ListedFolder]:
        return session.folders()

    def items_reader(self, reader: GraphReader) -> GraphItems:
        return GraphItems(reader.client, reader.mail_paths)

    def open_sender(self, *, provider, address, login, password="", access_token=""):
        client, _me = self._signed_in(access_token)
        return client

    def deliver(self, client: GraphClient, *, sender, recipients, raw, handing_over) -> None:
        """sendMail with the MIME message; Graph files the Sent copy itself. Recipients
        the headers do not name (Bcc) go as a Bcc header, which Graph sends to and
        takes off the message (the sender is the signed-in mailbox)."""
        try:
            client.send_mime(_with_bcc(raw, recipients), handing_over=handing_over)
        finally:
            client.close()

    def store_sent_copy(self, session: GraphReader, *, raw, message_id="", look_first=False) -> str:
        """The message saved in Sent Items through Graph's MIME upload, which makes it a
        draft there (Graph offers nothing else for MIME): sendMail's own copy is the one
        Graph mailboxes keep (`files_sent_copies`)."""
        client = session.client
        try:
            sent = client.well_known_folder("sentitems")
            if look_first and message_id and client.find_messages(sent.id, message_id):
                return sent.display_name
            client.create_message(sent.id, raw)
            return sent.display_name
        finally:
            session.close()

    def files_sent_copies(self, provider) -> bool:
        return True


def _with_bcc(raw: bytes, recipients: list[str]) -> bytes:
    headers = BytesHeaderParser().parsebytes(raw)
    named = headers.get_all("To", []) + headers.get_all("Cc", []) + headers.get_all("Bcc", [])
    shown = {address.lower() for _name, address in getaddresses(named)}
    hidden = [r for r in recipients if r.lower() not in shown]
    if not hidden:
        return raw
    # A header line of our own on top: the rest of the message stays byte for byte.
    return b"Bcc: " + ", ".join(hidden).encode() + b"\r\n" + raw
