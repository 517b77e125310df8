from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import Value
from django.db.models.functions import Concat, Upper
from django.utils import timezone

from accounts.models import EmailAccount
from crm.models import Company, Contact
from mailsetup.fields import StoredGeneratedField
from mailsetup.indexes import PostgresCoveringIndex


class WorkerHeartbeat(models.Model):
    """The last time beat's heartbeat went through the broker and a worker ran it.

    One row; the health page reads it to tell whether scheduled work is flowing.
    """

    name = models.CharField(max_length=50, primary_key=True)
    beat_at = models.DateTimeField()
    hostname = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.beat_at:%Y-%m-%d %H:%M:%S}"


class MailboxSync(models.Model):
    """A mailbox's sync state: when it last ran, whether it needs its owner, and the
    claim that keeps two workers from syncing it at once."""

    class Health(models.TextChoices):
        OK = "ok", "OK"
        NEEDS_ATTENTION = "needs_attention", "Needs your attention"

    account = models.OneToOneField(EmailAccount, on_delete=models.CASCADE, related_name="sync")
    # The dispatcher's one indexed query: every mailbox whose last sync is older than
    # the interval. Null until the first run.
    last_started_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=36, blank=True)
    health = models.CharField(max_length=20, choices=Health.choices, default=Health.OK)
    last_error = models.TextField(blank=True)
    # The kind of the last failure (mail.errors), and since when runs have failed
    # without a success in between: a mailbox that keeps failing must not read "OK".
    last_error_kind = models.CharField(max_length=30, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    # Exchange: when meetings, tasks and contacts were last read (at most hourly, as
    # they change far less often than mail and cost more to read).
    items_imported_at = models.DateTimeField(null=True, blank=True)
    # "Download emails now" was pressed and no run has claimed the mailbox since: the
    # status page shows that the download is about to start, and keeps looking.
    download_requested_at = models.DateTimeField(null=True, blank=True)
    # The server asked to be left alone until then (Retry-After on a throttled or busy
    # answer): the dispatcher queues the mailbox no sooner, nor does the run's retry.
    not_before = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sync of {self.account}"


class Folder(models.Model):
    account = models.ForeignKey(EmailAccount, on_delete=models.CASCADE, related_name="folders")
    path = models.CharField(max_length=1000)  # the server's name, decoded from modified UTF-7
    delimiter = models.CharField(max_length=5, blank=True)
    special_use = models.CharField(max_length=20, blank=True)  # \Sent, \Trash, ...
    selectable = models.BooleanField(default=True)
    chosen = models.BooleanField(default=False)  # for "customized folders"
    # With "chosen": its subfolders too, those made later included.
    include_subfolders = models.BooleanField(default=False)
    exists_on_server = models.BooleanField(default=True)
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(default=0)  # every UID up to here is stored
    uidnext = models.BigIntegerField(null=True, blank=True)
    highestmodseq = models.BigIntegerField(null=True, blank=True)
    messages = models.PositiveIntegerField(null=True, blank=True)
    # The oldest date downloaded so far; extending the period fetches before it.
    synced_since = models.DateField(null=True, blank=True)
    # A server that reads by changes (mail.reading: Exchange, Graph): the folder's id
    # there, and the state after the last page of changes applied (IMAP folders have
    # neither: UIDVALIDITY and the UIDs say where a download stands).
    server_id = models.CharField(max_length=512, blank=True)
    sync_state = models.TextField(blank=True)
    # Without CONDSTORE a flag change shows in no status item: read flags are checked by
    # asking for the flags of stored UIDs, the newest every run and the older ones a
    # slice per run from here, so the cost of a run stays bounded however large the
    # folder (0: start again from the top).
    flags_checked_below = models.BigIntegerField(default=0)
    # The folder's own trouble, apart from the mailbox's: the server refused to open it
    # or to give its messages. Kept until a run gets through it; shown on the page.
    last_error = models.TextField(blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    # When the first of the folder's unstored messages is due to be tried again: until
    # then an unchanged folder is skipped as usual, with no query for them.
    retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["account", "path"], name="folder_unique_path")
        ]

    def __str__(self) -> str:
        return self.path


