"""Storing fetched messages, for every protocol: a batch per transaction, and no
message able to fail another.

- A batch is stored in one transaction with a constant number of queries (the first
  sync's speed depends on it). If it fails, each message is stored on its own; one that
  still fails is stored as "unreadable" with its original kept and a note; one that
  cannot be stored even so is noted as an UnstoredMessage, retried by every run. The run
  goes on either way. Only our own infrastructure failing (the database gone, the disk
  full) stops it, since no message would store then.
- Identity: an email is the same email when its key agrees and its content agrees. A
  Message-ID alone is not trusted: a later message that reuses another's Message-ID (a
  broken mailer, a forged header) is kept as a second email with a note, under a key
  made of the Message-ID and its own content, instead of being folded into the first.
- Files (attachments, originals) are written under generated names and removed if the
  transaction that names them does not commit (sync/files.py).
- Counts are returned, never added during the transaction: a failed run reports what
  was committed, not what was rolled back.
"""

import errno
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import EmailAccount

from .bulk import insert_rows, insert_rows_skipping_existing
from .files import ATTACHMENTS, ORIGINALS, WrittenFiles, files_for_transaction
from .links import emails_link
from .models import Attachment, Email, EmailLocation, Folder, UnstoredMessage
from .parsing import UNREADABLE, ParsedEmail, fingerprint
from .search import vectors_fill_soon, vectors_later

logger = logging.getLogger(__name__)

# Two copies of one message may carry dates a little apart (a server that rewrites the
# Date header when it converts a message, as Exchange does); two different messages with
# one Message-ID differ in sender, subject or day.
SAME_MESSAGE_DATES = timedelta(minutes=15)


@dataclass
class Spooled:
    """A large message's parts kept in temporary files instead of memory (sync/large.py):
    attachment bodies by the token that stands for them in the parsed message, and the
    original (gzip) when one is to be kept."""

    # token: (temporary file, size, name, content type)
    attachments: dict[bytes, tuple[str, int, str, str]] = field(default_factory=dict)
    # token: (size, name, content type) of parts listed, not downloaded
    listed: dict[bytes, tuple[int, str, str]] = field(default_factory=dict)
    original: str = ""  # a gzip file's path
    # The message as the server described it (its structure and body size): what its
    # content key is made of, as no whole body was read.
    structure: str = ""

    def cleanup(self) -> None:
        import contextlib
        import os

        for path, *_rest in self.attachments.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self.original:
            with contextlib.suppress(OSError):
                os.unlink(self.original)


@dataclass
class Fetched:
    """One message on its way from the server to the database: known by its UID over
    IMAP, by the server's id (`item_id`, `uid` None) where it reads by changes."""

    uid: int | None
    parsed: ParsedEmail
    seen: bool
    size: int
    raw: bytes | None = None  # the message as the server sent it (all but large ones)
    spooled: Spooled | None = None  # large ones
    item_id: str = ""  # the server's id of it where it reads by changes (no UID then)
    content_key: str = ""  # set when it is stored (`content_key`)


@dataclass
class Stored:
    emails: int = 0
    locations: int = 0
    problems: int = 0
    unstored: int = 0

    def add(self, other: "Stored") -> None:
        self.emails += other.emails
        self.locations += other.locations
        self.problems += other.problems
        self.unstored += other.unstored


def ours(error: BaseException) -> bool:
    """Whether an error is our own infrastructure's (the database gone, the disk full),
    which storing message by message would only meet again."""
    if isinstance(error, OperationalError | InterfaceError | MemoryError):
        return True
    return isinstance(error, OSError) and error.errno in (
        errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
    )  # fmt: skip


def _normalized_subject(subject: str) -> str:
    return " ".join(subject.split()).casefold()


# Email.content_key of an email this app made from a message it sent: its Message-ID is
# its own, and the server's copy of it may be re-rendered (Exchange rewrites the MIME and
# the Date), so only the sender and subject are compared.
SENT_BY_APP = "sent"


