from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone

from mail.errors import PROVIDER_KINDS, Retry, action_of
from systemsettings.selectors import mailbox_sync_interval

from .models import (
    Email,
    EmailLocation,
    Folder,
    MailboxSync,
    SyncRun,
    UnstoredMessage,
    WorkerHeartbeat,
)


def heartbeat_age() -> timedelta | None:
    """How long ago a worker last ran beat's heartbeat; None if never."""
    beat = WorkerHeartbeat.objects.filter(name="worker").first()
    return None if beat is None else timezone.now() - beat.beat_at


@dataclass
class Health:
    """What a person should know about a mailbox's downloads, in one place. `level`:
    "ok"; "problems" (downloads work, but something in them did not: see `problems`);
    "failing" (the runs fail and are retried by themselves); "attention" (nothing will
    download until a person acts); "stuck" (no download has happened when one should
    have); "off" (automatic download is off); "sending" (downloads are fine, sending
    from the mailbox is not: see `sending`). Every level but "ok" says why and what to
    do."""

    level: str
    headline: str = ""
    advice: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not a fault
    sending: list[str] = field(default_factory=list)  # what failed sending, last week
    copies_only: bool = False  # of it, only copies missing from Sent (the emails went)

    @property
    def ok(self) -> bool:
        return self.level == "ok"


# Said instead of "the app tries again by itself" where it does not.
BY_HAND = (
    "Automatic download is off, so the app does not try again by itself: use “Download "
    "emails now” once this is fixed, or turn on automatic download below."
)
SERVICE_DOWN = (
    "The app's background service is not running, so nothing is tried again: ask your "
    "administrator to start the app's worker and scheduler (Celery worker and beat)."
)


def _advice(kind: str, account, heartbeat=None) -> str:
    if kind in PROVIDER_KINDS:
        return (
            f"This is about the settings of the provider {account.provider.name} or its "
            "server: ask your administrator. "
            + ("Downloads start again once it is fixed." if account.auto_sync else BY_HAND)
        )
    if kind == "reconnect" or (account.uses_oauth and kind == "credentials"):
        return "Sign in again with “Reconnect”: every setting and email is kept."
    if kind in {"credentials", "app_password", "expired"}:
        return "The password changed? Enter the new one under “Change email settings”."
    if action_of(kind) == Retry.LATER:
        if not account.auto_sync:
            return BY_HAND
        if _service_down(heartbeat):
            return SERVICE_DOWN
        return (
            "The app tries again by itself. If this goes on for hours, check the provider's "
            "status page or ask your administrator."
        )
    return "Ask your administrator if the message above does not say what to change."


def _service_down(heartbeat=None) -> bool:
    """No worker has run beat's heartbeat lately: nothing runs the retries."""
    age = (heartbeat or heartbeat_age)()
    return age is None or age > timedelta(seconds=3 * settings.HEARTBEAT_INTERVAL)


def advice_for_colleague(health: Health, account) -> Health:
    """The health as a colleague who may not set the mailbox up reads it: what the owner
    is told to do ("Enter the new one under “Change email settings”") is not theirs to
    do (that page is not found for them), so they are told whom to ask."""
    # "Needs your attention" is the owner's to act on (a password, a reconnect), as is
    # automatic download turned off (its switch is on the settings page); what the app
    # retries, or a provider's settings, says the same to everyone.
    owners = health.level == "attention" or BY_HAND in health.advice
    if not owners or not health.advice:
        return health
    owner = account.owner.get_full_name() or account.owner.get_username()
    return replace(
        health,
        advice=f"Ask its owner, {owner}, or whoever may set up this mailbox: {health.advice}",
    )


COPIES_FAILED = "Emails were sent, but their copies could not be put in the Sent folder."
COPIES_ADVICE = (
    "Nothing is to be sent again: the recipients have them. The server's answer is below "
    "(often a full mailbox or a changed password); once it is fixed, the copies of the "
    "emails sent after are put in Sent again."
)
SENDING_FAILED = "Downloads work, but sending from this mailbox failed."
SENDING_ADVICE = (
    "Each email is in its author's Outbox on the Email page, with the server's answer; "
    "once that is fixed, its page sends it again."
)


