"""Files written for rows of a transaction (attachments, kept originals), under
generated names, and removed again when that transaction does not commit.

A name from the message (`/home/user/scan.jpg`, `..`, `★`) is never part of a path:
Django's storage refuses many of them, and the refusal used to fail the whole batch on
every run. Files are written before the rows that point to them commit; a transaction
that raises removes what it wrote at once (`files_for_transaction`), and a worker killed
between the two leaves files no row names, which `orphans_delete` removes later.
"""

import contextlib
import gzip
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.utils import timezone

ATTACHMENTS = "attachments"
ORIGINALS = "originals"
# A safe extension from the sender's name helps whoever browses the storage; nothing
# else of that name is used.
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,8})$")


def generated_name(folder: str, *, like: str = "", suffix: str = "") -> str:
    found = _EXTENSION.search(like or "")
    extension = suffix or (f".{found.group(1).lower()}" if found else "")
    return f"{folder}/{timezone.now():%Y/%m}/{uuid.uuid4().hex}{extension}"


class WrittenFiles:
    """The files written for one transaction; `discard()` removes them."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def save(self, folder: str, data: bytes, *, like: str = "", suffix: str = "") -> str:
        name = default_storage.save(
            generated_name(folder, like=like, suffix=suffix), ContentFile(data)
        )
        self.names.append(name)
        return name

    def save_path(self, folder: str, path: str, *, like: str = "", suffix: str = "") -> str:
        """A file made elsewhere (a large attachment spooled to disk), copied in in
        chunks: never whole in memory."""
        with open(path, "rb") as handle:
            name = default_storage.save(
                generated_name(folder, like=like, suffix=suffix), File(handle)
            )
        self.names.append(name)
        return name

    def save_original(self, raw: bytes) -> str:
        return self.save(ORIGINALS, gzip.compress(raw, compresslevel=6), suffix=".eml.gz")

    def discard(self) -> None:
        for name in self.names:
            with contextlib.suppress(OSError):
                default_storage.delete(name)
        self.names.clear()


_open = threading.local()


@contextlib.contextmanager
def files_for_transaction() -> Iterator[WrittenFiles]:
    """Put the transaction inside: `with files_for_transaction() as files,
    transaction.atomic(): ...`. If the block or its commit raises, the files go. Nested
    in another (a savepoint inside an outer transaction), what it wrote joins the outer
    set when it succeeds: whether they stay is the outer transaction's to decide."""
    files = WrittenFiles()
    stack = _open.__dict__.setdefault("stack", [])
    stack.append(files)
    try:
        yield files
    except BaseException:
        files.discard()
        raise
    else:
        if len(stack) > 1:
            stack[-2].names.extend(files.names)
    finally:
        stack.pop()


def original_open(name: str):
    """A kept original, decompressed as it is read."""
    return gzip.open(default_storage.open(name, "rb"))


def orphans_delete(*, older_than: timedelta = timedelta(hours=1), months: int = 2) -> int:
    """Remove attachment and original files that no row names: those of a worker killed
    between writing them and committing. Only files older than `older_than` (a live
    transaction may be about to commit the rest) in the last `months` month folders
    (older ones were checked by earlier sweeps). Returns how many were removed."""
    from .models import Attachment, Email

    cutoff = timezone.now() - older_than
    removed = 0
    for folder, model, field in (
        (ATTACHMENTS, Attachment, "file"),
        (ORIGINALS, Email, "original"),
    ):
        for month in _recent_months(months):
            path = f"{folder}/{month:%Y/%m}"
            try:
                _dirs, files = default_storage.listdir(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            candidates = []
            for file in files:
                name = f"{path}/{file}"
                with contextlib.suppress(OSError):
                    modified = default_storage.get_modified_time(name)
                    if modified < cutoff:
                        candidates.append(name)
            for start in range(0, len(candidates), 1000):
                chunk = candidates[start : start + 1000]
                known = set(
                    model.objects.filter(**{f"{field}__in": chunk}).values_list(field, flat=True)
                )
                for name in chunk:
                    if name not in known:
                        with contextlib.suppress(OSError):
                            default_storage.delete(name)
                            removed += 1
    return removed


def _recent_months(count: int) -> list[datetime]:
    first = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    months = [first]
    for _ in range(count - 1):
        first = (first - timedelta(days=1)).replace(day=1)
        months.append(first)
    return months


def safe_download_name(name: str) -> str:
    """The sender's file name as a download should carry it: its last path part, without
    control characters; Django writes it as RFC 6266 `filename*` when it is not ASCII."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().strip(".")
    return base[:200] or "attachment"


def mailbox_files_delete_on_commit(sender, account, **kwargs) -> None:
    """accounts.signals.mailbox_deleting: the mailbox goes with its emails; their
    attachment files and kept originals go once the deletion has committed (should it
    roll back, every file is still there for the rows that stay)."""
    from django.db import transaction

    from .models import Attachment, Email

    names = [
        *Attachment.objects.filter(email__account=account)
        .exclude(file="")
        .values_list("file", flat=True),
        *Email.objects.filter(account=account)
        .exclude(original="")
        .values_list("original", flat=True),
    ]
    if names:
        transaction.on_commit(lambda: _files_delete(names))


def _files_delete(names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(OSError):
            default_storage.delete(name)
