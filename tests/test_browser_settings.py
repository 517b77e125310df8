"""A mailbox's settings page in headless Chromium, against the suite's Dovecot."""

import base64

import pytest
from playwright.sync_api import expect

from accounts.models import AccountChange
from sync.models import Folder
from tests.browser import SCREENSHOTS
from tests.mailbox import make_message
from tests.test_browser_wizard import _sign_in
from tests.test_signatures import PNG


@pytest.fixture
def no_queue(monkeypatch):
    # Nothing runs the queued downloads here; the sync itself is tested elsewhere.
    from sync import services

    monkeypatch.setattr(services, "publish_on_commit", lambda task, *args: True)


def test_it_edits_the_settings_section_by_section(
    live_server, page, synced_mailbox, no_queue, tmp_path
):
    account, mailbox = synced_mailbox
    for folder in ("Clients", "Clients/Acme"):
        mailbox.append(folder, make_message(subject=f"in {folder}"))
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/mailboxes/{account.pk}/")

    # Download emails: saved in place, the rest of the page untouched.
    page.select_option("#id_download-sync_period", "3m")
    page.click("#settings-download button:has-text('Save')")
    expect(page.locator("#settings-download .saved")).to_contain_text("Saved.")

    # Folders: read from the server when asked; a parent without its children.
    page.click("text=Choose folders")
    expect(page.locator("li[data-path='Clients/Acme']")).to_be_visible()
    page.check("input[name=folder_mode][value=custom]")
    page.check("li[data-path='Clients'] input[name=chosen]")
    page.click("button:has-text('Save folders')")
    expect(page.locator("#settings-folders .saved")).to_contain_text("Saved.")
    chosen = Folder.objects.filter(account=account, chosen=True)
    assert list(chosen.values_list("path", flat=True)) == ["Clients"]

    # Signature: typed in the editor, an image chosen as a file, previewed, saved.
    editor = page.locator("[data-signature-editor]")
    # "Add signatures to outbound emails" is on for a new mailbox, as saved: its editor
    # shows, empty; unticked hides it, ticked reveals it.
    expect(page.locator("#id_signature-add_signature")).to_be_checked()
    expect(editor).to_be_visible()
    page.uncheck("#id_signature-add_signature")
    expect(editor).to_be_hidden()
    page.check("#id_signature-add_signature")
    expect(editor).to_be_visible()
    expect(page.locator("#id_signature-signature_html")).to_be_hidden()
    editor.click()
    page.keyboard.type("Jane Doe, Sales")
    logo = tmp_path / "logo.png"
    logo.write_bytes(base64.b64decode(PNG))
    page.set_input_files("#id_signature-image", str(logo))
    expect(editor.locator("img")).to_have_count(1)
    preview = page.frame_locator("#signature-preview iframe")
    expect(preview.locator("body")).to_contain_text("Jane Doe, Sales")
    expect(preview.locator("img")).to_have_count(1)
    page.click("button:has-text('Save signature')")
    expect(page.locator("#settings-signature .saved")).to_contain_text("Saved.")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "settings.png", full_page=True)

    account.refresh_from_db()
    assert account.sync_period == "3m"
    assert "Jane Doe, Sales" in account.signature_html
    assert f'src="data:image/png;base64,{PNG}"' in account.signature_html
    fields = set(AccountChange.objects.values_list("field", flat=True))
    assert {"sync_period", "folder_mode", "folders", "signature_html"} <= fields


def test_it_never_runs_a_refused_signatures_markup_in_the_editor(live_server, page, db):
    """Issue 15, point 11: a signature refused for its image came back into the editor
    as posted, and its onerror ran in the page (self-XSS, fired in Chromium)."""
    from tests.factories import EmailAccountFactory

    account = EmailAccountFactory()
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/mailboxes/{account.pk}/")
    hostile = '<p>Jane</p><img src="x" onerror="window.pwned = 1">'
    page.evaluate(
        "html => { document.querySelector('#id_signature-signature_html').value = html; }",
        hostile,
    )
    page.click("button:has-text('Save signature')")
    expect(page.locator("#id_signature-signature_html_error")).to_contain_text(
        "An image could not be read"
    )
    editor = page.locator("[data-signature-editor]")
    expect(editor).to_contain_text("Jane")
    assert "onerror" not in editor.inner_html()
    page.wait_for_timeout(300)
    assert page.evaluate("() => window.pwned") is None
