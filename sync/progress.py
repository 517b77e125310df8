"""What the status shows of a download while it runs (issue 17, point 4).

Folders done of those the run goes through, and emails stored (the run's counts, saved
with every batch). In a first download (a folder never downloaded before) also how far
it is: the messages its folders hold on the server, from the status the run reads
anyway, against those handled so far; a folder counts whole once it is done (its mail
outside the period included), so the bar only moves forward and ends full.

An idle run writes nothing more than before: its record is written at its end, as ever.
A first download writes its record at its start, so the page shows it at once; a run
that stores mail writes it with its first batch; after that, a finished folder updates
the record at most once a second (a run through hundreds of unchanged folders would
otherwise write once per folder).
"""

import time

from .models import SyncRun

WRITE_EVERY = 1.0  # seconds


class RunProgress:
    def __init__(self, run: SyncRun):
        self.run = run
        self.counts: dict[str, int] = {}
        self.done = 0  # messages in the folders finished so far
        self.folder_messages = 0
        self.folder_handled = 0
        self.written = 0.0

    def start(self, folders: list, counts: dict[str, int] | None = None) -> None:
        """The run's folders; `counts` (path -> messages on the server) in a first
        download, whose record is then written at once."""
        self.run.folders_total = len(folders)
        if counts is not None:
            self.counts = counts
            self.run.messages_total = sum(counts.values())
            self.run.save()
            self.written = time.monotonic()

    def folder_started(self, path: str) -> None:
        self.folder_messages = self.counts.get(path, 0)
        self.folder_handled = 0

    def handled(self, messages: int) -> None:
        """Messages of the current folder stored (or noted as not storable)."""
        self.folder_handled += messages
        if self.counts:
            self.run.messages_done = self.done + min(self.folder_handled, self.folder_messages)

    def folder_finished(self, path: str) -> None:
        self.run.folders_done += 1
        if self.counts:
            self.done += self.counts.get(path, 0)
            self.run.messages_done = self.done
        if self.run.pk is not None and time.monotonic() - self.written >= WRITE_EVERY:
            self.write()

    def write(self) -> None:
        self.written = time.monotonic()
        self.run.save(update_fields=PROGRESS_FIELDS)


PROGRESS_FIELDS = ["folders_total", "folders_done", "messages_total", "messages_done"]
