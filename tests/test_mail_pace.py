"""Answers that must keep coming (mail/pace.py), over SMTP: a server on
loopback that answers its greeting and EHLO at once, then drips its answer to MAIL FROM
a byte every 0.2 s, under a read timeout of 1 s that it never lets run out. (Over IMAP:
tests/test_sync_isolation.py, through Dovecot.)"""

import contextlib
import smtplib
import socket
import threading
import time

import pytest

from mail.errors import MailError
from mail.imap_smtp.connection import _PinnedSMTP
from mail.pace import PACE_CONNECTS
from tests.servers.proxy import listening


class DrippingSmtp:
    def __init__(self, drip_for: float = 60) -> None:
        self.listener, self.port = listening()
        self.drip_for = drip_for
        self.dripped = threading.Event()
        self.ended = threading.Event()  # the client cut the connection mid-drip
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(b"220 drip.test ESMTP\r\n")
            lines = conn.makefile("rb")
            try:
                while line := lines.readline():
                    if line.upper().startswith((b"EHLO", b"HELO")):
                        conn.sendall(b"250-drip.test\r\n250 8BITMIME\r\n")
                    elif line.upper().startswith(b"MAIL FROM"):
                        self.dripped.set()
                        began = time.monotonic()
                        conn.sendall(b"250 ")
                        while time.monotonic() - began < self.drip_for:
                            conn.sendall(b"O")
                            time.sleep(0.2)
                        conn.sendall(b"K\r\n")
                    else:
                        conn.sendall(b"250 OK\r\n")
            except OSError:
                self.ended.set()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dripping():
    server = DrippingSmtp()
    yield server
    server.close()


def test_it_cuts_an_smtp_answer_that_comes_a_byte_at_a_time(dripping):
    client = _PinnedSMTP(
        opener=lambda: socket.create_connection(("127.0.0.1", dripping.port), timeout=1),
        implicit_context=None,
        timeout=1,
    )
    client.connect("127.0.0.1", dripping.port)
    assert client.ehlo()[0] == 250
    began = time.monotonic()
    # What smtplib makes of a read that timed out: the sending code decides as it did.
    with pytest.raises(smtplib.SMTPServerDisconnected, match="did not arrive in full within"):
        client.mail("alice@example.test")
    took = time.monotonic() - began
    assert dripping.dripped.is_set()
    assert PACE_CONNECTS * 1 <= took < 15  # four read timeouts, and the pacer's second
    assert dripping.ended.wait(5)


def test_it_lets_a_prompt_smtp_answer_through(dripping):
    dripping.drip_for = 0.6  # three bytes, then the rest: well within the allowance
    client = _PinnedSMTP(
        opener=lambda: socket.create_connection(("127.0.0.1", dripping.port), timeout=1),
        implicit_context=None,
        timeout=1,
    )
    client.connect("127.0.0.1", dripping.port)
    client.ehlo()
    assert client.mail("alice@example.test") == (250, b"OOOK")
    assert client.rcpt("bob@example.test")[0] == 250
    client.close()


class SlowLinesImap:
    """An IMAP server on loopback whose answer to FETCH is `count` short lines, one
    every `interval` seconds: a server working out each message's size (Exchange's
    IMAP on a cold mailbox), slow but steady."""

    def __init__(self, count: int, interval: float) -> None:
        self.listener, self.port = listening()
        self.count, self.interval = count, interval
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
            lines = conn.makefile("rb")
            with contextlib.suppress(OSError):
                while line := lines.readline():
                    tag = line.split(b" ", 1)[0]
                    if b"FETCH" in line.upper():
                        for n in range(1, self.count + 1):
                            conn.sendall(b"* %d FETCH (UID %d RFC822.SIZE 1234)\r\n" % (n, n))
                            time.sleep(self.interval)
                    conn.sendall(tag + b" OK done\r\n")

    def close(self) -> None:
        self.listener.close()


def _imap(port: int):
    from mail.imap_smtp.wire import PinnedIMAP4

    return PinnedIMAP4(
        "127.0.0.1", port, timeout=1, implicit_context=None,
        opener=lambda: socket.create_connection(("127.0.0.1", port), timeout=1),
    )  # fmt: skip


def test_it_lets_a_slow_but_steady_answer_of_many_lines_through():
    # 24 lines, one every 0.3 s: 7 s, past the four read timeouts (4 s) that an answer
    # of a few hundred bytes would have, within its quarter second a line.
    server = SlowLinesImap(count=24, interval=0.3)
    try:
        imap = _imap(server.port)
        imap.state = "SELECTED"  # the fake asks for no sign-in
        typ, data = imap.uid("FETCH", "1:24", "(UID RFC822.SIZE)")
        assert typ == "OK" and len(data) == 24
    finally:
        server.close()


