from django.urls import reverse

from crm.models import Company, Contact, ContactAddress
from sync.models import Email
from tests.factories import EmailAccountFactory


def test_it_lists_a_contacts_emails_from_the_users_own_mailboxes(client, db):
    company = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
    contact = Contact.objects.create(name="Peter Partner", company=company)
    ContactAddress.objects.create(contact=contact, address="peter@partner.test")
    mine = EmailAccountFactory()
    email = Email.objects.create(account=mine, message_key="a", subject="Offer")
    email.contacts.add(contact)
    email.companies.add(company)
    theirs = Email.objects.create(account=EmailAccountFactory(), message_key="b", subject="Secret")
    theirs.contacts.add(contact)
    theirs.companies.add(company)

    client.force_login(mine.owner)
    for url in (
        reverse("crm:contact", args=[contact.pk]),
        reverse("crm:company", args=[company.pk]),
    ):
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