def mailbox_health(
    account, state: MailboxSync | None, *, running: bool, lines=None, heartbeat=None,
    sending: "Sending | None" = None,
) -> Health:  # fmt: skip
    """The mailbox's health, from its sync row and a few grouped counts (no query grows
    with its emails but the count of those with a problem, which an index holds), and
    what failed sending from it (`sending_lines_for`): a mailbox whose downloads are
    fine is not "ok" while its emails are not sent.

    `lines`, `heartbeat` and `sending` let a page of many mailboxes (health/) classify
    them all from a fixed number of queries: the (problems, notes) read by
    `problem_lines_for`, a heartbeat reader asked once for them all, and the lines of
    `sending_lines_for`."""
    if sending is None:
        sending = sending_lines_for([account])[account.pk]
    health = _download_health(account, state, running=running, lines=lines, heartbeat=heartbeat)
    health.sending = sending.lines
    # Only from "ok": "off" (automatic download off, a provider that only sends) says
    # nothing of downloads working, and keeps its own words; the lines show under any.
    health.copies_only = sending.copies_only
    if sending.failing and health.level == "ok":
        health.level = "sending"
        health.headline, health.advice = (
            (COPIES_FAILED, COPIES_ADVICE)
            if sending.copies_only
            else (SENDING_FAILED, SENDING_ADVICE)
        )
    return health


def mailboxes_health(accounts) -> dict[int, Health]:
    """`mailbox_health` of several mailboxes at once (the owner's mailbox list), from a
    fixed number of queries: their sync rows come with them (`select_related("sync")`),
    and the problem and sending lines are read for all of them together."""
    accounts = list(accounts)
    lines = problem_lines_for(accounts)
    sending = sending_lines_for(accounts)
    heartbeat = cache(heartbeat_age)  # asked only if some mailbox is late enough
    now = timezone.now()
    found = {}
    for account in accounts:
        state = getattr(account, "sync", None)
        running = bool(state and state.claimed_until and state.claimed_until > now)
        found[account.pk] = mailbox_health(
            account, state, running=running, lines=lines[account.pk], heartbeat=heartbeat,
            sending=sending[account.pk],
        )  # fmt: skip
    return found


# What the sending app recorded, read for a mailbox's health: its table through the
# mailbox's reverse relation (`EmailAccount.outgoing`), so that sync, below sending,
# imports none of it. A week, by when each email was last put on its way (written, or
# sent again), as its Outbox lists them.
SENDING_WINDOW = timedelta(days=7)


@dataclass
class Sending:
    """What failed sending from a mailbox (`sending_lines_for`): its lines, and whether
    its sending is failing now (what the health's level says), not only one message."""

    lines: list[str] = field(default_factory=list)
    failing: bool = False
    # The states of the emails listed: "sent" alone is copies missing from Sent, the
    # emails themselves delivered (nothing in an Outbox, nothing to send again).
    states: set[str] = field(default_factory=set)

    @property
    def copies_only(self) -> bool:
        return self.states == {"sent"}


# A refusal of one message or recipient ("550 no such user"): that email's, listed, but
# no sign that sending from the mailbox fails.
ONE_MESSAGE = {"rejected"}


