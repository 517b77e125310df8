"""Issue 17, point 2: the Contacts and Companies lists, their timelines, and an email's
links to them changed by hand. What a user sees of the emails is sharing.selectors'
decision (the whole matrix is in test_sharing_matrix.py); here the lists' own rules."""

import html
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from crm.models import Activity, Company, Contact, ContactAddress, EmailLinkChange
from sync.models import Email
from tests.factories import EmailAccountFactory, UserFactory

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
HTMX = {"HTTP_HX_REQUEST": "true"}


def _contact(name, *addresses, company=None, **fields):
    contact = Contact.objects.create(name=name, company=company, **fields)
    for address in addresses:
        ContactAddress.objects.create(contact=contact, address=address)
    return contact


def _email(account, subject, *, days=0, contacts=(), companies=(), sent_at="auto"):
    email = Email.objects.create(
        account=account, message_key=f"k-{subject}", subject=subject,
        sent_at=NOW - timedelta(days=days) if sent_at == "auto" else sent_at,
        from_address="peter@partner.test",
    )  # fmt: skip
    email.contacts.add(*contacts)
    email.companies.add(*companies)
    return email


def _names(page: str, names: list[str]) -> list[str]:
    return sorted(names, key=lambda name: page.index(f">{name}<") if f">{name}<" in page else 1e9)


def test_it_lists_contacts_by_the_latest_email_the_user_may_see(client, db):
    mine = EmailAccountFactory()
    ann, bob, cid = _contact("Ann"), _contact("Bob"), _contact("Cid")
    _contact("Dora")  # no email at all
    _email(mine, "Ann's offer", days=1, contacts=[ann])
    _email(mine, "Bob, older", days=3, contacts=[bob])
    # Newer, but in a mailbox the user may not see: it neither sorts nor shows.
    _email(EmailAccountFactory(), "Bob, secret", days=0, contacts=[bob])
    _email(mine, "Cid, undated", sent_at=None, contacts=[cid])
    client.force_login(mine.owner)

    page = client.get(reverse("crm:contacts")).text
    assert _names(page, ["Dora", "Cid", "Bob", "Ann"]) == ["Ann", "Bob", "Cid", "Dora"]
    assert "Ann&#x27;s offer" in page and "Bob, older" in page
    assert "secret" not in page
    assert 'id="crm-count">4 contacts' in page
    # Everyone sees every contact; a user with no mailbox sees no email beside them.
    client.force_login(UserFactory())
    page = client.get(reverse("crm:contacts")).text
    assert all(f">{name}<" in page for name in ("Ann", "Bob", "Cid", "Dora"))
    assert "Ann&#x27;s offer" not in page and "Bob, older" not in page


def test_it_shows_each_row_s_latest_email_linked_with_its_local_date(client, db, settings):
    settings.TIME_ZONE = "America/New_York"
    mine = EmailAccountFactory()
    partner = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
    ann, bob = _contact("Ann", company=partner), _contact("Bob")
    _contact("Cid")  # no email the user may see
    offer = _email(mine, "<b>Offer</b> & more", days=0, contacts=[ann], companies=[partner])
    blank = _email(mine, "", sent_at=None, contacts=[bob])
    client.force_login(mine.owner)

    for listed in (reverse("crm:contacts"), reverse("crm:companies")):
        page = client.get(listed).text
        # 12:00 UTC is 7 a.m. in New York; the subject escaped, the email linked.
        assert (
            f'<a href="{offer.get_absolute_url()}">&lt;b&gt;Offer&lt;/b&gt; &amp; more</a> '
            '<span class="muted">30 Nov 2026, 07:00</span>'
        ) in page
    page = client.get(reverse("crm:contacts")).text
    undated = f'<a href="{blank.get_absolute_url()}">(no subject)</a> <span class="muted"></span>'
    assert undated in page
    cid = page[page.index(">Cid<") :]
    assert cid.index('<span class="muted">none you can see</span>') < cid.index("</tr>")


