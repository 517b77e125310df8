"""The HTML of emails stored by earlier versions, made safe once as new emails are at
download (sync/sanitize.py): the email page no longer sanitises on every view, it shows
what is stored. Batches of 500; bounded per email by the same depth cap."""

from django.db import migrations


def sanitise(apps, schema_editor):
    from sync.sanitize import safe_html

    Email = apps.get_model("sync", "Email")
    pending = Email.objects.exclude(html_body="").order_by("pk").only("pk", "html_body")
    last = 0
    while batch := list(pending.filter(pk__gt=last)[:500]):
        for email in batch:
            email.html_body = safe_html(email.html_body)[0]
        Email.objects.bulk_update(batch, ["html_body"])
        last = batch[-1].pk


class Migration(migrations.Migration):
    dependencies = [("sync", "0011_attachment_names")]
    operations = [migrations.RunPython(sanitise, migrations.RunPython.noop)]
