"""'Sign in with Google' in headless Chromium, against the suite's OAuth 2.0 server
(standing in for Google's), Dovecot and SMTP server; nothing leaves the machine."""

from playwright.sync_api import expect

from accounts.models import EmailAccount
from tests.browser import SCREENSHOTS
from tests.factories import UserFactory
from tests.test_browser_wizard import _sign_in


def test_it_adds_a_mailbox_with_sign_in_with_google(
    live_server, browser, oauth_provider, dovecot, smtp_servers, synced_mailbox
):
    pooled, _mailbox = synced_mailbox
    address = pooled.address
    pooled.delete()
    provider = oauth_provider
    provider.name, provider.security_guide = "Google (test)", "gmail"
    provider.imap_host, provider.imap_port, provider.imap_security = (
        "localhost",
        dovecot.imaps_port,
        "ssl",
    )
    provider.smtp_host, provider.smtp_port = "localhost", smtp_servers["starttls"].port
    provider.smtp_security = "starttls"
    provider.save()
    user = UserFactory()
    # The authorization server's certificate is the suite's CA's, which this browser does
    # not know; the app's own calls to it are verified against that CA.
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()

    _sign_in(page, live_server, user)
    page.goto(f"{live_server.url}/mailboxes/new/sign-in/?address={address}&provider={provider.pk}")
    page.click("button:has-text('Sign in with Google (test)')")
    page.wait_for_url(f"{live_server.url}/email/")

    expect(page.locator(".messages")).to_contain_text(f"{address} is connected.")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "oauth-connected.png", full_page=True)
    account = EmailAccount.objects.get(owner=user, address=address)
    assert account.uses_oauth
    context.close()
