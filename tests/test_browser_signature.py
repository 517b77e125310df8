"""Issue 17, point 1: a signature survives every other save of the settings page, in
headless Chromium. Each section's swap leaves the others as they are, and a save writes
only what its user changed."""

import pytest
from playwright.sync_api import expect

from accounts.models import EmailAccount
from tests.browser import SCREENSHOTS
from tests.factories import EmailAccountFactory
from tests.test_browser_wizard import _sign_in
from tests.test_signatures import IMAGE

SIGNATURE = f'<p>Jane Doe · Sales</p><p><img src="{IMAGE}" alt="logo"></p>'


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"issue17-1-{name}.png", full_page=True)


@pytest.fixture
def account(db):
    return EmailAccountFactory(
        address="jane@example.test", display_name="Jane", signature_html=SIGNATURE
    )


def _editor_holds_the_signature(page) -> None:
    editor = page.locator("#settings-signature [data-signature-editor]")
    expect(editor).to_be_visible()
    expect(editor).to_contain_text("Jane Doe · Sales")
    expect(editor.locator("img")).to_have_count(1)


def test_it_keeps_the_signature_through_a_save_of_the_send_section(live_server, page, account):
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/mailboxes/{account.pk}/")
    _editor_holds_the_signature(page)

    page.fill("#id_send-display_name", "Jane from Sales")
    page.click("#settings-send button:has-text('Save')")
    expect(page.locator("#settings-send .saved").first).to_contain_text("Saved.")
    # The signature editor is still there, as it was, with its image.
    _editor_holds_the_signature(page)
    _shot(page, "after-send-save")

    page.click("button:has-text('Save signature')")
    expect(page.locator("#settings-signature .saved")).to_contain_text("Saved.")
    account.refresh_from_db()
    assert account.display_name == "Jane from Sales"
    assert account.signature_html == SIGNATURE

    page.reload()
    _editor_holds_the_signature(page)
    _shot(page, "after-reload")


def test_it_keeps_whats_saved_elsewhere_and_names_a_real_conflict(live_server, browser, account):
    """Two tabs on the same settings page: a save in one never undoes what the other
    saved unless its user changed that very thing, and then they are told."""
    tabs = []
    for _ in range(2):
        tab = browser.new_context().new_page()
        tab.set_default_timeout(15_000)
        _sign_in(tab, live_server, account.owner)
        tab.goto(f"{live_server.url}/mailboxes/{account.pk}/")
        _editor_holds_the_signature(tab)
        tabs.append(tab)
    first, second = tabs

    # The second tab saves a new signature and a display name.
    editor = second.locator("[data-signature-editor]")
    editor.click()
    second.keyboard.press("Control+End")
    second.keyboard.type(" · +1 555 0100")
    second.click("button:has-text('Save signature')")
    expect(second.locator("#settings-signature .saved")).to_contain_text("Saved.")
    second.fill("#id_send-display_name", "Jane Doe")
    second.click("#settings-send button:has-text('Save')")
    expect(second.locator("#settings-send-form .saved")).to_contain_text("Saved.")
    account.refresh_from_db()
    theirs = account.signature_html
    assert "+1 555 0100" in theirs

    # The first tab, still showing the old values, changes only the default sender,
    # then presses "Save signature" without touching it: nothing of theirs is undone.
    first.check("#id_send-is_default_sender")
    first.click("#settings-send button:has-text('Save')")
    expect(first.locator("#settings-send-form .saved")).to_contain_text("Saved.")
    first.click("button:has-text('Save signature')")
    expect(first.locator("#settings-signature .saved")).to_contain_text("Saved.")
    account.refresh_from_db()
    assert account.is_default_sender
    assert account.display_name == "Jane Doe"
    assert account.signature_html == theirs
    # The first tab now shows the signature as saved.
    expect(first.locator("[data-signature-editor]")).to_contain_text("+1 555 0100")

    # Both change the display name: the later save is told, and wins only when repeated.
    second.fill("#id_send-display_name", "J. Doe (second tab)")
    second.click("#settings-send button:has-text('Save')")
    expect(second.locator("#settings-send-form .saved")).to_contain_text("Saved.")
    first.fill("#id_send-display_name", "Jane (first tab)")
    first.click("#settings-send button:has-text('Save')")
    error = first.locator("#settings-send-form .error")
    expect(error).to_contain_text(
        "Someone changed this to “J. Doe (second tab)” since the page was shown."
    )
    _shot(first, "conflict")
    account.refresh_from_db()
    assert account.display_name == "J. Doe (second tab)"
    expect(first.locator("#id_send-display_name")).to_have_value("Jane (first tab)")
    first.click("#settings-send button:has-text('Save')")
    expect(first.locator("#settings-send-form .saved")).to_contain_text("Saved.")
    account.refresh_from_db()
    assert account.display_name == "Jane (first tab)"
    assert EmailAccount.objects.get(pk=account.pk).signature_html == theirs
    for tab in tabs:
        tab.context.close()


def test_it_keeps_the_open_folder_picker_through_a_save_of_the_download_section(
    live_server, page, synced_mailbox, queued
):
    from tests.mailbox import make_message

    account, mailbox = synced_mailbox
    mailbox.append("Clients", make_message(subject="in Clients"))
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/mailboxes/{account.pk}/")
    page.click("text=Choose folders")
    page.check("input[name=folder_mode][value=custom]")
    clients = page.locator("li[data-path='Clients'] input[name=chosen]")
    clients.check()

    page.select_option("#id_download-sync_period", "3m")
    page.click("#settings-download-form button:has-text('Save')")
    expect(page.locator("#settings-download-form .saved")).to_contain_text("Saved.")
    # The picker is still open, with the tick the user has not saved yet.
    expect(clients).to_be_checked()
    expect(page.locator("input[name=folder_mode][value=custom]")).to_be_checked()
    _shot(page, "folders-kept")
    page.click("button:has-text('Save folders')")
    expect(page.locator("#settings-folders .saved")).to_contain_text("Saved.")
    account.refresh_from_db()
    assert account.sync_period == "3m"
    assert list(account.folders.filter(chosen=True).values_list("path", flat=True)) == ["Clients"]
