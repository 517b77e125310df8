"""The mailbox settings page: each section saves on its own, with and without htmx."""

import pytest
from django.urls import reverse

from accounts.models import AccountChange, EmailAccount
from tests.factories import EmailAccountFactory, UserFactory

HTMX = {"HTTP_HX_REQUEST": "true"}


def _save(client, account, section, data, **headers):
    url = reverse("accounts:settings_save", args=[account.pk, section])
    return client.post(url, {f"{section}-{k}": v for k, v in data.items()}, **headers)


def test_it_saves_the_download_section_in_place_and_logs_the_change(client, db, queued):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    response = _save(client, account, "download", {"sync_period": "3m", "auto_sync": ""}, **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    # The section's form alone: the folder picker beside it is not swapped.
    assert body.lstrip().startswith('<form method="post" action="/mailboxes/')
    assert 'id="settings-download-form"' in body and "settings-folders" not in body
    assert "Saved." in body and "Downloading emails for the new period now." in body
    # The page's sync status reads again (it said "Last download …" and nothing of the
    # download just asked for).
    assert response["HX-Trigger"] == "sync-settings-saved"
    account.refresh_from_db()
    assert (account.sync_period, account.auto_sync) == ("3m", False)
    trail = {c.field: (c.old_value, c.new_value, c.actor) for c in AccountChange.objects.all()}
    assert trail == {
        "sync_period": ("1 week", "3 months", account.owner),
        "auto_sync": ("On", "Off", account.owner),
    }
    # The older emails are fetched now, not at the next scheduled run.
    assert queued == [account.pk]


def test_it_saves_without_javascript_and_comes_back_to_the_page(client, db, queued):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    response = _save(client, account, "send", {"send_enabled": "on", "display_name": "Sales"})
    assert response.status_code == 302
    assert response.url == f"{account.get_absolute_url()}#settings-send"
    page = client.get(response.url).content.decode()
    assert "Settings saved." in page
    assert 'value="Sales"' in page
    assert queued == []


def test_it_keeps_what_the_user_typed_and_names_the_field(client, db):
    account = EmailAccountFactory(display_name="Old name")
    client.force_login(account.owner)
    data = {
        "send_enabled": "on",
        "display_name": "New\r\nBcc: x@evil.test",
        "message_language": "xx",
    }
    for headers in (HTMX, {}):
        response = _save(client, account, "send", data, **headers)
        assert response.status_code == 200
        body = response.content.decode()
        assert "Custom display name: The display name cannot contain line breaks." in body
        assert "Message language: Choose a message language from the list." in body
        # What was typed is still in the field, and nothing was saved.
        assert "New\r\nBcc: x@evil.test" in body
        # The fields are above the Save button and its line.
        assert "correct the fields marked above." in body
        assert body.index("Custom display name:") < body.index("marked above")
    account.refresh_from_db()
    assert account.display_name == "Old name"
    assert not AccountChange.objects.exists()


def test_it_keeps_one_default_sender_per_user(client, db):
    user = UserFactory()
    first = EmailAccountFactory(owner=user, is_default_sender=True)
    second = EmailAccountFactory(owner=user)
    other_users = EmailAccountFactory(is_default_sender=True)
    client.force_login(user)
    _save(client, second, "send", {"send_enabled": "on", "is_default_sender": "on"}, **HTMX)
    defaults = set(EmailAccount.objects.filter(is_default_sender=True).values_list("pk", flat=True))
    assert defaults == {second.pk, other_users.pk}
    cleared = AccountChange.objects.get(account=first)
    assert (cleared.field, cleared.old_value, cleared.new_value) == (
        "is_default_sender",
        "On",
        "Off",
    )


def test_it_stops_being_the_default_when_it_stops_sending(client, db):
    account = EmailAccountFactory(is_default_sender=True)
    client.force_login(account.owner)
    _save(client, account, "send", {"send_enabled": "", "is_default_sender": ""}, **HTMX)
    account.refresh_from_db()
    assert (account.send_enabled, account.is_default_sender) == (False, False)
    # Asking for both at once is refused with a reason, not half-done.
    response = _save(client, account, "send", {"is_default_sender": "on"}, **HTMX)
    assert "Turn on “Send emails using this mailbox” to make it the default." in (
        response.content.decode()
    )
    account.refresh_from_db()
    assert account.is_default_sender is False


def test_it_writes_nothing_when_nothing_changed(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    _save(client, account, "download", {"sync_period": "1w", "auto_sync": "on"}, **HTMX)
    assert not AccountChange.objects.exists()


def test_it_hides_another_users_mailbox_settings(client, db):
    account = EmailAccountFactory()
    client.force_login(UserFactory())
    assert client.get(reverse("accounts:settings", args=[account.pk])).status_code == 404
    response = _save(client, account, "download", {"sync_period": "all"}, **HTMX)
    assert response.status_code == 404
    assert (
        client.post(reverse("accounts:settings_save", args=[account.pk, "nope"])).status_code == 404
    )
    account.refresh_from_db()
    assert account.sync_period == "1w"


def test_it_never_logs_a_credential(db):
    from accounts.services import account_settings_update

    account = EmailAccountFactory()
    with pytest.raises(ValueError):
        account_settings_update(
            account=account, actor=account.owner, values={"password_encrypted": "x"}
        )
    assert not AccountChange.objects.exists()


def test_it_offers_for_sending_only_the_mailboxes_with_sending_on(client, db):
    from sharing.selectors import sendable_mailboxes

    user = UserFactory()
    first = EmailAccountFactory(owner=user, address="a@example.test")
    second = EmailAccountFactory(owner=user, address="b@example.test")
    EmailAccountFactory(address="c@example.test")  # someone else's
    assert list(sendable_mailboxes(user)) == [first, second]
    client.force_login(user)
    _save(client, second, "send", {"send_enabled": "on", "is_default_sender": "on"}, **HTMX)
    assert list(sendable_mailboxes(user)) == [second, first]
    _save(client, first, "send", {"send_enabled": ""}, **HTMX)
    assert list(sendable_mailboxes(user)) == [second]


def _shown_page_data(client, account, section: str) -> dict:
    """What the settings page posts for a section, as it was rendered: each field's
    value and the value it was shown with."""
    import re

    page = client.get(reverse("accounts:settings", args=[account.pk])).content.decode()
    form = re.search(rf'<form[^>]*id="settings-{section}-form".*?</form>', page, re.S).group(0)
    data: dict = {}
    for tag in re.finditer(r"<select\b.*?</select>|<input\b[^>]*>", form, re.S):
        html = tag.group(0)
        name = re.search(r'name="([^"]+)"', html).group(1)
        if html.startswith("<select"):
            chosen = re.search(r'<option value="([^"]*)"[^>]*selected', html)
            data[name] = chosen.group(1) if chosen else ""
        elif 'type="checkbox"' in html:
            if " checked" in html:
                data[name] = "on"
        elif 'type="submit"' not in html:
            value = re.search(r'value="([^"]*)"', html)
            data[name] = value.group(1) if value else ""
    return data


def test_it_writes_only_what_the_user_changed_on_the_page(client, db):
    account = EmailAccountFactory(display_name="Jane", message_language="")
    client.force_login(account.owner)
    data = _shown_page_data(client, account, "send")
    assert data["initial-send-display_name"] == "Jane" and data["send-shown"] == "1"
    # Meanwhile, in another tab or by a "Setup mailbox" grantee:
    EmailAccount.objects.filter(pk=account.pk).update(display_name="Jane Doe")

    data["send-message_language"] = "de"
    url = reverse("accounts:settings_save", args=[account.pk, "send"])
    assert client.post(url, data).status_code == 302
    account.refresh_from_db()
    # Untouched here, so kept as saved elsewhere; only the language was written.
    assert (account.display_name, account.message_language) == ("Jane Doe", "de")
    assert list(AccountChange.objects.values_list("field", flat=True)) == ["message_language"]


def test_it_makes_no_default_sender_of_a_mailbox_whose_sending_went_off_meanwhile(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    data = _shown_page_data(client, account, "send")
    EmailAccount.objects.filter(pk=account.pk).update(send_enabled=False)
    data["send-is_default_sender"] = "on"
    url = reverse("accounts:settings_save", args=[account.pk, "send"])
    body = client.post(url, data, **HTMX).content.decode()
    assert "Send emails using this mailbox: Someone changed this to “Off” since the page was" in (
        body
    )
    account.refresh_from_db()
    assert (account.send_enabled, account.is_default_sender) == (False, False)
    # Saved again as the form now shows it (sending ticked on again): both are written.
    data["initial-send-send_enabled"] = "False"
    client.post(url, data, **HTMX)
    account.refresh_from_db()
    assert (account.send_enabled, account.is_default_sender) == (True, True)


def test_it_names_a_field_someone_else_changed_meanwhile_and_saves_when_asked_again(client, db):
    account = EmailAccountFactory(display_name="Jane")
    client.force_login(account.owner)
    data = _shown_page_data(client, account, "send")
    EmailAccount.objects.filter(pk=account.pk).update(display_name="Jane Doe")
    data["send-display_name"] = "Jane Smith"
    url = reverse("accounts:settings_save", args=[account.pk, "send"])
    for headers in (HTMX, {}):
        body = client.post(url, data, **headers).content.decode()
        assert (
            "Custom display name: Someone changed this to “Jane Doe” since the page was shown. "
            "Save again to replace it with yours."
        ) in body
        assert 'value="Jane Smith"' in body  # what was typed stays
        assert 'name="initial-send-display_name" value="Jane Doe"' in body
    account.refresh_from_db()
    assert account.display_name == "Jane Doe"
    data["initial-send-display_name"] = "Jane Doe"  # as the form now shows
    client.post(url, data, **HTMX)
    account.refresh_from_db()
    assert account.display_name == "Jane Smith"
    change = AccountChange.objects.get()
    assert (change.old_value, change.new_value) == ("Jane Doe", "Jane Smith")
