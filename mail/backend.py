"""The one door to a mail server: what every protocol offers the rest of the app.

A backend is stateless; its methods take the provider card, the mailbox's address and
its credentials (a password, or an OAuth 2.0 access token that accounts.oauth keeps
fresh), or a session one of its `open_*` methods made. Every failure is a MailError
whose `retry` says what the caller does next (mail/errors.py). Adding a protocol is one
module implementing this class and one line in mail/registry.py.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from providers.addresses import Address
from providers.models import EmailProvider, LoginFormat

from .errors import MailError, SignInError

if TYPE_CHECKING:
    from .items import ItemsReader

# Not IMAP's: an Exchange address book folder (offered in the Contacts settings).
CONTACTS = "\\contacts"


@dataclass(frozen=True)
class Endpoint:
    protocol: str  # "IMAP", "SMTP", "EWS"
    host: str
    port: int
    security: str

    @property
    def label(self) -> str:
        role = {"IMAP": "incoming mail", "SMTP": "outgoing mail"}.get(self.protocol, "mail")
        return f"The {self.protocol} server for {role} ({self.host}, port {self.port})"


@dataclass(frozen=True)
class ListedFolder:
    """One folder as the server lists it, in the app's terms: its path (parts joined by
    `delimiter`), its special use ("\\sent", "\\trash", ..., "\\contacts" or ""),
    whether it can hold mail, the server's own id for it where the protocol has one
    (EWS, Graph), and its number of messages where the listing says it."""

    path: str
    delimiter: str
    special_use: str = ""
    selectable: bool = True
    server_id: str = ""
    messages: int | None = None


class WatchUnsupported(Exception):
    """The server offers no way to be told of changes (IMAP without IDLE): the mailbox
    stays on the dispatcher's interval."""


class MailWatcher(ABC):
    """One long-lived, signed-in connection that says when a mailbox's inbox changes
    (IMAP IDLE, RFC 2177). Asynchronous (asyncio): one listener process holds many.
    Every failure is a MailError whose `retry` says what the caller does next."""

    @abstractmethod
    async def open(self) -> None:
        """Connect, sign in and start watching the inbox. Raises MailError, or
        WatchUnsupported when the server cannot be watched."""

    @abstractmethod
    async def next_change(self, *, within: float) -> bool:
        """Wait until the server reports a change (True: a message came, went or
        changed its flags) or `within` seconds passed (False: the wait was renewed, as
        servers drop a client idle for 30 minutes). Raises MailError when the
        connection ends (BYE, reset, no answer in time)."""

    @abstractmethod
    async def close(self) -> None:
        """End the connection; never raises."""

    def inbox_status(self) -> dict[str, int] | None:
        """What the server said of the inbox on opening it, in sync.models.Folder's
        terms (uidvalidity, uidnext, messages), for the listener to see whether it
        changed since the last sync; None when the protocol does not say."""
        return None


def login_for(provider: EmailProvider, address: Address, typed_login: str = "") -> str:
    if provider.login_format == LoginFormat.LOCAL_PART:
        return address.local
    if provider.login_format == LoginFormat.MANUAL:
        return typed_login.strip()
    return address.email


def credentials_required(*, login: str, password: str, access_token: str) -> None:
    """What every sign-in check asks before talking to a server."""
    if not login:
        raise SignInError("login_missing", "Enter the login name for this mailbox.", field="login")
    if not (password or access_token):
        raise SignInError("password_missing", "Enter the password.")


