"""An Exchange mailbox's calendar, tasks and address book, next to its mail:

- "Meetings and tasks": calendar items of the chosen period (and those ahead) and the
  tasks become activities on the timelines of the contacts and companies involved;
  one activity per item, updated by later imports, removed when the item goes.
- "Contacts": the address book (all of it, or chosen folders) becomes CRM contacts,
  each found again by its item or an address instead of added twice, and linked to
  the one company of its company name; "export" puts the people the mailbox writes
  with into its Contacts folder, once each.
"""

from datetime import UTC, date, datetime, time, timedelta

from django.utils import timezone

from accounts.models import ContactsImport, EmailAccount
from crm.selectors import contacts_to_export
from crm.services import activities_prune, activity_save, contact_export_record, contact_import

from .engine import PERIOD_DAYS
from .models import SyncRun

# Meetings ahead of today matter as much as past ones: a year of them is read.
AHEAD = timedelta(days=365)
# "All" reaches this far back: Exchange keeps years of calendar, timelines need recent ones.
ALL_DAYS = 730
# Calendar views are asked a quarter at a time (Exchange refuses a range over two years),
# and a window is trusted to be whole only below this many items.
WINDOW = timedelta(days=91)
WINDOW_MAX = 1000
# Exchange hides these from anyone but the mailbox's owner; so does the app.
HIDDEN = {"Private", "Confidential"}
CONTACT_CLASS = "IPF.Contact"
# Contacts exported per run; the rest follow in the next runs.
EXPORT_LIMIT = 200


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


def _ews_time(value: datetime, kind, zone):
    utc = value.astimezone(UTC)
    return kind(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, tzinfo=zone)


def _address(mailbox) -> str:
    return (getattr(mailbox, "email_address", "") or "").strip().lower()


def _windows(start: datetime, end: datetime):
    while start < end:
        yield start, min(start + WINDOW, end)
        start += WINDOW


def meetings_import(*, ews, account: EmailAccount, run: SyncRun) -> None:
    """Calendar items of the period and ahead, a window at a time: Exchange refuses a
    calendar view over two years and caps the items of one; a window that came back
    whole is made to match the calendar (what is gone from it goes here too)."""
    from exchangelib import UTC as EWS_UTC
    from exchangelib import EWSDateTime

    days = PERIOD_DAYS.get(account.meetings_period) or ALL_DAYS
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=days), today + AHEAD
    own = {account.address.split("@", 1)[-1].lower()}
    for low, high in _windows(start, end):
        view = ews.calendar.view(
            start=_ews_time(low, EWSDateTime, EWS_UTC),
            end=_ews_time(high, EWSDateTime, EWS_UTC),
            max_items=WINDOW_MAX,
        )
        seen, listed = set(), 0
        for item in view:
            listed += 1
            if (item.sensitivity or "Normal") in HIDDEN:
                # Exchange hides these from delegates; timelines are seen by others.
                continue
            organizer = _address(getattr(item, "organizer", None))
            attendees = [
                _address(a.mailbox)
                for a in (item.required_attendees or []) + (item.optional_attendees or [])
                if getattr(a, "mailbox", None)
            ]
            people = {organizer, *attendees} - {account.address.lower(), ""}
            activity_save(
                account=account, kind="meeting", external_id=item.id, people=people,
                own_domains=own,
                values={
                    "subject": (item.subject or "")[:500], "starts_at": _aware(item.start),
                    "ends_at": _aware(item.end), "all_day": bool(item.is_all_day),
                    "location": (item.location or "")[:500], "organizer": organizer,
                    "attendees": attendees, "status": "", "due_on": None,
                },
            )  # fmt: skip
            seen.add(item.id)
            run.activities += 1
        if listed < WINDOW_MAX:
            activities_prune(
                account=account, kind="meeting", keep=seen, starts_from=low, starts_until=high
            )
    tasks_import(ews=ews, account=account, run=run, since=start.date())


