"""The quirk matrix (issue 14, point 5): the app's own sign-in check, folder list, sync
and Sent copy against Dovecot configured as other families of IMAP servers
(../shared/notes/imap-server-families.md), each on its own instance.

One test per family runs the checks in order and records each cell; a cell that fails
does not stop the later ones, and the test fails at the end if any cell failed. After
every cell, what is stored ((folder, UIDVALIDITY, UID) -> message key, read flag) is
compared with what the server holds: 0 lost, 0 duplicated, flags right. A difference
left behind by a failed cell is carried over, so later cells are judged on what they
changed. With -s the module prints the whole table at its end."""

import contextlib
import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from imapclient import IMAPClient

from mail.errors import SignInError
from mail.imap_smtp.connection import _PinnedIMAP4, check_sign_in
from providers.addresses import normalize_address
from sending.delivery import copy_to_sent
from sync.models import Email, EmailLocation, SyncRun
from sync.parsing import parse_message
from sync.services import folders_load, mailbox_sync
from tests.factories import EmailAccountFactory, EmailProviderFactory
from tests.mailbox import Mailbox, make_message
from tests.servers.dovecot import Dovecot, DovecotUser
from tests.servers.imap_rewrite import UidnextStrippingProxy

ADDRESS = "matrix@example.test"
PASSWORD = "matrix-secret"

POOR = "IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE NAMESPACE CHILDREN"
COURIER = (
    "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"
)
COURIER_SERVER = {
    "capabilities": COURIER, "namespace_prefix": "INBOX.", "separator": ".", "special_use": {},
}  # fmt: skip
# Gmail's list, less what Dovecot does not implement (XLIST, X-GM-EXT-1,
# COMPRESS=DEFLATE, UTF8=ACCEPT): CONDSTORE without QRESYNC.
GMAIL = (
    "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID CHILDREN UIDPLUS ENABLE MOVE CONDSTORE "
    "ESEARCH LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE APPENDLIMIT=35651584"
)
GMAIL_FOLDERS = {
    "[Gmail]/All Mail": "\\All", "[Gmail]/Sent Mail": "\\Sent", "[Gmail]/Spam": "\\Junk",
    "[Gmail]/Trash": "\\Trash", "[Gmail]/Drafts": "\\Drafts",
}  # fmt: skip


@dataclass(frozen=True)
class Family:
    key: str
    label: str
    server: dict  # tests.servers.dovecot.Dovecot's emulation settings
    archive: str  # a nested folder that holds a second copy of one INBOX message
    sent: str  # where the Sent copy must land
    folders: tuple[str, ...]  # made before the first sync, besides INBOX and `archive`
    special: dict[str, str] = field(default_factory=dict)  # path -> special use expected
    all_mail: str = ""  # Gmail: every message is in this folder too
    strip_uidnext: bool = False  # reached through UidnextStrippingProxy

    @property
    def separator(self) -> str:
        return self.server.get("separator", "/")


FAMILIES = [
    Family(
        "dovecot", "(a) Dovecot defaults", {}, archive="Archive/2025", sent="Sent",
        folders=("Sent", "Trash", "Junk"),
        special={"Sent": "\\sent", "Trash": "\\trash", "Junk": "\\junk"},
    ),
    Family(
        "poor", "(b) poor: no CONDSTORE, LIST-STATUS, SPECIAL-USE, UIDPLUS",
        {"capabilities": POOR, "special_use": {}}, archive="Archive/2025",
        sent="Sent", folders=(),  # no Sent folder yet: the copy makes one
    ),
    Family(
        "courier", "(c) Courier-like: INBOX. namespace, no special use", COURIER_SERVER,
        archive="INBOX.Archive.2025", sent="INBOX.Sent", folders=("INBOX.Sent",),
    ),
    Family(
        # A new mailbox: the first Sent copy has to make the folder, inside the namespace.
        "courier-new", "(c) Courier-like, no Sent folder yet", COURIER_SERVER,
        archive="INBOX.Archive.2025", sent="INBOX.Sent", folders=(),
    ),
    Family(
        "cyrus", "(c) Cyrus-like: INBOX. namespace, lowercase \\sent",
        {"namespace_prefix": "INBOX.", "separator": ".",
         "special_use": {"Sent Items": "\\sent", "Trash": "\\trash"}},
        archive="INBOX.Archive.2025", sent="INBOX.Sent Items",
        folders=("INBOX.Sent Items", "INBOX.Trash"),
        special={"INBOX.Sent Items": "\\sent", "INBOX.Trash": "\\trash"},
    ),
    Family(
        "gmail", "(d) Gmail-like: [Gmail]/..., \\All, labels",
        {"capabilities": GMAIL, "special_use": GMAIL_FOLDERS}, archive="Clients/ACME",
        sent="[Gmail]/Sent Mail", folders=tuple(GMAIL_FOLDERS),
        special={name: flag.lower() for name, flag in GMAIL_FOLDERS.items()},
        all_mail="[Gmail]/All Mail",
    ),
    Family(
        "no-uidnext", "(e) no UIDNEXT in SELECT/EXAMINE", {}, archive="Archive/2025",
        sent="Sent", folders=("Sent",), special={"Sent": "\\sent"}, strip_uidnext=True,
    ),
]  # fmt: skip

