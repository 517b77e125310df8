"""Writing an email in headless Chromium from a shared mailbox, through the suite's real
SMTP server and Dovecot."""

import email
import email.policy

import pytest
from playwright.sync_api import expect

from crm.models import Contact, ContactAddress
from sharing.models import MailboxGrant
from tests.browser import SCREENSHOTS
from tests.factories import EmailAccountFactory, UserFactory
from tests.test_browser_wizard import _sign_in
from tests.test_signatures import PNG


@pytest.fixture
def deliver_at_once(monkeypatch):
    # No worker in this test: the tasks' services run right after the request commits.
    from sending import tasks
    from sending.services import outgoing_copy_store, outgoing_send

    monkeypatch.setattr(tasks.send_email, "delay", lambda pk: outgoing_send(outgoing_id=pk))
    monkeypatch.setattr(
        tasks.store_sent_copy, "delay", lambda pk: outgoing_copy_store(outgoing_id=pk)
    )


def test_it_sends_from_a_shared_mailbox_with_its_signature_image(
    live_server, page, synced_mailbox, outbox, deliver_at_once
):
    shared, mailbox = synced_mailbox
    shared.display_name = "Sales Team"
    shared.shared_access = True
    shared.signature_html = (
        f'<p>Sales Team</p><p><img src="data:image/png;base64,{PNG}" alt="Logo"></p>'
    )
    shared.save()
    seller = UserFactory()
    EmailAccountFactory(owner=seller, address="seller@own.test", is_default_sender=True)
    MailboxGrant.objects.create(account=shared, user=seller, can_send=True)
    contact = Contact.objects.create(name="Peter Partner")
    ContactAddress.objects.create(contact=contact, address="peter@partner.test")

    _sign_in(page, live_server, seller)
    page.goto(f"{live_server.url}/contacts/{contact.pk}/")
    page.click("text=Write email")
    expect(page.locator("#id_to")).to_have_value("peter@partner.test")
    expect(page.locator("#id_sender option:checked")).to_have_text("seller@own.test")
    page.select_option("#id_sender", label=f"Sales Team <{shared.address}>")
    page.fill("#id_subject", "Our offer")
    page.fill("#id_body", "Hello Peter,\n\nplease find our offer.")
    page.click("button:has-text('Send')")

    expect(page.locator("#outgoing-status")).to_contain_text("Sent")
    expect(page.locator("#sent-copy")).to_have_text("A copy is in the Sent folder.")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "sent.png", full_page=True)
    page.goto(f"{live_server.url}/contacts/{contact.pk}/")
    expect(page.locator(".timeline")).to_contain_text("Our offer")

    [envelope] = outbox.messages
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert message["From"] == f"Sales Team <{shared.address}>"
    image = next(p for p in message.walk() if p.get_content_type() == "image/png")
    assert (
        f'src="cid:{image["Content-ID"].strip("<>")}"' in message.get_body(("html",)).get_content()
    )
    with mailbox.client() as client:
        client.select_folder("Sent")
        assert len(client.search(["SUBJECT", "Our offer"])) == 1


def test_it_sends_nothing_on_enter_and_asks_before_leaving_what_was_written(live_server, page):
    from sending.models import OutgoingEmail

    account = EmailAccountFactory()
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/compose/?to=peter@partner.test")
    page.fill("#id_subject", "Offer")
    page.press("#id_subject", "Enter")  # the browser's implicit submission
    page.press("#id_to", "Enter")
    page.wait_for_timeout(500)
    assert not OutgoingEmail.objects.exists()
    expect(page.locator("#id_subject")).to_have_value("Offer")

    asked = []
    page.on("dialog", lambda dialog: (asked.append(dialog.type), dialog.dismiss()))
    page.click("nav >> text=Contacts")
    page.wait_for_timeout(500)
    assert asked == ["beforeunload"] and page.url.endswith("/compose/?to=peter@partner.test")
    # A send that fails (the server's error, no answer) keeps the question.
    page.route("**/compose/", lambda route: route.fulfill(status=500, body="broken"))
    page.fill("#id_body", "Here it is.")
    page.click("button:has-text('Send')")
    page.wait_for_timeout(500)
    page.unroute("**/compose/")
    page.click("nav >> text=Contacts")
    page.wait_for_timeout(500)
    assert asked == ["beforeunload"] * 2
    # Sent: nothing is asked on the way to its page.
    page.click("button:has-text('Send')")
    page.wait_for_url("**/outgoing/*/")
    assert asked == ["beforeunload"] * 2
