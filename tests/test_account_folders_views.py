"""The folder picker on the settings page, against the suite's Dovecot."""

import re

import pytest
from django.urls import reverse

from accounts.models import AccountChange
from sync.models import Email, Folder, SyncRun
from sync.services import mailbox_sync
from tests.factories import UserFactory
from tests.mailbox import make_message

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def nested(synced_mailbox):
    account, mailbox = synced_mailbox
    for folder in ("Clients", "Clients/Acme", "Clients/Acme/2026", "Projects"):
        mailbox.append(folder, make_message(subject=f"in {folder}"))
    mailbox.append("INBOX", make_message(subject="in INBOX"))
    mailbox.create("Sent")
    return account, mailbox


def _ids(account, *paths):
    return [Folder.objects.get(account=account, path=path).pk for path in paths]


def _synced_subjects(account):
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    return set(Email.objects.filter(account=account).values_list("subject", flat=True))


def _refresh(client, account, **headers):
    return client.post(reverse("accounts:folders_refresh", args=[account.pk]), **headers)


def test_it_shows_the_servers_real_folder_tree_on_demand(client, nested):
    account, _ = nested
    client.force_login(account.owner)
    page = client.get(reverse("accounts:settings", args=[account.pk])).content.decode()
    # Not read from the server until asked: a button (a POST: reading the tree saves
    # it) that works without JS.
    assert f'hx-post="/mailboxes/{account.pk}/folders/refresh/"' in page
    assert f'action="/mailboxes/{account.pk}/folders/refresh/"' in page
    assert not Folder.objects.filter(account=account).exists()
    body = _refresh(client, account, **HTMX).content.decode()
    paths = [p for p in body.split('data-path="')[1:]]
    listed = [p.split('"')[0] for p in paths]
    assert listed[0] == "INBOX"
    assert {"Clients", "Clients/Acme", "Clients/Acme/2026", "Projects", "Sent"} <= set(listed)
    # Nested folders are indented by depth, special folders are marked.
    assert '<li class="depth-2" data-path="Clients/Acme/2026"' in body
    assert '<span class="tag">sent</span>' in body
    assert "Choosing a folder does not choose the folders inside it." in body


def test_it_downloads_a_chosen_parent_without_its_children(client, nested, queued):
    account, _ = nested
    client.force_login(account.owner)
    _refresh(client, account, **HTMX)
    response = client.post(
        reverse("accounts:folders", args=[account.pk]),
        {"folder_mode": "custom", "chosen": _ids(account, "Clients")},
        **HTMX,
    )
    assert "Saved. Downloading from the chosen folders now." in response.content.decode()
    assert queued == [account.pk]
    assert _synced_subjects(account) == {"in Clients"}
    change = AccountChange.objects.get(field="folders")
    assert (change.old_value, change.new_value) == ("none", "Clients")
    mode = AccountChange.objects.get(field="folder_mode")
    assert mode.new_value == "Download emails from customized folders"


def test_it_downloads_subfolders_current_and_future_when_asked(client, nested, queued):
    account, mailbox = nested
    client.force_login(account.owner)
    _refresh(client, account)
    client.post(
        reverse("accounts:folders", args=[account.pk]),
        {"folder_mode": "custom", "subfolders": _ids(account, "Clients/Acme")},
    )
    assert _synced_subjects(account) == {"in Clients/Acme", "in Clients/Acme/2026"}
    # A subfolder made on the server later is taken in by the next sync.
    mailbox.append("Clients/Acme/Later", make_message(subject="in Clients/Acme/Later"))
    assert "in Clients/Acme/Later" in _synced_subjects(account)
    assert "in Clients" not in _synced_subjects(account)


def test_it_refuses_customized_folders_with_none_chosen_and_keeps_the_choice(client, nested):
    account, _ = nested
    client.force_login(account.owner)
    _refresh(client, account)
    for headers in (HTMX, {}):
        response = client.post(
            reverse("accounts:folders", args=[account.pk]), {"folder_mode": "custom"}, **headers
        )
        body = response.content.decode()
        assert response.status_code == 200
        assert "Folders: Choose at least one folder, or download all emails from mailbox." in body
        # The focus goes to it (after the swap it was on nothing).
        assert re.search(r'id="folders-error" tabindex="-1" autofocus>Folders: Choose', body)
        # The user's choice is still ticked.
        assert re.search(r'<input[^>]*value="custom"[^>]*checked', body)
    account.refresh_from_db()
    assert account.folder_mode == "all"
    assert not AccountChange.objects.exists()


def test_it_says_why_when_the_server_cannot_be_reached(client, nested):
    account, _ = nested
    account.set_password("not-the-password")
    account.save()
    client.force_login(account.owner)
    body = _refresh(client, account, **HTMX).content.decode()
    assert "Could not read the folder list from the server:" in body
    assert "did not accept the login or password" in body


def test_it_hides_another_users_folders(client, nested):
    account, _ = nested
    client.force_login(UserFactory())
    url = reverse("accounts:folders", args=[account.pk])
    assert client.get(url, **HTMX).status_code == 404
    assert client.post(url, {"folder_mode": "all"}).status_code == 404


def test_it_reads_only_on_a_get_of_the_folder_picker(client, nested):
    """Issue 15, point 12: a GET writes nothing; reading the server's tree is a POST."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    account, _ = nested
    client.force_login(account.owner)
    for headers in (HTMX, {}):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(reverse("accounts:folders", args=[account.pk]), **headers)
        assert response.status_code == 200
        writes = [
            q["sql"] for q in queries
            if q["sql"].split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}
        ]  # fmt: skip
        assert writes == []
    assert not Folder.objects.filter(account=account).exists()
    assert client.get(reverse("accounts:folders_refresh", args=[account.pk])).status_code == 405
    response = _refresh(client, account)
    assert response.status_code == 302
    assert response.url == reverse("accounts:folders", args=[account.pk])
    assert Folder.objects.filter(account=account, path="Clients/Acme").exists()


def test_it_offers_no_folder_that_holds_no_email_and_none_that_does(client, nested):
    """Exchange's Calendar, Contacts and Tasks are folders of the tree, but no mail."""
    account, _ = nested
    client.force_login(account.owner)
    _refresh(client, account, **HTMX)
    Folder.objects.filter(account=account, path="Clients").update(selectable=False)
    Folder.objects.create(account=account, path="Calendar", delimiter="/", selectable=False)
    # Holding nothing yet, but set to download the folders made in it later: shown, or
    # the next save of the picker would clear that unseen.
    Folder.objects.create(
        account=account, path="Later", delimiter="/", selectable=False, include_subfolders=True
    )
    body = client.get(reverse("accounts:folders", args=[account.pk]), **HTMX).text
    listed = re.findall(r'data-path="([^"]*)"', body)
    assert "Calendar" not in listed
    assert {"Clients", "Clients/Acme", "Later"} <= set(listed)  # containers that matter stay
