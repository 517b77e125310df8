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
