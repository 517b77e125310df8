"""The IMAP watcher (mail/imap_smtp/watch.py: aioimaplib, IDLE) against the suite's real
Dovecot, through the backend interface the listener uses."""

import asyncio

import pytest

from mail.backend import WatchUnsupported
from mail.errors import MailError, Retry
from mail.registry import backend_for
from providers.addresses import normalize_address
from tests.mailbox import make_message
from tests.push_servers import run_apart, signed_in_and_closed


def _watcher(account, **secret):
    return backend_for(account.provider).watcher(
        provider=account.provider, address=normalize_address(account.address),
        login=account.login, allow_internal=True, **(secret or {"password": "sync-secret"}),
    )  # fmt: skip


def test_it_reports_a_message_appended_by_another_connection(synced_mailbox):
    account, mailbox = synced_mailbox

    async def scenario():
        watcher = _watcher(account)
        await watcher.open()
        try:
            # Nothing new: the wait ends at its renewal time, and IDLE starts again.
            assert await watcher.next_change(within=0.2) is False
            waiting = asyncio.ensure_future(watcher.next_change(within=20))
            await asyncio.to_thread(mailbox.append, "INBOX", make_message(subject="pushed"))
            return await waiting
        finally:
            await watcher.close()

    assert run_apart(scenario()) is True


def test_it_reports_a_deleted_message(synced_mailbox):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="to go"))

    def delete():
        with mailbox.client() as client:
            client.select_folder("INBOX")
            client.delete_messages(client.search())
            client.expunge()

    async def scenario():
        watcher = _watcher(account)
        await watcher.open()
        try:
            waiting = asyncio.ensure_future(watcher.next_change(within=20))
            await asyncio.to_thread(delete)
            return await waiting
        finally:
            await watcher.close()

    assert run_apart(scenario()) is True


def test_it_refuses_a_wrong_password_as_the_owners_to_fix(synced_mailbox):
    account, _ = synced_mailbox

    with pytest.raises(MailError) as caught:
        run_apart(signed_in_and_closed(lambda: _watcher(account, password="not the password")))
    assert caught.value.kind == "credentials"
    assert caught.value.retry == Retry.OWNER
    assert "not the password" not in str(caught.value)


def test_it_watches_over_starttls(synced_mailbox, dovecot):
    account, mailbox = synced_mailbox
    account.provider.imap_port, account.provider.imap_security = dovecot.imap_port, "starttls"

    async def scenario():
        watcher = _watcher(account)
        await watcher.open()
        try:
            waiting = asyncio.ensure_future(watcher.next_change(within=20))
            await asyncio.to_thread(mailbox.append, "INBOX", make_message())
            return await waiting
        finally:
            await watcher.close()

    assert run_apart(scenario()) is True


def test_it_refuses_a_certificate_it_cannot_verify(synced_mailbox, settings):
    account, _ = synced_mailbox
    settings.MAIL_EXTRA_CA_FILE = None  # the suite's CA is no longer trusted

    with pytest.raises(MailError) as caught:
        run_apart(signed_in_and_closed(lambda: _watcher(account)))
    assert caught.value.kind == "certificate"


def test_it_signs_in_with_an_oauth_token_and_refuses_a_revoked_one(oauth_mailbox, oauth_server):
    from accounts.oauth import access_token

    account, mailbox = oauth_mailbox
    token = access_token(account_id=account.pk)

    async def scenario(secret):
        watcher = _watcher(account, access_token=secret)
        try:
            await watcher.open()
            waiting = asyncio.ensure_future(watcher.next_change(within=20))
            await asyncio.to_thread(mailbox.append, "INBOX", make_message())
            return await waiting
        finally:
            await watcher.close()

    assert run_apart(scenario(token)) is True
    with pytest.raises(MailError) as caught:
        run_apart(scenario("not-a-token"))
    assert caught.value.kind == "credentials"