def sending_lines_for(accounts) -> dict[int, Sending]:
    """Per mailbox, what went wrong sending from it in the last week: emails not sent,
    those that may have been sent, those waiting to be tried again after a failure, and
    sent ones whose copy could not be put in the Sent folder (for a provider that
    receives), each with its count and the latest answer. Failing now: an email waiting
    after a failure, or a failure no later email got past (not sent, and none sent
    since; a copy lost, and none stored since), but for one message's own refusal. One
    query however many mailboxes: the latest row of each kind per mailbox, with its
    kind's count."""
    from django.db.models import BooleanField, Exists, ExpressionWrapper, F, OuterRef, Window
    from django.db.models.functions import RowNumber

    found: dict[int, Sending] = {account.pk: Sending() for account in accounts}
    if not found:
        return found
    outgoing = type(accounts[0])._meta.get_field("outgoing").related_model
    if not _any_failed(outgoing._meta.db_table, list(found)):
        return found
    failed = outgoing.objects.filter(
        Q(state__in=["failed", "uncertain"])
        | Q(state="queued", attempts__gte=1) & ~Q(error_kind="")
        | Q(state="sent", sent_copy="failed", account__provider__receive_enabled=True),
        account__in=list(found),
        queued_at__gte=timezone.now() - SENDING_WINDOW,
        # Written again as a new email: that one's fate is what counts.
        written_again_as=None,
    )
    sent_since = outgoing.objects.filter(
        account=OuterRef("account"), state="sent", queued_at__gt=OuterRef("queued_at")
    )
    copied_since = sent_since.filter(sent_copy__in=["stored", "by_server"])
    kind = [
        F("account"), F("state"), F("sent_copy"),
        ExpressionWrapper(Q(error_kind__in=ONE_MESSAGE), output_field=BooleanField()),
    ]  # fmt: skip
    rows = (
        failed.annotate(
            count=Window(Count("pk"), partition_by=kind),
            latest=Window(
                RowNumber(), partition_by=kind, order_by=[F("queued_at").desc(), F("pk").desc()]
            ),
            sent_after=Exists(sent_since),
            copied_after=Exists(copied_since),
        )
        .filter(latest=1)
        .values_list(
            "account",
            "state",
            "count",
            "error",
            "error_kind",
            "sent_copy_error",
            "sent_after",
            "copied_after",
        )
    )
    order = ["failed", "uncertain", "queued", "sent"]  # the most final first
    for account, state, count, error, error_kind, copy_error, sent_after, copied_after in sorted(
        rows, key=lambda row: (order.index(row[1]), row[4] in ONE_MESSAGE)
    ):
        emails, sending = _emails(count), found[account]
        if state == "failed" and error_kind in ONE_MESSAGE:
            line = (
                f"{emails} not sent: the server refused the message or a recipient. "
                f"The last: {error}"
            )
        else:
            line = {
                "failed": f"{emails} not sent. The last: {error}",
                "uncertain": f"{emails} may have been sent: the connection broke after the "
                "server took the message and before it confirmed. Check before sending again.",
                "queued": f"{emails} waiting to be tried again. The last answer: {error}",
                "sent": f"The copy of {_emails(count, 'sent email')} could not be put in the "
                f"Sent folder. The last: {copy_error}",
            }[state]
            sending.failing |= (
                state == "queued"
                or (state == "failed" and not sent_after)
                or (state == "sent" and not copied_after)
            )
        sending.lines.append(line)
        sending.states.add(state)
    return found


