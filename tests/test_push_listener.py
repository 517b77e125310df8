"""The push listener (push/listener.py) against real Dovecot servers: in-process
listeners on a thread of their own, and `manage.py mail_listener` processes for the
takeover after a SIGKILL. Every wait polls with a deadline; none asserts a duration."""

import os
import signal
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import connection

from mail.imap_smtp.watch import ImapWatcher
from mailsetup.settings import BASE_DIR
from push.listener import Listener, backoff_delay
from push.models import MailboxWatch
from sync.models import Email, MailboxSync
from tests.mailbox import Mailbox, make_message
from tests.push_servers import PUSH_USERS, config, eventually, running, state_of, watch_of

State = MailboxWatch.State


@pytest.fixture
def own_provider(db, own_dovecot, mail_trust):
    from tests.factories import EmailProviderFactory

    return EmailProviderFactory(
        imap_host="localhost", imap_port=own_dovecot.imaps_port, imap_security="ssl"
    )


def own_account(provider, number: int):
    from tests.factories import EmailAccountFactory

    address = PUSH_USERS[number]
    return EmailAccountFactory(provider=provider, address=address, password="push-secret")


def test_it_stores_a_message_appended_by_another_connection(
    transactional_db, synced_mailbox, inline_sync, short_lease
):
    account, mailbox = synced_mailbox
    with running(Listener(config=config())):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        mailbox.append("INBOX", make_message(subject="pushed"))
        eventually(
            lambda: Email.objects.filter(account=account, subject="pushed").exists(),
            within=15, what="the pushed email stored",
        )  # fmt: skip
    assert watch_of(account).last_event_at is not None
    # Stopped: the mailbox is free for another listener at once.
    assert watch_of(account).holder == ""
    assert state_of(account) == State.STOPPED


def test_it_renews_idle_on_one_connection(
    transactional_db, synced_mailbox, published, short_lease, monkeypatch
):
    account, mailbox = synced_mailbox
    opened, renewals = [], []
    real_open, real_next = ImapWatcher.open, ImapWatcher.next_change

    async def counting_open(self):
        opened.append(self)
        await real_open(self)

    async def counting_next(self, *, within):
        changed = await real_next(self, within=within)
        if not changed:
            renewals.append(within)
        return changed

    monkeypatch.setattr(ImapWatcher, "open", counting_open)
    monkeypatch.setattr(ImapWatcher, "next_change", counting_next)
    with running(Listener(config=config(renew=0.3))):
        eventually(lambda: len(renewals) >= 3, what="three IDLE renewals")
        mailbox.append("INBOX", make_message(subject="after renewals"))
        eventually(lambda: account.pk in published, what="the sync queued")
    assert renewals == [0.3] * len(renewals)
    assert len(opened) == 1  # renewed on the same connection, not by reconnecting


def test_it_queues_one_sync_for_a_burst_of_messages(
    transactional_db, synced_mailbox, published, short_lease, monkeypatch
):
    account, mailbox = synced_mailbox
    heard, real_changed = [], Listener._changed

    def counting_changed(self, account_id):
        heard.append(account_id)
        real_changed(self, account_id)

    monkeypatch.setattr(Listener, "_changed", counting_changed)
    listener = Listener(config=config(debounce=30))
    with running(listener):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        mailbox.append("INBOX", *[make_message(subject=f"burst {n}") for n in range(5)])
        eventually(lambda: published, what="the sync queued")
        # More changes inside the window: heard, and still one queued (the next waits
        # for the window's end).
        before = len(heard)
        mailbox.append("INBOX", make_message(subject="one more"))
        eventually(lambda: len(heard) > before, what="the change heard")
        eventually(lambda: account.pk in listener._queuers, what="the next sync waiting")
    assert published == [account.pk]


