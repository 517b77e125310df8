"""The services queue what a change calls for; the views queue nothing (issue 16).
accounts, below sync, says what happened (accounts.signals) and sync queues it."""

from accounts.services import account_import_now, account_settings_update
from sync.models import Folder
from sync.services import folders_choose
from tests.factories import EmailAccountFactory


def test_it_queues_a_download_when_the_period_changes_and_not_otherwise(db, queued):
    account = EmailAccountFactory()
    account_settings_update(account=account, actor=account.owner, values={"auto_sync": False})
    assert queued == []
    account_settings_update(account=account, actor=account.owner, values={"sync_period": "3m"})
    assert queued == [account.pk]
    # Saved again unchanged: nothing new to fetch.
    account_settings_update(account=account, actor=account.owner, values={"sync_period": "3m"})
    assert queued == [account.pk]


def test_it_queues_an_import_only_while_the_import_is_on(db, monkeypatch):
    from sync import services, tasks

    imports = []

    def capture(task, *args):
        if task is tasks.import_exchange_items:
            imports.extend(args)
        return True

    monkeypatch.setattr(services, "publish_on_commit", capture)
    account = EmailAccountFactory()
    assert not account_import_now(account=account, items="meetings")
    assert not account_import_now(account=account, items="contacts")
    assert imports == []
    account.meetings_import = True
    assert account_import_now(account=account, items="meetings")
    assert imports == [account.pk]


def test_it_queues_the_download_of_folders_just_chosen(db, queued):
    account = EmailAccountFactory()
    folder = Folder.objects.create(account=account, path="Projects", delimiter="/")
    folders_choose(
        account=account, actor=account.owner, mode="custom", chosen={folder.pk},
        with_subfolders=set(),
    )  # fmt: skip
    assert queued == [account.pk]
