"""Issue 17, point 5 in headless Chromium: an email's inline image shows in its frame,
from the app, and only real attachments are listed; the app's own signature logo too."""

from playwright.sync_api import expect

from sync.models import Email
from sync.services import mailbox_sync
from tests.browser import SCREENSHOTS
from tests.test_browser_sending import deliver_at_once  # noqa: F401 (a fixture)
from tests.test_browser_wizard import _sign_in
from tests.test_email_inline import png, related_message


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"issue17-5-{name}.png", full_page=True)


def _image_loaded(page, alt: str) -> dict:
    image = page.frame_locator("iframe.email-body").locator(f"img[alt='{alt}']")
    expect(image).to_have_count(1)
    image.evaluate("i => i.decode()")  # rejects if the image cannot be loaded
    return image.evaluate("i => ({width: i.naturalWidth, height: i.naturalHeight, src: i.src})")


def test_it_shows_a_downloaded_emails_inline_image_and_lists_only_its_attachment(
    live_server, page, synced_mailbox
):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", related_message())
    mailbox_sync(account_id=account.pk)
    email = Email.objects.get(account=account, subject="Newsletter with a logo")

    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/emails/{email.pk}/")
    loaded = _image_loaded(page, "Partner logo")
    assert (loaded["width"], loaded["height"]) == (120, 40)
    assert loaded["src"].startswith(f"{live_server.url}/emails/{email.pk}/inline/")
    attachments = page.locator("article.email ul").last
    expect(attachments).to_contain_text("offer.pdf")
    expect(page.locator("article.email")).not_to_contain_text("logo.png")
    _shot(page, "inline-image")


def test_it_shows_the_apps_own_signature_logo_in_a_sent_email_and_lists_no_attachment(
    live_server,
    page,
    synced_mailbox,
    outbox,
    deliver_at_once,  # noqa: F811
):
    import base64

    account, _mailbox = synced_mailbox
    logo = base64.b64encode(png(90, 30, (0xC0, 0x30, 0x30))).decode()
    account.signature_html = (
        f'<p>Alice, Sales</p><p><img src="data:image/png;base64,{logo}" alt="Our logo"></p>'
    )
    account.save()

    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/compose/?to=peter@partner.test")
    page.fill("#id_subject", "Offer with our logo")
    page.fill("#id_body", "Hello Peter,\n\nhere is our offer.")
    page.click("button:has-text('Send')")
    expect(page.locator("#outgoing-status")).to_contain_text("Sent")
    # The next download finds the Sent copy by its Message-ID: still one email.
    mailbox_sync(account_id=account.pk)
    email = Email.objects.get(account=account, subject="Offer with our logo")
    assert email.locations.filter(folder__path="Sent").exists()

    page.goto(f"{live_server.url}/emails/{email.pk}/")
    loaded = _image_loaded(page, "Our logo")
    assert (loaded["width"], loaded["height"]) == (90, 30)
    expect(page.locator("article.email h2", has_text="Attachments")).to_have_count(0)
    _shot(page, "signature-logo")


def test_it_breaks_a_long_word_inside_the_frame_and_gives_the_email_most_of_the_window(
    live_server, page
):
    from tests.factories import EmailAccountFactory

    account = EmailAccountFactory()
    word = "https://partner.test/" + "x" * 300
    email = Email.objects.create(
        account=account, message_key="k-long", subject="Newsletter",
        html_body=f"<p>Read {word} now.</p>" + "<p>More.</p>" * 200,
    )  # fmt: skip
    _sign_in(page, live_server, account.owner)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}{email.get_absolute_url()}")
    frame = page.locator("iframe.email-body")
    assert frame.bounding_box()["height"] >= 0.7 * 844
    inside = next(f for f in page.frames if f.parent_frame is not None)
    sizes = inside.evaluate("[document.body.scrollWidth, document.body.clientWidth]")
    assert sizes[0] <= sizes[1], sizes
    _shot(page, "long-word")