def test_it_cuts_only_a_connection_still_reading_and_sends_nothing_on_a_cut_one():
    from mail.pace import Overdue, Paced

    class Probe(Paced):
        def __init__(self, sock):
            self.sock = sock
            self.pace(1)

    here, there = socket.socketpair()
    with here, there:
        probe = Probe(here)
        probe.due = 0  # overdue, but not reading: a read that ended is never cut after it
        probe.cut_if_overdue(time.monotonic())
        assert not probe.was_cut
        there.sendall(b"x")
        assert probe.paced(0, here.recv, 1) == b"x"
        probe.reading, probe.due = True, 0
        probe.cut_if_overdue(time.monotonic())
        assert probe.was_cut
        with pytest.raises(Overdue):
            probe.asked()  # not a broken pipe, which callers read otherwise


def test_it_cuts_the_other_connections_past_one_that_fails_to_be_checked():
    from mail.pace import Paced, _pacer

    class Probe(Paced):
        def __init__(self, sock):
            self.sock = sock
            self.pace(1)

    class Failing(Probe):
        def cut_if_overdue(self, now):
            raise RuntimeError("one connection's trouble")

    here, there = socket.socketpair()
    with here, there:
        failing, stalled = Failing(here), Probe(here)
        stalled.reading, stalled.due = True, 0  # waiting on a read, long overdue
        try:
            _pacer.check([failing, stalled], time.monotonic())
        finally:
            _pacer.connections.discard(failing)
        assert stalled.was_cut
        here.settimeout(5)
        assert here.recv(1) == b""  # its socket was shut down


def test_it_answers_a_second_request_on_a_pooled_connection_whose_first_answer_was_cut(
    settings,
):
    # Plain HTTP (autodiscover's http step): urllib3 closes the cut connection and pools
    # it again, then reconnects inside send(), after the pacing had already refused it.
    import http.server

    import requests

    from mail.trust import MailTrustAdapter

    settings.MAIL_CONNECT_TIMEOUT = 1
    asked = []

    class Dripping(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the connection goes back to the pool

        def do_GET(self):
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            with contextlib.suppress(OSError):
                if self.path == "/drip":
                    for _ in range(200):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.3)
                else:
                    self.wfile.write(b"y" * 200)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Dripping)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", MailTrustAdapter(pool_maxsize=1))
    try:
        with pytest.raises(requests.exceptions.RequestException):
            session.get(f"{base}/drip", timeout=1)
        answer = session.get(f"{base}/plain", timeout=1)
    finally:
        session.close()
        server.shutdown()
        server.server_close()
    assert answer.status_code == 200 and answer.content == b"y" * 200
    assert asked == ["/drip", "/plain"]


def test_it_says_a_walk_stopped_for_want_of_time_timed_out(db):
    # A walk that ended, stopped by its cancelled scope, between the deadline and the
    # look at it: its AutodiscoverCancelled escaped every handler (a 500 in the wizard).
    from types import SimpleNamespace

    from mail.ews import session
    from providers.addresses import normalize_address

    def account(**kwargs):
        raise session.AutodiscoverCancelled

    ex = SimpleNamespace(Account=account, DELEGATE="delegate", UTC=None)
    with pytest.raises(session.AutodiscoverTimeout):
        session._autodiscovered(ex, normalize_address("ann@corp.test"), credentials=None)


class ReadingSmtp:
    """An SMTP server on loopback whose DATA is read `piece` bytes every `pause`
    seconds through a small receive buffer (a server far away), or, with `cut_after`,
    dropped once that many bytes of it came."""

    def __init__(
        self, *, piece=65536, pause=0.0, cut_after: int | None = None, confirm_after=0.0
    ) -> None:
        self.listener, self.port = listening()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.piece, self.pause, self.cut_after = piece, pause, cut_after
        self.confirm_after = confirm_after
        self.received = bytearray()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, contextlib.suppress(OSError):
            conn.sendall(b"220 far.test ESMTP\r\n")
            pending = b""
            while True:
                while b"\r\n" not in pending:
                    pending += conn.recv(4096) or b"QUIT\r\n"
                line, pending = pending.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                if verb == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    self.received += pending
                    while not self.received.endswith(b"\r\n.\r\n"):
                        if self.cut_after is not None and len(self.received) >= self.cut_after:
                            return  # the connection drops in the middle of the message
                        time.sleep(self.pause)
                        self.received += conn.recv(self.piece)
                    pending = b""
                    time.sleep(self.confirm_after)  # checking the message
                    conn.sendall(b"250 queued\r\n")
                elif verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250 far.test\r\n")
                else:
                    conn.sendall(b"250 OK\r\n")

    def close(self) -> None:
        self.listener.close()


