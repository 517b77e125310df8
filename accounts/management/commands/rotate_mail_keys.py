from django.core.management.base import BaseCommand

from accounts.services import credentials_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored mailbox password and OAuth secret under the first key in "
        "CREDENTIAL_KEYS. Put the new key first, run this, then remove the old key."
    )

    def handle(self, *args, **options):
        outcome = credentials_rotate()
        self.stdout.write(
            self.style.SUCCESS(
                f"Re-encrypted {outcome.accounts} mailbox passwords and "
                f"{outcome.providers} OAuth client secrets under the newest key."
            )
        )