CHECKS = [
    "sign-in", "folders", "first sync", "idle sync", "flag-only", "append", "expunge",
    "UIDVALIDITY", "Sent copy",
]  # fmt: skip
PASS = "pass"


# -- the servers ----------------------------------------------------------------------


@dataclass
class FamilyServer:
    dovecot: Dovecot
    proxy: UidnextStrippingProxy | None = None


@pytest.fixture(scope="module")
def family_server() -> Callable[[Family], FamilyServer]:
    """Each family's own Dovecot (and proxy), started when its test first asks."""
    started: dict[str, FamilyServer] = {}

    def server_for(family: Family) -> FamilyServer:
        if family.key not in started:
            # Not under pytest's temp folder: Dovecot's processes run as nobody.
            root = Path(tempfile.mkdtemp(prefix=f"mailsetup-{family.key}-"))
            dovecot = Dovecot(root=root, users=[DovecotUser(ADDRESS, PASSWORD)], **family.server)
            started[family.key] = FamilyServer(dovecot.start())
            if family.strip_uidnext:
                started[family.key].proxy = UidnextStrippingProxy(dovecot.imap_port)
            _assert_emulated(family, dovecot)
        return started[family.key]

    yield server_for
    for server in started.values():  # all asked to stop first: each takes about a second
        if server.proxy:
            server.proxy.close()
        server.dovecot.process.terminate()
    for server in started.values():
        server.dovecot.stop()
        shutil.rmtree(server.dovecot.root, ignore_errors=True)


def _assert_emulated(family: Family, dovecot: Dovecot) -> None:
    """The instance offers what the family's servers offer, or the matrix tests nothing."""
    with Mailbox(dovecot, ADDRESS, PASSWORD).client() as client:
        if "capabilities" in family.server:
            offered = {c.decode().upper() for c in client.capabilities()}
            assert offered == set(family.server["capabilities"].upper().split()), offered
        personal = client.namespace().personal[0]
        assert personal == (family.server.get("namespace_prefix", ""), family.separator)


# -- the table ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix():
    rows: dict[str, dict[str, str]] = {}
    yield rows
    print("\n" + render(rows))


def render(rows: dict[str, dict[str, str]]) -> str:
    notes = []
    lines = [
        "| family | " + " | ".join(CHECKS) + " |",
        "|---|" + "---|" * len(CHECKS),
    ]
    for family in FAMILIES:
        if family.key not in rows:
            continue
        cells = []
        for check in CHECKS:
            outcome = rows[family.key].get(check, "not run")
            if outcome == PASS or outcome == "not run":
                cells.append(outcome)
            else:
                notes.append(f"[{len(notes) + 1}] {family.key} / {check}: {outcome}")
                cells.append(f"FAIL [{len(notes)}]")
        lines.append(f"| {family.label} | " + " | ".join(cells) + " |")
    return "\n".join(["Quirk matrix (issue 14, point 5):", *lines, "", *notes])


# -- what the server holds, what is stored --------------------------------------------

Copy = tuple[str, int, int]  # (folder, UIDVALIDITY, UID)
SKIPPED_USES = {b"\\trash", b"\\junk"}  # not synced in "all folders" mode


@dataclass
class ServerState:
    copies: dict[Copy, tuple[str, bool]]  # -> (message key, read)
    skipped: set[str]  # folders the app must leave alone (Trash, Junk)
    subjects: dict[str, str]  # message key -> subject, to name messages in messages


