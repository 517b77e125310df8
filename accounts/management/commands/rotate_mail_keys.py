from django.core.management.base import BaseCommand

from accounts.services import credentials_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored credential (mailbox passwords, OAuth access and refresh "
        "tokens, OAuth client secrets, tokens waiting for revocation) under the first key "
        "in CREDENTIAL_KEYS. Put the new key first, run this, then remove the old key."
    )

    def handle(self, *args, **options):
        outcome = credentials_rotate()
        for name, count in sorted(outcome.fields.items()):
            self.stdout.write(f"  {name}: {count}")
        self.stdout.write(
            self.style.SUCCESS(f"Re-encrypted {outcome.values} values under the newest key.")
        )
