from django.db import migrations, models

GOOGLE_REVOKE_URL = "https://oauth2.googleapis.com/revoke"


def google_revocation(apps, schema_editor):
    # The built-in Google card of an existing installation gets its revocation address,
    # unless an administrator made the card their own meanwhile.
    EmailProvider = apps.get_model("providers", "EmailProvider")
    EmailProvider.objects.filter(
        source="builtin", security_guide="gmail", oauth_revoke_url=""
    ).update(oauth_revoke_url=GOOGLE_REVOKE_URL)


class Migration(migrations.Migration):
    dependencies = [("providers", "0005_exchange_autodiscover")]

    operations = [
        migrations.AddField(
            model_name="emailprovider",
            name="oauth_revoke_url",
            field=models.URLField(
                blank=True,
                help_text="RFC 7009 token revocation (Google: https://oauth2.googleapis.com/revoke): a removed mailbox's refresh token is revoked there. Blank if the provider has none.",
                verbose_name="OAuth revocation address",
            ),
        ),
        migrations.RunPython(google_revocation, migrations.RunPython.noop),
    ]
