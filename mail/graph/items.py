"""A Microsoft 365 mailbox's calendar, To Do tasks and contacts over Microsoft Graph, as
mail.items.ItemsReader gives them to sync.items.

The address book folders are listed with the mail folders (mail.graph.reader), under
the path "Contacts" for the default folder and "Contacts/<name>" for those in it, so the
Contacts settings offer them as they offer Exchange's."""

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..backend import CONTACTS, ListedFolder
from ..items import Card, ItemsReader, Meeting, NewCard, Task
from .client import GraphClient

DEFAULT_BOOK = "Contacts"
DELIMITER = "/"
# Graph hides neither; the app keeps them off timelines, as it does Exchange's.
HIDDEN = {"private", "confidential"}
EVENT_FIELDS = (
    "subject", "start", "end", "isAllDay", "location", "organizer", "attendees",
    "sensitivity", "isCancelled",
)  # fmt: skip


def _when(value: dict | None) -> datetime | None:
    """Graph's dateTimeTimeZone ({"dateTime": "2026-12-02T10:00:00.0000000", "timeZone":
    "UTC"}) as an aware datetime; a zone Python does not know is read as UTC (Graph
    answers in UTC unless asked otherwise)."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        return None
    stamp, _, fraction = value["dateTime"].partition(".")
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if fraction[:6].isdigit():
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    try:
        zone = ZoneInfo(value.get("timeZone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    return moment.replace(tzinfo=zone).astimezone(UTC)


def _day(value: dict | None) -> date | None:
    """A To Do due date is a day: the date written, whatever the zone (midnight in
    Berlin is still that day, not the day before in UTC)."""
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        return None
    try:
        return date.fromisoformat(value["dateTime"][:10])
    except ValueError:
        return None


def _address(box: dict | None) -> str:
    email = (box or {}).get("emailAddress") or {}
    return str(email.get("address") or "").strip().lower()


def _root(taken: set[str]) -> str:
    return DEFAULT_BOOK if DEFAULT_BOOK not in taken else f"{DEFAULT_BOOK} (address book)"


def address_books(client: GraphClient, taken: set[str] = frozenset()) -> list[tuple[str, str]]:
    """(path, contact folder id) of the address book: the default folder (id "") and
    those in it. A mail folder with the same path keeps it; the book is then named
    "Contacts (address book)"."""
    root = _root(taken)
    books = [(root, "")]
    for row in client.contact_folders():
        name = str(row.get("displayName") or "").replace(DELIMITER, " ")
        if isinstance(row.get("id"), str) and name:
            books.append((f"{root}{DELIMITER}{name}", row["id"]))
    return books


def listed_books(client: GraphClient, taken: set[str]) -> list[ListedFolder]:
    """The address book folders as the folder list shows them: not mail, never read
    for mail, chosen in the Contacts settings."""
    return [
        ListedFolder(
            path=path,
            delimiter=DELIMITER,
            special_use=CONTACTS,
            selectable=False,
            server_id=ident,
        )
        for path, ident in address_books(client, taken)
    ]


class GraphItems(ItemsReader):
    # Graph pages a calendar view to its end: a window is always whole (bounded by the
    # client's page limit).
    window = timedelta(days=91)
    window_max = 100_000

    def __init__(self, client: GraphClient, mail_paths: set[str]):
        self.client = client
        self.mail_paths = mail_paths
        self._books: dict[str, str] | None = None

    def meetings(self, start: datetime, end: datetime) -> list[Meeting]:
        found = []
        for row in self.client.calendar_view(start, end, select=EVENT_FIELDS):
            if row.get("isCancelled"):
                continue
            attendees = tuple(
                address
                for a in row.get("attendees") or []
                # A room or equipment booked is no person (Exchange's reading takes
                # required and optional attendees only).
                if isinstance(a, dict) and a.get("type") != "resource" and (address := _address(a))
            )
            found.append(
                Meeting(
                    id=str(row["id"]), subject=str(row.get("subject") or ""),
                    starts_at=_when(row.get("start")), ends_at=_when(row.get("end")),
                    all_day=bool(row.get("isAllDay")),
                    location=str((row.get("location") or {}).get("displayName") or ""),
                    organizer=_address(row.get("organizer")), attendees=attendees,
                    private=str(row.get("sensitivity") or "normal").lower() in HIDDEN,
                )
            )  # fmt: skip
        return found

    def tasks(self) -> Iterable[Task]:
        for todo_list in self.client.todo_lists():
            for row in self.client.todo_tasks(str(todo_list["id"])):
                status = str(row.get("status") or "")
                yield Task(
                    id=str(row["id"]), subject=str(row.get("title") or ""),
                    starts_at=_when(row.get("startDateTime")),
                    due_on=_day(row.get("dueDateTime")),
                    # "notStarted" as Exchange says it: "NotStarted".
                    status=status[:1].upper() + status[1:], done=status == "completed",
                )  # fmt: skip

    def cards(self, path: str) -> Iterable[Card]:
        if self._books is None:
            self._books = dict(address_books(self.client, self.mail_paths))
        if path not in self._books:
            return
        for row in self.client.contacts(self._books[path]):
            if not isinstance(row.get("id"), str):
                continue
            name = row.get("displayName") or " ".join(
                part for part in (row.get("givenName"), row.get("surname")) if part
            )
            phones = [p for p in row.get("businessPhones") or [] if isinstance(p, str) and p]
            phones += [row["mobilePhone"]] if row.get("mobilePhone") else []
            yield Card(
                id=row["id"], name=str(name or ""), company_name=str(row.get("companyName") or ""),
                addresses=tuple(
                    str(e.get("address")).strip()
                    for e in row.get("emailAddresses") or []
                    if isinstance(e, dict) and e.get("address")
                ),
                phone=phones[0] if phones else "", job_title=str(row.get("jobTitle") or ""),
            )  # fmt: skip

    def card_add(self, card: NewCard) -> tuple[str, str]:
        contact = {
            "displayName": card.name or card.addresses[0],
            "fileAs": card.name or card.addresses[0],
            "emailAddresses": [{"address": a, "name": card.name} for a in card.addresses[:3]],
        }
        if card.company_name:
            contact["companyName"] = card.company_name
        if card.job_title:
            contact["jobTitle"] = card.job_title
        if card.phone:
            contact["businessPhones"] = [card.phone]
        return self.client.create_contact(contact), _root(self.mail_paths)
