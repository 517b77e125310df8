"""Ships the built-in providers with the schema, so `migrate` alone yields a usable
directory. Runs once: an admin who later edits or deletes one keeps that choice
(`manage.py load_builtin_providers` brings back deleted ones on purpose)."""

from django.db import migrations


def create(apps, schema_editor):
    from providers.builtin import BUILTIN_PROVIDERS

    EmailProvider = apps.get_model("providers", "EmailProvider")
    ProviderDomain = apps.get_model("providers", "ProviderDomain")
    # Fields added by later migrations are set by those migrations.
    known = {field.name for field in EmailProvider._meta.get_fields()} | {"domains"}
    for spec in BUILTIN_PROVIDERS:
        spec = {
            key: str(value) if hasattr(value, "label") else value
            for key, value in spec.items()
            if key in known
        }
        domains = spec.pop("domains")
        provider, _ = EmailProvider.objects.get_or_create(
            name=spec["name"], defaults={**spec, "source": "builtin"}
        )
        taken = set(
            ProviderDomain.objects.filter(domain__in=domains).values_list("domain", flat=True)
        )
        ProviderDomain.objects.bulk_create(
            [
                ProviderDomain(domain=domain, provider=provider, source="builtin")
                for domain in domains
                if domain not in taken
            ]
        )


class Migration(migrations.Migration):
    dependencies = [("providers", "0001_initial")]
    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
