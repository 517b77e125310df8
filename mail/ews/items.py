"""An Exchange mailbox's calendar, tasks and address book over EWS (exchangelib), as
mail.items.ItemsReader gives them to sync.items."""

from collections.abc import Iterable
from datetime import UTC, date, datetime, time

from ..items import Card, ItemsReader, Meeting, NewCard, Task

# Exchange hides these from anyone but the mailbox's owner.
HIDDEN = {"Private", "Confidential"}


def _aware(value) -> datetime | None:
    """exchangelib gives EWSDateTime (aware) or, for all-day items, EWSDate."""
    if value is None:
        return None
    if isinstance(value, datetime):
        # A plain datetime: EWSDateTime converts only into exchangelib's own zones.
        return datetime.fromtimestamp(value.timestamp(), tz=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time.min, tzinfo=UTC)
    return None


def _ews_time(value: datetime):
    from exchangelib import UTC as EWS_UTC
    from exchangelib import EWSDateTime

    utc = value.astimezone(UTC)
    return EWSDateTime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, tzinfo=EWS_UTC
    )


def _address(mailbox) -> str:
    return (getattr(mailbox, "email_address", "") or "").strip().lower()


class EwsItems(ItemsReader):
    """Over a signed-in exchangelib Account (`ews`) whose folders were listed (`by_path`:
    path to exchangelib's folder, mail.ews.reader.EwsReader.by_path). Exchange refuses
    a calendar view over two years and caps the items of one: a quarter at a time."""

    def __init__(self, ews, by_path: dict[str, object]):
        self.ews = ews
        self.by_path = by_path

    def meetings(self, start: datetime, end: datetime) -> list[Meeting]:
        view = self.ews.calendar.view(
            start=_ews_time(start), end=_ews_time(end), max_items=self.window_max
        )
        found = []
        for item in view:
            attendees = tuple(
                _address(a.mailbox)
                for a in (item.required_attendees or []) + (item.optional_attendees or [])
                if getattr(a, "mailbox", None)
            )
            found.append(
                Meeting(
                    id=item.id, subject=item.subject or "", starts_at=_aware(item.start),
                    ends_at=_aware(item.end), all_day=bool(item.is_all_day),
                    location=item.location or "",
                    organizer=_address(getattr(item, "organizer", None)),
                    attendees=attendees, private=(item.sensitivity or "Normal") in HIDDEN,
                )
            )  # fmt: skip
        return found

    def tasks(self) -> Iterable[Task]:
        for task in self.ews.tasks.all():
            due = task.due_date.date() if isinstance(task.due_date, datetime) else task.due_date
            yield Task(
                id=task.id, subject=task.subject or "",
                starts_at=_aware(getattr(task, "start_date", None)), due_on=due,
                status=task.status or "", done=(task.status or "") == "Completed",
                contact_names=tuple(task.contacts or ()),
                company_names=tuple(task.companies or ()),
                private=(getattr(task, "sensitivity", None) or "Normal") in HIDDEN,
            )  # fmt: skip

    def cards(self, path: str) -> Iterable[Card]:
        from exchangelib import Contact as EwsContact

        folder = self.by_path.get(path)
        if folder is None:
            return
        for item in folder.all():
            if not isinstance(item, EwsContact):  # distribution lists live there too
                continue
            phones = [p.phone_number for p in item.phone_numbers or [] if p.phone_number]
            name = item.display_name or " ".join(
                part for part in (item.given_name, item.surname) if part
            )
            yield Card(
                id=item.id, name=name or "", company_name=item.company_name or "",
                addresses=tuple(e.email for e in item.email_addresses or [] if e.email),
                phone=phones[0] if phones else "", job_title=item.job_title or "",
            )  # fmt: skip

    def card_add(self, card: NewCard) -> tuple[str, str]:
        from exchangelib import Contact as EwsContact
        from exchangelib.indexed_properties import EmailAddress, PhoneNumber

        item = EwsContact(
            account=self.ews,
            folder=self.ews.contacts,
            display_name=card.name or card.addresses[0],
            file_as=card.name or card.addresses[0],
            company_name=card.company_name or None,
            job_title=card.job_title or None,
            email_addresses=[
                EmailAddress(email=a, label=f"EmailAddress{n}")
                for n, a in enumerate(card.addresses[:3], start=1)
            ],
            phone_numbers=[PhoneNumber(label="BusinessPhone", phone_number=card.phone)]
            if card.phone
            else None,
        )
        item.save()
        return item.id, "Contacts"
