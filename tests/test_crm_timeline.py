from django.urls import reverse

from crm.models import Company, Contact, ContactAddress
from sync.models import Email
from tests.factories import EmailAccountFactory


def _linked(email, contact, company):
    email.contacts.add(contact)
    email.companies.add(company)
    return email


def _timelines(contact, company):
    return (reverse("crm:contact", args=[contact.pk]), reverse("crm:company", args=[company.pk]))


def test_it_lists_a_contacts_emails_from_the_users_own_mailboxes(client, db):
    company = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
    contact = Contact.objects.create(name="Peter Partner", company=company)
    ContactAddress.objects.create(contact=contact, address="peter@partner.test")
    mine = EmailAccountFactory()
    _linked(Email.objects.create(account=mine, message_key="a", subject="Offer"), contact, company)
    theirs = Email.objects.create(account=EmailAccountFactory(), message_key="b", subject="Secret")
    _linked(theirs, contact, company)

    client.force_login(mine.owner)
    for url in _timelines(contact, company):
        page = client.get(url).text
        assert "Offer" in page
        assert "Secret" not in page
    assert "peter@partner.test" in client.get(reverse("crm:contact", args=[contact.pk])).text


def test_it_offers_to_write_to_the_contact_or_the_companys_contacts(client, db):
    from urllib.parse import quote

    company = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
    for name, addresses in (
        ("Ann", ["ann@partner.test", "ann.b@partner.test"]),
        ("Bob", ["bob@partner.test"]),
    ):
        contact = Contact.objects.create(name=name, company=company)
        for address in addresses:
            ContactAddress.objects.create(contact=contact, address=address)
    ann = Contact.objects.get(name="Ann")
    client.force_login(EmailAccountFactory().owner)

    contact_page = client.get(reverse("crm:contact", args=[ann.pk])).text
    assert f"/compose/?to={quote('ann.b@partner.test')}" in contact_page
    company_page = client.get(reverse("crm:company", args=[company.pk])).text
    assert f"/compose/?to={quote('ann.b@partner.test, bob@partner.test')}" in company_page


def test_it_shows_each_email_entry_s_local_date_subject_and_sender_escaped(client, db, settings):
    from datetime import UTC, datetime

    settings.TIME_ZONE = "America/New_York"
    company = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
    contact = Contact.objects.create(name="Peter Partner", company=company)
    mine = EmailAccountFactory()
    offer = Email.objects.create(
        account=mine, message_key="a", subject="<b>Offer</b> & more", from_name="Pe <p@x>",
        from_address="peter@partner.test", sent_at=datetime(2026, 11, 30, 12, tzinfo=UTC),
    )  # fmt: skip
    blank = Email.objects.create(account=mine, message_key="b", from_address="peter@partner.test")
    for email in (offer, blank):
        _linked(email, contact, company)
    client.force_login(mine.owner)
    for url in _timelines(contact, company):
        page = client.get(url).text
        # 12:00 UTC is 7 a.m. in New York; subject and sender escaped, the email linked.
        assert (
            '<li class="entry-email"><span class="muted">30 Nov 2026, 07:00</span>\n'
            f'<span class="tag">Email</span> <a href="{offer.get_absolute_url()}">'
            "&lt;b&gt;Offer&lt;/b&gt; &amp; more</a>\n"
            '<span class="muted">from Pe &lt;p@x&gt;</span></li>'
        ) in page
        # Undated (last), no subject, no name: its address.
        assert (
            '<li class="entry-email"><span class="muted"></span>\n'
            f'<span class="tag">Email</span> <a href="{blank.get_absolute_url()}">'
            "(no subject)</a>\n"
            '<span class="muted">from peter@partner.test</span></li>'
        ) in page
        assert page.index(">&lt;b&gt;Offer") < page.index(">(no subject)<")
