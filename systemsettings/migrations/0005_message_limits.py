"""The limits on one email (size, parts, nesting), as rows an admin sees and edits."""

from django.db import migrations

from systemsettings.definitions import MAX_MESSAGE_PARTS, MAX_MESSAGE_SIZE, MAX_MIME_DEPTH


def create(apps, schema_editor):
    SystemSetting = apps.get_model("systemsettings", "SystemSetting")
    for definition in (MAX_MESSAGE_SIZE, MAX_MESSAGE_PARTS, MAX_MIME_DEPTH):
        SystemSetting.objects.get_or_create(
            code=definition.code,
            defaults={
                "value_type": definition.value_type,
                "value": str(definition.default),
                "description": definition.description,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("systemsettings", "0004_create_contacts_for_unknown_senders")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
