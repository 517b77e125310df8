from django.core.management.base import BaseCommand

from providers.services import provider_load_builtins


class Command(BaseCommand):
    help = "Create the built-in providers and domains that are missing; admin edits are kept."

    def handle(self, *args, **options):
        outcomes = provider_load_builtins()
        created = [o.provider.name for o in outcomes if o.created]
        domains = sum(len(o.domains_added) for o in outcomes)
        self.stdout.write(
            self.style.SUCCESS(
                f"Built-in providers: {len(created)} created, {len(outcomes) - len(created)} "
                f"already present; {domains} domains added."
            )
        )
