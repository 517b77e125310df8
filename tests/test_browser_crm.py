"""Issue 17, point 2 in headless Chromium: a user granted only "Access emails" on a
shared mailbox finds its mail through Contacts and Companies, opens it, sees whom it is
linked to, and links and unlinks it by hand."""

from datetime import timedelta

from django.utils import timezone
from playwright.sync_api import expect

from crm.models import Activity, Company, Contact, ContactAddress, EmailLinkChange
from sharing.models import MailboxGrant
from sync.models import Email
from tests.browser import SCREENSHOTS
from tests.factories import EmailAccountFactory, UserFactory
from tests.test_browser_wizard import _sign_in


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"issue17-2-{name}.png", full_page=True)


def test_it_lets_an_access_emails_grantee_find_the_shared_mail_through_the_crm(live_server, page):
    shared = EmailAccountFactory(address="sales@example.test", shared_access=True)
    reader = UserFactory(first_name="Rita", last_name="Reader")
    MailboxGrant.objects.create(account=shared, user=reader, can_access=True)
    partner = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
    acme = Company.objects.create(name="Acme", web_domain="acme.test")
    peter = Contact.objects.create(name="Peter Partner", company=partner, job_title="Buyer")
    ContactAddress.objects.create(contact=peter, address="peter@partner.test")
    ann = Contact.objects.create(name="Ann Acme", company=acme)
    ContactAddress.objects.create(contact=ann, address="ann@acme.test")
    now = timezone.now()
    offer = Email.objects.create(
        account=shared, message_key="k1", subject="Offer for Peter", sent_at=now,
        from_address="sales@example.test", to=[{"address": "peter@partner.test", "name": ""}],
    )  # fmt: skip
    offer.contacts.add(peter)
    offer.companies.add(partner)
    older = Email.objects.create(
        account=shared, message_key="k2", subject="Hello Ann", sent_at=now - timedelta(days=2),
        from_address="ann@acme.test",
    )  # fmt: skip
    older.contacts.add(ann)
    older.companies.add(acme)
    meeting = Activity.objects.create(
        account=shared, kind="meeting", external_id="m1", subject="Kick-off with Peter",
        starts_at=now - timedelta(days=1), location="Room 2",
    )  # fmt: skip
    meeting.contacts.add(peter)
    # Someone else's mail about Peter: never shown to the reader.
    secret = Email.objects.create(
        account=EmailAccountFactory(), message_key="k3", subject="Secret about Peter",
        sent_at=now + timedelta(hours=1),
    )  # fmt: skip
    secret.contacts.add(peter)

    _sign_in(page, live_server, reader)
    # The reader's Email page lists nothing of the shared mailbox ("Access emails" only)...
    expect(page.locator("main")).not_to_contain_text("Offer for Peter")
    # ...but Contacts, in the navigation, leads to it.
    page.click("header nav >> text=Contacts")
    rows = page.locator("#crm-list tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("Peter Partner")  # the latest email first
    expect(rows.first).to_contain_text("Offer for Peter")
    expect(page.locator("#crm-list")).not_to_contain_text("Secret")
    _shot(page, "contacts")
    page.fill("#crm-search", "acme")
    expect(page.locator("#crm-count")).to_contain_text("1 contact matching “acme”")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Ann Acme")
    page.fill("#crm-search", "peter@")
    expect(page.locator("#crm-count")).to_contain_text("1 contact matching “peter@”")
    expect(rows.first).to_contain_text("Peter Partner")
    _shot(page, "contacts-search")

    page.click("#crm-list >> text=Peter Partner")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("Offer for Peter")
    expect(timeline).to_contain_text("Kick-off with Peter")
    expect(timeline).not_to_contain_text("Secret")
    _shot(page, "contact-page")

    timeline.locator("text=Offer for Peter").click()
    links = page.locator("#links")
    expect(links.locator("a", has_text="Peter Partner")).to_have_attribute(
        "href", f"/contacts/{peter.pk}/"
    )
    expect(links.locator("a", has_text="Partner Ltd")).to_have_attribute(
        "href", f"/companies/{partner.pk}/"
    )
    # Linked by hand to Acme, unlinked from Peter.
    page.fill("#link-search", "acme")
    page.click("#link-candidates button:has-text('Link to Acme (company, acme.test)')")
    expect(links.locator("a", has_text="Acme")).to_be_visible()
    links.locator("button[aria-label='Unlink Peter Partner']").click()
    expect(links.locator("a", has_text="Peter Partner")).to_have_count(0)
    links.locator("summary:has-text('Changed by hand')").click()
    expect(links).to_contain_text("Rita Reader linked company Acme")
    expect(links).to_contain_text("Rita Reader unlinked contact Peter Partner")
    _shot(page, "email-links")
    assert set(offer.contacts.all()) == set()
    assert set(offer.companies.all()) == {partner, acme}
    assert EmailLinkChange.objects.filter(actor=reader).count() == 2

    page.click("header nav >> text=Companies")
    company_rows = page.locator("#crm-list tbody tr")
    expect(company_rows).to_have_count(2)
    expect(company_rows.first).to_contain_text("Acme")  # the offer is now Acme's too
    expect(company_rows.first).to_contain_text("Offer for Peter")
    _shot(page, "companies")
    page.click("#crm-list >> text=Acme")
    expect(page.locator("#people")).to_contain_text("Ann Acme")
    expect(page.locator("#timeline")).to_contain_text("Offer for Peter")
    expect(page.locator("#timeline")).to_contain_text("Hello Ann")
    _shot(page, "company-page")
