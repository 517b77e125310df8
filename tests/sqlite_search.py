"""Run by tests/test_search_sqlite.py in a process of its own, against a new SQLite
database (DATABASE_URL, the embedded default `make run` uses; the suite's own database is
PostgreSQL): migrates it, writes a few emails and a contact, and prints as JSON what the
Email page, a contact's timeline and the contacts list find for what a user types."""

import json
import re
from datetime import UTC, datetime, timedelta

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from django.urls import reverse  # noqa: E402

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
SEARCHES = [
    "müller", "åsa", "σοφια", "Jürgen", "schäfer", "name", "address", "warranty pallet",
    "turbine order", '"pallet warranty"', "bar -foo", "pallet or turbine", "50%", "_",
]  # fmt: skip


def main() -> None:
    call_command("migrate", verbosity=0)
    setup_test_environment()
    from crm.models import Contact
    from sync.models import Email
    from tests.factories import EmailAccountFactory

    account = EmailAccountFactory()
    emails = [
        {"subject": "Anfrage von MÜLLER GmbH"},
        {"subject": "Åsa bokning"},
        {"subject": "ΣΟΦΙΑ"},
        {"subject": "Hello", "to": [{"name": "Jürgen Schäfer", "address": "j@x.test"}]},
        {"subject": "pallet warranty"},
        {"subject": "Notes", "text_body": "the turbine\norder is late"},
        {"subject": "foo and bar", "text_body": "foo bar"},
        {"subject": "only bar", "text_body": "bar"},
        {"subject": "ÄRGER mit der Lieferung"},
    ]
    for number, fields in enumerate(emails):
        email = Email.objects.create(
            account=account, message_key=f"k{number}", sent_at=NOW - timedelta(hours=number),
            **fields,
        )  # fmt: skip
    contact = Contact.objects.create(name="Özil Mesut")
    email.contacts.add(contact)
    client = Client()
    client.force_login(account.owner)

    def page(url, **query) -> str:
        return client.get(url, query).content.decode()

    def subjects(text) -> list[str]:
        html = page(reverse("accounts:email"), q=text)
        return re.findall(r'href="/emails/\d+/">(.*?)</a>', html, re.S)

    found = {
        text: [re.sub("</?mark>", "", subject).strip() for subject in subjects(text)]
        for text in SEARCHES
    }
    timeline = reverse("crm:contact", args=[contact.pk])
    contacts = reverse("crm:contacts")
    result = {
        "email_page": found,
        "marked": subjects("müller"),
        "timeline": {
            text: "Lieferung" in page(timeline, q=text)
            for text in ("ärger", "lieferung ärger", "foo")
        },
        "contacts": {
            text: "Özil Mesut" in page(contacts, q=text) for text in ("özil", "ÖZIL", "zz")
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