def server_state(client: IMAPClient) -> ServerState:
    state = ServerState({}, set(), {})
    for flags, _delimiter, name in client.list_folders():
        lowered = {f.lower() for f in flags}
        if lowered & {b"\\noselect", b"\\nonexistent"}:
            continue
        if lowered & SKIPPED_USES:
            state.skipped.add(name)
        uidvalidity = client.select_folder(name, readonly=True)[b"UIDVALIDITY"]
        uids = client.search("ALL")
        if not uids:
            continue
        for uid, item in client.fetch(uids, ["FLAGS", "BODY.PEEK[]"]).items():
            parsed = parse_message(item[b"BODY[]"])
            state.subjects[parsed.message_key] = parsed.subject
            seen = b"\\seen" in {f.lower() for f in item[b"FLAGS"]}
            if name not in state.skipped:
                state.copies[(name, uidvalidity, uid)] = (parsed.message_key, seen)
    return state


def stored_copies(account) -> dict[Copy, tuple[str, bool]]:
    locations = EmailLocation.objects.filter(folder__account=account).select_related(
        "folder", "email"
    )
    return {
        (loc.folder.path, loc.uidvalidity, loc.uid): (loc.email.message_key, loc.email.seen)
        for loc in locations
    }


def _read(seen: bool) -> str:
    return "read" if seen else "unread"


class Harness:
    """One family's mailbox, its account in the app, and the app's IMAP commands."""

    def __init__(self, family: Family, server: FamilyServer, account, monkeypatch):
        self.family = family
        self.server = server
        self.account = account
        self.mailbox = Mailbox(server.dovecot, ADDRESS, PASSWORD)
        self._session: IMAPClient | None = None
        self.keys_seen: set[str] = set()  # every message key the server ever held
        self.subjects: dict[str, str] = {}
        self.commands: list[bytes] = []
        self.carried: set[str] = set()
        commands = self.commands
        send = _PinnedIMAP4.send

        def recording_send(imap, data):
            words = bytes(data).split(b" ", 2)
            signs_in = len(words) > 1 and words[1].upper() in {b"LOGIN", b"AUTHENTICATE"}
            # Kept out of failure messages: no password in a test report, even a test one.
            commands.append(words[0] + b" " + words[1] + b" ..." if signs_in else bytes(data))
            return send(imap, data)

        # Only the app's own connections are _PinnedIMAP4; the test's are plain.
        monkeypatch.setattr(_PinnedIMAP4, "send", recording_send)

    # -- acting on the server, as another mail client would ---------------------------

    @property
    def session(self) -> IMAPClient:
        """The test's own IMAP session, kept open: a new one per look at the server cost
        most of a family's time (TLS and a Dovecot process each)."""
        if self._session is not None:
            try:
                self._session.noop()
            except Exception:  # the server closed it (a renumbered INBOX, say)
                self._session = None
        if self._session is None:
            self._session = self.mailbox.client()
        return self._session

    def close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                self._session.logout()
            self._session = None

    def put(self, folder: str, raw: bytes, *, seen: bool = False, new: bool = True) -> None:
        """Appends a message; on Gmail a `new` one shows in All Mail too (a message put
        under a second label is still one message there), with the same flags."""
        flags = [b"\\Seen"] if seen else []
        folders = [folder]
        if new and self.family.all_mail and folder not in {"[Gmail]/Spam", "[Gmail]/Trash"}:
            folders.append(self.family.all_mail)
        client = self.session
        for name in dict.fromkeys(folders):
            if not client.folder_exists(name):
                client.create_folder(name)
            client.append(name, raw, flags=flags)

    def copies_of(self, key: str) -> list[Copy]:
        return sorted(c for c, (k, _seen) in server_state(self.session).copies.items() if k == key)

    def set_seen(self, key: str, seen: bool) -> None:
        """\\Seen set or cleared on every copy of a message (Gmail's flags are per message),
        and nothing else changed."""
        client = self.session
        for folder, _uidvalidity, uid in self.copies_of(key):
            client.select_folder(folder)
            (client.add_flags if seen else client.remove_flags)([uid], [b"\\Seen"])

    # -- running the app --------------------------------------------------------------

    def sync(self) -> SyncRun:
        self.commands.clear()
        run = mailbox_sync(account_id=self.account.pk)
        assert run is not None, "mailbox_sync did not run (the mailbox was claimed)"
        assert run.state == SyncRun.State.SUCCEEDED, f"the sync run {run.state}: {run.error}"
        return run

    def bodies_fetched(self) -> int:
        """Whole messages the app asked for since the last sync began."""
        count = 0
        for command in self.commands:
            found = _BODY_FETCH.match(command)
            if found:
                count += _set_size(found.group(1).decode())
        return count

    def fetch_commands(self) -> str:
        """The app's FETCH commands for whole messages since the last sync began."""
        fetches = [
            c.decode(errors="replace").strip() for c in self.commands if _BODY_FETCH.match(c)
        ]
        return "; ".join(fetch[:120] for fetch in fetches) or "none"

    # -- comparing --------------------------------------------------------------------

    def problems(self) -> set[str]:
        """Every difference between the server and what is stored, one line each."""
        state = server_state(self.session)
        self.subjects.update(state.subjects)
        self.keys_seen.update(key for key, _seen in state.copies.values())
        stored = stored_copies(self.account)
        found = set()
        for copy, (key, seen) in state.copies.items():
            where = f"{copy[0]} UID {copy[2]} ({self._name(key)})"
            if copy not in stored:
                found.add(f"lost: {where} is on the server, not stored")
            elif stored[copy][0] != key:
                found.add(f"wrong: {where} is stored as {self._name(stored[copy][0])}")
            elif stored[copy][1] != seen:
                found.add(
                    f"flag: {where} is {_read(seen)} on the server, {_read(stored[copy][1])} "
                    "in the app"
                )
        for copy, (key, _seen) in stored.items():
            if copy in state.copies:
                continue
            if copy[0] in state.skipped:
                found.add(f"skip: {copy[0]} UID {copy[2]} stored, but {copy[0]} is Trash/Junk")
            else:
                found.add(
                    f"stale: {copy[0]} UIDVALIDITY {copy[1]} UID {copy[2]} "
                    f"({self._name(key)}) stored, not on the server"
                )
        emails = set(
            Email.objects.filter(account=self.account).values_list("message_key", flat=True)
        )
        for key in sorted(emails - self.keys_seen):
            found.add(f"extra: email {self._name(key)} stored, in no folder the app syncs")
        for key in sorted(self.keys_seen - emails):
            found.add(f"lost: email {self._name(key)} not stored")
        return found

    def _name(self, key: str) -> str:
        return repr(self.subjects.get(key, key))

    def key_of(self, subject: str) -> str:
        if subject not in self.subjects.values():
            self.subjects.update(server_state(self.session).subjects)
        return next(k for k, s in self.subjects.items() if s == subject)


