from django.db import migrations


def create(apps, schema_editor):
    SystemSetting = apps.get_model("systemsettings", "SystemSetting")
    SystemSetting.objects.get_or_create(
        code="AllowInternalMailServers",
        defaults={
            "value_type": "boolean",
            "value": "no",
            "description": "Let the mailbox wizard connect to mail servers on internal addresses "
            "(loopback, private, link-local).",
        },
    )


class Migration(migrations.Migration):
    dependencies = [("systemsettings", "0002_mailbox_sync_interval")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
