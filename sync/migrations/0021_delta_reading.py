"""Folders of servers that read by changes (mail.reading) keep a neutral server id and
state; their locations and notes are known by the server's id alone, without the UIDs
the app used to count for them (new rows get none; the old counted ones are left as they
are, as nothing reads them: rewriting every Exchange location would lock the table for
the length of the update)."""

from django.db import migrations, models


def one_note_per_item(apps, schema_editor):
    # Before the constraint: a run that had lost its claim could note an item a second
    # time (under another counted UID). The newest note of each item stays.
    notes = apps.get_model("sync", "UnstoredMessage").objects.exclude(item_id="")
    seen = set()
    for pk, folder_id, item_id in notes.order_by("-last_failed_at", "-pk").values_list(
        "pk", "folder_id", "item_id"
    ):
        if (folder_id, item_id) in seen:
            notes.filter(pk=pk).delete()
        seen.add((folder_id, item_id))


class Migration(migrations.Migration):
    dependencies = [("sync", "0020_email_account_id_index")]

    operations = [
        migrations.RenameField("folder", "ews_id", "server_id"),
        migrations.RenameField("folder", "ews_sync_state", "sync_state"),
        migrations.AlterField(
            "emaillocation", "uid", models.BigIntegerField(null=True, blank=True)
        ),
        migrations.AlterField(
            "unstoredmessage", "uid", models.BigIntegerField(null=True, blank=True)
        ),
        migrations.RunPython(one_note_per_item, migrations.RunPython.noop),
        migrations.AddConstraint(
            "unstoredmessage",
            models.UniqueConstraint(
                fields=["folder", "item_id"],
                condition=~models.Q(item_id=""),
                name="unstored_unique_item",
            ),
        ),
    ]