def test_it_shows_each_contact_row_s_cells_escaped(client, db):
    mine = EmailAccountFactory()
    partner = Company.objects.create(name="Partner <Ltd>", web_domain="partner.test")
    ann = _contact(
        "Ann & Co", "ann@partner.test", "<a>@partner.test", company=partner, job_title="<i>Buyer"
    )
    nameless = _contact("", "zed@else.test")
    _email(mine, "Offer", contacts=[ann, nameless])
    client.force_login(mine.owner)
    page = client.get(reverse("crm:contacts")).text
    assert (
        f'<td><a href="/contacts/{ann.pk}/">Ann &amp; Co</a> '
        '<span class="muted">&lt;i&gt;Buyer</span></td>\n'
        f'<td data-label="Company"><a href="/companies/{partner.pk}/">'
        "Partner &lt;Ltd&gt;</a></td>\n"
        '<td data-label="Email addresses">&lt;a&gt;@partner.test, ann@partner.test</td>\n'
        '<td data-label="Latest email"><a href='
    ) in page
    # No name: its first address; no job title, no company: empty cells.
    assert (
        f'<td><a href="/contacts/{nameless.pk}/">zed@else.test</a></td>\n'
        '<td data-label="Company"></td>\n'
        '<td data-label="Email addresses">zed@else.test</td>\n'
    ) in page


def test_it_says_more_than_counted_for_a_broad_search_and_lists_that_many(client, db, monkeypatch):
    from crm.views.timelines import contacts_for_list

    monkeypatch.setattr("crm.views.timelines.COUNTED", 3)
    mine = EmailAccountFactory()
    annex = Company.objects.create(name="Annex Ltd", web_domain="annex.test")
    # Six matches, each by one of the four lookups; the first rows the search reads
    # (names, job titles, companies, addresses) are four different contacts: more than
    # COUNTED, so the matches are neither all read nor counted.
    matches = {
        "Ann": _contact("Ann", "ann@x.test"),  # by name, and by address
        "Fay Annberg": _contact("Fay Annberg"),
        "Cid": _contact("Cid", job_title="Annual reports"),
        "Dora": _contact("Dora", company=annex),
        "Eve": _contact("Eve", "eve@annie.test"),
    }
    bob = _contact("Bob", "bob@x.test")
    # Newest first: Bob (no match), then the address, job title and company matches.
    for days, contact in enumerate([bob, *(matches[n] for n in ["Eve", "Cid", "Dora", "Ann"])]):
        _email(mine, f"mail {days}", days=days, contacts=[contact])
    _email(mine, "mail 9", days=9, contacts=[matches["Fay Annberg"]])
    client.force_login(mine.owner)
    listed, count = contacts_for_list(mine.owner, search="ann")
    assert listed.keep is not None and count() == 4

    page = client.get(reverse("crm:contacts"), {"q": "ann"}).text
    assert 'id="crm-count">More than 3 contacts match “ann”' in page
    # The three with the latest emails that match, in that order; no more.
    assert _names(page, ["Dora", "Cid", "Eve"]) == ["Eve", "Cid", "Dora"]
    assert all(f">{name}<" in page for name in ("Eve", "Cid", "Dora"))
    assert ">Ann<" not in page and ">Fay Annberg<" not in page and ">Bob<" not in page
    # No more than COUNTED: counted exactly, all listed.
    monkeypatch.setattr("crm.views.timelines.COUNTED", 5)
    page = client.get(reverse("crm:contacts"), {"q": "ann"}).text
    assert 'id="crm-count">5 contacts matching “ann”' in page and ">Fay Annberg<" in page
    # The companies list's search says it too.
    Company.objects.bulk_create(Company(name=f"Annco {n}") for n in range(6))
    page = client.get(reverse("crm:companies"), {"q": "ann"}).text
    assert 'id="crm-count">More than 5 companies match “ann”' in page


def test_it_counts_a_contact_found_twice_once_at_the_bound(client, db, monkeypatch):
    monkeypatch.setattr("crm.views.timelines.COUNTED", 2)
    mine = EmailAccountFactory()
    # The search's rows: Ann (name), Cid (job title), Ann (address): three rows, two
    # contacts, no more than COUNTED.
    _email(mine, "a", contacts=[_contact("Ann", "ann@x.test")])
    _email(mine, "c", contacts=[_contact("Cid", job_title="Annual reports")])
    client.force_login(mine.owner)
    page = client.get(reverse("crm:contacts"), {"q": "ann"}).text
    assert 'id="crm-count">2 contacts matching “ann”' in page


