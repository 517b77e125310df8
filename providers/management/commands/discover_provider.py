from django.core.management.base import BaseCommand, CommandError

from providers.addresses import AddressError
from providers.discovery import discover


class Command(BaseCommand):
    help = "Show which provider serves an email address, and every step discovery took."

    def add_arguments(self, parser):
        parser.add_argument("address")

    def handle(self, *args, address: str, **options):
        try:
            result = discover(address)
        except AddressError as error:
            raise CommandError(str(error)) from None
        for line in result.trace:
            self.stdout.write(f"  {line}")
        if result.found:
            self.stdout.write(
                self.style.SUCCESS(f"{result.address}: {result.found_via}: {result.provider}")
            )
            return
        for suggestion in result.suggestions:
            self.stdout.write(
                self.style.WARNING(
                    f"{result.address}: suggestion to confirm: {suggestion.provider} "
                    f"({suggestion.evidence})"
                )
            )
        if result.unsupported:
            self.stdout.write(self.style.WARNING(f"{result.address}: {result.unsupported}"))
        elif not result.suggestions:
            self.stdout.write(self.style.WARNING(f"{result.address}: no provider found"))
