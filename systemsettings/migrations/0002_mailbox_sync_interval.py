from django.db import migrations


def create(apps, schema_editor):
    SystemSetting = apps.get_model("systemsettings", "SystemSetting")
    SystemSetting.objects.get_or_create(
        code="MailboxSyncInterval",
        defaults={
            "value_type": "integer",
            "value": "5",
            "description": "How often, in minutes, each mailbox checks its server for new emails.",
        },
    )


class Migration(migrations.Migration):
    dependencies = [("systemsettings", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
