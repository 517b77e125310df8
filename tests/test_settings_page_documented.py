"""Issue 17, point 8: the settings page as documented ("Edit page of the email account
settings"): its title with Close and Change email settings, the sections' descriptions,
the "Download mail for period" switch and the "Add signatures to outbound emails" box;
without a browser (the browser walk is in tests/test_browser_settings_documented.py)."""

import re

import pytest
from django.urls import reverse

from accounts.models import AccountChange
from sending.models import OutgoingEmail
from tests.factories import EmailAccountFactory

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def account(db):
    return EmailAccountFactory(address="jane@example.test")


def _page(client, account, **headers) -> str:
    return client.get(reverse("accounts:settings", args=[account.pk]), **headers).text


def test_it_titles_the_page_with_close_and_change_email_settings(client, account):
    client.force_login(account.owner)
    page = _page(client, account)
    assert "<h1>jane@example.test settings</h1>" in page
    assert 'id="settings-close"' in page and ">Close</a>" in page
    assert 'href="#settings-credentials" id="settings-change">Change email settings</a>' in page
    for description in (
        "Select emails to download. Downloaded emails would be saved and linked to customer "
        "records.",
        "Set up signature and default mailbox for sending emails.",
        "Allow other users to send emails using this mailbox or access emails downloaded "
        "from this mailbox.",
    ):
        assert description in page


@pytest.mark.parametrize(
    ("referer", "back", "expected"),
    [
        ("http://testserver/contacts/?q=ann", None, "/contacts/?q=ann"),
        (None, "/email/?page=2", "/email/?page=2"),
        ("https://evil.example/phish", None, "/mailboxes/"),
        (None, "//evil.example/phish", "/mailboxes/"),
        (None, "https://evil.example/", "/mailboxes/"),
        (None, "javascript:alert(1)", "/mailboxes/"),
        (None, "/\\evil.example", "/mailboxes/"),
        (None, None, "/mailboxes/"),
    ],
)
def test_it_closes_back_to_the_same_site_page_the_user_came_from(
    client, account, referer, back, expected
):
    client.force_login(account.owner)
    url = reverse("accounts:settings", args=[account.pk])
    headers = {"HTTP_REFERER": referer} if referer else {}
    page = client.get(url, {"back": back} if back else {}, **headers).text
    assert f'href="{expected.replace("&", "&amp;")}" id="settings-close"' in page


def test_it_never_closes_to_the_settings_page_itself(client, account):
    """After a save without JavaScript the Referer is the settings page: Close must
    not lead back to it."""
    client.force_login(account.owner)
    url = reverse("accounts:settings", args=[account.pk])
    page = client.get(url, HTTP_REFERER=f"http://testserver{url}").text
    assert 'href="/mailboxes/" id="settings-close"' in page


def _download(client, account, data):
    """Posts as the page does: `initial-<name>` are the values it showed."""
    url = reverse("accounts:settings_save", args=[account.pk, "download"])
    posted = {
        (f"initial-download-{k[8:]}" if k.startswith("initial-") else f"download-{k}"): v
        for k, v in data.items()
    }
    return client.post(url, posted, **HTMX)


def test_it_shows_the_period_beside_a_switch_that_turns_it_off(client, account, queued):
    client.force_login(account.owner)
    page = _page(client, account)
    assert 'role="switch"' in page and "Download mail for period" in page
    # The list beside the switch offers periods only: "All" is the switch off.
    assert '<option value="all"' not in page
    # The page posts its shown values: switch off means every email, whatever the list says.
    shown = {"shown": "1", "initial-period_limited": "True", "initial-sync_period": "1w"}
    shown |= {"initial-auto_sync": "True", "auto_sync": "on"}
    response = _download(client, account, {**shown, "sync_period": "3m"})
    assert "Saved." in response.text
    account.refresh_from_db()
    assert account.sync_period == "all"
    assert queued == [account.pk]
    # The page shows the switch off and, beside it, the list disabled, reading "All".
    page = _page(client, account)
    assert 'role="switch" id="id_download-period_limited"' in page
    assert "checked" not in page.split('id="id_download-period_limited"')[0].rsplit("<input", 1)[1]
    assert _period_list(page) == ("disabled", "all")
    # Turned on again with a month: that period.
    shown |= {"initial-period_limited": "False", "initial-sync_period": "all"}
    _download(client, account, {**shown, "period_limited": "on", "sync_period": "1m"})
    account.refresh_from_db()
    assert account.sync_period == "1m"
    trail = AccountChange.objects.order_by("pk").values_list("new_value", flat=True)
    assert list(trail) == ["All", "1 month"]


def _period_list(page: str) -> tuple[str, str]:
    """The period list's state ("disabled" or "enabled") and its selected value."""
    select = re.search(r'<select name="download-sync_period"[^>]*>.*?</select>', page, re.S)
    opening = select.group(0).split(">", 1)[0]
    selected = re.findall(r'<option value="([^"]*)" selected>', select.group(0))
    return ("disabled" if " disabled" in opening else "enabled", *selected)


