from django.db import migrations


def create(apps, schema_editor):
    SystemSetting = apps.get_model("systemsettings", "SystemSetting")
    SystemSetting.objects.get_or_create(
        code="CreateContactsForUnknownSenders",
        defaults={
            "value_type": "boolean",
            "value": "no",
            "description": "When downloading emails, create a contact for a sender the CRM does "
            "not know yet (never for no-reply addresses or the company's own domains).",
        },
    )


class Migration(migrations.Migration):
    dependencies = [("systemsettings", "0003_allow_internal_mail_servers")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
