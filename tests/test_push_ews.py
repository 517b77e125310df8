"""Exchange mailboxes watched through EWS pull subscriptions (mail/ews/watch.py), against
the suite's EWS protocol fake (tests/servers/ews.py). It is a fake, not Exchange: it
answers Subscribe, GetEvents and Unsubscribe as Exchange 2016 documents them, with events
for what its helpers change."""

import asyncio

import pytest

from mail.errors import MailError
from mail.registry import backend_for
from providers.addresses import normalize_address
from push.listener import Listener
from push.models import MailboxWatch
from sync.models import Email
from tests.mailbox import make_message
from tests.push_servers import (
    config,
    eventually,
    run_apart,
    running,
    signed_in_and_closed,
    state_of,
)

State = MailboxWatch.State


@pytest.fixture(autouse=True)
def _quick_polls(settings):
    settings.PUSH_EWS_POLL_SECONDS = 0.1
    settings.PUSH_LEASE_SECONDS = 3


def _watcher(account, **secret):
    return backend_for(account.provider).watcher(
        provider=account.provider, address=normalize_address(account.address),
        login=account.login, allow_internal=True, **(secret or {"password": "ews-secret"}),
    )  # fmt: skip


# transactional_db: exchangelib runs in threads, which read the system setting that lets
# it reach loopback on connections of their own.


def test_it_reports_new_and_deleted_mail_in_the_inbox(
    transactional_db, exchange_mailbox, ews_server
):
    account, address = exchange_mailbox

    async def scenario():
        watcher = _watcher(account)
        await watcher.open()
        try:
            quiet = await watcher.next_change(within=0.3)
            new = ews_server.add_message("inbox", mailbox=address, mime=make_message())
            came = await watcher.next_change(within=20)
            ews_server.delete_item(new)
            went = await watcher.next_change(within=20)
            # Elsewhere than the inbox: not this watcher's.
            ews_server.add_message("sentitems", mailbox=address, mime=make_message())
            elsewhere = await watcher.next_change(within=0.3)
            return quiet, came, went, elsewhere
        finally:
            await watcher.close()

    assert run_apart(scenario()) == (False, True, True, False)
    assert ews_server.calls("Subscribe") == 1
    assert ews_server.calls("Unsubscribe") == 1
    assert ews_server.state.subscriptions == {}


def test_it_takes_a_subscription_the_server_forgot_as_a_broken_connection(
    transactional_db, exchange_mailbox, ews_server
):
    account, _ = exchange_mailbox

    async def scenario():
        watcher = _watcher(account)
        await watcher.open()
        try:
            ews_server.end_subscriptions()
            await watcher.next_change(within=5)
        finally:
            await watcher.close()

    with pytest.raises(MailError) as caught:
        run_apart(scenario())
    assert caught.value.kind == "connection"


def test_it_refuses_a_wrong_password(transactional_db, exchange_mailbox):
    account, _ = exchange_mailbox

    with pytest.raises(MailError) as caught:
        run_apart(signed_in_and_closed(lambda: _watcher(account, password="not the password")))
    assert caught.value.kind == "credentials"
    assert "not the password" not in str(caught.value)


def test_it_stores_new_exchange_mail_through_the_listener(
    transactional_db, exchange_mailbox, ews_server, monkeypatch
):
    from sync import services, tasks

    def run(task, *args):
        if task is tasks.sync_mailbox:
            services.mailbox_sync(account_id=args[0])
        return True

    monkeypatch.setattr(services, "publish", run)
    account, address = exchange_mailbox
    with running(Listener(config=config())):
        eventually(lambda: state_of(account) == State.WATCHING, what="watching")
        ews_server.add_message("inbox", mailbox=address, mime=make_message(subject="via ews"))
        eventually(
            lambda: Email.objects.filter(account=account, subject="via ews").exists(),
            within=20, what="the new Exchange email stored",
        )  # fmt: skip
        # The server forgets the subscription: the listener subscribes again.
        subscribed = ews_server.calls("Subscribe")
        ews_server.end_subscriptions()
        eventually(lambda: ews_server.calls("Subscribe") > subscribed, what="subscribed again")
        eventually(lambda: state_of(account) == State.WATCHING, what="watching again")


def test_it_polls_exchange_on_threads_of_its_own(settings):
    import threading

    from mail.ews import watch

    settings.PUSH_EWS_THREADS = 3
    watch._pool = None  # made again with this setting

    async def names():
        return await asyncio.gather(
            *[watch._in_thread(lambda: threading.current_thread().name) for _ in range(6)]
        )

    try:
        used = run_apart(names())
        assert all(name.startswith("push-ews") for name in used)
        # Not asyncio's default executor, which the IMAP watchers connect with.
        assert watch._threads()._max_workers == 3
    finally:
        watch._threads().shutdown()
        watch._pool = None