def test_it_finds_contacts_by_name_address_job_title_or_company(client, db):
    partner = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
    _contact("Ann Archer", "ann@archer.test")
    _contact("Bob", "robert@partner.test", company=partner)
    _contact("Cid", job_title="Purchasing lead")
    client.force_login(UserFactory())
    url = reverse("crm:contacts")
    for query, found in {
        "archer": {"Ann Archer"},
        "ROBERT@": {"Bob"},
        "partner ltd": {"Bob"},
        "purchasing": {"Cid"},
        "nobody": set(),
    }.items():
        page = client.get(url, {"q": query}).text
        assert {n for n in ("Ann Archer", "Bob", "Cid") if f">{n}<" in page} == found, query
    assert "No contact matches “nobody”." in client.get(url, {"q": "nobody"}).text
    # Found by its name, job title, company and both addresses: listed and counted once.
    _contact("Partner Pam", "pam@partner.test", "p@partner.test", company=partner,
             job_title="Partner manager")  # fmt: skip
    page = client.get(url, {"q": "partner"}).text
    assert "2 contacts matching" in page and page.count(">Partner Pam<") == 1
    partial = client.get(url, {"q": "ann"}, HTTP_HX_TARGET="crm-list", **HTMX).text
    assert partial.lstrip().startswith('<div id="crm-list">') and "<h1>" not in partial


def test_it_pages_the_lists_and_keeps_the_search(client, db):
    for n in range(55):
        _contact(f"Person {n:02}")
    client.force_login(UserFactory())
    first = client.get(reverse("crm:contacts"), {"q": "person"}).text
    assert "Page 1 of 2" in first and "?page=2&amp;q=person" in first
    second = client.get(reverse("crm:contacts"), {"q": "person", "page": 2}).text
    assert len(re.findall(r'href="/contacts/\d+/"', second)) == 5


def test_it_lists_a_page_of_contacts_in_the_same_queries_however_many(client, db):
    mine = EmailAccountFactory()
    client.force_login(mine.owner)

    def fill(count):
        for n in range(count):
            contact = _contact(f"P{Contact.objects.count()}", f"p{Contact.objects.count()}@x.test")
            _email(mine, f"mail {contact.pk}", days=n, contacts=[contact])

    fill(3)
    with CaptureQueriesContext(connection) as few:
        client.get(reverse("crm:contacts"))
    fill(20)
    with CaptureQueriesContext(connection) as many:
        client.get(reverse("crm:contacts"))
    assert len(many) == len(few)


def test_it_lists_companies_by_the_latest_email_with_their_contacts(client, db):
    mine = EmailAccountFactory()
    acme = Company.objects.create(name="Acme", web_domain="acme.test")
    zeta = Company.objects.create(name="Zeta", web_domain="zeta.test")
    Company.objects.create(name="Quiet Co")
    _contact("Ann", company=acme)
    _contact("Alf", company=acme)
    _email(mine, "To Zeta", days=1, companies=[zeta])
    _email(mine, "To Acme", days=5, companies=[acme])
    _email(EmailAccountFactory(), "Acme secret", days=0, companies=[acme])
    client.force_login(mine.owner)
    page = client.get(reverse("crm:companies")).text
    assert _names(page, ["Quiet Co", "Acme", "Zeta"]) == ["Zeta", "Acme", "Quiet Co"]
    assert "secret" not in page
    assert (
        f'<tr>\n<td><a href="/companies/{acme.pk}/">Acme</a></td>\n'
        '<td data-label="Web domain">acme.test</td>\n<td data-label="Contacts">2</td>\n'
        '<td data-label="Latest email"><a href='
    ) in page
    # Escaped: a name and a domain as typed in the admin.
    Company.objects.create(name="<b>Bold</b> & Co", web_domain="<i>.test")
    page = client.get(reverse("crm:companies")).text
    assert (
        '">&lt;b&gt;Bold&lt;/b&gt; &amp; Co</a></td>\n'
        '<td data-label="Web domain">&lt;i&gt;.test</td>\n<td data-label="Contacts">0</td>'
    ) in page
    found = client.get(reverse("crm:companies"), {"q": "ZETA.TEST"}).text
    assert ">Zeta<" in found and ">Acme<" not in found