def test_it_says_a_server_without_idle_cannot_be_watched(poor_dovecot, db, mail_trust):
    from tests.factories import EmailAccountFactory, EmailProviderFactory

    provider = EmailProviderFactory(
        imap_host="localhost", imap_port=poor_dovecot.imaps_port, imap_security="ssl"
    )
    account = EmailAccountFactory(provider=provider, address="push-0@example.test")

    with pytest.raises(WatchUnsupported):
        run_apart(signed_in_and_closed(lambda: _watcher(account, password="push-secret")))


def test_it_keeps_passwords_and_tokens_out_of_the_debug_log(oauth_mailbox, caplog):
    import base64
    import logging

    from accounts.oauth import access_token

    # Kept at WARNING in settings.LOGGING; even at DEBUG nothing secret is written.
    caplog.set_level(logging.DEBUG, logger="aioimaplib")
    # The suite's Dovecot takes this user's password and its OAuth tokens alike.
    account, _ = oauth_mailbox
    token = access_token(account_id=account.pk)

    async def scenario(account, **secret):
        watcher = _watcher(account, **secret)
        try:
            await watcher.open()
            await watcher.next_change(within=0.1)
        finally:
            await watcher.close()

    run_apart(scenario(account, password="sync-secret"))
    run_apart(scenario(account, access_token=token))
    sasl = base64.b64encode(f"user={account.login}\1auth=Bearer {token}\1\1".encode())
    assert "LOGIN" in caplog.text and "AUTHENTICATE" in caplog.text  # the lines are there
    for secret in ("sync-secret", token, sasl.decode()):
        assert secret not in caplog.text


def test_it_hears_about_the_other_chosen_folders_through_notify(synced_mailbox):
    account, mailbox = synced_mailbox
    mailbox.create("Projects")
    mailbox.create("Elsewhere")

    async def scenario():
        watcher = _watcher(account, password="sync-secret", folders=("INBOX", "Projects"))
        await watcher.open()
        try:
            assert watcher.notifying
            waiting = asyncio.ensure_future(watcher.next_change(within=20))
            await asyncio.to_thread(mailbox.append, "Projects", make_message())
            chosen = await waiting
            waiting = asyncio.ensure_future(watcher.next_change(within=0.5))
            await asyncio.to_thread(mailbox.append, "Elsewhere", make_message())
            return chosen, await waiting
        finally:
            await watcher.close()

    assert run_apart(scenario()) == (True, False)


def test_it_hears_about_every_folder_when_all_are_watched(synced_mailbox):
    account, mailbox = synced_mailbox
    mailbox.create("Anywhere")

    async def scenario():
        watcher = _watcher(account, password="sync-secret", folders=None)
        await watcher.open()
        try:
            waiting = asyncio.ensure_future(watcher.next_change(within=20))
            await asyncio.to_thread(mailbox.append, "Anywhere", make_message())
            return await waiting
        finally:
            await watcher.close()

    assert run_apart(scenario()) is True


class _Wire:
    """A transport stand-in: what the protocol writes, and whether it ended the connection."""

    def __init__(self):
        self.written, self.aborted = [], False

    def write(self, data):
        self.written.append(data)

    def abort(self):
        self.aborted = True


def _protocol(*, pending=None):
    from aioimaplib.aioimaplib import SELECTED, Command, IdleCommand

    from mail.imap_smtp.watch import _Protocol

    loop = asyncio.get_running_loop()
    protocol = _Protocol(loop, asyncio.Event())
    protocol.transport, protocol.state = _Wire(), SELECTED
    if pending == "IDLE":
        protocol.pending_sync_command = IdleCommand("A1", protocol.idle_queue, loop=loop)
    elif pending is not None:
        protocol.pending_sync_command = Command("LOGIN", "A1", '"alice"', pending, loop=loop)
    return protocol


