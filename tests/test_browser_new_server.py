"""A manager's "Add new server" in headless Chromium: a draft until the sign-in passes,
nothing for anyone else meanwhile, the same domain again after an abandoned attempt."""

from playwright.sync_api import expect

from providers.models import EmailProvider, ProviderDomain, Source
from tests.browser import SCREENSHOTS
from tests.conftest import MAIL_USERS
from tests.factories import PASSWORD, UserFactory
from tests.servers.dovecot import free_port

CAROL = "carol@elsewhere.test"


def _sign_in(page, live_server, user):
    page.goto(f"{live_server.url}/login/?next=/email/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/email/")


def _shot(page, name):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"new-server-{name}.png", full_page=True)


def _draft_server(page, live_server, *, imap_port: int, smtp_port: int) -> None:
    page.goto(f"{live_server.url}/mailboxes/new/")
    page.fill("#id_address", CAROL)
    page.click("button:has-text('Next')")
    expect(page.locator("[data-step=provider]")).to_be_visible()
    page.click("text=Add new server")
    expect(page.locator("[data-step=new_server]")).to_be_visible()
    page.fill("#id_name", "Elsewhere Mail")
    page.fill("#id_imap_host", "localhost")
    page.select_option("#id_imap_security", "ssl")
    page.fill("#id_imap_port", str(imap_port))
    page.fill("#id_smtp_host", "localhost")
    page.select_option("#id_smtp_security", "starttls")
    page.fill("#id_smtp_port", str(smtp_port))
    page.click("button:has-text('Next: sign in')")
    expect(page.locator("[data-step=sign_in]")).to_be_visible()


def test_it_saves_a_new_server_only_once_a_sign_in_passes(
    live_server, browser, page, dovecot, smtp_servers, mail_trust
):
    smtp_port = smtp_servers["starttls"].port
    closed_port = free_port()  # nothing listens there
    manager = UserFactory(permissions=["providers.manage_email_providers"])
    _sign_in(page, live_server, manager)
    _draft_server(page, live_server, imap_port=closed_port, smtp_port=smtp_port)
    expect(page.locator(".via")).to_contain_text("the server you are adding")
    expect(page.locator("#domain-memory")).to_contain_text(
        "Once you sign in, Elsewhere Mail is added to the email providers and "
        "elsewhere.test is remembered for everyone"
    )
    _shot(page, "1-draft")
    assert not EmailProvider.objects.filter(name="Elsewhere Mail").exists()

    # Meanwhile a colleague looks for a provider for the same domain: no half-made card.
    context = browser.new_context()
    other = context.new_page()
    _sign_in(other, live_server, UserFactory())
    other.goto(f"{live_server.url}/mailboxes/new/provider/?address=dave@elsewhere.test")
    with other.expect_response(lambda r: "q=Elsewhere" in r.url):
        other.fill("#provider-search", "Elsewhere")
    expect(other.locator("#provider-list")).to_contain_text("No provider matches")
    context.close()

    # The manager walks away and starts again with the same domain and name.
    _draft_server(page, live_server, imap_port=closed_port, smtp_port=smtp_port)
    expect(page.locator("body")).not_to_contain_text("already exists")

    page.fill("#id_password", MAIL_USERS[CAROL])
    page.click("button:has-text('Sign in')")
    expect(page.locator("[data-step=sign_in] .error")).to_be_visible()
    _shot(page, "2-check-failed")
    assert not EmailProvider.objects.filter(name="Elsewhere Mail").exists()

    page.click("#edit-draft")
    expect(page.locator("#id_imap_port")).to_have_value(str(closed_port))
    expect(page.locator("#id_name")).to_have_value("Elsewhere Mail")
    page.fill("#id_imap_port", str(dovecot.imaps_port))
    page.click("button:has-text('Next: sign in')")
    expect(page.locator("[data-step=sign_in]")).to_be_visible()
    page.fill("#id_password", MAIL_USERS[CAROL])
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{live_server.url}/email/")
    expect(page.locator(".messages")).to_contain_text(
        "Elsewhere Mail was added to the email providers and elsewhere.test is remembered"
    )
    _shot(page, "3-saved")

    provider = EmailProvider.objects.get(name="Elsewhere Mail")
    assert (provider.source, provider.imap_port) == (Source.ADMIN, dovecot.imaps_port)
    assert ProviderDomain.objects.get(domain="elsewhere.test").provider == provider
    assert provider.accounts.get().address == CAROL


def test_it_shows_the_fields_of_the_chosen_service_type(live_server, browser, page, db):
    # The page's script knows no protocol: it shows what each backend declares
    # (mail.backend.MailBackend.provider_fields) for the type chosen.
    manager = UserFactory(permissions=["providers.manage_email_providers"])
    _sign_in(page, live_server, manager)
    page.goto(f"{live_server.url}/mailboxes/new/")
    page.fill("#id_address", CAROL)
    page.click("button:has-text('Next')")
    page.click("text=Add new server")
    expect(page.locator("[data-step=new_server]")).to_be_visible()
    imap_host, exchange_url = page.locator("#id_imap_host"), page.locator("#id_exchange_url")
    smtp_port, name = page.locator("#id_smtp_port"), page.locator("#id_name")
    expect(imap_host).to_be_visible()
    expect(exchange_url).to_be_hidden()
    page.select_option("#id_service_type", "exchange")
    expect(exchange_url).to_be_visible()
    expect(imap_host).to_be_hidden()
    expect(smtp_port).to_be_hidden()
    expect(name).to_be_visible()  # every type's field stays
    page.select_option("#id_service_type", "imap_smtp")
    expect(imap_host).to_be_visible()
    expect(exchange_url).to_be_hidden()
