"""Emails with a problem: a level (`problem`), notes, and the original kept as a gzip
file instead of a database column (a message above the size limit keeps its first bytes
up to the limit, which is written as it arrives, never held in memory whole).
Attachments may be listed without a file. Folders remember their own errors and where
the flag check without CONDSTORE stands; messages that could not be stored at all wait
in UnstoredMessage."""

import gzip
import uuid

import django.db.models.deletion
import django.utils.timezone
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import migrations, models


def originals_to_files(apps, schema_editor):
    Email = apps.get_model("sync", "Email")
    emails = Email.objects.filter(raw_source__isnull=False).only("pk", "raw_source", "created_at")
    for email in emails.iterator(chunk_size=100):
        name = default_storage.save(
            f"originals/{email.created_at:%Y/%m}/{uuid.uuid4().hex}.eml.gz",
            ContentFile(gzip.compress(bytes(email.raw_source), compresslevel=6)),
        )
        Email.objects.filter(pk=email.pk).update(
            original=name, problem="unreadable", raw_source=None
        )
    # A problem noted without a kept original (none are known) still counts.
    Email.objects.exclude(parse_problem="").filter(problem="").update(problem="incomplete")


def files_to_originals(apps, schema_editor):
    Email = apps.get_model("sync", "Email")
    for email in Email.objects.exclude(original="").iterator(chunk_size=100):
        with default_storage.open(email.original.name, "rb") as handle:
            raw = gzip.decompress(handle.read())
        Email.objects.filter(pk=email.pk).update(raw_source=raw)


class Migration(migrations.Migration):
    dependencies = [
        ("sync", "0008_items_imported_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="email",
            name="problem",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "None"),
                    ("unreadable", "Could not be read"),
                    ("incomplete", "Stored in part"),
                ],
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="email",
            name="original",
            field=models.FileField(blank=True, upload_to="originals/%Y/%m/"),
        ),
        migrations.RunPython(originals_to_files, files_to_originals),
        migrations.RemoveField(model_name="email", name="raw_source"),
        migrations.RenameField(model_name="email", old_name="parse_problem", new_name="notes"),
        migrations.AddIndex(
            model_name="email",
            index=models.Index(
                condition=models.Q(("problem", ""), _negated=True),
                fields=["account"],
                name="email_with_problem",
            ),
        ),
        migrations.AlterField(
            model_name="attachment",
            name="file",
            field=models.FileField(blank=True, upload_to="attachments/%Y/%m/"),
        ),
        migrations.AddField(
            model_name="folder",
            name="flags_checked_below",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="folder",
            name="last_error",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="folder",
            name="failing_since",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="mailboxsync",
            name="last_error_kind",
            field=models.CharField(blank=True, max_length=30),
        ),
        migrations.AddField(
            model_name="mailboxsync",
            name="failing_since",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="syncrun",
            name="folder_errors",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AlterField(
            model_name="syncrun",
            name="state",
            field=models.CharField(
                choices=[
                    ("running", "Running"),
                    ("succeeded", "Succeeded"),
                    ("failed", "Failed"),
                    ("interrupted", "Interrupted"),
                ],
                default="running",
                max_length=20,
            ),
        ),
        migrations.CreateModel(
            name="UnstoredMessage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("uidvalidity", models.BigIntegerField()),
                ("uid", models.BigIntegerField()),
                ("error", models.TextField()),
                ("attempts", models.PositiveIntegerField(default=1)),
                ("first_failed_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("last_failed_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "folder",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="unstored",
                        to="sync.folder",
                    ),
                ),
            ],
            options={
                "ordering": ["folder", "uid"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("folder", "uidvalidity", "uid"), name="unstored_unique_uid"
                    )
                ],
            },
        ),
    ]
