"""A private Redis server as the task queue's broker, which a test may stop and start
again on the same port; and pointing this (the test) process's Celery app at a broker."""

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.servers.dovecot import free_port


class RedisServer:
    def __init__(self, root: Path, port: int | None = None):
        self.root = root
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        # No persistence: a restarted broker has lost what it held, the harder case.
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def publishing_to(url: str):
    """This process's Celery app queues tasks on `url` (the suite's settings point it at
    the filesystem broker under var/)."""
    from mailsetup.celery import app

    before = app.conf.broker_url
    app.conf.broker_url = url
    app._after_fork()  # drops the pools connected to the previous broker
    try:
        yield app
    finally:
        app.conf.broker_url = before
        app._after_fork()
