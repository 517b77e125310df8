"""The built-in cards' OAuth 2.0 addresses (authorization, token, revocation), which
0004 added as fields without filling in: a fresh install's Microsoft 365 and
Outlook.com cards had none, so "Sign in with Microsoft" waited for an administrator to
type Microsoft's addresses. Filled in where empty only: an address an administrator
entered stays."""

from django.db import migrations

FIELDS = ("oauth_authorize_url", "oauth_token_url", "oauth_revoke_url")


def fill(apps, schema_editor):
    from providers.builtin import BUILTIN_PROVIDERS

    EmailProvider = apps.get_model("providers", "EmailProvider")
    for spec in BUILTIN_PROVIDERS:
        wanted = {key: spec[key] for key in FIELDS if spec.get(key)}
        if not wanted:
            continue
        for card in EmailProvider.objects.filter(name=spec["name"], source="builtin"):
            empty = {key: value for key, value in wanted.items() if not getattr(card, key)}
            if empty:
                EmailProvider.objects.filter(pk=card.pk).update(**empty)


class Migration(migrations.Migration):
    dependencies = [("providers", "0008_graph_service_type")]
    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
