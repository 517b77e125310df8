"""What a mailbox holds besides mail, in the app's terms: meetings, tasks and address book
cards (Exchange over EWS, Microsoft 365 over Graph). A backend that offers them returns
an ItemsReader from `MailBackend.items_reader`; sync.items turns what it reads into CRM
activities and contacts and needs nothing more of the protocol.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import ClassVar


@dataclass(frozen=True)
class Meeting:
    """A calendar item: one occurrence of a series is a meeting of its own. `private`:
    its owner marked it private or confidential, which the app keeps off timelines."""

    id: str
    subject: str = ""
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    all_day: bool = False
    location: str = ""
    organizer: str = ""  # an address, lowercase
    attendees: tuple[str, ...] = ()  # addresses, lowercase
    private: bool = False


@dataclass(frozen=True)
class Task:
    id: str
    subject: str = ""
    starts_at: datetime | None = None
    due_on: date | None = None
    status: str = ""  # as the server says it ("Completed", "InProgress", ...)
    done: bool = False
    # The contacts and companies the task names, by name (Exchange's task fields).
    contact_names: tuple[str, ...] = ()
    company_names: tuple[str, ...] = ()
    private: bool = False


@dataclass(frozen=True)
class Card:
    """An address book entry (a person; distribution lists are not cards)."""

    id: str
    name: str = ""
    company_name: str = ""
    addresses: tuple[str, ...] = ()
    phone: str = ""
    job_title: str = ""


@dataclass(frozen=True)
class NewCard:
    name: str
    addresses: tuple[str, ...]
    company_name: str = ""
    job_title: str = ""
    phone: str = ""


class ItemsReader(ABC):
    """A signed-in session's meetings, tasks and address book. Failures are the
    protocol's exceptions, which the backend's `read_failure` says the meaning of."""

    # The longest span one calendar request may cover, and the most meetings one gives:
    # a window that came back with fewer is the calendar's whole (what is not in it is
    # gone from the calendar).
    window: ClassVar[timedelta] = timedelta(days=91)
    window_max: ClassVar[int] = 1000

    @abstractmethod
    def meetings(self, start: datetime, end: datetime) -> list[Meeting]:
        """The meetings that start from `start` up to `end` (at most `window_max`),
        a series' occurrences each on its own."""

    @abstractmethod
    def tasks(self) -> Iterable[Task]:
        """Every task of the mailbox."""

    @abstractmethod
    def cards(self, path: str) -> Iterable[Card]:
        """The people in the address book folder at `path` (a folder the backend
        listed with the special use mail.backend.CONTACTS)."""

    @abstractmethod
    def card_add(self, card: NewCard) -> tuple[str, str]:
        """Write `card` into the mailbox's main address book; returns the new entry's
        id and the folder it went to."""
