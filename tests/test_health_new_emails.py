"""New emails on an open Email page without a reload (issue 18, point 5): the poller's
endpoint answers 204 from two indexed queries while nothing arrived, reads only the
mailboxes the user may see there (another mailbox's mail changes nothing in its
answers), catches an email committed behind the newest id, and tells the page to reload
its list when the list has an email it did not show."""

import re

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sync.live import LOOK_BACK
from sync.models import Email
from tests.factories import EmailAccountFactory, MailboxGrantFactory, UserFactory

URL = reverse("sync:new_emails")


def _email(account, key):
    return Email.objects.create(account=account, message_key=key, subject=key)


def _state(html: str) -> dict:
    """The poller's state in a page or a poll's answer: {"after": ..., "mark": ...}."""
    found = re.search(r'id="new-emails-poll" hx-get="[^"]*\?after=(\d+)&amp;mark=(\d+)', html)
    return {"after": int(found.group(1)), "mark": int(found.group(2))}


def _after(html: str) -> int:
    return _state(html)["after"]


def test_it_answers_204_until_an_email_arrives_and_then_names_the_newer_state(client, db):
    account = EmailAccountFactory()
    other = EmailAccountFactory()
    first = _email(account, "first")
    client.force_login(account.owner)
    page = client.get(reverse("accounts:email")).text
    state = _state(page)
    assert state == {"after": first.pk, "mark": first.pk}
    assert client.get(URL, state).status_code == 204
    # Someone else's email: nothing in the answer tells of it, not even its id.
    theirs = _email(other, "theirs")
    response = client.get(URL, state)
    assert response.status_code == 204 and str(theirs.pk) not in response.text
    # The user's own: the page reloads its list (and the statuses) on "new-emails".
    mine = _email(account, "mine")
    response = client.get(URL, state)
    assert response["HX-Trigger"] == "new-emails" and _after(response.text) == mine.pk
    state = _state(response.text)
    assert client.get(URL, state).status_code == 204
    # A mailbox shared with "Send emails" fills the Email page too.
    other.shared_access = True
    other.save()
    MailboxGrantFactory(account=other, user=account.owner, can_send=True)
    shared = _email(other, "shared")
    response = client.get(URL, state)
    assert response["HX-Trigger"] == "new-emails" and _after(response.text) == shared.pk
    assert client.get(URL, _state(response.text)).status_code == 204


def test_it_tells_nothing_of_mailboxes_the_user_may_not_see(client, db):
    """The answer (204 or not) and the ids in it come from the user's mailboxes only: a
    busy mailbox elsewhere in the company is invisible through the poller."""
    account = EmailAccountFactory()
    _email(account, "mine")
    client.force_login(account.owner)
    state = _state(client.get(reverse("accounts:email")).text)
    elsewhere = EmailAccountFactory()
    for n in range(5):
        theirs = _email(elsewhere, f"theirs {n}")
    for scope in ({}, {"account": elsewhere.pk}, {"account": account.pk}):
        response = client.get(URL, {**state, **scope})
        if scope.get("account") == elsewhere.pk:
            # Not the user's mailbox: nothing to follow there, whatever arrives in it.
            assert response.status_code == 200 and _state(response.text) == {"after": 0, "mark": 0}
            assert client.get(URL, {"after": 0, "mark": 0, **scope}).status_code == 204
        else:
            assert response.status_code == 204, scope
        assert str(theirs.pk) not in response.text


def test_it_catches_an_email_committed_behind_the_newest_id(client, db):
    """With several workers, a batch with lower ids may commit after another mailbox's
    higher ones: the poller has moved past its ids, and looks back for it."""
    account = EmailAccountFactory()
    second = EmailAccountFactory(owner=account.owner)
    early = _email(account, "early")
    # Ids handed out to a batch of the first mailbox that has not committed yet...
    late_ids = [early.pk + 1, early.pk + 2]
    with connection.cursor() as cursor:
        cursor.execute("SELECT setval('sync_email_id_seq', %s)", [early.pk + 2])
    # ...while the second mailbox's batch commits first, with higher ids.
    newer = _email(second, "newer")
    assert newer.pk > late_ids[-1]
    client.force_login(account.owner)
    state = _state(client.get(reverse("accounts:email")).text)
    assert state["after"] == newer.pk
    assert client.get(URL, state).status_code == 204
    for pk in late_ids:  # the late batch commits, behind the newest id
        Email.objects.create(pk=pk, account=account, message_key=f"late{pk}", subject="late")
    response = client.get(URL, state)
    assert response["HX-Trigger"] == "new-emails"
    assert client.get(URL, _state(response.text)).status_code == 204


def _idle_queries(client) -> list[str]:
    state = _state(client.get(reverse("accounts:email")).text)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(URL, state).status_code == 204
    return [query["sql"] for query in queries]


