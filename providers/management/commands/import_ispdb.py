from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from providers.ispdb import ClientConfigError, parse_client_config
from providers.models import Source
from providers.services import UnsupportedProvider, provider_import_config


class Command(BaseCommand):
    help = (
        "Load a folder of Thunderbird ISPDB files (clientConfig 1.1 XML). Running it again "
        "changes nothing; a changed file updates its provider. Providers an admin maintains "
        "keep their settings."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)

    def handle(self, *args, directory: Path, **options):
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a folder.")
        files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix == ".xml")
        if not files:
            raise CommandError(f"{directory} holds no .xml files.")
        counts = {"created": 0, "updated": 0, "unchanged": 0, "skipped": 0, "failed": 0}
        for path in files:
            try:
                config = parse_client_config(path.read_bytes())
                outcome = provider_import_config(config=config, source=Source.ISPDB)
            except ClientConfigError as error:
                counts["failed"] += 1
                self.stderr.write(f"{path.name}: not imported: {error}")
                continue
            except UnsupportedProvider as error:
                counts["skipped"] += 1
                self.stdout.write(f"{path.name}: skipped: {error}")
                continue
            if outcome.created:
                counts["created"] += 1
                self.stdout.write(f"{path.name}: created {outcome.provider.name}")
            elif outcome.changed:
                counts["updated"] += 1
                self.stdout.write(f"{path.name}: updated {outcome.provider.name}")
            else:
                counts["unchanged"] += 1
            if outcome.domains_kept:
                self.stdout.write(
                    f"{path.name}: left {', '.join(outcome.domains_kept)} with the provider "
                    "an admin or a user chose"
                )
        summary = ", ".join(f"{count} {name}" for name, count in counts.items())
        self.stdout.write(self.style.SUCCESS(f"{len(files)} files: {summary}."))
        if counts["failed"]:
            raise CommandError(f"{counts['failed']} files could not be read.")
