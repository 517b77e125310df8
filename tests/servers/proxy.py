"""A TCP proxy on loopback that cuts connections mid-stream, for fault tests."""

import contextlib
import random
import socket
import threading
import time


def listening() -> tuple[socket.socket, int]:
    """A socket listening on a free loopback port, and the port: each relay's door."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, listener.getsockname()[1]


def close_both(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy `source` to `sink` until either ends, then close both."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        close_both(source, sink)


class Listener:
    """A loopback listener handing each client's socket to `accepted()`. Subclasses set
    their own state before calling this __init__, which starts accepting."""

    def __init__(self) -> None:
        self.listener, self.port = listening()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.accepted(client)

    def accepted(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.listener.close()


class Relay(Listener):
    """A loopback listener that connects each client to 127.0.0.1:`target_port` and
    hands both sockets to `connected()`, where a relay starts its pipes."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        super().__init__()

    def accepted(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        self.connected(client, server)

    def connected(self, client: socket.socket, server: socket.socket) -> None:
        raise NotImplementedError


class CuttingProxy(Relay):
    """Relays to a target and counts the bytes the server sends; the first `cuts`
    connections are cut after a random number of those bytes (between `low` and
    `high`), then it relays faithfully. With cuts=0 it is a plain counting relay."""

    def __init__(
        self, target_port: int, *, cuts: int = 0, low: int = 0, high: int = 0, seed: int = 7
    ):
        self.remaining = cuts
        self.cut_count = 0
        self.server_bytes = 0
        self.low, self.high = low, high
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        super().__init__(target_port)

    def connected(self, client: socket.socket, server: socket.socket) -> None:
        with self.lock:
            limit = None
            if self.remaining > 0:
                self.remaining -= 1
                limit = self.random.randint(self.low, self.high)
        threading.Thread(target=self._pipe, args=(client, server, None, False), daemon=True).start()
        threading.Thread(target=self._pipe, args=(server, client, limit, True), daemon=True).start()

    def _pipe(self, source, sink, limit, from_server):
        sent = 0
        try:
            while True:
                data = source.recv(16384)
                if not data:
                    break
                if from_server:
                    with self.lock:
                        self.server_bytes += len(data)
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[: max(0, limit - sent)])
                    with self.lock:
                        self.cut_count += 1
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def reset(self) -> None:
        with self.lock:
            self.server_bytes = 0


class SlowCommandProxy(Relay):
    """Relays plaintext IMAP to a server and holds back client commands holding `marker`
    (the first `holds` of them; None: every one) for `delay` seconds before passing them
    on: the server seems to answer that late (a huge folder on a slow server). `held`
    counts them."""

    def __init__(self, target_port: int, marker: bytes, delay: float, holds: int | None = None):
        self.marker, self.delay = marker, delay
        self.holds = holds
        self.held = 0
        super().__init__(target_port)

    def connected(self, client: socket.socket, server: socket.socket) -> None:
        threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
        threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_client and self.marker in data and self.held != self.holds:
                    self.held += 1
                    threading.Event().wait(self.delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()


class DripProxy(SlowCommandProxy):
    """Relays plaintext IMAP to a server; once a client command holds `marker`, the
    server's bytes on that connection are passed on one every `interval` seconds (for
    `limit` seconds at most, then the connection is closed): a server that has all but
    stopped, yet never lets a read time out. `dripped` counts the connections; only the
    first `times` of them drip (None: every one)."""

    def __init__(
        self, target_port: int, marker: bytes, interval: float, limit: float = 120,
        times: int | None = None,
    ):  # fmt: skip
        self.interval, self.limit, self.times = interval, limit, times
        self.dripped = 0
        super().__init__(target_port, marker, delay=0)

    def connected(self, client: socket.socket, server: socket.socket) -> None:
        marked = threading.Event()
        for pipe in (self._ask, self._answer):
            threading.Thread(target=pipe, args=(client, server, marked), daemon=True).start()

    def _ask(self, client: socket.socket, server: socket.socket, marked) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.marker in data and not marked.is_set() and self.dripped != self.times:
                    self.dripped += 1
                    marked.set()
                server.sendall(data)
        self._close(client, server)

    def _answer(self, client: socket.socket, server: socket.socket, marked) -> None:
        began = None
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if not marked.is_set():
                    client.sendall(data)
                    continue
                began = began or time.monotonic()
                for byte in data:
                    if time.monotonic() - began > self.limit or self.closed:
                        raise OSError("dripped long enough")
                    client.sendall(bytes([byte]))
                    time.sleep(self.interval)
        self._close(client, server)

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
