"""Folders of servers that read by changes (mail.reading) keep a neutral server id and
state; their locations and notes are known by the server's id alone, without the UIDs
the app used to count for them."""

from django.db import migrations, models


def forget_counted_uids(apps, schema_editor):
    # Those UIDs were the app's own count per folder, never the server's: nothing reads
    # them, and a null one cannot be taken for an IMAP UID.
    for name in ("EmailLocation", "UnstoredMessage"):
        apps.get_model("sync", name).objects.exclude(item_id="").update(uid=None)


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
        migrations.AddConstraint(
            "unstoredmessage",
            models.UniqueConstraint(
                fields=["folder", "item_id"],
                condition=~models.Q(item_id=""),
                name="unstored_unique_item",
            ),
        ),
        migrations.RunPython(forget_counted_uids, migrations.RunPython.noop),
    ]
