"""A mailbox's calendar, tasks and address book, next to its mail, for every backend
that offers them (mail.items.ItemsReader):

- "Meetings and tasks": calendar items of the chosen period (and those ahead) and the
  tasks become activities on the timelines of the contacts and companies involved;
  one activity per item, updated by later imports, removed when the item goes.
- "Contacts": the address book (all of it, or chosen folders) becomes CRM contacts,
  each found again by its item or an address instead of added twice, and linked to
  the one company of its company name; "export" puts the people the mailbox writes
  with into its address book, once each.

Items their owner marked private or confidential stay off the timelines: others see
those.
"""

from datetime import date, datetime, timedelta

from django.utils import timezone

from accounts.models import ContactsImport, EmailAccount
from crm.selectors import contacts_to_export
from crm.services import activities_prune, activity_save, contact_export_record, contact_import
from mail.backend import CONTACTS
from mail.items import ItemsReader, NewCard

from .engine import PERIOD_DAYS
from .links import emails_link_to_contacts
from .models import Folder, SyncRun

# Meetings ahead of today matter as much as past ones: a year of them is read.
AHEAD = timedelta(days=365)
# "All" reaches this far back: servers keep years of calendar, timelines need recent ones.
ALL_DAYS = 730
# Contacts exported per run; the rest follow in the next runs.
EXPORT_LIMIT = 200


def items_sync(*, items: ItemsReader, account: EmailAccount, run: SyncRun, manual: bool):
    """What the mailbox's settings ask for beyond mail. Meetings and tasks come with
    every run while their automatic import is on, else only when asked for."""
    if account.meetings_import and (account.meetings_auto or manual):
        meetings_import(items=items, account=account, run=run)
    if account.contacts_import != ContactsImport.OFF:
        contacts_import(items=items, account=account, run=run)
    if account.contacts_export:
        contacts_export(items=items, account=account, run=run)


def _windows(start: datetime, end: datetime, width: timedelta):
    while start < end:
        yield start, min(start + width, end)
        start += width


def meetings_import(*, items: ItemsReader, account: EmailAccount, run: SyncRun) -> None:
    """Calendar items of the period and ahead, a window at a time (the server's limit);
    a window that came back whole is made to match the calendar (what is gone from it
    goes here too)."""
    days = PERIOD_DAYS.get(account.meetings_period) or ALL_DAYS
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=days), today + AHEAD
    own = {account.address.split("@", 1)[-1].lower()}
    for low, high in _windows(start, end, items.window):
        found = items.meetings(low, high)
        seen = set()
        for meeting in found:
            if meeting.private:
                continue
            people = {meeting.organizer, *meeting.attendees} - {account.address.lower(), ""}
            activity_save(
                account=account, kind="meeting", external_id=meeting.id, people=people,
                own_domains=own,
                values={
                    "subject": meeting.subject[:500], "starts_at": meeting.starts_at,
                    "ends_at": meeting.ends_at, "all_day": meeting.all_day,
                    "location": meeting.location[:500], "organizer": meeting.organizer,
                    "attendees": list(meeting.attendees), "status": "", "due_on": None,
                },
            )  # fmt: skip
            seen.add(meeting.id)
            run.activities += 1
        if len(found) < items.window_max:
            activities_prune(
                account=account, kind="meeting", keep=seen, starts_from=low, starts_until=high
            )
    tasks_import(items=items, account=account, run=run, since=start.date())


def tasks_import(*, items: ItemsReader, account: EmailAccount, run: SyncRun, since: date) -> None:
    """Open tasks, and those finished, due or begun within the period; each on the
    timelines of the contacts and companies it names."""
    seen: set[str] = set()
    for task in items.tasks():
        if task.private:
            continue
        begins = task.starts_at and task.starts_at.date()
        if task.done and not any(d and d >= since for d in (task.due_on, begins)):
            continue
        activity_save(
            account=account, kind="task", external_id=task.id, people=set(), own_domains=set(),
            contact_names=set(task.contact_names), company_names=set(task.company_names),
            values={
                "subject": task.subject[:500], "starts_at": task.starts_at, "ends_at": None,
                "all_day": False, "location": "", "organizer": "", "attendees": [],
                "status": task.status, "due_on": task.due_on,
            },
        )  # fmt: skip
        seen.add(task.id)
        run.activities += 1
    activities_prune(account=account, kind="task", keep=seen)


def _contact_folders(account: EmailAccount) -> list[str]:
    """The paths of the address book folders to import from."""
    folders = list(
        Folder.objects.filter(
            account=account, special_use=CONTACTS, exists_on_server=True
        ).values_list("path", flat=True)
    )
    if account.contacts_import == ContactsImport.FOLDERS:
        chosen = set(account.contacts_folders or [])
        return [path for path in folders if path in chosen]
    return folders


def contacts_import(*, items: ItemsReader, account: EmailAccount, run: SyncRun) -> None:
    made = []
    for path in _contact_folders(account):
        for card in items.cards(path):
            contact, created = contact_import(
                account=account, item_id=card.id, folder=path, name=card.name,
                company_name=card.company_name, addresses=list(card.addresses),
                phone=card.phone, job_title=card.job_title,
            )  # fmt: skip
            run.contacts_imported += int(created)
            if created:
                made.append(contact.pk)
    # The emails already downloaded from or to the new contacts, on their timelines
    # (the download links only the emails it stores).
    emails_link_to_contacts(contact_ids=made)


def contacts_export(*, items: ItemsReader, account: EmailAccount, run: SyncRun) -> None:
    """The people this mailbox's emails are linked to, into its address book, once: a
    contact already in the address book (imported or exported before) is skipped."""
    for contact in contacts_to_export(account=account, limit=EXPORT_LIMIT):
        addresses = tuple(a.address for a in contact.addresses.all())[:3]
        if not addresses:
            continue
        item_id, folder = items.card_add(
            NewCard(
                name=contact.name or addresses[0], addresses=addresses,
                company_name=contact.company.name if contact.company else "",
                job_title=contact.job_title or "", phone=contact.phone or "",
            )
        )  # fmt: skip
        contact_export_record(account=account, contact=contact, item_id=item_id, folder=folder)
        run.contacts_exported += 1
