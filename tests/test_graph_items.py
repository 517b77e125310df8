"""A Microsoft 365 mailbox's meetings, To Do tasks and contacts through Microsoft Graph,
imported (and contacts exported) by whole syncs against the suite's Graph protocol fake
(tests/servers/graph.py: it answers Graph v1.0 as Microsoft documents it and keeps its
mailboxes in memory; it is not Microsoft's service). The importer is sync.items, the
same as Exchange's; only mail/graph/items.py is Graph's."""

from datetime import UTC, datetime, timedelta

from django.urls import reverse

from crm.models import Activity, Company, ContactAddress, ContactLink
from sync.models import Email, Folder
from tests.mailbox import make_message
from tests.test_exchange_items import _an_hour_later, _sync


def _meeting(graph_server, address, subject, days, **kwargs):
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)
    kwargs.setdefault("attendees", [("Peter Partner", "peter@partner.test")])
    return graph_server.add_event(
        subject, start, start + timedelta(hours=1), location="Room 4", mailbox=address, **kwargs
    )


def test_it_imports_meetings_of_the_period_with_series_onto_the_timelines(
    graph_mailbox, graph_server, peter, client
):
    account, address = graph_mailbox
    account.meetings_import, account.meetings_period = True, "1m"
    account.save()
    past = _meeting(graph_server, address, "Kick-off", days=-10)
    _meeting(graph_server, address, "Last year's review", days=-200)
    upcoming = _meeting(graph_server, address, "Contract signing", days=14)
    _meeting(graph_server, address, "Weekly call", days=1, weekly_count=3)
    _meeting(graph_server, address, "Doctor", days=2, sensitivity="private")

    run = _sync(account)

    meetings = Activity.objects.filter(account=account, kind="meeting")
    subjects = sorted(meetings.values_list("subject", flat=True))
    assert subjects == ["Contract signing", "Kick-off", *["Weekly call"] * 3]
    kickoff = meetings.get(external_id=past)
    assert kickoff.location == "Room 4" and kickoff.attendees == ["peter@partner.test"]
    assert kickoff.starts_at is not None and kickoff.ends_at - kickoff.starts_at == timedelta(
        hours=1
    )
    assert list(kickoff.contacts.all()) == [peter]
    assert list(kickoff.companies.all()) == [peter.company]
    assert run.activities >= 5
    client.force_login(account.owner)
    page = client.get(reverse("crm:contact", args=[peter.pk])).text
    assert "Kick-off" in page and "Weekly call" in page and "Doctor" not in page

    # Imported again: updated, not added; a meeting gone from the calendar goes here too.
    graph_server.update(past, {"subject": "Kick-off (moved)"})
    graph_server.delete(upcoming)
    _an_hour_later(account)
    subjects = sorted(
        Activity.objects.filter(account=account, kind="meeting").values_list("subject", flat=True)
    )
    assert subjects == ["Kick-off (moved)", *["Weekly call"] * 3]


def test_it_imports_open_and_recent_to_do_tasks(graph_mailbox, graph_server):
    account, address = graph_mailbox
    account.meetings_import = True
    account.save()
    due = datetime.now(UTC) + timedelta(days=3)
    graph_server.add_task("Prepare the offer", due=due, mailbox=address)
    other = graph_server.add_todo_list("Projects", mailbox=address)
    graph_server.add_task("Call back", list_id=other, status="inProgress", mailbox=address)
    graph_server.add_task(
        "Done long ago", status="completed", due=datetime.now(UTC) - timedelta(days=400),
        mailbox=address,
    )  # fmt: skip

    _sync(account)

    tasks = {a.subject: a for a in Activity.objects.filter(account=account, kind="task")}
    assert set(tasks) == {"Prepare the offer", "Call back"}
    assert tasks["Prepare the offer"].due_on == due.date()
    assert tasks["Call back"].status == "InProgress"


