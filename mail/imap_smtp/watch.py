"""Watching an IMAP inbox with IDLE (RFC 2177), on asyncio, for push.listener.

aioimaplib (a maintained asyncio IMAP client) parses the protocol; what it does not do
is done here with the sign-in check's own rules (mail/imap_smtp/connection.py): the
address is resolved once, checked against the internal-address guard and connected to
exactly (`_Checker._open`, in a thread), TLS is verified for the server's name with
mail/trust.py's context, STARTTLS is refused when not offered, and a refused login is
explained by the same table. Secrets are never logged: the LOGIN and AUTHENTICATE
arguments are scrubbed from aioimaplib's debug lines, and no message here names them.

This is the one module that reaches into aioimaplib (written for 2.0.3): its protocol
class is subclassed here (`_Protocol`: reads fed in slices, bounded lines and literals,
untagged lines between two IDLEs kept); tests/test_push_watcher.py exercises each
override against the real library.
"""

import asyncio
import contextlib
import logging
import re
import socket

from aioimaplib.aioimaplib import (
    AUTH,
    NONAUTH,
    SELECTED,
    Cmd,
    Command,
    Commands,
    Exec,
    IMAP4ClientProtocol,
    quoted,
)
from django.views.decorators.debug import sensitive_variables
from imapclient.exceptions import LoginError

from mail.backend import Endpoint, MailWatcher, WatchUnsupported
from mail.errors import MailError, SignInError
from providers.models import Security

from .connection import _Checker, _endpoint, _imap_quoted

# Untagged responses that mean a watched folder changed (aioimaplib strips the "* "):
# a new message, one gone, flags changed (RFC 3501), gone by UID (QRESYNC), or another
# folder's status (NOTIFY, RFC 5465).
CHANGE = re.compile(
    rb"^(?:\* )?(?:\d+ (?:EXISTS|EXPUNGE|FETCH)\b|VANISHED\b|STATUS\b)", re.IGNORECASE
)
# aioimaplib's command table lacks NOTIFY (RFC 5465); a synchronous command like IDLE.
Commands.setdefault("NOTIFY", Cmd("NOTIFY", (AUTH, SELECTED), Exec.is_sync))
NOTIFY_EVENTS = "(MessageNew MessageExpunge FlagChange)"
BYE = re.compile(rb"^(?:\* )?BYE\b", re.IGNORECASE)
# What a server may send the watcher, however hostile: aioimaplib keeps a line without its
# CRLF, or a literal it announced, whole in memory, and one process holds every mailbox's
# connection. The watcher's commands are answered in short lines.
MAX_LINE = 1024 * 1024
MAX_LITERAL = 1024 * 1024
# aioimaplib handles a read's lines by recursion, one level a line: a thousand EXPUNGEs in
# one read (a mailbox emptied elsewhere) would exceed Python's recursion limit.
LINES_PER_PIECE = 200
# Untagged lines kept that came while no command was pending (_Protocol).
UNSOLICITED_QUEUED = 100

logger = logging.getLogger(__name__)


def _pieces(data: bytes, lines: int = LINES_PER_PIECE):
    """`data` cut after every `lines`-th CRLF (the protocol takes any cut, as TCP's)."""
    start = end = count = 0
    while (end := data.find(b"\r\n", end)) >= 0:
        end, count = end + 2, count + 1
        if count == lines:
            yield data[start:end]
            start, count = end, 0
    if start < len(data):
        yield data[start:]


