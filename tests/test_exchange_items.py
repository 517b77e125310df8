"""An Exchange mailbox's meetings, tasks and contacts, imported (and contacts exported)
against the suite's EWS protocol fake (tests/servers/ews.py: it answers EWS SOAP as an
Exchange 2016 server does and keeps its mailboxes in memory; it is not Exchange)."""

import re
from datetime import UTC, date, datetime, timedelta

from django.urls import reverse
from django.utils import timezone

from crm.models import Activity, Company, Contact, ContactAddress, ContactLink
from sync.models import Email, MailboxSync, SyncRun
from sync.services import mailbox_sync
from tests.mailbox import make_message


def _sync(account, **kwargs) -> SyncRun:
    run = mailbox_sync(account_id=account.pk, **kwargs)
    assert run is not None and run.state == SyncRun.State.SUCCEEDED, run and run.error
    return run


def _an_hour_later(account) -> SyncRun:
    """The next scheduled run after the hourly reading of meetings and contacts is due."""
    MailboxSync.objects.filter(account=account).update(
        items_imported_at=timezone.now() - timedelta(hours=1, minutes=1)
    )
    return _sync(account)


def _meeting(ews_server, address, subject, days, attendee="peter@partner.test"):
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    return ews_server.add_calendar_item(
        subject, start, start + timedelta(hours=1), location="Room 4",
        required_attendees=[("Peter Partner", attendee)], mailbox=address,
    )  # fmt: skip


def test_it_imports_meetings_of_the_period_onto_the_contacts_timelines(
    exchange_mailbox, ews_server, peter, client
):
    account, address = exchange_mailbox
    account.meetings_import, account.meetings_period = True, "1m"
    account.save()
    past = _meeting(ews_server, address, "Kick-off", days=-10)
    _meeting(ews_server, address, "Last year's review", days=-200)
    upcoming = _meeting(ews_server, address, "Contract signing", days=14)

    run = _sync(account)

    meetings = Activity.objects.filter(account=account, kind="meeting")
    assert set(meetings.values_list("subject", flat=True)) == {"Kick-off", "Contract signing"}
    kickoff = meetings.get(external_id=past)
    assert kickoff.location == "Room 4" and kickoff.attendees == ["peter@partner.test"]
    assert list(kickoff.contacts.all()) == [peter]
    assert list(kickoff.companies.all()) == [peter.company]
    assert run.activities >= 2
    client.force_login(account.owner)
    page = client.get(reverse("crm:contact", args=[peter.pk])).text
    assert "Kick-off" in page and "Contract signing" in page
    assert "Kick-off" in client.get(reverse("crm:company", args=[peter.company.pk])).text

    # Imported again: updated, not added; a meeting gone from the calendar goes here too.
    ews_server.update_item(past, {"item:Subject": "Kick-off (moved)"})
    ews_server.delete_item(upcoming)
    _an_hour_later(account)
    assert list(
        Activity.objects.filter(account=account, kind="meeting").values_list("subject", flat=True)
    ) == ["Kick-off (moved)"]


def test_it_shows_activities_only_to_those_who_may_see_the_mailbox(
    exchange_mailbox, ews_server, peter, client
):
    from tests.factories import UserFactory

    account, address = exchange_mailbox
    account.meetings_import = True
    account.save()
    _meeting(ews_server, address, "Private planning", days=1)
    _sync(account)

    client.force_login(UserFactory())
    assert "Private planning" not in client.get(reverse("crm:contact", args=[peter.pk])).text


def test_it_keeps_private_meetings_off_the_timelines(exchange_mailbox, ews_server, peter):
    account, address = exchange_mailbox
    account.meetings_import = True
    account.save()
    start = datetime.now(UTC) + timedelta(days=1)
    ews_server.add_calendar_item(
        "Doctor", start, start + timedelta(hours=1), sensitivity="Private",
        required_attendees=[("Peter Partner", "peter@partner.test")], mailbox=address,
    )  # fmt: skip
    _meeting(ews_server, address, "Board meeting", days=2)

    _sync(account)

    subjects = set(Activity.objects.filter(account=account).values_list("subject", flat=True))
    assert subjects == {"Board meeting"}


def test_it_puts_a_task_on_the_timelines_of_the_contacts_and_companies_it_names(
    exchange_mailbox, ews_server, peter
):
    account, address = exchange_mailbox
    account.meetings_import = True
    account.save()
    ews_server.add_task(
        "Prepare the offer", contacts=["Peter Partner"], companies=["partner gmbh"],
        mailbox=address,
    )  # fmt: skip

    _sync(account)

    task = Activity.objects.get(account=account, kind="task")
    assert list(task.contacts.all()) == [peter]
    assert list(task.companies.all()) == [peter.company]