def test_it_costs_the_same_idle_however_many_emails(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    _email(account, "one")
    few = _idle_queries(client)
    # Many emails, most of them in the company's other mailboxes, the user's spread over
    # twice the look-back window, and their newest far behind the table's newest.
    others = [EmailAccountFactory() for _ in range(19)]
    Email.objects.bulk_create(
        Email(
            account=account if n < 2 * LOOK_BACK and n % 2 else others[n % 19],
            message_key=f"k{n}", subject="s",
        )
        for n in range(3 * LOOK_BACK)
    )  # fmt: skip
    many = _idle_queries(client)
    # The session, its user, the user's mailboxes, their newest id, the look-back's sum.
    assert len(few) == len(many) == 5, many
    newest, window = many[-2:]
    assert "MAX(" in newest and "SUM(" in window, many
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sync_email")
        plans = []
        for query in (newest, window):
            cursor.execute(f"EXPLAIN {query}")
            plans.append(" ".join(row[0] for row in cursor.fetchall()))
    # The newest: the mailbox's last entry of the (account, id) index, not a walk back
    # through the other mailboxes' emails.
    assert "Limit" in plans[0] and "Backward using email_account_id" in plans[0], plans[0]
    # The sum: only the window's range of that index, not the mailbox's older emails.
    assert "email_account_id" in plans[1], plans[1]
    assert re.search(r"Index Cond: \(\(account_id = \d+\) AND \(id > ", plans[1]), plans[1]


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
    # No mailbox to see, or a malformed id (read as none seen): nothing to say.
    _email(EmailAccountFactory(), "someone else's")
    assert client.get(URL, {"after": "x"}).status_code == 204


NOTHING = {"after": 0, "mark": 0}


def test_it_watches_a_timeline_by_its_own_rule(client, db):
    from crm.models import Company, Contact

    account = EmailAccountFactory()
    company = Company.objects.create(name="Acme", web_domain="acme.test")
    contact = Contact.objects.create(name="Ann", company=company)
    elsewhere = Contact.objects.create(name="Bob")
    client.force_login(account.owner)
    page = client.get(reverse("crm:contact", args=[contact.pk])).text
    poll = re.search(r'id="new-emails-poll" hx-get="([^"]+)"', page).group(1)
    assert poll == f"{URL}?after=0&amp;mark=0&amp;contact={contact.pk}"
    assert 'id="timeline-entries" hx-get="' in page
    company_page = client.get(reverse("crm:company", args=[company.pk])).text
    assert f"&amp;company={company.pk}" in company_page
    # Emails of the user's mailbox, not linked to Ann: the poller moves past them, and
    # her timeline is not told to reload.
    _email(account, "unlinked")
    _email(account, "to bob").contacts.add(elsewhere)
    states = {}
    for scope in ({"contact": contact.pk}, {"company": company.pk}):
        response = client.get(URL, {**NOTHING, **scope})
        assert response.status_code == 200 and "HX-Trigger" not in response, scope
        states[next(iter(scope))] = _state(response.text)
    to_ann = _email(account, "to ann")
    to_ann.contacts.add(contact)
    to_ann.companies.add(company)
    for scope in ({"contact": contact.pk}, {"company": company.pk}):
        response = client.get(URL, {**states[next(iter(scope))], **scope})
        assert response["HX-Trigger"] == "new-emails", scope
        assert client.get(URL, {**_state(response.text), **scope}).status_code == 204
    # Someone who may not see the mailbox's emails is told nothing of them.
    client.force_login(UserFactory())
    assert client.get(URL, {**NOTHING, "contact": contact.pk}).status_code == 204


def test_it_tells_a_timeline_nothing_of_a_mailbox_the_user_may_only_send_from(client, db):
    """The poller follows the newest id of the mailboxes the user sends from (their
    emails go out there), but the timeline's list is the "Access emails" rule's: an email
    of a send-only mailbox moves the poller on without telling the list to reload."""
    from crm.models import Contact

    sender = UserFactory()
    grant = MailboxGrantFactory(user=sender, can_send=True, can_access=False)
    contact = Contact.objects.create(name="Ann")
    client.force_login(sender)
    state = _state(client.get(reverse("crm:contact", args=[contact.pk])).text)
    hidden = _email(grant.account, "not theirs to see")
    hidden.contacts.add(contact)
    response = client.get(URL, {**state, "contact": contact.pk})
    assert response.status_code == 200 and "HX-Trigger" not in response
    assert _after(response.text) == hidden.pk
    assert "not theirs to see" not in client.get(reverse("crm:contact", args=[contact.pk])).text


def test_it_watches_one_mailbox_for_its_settings_pages_status(client, db):
    account = EmailAccountFactory()
    second = EmailAccountFactory(owner=account.owner)
    client.force_login(account.owner)
    page = client.get(reverse("accounts:settings", args=[account.pk])).text
    poll = re.search(r'id="new-emails-poll" hx-get="([^"]+)"', page).group(1)
    assert poll == f"{URL}?after=0&amp;mark=0&amp;account={account.pk}"
    status = re.search(rf'<div id="sync-status-{account.pk}"[^>]*>', page).group(0)
    assert 'hx-trigger="new-emails from:body, sync-settings-saved from:body"' in status
    # The user's other mailbox: not this page's news.
    _email(second, "the other mailbox's")
    assert client.get(URL, {**NOTHING, "account": account.pk}).status_code == 204
    _email(account, "this mailbox's")
    response = client.get(URL, {**NOTHING, "account": account.pk})
    assert response["HX-Trigger"] == "new-emails"
    # Someone who may not see the mailbox's status is told nothing of its emails.
    client.force_login(UserFactory())
    assert client.get(URL, {**NOTHING, "account": account.pk}).status_code == 204