def test_it_imports_contacts_of_the_chosen_address_book_folders(
    graph_mailbox, graph_server, peter, client
):
    account, address = graph_mailbox
    acme = Company.objects.create(name="ACME Corp")
    graph_server.add_contact(
        "Anna Acme", company_name="Acme Corp", emails=["anna@acme.test"], job_title="Buyer",
        mailbox=address,
    )  # fmt: skip
    graph_server.add_contact(
        "Peter P.", company_name="Other", emails=["PETER@partner.test"], mailbox=address
    )
    suppliers = graph_server.add_folder("contacts", "Suppliers", mailbox=address)
    graph_server.add_contact(
        "Sam Supplier", emails=["sam@supply.test"], folder=suppliers, mailbox=address
    )
    _sync(account)  # the first download lists the address book's folders
    books = Folder.objects.filter(account=account, special_use="\\contacts")
    assert set(books.values_list("path", "selectable")) == {
        ("Contacts", False), ("Contacts/Suppliers", False),
    }  # fmt: skip
    account.contacts_import = "all"
    account.save()

    run = _sync(account, items_only=True)

    anna = ContactAddress.objects.get(address="anna@acme.test").contact
    assert (anna.name, anna.company, anna.job_title) == ("Anna Acme", acme, "Buyer")
    peter.refresh_from_db()
    assert peter.name == "Peter Partner" and peter.company.name == "Partner GmbH"
    assert ContactAddress.objects.filter(address="sam@supply.test").exists()
    assert run.contacts_imported == 2
    assert ContactLink.objects.filter(account=account).count() == 3

    # Chosen on the settings page: the suppliers' folder alone.
    ContactAddress.objects.filter(address="sam@supply.test").delete()
    ContactAddress.objects.filter(address="anna@acme.test").delete()
    client.force_login(account.owner)
    response = client.post(
        reverse("accounts:settings_save", args=[account.pk, "contacts"]),
        {
            "contacts-contacts_import": "folders",
            "contacts-contacts_folders": ["Contacts/Suppliers"],
        },
    )
    assert response.status_code == 302
    _sync(account, items_only=True)
    assert ContactAddress.objects.filter(address="sam@supply.test").exists()
    assert not ContactAddress.objects.filter(address="anna@acme.test").exists()


def test_it_keeps_a_mail_folder_named_contacts_apart_from_the_address_book(
    graph_mailbox, graph_server
):
    account, address = graph_mailbox
    folder = graph_server.add_folder("msgfolderroot", "Contacts", mailbox=address)
    graph_server.add_message(folder, make_message(subject="In a mail folder"), mailbox=address)

    _sync(account)

    paths = dict(Folder.objects.filter(account=account).values_list("path", "special_use"))
    assert paths["Contacts"] == "" and paths["Contacts (address book)"] == "\\contacts"
    assert Email.objects.filter(account=account, subject="In a mail folder").exists()


def test_it_exports_the_people_the_mailbox_writes_with_once(graph_mailbox, graph_server, peter):
    account, address = graph_mailbox
    graph_server.add_message("inbox", make_message(subject="Hello", to=address), mailbox=address)
    account.contacts_export = True
    account.save()

    run = _sync(account)

    assert Email.objects.get(account=account, subject="Hello").contacts.get() == peter
    assert run.contacts_exported == 1
    book = graph_server.folder_id("contacts", address)
    with graph_server.state.lock:
        exported = [e.data for e in graph_server.state.in_container(book)]
    assert [c["displayName"] for c in exported] == ["Peter Partner"]
    assert exported[0]["emailAddresses"][0]["address"] == "peter@partner.test"
    assert exported[0]["companyName"] == "Partner GmbH"
    assert _an_hour_later(account).contacts_exported == 0


def test_it_offers_meetings_and_contacts_on_the_settings_page(graph_mailbox, client):
    account, _address = graph_mailbox
    client.force_login(account.owner)
    page = client.get(account.get_absolute_url()).text
    assert "Meetings and tasks" in page and "Contacts" in page
