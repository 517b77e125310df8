"""A Microsoft 365 mailbox through Microsoft Graph in headless Chromium: added with "Sign
in with …" against the suite's OAuth server (standing in for Microsoft's identity
platform), its meetings imported through the settings page and seen on a contact's
timeline. Graph is tests/servers/graph.py, a protocol fake (not Microsoft's service);
nothing leaves the machine."""

from datetime import UTC, datetime, timedelta

from playwright.sync_api import expect

from accounts.models import EmailAccount
from crm.models import Company, Contact, ContactAddress
from sync.models import Email, SyncRun
from sync.services import mailbox_sync
from tests.browser import SCREENSHOTS, htmx_settled
from tests.factories import UserFactory
from tests.mailbox import make_message
from tests.test_browser_wizard import _sign_in


def test_it_adds_a_microsoft_365_mailbox_and_shows_its_meetings_on_a_timeline(
    live_server, browser, graph_provider, graph_server
):
    address = "mia@m365.test"
    graph_server.add_user(address, name="Mia Microsoft")
    graph_server.add_message(
        "inbox", make_message(subject="Quarterly figures", to=address), mailbox=address
    )
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    graph_server.add_event(
        "Contract signing", start, start + timedelta(hours=1), location="Room 4",
        attendees=[("Peter Partner", "peter@partner.test")], mailbox=address,
    )  # fmt: skip
    company = Company.objects.create(name="Partner GmbH", web_domain="partner.test")
    peter = Contact.objects.create(name="Peter Partner", company=company)
    ContactAddress.objects.create(contact=peter, address="peter@partner.test")
    user = UserFactory()
    # The authorization server's certificate is the suite's CA's, which this browser does
    # not know; the app's own calls to it and to Graph are verified against that CA.
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(15_000)

    _sign_in(page, live_server, user)
    page.goto(
        f"{live_server.url}/mailboxes/new/sign-in/?address={address}&provider={graph_provider.pk}"
    )
    page.click(f"button:has-text('Sign in with {graph_provider.name}')")
    page.wait_for_url(f"{live_server.url}/email/")
    expect(page.locator(".notification")).to_contain_text(f"{address} is connected.")
    account = EmailAccount.objects.get(owner=user, address=address)
    assert account.provider == graph_provider and account.display_name == "Mia Microsoft"

    # The worker's part, run here: the first download.
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.SUCCEEDED
    assert Email.objects.filter(account=account, subject="Quarterly figures").exists()

    page.goto(f"{live_server.url}{account.get_absolute_url()}")
    section = page.locator("#settings-meetings")
    expect(section).to_contain_text("Meetings and tasks")
    section.get_by_role("checkbox", name="Import meetings and tasks").check()
    section.locator("button:has-text('Save')").click()
    htmx_settled(page)
    expect(section).to_contain_text("Importing now")
    account.refresh_from_db()
    assert account.meetings_import
    assert mailbox_sync(account_id=account.pk, items_only=True).state == SyncRun.State.SUCCEEDED

    page.goto(f"{live_server.url}/contacts/{peter.pk}/")
    expect(page.locator("main")).to_contain_text("Contract signing")
    expect(page.locator("main")).to_contain_text("Room 4")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "graph-meeting-on-timeline.png", full_page=True)
    context.close()
