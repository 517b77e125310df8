"""An IMAP relay on loopback that rewrites what the server says, to emulate servers
Dovecot cannot be configured to be (../shared/notes/imap-server-families.md)."""

import re
import socket
import threading

from tests.servers.proxy import Relay, close_both, pipe

# A literal announced at the end of a line ({123}, or {123+} from a LITERAL+ client):
# that many bytes follow, and they are message data, never responses.
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n\Z")
# SELECT and EXAMINE's untagged `* OK [UIDNEXT 42] Predicted next UID`: Courier sends
# none (a client has to ask STATUS).
_UIDNEXT = re.compile(rb"\* OK \[UIDNEXT \d+\]", re.IGNORECASE)


class UidnextStrippingProxy(Relay):
    """Relays plaintext IMAP from 127.0.0.1:`port` to a server's plaintext listener and
    drops the `[UIDNEXT n]` response of every SELECT and EXAMINE, like Courier. The
    server's bytes are read response by response, with literals passed through whole,
    so a message body that happens to hold such a line is relayed untouched.
    `stripped` counts the responses dropped (a test can check it was exercised)."""

    def __init__(self, target_port: int):
        self.stripped = 0
        self.lock = threading.Lock()
        super().__init__(target_port)

    def connected(self, client: socket.socket, server: socket.socket) -> None:
        # Responses go out a line at a time: without this, Nagle's algorithm and the
        # peer's delayed ACK hold many of them back ~40 ms each.
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=pipe, args=(client, server), daemon=True).start()
        threading.Thread(target=self._rewrite, args=(server, client), daemon=True).start()

    def _rewrite(self, server: socket.socket, client: socket.socket) -> None:
        reader = server.makefile("rb")
        try:
            at_response_start = True
            while line := reader.readline():
                literal = _LITERAL.search(line)
                if at_response_start and literal is None and _UIDNEXT.match(line):
                    with self.lock:
                        self.stripped += 1
                    continue
                if literal is not None:
                    line += reader.read(int(literal.group(1)))
                client.sendall(line)
                # After a literal the response goes on: what follows is not a new one.
                at_response_start = literal is None
        except OSError:
            pass
        finally:
            reader.close()
            close_both(server, client)