def test_it_queues_after_a_running_sync_ends(
    transactional_db, synced_mailbox, published, short_lease, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    from sync import selectors

    account, mailbox = synced_mailbox
    # A run holds the mailbox: a sync queued now would find it taken and end at once.
    MailboxSync.objects.create(
        account=account, claimed_until=timezone.now() + timedelta(minutes=5), claim_token="x"
    )
    looked, real = [], selectors.mailboxes_sync_running

    def counting(**kwargs):
        looked.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(selectors, "mailboxes_sync_running", counting)
    with running(Listener(config=config())):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        mailbox.append("INBOX", make_message())
        eventually(lambda: len(looked) >= 3, what="the busy mailbox looked at")
        assert published == []
        MailboxSync.objects.filter(account=account).update(claimed_until=None, claim_token="")
        eventually(lambda: published == [account.pk], what="queued after the run")


def test_it_reconnects_after_the_server_restarts(
    transactional_db, own_dovecot, own_provider, published, short_lease
):
    account = own_account(own_provider, 0)
    mailbox = Mailbox(own_dovecot, account.address, "push-secret")
    with running(Listener(config=config())):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        own_dovecot.stop()
        eventually(lambda: state_of(account) in (State.BACKOFF, State.CONNECTING), what="noticed")
        # Why it reconnects stays said while it connects again.
        assert watch_of(account).error_kind in ("connection_lost", "connection", "refused",
                                                "timeout")  # fmt: skip
        own_dovecot.start()
        eventually(lambda: state_of(account) == State.WATCHING, what="watching again")
        # Whatever came while it was down: one sync is queued on reconnecting.
        eventually(lambda: published == [account.pk], what="the catch-up sync")
        published.clear()
        mailbox.append("INBOX", make_message(subject="after the restart"))
        eventually(lambda: published == [account.pk], what="the new message's sync")


def test_it_follows_a_password_changed_on_the_server_then_by_the_owner(
    transactional_db, own_dovecot, own_provider, published, short_lease, monkeypatch
):
    from sync.services import mailbox_attention_clear
    from tests.servers.dovecot import DovecotUser

    account = own_account(own_provider, 1)
    opened, real_open = [], ImapWatcher.open

    async def counting_open(self):
        opened.append(self)
        await real_open(self)

    monkeypatch.setattr(ImapWatcher, "open", counting_open)
    with running(Listener(config=config())):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        # The password changes on the server (passwd-file is read again when it
        # changes), and the connection is cut: the old password no longer works.
        own_dovecot.users = [
            DovecotUser(u.name, "changed-secret" if u.name == account.address else u.password)
            for u in own_dovecot.users
        ]
        uid, gid = own_dovecot._mail_ids()
        (own_dovecot.root / "users").write_text(
            "".join(
                f"{u.name}:{{PLAIN}}{u.password}:{uid}:{gid}::{own_dovecot.root}/mail/{u.name}::\n"
                for u in own_dovecot.users
            )
        )
        # Dovecot looks at the file at most once a second: until it has, the old
        # password still works.
        eventually(lambda: not _accepted(own_dovecot, account.address, "push-secret"))
        own_dovecot.doveadm("kick", account.address)
        eventually(lambda: state_of(account) == State.NEEDS_OWNER, what="needs the owner")
        assert MailboxSync.objects.get(account=account).health == "needs_attention"
        # The owner enters the new password: the next sign-in reads it.
        account.set_password("changed-secret")
        account.save()
        mailbox_attention_clear(account_id=account.pk)
        eventually(lambda: state_of(account) == State.WATCHING, what="watching again")
    assert len(opened) == 3  # the first, the refused one, the new password's
    assert MailboxSync.objects.get(account=account).health == "ok"


def _accepted(dovecot, user: str, password: str) -> bool:
    try:
        dovecot.doveadm("auth", "test", user, password)
    except RuntimeError:
        return False
    return True


def test_it_marks_a_refused_password_for_the_owner_and_stops_watching(
    transactional_db, synced_mailbox, published, short_lease
):
    account, _ = synced_mailbox
    account.set_password("not the password")
    account.save()
    listener = Listener(config=config())
    with running(listener):
        eventually(lambda: state_of(account) == State.NEEDS_OWNER, what="needs the owner")
        eventually(lambda: account.pk not in listener.watches, what="the watch ended")
        sync = MailboxSync.objects.get(account=account)
        assert sync.health == MailboxSync.Health.NEEDS_ATTENTION
        assert sync.last_error_kind == "credentials"
        assert "not the password" not in sync.last_error
        watch = watch_of(account)
        assert watch.holder == "" and watch.error_kind == "credentials"
        # The owner fixes it (sync.services.mailbox_attention_clear): watched again.
        from sync.services import mailbox_attention_clear

        account.set_password("sync-secret")
        account.save()
        mailbox_attention_clear(account_id=account.pk)
        eventually(lambda: state_of(account) == State.WATCHING, what="watched again")
    assert published == []


def test_it_leaves_a_server_without_idle_to_the_interval(
    transactional_db, poor_dovecot, mail_trust, short_lease, monkeypatch
):
    from push import services
    from tests.factories import EmailProviderFactory

    provider = EmailProviderFactory(
        imap_host="localhost", imap_port=poor_dovecot.imaps_port, imap_security="ssl"
    )
    account = own_account(provider, 2)
    opened, claims = [], []
    real_open, real_claim = ImapWatcher.open, services.watches_claim

    async def counting_open(self):
        opened.append(self)
        await real_open(self)

    def counting_claim(**kwargs):
        claims.append(kwargs)
        return real_claim(**kwargs)

    monkeypatch.setattr(ImapWatcher, "open", counting_open)
    monkeypatch.setattr(services, "watches_claim", counting_claim)
    listener = Listener(config=config())
    with running(listener):
        eventually(lambda: state_of(account) == State.NOT_SUPPORTED, what="not supported")
        eventually(lambda: account.pk not in listener.watches, what="the watch ended")
        watch = watch_of(account)
        assert watch.holder == ""
        assert "IDLE" in watch.error
        # Not claimed again by the next ticks (asked again after a long while).
        ticks = len(claims)
        eventually(lambda: len(claims) >= ticks + 5, what="five more ticks")
        assert state_of(account) == State.NOT_SUPPORTED
        assert account.pk not in listener.watches
        assert len(opened) == 1


def test_it_picks_up_and_drops_mailboxes_without_a_restart(
    transactional_db, own_dovecot, own_provider, published, short_lease
):
    first = own_account(own_provider, 3)
    listener = Listener(config=config())
    with running(listener):
        eventually(lambda: state_of(first) == State.WATCHING, what="the first watched")
        second = own_account(own_provider, 4)
        eventually(lambda: state_of(second) == State.WATCHING, what="a new mailbox watched")
        first.auto_sync = False
        first.save()
        eventually(lambda: first.pk not in listener.watches, what="auto-download off dropped")
        assert state_of(first) == State.STOPPED
        second.delete()
        eventually(lambda: second.pk not in listener.watches, what="a deleted mailbox dropped")


def test_it_shares_mailboxes_between_listeners_and_takes_over_a_killed_ones(
    transactional_db, own_dovecot, own_provider, mail_trust, settings, tmp_path
):
    accounts = [own_account(own_provider, n) for n in range(5, 9)]
    db = connection.settings_dict
    env = {
        **os.environ,
        "DEBUG": "true",
        "MAILSETUP_VAR_DIR": str(tmp_path),
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        ),
        "CELERY_BROKER_URL": "filesystem://",
        "CREDENTIAL_KEYS": ",".join(settings.CREDENTIAL_KEYS),
        "MAIL_EXTRA_CA_FILE": str(mail_trust),
        "PUSH_LEASE_SECONDS": "3",
        "PUSH_TICK_SECONDS": "1",
        # One mailbox a tick each: two listeners starting together share them.
        "PUSH_CLAIM_BATCH": "1",
        "LOG_FORMAT": "json",
    }
    processes = {}
    for name in ("listener-a", "listener-b"):
        with open(tmp_path / f"{name}.log", "w") as log:
            processes[name] = subprocess.Popen(
                [sys.executable, "manage.py", "mail_listener", "--holder", name],
                cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def holders():
        rows = MailboxWatch.objects.filter(account__in=accounts, state=State.WATCHING)
        return dict(rows.values_list("account_id", "holder"))

    def logs() -> str:
        return "\n".join((tmp_path / f"{n}.log").read_text() for n in processes)

    try:
        shared = eventually(
            lambda: (h := holders()) and len(h) == 4 and len(set(h.values())) == 2 and h,
            within=60, what="four mailboxes watched by both listeners",
        )  # fmt: skip
        killed = processes["listener-a"]
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        orphans = [a for a, holder in shared.items() if holder == "listener-a"]
        assert orphans
        # Its leases run out (3 s), and the other listener takes its mailboxes.
        eventually(
            lambda: set(holders().values()) == {"listener-b"} and len(holders()) == 4,
            within=30, what=f"taken over\n{logs()}",
        )  # fmt: skip
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait(timeout=20)
    # The survivor's SIGTERM freed its mailboxes at once.
    assert not MailboxWatch.objects.exclude(holder="").exists(), logs()
    for line in logs().splitlines():
        assert "push-secret" not in line
    # JSON lines, each watch's with its mailbox's id bound.
    import json

    watching = [
        record for line in logs().splitlines() if line.startswith("{")
        for record in [json.loads(line)] if record["event"].endswith(": watching")
    ]  # fmt: skip
    assert {r["mailbox_id"] for r in watching} == {a.pk for a in accounts}
    assert all(r["event"] == f"mailbox {r['mailbox_id']}: watching" for r in watching)


def test_it_spreads_reconnects_with_full_jitter():
    delays = [backoff_delay(1, base=2, cap=300) for _ in range(200)]
    assert all(0 <= d <= 2 for d in delays)
    assert max(delays) - min(delays) > 1  # spread, not one instant for everyone
    assert all(0 <= backoff_delay(20, base=2, cap=300) <= 300 for _ in range(50))
    assert max(backoff_delay(5, base=2, cap=300) for _ in range(200)) > 16


def test_it_signs_in_with_a_refreshed_token_when_it_expired_during_idle(
    transactional_db, oauth_mailbox, oauth_server, dovecot, published, short_lease
):
    account, mailbox = oauth_mailbox
    with running(Listener(config=config())):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        assert oauth_server.calls("/token") == []
        # The token runs out while the connection idles (Dovecot keeps the session),
        # then the connection is cut: our copy still looks fresh, the server refuses it.
        oauth_server.expire_access_tokens()
        dovecot.doveadm("kick", account.address)
        eventually(lambda: len(oauth_server.calls("/token")) == 1, what="a refresh")
        eventually(lambda: state_of(account) == State.WATCHING, what="watching again")
        published.clear()
        mailbox.append("INBOX", make_message(subject="after the refresh"))
        eventually(lambda: account.pk in published, what="the new message's sync")
    assert len(oauth_server.calls("/token")) == 1


def test_it_stops_watching_when_the_oauth_grant_is_revoked(
    transactional_db, oauth_mailbox, oauth_server, dovecot, published, short_lease
):
    account, _ = oauth_mailbox
    listener = Listener(config=config())
    with running(listener):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        oauth_server.expire_access_tokens()
        oauth_server.state.refresh_tokens.clear()  # consent revoked
        dovecot.doveadm("kick", account.address)
        eventually(lambda: state_of(account) == State.NEEDS_OWNER, what="needs the owner")
        eventually(lambda: account.pk not in listener.watches, what="the watch ended")
    account.refresh_from_db()
    assert account.reconnect_needed_at is not None
    sync = MailboxSync.objects.get(account=account)
    assert sync.health == MailboxSync.Health.NEEDS_ATTENTION
    assert sync.last_error_kind == "reconnect"
    assert watch_of(account).error_kind == "reconnect"


def test_it_reconnects_after_an_unexpected_error_of_the_client_library(
    transactional_db, synced_mailbox, published, short_lease, monkeypatch
):
    from aioimaplib.aioimaplib import Abort

    account, mailbox = synced_mailbox
    real, broken, waiting = ImapWatcher._next_change, [], []

    async def once_broken(self, within):
        waiting.append(self)
        if not broken:
            broken.append(self)
            raise Abort("unexpected tagged response")
        return await real(self, within)

    monkeypatch.setattr(ImapWatcher, "_next_change", once_broken)
    with running(Listener(config=config())):
        # Watching again: a new connection waits for changes (the state alone still
        # read "watching" from before the error until the error was taken in).
        eventually(
            lambda: (
                any(w is not broken[0] for w in waiting[1:]) and state_of(account) == State.WATCHING
            ),
            what="watching again",
        )
        assert watch_of(account).error == ""
        mailbox.append("INBOX", make_message())
        eventually(lambda: account.pk in published, what="the sync queued")


def test_it_frees_a_mailbox_whose_watch_met_a_bug(
    transactional_db, synced_mailbox, short_lease, monkeypatch, settings
):
    import logging

    import structlog.contextvars

    from push import services

    listener = Listener(config=config(tick=30))  # no tick claims it again meanwhile
    account, _ = synced_mailbox
    settings.LOG_FORMAT = "json"
    bound, real = [], services.watch_release
    lines = []

    class Ids(logging.Filter):
        def filter(self, record):
            lines.append((record.getMessage(), structlog.contextvars.get_contextvars()))
            return True

    async def buggy(self, account_id, *, catch_up):
        raise ZeroDivisionError

    def release(**kwargs):
        bound.append(structlog.contextvars.get_contextvars())
        return real(**kwargs)

    monkeypatch.setattr(Listener, "_watch", buggy)
    monkeypatch.setattr(services, "watch_release", release)
    ids = Ids()
    logging.getLogger("push.listener").addFilter(ids)
    try:
        with running(listener):
            eventually(lambda: watch_of(account) and watch_of(account).error, what="released")
            watch = watch_of(account)
            assert (watch.holder, watch.state) == ("", State.STOPPED)
    finally:
        logging.getLogger("push.listener").removeFilter(ids)
    # The failure's line and the release name the mailbox, though the loop, not its
    # watch, ran them; the loop's own lines name none.
    failed = [bound_ids for line, bound_ids in lines if "the watch failed" in line]
    assert failed == [{"mailbox_id": account.pk}], lines
    assert all(bound_ids == {} for line, bound_ids in lines if "listener" in line), lines
    assert {"mailbox_id": account.pk} in bound, bound


def test_it_stores_a_message_appended_to_another_chosen_folder(
    transactional_db, synced_mailbox, inline_sync, short_lease
):
    from sync.services import mailbox_sync

    account, mailbox = synced_mailbox
    mailbox.create("Projects")
    mailbox_sync(account_id=account.pk)  # the folders are known from the first sync on
    with running(Listener(config=config())):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        mailbox.append("Projects", make_message(subject="in a project"))
        eventually(
            lambda: Email.objects.filter(account=account, subject="in a project").exists(),
            within=15, what="the email stored",
        )  # fmt: skip


def test_it_renews_its_leases_while_a_sign_in_is_slow(
    transactional_db, synced_mailbox, published, short_lease, monkeypatch
):
    import threading

    from push import services

    account, _ = synced_mailbox
    # A sign-in that hangs (an OAuth token server answering slowly): the leases, on
    # their own thread, are renewed meanwhile and do not run out.
    release, entered, real = threading.Event(), threading.Event(), services.watch_sign_in

    def slow(**kwargs):
        entered.set()
        release.wait(timeout=20)
        return real(**kwargs)

    monkeypatch.setattr(services, "watch_sign_in", slow)
    try:
        with running(Listener(config=config())):
            eventually(entered.is_set, what="the sign-in started")
            first = watch_of(account).lease_expires_at
            # The lease is 3 s, renewed every 0.2 s tick.
            eventually(
                lambda: watch_of(account).lease_expires_at > first + timedelta(seconds=1),
                what="the lease renewed during the sign-in",
            )  # fmt: skip
            release.set()
            eventually(lambda: state_of(account) == State.WATCHING, what="watching")
    finally:
        release.set()


def test_it_queues_no_second_sync_while_the_first_waits_for_a_worker(
    transactional_db, synced_mailbox, backed_up, short_lease
):
    from django.utils import timezone

    account, mailbox = synced_mailbox
    listener = Listener(config=config())  # debounce 0.2 s
    with running(listener):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        mailbox.append("INBOX", make_message(subject="first"))
        eventually(lambda: backed_up == [account.pk], what="the sync queued")
        first = watch_of(account).last_event_at
        # More mail, windows later: the queued sync has not started, and will see it.
        for n in range(3):
            mailbox.append("INBOX", make_message(subject=f"more {n}"))
            eventually(lambda f=first: watch_of(account).last_event_at > f, what="considered")
            first = watch_of(account).last_event_at
        eventually(lambda: account.pk not in listener._queuers, what="nothing waiting")
        assert backed_up == [account.pk]
        # A worker starts it: the next change queues the next sync.
        MailboxSync.objects.update_or_create(
            account=account, defaults={"last_started_at": timezone.now()}
        )
        mailbox.append("INBOX", make_message(subject="after the start"))
        eventually(lambda: backed_up == [account.pk] * 2, what="the next sync queued")


def test_it_syncs_mail_that_came_while_no_listener_ran(
    transactional_db, synced_mailbox, inline_sync, short_lease, monkeypatch
):
    from sync.services import mailbox_sync

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="synced before"))
    mailbox_sync(account_id=account.pk)
    compared, real = [], Listener._inbox_changed

    async def recording(self, account_id, watcher):
        compared.append(await real(self, account_id, watcher))
        return compared[-1]

    monkeypatch.setattr(Listener, "_inbox_changed", recording)
    # Nothing changed since the sync: starting queues nothing.
    with running(Listener(config=config())):
        eventually(lambda: compared, what="the inbox compared")
    assert compared == [False]
    assert inline_sync == []
    # Stopped gracefully (its mailboxes freed, no lease ran out); mail comes meanwhile.
    mailbox.append("INBOX", make_message(subject="while nobody listened"))
    with running(Listener(config=config())):
        eventually(
            lambda: Email.objects.filter(account=account, subject="while nobody listened")
            .exists(),
            within=15, what="the email stored after the start",
        )  # fmt: skip
    assert inline_sync == [account.pk]
    assert compared == [False, True]