def test_it_shows_emails_meetings_and_tasks_on_one_timeline_newest_first(client, db):
    mine = EmailAccountFactory()
    acme = Company.objects.create(name="Acme", web_domain="acme.test")
    ann = _contact("Ann", "ann@acme.test", company=acme)
    _email(mine, "Offer", days=3, contacts=[ann], companies=[acme])
    meeting = Activity.objects.create(
        account=mine, kind="meeting", external_id="m1", subject="Kick-off",
        starts_at=NOW - timedelta(days=1),
    )  # fmt: skip
    task = Activity.objects.create(
        account=mine, kind="task", external_id="t1", subject="Send the contract",
        due_on=(NOW - timedelta(days=2)).date(), status="NotStarted",
    )  # fmt: skip
    for activity in (meeting, task):
        activity.contacts.add(ann)
        activity.companies.add(acme)
    theirs = Activity.objects.create(
        account=EmailAccountFactory(), kind="meeting", external_id="m2", subject="Their lunch",
        starts_at=NOW,
    )  # fmt: skip
    theirs.contacts.add(ann)
    client.force_login(mine.owner)
    for url in (reverse("crm:contact", args=[ann.pk]), reverse("crm:company", args=[acme.pk])):
        page = client.get(url).text
        order = [page.index(s) for s in ("Kick-off", "Send the contract", "Offer")]
        assert order == sorted(order), url
        assert "Their lunch" not in page
        # Exchange's "NotStarted" as a person says it.
        assert "· Not started</span>" in page and "NotStarted" not in page
    assert 'href="/contacts/' in client.get(reverse("crm:company", args=[acme.pk])).text


def test_it_pages_a_timeline(client, db):
    mine = EmailAccountFactory()
    ann = _contact("Ann")
    for n in range(35):
        _email(mine, f"Mail {n:02}", days=n, contacts=[ann])
    client.force_login(mine.owner)
    url = reverse("crm:contact", args=[ann.pk])
    first = client.get(url).text
    assert "Mail 00" in first and "Mail 29" in first and "Mail 30" not in first
    older = html.unescape(re.search(r'href="\?after=([^"&]+)"', first).group(1))
    second = client.get(url, {"after": unquote(older)}).text
    assert "Mail 30" in second and "Mail 34" in second and "Mail 29" not in second
    assert "?after=" not in second and ">Newest</a>" in second


def test_it_shows_whom_an_email_is_linked_to_and_links_and_unlinks_by_hand(client, db):
    mine = EmailAccountFactory()
    acme = Company.objects.create(name="Acme", web_domain="acme.test")
    other = Company.objects.create(name="Other Inc", web_domain="other.test")
    ann = _contact("Ann", "ann@acme.test", company=acme)
    bob = _contact("Bob", "bob@elsewhere.test")
    email = _email(mine, "Offer", contacts=[ann], companies=[acme])
    client.force_login(mine.owner)
    page = client.get(reverse("sync:email", args=[email.pk])).text
    assert f'href="/contacts/{ann.pk}/">Ann</a>' in page
    assert f'href="/companies/{acme.pk}/">Acme</a>' in page

    url = reverse("crm:email_links", args=[email.pk])
    found = client.get(url, {"link": "o"}, HTTP_HX_TARGET="link-candidates", **HTMX).text
    # Those it is linked to already are not offered again.
    assert "Link to Bob &lt;bob@elsewhere.test&gt;" in found
    assert "Link to Other Inc (company, other.test)" in found
    assert "Link to Ann" not in found and "Link to Acme" not in found

    answer = client.post(url, {"action": "link", "contact": bob.pk}, **HTMX)
    assert answer.text.lstrip().startswith('<section class="email-links" id="links">')
    assert f'href="/contacts/{bob.pk}/">Bob</a>' in answer.text
    client.post(url, {"action": "link", "company": other.pk})  # without JavaScript
    client.post(url, {"action": "link", "company": other.pk})  # twice: nothing more
    response = client.post(url, {"action": "unlink", "contact": ann.pk})
    assert response.status_code == 302 and response.url.endswith("#links")
    assert set(email.contacts.all()) == {bob}
    assert set(email.companies.all()) == {acme, other}
    changes = list(EmailLinkChange.objects.order_by("pk").values_list("action", "kind", "target"))
    assert changes == [
        ("linked", "contact", "Bob"),
        ("linked", "company", "Other Inc"),
        ("unlinked", "contact", "Ann"),
    ]
    assert EmailLinkChange.objects.filter(actor=mine.owner, subject="Offer").count() == 3
    page = client.get(reverse("sync:email", args=[email.pk])).text
    assert "unlinked contact Ann" in page
    # On the timelines accordingly.
    assert "Offer" not in client.get(reverse("crm:contact", args=[ann.pk])).text
    assert "Offer" in client.get(reverse("crm:contact", args=[bob.pk])).text


