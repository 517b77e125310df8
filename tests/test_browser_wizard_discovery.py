"""The wizard's discovery note in headless Chromium (issue 20): a company domain behind a
mail-security gateway, its SPF hint offered as a suggestion the user confirms."""

from playwright.sync_api import expect

from providers.models import ProviderDomain
from tests.factories import UserFactory
from tests.test_browser_wizard import _shot, _sign_in
from tests.test_wizard_discovery import web, wizard_discovery, zone, zone_server  # noqa: F401


def test_it_shows_the_gateway_and_lets_the_user_confirm_the_suggestion(
    live_server,
    page,
    wizard_discovery,  # noqa: F811
):
    wizard_discovery.mx("kanzlei-berg.de", "eu-smtp-inbound-1.mimecast.com")
    wizard_discovery.txt("kanzlei-berg.de", "v=spf1 include:spf.protection.outlook.com ~all")
    _sign_in(page, live_server, UserFactory())
    page.click("text=New email account")
    page.fill("#id_address", "anna@kanzlei-berg.de")
    page.click("button:has-text('Next')")

    suggestion = page.locator("form.suggestion")
    expect(suggestion).to_contain_text("lets Microsoft 365 send its email")
    expect(suggestion).to_contain_text("Is your mailbox at Microsoft 365?")
    page.click("#discovery-trace summary")
    expect(page.locator("#discovery-trace")).to_contain_text(
        "first passes through Mimecast, a mail-security service"
    )
    _shot(page, "discovery-suggestion")
    assert not ProviderDomain.objects.filter(domain="kanzlei-berg.de").exists()

    page.click("button:has-text('Yes, use Microsoft 365')")
    expect(page.locator("#provider-name")).to_have_text("Microsoft 365")
    expect(page.locator(".via")).to_contain_text(
        "suggested by your domain's SPF record, confirmed by you"
    )
    _shot(page, "discovery-confirmed")