class Email(models.Model):
    """One message, stored once per mailbox however many folders hold it."""

    class Problem(models.TextChoices):
        NONE = "", "None"
        UNREADABLE = "unreadable", "Could not be read"
        INCOMPLETE = "incomplete", "Stored in part"

    # No index of its own: email_unique_key and email_account_sent both start with it,
    # and every index is written once more for each of the thousands of emails a first
    # sync stores.
    account = models.ForeignKey(
        EmailAccount, on_delete=models.CASCADE, related_name="emails", db_index=False
    )
    # Message-ID, or a fingerprint of the whole message when there is none; a second
    # message with one Message-ID gets that Message-ID and a hash (sync/store.py).
    message_key = models.CharField(max_length=500)
    # What its content is (sync/store.py `content_key`): a later message with the same
    # Message-ID is the same email only if this agrees. "sent" for an email this app sent.
    content_key = models.CharField(max_length=32, blank=True)
    message_id = models.CharField(max_length=500, blank=True)
    subject = models.TextField(blank=True)
    from_address = models.CharField(max_length=254, blank=True)
    from_name = models.CharField(max_length=255, blank=True)
    to = models.JSONField(default=list)
    cc = models.JSONField(default=list)
    # Indexed with the sender (email_sent_sender, below).
    sent_at = models.DateTimeField(null=True, blank=True)
    text_body = models.TextField(blank=True)
    html_body = models.TextField(blank=True)
    size = models.PositiveIntegerField(default=0)
    seen = models.BooleanField(default=False)
    in_reply_to = models.CharField(max_length=500, blank=True)
    references = models.TextField(blank=True)
    # Set when the email could not be stored as it came: "unreadable" (it could not be
    # read; only its original shows) or "incomplete" (a limit or a broken structure left
    # part of it out). Either way its original is kept and `notes` says why.
    problem = models.CharField(max_length=20, choices=Problem.choices, blank=True)
    # What is worth knowing about how the email was stored, one note a line: a limit
    # applied, a broken structure read as well as it could be, a Message-ID it shares
    # with another email.
    notes = models.TextField(blank=True)
    # The message as the server sent it (gzip), kept when it has a problem so that
    # nothing is lost and a later version can read it again; for a message above the
    # size limit, its first bytes up to the limit.
    original = models.FileField(upload_to="originals/%Y/%m/", blank=True)
    contacts = models.ManyToManyField(Contact, blank=True, related_name="emails")
    companies = models.ManyToManyField(Company, blank=True, related_name="emails")
    created_at = models.DateTimeField(auto_now_add=True)
    # The full-text search vector (sync.search), written by a database trigger on
    # PostgreSQL whenever the columns it reads change; unused on SQLite.
    search = SearchVectorField(null=True, blank=True, editable=False)
    # The sender's name and address as a search for a part of them reads them (sync.search,
    # PostgreSQL): upper-cased once when written, so that the date index can carry it and
    # a search walks the index alone, not every email's row, testing each row's value as
    # it is (B6's "bergstr": 17,898 rows by date, 26 ms with upper() of each in the heap,
    # 5-8 ms from the index). Its trigram index (email_sender_trgm, raw SQL in migration
    # sync 0024: a change of this column must build it again) finds a rare part at once.
    sender_upper = StoredGeneratedField(
        expression=Upper(Concat("from_name", Value(" "), "from_address")),
        output_field=models.TextField(),
    )

    class Meta:
        ordering = ["-sent_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["account", "message_key"], name="email_unique_key")
        ]
        indexes = [
            # The Email page's keyset pages: a mailbox's emails by date, then id.
            models.Index(fields=["account", "-sent_at", "-id"], name="email_account_sent_id"),
            # Every visible mailbox's emails by date at once (the Email page, a search, the
            # Contacts list's walk), on PostgreSQL with the mailbox and what a search by
            # sender tests (sender_upper), so that rows the user may not see or that do
            # not match are passed over in the index, their rows unread.
            PostgresCoveringIndex(
                fields=["-sent_at", "-id"],
                covers=["account", "sender_upper"],
                name="email_sent_sender",
            ),
            # An open page's poller (sync.live): each visible mailbox's newest email, and
            # its emails past an id, read from the index alone, whatever their number.
            models.Index(fields=["account", "id"], name="email_account_id"),
            # The health summary counts a mailbox's emails with a problem: few, if any.
            models.Index(
                fields=["account"], condition=~models.Q(problem=""), name="email_with_problem"
            ),
        ]

    def __str__(self) -> str:
        return self.subject or "(no subject)"

    def get_absolute_url(self) -> str:
        from django.urls import reverse

        return reverse("sync:email", args=[self.pk])


class EmailLocation(models.Model):
    """Where an email sits on the server: a folder, its UIDVALIDITY and the UID over
    IMAP; the server's id of the message (`item_id`) where it reads by changes
    (mail.reading), with no UID."""

    email = models.ForeignKey(Email, on_delete=models.CASCADE, related_name="locations")
    # Covered by location_unique_uid, which starts with it.
    folder = models.ForeignKey(
        Folder, on_delete=models.CASCADE, related_name="locations", db_index=False
    )
    uidvalidity = models.BigIntegerField()
    uid = models.BigIntegerField(null=True, blank=True)
    item_id = models.CharField(max_length=512, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["folder", "uidvalidity", "uid"], name="location_unique_uid"
            ),
            # A page of Exchange changes applied twice (the run was cut before its
            # sync state was saved) finds its items already there.
            models.UniqueConstraint(
                fields=["folder", "item_id"],
                condition=~models.Q(item_id=""),
                name="location_unique_item",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.folder} {self.where}"

    @property
    def where(self) -> str:
        return f"item …{self.item_id[-12:]}" if self.item_id else f"UID {self.uid}"