def test_it_refuses_a_link_to_nothing_and_hides_the_email_from_others(client, db):
    email = _email(EmailAccountFactory(), "Private")
    ann = _contact("Ann")
    url = reverse("crm:email_links", args=[email.pk])
    client.force_login(email.account.owner)
    assert client.post(url, {"action": "link"}).status_code == 400
    assert client.post(url, {"action": "link", "contact": 999999}).status_code == 404
    assert client.post(url, {"action": "nope", "contact": ann.pk}).status_code == 400
    client.force_login(UserFactory())
    assert client.post(url, {"action": "link", "contact": ann.pk}).status_code == 404
    assert client.get(url, {"link": "ann"}).status_code == 404
    assert not email.contacts.exists() and not EmailLinkChange.objects.exists()


def test_it_finds_candidates_without_javascript(client, db):
    email = _email(EmailAccountFactory(), "Offer")
    _contact("Ann Archer", "ann@archer.test")
    client.force_login(email.account.owner)
    response = client.get(reverse("crm:email_links", args=[email.pk]), {"link": "archer"})
    assert response.status_code == 302
    page = client.get(response.url).text
    assert "Link to Ann Archer &lt;ann@archer.test&gt;" in page
    assert 'value="archer"' in page


def test_it_keeps_a_manual_unlink_when_the_sync_sees_the_email_again(synced_mailbox):
    from sync.services import mailbox_sync
    from tests.mailbox import make_message

    account, mailbox = synced_mailbox
    peter = _contact("Peter Partner", "peter@partner.test")
    raw = make_message(subject="Offer")
    mailbox.append("INBOX", raw)
    mailbox_sync(account_id=account.pk)
    email = Email.objects.get(account=account, subject="Offer")
    assert list(email.contacts.all()) == [peter]  # linked by the sync

    from sync.links import email_link_change

    email_link_change(email=email, actor=account.owner, link=False, contact_id=peter.pk)
    mailbox.append("Archive", raw)  # a copy in another folder: the same email
    mailbox_sync(account_id=account.pk)
    assert email.locations.count() == 2
    assert not email.contacts.exists()


def test_it_lists_no_contacts_and_no_companies_on_a_fresh_install(client, db):
    """A fresh install: the user's emails are there, the CRM has no one yet."""
    mine = EmailAccountFactory()
    _email(mine, "Hello", days=1)
    client.force_login(mine.owner)
    contacts = client.get(reverse("crm:contacts"))
    assert contacts.status_code == 200 and "No contacts yet" in contacts.text
    companies = client.get(reverse("crm:companies"), {"page": 2})
    assert companies.status_code == 200 and "No companies yet" in companies.text
    assert client.get(reverse("crm:contacts"), {"page": 2}, **HTMX).status_code == 200


def test_it_links_the_emails_downloaded_before_an_address_given_by_hand(
    admin_client, db, monkeypatch, django_capture_on_commit_callbacks
):
    """Not to a contact or company a person unlinked it from by hand: the download would
    not link it again either. By a worker, once the save committed."""
    from sync import services

    queued = []
    monkeypatch.setattr(services, "publish", lambda task, *a: queued.append((task, a)) or True)
    mine = EmailAccountFactory()
    acme = Company.objects.create(name="Acme", web_domain="acme.test")
    carl = _contact("Carl", "carl@x.test", company=acme)
    unlinked = _email(mine, "Unlinked by hand")
    unlinked_company = _email(mine, "Unlinked from the company by hand")
    Email.objects.filter(pk__in=[unlinked.pk, unlinked_company.pk]).update(
        from_address="carl@x.test"
    )
    EmailLinkChange.objects.create(
        email=unlinked, action="unlinked", kind="contact", target_id=carl.pk, target="Carl"
    )
    EmailLinkChange.objects.create(
        email=unlinked_company, action="unlinked", kind="company", target_id=acme.pk,
        target="Acme",
    )  # fmt: skip
    before = _email(mine, "From his old address")
    Email.objects.filter(pk=before.pk).update(from_address="carl@x.test")
    later = _email(mine, "To his new address")
    Email.objects.filter(pk=later.pk).update(to=[{"name": "", "address": "carl@new.test"}])
    [old] = carl.addresses.all()
    form = {
        "name": "Carl", "job_title": "", "phone": "", "company": str(acme.pk),
        "addresses-TOTAL_FORMS": "2", "addresses-INITIAL_FORMS": "1",
        "addresses-MIN_NUM_FORMS": "0", "addresses-MAX_NUM_FORMS": "1000",
        "addresses-0-id": str(old.pk), "addresses-0-contact": str(carl.pk),
        "addresses-0-address": "carl@x.test",
        "addresses-1-id": "", "addresses-1-contact": str(carl.pk),
        "addresses-1-address": " Carl@NEW.test ",  # typed as it came
    }  # fmt: skip
    url = reverse("admin:crm_contact_change", args=[carl.pk])
    with django_capture_on_commit_callbacks(execute=True):
        answer = admin_client.post(url, form)
    assert answer.status_code == 302, answer.text
    assert ContactAddress.objects.filter(address="carl@new.test", contact=carl).exists()
    [(task, args)] = queued
    task(*args)  # what the worker does
    assert set(carl.emails.all()) == {before, later, unlinked_company}
    assert set(acme.emails.all()) == {before, later, unlinked}
    # Saved again with nothing of its addresses or company changed: nothing is asked.
    form |= {
        "phone": "+49 1",
        "addresses-INITIAL_FORMS": "2",
        "addresses-1-id": str(ContactAddress.objects.get(address="carl@new.test").pk),
        "addresses-1-address": "carl@new.test",
    }
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_client.post(url, form).status_code == 302
    assert len(queued) == 1
    # Two spellings of one address in one save: the form says so (it failed the save).
    form |= {
        "addresses-TOTAL_FORMS": "4", "addresses-2-id": "", "addresses-2-contact": str(carl.pk),
        "addresses-2-address": "Dup@new.test", "addresses-3-id": "",
        "addresses-3-contact": str(carl.pk), "addresses-3-address": "dup@new.test",
    }  # fmt: skip
    answer = admin_client.post(url, form)
    assert answer.status_code == 200
    assert "Please correct the duplicate data for address" in answer.text