class _Protocol(IMAP4ClientProtocol):
    def __init__(self, loop, lost: asyncio.Event):
        super().__init__(loop, conn_lost_cb=lambda _exc: lost.set())

    def data_received(self, d: bytes) -> None:
        try:
            for piece in _pieces(d):
                super().data_received(piece)
                literal = self.current_command._expected_size if self.current_command else 0
                if len(self.incomplete_line) > MAX_LINE or literal > MAX_LITERAL:
                    raise ValueError("a line or literal beyond the watcher's bound")
        except Exception as error:
            # aioimaplib's errors quote the pending command with its arguments (LOGIN's
            # password, AUTHENTICATE's token), and asyncio would log them whole at ERROR:
            # only the type is said, and the connection ends (the listener reconnects).
            logger.warning("IMAP watch: the server's answer was refused (%s); closing",
                           type(error).__name__)  # fmt: skip
            self.incomplete_line, self.current_command = b"", None
            if self.transport is not None:
                self.transport.abort()

    def _untagged_response(self, line: bytes):
        command = super()._untagged_response(line)
        # No command pending (between two IDLEs): aioimaplib drops the line, and a
        # server may report a change at any time (RFC 3501 7, NOTIFY's STATUS): it goes
        # where IDLE's lines go, and the next IDLE reads it first. Bounded: a few lines
        # say that something changed.
        if (
            command is None
            and self.state == SELECTED
            and self.idle_queue.qsize() < UNSOLICITED_QUEUED
        ):
            self.idle_queue.put_nowait([line.removeprefix(b"* ")])
        return command

    def _continuation(self, line: bytes) -> None:
        command = self.pending_sync_command
        if command is not None and command.name == "AUTHENTICATE":
            # A refused XOAUTH2 token comes as a challenge carrying the error (RFC 7628):
            # the empty answer ends the exchange with the server's NO. aioimaplib would
            # wait for ever.
            self.transport.write(b"\r\n")
            return
        super()._continuation(line)


EXISTS = re.compile(rb"^(?:\* )?(\d+) EXISTS\b", re.IGNORECASE)
RESPONSE_CODE = re.compile(rb"^(?:\* )?OK \[(UIDVALIDITY|UIDNEXT) (\d+)\]", re.IGNORECASE)


def _inbox_status(lines) -> dict[str, int] | None:
    """UIDVALIDITY, UIDNEXT and EXISTS of a SELECT/EXAMINE answer (RFC 3501 6.3.1);
    None unless all three came (a server may leave UIDNEXT out)."""
    found = {}
    for line in lines:
        if not isinstance(line, bytes):
            continue
        if match := EXISTS.match(line):
            found["messages"] = int(match.group(1))
        elif match := RESPONSE_CODE.match(line):
            found[match.group(1).decode().lower()] = int(match.group(2))
    return found if len(found) == 3 else None