class Attachment(models.Model):
    email = models.ForeignKey(Email, on_delete=models.CASCADE, related_name="attachments")
    # Stored under a generated name: the sender's name (`name`) is shown and given to
    # the download, never used as a path. Empty when the attachment is listed but not
    # stored (its message was above the size limit); the email's notes say why.
    file = models.FileField(upload_to="attachments/%Y/%m/", blank=True)
    # As the sender wrote it (names of 300 characters exist); cut only past 1,000.
    name = models.CharField(max_length=1000)
    content_type = models.CharField(max_length=255)
    size = models.PositiveIntegerField()
    # The part's Content-ID (sync.parsing.content_id): where the email's HTML shows it
    # ("cid:"), it is part of the text (an inline image, a signature's logo), served for
    # the email page and not listed among the attachments.
    content_id = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return self.name


class SyncRun(models.Model):
    class State(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        # Its worker stopped (killed, or the database went away) before the run could
        # say how it ended; closed by the next run or the dispatcher.
        INTERRUPTED = "interrupted", "Interrupted"

    account = models.ForeignKey(EmailAccount, on_delete=models.CASCADE, related_name="sync_runs")
    state = models.CharField(max_length=20, choices=State.choices, default=State.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    folders = models.PositiveIntegerField(default=0)
    new_emails = models.PositiveIntegerField(default=0)
    new_locations = models.PositiveIntegerField(default=0)
    flag_changes = models.PositiveIntegerField(default=0)
    removed_locations = models.PositiveIntegerField(default=0)
    # Emails stored with a problem (unreadable, or in part), and folders that failed.
    parse_problems = models.PositiveIntegerField(default=0)
    folder_errors = models.PositiveIntegerField(default=0)
    # Exchange: meetings and tasks, and contacts, imported or exported by the run.
    activities = models.PositiveIntegerField(default=0)
    contacts_imported = models.PositiveIntegerField(default=0)
    contacts_exported = models.PositiveIntegerField(default=0)
    # Progress while it runs (sync.progress): the folders it goes through and those
    # done; in a first download, the messages those folders hold on the server and
    # how many of them are handled (0 of 0: not a first download, no bar to fill).
    folders_total = models.PositiveIntegerField(default=0)
    folders_done = models.PositiveIntegerField(default=0)
    messages_total = models.PositiveIntegerField(default=0)
    messages_done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [
            # The dispatcher looks every minute for runs left "running" by a dead worker:
            # a handful among every run ever made.
            models.Index(
                fields=["account"], condition=models.Q(state="running"), name="run_running"
            ),
            # The status's latest run, and the pruning of the history (issue 19).
            models.Index(fields=["account", "-started_at"], name="run_account_started"),
        ]

    def __str__(self) -> str:
        return f"{self.account} {self.started_at:%Y-%m-%d %H:%M} {self.state}"

    def save_progress(self) -> None:
        """Written when there is something to show: the first stored batch inserts the
        row, later ones update its counts. A run that finds nothing new is written once,
        at its end, together with the mailbox's release."""
        if self._state.adding:
            self.save()
        else:
            self.save(
                update_fields=[
                    "new_emails", "new_locations", "parse_problems",
                    "folders_total", "folders_done", "messages_total", "messages_done",
                ]
            )  # fmt: skip

    @property
    def progress(self) -> int | None:
        """How far a first download is, in percent; None when that is not known."""
        if not self.messages_total:
            return None
        return min(100, self.messages_done * 100 // self.messages_total)


class UnstoredMessage(models.Model):
    """A message on the server that a run could not store at all, not even as its
    original (the server would not give it, or the database refused it). The message
    stays on the server; every run tries it again, and the page counts it until then."""

    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="unstored")
    uidvalidity = models.BigIntegerField()
    uid = models.BigIntegerField(null=True, blank=True)
    # The server's id of the message where it reads by changes (no UID then): how it
    # is asked for again.
    item_id = models.CharField(max_length=512, blank=True)
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField(default=timezone.now)
    last_failed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["folder", "uid"]
        constraints = [
            models.UniqueConstraint(
                fields=["folder", "uidvalidity", "uid"], name="unstored_unique_uid"
            ),
            models.UniqueConstraint(
                fields=["folder", "item_id"],
                condition=~models.Q(item_id=""),
                name="unstored_unique_item",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.folder} {self.where}: {self.error[:60]}"

    @property
    def where(self) -> str:
        return f"item …{self.item_id[-12:]}" if self.item_id else f"UID {self.uid}"