_BODY_FETCH = re.compile(
    rb"\S+ (?:UID )?FETCH (\S+) .*(?:BODY(?:\.PEEK)?\[\]|BINARY(?:\.PEEK)?\[\]|RFC822[ )])",
    re.IGNORECASE,
)


def _set_size(uid_set: str) -> int:
    total = 0
    for part in uid_set.split(","):
        low, _colon, high = part.partition(":")
        if high and low.isdigit() and high.isdigit():
            total += abs(int(high) - int(low)) + 1
        else:
            total += 1  # one UID, or an open range ("n:*"): at least one
    return total


# -- the checks -----------------------------------------------------------------------


def cell_sign_in(h: Harness) -> None:
    provider, address = h.account.provider, normalize_address(ADDRESS)
    check_sign_in(provider=provider, address=address, login=ADDRESS, password=PASSWORD)
    try:
        check_sign_in(provider=provider, address=address, login=ADDRESS, password="wrong")
    except SignInError as error:
        assert error.kind == "credentials", f"a wrong password gave {error.kind!r}: {error}"
    else:
        raise AssertionError("check_sign_in accepted a wrong password")


def cell_folders(h: Harness) -> None:
    family = h.family
    folders = {folder.path: folder for folder in folders_load(account=h.account)}
    wanted = {"INBOX", family.archive, *family.folders}
    missing = sorted(wanted - set(folders))
    assert not missing, f"folders_load listed {sorted(folders)}; missing {missing}"
    wrong = [
        f"{path} has special_use {folders[path].special_use!r}, the server flags it {use}"
        for path, use in family.special.items()
        if folders[path].special_use != use
    ]
    # Unflagged folders may be recognised by name, but never as ones a sync skips.
    wrong += [
        f"{path} (no flag on the server) marked {folder.special_use}"
        for path, folder in folders.items()
        if path not in family.special and folder.special_use in {"\\trash", "\\junk"}
    ]
    nested = folders[family.archive]
    parent = family.archive.rsplit(family.separator, 1)[0]
    if (nested.delimiter, nested.selectable) != (family.separator, True):
        wrong.append(
            f"{family.archive}: delimiter {nested.delimiter!r}, selectable {nested.selectable}"
        )
    if parent not in folders or folders[parent].selectable:
        wrong.append(f"{parent} (a parent that holds no mail) not listed as unselectable")
    assert not wrong, "; ".join(wrong)