def _keepalive(sock: socket.socket) -> None:
    """A server that vanished without closing (a crash, a cut network) is noticed
    within minutes, not at the next renewal."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 15)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)


class ImapWatcher(MailWatcher):
    """IDLE on INBOX, opened read-only (EXAMINE), over one connection."""

    @sensitive_variables("password", "access_token")
    def __init__(
        self, *, provider, address, login: str, password: str = "", access_token: str = "",
        allow_internal: bool = False, timeout: float, folders: tuple[str, ...] | None = (),
    ):  # fmt: skip
        self.provider = provider
        # The other folders to hear about where the server offers NOTIFY: their paths,
        # or None for every personal folder; () for the inbox alone.
        self.folders = folders
        self.notifying = False
        self.endpoint: Endpoint = _endpoint(provider, address, "IMAP")
        self.login = login
        self._password = password
        self._access_token = access_token
        self.allow_internal = allow_internal
        self.timeout = timeout
        self._lost = asyncio.Event()
        self._protocol: _Protocol | None = None
        self._transport = None
        self._idle: asyncio.Future | None = None
        self._inbox: dict[str, int] | None = None

    def inbox_status(self) -> dict[str, int] | None:
        return self._inbox

    def __repr__(self) -> str:  # never the secret
        return f"<ImapWatcher {self.login} at {self.endpoint.host}:{self.endpoint.port}>"

    # -- opening --------------------------------------------------------------------

    async def open(self) -> None:
        checker = _Checker(
            provider=self.provider, timeout=self.timeout, allow_internal=self.allow_internal
        )
        loop = asyncio.get_running_loop()
        try:
            # Resolving, the guard and connecting block: a thread does them, with the
            # check's own watchdog bounding the whole sign-in.
            sock = await loop.run_in_executor(None, checker._open, self.endpoint)
        except (OSError, SignInError) as error:
            raise checker._explain(self.endpoint, error) from None
        try:
            await asyncio.wait_for(self._sign_in(loop, sock, checker), checker.total)
        except LoginError as error:
            await self.close()
            raise checker._imap_login_error(self.endpoint, error) from None
        except (WatchUnsupported, MailError):
            await self.close()
            raise
        except (OSError, TimeoutError, EOFError) as error:
            await self.close()
            raise checker._explain(self.endpoint, error) from None
        except Exception as error:  # aioimaplib's own errors (Abort, Error, ...)
            await self.close()
            raise MailError(
                "connection", f"{self.endpoint.label} broke off the sign-in ({error})."[:500]
            ) from None
        finally:
            checker._stop_watch()

    async def _sign_in(self, loop, sock: socket.socket, checker: _Checker) -> None:
        _keepalive(sock)
        context = checker.context
        host = self.endpoint.host
        self._protocol = protocol = _Protocol(loop, self._lost)
        implicit = self.endpoint.security == Security.SSL_TLS
        self._transport, _ = await loop.create_connection(
            lambda: protocol, sock=sock, ssl=context if implicit else None,
            server_hostname=host if implicit else None,
            ssl_handshake_timeout=self.timeout if implicit else None,
        )  # fmt: skip
        await protocol.wait(f"{AUTH}|{NONAUTH}")
        if self.endpoint.security == Security.STARTTLS:
            if "STARTTLS" not in protocol.capabilities:
                raise SignInError(
                    "starttls_unsupported",
                    f"{self.endpoint.label} does not offer STARTTLS. Choose SSL/TLS security "
                    "(usually port 993) in the provider's settings.",
                    field="provider",
                )
            answer = await protocol.execute(Command("STARTTLS", protocol.new_tag(), loop=loop))
            if answer.result != "OK":
                raise MailError("tls", f"{self.endpoint.label} refused STARTTLS.")
            self._transport = await loop.start_tls(
                self._transport, protocol, context, server_hostname=host,
                ssl_handshake_timeout=self.timeout,
            )  # fmt: skip
            protocol.transport = self._transport
            await protocol.capability()
        if "LOGINDISABLED" in protocol.capabilities and not self._access_token:
            raise SignInError(
                "auth_unsupported",
                f"{self.endpoint.label} does not accept a password on this connection "
                "(LOGINDISABLED).",
                field="provider",
            )
        await self._authenticate(protocol, loop)
        protocol.state = AUTH
        # Servers may offer more once signed in (Dovecot does).
        await protocol.capability()
        if "IDLE" not in protocol.capabilities:
            raise WatchUnsupported(f"{self.endpoint.label} does not offer IDLE.")
        answer = await protocol.simple_command("EXAMINE", "INBOX")
        if answer.result != "OK":
            raise MailError("server_error", f"{self.endpoint.label} would not open INBOX.")
        self._inbox = _inbox_status(answer.lines)
        # EXAMINE is aioimaplib's "simple command": the state IDLE needs is set here.
        protocol.state = SELECTED
        if self.folders != () and "NOTIFY" in protocol.capabilities:
            await self._notify(protocol, loop)

    async def _notify(self, protocol: _Protocol, loop) -> None:
        """Ask to hear about the other folders during IDLE too (untagged STATUS). A
        server that refuses (a folder gone meanwhile) still reports the inbox."""
        from imapclient import imap_utf7

        if self.folders is None:
            others = f"(personal {NOTIFY_EVENTS})"
        else:
            names = [
                quoted(imap_utf7.encode(path).decode("ascii"))
                for path in self.folders
                if path.upper() != "INBOX"
            ]
            if not names:
                return
            others = f"(mailboxes ({' '.join(names)}) {NOTIFY_EVENTS})"
        try:
            command = Command(
                "NOTIFY", protocol.new_tag(), "SET", f"(selected {NOTIFY_EVENTS})", others,
                loop=loop,
            )  # fmt: skip
        except ValueError:  # a folder name with a control character: inbox alone
            return
        answer = await protocol.execute(command)
        self.notifying = answer.result == "OK"

    @sensitive_variables("secret", "argument")
    async def _authenticate(self, protocol: _Protocol, loop) -> None:
        if self._access_token:
            from base64 import b64encode

            secret = f"user={self.login}\1auth=Bearer {self._access_token}\1\1"
            argument = b64encode(secret.encode()).decode("ascii")
            command = Command("AUTHENTICATE", protocol.new_tag(), "XOAUTH2", argument, loop=loop)
        else:
            argument = quoted(self._password)
            command = Command(
                "LOGIN", protocol.new_tag(), _imap_quoted(self.login), argument, loop=loop
            )
        answer = await protocol.execute(command, scrub=argument)
        if answer.result != "OK":
            said = b" ".join(answer.lines).decode("utf-8", "replace")
            raise LoginError(said.replace(argument, "***"))

    # -- watching -------------------------------------------------------------------

    async def next_change(self, *, within: float) -> bool:
        try:
            return await self._next_change(within)
        except MailError:
            raise
        except Exception as error:  # aioimaplib's own (Abort, Error, CommandTimeout, ...)
            raise MailError(
                "connection", f"{self.endpoint.label} broke off IDLE ({type(error).__name__})."
            ) from None

    async def _next_change(self, within: float) -> bool:
        protocol = self._protocol
        if protocol is None or self._lost.is_set():
            raise self._broken()
        loop = asyncio.get_running_loop()
        self._idle = asyncio.ensure_future(protocol.idle())
        started = asyncio.ensure_future(protocol.wait_for_idle_response())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {self._idle, started, lost}, timeout=self.timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
            if lost in done:
                raise self._broken()
            if started not in done:
                if self._idle.done() and not self._idle.cancelled() and not self._idle.exception():
                    raise MailError(
                        "server_error", f"{self.endpoint.label} refused IDLE."
                    ) from None
                raise MailError(
                    "timeout", f"{self.endpoint.label} did not start IDLE in time."
                ) from None
            deadline = loop.time() + within
            changed = False
            while not changed:
                left = deadline - loop.time()
                if left <= 0:
                    break
                pushed = asyncio.ensure_future(protocol.idle_queue.get())
                done, _ = await asyncio.wait(
                    {pushed, lost}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if pushed not in done:
                    pushed.cancel()
                    if lost in done:
                        raise self._broken()
                    break
                changed = self._read(pushed.result())
            await self._done(lost)
            # What came between DONE and its answer counts too.
            while not protocol.idle_queue.empty():
                changed = self._read(protocol.idle_queue.get_nowait()) or changed
            return changed
        finally:
            for task in (started, lost):
                task.cancel()

    def _read(self, lines) -> bool:
        changed = False
        for line in lines if isinstance(lines, list) else []:
            if BYE.match(line):
                said = line.decode("utf-8", "replace")[:200]
                raise MailError(
                    "connection", f"{self.endpoint.label} ended the connection ({said})."
                )
            changed = changed or bool(CHANGE.match(line))
        return changed

    async def _done(self, lost: asyncio.Future) -> None:
        """End IDLE; its OK must come within the time limit, or the connection is
        taken as dead (a half-open TCP connection shows itself here)."""
        self._protocol.idle_done()
        done, _ = await asyncio.wait(
            {self._idle, lost}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if self._idle not in done:
            if lost in done:
                raise self._broken()
            raise MailError("timeout", f"{self.endpoint.label} stopped answering during IDLE.")
        if self._idle.exception() is not None:
            raise self._broken()
        self._idle = None

    def _broken(self) -> MailError:
        return MailError("connection_lost", f"The connection to {self.endpoint.label} broke off.")

    async def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        protocol, self._protocol = self._protocol, None
        transport, self._transport = self._transport, None
        if transport is None:
            return
        with contextlib.suppress(Exception):
            if protocol is not None and not self._lost.is_set():
                protocol.send(f"{protocol.new_tag()} LOGOUT")
        with contextlib.suppress(Exception):
            transport.close()
