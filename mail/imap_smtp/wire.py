"""The only module that reaches into imapclient's private attributes (`_imap`,
`_checkok`, `_proc_folder_list`, `_create_IMAP4`, `_timeout`) and imaplib's
(`_simple_command`, `_new_tag`, `_untagged_response`), for what imapclient does not
offer: connecting through our own checked socket, LIST-STATUS in one round trip, a
LOGOUT that does not wait for its answer, imaplib's framing for large FETCHes, and
imaplib's debug output turned off (`quiet`).

Written for imapclient 4.1.0 (the version installed; pyproject allows 3.x and 4.x, whose
private parts used here are the same) and imaplib of Python 3.12/3.13;
tests/test_mail_contract.py pins what it relies on.
"""

import contextlib
import imaplib
import math
import socket
import threading
import time
import weakref

from imapclient import IMAPClient
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_response
from imapclient.util import chunk as pairs_of

from mail.backend import Endpoint
from providers.models import Security


def imaplib_of(client: IMAPClient) -> imaplib.IMAP4:
    """The imaplib connection under an IMAPClient, for FETCHes read with imaplib's own
    framing (sync.engine: a third of a first sync's CPU saved) and its untagged
    responses (BYE, VANISHED)."""
    return client._imap


def quiet(client: IMAPClient) -> IMAPClient:
    """imaplib's debug output off. IMAPClient turns it on (level 5) and routes it to a
    logger, so every response, message bodies included, is formatted with repr() before
    the logger drops it: measured, three quarters of a FETCH's CPU time. Off, nothing a
    server sends (nor the LOGIN command) is formatted for a log at all. Every session of
    the app is quiet (PinnedIMAPClient); the benchmark's bare baseline too."""
    client._imap.debug = 0
    return client


# A server must keep its answer coming. The read timeout bounds each wait for bytes, not
# an answer: a server sending a byte every few seconds held a sync, and the worker it ran
# on, for as long as it liked (a worker the other mailboxes wait for). Each command's
# answer now has PACE_CONNECTS read timeouts, plus a second for every PACE_RATE bytes it
# brought or announced (a literal counts from its announced size): about 1 KB/s, far
# below any real server's pace, so only a server that has all but stopped is cut.
PACE_CONNECTS = 4
PACE_RATE = 1024


class _Pacer:
    """The process's one thread that cuts a session whose answer is overdue (checked
    every second). Cutting is the only way to end a read that keeps receiving bytes: the
    thread blocked in it cannot be stopped from outside, its socket can."""

    def __init__(self) -> None:
        self.sessions: weakref.WeakSet[PinnedIMAP4] = weakref.WeakSet()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def watch(self, imap: "PinnedIMAP4") -> None:
        with self.lock:
            self.sessions.add(imap)
            # is_alive(): a forked worker process inherits the object, not the thread.
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="imap-pacer", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(1)
            now = time.monotonic()
            with self.lock:
                sessions = list(self.sessions)
            for imap in sessions:
                if imap.reading and now > imap.due:
                    imap.cut()


_pacer = _Pacer()


class PinnedIMAP4(imaplib.IMAP4):
    def __init__(self, host, port, *, opener, implicit_context, timeout):
        self._opener = opener
        self._implicit_context = implicit_context
        # The pace: set before imaplib connects, since it reads the greeting at once.
        self.allowance = PACE_CONNECTS * (timeout or 60)
        self.asked_at = time.monotonic()
        self.brought = 0
        self.reading = False
        self.due = math.inf
        self.was_cut = False
        _pacer.watch(self)
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout=None):
        sock = self._opener()
        if self._implicit_context is not None:
            sock = self._implicit_context.wrap_socket(sock, server_hostname=self.host)
        return sock

    def send(self, data):
        self.asked_at, self.brought = time.monotonic(), 0
        super().send(data)

    def readline(self):
        line = self._paced(0, super().readline)
        self.brought += len(line)
        return line

    def read(self, size):
        data = self._paced(size, super().read, size)
        self.brought += len(data)
        return data

    def _paced(self, announced: int, read, *args):
        self.due = self.asked_at + self.allowance + (self.brought + announced) / PACE_RATE
        self.reading = True
        try:
            data = read(*args)
        except (OSError, imaplib.IMAP4.abort):
            if self.was_cut:
                raise self._overdue() from None
            raise
        finally:
            self.reading = False
        if self.was_cut:  # what came before the cut: a part line, a part literal
            raise self._overdue()
        return data

    def _overdue(self) -> TimeoutError:
        # TimeoutError, as a read that timed out: callers treat both alike (sync.engine
        # gives up on the folder and goes on with the next in a new session).
        waited = time.monotonic() - self.asked_at
        return TimeoutError(
            f"the server sent {self.brought} bytes of its answer in {waited:.0f} s, too "
            "slowly to go on waiting"
        )

    def cut(self) -> None:
        self.was_cut = True
        # socket.socket's own shutdown: an SSLSocket's would also drop its TLS object
        # under the thread still reading from it.
        with contextlib.suppress(OSError, AttributeError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


class PinnedIMAPClient(IMAPClient):
    """IMAPClient that connects through our opener (checked address, time limit)."""

    def __init__(self, endpoint: Endpoint, *, opener, context, timeout):
        self._opener = opener
        super().__init__(
            endpoint.host,
            port=endpoint.port,
            ssl=endpoint.security == Security.SSL_TLS,
            ssl_context=context,
            timeout=timeout,
        )
        quiet(self)

    def _create_IMAP4(self):
        return PinnedIMAP4(
            self.host,
            self.port,
            opener=self._opener,
            implicit_context=self.ssl_context if self.ssl else None,
            timeout=self._timeout.connect,
        )


def goodbye(client: IMAPClient) -> None:
    """LOGOUT without waiting for the server's answer, which changes nothing."""
    with contextlib.suppress(Exception):
        imap = client._imap
        imap.send(imap._new_tag() + b" LOGOUT\r\n")
    with contextlib.suppress(Exception):
        client.shutdown()


def list_with_status(
    client: IMAPClient, items: list[bytes], *, special_use: bool
) -> tuple[list, dict]:
    """LIST-STATUS (RFC 5819): every folder and its status in one round trip, where a
    STATUS per folder would take one each. Returns list_folders()'s triples and
    {path: status items}; a folder the server gave no status for is simply missing."""
    imap = client._imap
    wanted = b" ".join(items).decode()
    # With RETURN options a server gives the special-use flags only when asked.
    options = f"{'SPECIAL-USE ' if special_use else ''}STATUS ({wanted})"
    typ, data = imap._simple_command("LIST", '""', '"*"', "RETURN", f"({options})")
    client._checkok("list", typ, data)
    typ, data = imap._untagged_response(typ, data, "LIST")
    folders = client._proc_folder_list(data)
    lines = [line for line in imap.untagged_responses.pop("STATUS", []) if line]
    statuses = {}
    for name, values in pairs_of(parse_response(lines), size=2):
        if isinstance(name, int):
            name = str(name)
        elif client.folder_encode:
            name = decode_utf7(name)
        statuses[name] = dict(pairs_of(values, size=2))
    return folders, statuses
