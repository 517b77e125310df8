"""A server must keep its answer coming: IMAP, SMTP and HTTP (Exchange, Graph) alike.

A read timeout bounds each wait for bytes, not an answer: a server that sends a byte
every few seconds held a sync (or a send) and the worker it ran on, which other
mailboxes wait for, for as long as it liked. Each answer to a command now has
PACE_CONNECTS read timeouts, plus a second for every PACE_RATE bytes it brought or
announced (an IMAP literal counts from its announced size): about 1 KB/s, far below any
real server's pace, so only a server that has all but stopped is cut. One thread per
process checks every second and cuts the socket of a connection whose answer is overdue:
the thread blocked in the read cannot be stopped from outside, its socket can.
"""

import contextlib
import io
import math
import socket
import threading
import time
import weakref

PACE_CONNECTS = 4
PACE_RATE = 1024


class Paced:
    """A client connection (imaplib's, smtplib's, http.client's) whose reads are paced:
    `asked()` when a command goes out, `paced()` around each read of its answer, `sock`
    the socket."""

    sock: socket.socket | None

    def pace(self, timeout: float | None) -> None:
        # Before the library connects: it reads the greeting at once.
        self.allowance = PACE_CONNECTS * (timeout or 60)
        self.asked_at = time.monotonic()
        self.brought = 0
        self.reading = False
        self.due = math.inf
        self.was_cut = False
        _pacer.watch(self)

    def asked(self) -> None:
        self.asked_at, self.brought = time.monotonic(), 0

    def paced(self, announced: int, read, *args):
        """read(*args), cut when the answer is overdue; then raise `overdue()`'s error
        instead of whatever the cut made of the read (an end of file, a part line)."""
        self.due = self.asked_at + self.allowance + (self.brought + announced) / PACE_RATE
        self.reading = True
        try:
            data = read(*args)
        except Exception:
            if self.was_cut:
                raise self.overdue() from None
            raise
        finally:
            self.reading = False
        if self.was_cut:
            raise self.overdue()
        return data

    def overdue(self) -> Exception:
        # TimeoutError, as a read that timed out: callers treat both alike.
        return TimeoutError(self.overdue_text())

    def overdue_text(self) -> str:
        waited = time.monotonic() - self.asked_at
        return (
            f"the server sent {self.brought} bytes of its answer in {waited:.0f} s, too "
            "slowly to go on waiting"
        )

    def cut(self) -> None:
        self.was_cut = True
        # socket.socket's own shutdown: an SSLSocket's would also drop its TLS object
        # under the thread still reading from it.
        with contextlib.suppress(OSError, TypeError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


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
        self.connections: weakref.WeakSet[Paced] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def watch(self, connection: Paced) -> None:
        with self.lock:
            self.connections.add(connection)
            # is_alive(): a forked worker process inherits the object, not the thread.
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="mail-pacer", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(1)
            now = time.monotonic()
            with self.lock:
                connections = list(self.connections)
            for connection in connections:
                if connection.reading and now > connection.due:
                    connection.cut()


_pacer = _Pacer()