def tasks_import(*, ews, account: EmailAccount, run: SyncRun, since: date) -> None:
    """Open tasks, and those finished, due or begun within the period; each on the
    timelines of the contacts and companies it names."""
    seen: set[str] = set()
    for task in ews.tasks.all():
        if (getattr(task, "sensitivity", None) or "Normal") in HIDDEN:
            continue
        due = task.due_date.date() if isinstance(task.due_date, datetime) else task.due_date
        begins = _aware(getattr(task, "start_date", None))
        done = (task.status or "") == "Completed"
        relevant = not done or any(d and d >= since for d in (due, begins and begins.date()))
        if not relevant:
            continue
        activity_save(
            account=account, kind="task", external_id=task.id, people=set(), own_domains=set(),
            contact_names=set(task.contacts or []), company_names=set(task.companies or []),
            values={
                "subject": (task.subject or "")[:500], "starts_at": begins, "ends_at": None,
                "all_day": False, "location": "", "organizer": "", "attendees": [],
                "status": task.status or "", "due_on": due,
            },
        )  # fmt: skip
        seen.add(task.id)
        run.activities += 1
    activities_prune(account=account, kind="task", keep=seen)


def _contact_folders(ews, account: EmailAccount, by_path: dict) -> list[tuple[str, object]]:
    """(path, folder) of the address book folders to import from."""
    folders = [
        (path, folder)
        for path, folder in by_path.items()
        if (getattr(folder, "folder_class", "") or "").startswith(CONTACT_CLASS)
    ]
    if account.contacts_import == ContactsImport.FOLDERS:
        chosen = set(account.contacts_folders or [])
        return [(path, folder) for path, folder in folders if path in chosen]
    return folders


def contacts_import(*, ews, account: EmailAccount, run: SyncRun, by_path: dict) -> None:
    from exchangelib import Contact as EwsContact

    for path, folder in _contact_folders(ews, account, by_path):
        for item in folder.all():
            if not isinstance(item, EwsContact):  # distribution lists live there too
                continue
            addresses = [e.email for e in item.email_addresses or [] if e.email]
            phones = [p.phone_number for p in item.phone_numbers or [] if p.phone_number]
            name = item.display_name or " ".join(
                part for part in (item.given_name, item.surname) if part
            )
            _contact, created = contact_import(
                account=account, item_id=item.id, folder=path, name=name or "",
                company_name=item.company_name or "", addresses=addresses,
                phone=phones[0] if phones else "", job_title=item.job_title or "",
            )  # fmt: skip
            run.contacts_imported += int(created)


def contacts_export(*, ews, account: EmailAccount, run: SyncRun) -> None:
    """The people this mailbox's emails are linked to, into its Contacts folder, once:
    a contact already in the address book (imported or exported before) is skipped."""
    from exchangelib import Contact as EwsContact
    from exchangelib.indexed_properties import EmailAddress, PhoneNumber

    for contact in contacts_to_export(account=account, limit=EXPORT_LIMIT):
        addresses = [a.address for a in contact.addresses.all()][:3]
        if not addresses:
            continue
        item = EwsContact(
            account=ews,
            folder=ews.contacts,
            display_name=contact.name or addresses[0],
            file_as=contact.name or addresses[0],
            company_name=contact.company.name if contact.company else None,
            job_title=contact.job_title or None,
            email_addresses=[
                EmailAddress(email=a, label=f"EmailAddress{n}")
                for n, a in enumerate(addresses, start=1)
            ],
            phone_numbers=[PhoneNumber(label="BusinessPhone", phone_number=contact.phone)]
            if contact.phone
            else None,
        )
        item.save()
        contact_export_record(account=account, contact=contact, item_id=item.id, folder="Contacts")
        run.contacts_exported += 1


def exchange_items_sync(*, reader, account: EmailAccount, run: SyncRun, manual: bool):
    """What the mailbox's settings ask for beyond mail, over the run's reader
    (mail.ews.reader.EwsReader, whose folders are listed). Meetings and tasks come with
    every run while their automatic import is on, else only when asked for."""
    ews, by_path = reader.ews, reader.by_path
    if account.meetings_import and (account.meetings_auto or manual):
        meetings_import(ews=ews, account=account, run=run)
    if account.contacts_import != ContactsImport.OFF:
        contacts_import(ews=ews, account=account, run=run, by_path=by_path)
    if account.contacts_export:
        contacts_export(ews=ews, account=account, run=run)
