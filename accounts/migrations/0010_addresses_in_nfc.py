# Addresses are kept in NFC from now on (providers.addresses._normalize_local): a name
# stored in another form before ("ju\u0308rgen@…", typed on a Mac) would no longer be
# found when typed again, and the same mailbox could be added a second time. Each such
# address is rewritten in NFC, unless its owner has that spelling already (two rows of
# one mailbox, made before: both kept as they are, for a person to look at).
import unicodedata

from django.db import migrations


def forwards(apps, schema_editor):
    EmailAccount = apps.get_model("accounts", "EmailAccount")
    for account in EmailAccount.objects.only("pk", "owner_id", "address").iterator():
        nfc = unicodedata.normalize("NFC", account.address)
        if nfc == account.address:
            continue
        taken = EmailAccount.objects.filter(owner_id=account.owner_id, address=nfc).exists()
        if not taken:
            EmailAccount.objects.filter(pk=account.pk).update(address=nfc)


class Migration(migrations.Migration):
    dependencies = [("accounts", "0009_add_signature_switch")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
