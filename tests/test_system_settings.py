from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from systemsettings.models import SystemSetting
from systemsettings.selectors import mailbox_sync_interval
from tests.factories import UserFactory


def test_it_ships_mailbox_sync_interval_at_five_minutes(db):
    row = SystemSetting.objects.get(code="MailboxSyncInterval")
    assert (row.value_type, row.value) == ("integer", "5")
    assert mailbox_sync_interval() == timedelta(minutes=5)


def test_it_reads_the_admins_value(db):
    SystemSetting.objects.filter(code="MailboxSyncInterval").update(value="15")
    assert mailbox_sync_interval() == timedelta(minutes=15)


def test_it_falls_back_to_the_default_without_a_row(db):
    SystemSetting.objects.all().delete()
    assert mailbox_sync_interval() == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "at least 1"), ("-3", "at least 1"), ("five", "whole number"), ("100000", "at most")],
)
def test_it_refuses_a_bad_interval_by_name(db, value, message):
    row = SystemSetting.objects.get(code="MailboxSyncInterval")
    row.value = value
    with pytest.raises(ValidationError, match=message):
        row.full_clean()
    # A bad value that reached the database some other way fails loudly on read.
    SystemSetting.objects.filter(pk=row.pk).update(value=value)
    with pytest.raises(ValidationError, match="MailboxSyncInterval"):
        mailbox_sync_interval()


def test_it_lets_an_admin_change_the_value_and_names_a_bad_one(client, db):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    row = SystemSetting.objects.get(code="MailboxSyncInterval")
    url = reverse("admin:systemsettings_systemsetting_change", args=[row.pk])
    bad = client.post(url, {"value": "0", "description": row.description})
    assert bad.status_code == 200
    assert "MailboxSyncInterval must be at least 1." in bad.text
    good = client.post(url, {"value": "10", "description": row.description})
    assert good.status_code == 302
    assert mailbox_sync_interval() == timedelta(minutes=10)


def test_it_keeps_a_read_value_briefly_and_sees_a_save_at_once(db, monkeypatch):
    from systemsettings import selectors

    assert mailbox_sync_interval() == timedelta(minutes=5)
    # Written behind the app's back (no save): the value read stays for CACHE_SECONDS.
    SystemSetting.objects.filter(code="MailboxSyncInterval").update(value="7")
    assert mailbox_sync_interval() == timedelta(minutes=5)
    later = selectors.time.monotonic() + selectors.CACHE_SECONDS + 1
    monkeypatch.setattr(selectors.time, "monotonic", lambda: later)
    assert mailbox_sync_interval() == timedelta(minutes=7)

    row = SystemSetting.objects.get(code="MailboxSyncInterval")
    row.value = "9"
    row.save()
    assert mailbox_sync_interval() == timedelta(minutes=9)


def test_it_refuses_a_setting_no_code_reads_and_says_what_a_value_may_be(client, db):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    typo = {"code": "MailboxSyncIntervall", "value_type": "integer", "value": "1"}
    answer = client.post(reverse("admin:systemsettings_systemsetting_add"), typo)
    assert answer.status_code == 200
    assert "The app reads no setting named &#x27;MailboxSyncIntervall&#x27;." in answer.text
    assert "Did you mean MailboxSyncInterval?" in answer.text
    assert not SystemSetting.objects.filter(code="MailboxSyncIntervall").exists()
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match=r"MailboxSyncInterval is an integer setting\."):
        SystemSetting(code="MailboxSyncInterval", value_type="boolean", value="1").clean()
    row = SystemSetting.objects.get(code="MailboxSyncInterval")
    page = client.get(reverse("admin:systemsettings_systemsetting_change", args=[row.pk])).text
    assert "A whole number from 1 to 1,440 minutes (default: 5)." in page
    # The code's description is the code's: shown, not an input to empty.
    assert 'name="description"' not in page and row.description in page