def cell_first_sync(h: Harness) -> None:
    run = h.sync()
    copies = server_state(h.session).copies
    keys = {key for key, _seen in copies.values()}
    assert run.new_emails == len(keys), f"{run.new_emails} new emails, {len(keys)} on the server"
    # Also shows that the count of fetched messages (the idle checks') sees the app's FETCH.
    assert 0 < h.bodies_fetched() <= len(copies), f"{len(copies)} copies: {h.fetch_commands()}"


def cell_idle_sync(h: Harness) -> None:
    run = h.sync()
    counts = (run.new_emails, run.new_locations, run.flag_changes, run.removed_locations)
    assert counts == (0, 0, 0, 0), f"(new, locations, flags, removed) = {counts}"
    assert h.bodies_fetched() == 0, f"fetched again: {h.fetch_commands()}"


def cell_flag_only(h: Harness) -> None:
    key = h.key_of("hello")
    failures = []
    for seen in (True, False):
        h.set_seen(key, seen)
        run = h.sync()
        stored = Email.objects.get(account=h.account, message_key=key).seen
        if stored != seen:
            where = ", ".join(folder for folder, _uv, _uid in h.copies_of(key))
            failures.append(
                f"'hello' marked {_read(seen)} on the server (\\Seen in {where}, nothing else "
                f"changed): still {_read(stored)} in the app after the run (flag_changes "
                f"{run.flag_changes}, folders synced {run.folders})"
            )
        if h.bodies_fetched():
            failures.append(f"fetched whole messages again: {h.fetch_commands()}")
    assert not failures, "; ".join(failures)


def cell_append(h: Harness) -> None:
    raw = make_message(subject="appended")
    h.put("INBOX", raw)
    key = parse_message(raw).message_key
    run = h.sync()
    copies = h.copies_of(key)
    assert run.new_emails == 1, f"{run.new_emails} new emails for one appended message"
    stored = EmailLocation.objects.filter(email__account=h.account, email__message_key=key)
    assert stored.count() == len(copies), f"{stored.count()} locations for {copies}"
    assert h.bodies_fetched() <= len(copies), f"fetched more: {h.fetch_commands()}"


def cell_expunge(h: Harness) -> None:
    key = h.key_of("shared")
    folder = h.family.archive
    client = h.session
    client.select_folder(folder)
    uids = client.search(["SUBJECT", "shared"])
    assert len(uids) == 1, f"{folder} holds {uids} for 'shared'"
    client.delete_messages(uids)
    client.expunge()
    run = h.sync()
    left = EmailLocation.objects.filter(email__account=h.account, email__message_key=key)
    gone = not left.filter(folder__path=folder, uid=uids[0]).exists()
    kept = {loc.folder.path for loc in left}
    others = {copy[0] for copy in h.copies_of(key)}
    assert gone, f"{folder} UID {uids[0]} expunged, still stored (removed {run.removed_locations})"
    assert kept == others, f"the other copies stored: {sorted(kept)}, on the server {others}"


def cell_uidvalidity(h: Harness) -> None:
    """INBOX and the nested folder renumbered (the latter holds a message found nowhere
    else): the same emails, their locations under the new UIDVALIDITY."""
    renumbered = {}
    for folder in ("INBOX", h.family.archive):
        old = h.session.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"]
        renumbered[folder] = old + 1000
        h.server.dovecot.doveadm(
            "mailbox", "update", "--uid-validity", str(old + 1000), "-u", ADDRESS, folder
        )
    before = set(Email.objects.filter(account=h.account).values_list("pk", flat=True))
    run = h.sync()
    after = set(Email.objects.filter(account=h.account).values_list("pk", flat=True))
    assert run.new_emails == 0, f"{run.new_emails} new emails after the renumbering"
    assert after == before, f"emails added {after - before}, removed {before - after}"
    for folder, uidvalidity in renumbered.items():
        stored = set(
            EmailLocation.objects.filter(folder__account=h.account, folder__path=folder)
            .values_list("uidvalidity", flat=True)
        )  # fmt: skip
        assert stored == {uidvalidity}, f"{folder}: stored under {stored}, now {uidvalidity}"