def test_it_reads_thousands_of_untagged_lines_in_one_read():
    # A mailbox emptied in another client: one read carries every EXPUNGE. aioimaplib
    # recurses once a line and would end the connection with a RecursionError.
    async def scenario():
        protocol = _protocol(pending="IDLE")
        protocol.data_received(b"* 1 EXPUNGE\r\n" * 5000)
        lines = []
        while not protocol.idle_queue.empty():
            lines += protocol.idle_queue.get_nowait()
        return protocol.transport.aborted, len(lines)

    assert run_apart(scenario()) == (False, 5000)


def test_it_keeps_a_change_reported_between_two_idle_commands():
    from mail.imap_smtp.watch import CHANGE

    # IDLE ended, the next not yet sent: aioimaplib would drop what the server says now.
    async def scenario():
        protocol = _protocol()
        protocol.data_received(b"* 4 EXISTS\r\n* STATUS Projects (MESSAGES 2)\r\n")
        lines = []
        while not protocol.idle_queue.empty():
            lines += protocol.idle_queue.get_nowait()
        return lines

    lines = run_apart(scenario())
    assert lines == [b"4 EXISTS", b"STATUS Projects (MESSAGES 2)"]
    assert all(CHANGE.match(line) for line in lines)


@pytest.mark.parametrize(
    "flood",
    [
        [b"x" * 65536] * 40,  # a line that never ends
        [b"* 1 FETCH (BODY[] {100000000000}\r\n", *[b"y" * 65536] * 40],  # a huge literal
    ],
    ids=["line", "literal"],
)
def test_it_ends_a_connection_whose_server_sends_without_bound(flood):
    async def scenario():
        protocol = _protocol(pending="IDLE")
        for chunk in flood:
            if protocol.transport.aborted:
                break
            protocol.data_received(chunk)
        held = len(protocol.incomplete_line)
        return protocol.transport.aborted, held

    aborted, held = run_apart(scenario())
    assert aborted
    assert held == 0


def test_it_keeps_the_password_out_of_the_log_when_a_server_answers_out_of_turn(caplog):
    import logging

    from aioimaplib.aioimaplib import quoted

    caplog.set_level(logging.DEBUG)
    secret = quoted("Sup3r-Secret-Pw")

    async def scenario():
        protocol = _protocol(pending=secret)
        # A tagged answer with another tag: aioimaplib's Abort quotes the pending LOGIN.
        protocol.data_received(b"ZZ99 OK logged in\r\n")
        return protocol.transport.aborted

    assert run_apart(scenario())
    assert "Sup3r-Secret-Pw" not in caplog.text
    assert "Abort" in caplog.text


def test_it_reads_the_inbox_status_from_the_examine_answer():
    from mail.imap_smtp.watch import _inbox_status

    lines = [b"FLAGS (\\Seen)", b"12 EXISTS", b"0 RECENT", b"OK [UIDVALIDITY 1700000000] UIDs",
             b"ok [uidnext 40] Predicted", b"OK [READ-ONLY] Examine completed"]  # fmt: skip
    assert _inbox_status(lines) == {"messages": 12, "uidvalidity": 1700000000, "uidnext": 40}
    # A server that leaves UIDNEXT out: nothing to compare, no guess.
    assert _inbox_status([b"12 EXISTS", b"OK [UIDVALIDITY 1] UIDs"]) is None


def test_it_finds_the_tls_read_buffer_size_it_lowers_for_the_listener(monkeypatch):
    import asyncio.sslproto

    from push.management.commands.mail_listener import TLS_READ_BUFFER, small_tls_buffers

    # A private CPython attribute (3.13: 256 KiB per TLS connection): if a Python
    # version drops or renames it, this says so.
    assert isinstance(asyncio.sslproto.SSLProtocol.max_size, int)
    assert asyncio.sslproto.SSLProtocol.max_size > TLS_READ_BUFFER
    monkeypatch.setattr(asyncio.sslproto.SSLProtocol, "max_size",
                        asyncio.sslproto.SSLProtocol.max_size)  # fmt: skip
    small_tls_buffers()
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