def _any_failed(table: str, ids: list[int]) -> bool:
    """Whether `sending_lines_for` has anything to say: asked first, in plain SQL, as
    most mailboxes have nothing, and its query costs ~4 ms of Python to build (the
    status partial, polled every few seconds while a download runs, is ~8 ms without)."""
    sql = (
        f"SELECT 1 FROM {connection.ops.quote_name(table)} WHERE account_id IN "  # noqa: S608
        f"({', '.join(['%s'] * len(ids))}) AND queued_at >= %s AND written_again_as_id IS NULL "
        "AND (state IN ('failed', 'uncertain') "
        "OR (state = 'queued' AND attempts >= 1 AND error_kind <> '') "
        "OR (state = 'sent' AND sent_copy = 'failed')) LIMIT 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*ids, timezone.now() - SENDING_WINDOW])
        return cursor.fetchone() is not None


def _download_health(
    account, state: MailboxSync | None, *, running: bool, lines=None, heartbeat=None
) -> Health:
    """`mailbox_health` of the downloads."""
    now = timezone.now()
    problems, notes = lines if lines is not None else _problem_lines(account)
    if not account.provider.receive_enabled:
        return Health(
            "off", f"The provider {account.provider.name} is set up for sending only: "
            "nothing is downloaded.", "Ask your administrator to turn on “receive emails” for "
            "the provider if this mailbox should download emails.", problems, notes,
        )  # fmt: skip
    if state is not None and state.health == MailboxSync.Health.NEEDS_ATTENTION:
        return Health(
            "attention", f"Needs your attention: {state.last_error}",
            _advice(state.last_error_kind or "credentials", account), problems, notes,
        )  # fmt: skip
    if state is not None and state.failing_since is not None and not running:
        since = timezone.localtime(state.failing_since)
        return Health(
            "failing",
            f"Downloads have failed since {_when(since)}: {state.last_error}",
            _advice(state.last_error_kind or "connection", account, heartbeat),
            problems,
            notes,
        )
    if not account.auto_sync:
        if problems:
            return Health(
                "problems", "Not everything could be stored, and automatic download is off.",
                "See why below: each line names the folder and what the server said. "
                + BY_HAND, problems, notes,
            )  # fmt: skip
        return Health(
            "off", "Automatic download is off.",
            "Use “Download emails now”, or turn on automatic download below.", problems, notes,
        )  # fmt: skip
    stuck = _stuck(account, state, now, heartbeat=heartbeat)
    if stuck and not running:
        return Health("stuck", *stuck, problems, notes)
    if problems:
        return Health(
            "problems", "Downloads work, but not everything could be stored.",
            "See why below: each line names the folder and what the server said. The app tries "
            "again by itself; nothing is lost from the server.", problems, notes,
        )  # fmt: skip
    return Health("ok", notes=notes)


def _stuck(account, state: MailboxSync | None, now, *, heartbeat=None) -> tuple[str, str] | None:
    """No download although one was due three intervals ago: the app's background
    service (the workers or their scheduler) is not doing its work."""
    interval = mailbox_sync_interval()
    grace = max(3 * interval, timedelta(minutes=15))
    last = (state.last_success_at if state else None) or account.created_at
    if now - last < grace:
        return None
    when = timezone.localtime(last)
    if _service_down(heartbeat):
        return (
            f"No download since {_when(when)}: the app's background service is not running.",
            "Ask your administrator to start the app's worker and scheduler (Celery worker "
            "and beat).",
        )
    return (
        f"No download since {_when(when)}, although one was due every "
        f"{interval.total_seconds() / 60:.0f} minutes.",
        "The app's background service may be overloaded: ask your administrator.",
    )


def _problem_lines(account) -> tuple[list[str], list[str]]:
    return problem_lines_for([account])[account.pk]


def problem_lines_for(accounts) -> dict[int, tuple[list[str], list[str]]]:
    """Per mailbox, per folder the sync downloads: its own error, and emails it could not
    store (both blocking: retried by the sync); and, as notes, emails stored that could
    not be read or were stored in part (stored: nothing is retried, their originals are
    kept).

    Four queries however many mailboxes: the few folders with an error, the few unstored
    messages and the few emails with a problem (their partial index), then the folders of
    only the mailboxes that have any of those, to tell which folders are downloaded."""
    from .engine import folders_to_sync

    by_pk = {account.pk: account for account in accounts}
    lines: dict[int, tuple[list[str], list[str]]] = {pk: ([], []) for pk in by_pk}
    ids = list(by_pk)
    failing = Folder.objects.filter(account__in=ids, exists_on_server=True).exclude(last_error="")
    unstored = list(
        UnstoredMessage.objects.filter(folder__account__in=ids, folder__exists_on_server=True)
        .values("folder", "folder__account", "folder__path")
        .annotate(count=Count("pk"))
        .order_by("folder__path")
    )
    # From the few emails with a problem (their partial index) to their locations,
    # not from every location of the folders to their emails.
    problem = Email.objects.filter(account__in=ids).exclude(problem="").values("pk")
    with_problem = list(
        EmailLocation.objects.filter(email__in=problem, folder__exists_on_server=True)
        .values("folder", "folder__account", "folder__path", "email__problem")
        .annotate(count=Count("email", distinct=True))
        .order_by("folder__path", "-email__problem")
    )
    concerned = set(failing.values_list("account", flat=True))
    concerned |= {row["folder__account"] for row in unstored + with_problem}
    if not concerned:
        return lines
    folders: dict[int, list[Folder]] = {pk: [] for pk in concerned}
    for folder in Folder.objects.filter(account__in=concerned, exists_on_server=True).defer(
        "sync_state"
    ):
        folders[folder.account_id].append(folder)
    synced: dict[int, set[int]] = {}
    for pk, its_folders in folders.items():
        chosen = folders_to_sync(by_pk[pk], its_folders)
        synced[pk] = {folder.pk for folder in chosen}
        problems = lines[pk][0]
        for folder in chosen:
            if folder.last_error:
                since = timezone.localtime(folder.failing_since) if folder.failing_since else None
                problems.append(
                    f"{folder.path}: {folder.last_error}"
                    + (f" (since {_when(since)})" if since else "")
                )
    for row in unstored:
        if row["folder"] in synced[row["folder__account"]]:
            lines[row["folder__account"]][0].append(
                f"{_emails(row['count'])} in {row['folder__path']} could not be stored."
            )
    for row in with_problem:
        if row["folder"] not in synced[row["folder__account"]]:
            continue
        notes = lines[row["folder__account"]][1]
        count, path = row["count"], row["folder__path"]
        if row["email__problem"] == Email.Problem.UNREADABLE:
            notes.append(
                f"{_emails(count)} in {path} could not be read; "
                f"{'its' if count == 1 else 'their'} original is kept."
            )
        else:
            notes.append(
                f"{_emails(count)} in {path} {'was' if count == 1 else 'were'} stored in part "
                "(a size limit or a broken structure); the originals are kept."
            )
    return lines


def _when(moment) -> str:
    """A local time as the pages write one ("6 Dec 2026, 08:15")."""
    from django.utils.formats import date_format

    return date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")


def _emails(count: int, noun: str = "email") -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


# "Download emails now" pressed and no run has taken the mailbox yet: the status says
# it is about to start, and keeps looking for this long; past it, that it has not
# started and why, for a while more.
REQUEST_WAIT = timedelta(minutes=2)
REQUEST_SHOWN = timedelta(minutes=30)


def _request(state: MailboxSync | None, running: bool) -> tuple[bool, str]:
    """(a download was asked for and is about to start; else why it has not started)."""
    asked = state.download_requested_at if state else None
    if asked is None or running:
        return False, ""
    if state.not_before is not None and state.not_before > timezone.now():
        # Neither the workers' fault nor to be polled for: the server's own wait.
        until = timezone.localtime(state.not_before)
        return False, (
            f"The mail server asked to be left alone until {until:%H:%M}: the download "
            "asked for starts then, by itself."
        )
    waited = timezone.now() - asked
    if waited < REQUEST_WAIT:
        return True, ""
    if waited > REQUEST_SHOWN:
        return False, ""
    age = heartbeat_age()
    when = timezone.localtime(asked)
    if age is None or age > timedelta(seconds=3 * settings.HEARTBEAT_INTERVAL):
        return False, (
            f"The download asked for at {when:%H:%M} has not started: the app's background "
            "service is not running. Ask your administrator to start the app's worker and "
            "scheduler (Celery worker and beat)."
        )
    return False, (
        f"The download asked for at {when:%H:%M} has not started yet: the app's background "
        "service is busy. It starts as soon as a worker is free."
    )


def sync_status(account) -> dict:
    state = MailboxSync.objects.filter(account=account).first()
    # The latest run only, by the (account, started_at) index: the history is long. No
    # count of the mailbox's emails: the status is polled every 2 s during a download
    # and shown for every mailbox on the Email page (issue 19).
    last_run = SyncRun.objects.filter(account=account).order_by("-started_at").first()
    latest = last_run
    # Running while someone holds the claim: a run record left "running" by a worker
    # that died is not (the dispatcher closes it).
    running = bool(state and state.claimed_until and state.claimed_until > timezone.now())
    items_run = None
    if last_run and last_run.state == SyncRun.State.SUCCEEDED and _items_only(last_run):
        # An import of meetings, tasks and contacts alone ("Import now"): it checked no
        # folder, and its "0 new emails" would hide what the last download brought. Said
        # apart; the download's line is the last run that checked folders (read only
        # then, by the same index).
        items_run = last_run
        last_run = (
            SyncRun.objects.filter(account=account, folders__gt=0, state=SyncRun.State.SUCCEEDED)
            .order_by("-started_at")
            .first()
        )
    requested, not_started = _request(state, running)
    next_due = None
    if account.auto_sync and not (state and state.health == MailboxSync.Health.NEEDS_ATTENTION):
        started = state.last_started_at if state else None
        # The dispatcher looks every minute; a mailbox never synced is due now.
        next_due = max(timezone.now(), started + mailbox_sync_interval()) if started else None
        if state and state.not_before and (next_due is None or state.not_before > next_due):
            # The server asked to be left alone until then: no download before.
            next_due = state.not_before
        if next_due is not None and next_due - timezone.now() < timedelta(minutes=1):
            next_due = None  # "within a minute", not "in about 0 minutes"
    return {
        "state": state,
        "last_run": last_run,
        "running": running,
        # The running download's own record (written with its first batch, or at once
        # in a first download); None until then.
        "run": latest if running and latest and latest.state == SyncRun.State.RUNNING else None,
        "items_run": items_run,
        "requested": requested,
        "not_started": not_started,
        # While a download runs or is about to, the status looks again every 2 s.
        "polling": running or requested,
        "next_due": next_due,
        "health": mailbox_health(account, state, running=running),
    }


def _items_only(run: SyncRun) -> bool:
    """A run that imported meetings, tasks or contacts and checked no folder."""
    imported = run.activities or run.contacts_imported or run.contacts_exported
    return bool(imported) and not (run.folders or run.folders_done or run.new_emails)


@dataclass
class FolderRow:
    folder: Folder
    on_server: int | None
    stored: int
    unstored: list[UnstoredMessage]


def folder_overview(account) -> list[FolderRow]:
    """Each folder of the mailbox: what the server counted at the last run beside what
    is stored, and what could not be stored."""
    folders = list(Folder.objects.filter(account=account, exists_on_server=True))
    stored = dict(
        EmailLocation.objects.filter(folder__in=folders)
        .values_list("folder")
        .annotate(count=Count("pk"))
        .values_list("folder", "count")
    )
    unstored: dict[int, list] = {}
    for noted in UnstoredMessage.objects.filter(folder__in=folders):
        unstored.setdefault(noted.folder_id, []).append(noted)
    return [
        FolderRow(folder, folder.messages, stored.get(folder.pk, 0), unstored.get(folder.pk, []))
        for folder in folders
        if folder.selectable
    ]


def problem_emails(emails, account):
    """The emails of the mailbox stored with a problem, among those the user may see."""
    return (
        emails.filter(account=account)
        .filter(~Q(problem="") | ~Q(notes=""))
        .only("pk", "subject", "sent_at", "problem", "notes", "from_address", "from_name")
        .order_by("-sent_at", "-pk")
    )


def folders_on_server(account):
    """The mailbox's folders that the server still lists, for the folder picker."""
    return account.folders.filter(exists_on_server=True)


def inbox_stored_status(*, account_id: int) -> dict[str, int | None] | None:
    """The inbox's UIDVALIDITY, UIDNEXT and message count as the last sync stored
    them (what the server's EXAMINE is compared with, push.listener); None before a
    sync has stored them."""
    row = (
        Folder.objects.filter(account_id=account_id, path__iexact="INBOX", exists_on_server=True)
        .values("uidvalidity", "uidnext", "messages")
        .first()
    )
    if row is None or row["uidnext"] is None:
        return None
    return row


def mailboxes_sync_running(*, account_ids: list[int]) -> set[int]:
    """Those of the mailboxes whose claim a run holds now (one query for all: the
    push listener asks for every mailbox waiting to queue its sync at once)."""
    from django.db.models.functions import Now

    return set(
        MailboxSync.objects.filter(account_id__in=account_ids, claimed_until__gt=Now()).values_list(
            "account_id", flat=True
        )
    )