class MailBackend(ABC):
    # The providers.models.ServiceType it serves.
    service_type: ClassVar[str]
    # How sync downloads its mailboxes (sync.readers.READERS): "imap" (sync.engine, over
    # an IMAPClient session), or "delta": `open_reader` gives a mail.reading.DeltaReader
    # and sync.delta needs nothing more of the protocol.
    reader: ClassVar[str]

    # Settings sections a mailbox of this protocol offers beyond every mailbox's
    # ("download", "send"): Exchange has a calendar, tasks and an address book.
    settings_sections: ClassVar[tuple[str, ...]] = ()
    # The permissions to ask Microsoft's identity platform for, for this protocol.
    microsoft_scopes: ClassVar[tuple[str, ...]]
    # Whether the sign-in finds the server itself when the provider card names none
    # (Exchange autodiscover), so the wizard says where it will look.
    discovers_endpoints: ClassVar[bool] = False
    # The provider card's fields (providers.models.EmailProvider) only this protocol
    # uses: forms show them for it alone (the wizard's "Add new server" hides the rest,
    # static/accounts/provider-form.js), and `validate_provider` checks them.
    provider_fields: ClassVar[tuple[str, ...]] = ()

    def validate_provider(self, provider: EmailProvider) -> dict[str, str]:
        """What is wrong with a provider card of this protocol, by field (what
        EmailProvider.clean raises); {} when nothing is."""
        return {}

    @abstractmethod
    def endpoints(self, provider: EmailProvider, address: Address) -> list[Endpoint]:
        """The servers a mailbox of `address` talks to, as shown before signing in."""

    @abstractmethod
    def check_sign_in(
        self, *, provider: EmailProvider, address: Address, login: str, password: str = "",
        access_token: str = "",
    ) -> str:  # fmt: skip
        """Raises SignInError unless every server accepts the login; returns the
        mailbox's display name where the server says it, else ""."""

    @abstractmethod
    def open_reader(
        self, *, provider: EmailProvider, address: Address, login: str, password: str = "",
        access_token: str = "", allow_internal: bool | None = None,
    ) -> Any:  # fmt: skip
        """A signed-in session for reading the mailbox (what `reader` consumes)."""

    @abstractmethod
    def close_reader(self, session) -> None:
        """End a reading session; never raises (the work before it is what counts)."""

    @abstractmethod
    def read_failure(self, error: Exception, *, oauth: bool = False) -> MailError | None:
        """What an exception raised while reading through this backend's session (by
        the session's library, or by sync's reader using it) means, as a MailError whose
        retry decides what becomes of the mailbox; None when it is no failure of the
        protocol's (a bug of ours, which the caller reports as one). `oauth`: the session
        signed in with an access token, so a refusal is the token's running out (the
        next run refreshes it), not the owner's password."""

    @abstractmethod
    def list_folders(self, session) -> list[ListedFolder]:
        """The mailbox's folders now."""

    @abstractmethod
    def open_sender(
        self, *, provider: EmailProvider, address: Address, login: str, password: str = "",
        access_token: str = "",
    ) -> Any:  # fmt: skip
        """A signed-in session for `deliver`."""

    @abstractmethod
    def deliver(
        self, session, *, sender: str, recipients: list[str], raw: bytes,
        handing_over: Callable[[], None],
    ) -> None:  # fmt: skip
        """Send `raw` to `recipients` and close the session. `handing_over()` is called
        just before the message goes out; a failure after it is kind "handed_over"
        (retry UNKNOWN) unless the server's own answer says it was not taken."""

    @abstractmethod
    def store_sent_copy(
        self, session, *, raw: bytes, message_id: str = "", look_first: bool = False
    ) -> str:
        """Put `raw` in the mailbox's Sent folder, read, and close the session; returns
        the folder. With `look_first` a copy with the same Message-ID already there
        counts as done (an earlier try whose answer was lost)."""

    @abstractmethod
    def files_sent_copies(self, provider: EmailProvider) -> bool:
        """Whether a message sent through `deliver` lands in Sent by itself."""

    def items_reader(self, session) -> "ItemsReader | None":
        """The meetings, tasks and address book of the mailbox a reading session
        (`open_reader`'s) is signed in to (mail.items), or None where the protocol has
        none; `settings_sections` then offers no "meetings" or "contacts"."""
        return None

    def watcher(
        self, *, provider: EmailProvider, address: Address, login: str, password: str = "",
        access_token: str = "", allow_internal: bool = False,
        folders: tuple[str, ...] | None = (),
    ) -> MailWatcher | None:  # fmt: skip
        """A watcher of the mailbox's inbox (push.listener holds it), or None when the
        protocol has no way to be told of new mail: the interval alone then applies.
        `folders`: the other folders to watch too where the protocol and server can
        (IMAP NOTIFY), by path; None for every folder, () for the inbox alone."""
        return None
