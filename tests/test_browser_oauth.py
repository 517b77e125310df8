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

    expect(page.locator(".notification")).to_contain_text(f"{address} is connected.")
    # Said once: no message above the notification repeats it.
    expect(page.locator("main")).to_contain_text("is connected", use_inner_text=True)
    assert page.locator("main").inner_text().count("is connected") == 1
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "oauth-connected.png", full_page=True)
    account = EmailAccount.objects.get(owner=user, address=address)
    assert account.uses_oauth
    context.close()


def test_it_reconnects_a_mailbox_from_the_banner_in_one_click(
    live_server, browser, oauth_mailbox, oauth_server
):
    from sync.models import MailboxSync, SyncRun
    from sync.services import mailbox_sync

    account, _mailbox = oauth_mailbox
    oauth_server.expire_access_tokens()
    oauth_server.state.refresh_tokens.clear()  # consent revoked at the provider
    assert mailbox_sync(account_id=account.pk).state == SyncRun.State.FAILED
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()

    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/email/")
    banner = page.locator(f"#sign-in-alert-{account.pk}")
    expect(banner).to_contain_text("needs you to sign in again")
    # No advice about a password the mailbox does not have.
    expect(page.locator(f"#sync-status-{account.pk}")).to_contain_text("Reconnect")
    expect(page.locator(f"#sync-status-{account.pk}")).not_to_contain_text("password")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "oauth-reconnect-banner.png", full_page=True)
    banner.locator("button:has-text('Reconnect')").click()
    page.wait_for_url(f"{live_server.url}/mailboxes/{account.pk}/")

    expect(page.locator(".messages")).to_contain_text("is connected again")
    expect(page.locator(".notification.warning")).to_have_count(0)
    account.refresh_from_db()
    assert account.reconnect_needed_at is None
    assert MailboxSync.objects.get(account=account).health == MailboxSync.Health.OK
    context.close()


def test_it_signs_in_with_the_provider_after_the_wizard_swapped_in_its_step(
    live_server, browser, oauth_provider, dovecot, smtp_servers, synced_mailbox
):
    """The production policy lets forms post to this site only; the sign-in step that
    sends the browser on to the provider loads as a page of its own, whose policy adds
    that provider, even when the wizard reaches it by an htmx swap. Any refusal on the
    way fails the test (tests/browser.py)."""
    from providers.models import ProviderDomain

    pooled, _mailbox = synced_mailbox
    address = pooled.address
    pooled.delete()
    provider = oauth_provider
    provider.name = "Corp SSO"
    provider.imap_host, provider.imap_port, provider.imap_security = (
        "localhost", dovecot.imaps_port, "ssl",
    )  # fmt: skip
    provider.smtp_host, provider.smtp_port = "localhost", smtp_servers["starttls"].port
    provider.smtp_security = "starttls"
    provider.save()
    domain = address.split("@")[1]
    ProviderDomain.objects.update_or_create(domain=domain, defaults={"provider": provider})
    user = UserFactory()
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()

    _sign_in(page, live_server, user)
    page.goto(f"{live_server.url}/mailboxes/new/")
    page.fill("#id_address", address)
    page.click("button:has-text('Next')")
    expect(page.locator("#provider-name")).to_have_text("Corp SSO")
    page.click("button:has-text('Sign in with Corp SSO')")
    page.wait_for_url(f"{live_server.url}/email/")

    expect(page.locator(".notification")).to_contain_text(f"{address} is connected.")
    assert EmailAccount.objects.get(owner=user, address=address).uses_oauth
    context.close()