def cell_sent_copy(h: Harness) -> None:
    raw = make_message(
        subject="sent from the CRM", sender=f"Matrix <{ADDRESS}>", to="peter@partner.test"
    )
    folder = copy_to_sent(account=h.account, raw=raw)
    assert folder == h.family.sent, f"copy_to_sent chose {folder!r}, not {h.family.sent!r}"
    key = parse_message(raw).message_key
    copies = h.copies_of(key)
    assert [c[0] for c in copies] == [folder], f"on the server: {copies}"
    h.sync()
    email = Email.objects.filter(account=h.account, message_key=key)
    assert email.count() == 1, f"stored {email.count()} times"
    where = [(loc.folder.path, loc.uid) for loc in email[0].locations.select_related("folder")]
    assert where == [(folder, copies[0][2])], f"stored at {where}, on the server {copies}"
    assert email[0].seen, "the Sent copy (appended \\Seen) is stored unread"


CELLS = dict(zip(CHECKS, [
    cell_sign_in, cell_folders, cell_first_sync, cell_idle_sync, cell_flag_only,
    cell_append, cell_expunge, cell_uidvalidity, cell_sent_copy,
], strict=True))  # fmt: skip


# -- the matrix -----------------------------------------------------------------------


def _fill(h: Harness) -> None:
    """A small mailbox: unread and read messages, one without Message-ID, one in two
    folders, a message already in Sent and one in Trash (neither to be synced twice)."""
    family = h.family
    shared = make_message(subject="shared")
    h.put("INBOX", make_message(subject="hello"))
    h.put("INBOX", make_message(subject="read already"), seen=True)
    h.put("INBOX", make_message(subject="no id", message_id=None))
    h.put("INBOX", shared)
    h.put(family.archive, shared, new=False)
    h.put(family.archive, make_message(subject="archived"), seen=True)
    for folder in family.folders:
        if not h.session.folder_exists(folder):
            h.session.create_folder(folder)
    if family.sent in family.folders:
        earlier = make_message(subject="sent earlier", sender=f"Matrix <{ADDRESS}>")
        h.put(family.sent, earlier, seen=True)
    for folder, flag in family.special.items():
        if flag in {"\\trash", "\\junk"}:
            h.put(folder, make_message(subject=f"in {folder}"))


@pytest.mark.parametrize("family", FAMILIES, ids=[f.key for f in FAMILIES])
def test_it_keeps_every_family_of_server_in_step(
    family, family_server, matrix, mail_trust, monkeypatch, caplog, request
):
    # The test's own sessions (dozens) would each log "Connection closed" around the table.
    caplog.set_level(logging.WARNING, logger="imapclient")
    server = family_server(family)
    if server.proxy:
        # Plaintext on loopback, which the app allows for internal servers only.
        provider = EmailProviderFactory(
            imap_host="127.0.0.1", imap_port=server.proxy.port, imap_security="none",
            send_enabled=False,
        )  # fmt: skip
    else:
        provider = EmailProviderFactory(
            imap_host="localhost", imap_port=server.dovecot.imaps_port, imap_security="ssl",
            send_enabled=False,
        )  # fmt: skip
    account = EmailAccountFactory(
        provider=provider, address=ADDRESS, login=ADDRESS, password=PASSWORD
    )
    h = Harness(family, server, account, monkeypatch)
    request.addfinalizer(h.close)
    _fill(h)
    row = matrix.setdefault(family.key, {})
    h.carried = h.problems()  # nothing stored yet: every copy "lost" until the first sync
    for name, cell in CELLS.items():
        if name == "first sync":
            h.carried = set()  # which must leave no difference at all
        try:
            cell(h)
            outcome = PASS
        except AssertionError as error:
            # The message only: pytest's rewritten "assert ..." explanation follows it.
            outcome = str(error).split("\nassert ")[0] or "assertion failed"
        except Exception as error:  # a cell's error is its outcome; the next cells run
            outcome = f"{type(error).__name__}: {error}"
        # Differences this cell left behind (those carried from earlier cells aside).
        problems = h.problems()
        new = sorted(problems - h.carried)
        h.carried = problems
        if new:
            found = "; ".join(new[:6]) + (f"; and {len(new) - 6} more" if len(new) > 6 else "")
            outcome = found if outcome == PASS else f"{outcome} || then: {found}"
        row[name] = " ".join(outcome.split())
    if server.proxy:
        assert server.proxy.stripped > 0, "the proxy stripped no UIDNEXT: (e) emulated nothing"
    failed = {name: outcome for name, outcome in row.items() if outcome != PASS}
    assert not failed, f"{family.key}: " + "\n".join(f"{n}: {o}" for n, o in failed.items())
