"""A server must keep its answer coming: IMAP, SMTP and HTTP (Exchange, Graph) alike.

A read timeout bounds each wait for bytes, not an answer: a server that sends a byte
every few seconds held a sync (or a send) and the worker it ran on, which other
mailboxes wait for, for as long as it liked. Each answer to a command now has
PACE_CONNECTS read timeouts, plus a second for every PACE_RATE bytes it brought or
announced (an IMAP literal counts from its announced size) and PER_LINE for every line
(a server working out each message's size for a FETCH of thousands sends short lines
slowly), and never more than MAX_ANSWER: about 1 KB/s, far below any real server's
pace, so only a server that has all but stopped is cut. One thread per process checks
every second and cuts the socket of a connection whose answer is overdue: the thread
blocked in the read cannot be stopped from outside, its socket can.
"""

import contextlib
import io
import logging
import math
import os
import socket
import threading
import time
import weakref

PACE_CONNECTS = 4
PACE_RATE = 1024
PER_LINE = 0.25
MAX_ANSWER = 3600
# Writes go out this much at a time. A socket's timeout bounds a whole sendall(), not
# each step of it: a 20 MB message to a server 10 Mbit/s away (16 s) failed at the
# 15 s timeout, every time. Per piece, an upload must keep at 64 KB a timeout (4 KB/s
# with the default).
SEND_PIECE = 1 << 16

logger = logging.getLogger(__name__)


class Overdue(TimeoutError):
    """An answer cut for coming too slowly: a TimeoutError, as a read that timed out, so
    that callers treat both alike."""


class Paced:
    """A client connection (imaplib's, smtplib's, http.client's) whose reads are paced:
    `pace()` once, `asked()` when a command goes out (and when its socket opens),
    `paced()` around each read of its answer, `sock` the socket."""

    sock: socket.socket | None
    counts_bytes = True  # whether `brought` is kept (smtplib reads its replies itself)

    def pace(self, timeout: float | None) -> None:
        self.allowance = PACE_CONNECTS * (timeout or 60)
        self.pace_lock = threading.Lock()
        self.reading = False
        self.due = math.inf
        self.asked()
        _pacer.watch(self)

    def asked(self) -> None:
        if getattr(self, "was_cut", False):
            # Nothing more goes out on a cut connection: said as what it is (the pipe
            # would be broken, which callers read otherwise).
            raise self.overdue()
        self.asked_at, self.brought, self.lines = time.monotonic(), 0, 0
        self.was_cut = False

    def in_pieces(self, send, data) -> None:
        """send(data), SEND_PIECE bytes at a time: each piece within the timeout."""
        try:
            # A file first, as http.client reads it (an mmap is both).
            view = None if hasattr(data, "read") else memoryview(data).cast("B")
        except TypeError:
            view = None
        if view is None:  # text, a file, an iterable: the library's own way
            send(data)
            return
        if len(view) <= SEND_PIECE:
            send(data)
            return
        with view:
            for start in range(0, len(view), SEND_PIECE):
                send(view[start : start + SEND_PIECE])

    def opened(self) -> None:
        """A new socket: the answer it is for (a greeting) is timed from now."""
        self.was_cut = False
        self.asked()

    def paced(self, announced: int, read, *args):
        """read(*args), cut when the answer is overdue; then raise `overdue()`'s error
        instead of whatever the cut made of the read (an end of file, a part line)."""
        allowed = self.allowance + (self.brought + announced) / PACE_RATE + self.lines * PER_LINE
        with self.pace_lock:
            if self.was_cut:
                raise self.overdue()
            self.due = self.asked_at + min(allowed, MAX_ANSWER)
            self.reading = True
        try:
            data = read(*args)
        except Exception:
            if self.was_cut:
                raise self.overdue() from None
            raise
        finally:
            # Under the lock: the pacer cuts only a connection still reading, so a read
            # that ended is never cut after it, under the next command's feet.
            with self.pace_lock:
                self.reading = False
                cut = self.was_cut
        if cut:
            raise self.overdue()
        return data

    def cut_if_overdue(self, now: float) -> None:
        with self.pace_lock:
            if not (self.reading and now > self.due):
                return
            self.was_cut = True
            # socket.socket's own shutdown: an SSLSocket's would also drop its TLS
            # object under the thread still reading from it.
            with contextlib.suppress(OSError, TypeError):
                socket.socket.shutdown(socket_of(self.sock), socket.SHUT_RDWR)

    def overdue(self) -> Exception:
        return Overdue(self.overdue_text())

    def overdue_text(self) -> str:
        waited = time.monotonic() - self.asked_at
        if not (self.counts_bytes and self.brought):
            # Bytes of a line still coming are not counted until the line ends.
            return f"the server's answer did not arrive in full within {waited:.0f} s"
        return (
            f"the server sent {self.brought} bytes of its answer in {waited:.0f} s, too "
            "slowly to go on waiting"
        )


def socket_of(sock):
    """The socket under urllib3's SSLTransport (TLS to a server inside TLS to an https://
    proxy), which is no socket: shutting the socket down is how a cut reaches a read."""
    for _ in range(3):
        if isinstance(sock, socket.socket):
            break
        sock = getattr(sock, "socket", sock)
    return sock


class PacedReader(io.RawIOBase):
    """A socket's raw reader (`sock.makefile("rb", buffering=0)`) for `connection`, each
    read paced: for libraries that read through a file (http.client), where a drip is
    seen only read by read."""

    def __init__(self, raw, connection: Paced) -> None:
        super().__init__()
        self._raw = raw
        self._connection = connection

    def readable(self) -> bool:
        return True

    @property
    def _sock(self):
        # requests_ntlm reads the server's certificate for NTLM's channel binding from
        # the socket under http.client's reader (`raw._fp.fp.raw._sock`): an Exchange
        # server that asks for NTLM failed every sign-in with an AttributeError.
        return getattr(self._raw, "_sock", None)

    def readinto(self, b) -> int | None:
        got = self._connection.paced(0, self._raw.readinto, b)
        self._connection.brought += got or 0
        return got

    def close(self) -> None:
        # The socket's own reader counts its files: it closes only with the last one.
        self._raw.close()
        super().close()


class _Pacer:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # Also in a forked child: the parent's connections and thread are not its own.
        self.connections: weakref.WeakSet[Paced] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def watch(self, connection: Paced) -> None:
        with self.lock:
            self.connections.add(connection)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="mail-pacer", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(1)
            with self.lock:
                connections = list(self.connections)
            self.check(connections, time.monotonic())

    @staticmethod
    def check(connections: list[Paced], now: float) -> None:
        for connection in connections:
            # The thread, and the other connections' cuts, outlive any one connection's
            # trouble.
            try:
                connection.cut_if_overdue(now)
            except Exception:
                logger.exception("The mail pacer could not check one connection")


_pacer = _Pacer()
os.register_at_fork(after_in_child=_pacer.reset)