def test_it_links_a_contact_s_emails_at_once_when_no_worker_can_be_asked(
    admin_client, db, monkeypatch, django_capture_on_commit_callbacks
):
    """The task queue down: done after the save rather than never (nothing sweeps it)."""
    from sync import services

    monkeypatch.setattr(services, "publish", lambda task, *args: False)
    mine = EmailAccountFactory()
    wrote = _email(mine, "Sent by this app, To as typed")
    Email.objects.filter(pk=wrote.pk).update(to=[{"name": "", "address": "Dora@Z.test"}])
    form = {
        "name": "Dora", "job_title": "", "phone": "", "company": "",
        "addresses-TOTAL_FORMS": "1", "addresses-INITIAL_FORMS": "0",
        "addresses-MIN_NUM_FORMS": "0", "addresses-MAX_NUM_FORMS": "1000",
        "addresses-0-id": "", "addresses-0-address": "dora@z.test",
    }  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        answer = admin_client.post(reverse("admin:crm_contact_add"), form)
    assert answer.status_code == 302, answer.text
    dora = Contact.objects.get(name="Dora")
    assert list(dora.emails.all()) == [wrote]


def test_it_says_a_task_s_status_as_a_person_does():
    labels = {
        status: Activity(status=status).status_label
        for status in ("NotStarted", "inProgress", "completed", "WaitingOnOthers", "SomethingNew")
    }
    assert labels == {
        "NotStarted": "Not started", "inProgress": "In progress", "completed": "Completed",
        "WaitingOnOthers": "Waiting on others", "SomethingNew": "Something new",
    }  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_it_puts_the_addresses_stored_before_in_lower_case_unless_another_holds_it():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("crm", "0005_job_title_trigram_index")])
    try:
        carl, twin = Contact.objects.create(name="Carl"), Contact.objects.create(name="Twin")
        with connection.cursor() as cursor:
            for contact, address in (
                (carl, "Carl@X.test"),
                (twin, "Dup@Y.test"),
                (twin, "dup@y.test"),
            ):
                cursor.execute(
                    "INSERT INTO crm_contactaddress (contact_id, address) VALUES (%s, %s)",
                    [contact.pk, address],
                )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    stored = set(ContactAddress.objects.values_list("address", flat=True))
    assert stored == {"carl@x.test", "Dup@Y.test", "dup@y.test"}


def test_it_links_an_email_sent_to_an_address_typed_in_capitals(db):
    """This app's own sent emails keep their recipients as typed."""
    from sync.links import emails_link

    carl = _contact("Carl", "carl@x.test")
    sent = _email(EmailAccountFactory(), "Sent to Carl@X.test")
    emails_link(emails=[(sent.pk, {"Carl@X.test": ""}, "me@example.test")], own_domains=set())
    assert list(carl.emails.all()) == [sent]
