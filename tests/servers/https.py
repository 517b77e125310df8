"""A real HTTPS server on loopback for discovery tests.

It answers for many host names at once (ispdb.test, autoconfig.acme.test, ...):
the client under test resolves each name to this server through its injected
resolver and verifies the certificate for that name against a test CA (trustme).
"""

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme


@dataclass
class Routes:
    # (host, path) -> (status, body, extra headers)
    pages: dict[tuple[str, str], tuple[int, bytes, dict]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)

    drips: dict[tuple[str, str], float] = field(default_factory=dict)
    # Every request in full, for tests that check what was sent (autodiscover's POST
    # bodies, and that no Authorization header ever left discovery).
    log: list[dict] = field(default_factory=list)

    def add(self, host: str, path: str, body: bytes, status: int = 200, **headers) -> None:
        self.pages[(host, path)] = (status, body, headers)

    def add_drip(self, host: str, path: str, interval: float) -> None:
        """A page whose headers arrive one byte per `interval` seconds, for ever."""
        self.drips[(host, path)] = interval


class _Handler(BaseHTTPRequestHandler):
    server_version = "test-https/1"

    def do_POST(self):
        length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
        self._answer(self.rfile.read(length))

    def do_GET(self):
        self._answer(b"")

    def _answer(self, received: bytes):
        routes: Routes = self.server.routes
        host = (self.headers.get("Host") or "").split(":")[0]
        routes.requests.append((host, self.path))
        routes.log.append(
            {
                "method": self.command,
                "host": host,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": received,
            }
        )
        if (host, self.path) in routes.drips:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            try:
                for _ in range(200):
                    self.wfile.write(b"X")
                    self.wfile.flush()
                    time.sleep(routes.drips[(host, self.path)])
            except OSError:
                return
            return
        status, body, headers = routes.pages.get((host, self.path), (404, b"not found", {}))
        self.send_response(status)
        headers = dict(headers)
        self.send_header("Content-Type", headers.pop("Content_Type", "text/xml"))
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class HttpsServer:
    def __init__(self, hostnames: list[str]):
        self.ca = trustme.CA()
        self.hostnames = hostnames
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*hostnames).configure_cert(server_context)
        self.routes = Routes()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = self.routes
        self.httpd.socket = server_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def client_context(self) -> ssl.SSLContext:
        # The production default context, plus trust in the test CA only.
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def start(self) -> "HttpsServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SilentServer:
    """Accepts TCP connections and never says a word: the server that never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
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
            self.held.append(connection)

    def start(self) -> "SilentServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        for connection in self.held:
            connection.close()
        self.sock.close()


class SilentDnsServer:
    """A UDP socket that swallows DNS queries: the name server that never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def stop(self) -> None:
        self.sock.close()
