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

from imapclient import IMAPClient
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_response
from imapclient.util import chunk as pairs_of

from mail.backend import Endpoint
from mail.pace import Paced
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


class PinnedIMAP4(Paced, imaplib.IMAP4):
    def __init__(self, host, port, *, opener, implicit_context, timeout):
        self._opener = opener
        self._implicit_context = implicit_context
        self.pace(timeout)
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout=None):
        sock = self._opener()
        if self._implicit_context is not None:
            sock = self._implicit_context.wrap_socket(sock, server_hostname=self.host)
        self.opened()  # the greeting is timed from here, not from the DNS look-up
        return sock

    # Where imaplib reads and writes (mail/pace.py): every command, every line
    # of an answer, every literal, whose size is announced before it is read.
    def send(self, data):
        self.asked()
        self.in_pieces(super().send, data)

    def readline(self):
        line = self.paced(0, super().readline)
        self.brought += len(line)
        self.lines += 1
        return line

    def read(self, size):
        data = self.paced(size, super().read, size)
        self.brought += len(data)
        return data


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
