"""Answers that must keep coming (mail/pace.py), over SMTP: a server on
loopback that answers its greeting and EHLO at once, then drips its answer to MAIL FROM
a byte every 0.2 s, under a read timeout of 1 s that it never lets run out. (Over IMAP:
tests/test_sync_isolation.py, through Dovecot.)"""

import smtplib
import socket
import threading
import time

import pytest

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
    with pytest.raises(smtplib.SMTPServerDisconnected, match="too slowly"):
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
