"""New emails on an open Email page without a reload (issue 18, point 5): the poller's
endpoint answers 204 from one indexed query while nothing arrived, moves past emails the
user may not see, and tells the page to reload its list when some are the user's."""

import re

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sync.models import Email
from tests.factories import EmailAccountFactory, MailboxGrantFactory, UserFactory

URL = reverse("sync:new_emails")


def _email(account, key):
    return Email.objects.create(account=account, message_key=key, subject=key)


def _after(html: str) -> int:
    return int(re.search(r'id="new-emails-poll" hx-get="[^"]*\?after=(\d+)"', html).group(1))


def test_it_answers_204_until_an_email_arrives_and_then_names_the_newer_id(client, db):
    account = EmailAccountFactory()
    other = EmailAccountFactory()
    first = _email(account, "first")
    client.force_login(account.owner)
    page = client.get(reverse("accounts:email")).text
    after = _after(page)
    assert after == first.pk
    assert client.get(URL, {"after": after}).status_code == 204
    # Someone else's email: the poller moves past it; the page is not told to reload.
    theirs = _email(other, "theirs")
    response = client.get(URL, {"after": after})
    assert response.status_code == 200 and "HX-Trigger" not in response
    assert _after(response.text) == theirs.pk
    assert client.get(URL, {"after": theirs.pk}).status_code == 204
    # The user's own: the page reloads its list (and the statuses) on "new-emails".
    mine = _email(account, "mine")
    response = client.get(URL, {"after": theirs.pk})
    assert response["HX-Trigger"] == "new-emails" and _after(response.text) == mine.pk
    # A mailbox shared with "Send emails" fills the Email page too.
    other.shared_access = True
    other.save()
    MailboxGrantFactory(account=other, user=account.owner, can_send=True)
    shared = _email(other, "shared")
    assert client.get(URL, {"after": mine.pk})["HX-Trigger"] == "new-emails"
    assert client.get(URL, {"after": shared.pk}).status_code == 204


def _idle_queries(client) -> list[str]:
    top = Email.objects.order_by("-pk").first().pk
    with CaptureQueriesContext(connection) as queries:
        assert client.get(URL, {"after": top}).status_code == 204
    return [query["sql"] for query in queries]


def test_it_costs_the_same_idle_however_many_emails(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    _email(account, "one")
    few = _idle_queries(client)
    Email.objects.bulk_create(
        Email(account=account, message_key=f"k{n}", subject=f"s{n}") for n in range(2000)
    )
    many = _idle_queries(client)
    # The session, its user, and the primary key index's last entry.
    assert len(few) == len(many) == 3, many
    newest = many[-1]
    assert newest.endswith('FROM "sync_email" ORDER BY 1 DESC LIMIT 1'), newest
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sync_email")
        cursor.execute(f"EXPLAIN {newest}")
        plan = " ".join(row[0] for row in cursor.fetchall())
    assert "Index Only Scan Backward using sync_email_pkey" in plan, plan


def test_it_polls_on_the_first_page_only(client, db):
    account = EmailAccountFactory()
    for n in range(60):
        _email(account, f"k{n}")
    client.force_login(account.owner)
    first = client.get(reverse("accounts:email")).text
    assert 'id="new-emails-poll"' in first
    assert 'hx-trigger="new-emails from:body"' in first
    older = re.search(r'href="\?after=([^"]+)"[^>]*>Older', first).group(1)
    second = client.get(reverse("accounts:email"), {"after": older}).text
    assert 'id="new-emails-poll"' not in second
    searching = client.get(reverse("accounts:email"), {"q": "k1"}).text
    assert 'id="new-emails-poll"' not in searching


def test_it_answers_the_signed_in_only(client, db):
    response = client.get(URL, {"after": 0})
    assert response.status_code == 302 and response.url.startswith(reverse("login"))
    client.force_login(UserFactory())
    # Nothing stored at all, or a malformed id (read as none seen): nothing to say.
    assert client.get(URL, {"after": "x"}).status_code == 204


def test_it_watches_a_timeline_by_its_own_rule(client, db):
    from crm.models import Company, Contact

    account = EmailAccountFactory()
    company = Company.objects.create(name="Acme", web_domain="acme.test")
    contact = Contact.objects.create(name="Ann", company=company)
    elsewhere = Contact.objects.create(name="Bob")
    client.force_login(account.owner)
    page = client.get(reverse("crm:contact", args=[contact.pk])).text
    poll = re.search(r'id="new-emails-poll" hx-get="([^"]+)"', page).group(1)
    assert poll == f"{URL}?after=0&amp;contact={contact.pk}"
    assert 'id="timeline-entries" hx-get="' in page
    company_page = client.get(reverse("crm:company", args=[company.pk])).text
    assert f"&amp;company={company.pk}" in company_page
    # An email of the user's mailbox, not linked to Ann: not news for her timeline.
    unlinked = _email(account, "unlinked")
    assert "HX-Trigger" not in client.get(URL, {"after": 0, "contact": contact.pk})
    to_bob = _email(account, "to bob")
    to_bob.contacts.add(elsewhere)
    assert "HX-Trigger" not in client.get(URL, {"after": unlinked.pk, "contact": contact.pk})
    to_ann = _email(account, "to ann")
    to_ann.contacts.add(contact)
    to_ann.companies.add(company)
    for scope in ({"contact": contact.pk}, {"company": company.pk}):
        response = client.get(URL, {"after": to_bob.pk, **scope})
        assert response["HX-Trigger"] == "new-emails", scope
    # Someone who may not see the mailbox's emails is not told of them.
    client.force_login(UserFactory())
    assert "HX-Trigger" not in client.get(URL, {"after": to_bob.pk, "contact": contact.pk})


def test_it_watches_one_mailbox_for_its_settings_pages_status(client, db):
    account = EmailAccountFactory()
    second = EmailAccountFactory(owner=account.owner)
    client.force_login(account.owner)
    page = client.get(reverse("accounts:settings", args=[account.pk])).text
    poll = re.search(r'id="new-emails-poll" hx-get="([^"]+)"', page).group(1)
    assert poll == f"{URL}?after=0&amp;account={account.pk}"
    status = re.search(rf'<div id="sync-status-{account.pk}"[^>]*>', page).group(0)
    assert 'hx-trigger="new-emails from:body"' in status
    other = _email(second, "the other mailbox's")
    assert "HX-Trigger" not in client.get(URL, {"after": 0, "account": account.pk})
    _email(account, "this mailbox's")
    response = client.get(URL, {"after": other.pk, "account": account.pk})
    assert response["HX-Trigger"] == "new-emails"
    # Someone who may not see the mailbox's status is not told of its emails.
    client.force_login(UserFactory())
    assert "HX-Trigger" not in client.get(URL, {"after": other.pk, "account": account.pk})