def content_key(item: "Fetched") -> str:
    """What a message's content is, from the bytes the server gave (so neither a parser
    of another version nor other limits change it), cheaply, as it is computed for every
    message a first sync stores: its body's length, start and end, or for a message read
    part by part its structure. Copies of one message are the same bytes (its headers
    may differ: each delivery adds its own), so this agrees for them, and tells a
    different message that reuses a Message-ID (a forged correction, a mailer with one
    Message-ID for all its mail) from the first."""
    digest = hashlib.blake2b(digest_size=12)
    if item.raw is not None:
        raw = item.raw
        cut = raw.find(b"\r\n\r\n")
        body = raw[cut + 4 :] if cut != -1 else raw[raw.find(b"\n\n") + 2 :]
        digest.update(b"%d\0" % len(body))
        digest.update(body[:256])
        digest.update(body[-256:])
    elif item.spooled is not None:
        digest.update(item.spooled.structure.encode("utf-8", "surrogatepass"))
    else:  # nothing of the server's: what was read of it
        digest.update(item.parsed.text_body.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def same_message(stored: tuple, parsed: ParsedEmail, key: str) -> bool:
    """Whether a stored email (from address, subject, date, content key) and a parsed
    message (with content key `key`) that carry the same Message-ID are one message."""
    from_address, subject, sent_at, stored_key = stored
    if (from_address or "").lower() != (parsed.from_address or "").lower():
        return False
    if _normalized_subject(subject or "") != _normalized_subject(parsed.subject or ""):
        return False
    if stored_key == SENT_BY_APP:
        return True
    if stored_key and stored_key != key:  # "": stored before content keys existed
        return False
    if sent_at is None or parsed.sent_at is None:
        return True
    return abs(sent_at - parsed.sent_at) <= SAME_MESSAGE_DATES


def second_key(parsed: ParsedEmail, key: str) -> str:
    """The key of a message whose Message-ID another email of the mailbox already has:
    the Message-ID and what makes this message another one, so that its other copies
    (in other folders, on later runs) find it again."""
    digest = hashlib.sha256()
    for value in (parsed.from_address, _normalized_subject(parsed.subject), key):
        digest.update((value or "").encode("utf-8", "surrogatepass") + b"\0")
    digest.update(parsed.sent_at.isoformat().encode() if parsed.sent_at else b"")
    return f"{parsed.message_key[:480]}#{digest.hexdigest()[:16]}"


def stored_emails(account_id: int, keys: set[str]) -> dict[str, tuple[int, tuple]]:
    """{message key: (email id, (from address, subject, date, content key))} of the
    mailbox's emails among `keys`.

    On PostgreSQL, one unique-index lookup per key, whatever the table's statistics say.
    `message_key IN (...)` leaves the choice to the planner, and while a first sync fills
    the table faster than statistics follow (autovacuum's analyze runs a minute later, if
    at all), it chose to read all the mailbox's rows through email_account_sent: a
    lookup that grew with every batch: 34 ms instead of 2.7 ms for 112 keys among 10,000
    emails (and the benchmark's 60,000 deleted rows: autovacuum is off on this server)."""
    if not keys:
        return {}
    if connection.vendor != "postgresql":
        rows = Email.objects.filter(account_id=account_id, message_key__in=keys).values_list(
            "message_key", "pk", "from_address", "subject", "sent_at", "content_key"
        )
    else:
        sql = (
            "SELECT k.key, e.id, e.from_address, e.subject, e.sent_at, e.content_key "  # noqa: S608
            "FROM unnest(%s::varchar[]) AS k(key) CROSS JOIN LATERAL "
            f"(SELECT id, from_address, subject, sent_at, content_key FROM {Email._meta.db_table} "
            "WHERE account_id = %s AND message_key = k.key LIMIT 1) AS e"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [list(keys), account_id])
            rows = cursor.fetchall()
    return {key: (pk, tuple(known)) for key, pk, *known in rows}


def _where(uidvalidity: int, uid: int | None, item_id: str) -> dict:
    """How a server copy is found: by the server's id where it has one, else by its
    UID (a null UID would match every message without one)."""
    if item_id:
        return {"item_id": item_id}
    return {"uidvalidity": uidvalidity, "uid": uid}


class Store:
    """Stores batches of one mailbox's fetched messages (see the module's docstring)."""

    def __init__(self, *, account: EmailAccount, create_contacts: Callable[[], bool]):
        self.account = account
        self.create_contacts = create_contacts
        self.own_domains = {account.address.split("@", 1)[-1].lower()}

    def batch(self, folder: Folder, uidvalidity: int, items: list[Fetched]) -> Stored:
        """Store `items` (a folder's messages); returns what was committed."""
        if not items:
            return Stored()
        try:
            with files_for_transaction() as files, transaction.atomic():
                return self._batch(files, folder, uidvalidity, items)
        except Exception as error:
            if ours(error):
                raise
            if len(items) > 1:
                logger.info("A batch of %s in folder %s failed (%r); storing one by one",
                            len(items), folder.pk, error)  # fmt: skip
                stored = Stored()
                for item in items:
                    stored.add(self.batch(folder, uidvalidity, [item]))
                return stored
            return self._unreadable(folder, uidvalidity, items[0], error)

    def _batch(
        self, files: WrittenFiles, folder: Folder, uidvalidity: int, items: list[Fetched]
    ) -> Stored:
        targets, new = self._identify(items)
        now = timezone.now()
        rows = []
        for key, item in new.items():
            original = self._original(files, item) if item.parsed.problem else ""
            rows.append(_email_row(self.account.pk, key, item, now, original))
        with vectors_later():
            created = dict(zip(new, insert_rows(Email, EMAIL_COLUMNS, rows), strict=True))
        if created:
            vectors_fill_soon()
        email_ids = [created[t] if isinstance(t, str) else t for t in targets]
        # Skipping those stored by an earlier, interrupted run.
        insert_rows_skipping_existing(
            EmailLocation,
            ["email_id", "folder_id", "uidvalidity", "uid", "item_id"],
            [
                (email_id, folder.pk, uidvalidity, item.uid, item.item_id)
                for email_id, item in zip(email_ids, items, strict=True)
            ],
        )
        attachments = []
        for key, item in new.items():
            attachments += self._attachments(files, created[key], item)
        Attachment.objects.bulk_create(attachments)
        emails_link(
            emails=[
                (
                    created[key],
                    {item.parsed.from_address: item.parsed.from_name}
                    | {a["address"]: a["name"] for a in item.parsed.to + item.parsed.cc},
                    item.parsed.from_address,
                )
                for key, item in new.items()
            ],
            own_domains=self.own_domains,
            create_for_unknown_senders=self.create_contacts(),
        )
        return Stored(
            emails=len(new),
            locations=len(items),
            problems=sum(1 for item in new.values() if item.parsed.problem),
        )

    def _identify(self, items: list[Fetched]) -> tuple[list[int | str], dict[str, Fetched]]:
        """For each item, the email it is: a stored one's id, or the key of a new one
        (`new` maps those keys to the first item with it). A Message-ID shared by
        different messages gives the later one a key of its own (`second_key`). Sets
        each item's content key."""
        keys = {item.parsed.message_key for item in items}
        keys |= {item.parsed.legacy_key for item in items if item.parsed.legacy_key}
        existing = stored_emails(self.account.pk, keys)
        new: dict[str, Fetched] = {}
        targets: list[int | str | None] = []
        differing = []
        for index, item in enumerate(items):
            parsed = item.parsed
            item.content_key = content_key(item)
            key, legacy = parsed.message_key, parsed.legacy_key
            target: int | str | None
            if key in existing:
                email_id, known = existing[key]
                agrees = not parsed.message_id or same_message(known, parsed, item.content_key)
                target = email_id if agrees else None
            elif legacy and legacy in existing:
                target = existing[legacy][0]
            elif key in new:
                first = new[key]
                known = (
                    first.parsed.from_address, first.parsed.subject, first.parsed.sent_at,
                    first.content_key,
                )  # fmt: skip
                agrees = not parsed.message_id or same_message(known, parsed, item.content_key)
                target = key if agrees else None
            else:
                new[key] = item
                target = key
            if target is None:
                differing.append(index)
            targets.append(target)
        if differing:
            wanted = {second_key(items[i].parsed, items[i].content_key) for i in differing}
            seconds = stored_emails(self.account.pk, wanted)
            for index in differing:
                item = items[index]
                key = second_key(item.parsed, item.content_key)
                if key in seconds:
                    targets[index] = seconds[key][0]
                    continue
                if key not in new:
                    item.parsed.notes.append(
                        f"Another email in this mailbox has the same Message-ID "
                        f"<{item.parsed.message_id}>; this one differs from it (sender, "
                        "subject, date or content), so both are kept."
                    )
                    new[key] = item
                targets[index] = key
        return targets, new  # type: ignore[return-value]

    def _original(self, files: WrittenFiles, item: Fetched) -> str:
        if item.spooled is not None and item.spooled.original:
            return files.save_path(ORIGINALS, item.spooled.original, suffix=".eml.gz")
        if item.raw is not None:
            return files.save_original(item.raw)
        return ""

    def _attachments(self, files: WrittenFiles, email_id: int, item: Fetched) -> list:
        spooled = item.spooled
        tokens = {}
        if spooled is not None:
            tokens = {token: token for token in (*spooled.attachments, *spooled.listed)}
        made = []
        for attachment in item.parsed.attachments:
            token = tokens.pop(attachment.data.strip(), None) if tokens else None
            if token is None:
                made.append(
                    Attachment(
                        email_id=email_id, name=attachment.name,
                        content_type=attachment.content_type, size=len(attachment.data),
                        file=files.save(ATTACHMENTS, attachment.data, like=attachment.name),
                        content_id=attachment.content_id,
                    )
                )  # fmt: skip
            else:
                made.append(
                    self._spooled(
                        files, email_id, spooled, token, attachment.name, attachment.content_id
                    )
                )
        # A large part the parser did not take for an attachment is one all the same.
        for token in tokens:
            made.append(self._spooled(files, email_id, spooled, token, ""))
        return made

    def _spooled(
        self, files, email_id: int, spooled: Spooled, token: bytes, name: str, cid: str = ""
    ):
        if token in spooled.attachments:
            path, size, own_name, content_type = spooled.attachments[token]
            name = name or own_name or "attachment"
            stored = files.save_path(ATTACHMENTS, path, like=name)
        else:
            size, own_name, content_type = spooled.listed[token]
            name, stored = name or own_name or "attachment", ""
        return Attachment(
            email_id=email_id, name=name[:1000], content_type=content_type[:255], size=size,
            file=stored, content_id=cid,
        )  # fmt: skip

    def _unreadable(
        self, folder: Folder, uidvalidity: int, item: Fetched, error: Exception
    ) -> Stored:
        """A message whose storing failed even on its own: stored with what is surely
        storable (its headers as parsed, cut to size) and its original, with a note. A
        message read part by part has no original: its parts are stored with it, or,
        should they be what fails, it is stored without them and says so."""
        read_in_parts = item.raw is None and item.spooled is not None
        with_parts = read_in_parts and not item.spooled.original
        try:
            return self._unreadable_row(folder, uidvalidity, item, error, with_parts)
        except Exception as second:
            if ours(second):
                raise
            if with_parts:
                try:
                    return self._unreadable_row(folder, uidvalidity, item, second, False)
                except Exception as third:
                    if ours(third):
                        raise
                    second = third
            why = f"It could not be stored ({error!r}; then {second!r})."[:2000]
            return self.unstored(folder, uidvalidity, item.uid, why, item.item_id)

    def _unreadable_row(
        self, folder: Folder, uidvalidity: int, item: Fetched, error: Exception,
        with_parts: bool,
    ) -> Stored:  # fmt: skip
        parsed = item.parsed
        if item.raw is not None or (item.spooled is not None and item.spooled.original):
            kept = "its original is kept"
        elif with_parts:
            kept = "its parts are kept as attachments (it was read part by part)"
        else:
            kept = "it was read part by part and its parts could not be stored: only this is"
        why = f"{type(error).__name__}: {str(error)[:300]}"
        note = f"It could not be stored normally ({why}); {kept}."
        # A key of its own: it must not be taken for another email with its Message-ID.
        if item.raw is not None:
            key = fingerprint(item.raw)
        else:
            key = f"{parsed.message_key[:440]}#unreadable-{content_key(item)}"
        with files_for_transaction() as files, transaction.atomic():
            email = Email.objects.filter(account=self.account, message_key=key).first()
            created = email is None
            if created:
                email = Email.objects.create(
                    account=self.account,
                    message_key=key[:500],
                    message_id=parsed.message_id[:500],
                    subject=parsed.subject[:1000],
                    from_address=parsed.from_address[:254],
                    from_name=parsed.from_name[:255],
                    sent_at=parsed.sent_at,
                    size=item.size,
                    seen=item.seen,
                    problem=UNREADABLE,
                    notes="\n".join([*parsed.notes, note]),
                    original=self._original(files, item),
                )
                if with_parts:
                    Attachment.objects.bulk_create(self._attachments(files, email.pk, item))
            where = _where(uidvalidity, item.uid, item.item_id)
            EmailLocation.objects.get_or_create(
                folder=folder, **where,
                defaults={"email": email, "uidvalidity": uidvalidity, "uid": item.uid,
                          "item_id": item.item_id},
            )  # fmt: skip
            UnstoredMessage.objects.filter(folder=folder, **where).delete()
        return Stored(emails=int(created), locations=1, problems=int(created))

    def unstored(
        self, folder: Folder, uidvalidity: int, uid: int | None, error: str, item_id: str = ""
    ) -> Stored:
        """A message not stored at all: noted, to be tried again by the next runs."""
        try:
            with transaction.atomic():
                where = _where(uidvalidity, uid, item_id)
                noted, created = UnstoredMessage.objects.get_or_create(
                    folder=folder, **where,
                    defaults={"error": error, "uidvalidity": uidvalidity, "uid": uid,
                              "item_id": item_id},
                )  # fmt: skip
                if not created:
                    noted.error = error
                    noted.attempts += 1
                    noted.last_failed_at = timezone.now()
                    noted.save(update_fields=["error", "attempts", "last_failed_at"])
        except DatabaseError as failure:
            if ours(failure):
                raise
            logger.warning("Could not note UID %s / item %s of folder %s: %r",
                           uid, item_id[-12:], folder.pk, failure)  # fmt: skip
        return Stored(unstored=1)


# The columns of a new email's row, in _email_row's order.
EMAIL_COLUMNS = [
    "account_id", "message_key", "message_id", "subject", "from_address", "from_name", "to",
    "cc", "sent_at", "text_body", "html_body", "size", "seen", "in_reply_to", "references",
    "problem", "notes", "original", "content_key", "created_at",
]  # fmt: skip


def _email_row(account_id: int, key: str, item: Fetched, now, original: str) -> tuple:
    parsed = item.parsed
    return (
        account_id,
        key,
        parsed.message_id,
        parsed.subject,
        parsed.from_address,
        parsed.from_name,
        parsed.to,
        parsed.cc,
        parsed.sent_at,
        parsed.text_body,
        parsed.html_body,
        item.size,
        item.seen,
        parsed.in_reply_to,
        parsed.references,
        parsed.problem,
        "\n".join(parsed.notes),
        original,
        item.content_key,
        now,
    )


def sent_email_store(
    *, account: EmailAccount, raw: bytes, message_id: str, to: list[dict], cc: list[dict],
    bcc: list[dict], in_reply_to: str, references: str, files: WrittenFiles,
) -> Email:  # fmt: skip
    """The email this app just sent from the mailbox, on the timelines at once: the same
    email the sync makes of the Sent copy later (its key is the Message-ID, as the
    parsed copy's, and its content key SENT_BY_APP lets `same_message` take the
    server's re-rendered copy for it), so the sync only adds the copy's folder. Made
    once: a sync that stored the copy first, or a second call, finds it. Call it inside
    the caller's transaction, with `files` of files_for_transaction."""
    from .parsing import parse_message

    parsed = parse_message(raw)
    email, created = Email.objects.get_or_create(
        account=account,
        message_key=message_id,
        defaults={
            "message_id": message_id,
            # As the sync reads them from the Sent copy (the subject decoded from the
            # message, not as typed), so that the copy is found to be this email.
            "subject": parsed.subject,
            "from_address": parsed.from_address or account.address.lower(),
            "content_key": SENT_BY_APP,
            "from_name": account.display_name,
            "to": to,
            "cc": cc,
            # The message's own Date, as the sync reads it from the Sent copy: a copy
            # whose date disagrees by more than minutes would count as another email.
            "sent_at": parsed.sent_at or timezone.now(),
            "text_body": parsed.text_body,
            "html_body": parsed.html_body,
            "size": len(raw),
            "seen": True,
            "in_reply_to": in_reply_to,
            "references": references,
        },
    )
    if created:
        Attachment.objects.bulk_create(
            Attachment(
                email=email,
                name=attachment.name,
                content_type=attachment.content_type,
                size=len(attachment.data),
                file=files.save(ATTACHMENTS, attachment.data, like=attachment.name),
                content_id=attachment.content_id,
            )
            for attachment in parsed.attachments
        )
        emails_link(
            emails=[(email.pk, {p["address"]: p.get("name", "") for p in to + cc + bcc}, "")],
            own_domains={account.address.rsplit("@", 1)[-1].lower()},
        )
    return email


def locations_forget(*, locations: QuerySet) -> int:
    """Forget where emails were (a folder renumbered, messages gone from the server):
    the rows of `locations` (EmailLocation) go, the emails stay on the timelines.
    Returns how many went."""
    return locations.delete()[0]


def emails_seen_set(*, locations: QuerySet, seen: bool) -> int:
    """Mark the emails at `locations` (EmailLocation rows) read or unread, as the
    server says; one query. Returns how many changed."""
    return Email.objects.filter(locations__in=locations).exclude(seen=seen).update(seen=seen)
