from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("accounts", "0008_encrypted_field_class")]

    operations = [
        migrations.AddField(
            model_name="emailaccount",
            name="add_signature",
            # On for every mailbox: a saved signature goes on being added as before.
            field=models.BooleanField(
                default=True, verbose_name="add signatures to outbound emails"
            ),
        ),
    ]
