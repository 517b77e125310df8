"""Issue 17, points 8 and 11, in headless Chromium: the settings page as documented,
and focus that follows each section's save to its one save state."""

import pytest
from playwright.sync_api import expect

from accounts.models import EmailAccount
from tests.browser import SCREENSHOTS
from tests.factories import EmailAccountFactory
from tests.test_browser_wizard import _sign_in


@pytest.fixture
def account(db):
    return EmailAccountFactory(address="jane@example.test", signature_html="<p>Jane Doe</p>")


@pytest.fixture
def no_queue(monkeypatch):
    from sync import services

    monkeypatch.setattr(services, "publish_on_commit", lambda task, *args: True)


def test_it_walks_the_documented_settings_page_and_closes_back(
    live_server, page, account, no_queue
):
    _sign_in(page, live_server, account.owner)
    # From the Email page, by its link to the mailbox.
    page.click("a:has-text('jane@example.test')")
    expect(page.locator("h1")).to_have_text("jane@example.test settings")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "issue17-8-settings-page.png", full_page=True)

    # "Download mail for period": the switch off, saved; focus on the section's state.
    switch = page.locator("#id_download-period_limited")
    expect(switch).to_have_attribute("role", "switch")
    expect(switch).to_be_checked()
    expect(page.locator("#id_download-sync_period")).to_be_visible()
    switch.uncheck()
    expect(page.locator("#settings-download-state")).to_have_text("Unsaved changes.")
    page.click("#settings-download-form button:has-text('Save')")
    expect(page.locator("#settings-download-state")).to_contain_text("Saved.")
    expect(page.locator("#settings-download-state")).to_be_focused()
    account.refresh_from_db()
    assert account.sync_period == "all"

    # "Add signatures to outbound emails": unticked hides the editor, keeps the text.
    editor = page.locator("[data-signature-editor]")
    expect(editor).to_contain_text("Jane Doe")
    page.uncheck("#id_signature-add_signature")
    expect(editor).to_be_hidden()
    page.click("button:has-text('Save signature')")
    expect(page.locator("#settings-signature-state")).to_have_text("Saved.")
    expect(page.locator("#settings-signature-state")).to_be_focused()
    # The download section kept its state through the signature's swap.
    expect(page.locator("#settings-download-state")).to_contain_text("Saved.")
    expect(page.locator("#id_download-period_limited")).not_to_be_checked()
    account.refresh_from_db()
    assert (account.add_signature, account.signature_html) == (False, "<p>Jane Doe</p>")
    page.check("#id_signature-add_signature")
    expect(editor).to_be_visible()
    expect(editor).to_contain_text("Jane Doe")
    expect(page.locator("#settings-signature-state")).to_have_text("Unsaved changes.")

    # One save state per section: "Send emails" and its signature show the newer one,
    # and a save of the one never hides the other's unsaved change.
    page.fill("#id_send-display_name", "Jane Doe")
    page.click("#settings-send-form button:has-text('Save')")
    expect(page.locator("#settings-send-state")).to_have_text("Saved.")
    expect(page.locator("#settings-signature-state")).to_have_text("Unsaved changes.")
    page.click("button:has-text('Save signature')")
    expect(page.locator("#settings-signature-state")).to_have_text("Saved.")
    expect(page.locator("#settings-send .save-state.saved")).to_have_count(1)
    expect(page.locator("#settings-send-state")).to_have_text("")
    account.refresh_from_db()
    assert (account.add_signature, account.display_name) == (True, "Jane Doe")

    # A refused save says so once, in the section's state, and focus goes there.
    page.fill("#id_send-display_name", "Jane\u2028")
    page.uncheck("#id_send-send_enabled")
    page.check("#id_send-is_default_sender")
    page.click("#settings-send-form button:has-text('Save')")
    expect(page.locator("#settings-send-state")).to_contain_text("Not saved")
    expect(page.locator("#settings-send-state")).to_be_focused()
    assert EmailAccount.objects.get(pk=account.pk).display_name == "Jane Doe"

    # Change email settings leads to the sign-in part; Close goes back to the Email page.
    page.click("#settings-change")
    expect(page.locator("#settings-credentials")).to_be_in_viewport()
    page.click("#settings-close")
    page.wait_for_url(f"{live_server.url}/email/")


def test_it_disables_the_period_list_while_the_switch_is_off(live_server, page, account, no_queue):
    """A period picked beside a switch that is off would be thrown away on save: the
    list cannot be picked from then, and reads "All" (what the save gets)."""
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}{account.get_absolute_url()}")
    switch = page.locator("#id_download-period_limited")
    period = page.locator("#id_download-sync_period")
    expect(switch).to_be_checked()
    period.select_option("1m")
    switch.uncheck()
    expect(period).to_be_disabled()
    expect(period).to_have_value("all")
    expect(page.locator("#settings-download-state")).to_have_text("Unsaved changes.")
    # On again: a period to pick, never "All" with the switch on.
    switch.check()
    expect(period).to_be_enabled()
    expect(period).to_have_value("1w")
    expect(period.locator('option[value="all"]')).to_have_count(0)
    switch.uncheck()
    page.click("#settings-download-form button:has-text('Save')")
    expect(page.locator("#settings-download-state")).to_contain_text("Saved.")
    # The swapped-in form keeps it: disabled, "All"; and the switch still enables it.
    expect(period).to_be_disabled()
    expect(period).to_have_value("all")
    account.refresh_from_db()
    assert account.sync_period == "all"
    switch.check()
    expect(period).to_be_enabled()
    period.select_option("3m")
    page.click("#settings-download-form button:has-text('Save')")
    expect(page.locator("#settings-download-state")).to_contain_text("Saved.")
    expect(period).to_have_value("3m")
    account.refresh_from_db()
    assert account.sync_period == "3m"


def test_it_never_closes_to_another_site(live_server, page, account):
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/mailboxes/{account.pk}/?back=//evil.example/x")
    expect(page.locator("#settings-close")).to_have_attribute("href", "/mailboxes/")