def test_it_watches_again_a_mailbox_it_holds_and_no_watch_has(
    transactional_db, synced_mailbox, published, short_lease, monkeypatch
):
    from push import services

    account, _ = synced_mailbox
    real, signed_in = services.watch_sign_in, []

    def seemingly_gone_once(**kwargs):
        # The first sign-in finds no mailbox (a read racing an edit): the watch ends
        # while the mailbox stays held and eligible.
        signed_in.append(kwargs)
        return None if len(signed_in) == 1 else real(**kwargs)

    monkeypatch.setattr(services, "watch_sign_in", seemingly_gone_once)
    listener = Listener(config=config())
    with running(listener):
        eventually(lambda: state_of(account) == State.WATCHING, what="watched again")
        assert watch_of(account).holder == listener.holder
    assert len(signed_in) == 2


def test_it_asks_about_every_busy_mailbox_in_one_query(
    transactional_db, own_dovecot, own_provider, published, short_lease, monkeypatch, settings
):
    import structlog.contextvars
    from django.utils import timezone

    from sync import selectors

    # The one query is the asker's, for every mailbox: its log lines name none of them.
    settings.LOG_FORMAT = "json"
    bound = []

    accounts = [own_account(own_provider, n) for n in (8, 9)]
    for account in accounts:
        MailboxSync.objects.create(
            account=account, claimed_until=timezone.now() + timedelta(minutes=5), claim_token="x"
        )
    asked, real = [], selectors.mailboxes_sync_running

    def counting(*, account_ids):
        asked.append(sorted(account_ids))
        bound.append(structlog.contextvars.get_contextvars())
        return real(account_ids=account_ids)

    monkeypatch.setattr(selectors, "mailboxes_sync_running", counting)
    with running(Listener(config=config(busy_poll=0.5))):
        for account in accounts:
            eventually(lambda a=account: state_of(a) == State.WATCHING, what="watching")
        for account in accounts:
            Mailbox(own_dovecot, account.address, "push-secret").append("INBOX", make_message())
        both = sorted(a.pk for a in accounts)
        eventually(lambda: both in asked, what="both busy mailboxes asked about in one query")
        assert published == []
    assert bound and all("mailbox_id" not in ids for ids in bound), bound


def test_it_queues_the_sync_even_when_asking_whether_one_runs_failed(
    transactional_db, own_dovecot, own_provider, published, short_lease, monkeypatch
):
    from sync import selectors

    account = own_account(own_provider, 10)
    calls, real = [], selectors.mailboxes_sync_running

    def failing_once(*, account_ids):
        calls.append(sorted(account_ids))
        if len(calls) == 1:
            raise ValueError("not the database's going away: any error")
        return real(account_ids=account_ids)

    monkeypatch.setattr(selectors, "mailboxes_sync_running", failing_once)
    with running(Listener(config=config(busy_poll=0.2))):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        published.clear()
        Mailbox(own_dovecot, account.address, "push-secret").append("INBOX", make_message())
        # The first ask failed; the change is asked about again and queued, not stalled.
        eventually(lambda: account.pk in published, what="the sync queued after a failed ask")
    assert len(calls) >= 2
