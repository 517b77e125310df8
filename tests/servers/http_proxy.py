"""An HTTP proxy on loopback, as a company's egress proxy named by HTTPS_PROXY: CONNECT
tunnels (what requests asks of it for an https:// address) and plain-HTTP requests
forwarded with their absolute URL. Where a name leads is the proxy's own business, as
with split DNS: `routes` maps a host name to a loopback port, any other name goes to
127.0.0.1 and the port asked for. `asked` records each (method, host, port). With
`refuse_after` set, the tunnels after that many are refused with `refusal` (a proxy
that wants credentials, or whose policy says no; with an empty `refusal`, one that
hangs up without a word). With `tls`, the proxy itself is
spoken to over TLS (an https:// proxy, its certificate from the suite's CA)."""

import contextlib
import socket
import threading
from urllib.parse import urlsplit

from tests.servers.certs import server_context
from tests.servers.proxy import Listener, pipe

HEAD_LIMIT = 16_384


class HttpProxy(Listener):
    def __init__(self, routes: dict[str, int] | None = None, *, tls: bool = False) -> None:
        self.routes = routes or {}
        self.tls = server_context("localhost") if tls else None
        self.asked: list[tuple[str, str, int]] = []
        self.refuse_after: int | None = None
        self.refusal = "407 Proxy Authentication Required"
        super().__init__()
        self.url = f"https://localhost:{self.port}" if tls else f"http://127.0.0.1:{self.port}"

    def accepted(self, client: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        try:
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
            while b"\r\n\r\n" not in head and len(head) < HEAD_LIMIT:
                data = client.recv(4096)
                if not data:
                    return client.close()
                head += data
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _version = request_line.split(" ", 2)
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                port = int(port)
            else:
                parts = urlsplit(target)
                host, port = parts.hostname or "", parts.port or 80
                path = parts.path or "/"
                if parts.query:
                    path += "?" + parts.query
                head = head.replace(target.encode("latin-1"), path.encode("latin-1"), 1)
            self.asked.append((method, host.strip("[]"), port))
            if self.refuse_after is not None and len(self.asked) > self.refuse_after:
                if self.refusal:  # else it hangs up without a word
                    answer = f"HTTP/1.1 {self.refusal}\r\nContent-Length: 0\r\n\r\n"
                    client.sendall(answer.encode())
                return client.close()
            server = socket.create_connection(("127.0.0.1", self.routes.get(host, port)))
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return client.close()
        if method == "CONNECT":
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            server.sendall(head)
        threading.Thread(target=pipe, args=(server, client), daemon=True).start()
        pipe(client, server)
