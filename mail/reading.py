"""Reading a mailbox as pages of changes since a state the server gave: Exchange's
SyncFolderItems and Microsoft Graph's delta queries read mail this way, and any protocol
that does can be downloaded by sync.delta alone, with no code of its own in sync.

A backend whose `reader` is "delta" (mail.backend.MailBackend) returns a DeltaReader
from `open_reader`. The reader speaks only of its server's ids and opaque states;
storing, the period, the folder choice, counting and claiming are sync's. IMAP is not
read this way: its UIDs and flags need no state from the server, and sync.engine reads
them in bulk for speed.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime

from .backend import ListedFolder

# What a ReadItem's source is when it is not the message as the server keeps it; the
# values of sync.models.Email.Problem, which stores them.
INCOMPLETE = "incomplete"  # part of it: a size limit, its properties without attachments
UNREADABLE = "unreadable"  # only what the server said of it: its headers, perhaps its text
# What one `read` may hold before it hands the rest back for later.
READ_BUDGET = 3_000_000


class StateLost(Exception):
    """The server no longer honours the folder's state (Exchange's
    ErrorInvalidSyncStateData after the mailbox moved, Graph's 410 syncStateNotFound):
    the folder is read again from its start, as after an IMAP UIDVALIDITY change."""


@dataclass(frozen=True)
class NewItem:
    """A message the server lists in a folder: its id there, and what the listing said
    of its size (bytes), arrival and read flag, where it said (a reader whose sources
    carry no flag takes it from here)."""

    id: str
    size: int | None = None
    received: datetime | None = None
    seen: bool | None = None


@dataclass
class ChangePage:
    """One page of a folder's changes after a state: messages come (`created`), read
    flags changed (`seen`, by id), messages gone (`deleted`), and the state after this
    page, stored in the same transaction as what the page changed. `last`: nothing more
    to read now (the next page starts from `state` on a later run)."""

    created: list[NewItem] = field(default_factory=list)
    seen: dict[str, bool] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    state: str = ""
    last: bool = True


@dataclass(frozen=True)
class ReadItem:
    """A message's source as read. `raw` None: neither the message nor what the server
    says of it could be read; `note` says why, and sync notes it to ask again later.
    `problem` INCOMPLETE or UNREADABLE: `raw` was made from less than the message (its
    size over the limit, its properties when the server could not give its source), and
    `note` says so for the stored email. `later`: not read yet, ask again."""

    id: str
    raw: bytes | None
    seen: bool = False
    problem: str = ""
    note: str = ""
    # Not read this time (the call's `budget` was spent): neither stored nor gone; the
    # caller asks for it again.
    later: bool = False


class DeltaReader(ABC):
    """A signed-in session that reads folders page by page (see the module's docstring).
    Failures are the protocol's exceptions; the backend's `read_failure` says what they
    mean, and `folder_refusal` which of them are one folder's alone."""

    @abstractmethod
    def folders(self, special_uses: dict[str, str] | None = None) -> list[ListedFolder]:
        """Every folder, each with its `server_id` and, where the server says it,
        `messages`. `special_uses`: the special uses found before, by server id, which
        spare asking again while no folder is new."""

    @abstractmethod
    def changes(self, server_id: str, state: str) -> ChangePage:
        """The page of changes after `state` ("" for the folder's start: every message
        it holds comes as created). Raises StateLost when the server refuses `state`."""

    @abstractmethod
    def received_between(
        self, server_id: str, *, since: datetime | None, before: datetime
    ) -> list[NewItem]:
        """The folder's messages received from `since` (None: the oldest) up to
        `before`: the older mail a longer download period asks for."""

    @abstractmethod
    def read(
        self, items: list[NewItem], *, size_limit: int, budget: int = READ_BUDGET
    ) -> list[ReadItem]:
        """The messages' sources, in any order. One deleted since it was listed is left
        out. One above `size_limit` bytes (its size unknown is asked for) comes as what
        the server says of it, INCOMPLETE; one whose source the server cannot give, the
        same way, UNREADABLE. Once the sources read hold more than `budget` bytes, the
        rest may come back `later` (at least one is always read): memory stays bounded
        where the server says no size before the source."""

    @abstractmethod
    def folder_refusal(self, error: Exception) -> str | None:
        """If `error`, met reading one folder, is the server refusing that folder alone
        (it was deleted since the list, access to it is denied), what it said; None when
        it is the run's (the sign-in, the network, a busy server)."""

    @abstractmethod
    def close(self) -> None:
        """End the session; never raises."""
