"""Small loopback servers that fail the way real ones (or the network) do, for the
classification tests: a TLS handshake cut short or refused, and a scripted IMAP server
that answers a sign-in or an APPEND as other families of servers do."""

import contextlib
import re
import socket
import ssl
import struct
import threading
import warnings
from dataclasses import dataclass, field

from tests.servers.certs import server_context


class _Listener:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve_safely, args=(connection,), daemon=True).start()

    def _serve_safely(self, connection: socket.socket) -> None:
        connection.settimeout(10)
        try:
            self.serve(connection)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                connection.close()

    def serve(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def start(self):
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


class HandshakeFault(_Listener):
    """A port that expects implicit TLS and fails the handshake:
    - "eof": reads the ClientHello and closes (a server or middlebox dropping it);
    - "reset": reads the ClientHello and resets the connection;
    - "old_tls": a real TLS server that speaks only TLS 1.0 and 1.1;
    - "no_shared_cipher": a real TLS server whose only ciphers the client refuses."""

    def __init__(self, mode: str, hostname: str = "localhost"):
        super().__init__()
        self.mode = mode
        self.hostname = hostname

    def serve(self, connection: socket.socket) -> None:
        if self.mode in ("eof", "reset"):
            connection.recv(16384)
            if self.mode == "reset":
                # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        context = server_context(self.hostname)
        if self.mode == "old_tls":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # the point of the mode
                context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                context.maximum_version = ssl.TLSVersion.TLSv1_1
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        else:
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers("aNULL:@SECLEVEL=0")
        with contextlib.suppress(ssl.SSLError):
            context.wrap_socket(connection, server_side=True)


@dataclass
class ImapScript:
    """What the scripted IMAP server answers. Replies are the text after the tag
    ("NO [EXPIRED] ..."); APPEND's may be "close", to drop the connection once the
    message has arrived, before the answer."""

    capabilities: str = "IMAP4rev1 UIDPLUS"
    login_reply: str = "OK LOGIN completed"
    append_reply: str = "OK APPEND completed"
    folders: list[tuple[str, str, str]] = field(
        default_factory=lambda: [("\\HasNoChildren", "/", "INBOX")]
    )
    appended: list[tuple[str, bytes]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class ScriptedImap(_Listener):
    """A plaintext IMAP server on loopback with just enough of RFC 3501 for a sign-in,
    LIST, CREATE, SUBSCRIBE, SELECT, SEARCH and APPEND, answering as `script` says."""

    def __init__(self, script: ImapScript | None = None):
        super().__init__()
        self.script = script or ImapScript()

    def serve(self, connection: socket.socket) -> None:
        stream = connection.makefile("rb")
        script = self.script

        def send(line: str) -> None:
            connection.sendall(line.encode() + b"\r\n")

        send(f"* OK [CAPABILITY {script.capabilities}] scripted server ready")
        while True:
            line = stream.readline()
            if not line:
                return
            literal = _LITERAL.search(line)
            data = b""
            if literal:
                if not line.rstrip().endswith(b"+}"):
                    send("+ Ready for literal data")
                data = stream.read(int(literal.group(1)))
                line = line[: literal.start()] + stream.readline()
            tag, _, rest = line.decode("utf-8", "replace").strip().partition(" ")
            command = rest.split(" ", 1)[0].upper()
            script.commands.append(command)
            if command == "CAPABILITY":
                send(f"* CAPABILITY {script.capabilities}")
            elif command == "LOGIN":
                send(f"{tag} {script.login_reply}")
                continue
            elif command == "LIST":
                for flags, separator, name in script.folders:
                    send(f'* LIST ({flags}) "{separator}" "{name}"')
            elif command == "CREATE":
                name = rest.split(" ", 1)[1].strip('"')
                script.folders.append(("\\HasNoChildren", "/", name))
            elif command == "APPEND":
                folder = rest.split(" ", 2)[1].strip('"')
                if script.append_reply == "close":
                    script.appended.append((folder, data))
                    return
                if script.append_reply.startswith("OK"):
                    script.appended.append((folder, data))
                send(f"{tag} {script.append_reply}")
                continue
            elif command in ("SELECT", "EXAMINE"):
                send("* 0 EXISTS")
                send("* OK [UIDVALIDITY 1] UIDs valid")
            elif command == "SEARCH" or (command == "UID" and "SEARCH" in rest.upper()):
                send("* SEARCH")
            elif command == "LOGOUT":
                send("* BYE scripted server signing off")
                send(f"{tag} OK LOGOUT completed")
                return
            send(f"{tag} OK {command} completed")