def test_it_imports_open_tasks_and_recently_finished_ones(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    account.meetings_import = True
    account.save()
    today = date.today()
    ews_server.add_task("Send the offer", due_date=today + timedelta(days=3), mailbox=address)
    ews_server.add_task(
        "Old errand", due_date=today - timedelta(days=300), status="Completed", mailbox=address
    )
    ews_server.add_task(
        "Call back", due_date=today - timedelta(days=2), status="Completed", mailbox=address
    )

    _sync(account)

    tasks = Activity.objects.filter(account=account, kind="task")
    assert set(tasks.values_list("subject", "status")) == {
        ("Send the offer", "NotStarted"),
        ("Call back", "Completed"),
    }
    assert tasks.get(subject="Send the offer").due_on == today + timedelta(days=3)


def test_it_imports_meetings_only_when_asked_while_automatic_import_is_off(
    exchange_mailbox, ews_server
):
    account, address = exchange_mailbox
    account.meetings_import, account.meetings_auto = True, False
    account.save()
    _meeting(ews_server, address, "Quarterly", days=2)

    _sync(account)
    assert not Activity.objects.filter(account=account).exists()

    _sync(account, items_only=True)  # the "Import now" of the settings page
    assert Activity.objects.filter(account=account, subject="Quarterly").exists()


def test_it_imports_contacts_and_links_companies_by_unambiguous_name(
    exchange_mailbox, ews_server, peter
):
    account, address = exchange_mailbox
    account.contacts_import = "all"
    account.save()
    acme = Company.objects.create(name="ACME Corp")
    Company.objects.create(name="Twin Ltd")
    Company.objects.create(name="twin ltd")
    ews_server.add_contact(
        "Anna Acme", company_name="Acme Corp", emails=["anna@acme.test"],
        phones={"BusinessPhone": "+49 30 1234"}, job_title="Buyer", mailbox=address,
    )  # fmt: skip
    ews_server.add_contact(
        "Tom Twin", company_name="Twin Ltd", emails=["tom@twin.test"], mailbox=address
    )
    ews_server.add_contact(
        "Peter P.", company_name="Other", emails=["PETER@partner.test"], mailbox=address
    )
    ews_server.add_folder("contacts", "Suppliers", folder_class="IPF.Contact", mailbox=address)
    ews_server.add_contact(
        "Sam Supplier", emails=["sam@supply.test"], folder="contacts/Suppliers", mailbox=address
    )

    run = _sync(account)

    anna = ContactAddress.objects.get(address="anna@acme.test").contact
    assert (anna.name, anna.company, anna.phone, anna.job_title) == (
        "Anna Acme", acme, "+49 30 1234", "Buyer",
    )  # fmt: skip
    assert ContactAddress.objects.get(address="tom@twin.test").contact.company is None
    # Peter was known by his address: completed, not doubled, his name and company kept.
    peter.refresh_from_db()
    assert peter.name == "Peter Partner" and peter.company.name == "Partner GmbH"
    assert ContactAddress.objects.filter(address="peter@partner.test").count() == 1
    assert ContactAddress.objects.filter(address="sam@supply.test").exists()
    assert run.contacts_imported == 3
    contacts_before = Contact.objects.count()

    _an_hour_later(account)
    assert Contact.objects.count() == contacts_before
    assert ContactLink.objects.filter(account=account).count() == 4


def test_it_imports_only_the_chosen_contact_folders(exchange_mailbox, ews_server, client):
    account, address = exchange_mailbox
    ews_server.add_folder("contacts", "Suppliers", folder_class="IPF.Contact", mailbox=address)
    ews_server.add_contact("Sam Supplier", emails=["sam@supply.test"], folder="contacts/Suppliers",
                           mailbox=address)  # fmt: skip
    ews_server.add_contact("Fred Friend", emails=["fred@friends.test"], mailbox=address)
    _sync(account)  # the first download finds the folders
    client.force_login(account.owner)
    url = reverse("accounts:settings_save", args=[account.pk, "contacts"])

    response = client.post(
        url, {"contacts-contacts_import": "folders", "contacts-contacts_folders": ["Contacts/x"]}
    )
    assert "Contacts/x is not one of the mailbox&#x27;s contact folders" in response.text
    response = client.post(
        url,
        {
            "contacts-contacts_import": "folders",
            "contacts-contacts_folders": ["Contacts/Suppliers"],
        },
    )
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.contacts_folders == ["Contacts/Suppliers"]

    _sync(account, items_only=True)

    assert ContactAddress.objects.filter(address="sam@supply.test").exists()
    assert not ContactAddress.objects.filter(address="fred@friends.test").exists()


def test_it_exports_the_people_the_mailbox_writes_with_once(exchange_mailbox, ews_server, peter):
    account, address = exchange_mailbox
    ews_server.add_message(
        "inbox", make_message(subject="Hello", to=address), mailbox=address
    )  # from peter@partner.test
    account.contacts_export = True
    account.save()

    run = _sync(account)

    assert Email.objects.get(account=account, subject="Hello").contacts.get() == peter
    assert run.contacts_exported == 1
    contacts_folder = ews_server.folder_id("contacts", address)
    exported = [
        i for i in ews_server.state.items.values()
        if i.folder == contacts_folder and i.kind == "Contact"
    ]  # fmt: skip
    assert len(exported) == 1
    assert exported[0].props["contacts:DisplayName"] == "Peter Partner"
    assert "peter@partner.test" in exported[0].props["contacts:EmailAddress"].values()
    assert _an_hour_later(account).contacts_exported == 0


def test_it_offers_the_exchange_sections_only_for_exchange_mailboxes(
    client, exchange_mailbox, synced_mailbox, monkeypatch
):
    from sync import services, tasks

    imports = []

    def capture(task, account_id):
        if task is tasks.import_exchange_items:
            imports.append(account_id)
        return True

    monkeypatch.setattr(services, "publish_on_commit", capture)
    exchange, _address = exchange_mailbox
    imap, _mailbox = synced_mailbox
    imap.owner = exchange.owner
    imap.save()
    client.force_login(exchange.owner)

    assert "Meetings and tasks" in client.get(exchange.get_absolute_url()).text
    assert "Meetings and tasks" not in client.get(imap.get_absolute_url()).text
    refused = client.post(reverse("accounts:settings_save", args=[imap.pk, "meetings"]), {})
    assert refused.status_code == 404

    saved = client.post(
        reverse("accounts:settings_save", args=[exchange.pk, "meetings"]),
        {"meetings-meetings_import": "on", "meetings-meetings_period": "3m",
         "meetings-meetings_auto": "on"},
        HTTP_HX_REQUEST="true",
    )  # fmt: skip
    assert "Importing now." in saved.text
    assert imports == [exchange.pk]
    exchange.refresh_from_db()
    assert (exchange.meetings_import, exchange.meetings_period) == (True, "3m")


def test_it_reads_meetings_and_contacts_at_most_hourly_between_imports_asked_for(
    exchange_mailbox, ews_server
):
    account, address = exchange_mailbox
    account.meetings_import, account.contacts_import = True, "all"
    account.save()
    _sync(account)
    _meeting(ews_server, address, "Added later", days=1)
    ews_server.state.requests.clear()

    _sync(account)  # the next scheduled run, minutes later: mail only

    assert ews_server.calls("FindItem") == 0
    assert not Activity.objects.filter(subject="Added later").exists()
    _sync(account, items_only=True)
    assert Activity.objects.filter(subject="Added later").exists()


def test_it_links_the_emails_downloaded_before_a_contact_was_imported(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    account.contacts_import = "all"
    account.save()
    acme = Company.objects.create(name="ACME Corp")
    wrote = Email.objects.create(
        account=account, message_key="k1", subject="Offer", from_address="anna@acme.test"
    )
    copied = Email.objects.create(
        account=account, message_key="k2", subject="Minutes", from_address="me@example.test",
        cc=[{"name": "Anna", "address": "anna@acme.test"}],
    )  # fmt: skip
    Email.objects.create(
        account=account, message_key="k3", subject="Other", from_address="zed@else.test",
        to=[{"name": "", "address": "hanna@acme.test"}],
    )  # fmt: skip
    ews_server.add_contact(
        "Anna Acme", company_name="Acme Corp", emails=["Anna@Acme.test"], mailbox=address
    )
    _sync(account)
    anna = ContactAddress.objects.get(address="anna@acme.test").contact
    assert set(anna.emails.all()) == {wrote, copied}
    assert set(acme.emails.all()) == {wrote, copied}


def test_it_says_an_import_apart_from_the_download_it_followed(
    exchange_mailbox, ews_server, client
):
    account, address = exchange_mailbox
    account.meetings_import = True
    account.save()
    ews_server.add_message("inbox", make_message(subject="Hello", to=address), mailbox=address)
    _sync(account)
    # A download that failed since: not the one the line speaks of.
    SyncRun.objects.create(account=account, state=SyncRun.State.FAILED, folders=1, error="x")
    _meeting(ews_server, address, "Quarterly", days=2)
    _sync(account, items_only=True)  # the "Import now" of the settings page
    client.force_login(account.owner)
    status = client.get(reverse("sync:status", args=[account.pk])).text
    # The download's line is the download's; the import says what it brought.
    assert re.search(r"Last download [^:]*: 1 new email, \d+ folders? checked", status), status
    assert "0 new emails" not in status
    assert re.search(
        r"Meetings, tasks and contacts imported [^:]*: \d+ meetings? and tasks?", status
    )
