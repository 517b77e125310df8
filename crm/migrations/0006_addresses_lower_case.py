"""Contact addresses in lower case, as emails store them and as the app now saves them:
one typed "Carl@X.test" in the admin matched none of Carl's emails. An address whose
lower-case form another row holds already stays as it is (merging two contacts is a
person's decision, not a migration's)."""

from django.db import migrations


def lower_case(apps, schema_editor):
    ContactAddress = apps.get_model("crm", "ContactAddress")
    taken = set(ContactAddress.objects.values_list("address", flat=True))
    for row in ContactAddress.objects.all().only("pk", "address").iterator():
        wanted = row.address.strip().lower()
        if wanted != row.address and wanted not in taken:
            taken.discard(row.address)
            taken.add(wanted)
            ContactAddress.objects.filter(pk=row.pk).update(address=wanted)


class Migration(migrations.Migration):
    dependencies = [("crm", "0005_job_title_trigram_index")]

    operations = [migrations.RunPython(lower_case, migrations.RunPython.noop)]