def test_it_never_shows_a_period_the_switch_threw_away(client, account, queued):
    """Issue: with the switch off, a period picked in the list was dropped while
    "Saved." showed and the list kept the picked period."""
    client.force_login(account.owner)
    assert _period_list(_page(client, account)) == ("enabled", "1w")
    shown = {"shown": "1", "initial-period_limited": "True", "initial-sync_period": "1w"}
    response = _download(client, account, {**shown, "sync_period": "3m"})
    assert "Saved." in response.text
    account.refresh_from_db()
    assert account.sync_period == "all"
    # What the save answers and what the page shows after: every email, not 3 months.
    assert _period_list(response.text) == ("disabled", "all")
    assert _period_list(_page(client, account)) == ("disabled", "all")


def test_it_turns_the_switch_on_to_a_week_where_the_list_was_disabled(client, account, queued):
    """Without a script the disabled list is not posted: turning the switch on saves
    the week the list then shows, enabled."""
    client.force_login(account.owner)
    account.sync_period = "all"
    account.save()
    shown = {"shown": "1", "initial-period_limited": "False", "initial-sync_period": "all"}
    response = _download(client, account, {**shown, "period_limited": "on"})
    assert "Saved." in response.text
    account.refresh_from_db()
    assert account.sync_period == "1w"
    assert _period_list(response.text) == ("enabled", "1w")
    assert "Choose one of the periods" not in response.text


def test_it_leaves_the_period_alone_when_only_another_field_changed(client, account):
    client.force_login(account.owner)
    account.sync_period = "all"
    account.save()
    shown = {"shown": "1", "initial-period_limited": "False", "initial-sync_period": "all"}
    shown |= {"initial-auto_sync": "True"}
    # The list shows a week beside the switch that is off: posting it changes nothing.
    _download(client, account, {**shown, "sync_period": "1w"})
    account.refresh_from_db()
    assert (account.sync_period, account.auto_sync) == ("all", False)
    assert list(AccountChange.objects.values_list("field", flat=True)) == ["auto_sync"]


def _signature(client, account, data):
    url = reverse("accounts:signature", args=[account.pk])
    return client.post(url, {f"signature-{k}": v for k, v in data.items()}, **HTMX)


def test_it_stops_adding_the_signature_and_keeps_it_when_the_box_is_unticked(
    client, account, monkeypatch
):
    from sending import tasks

    monkeypatch.setattr(tasks.send_email, "delay", lambda *args: None)

    account.signature_html = "<p>Jane Doe</p>"
    account.save()
    client.force_login(account.owner)
    page = _page(client, account)
    assert 'name="signature-add_signature" id="id_signature-add_signature" checked' in page
    response = _signature(
        client, account, {"add_signature_shown": "1", "signature_html": "<p>Jane Doe</p>"}
    )
    assert "Saved." in response.text
    account.refresh_from_db()
    assert account.add_signature is False
    assert account.signature_html == "<p>Jane Doe</p>"
    page = _page(client, account)
    assert 'id="id_signature-add_signature" checked' not in page
    # Sent without it.
    compose = {"sender": account.pk, "to": "ann@example.test", "subject": "Hi", "body": "Text"}
    client.post(reverse("sending:compose"), compose)
    assert b"Jane Doe" not in bytes(OutgoingEmail.objects.get().raw)
    # Ticked again: added again.
    _signature(client, account, {"add_signature": "on", "add_signature_shown": ""})
    account.refresh_from_db()
    assert account.add_signature is True
    client.post(reverse("sending:compose"), compose)
    assert b"Jane Doe" in bytes(OutgoingEmail.objects.latest("pk").raw)


def test_it_keeps_the_box_ticked_as_saved_without_a_signature(client, account):
    """Issue: ticking the box with no signature written saved, then showed it unticked."""
    client.force_login(account.owner)
    account.add_signature = False
    account.save()
    response = _signature(client, account, {"add_signature": "on", "add_signature_shown": ""})
    assert "Saved." in response.text
    account.refresh_from_db()
    assert (account.add_signature, account.signature_html) == (True, "")
    box = 'name="signature-add_signature" id="id_signature-add_signature" checked'
    assert box in response.text
    assert box in _page(client, account)
    # Unticked again, it stays unticked.
    response = _signature(client, account, {"add_signature_shown": "1"})
    account.refresh_from_db()
    assert account.add_signature is False
    assert box not in response.text and box not in _page(client, account)


def test_it_leaves_the_box_alone_for_a_post_that_does_not_show_it(client, account):
    account.signature_html = "<p>Jane Doe</p>"
    account.save()
    client.force_login(account.owner)
    _signature(client, account, {"signature_html": "<p>Jane Doe, Sales</p>"})
    account.refresh_from_db()
    assert account.add_signature is True
    assert account.signature_html == "<p>Jane Doe, Sales</p>"