def _smtp_to(server) -> _PinnedSMTP:
    # The client's buffers as the system gives them (megabytes on loopback): what was
    # written is not yet what the server has.
    def opener():
        return socket.create_connection(("127.0.0.1", server.port), timeout=1)

    client = _PinnedSMTP(opener=opener, implicit_context=None, timeout=1)
    client.connect("127.0.0.1", server.port)
    client.ehlo()
    return client


def _message(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    return b"Subject: big\r\n\r\n" + line * (size // len(line))


def test_it_sends_a_large_message_to_a_slow_reading_server_piece_by_piece():
    # 3 MB read at about 1.3 MB/s: 2.4 s in all, past the 1 s timeout that bounded the
    # whole write, so it failed every time (and was called "may have been sent").
    from mail.imap_smtp.delivery import deliver

    server = ReadingSmtp(piece=65536, pause=0.05)
    raw = _message(3_000_000)
    handed = []
    try:
        deliver(
            _smtp_to(server), sender="a@example.test", recipients=["b@example.test"],
            raw=raw, handing_over=lambda: handed.append(len(server.received)),
        )  # fmt: skip
    finally:
        server.close()
    assert bytes(server.received) == raw + b".\r\n"
    # Handed over with the line that ends the message, not before its bytes went out.
    assert handed and handed[0] >= len(raw) - 2 * 65536 * 4


def test_it_sends_again_later_a_message_whose_connection_broke_before_its_end():
    from mail.errors import Retry
    from mail.imap_smtp.delivery import deliver

    server = ReadingSmtp(cut_after=200_000)
    handed = []
    try:
        with pytest.raises(MailError) as raised:
            deliver(
                _smtp_to(server), sender="a@example.test", recipients=["b@example.test"],
                raw=_message(1_000_000), handing_over=lambda: handed.append(True),
            )  # fmt: skip
    finally:
        server.close()
    assert raised.value.kind in ("connection", "timeout") and raised.value.retry == Retry.LATER
    assert handed == []  # the server discards a message whose end never came


def test_it_waits_for_a_server_that_checks_the_message_before_it_confirms():
    # 3 s to confirm, past the read timeout of 1 s: the message went, and was called
    # "may have been sent".
    from mail.imap_smtp.delivery import deliver

    server = ReadingSmtp(confirm_after=3)
    try:
        deliver(
            _smtp_to(server), sender="a@example.test", recipients=["b@example.test"],
            raw=_message(10_000), handing_over=lambda: None,
        )  # fmt: skip
    finally:
        server.close()
    assert server.received.endswith(b"\r\n.\r\n")


def test_it_lets_ntlm_read_the_servers_certificate_through_a_paced_answer(settings, tmp_path):
    import requests
    from requests_ntlm import HttpNtlmAuth

    from mail.trust import MailTrustAdapter
    from tests.servers.https import HttpsServer

    server = HttpsServer(["localhost"])
    server.thread.start()
    try:
        ca_file = tmp_path / "ca.pem"
        server.ca.cert_pem.write_to_path(str(ca_file))
        settings.MAIL_EXTRA_CA_FILE = str(ca_file)
        # Exchange on premises asks for NTLM; requests_ntlm binds its answer to the
        # server's certificate, read from the socket under the (paced) answer.
        server.routes.add("localhost", "/EWS/Exchange.asmx", b"", status=401,
                          WWW_Authenticate="NTLM")  # fmt: skip
        with requests.Session() as session:
            session.mount("https://", MailTrustAdapter())
            # The fake answers no challenge: requests_ntlm gives up there, past the
            # certificate, with its negotiate message sent.
            with pytest.raises(PermissionError, match="NTLM challenge"):
                session.get(
                    f"https://localhost:{server.port}/EWS/Exchange.asmx",
                    auth=HttpNtlmAuth("CORP\\erin", "secret"), timeout=5,
                )  # fmt: skip
    finally:
        server.httpd.shutdown()
    sent = [r["headers"].get("Authorization", "") for r in server.routes.log]
    assert any(value.startswith("NTLM ") for value in sent)
