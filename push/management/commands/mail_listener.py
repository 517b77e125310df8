"""`python manage.py mail_listener`: the push listener (push/listener.py) until SIGTERM
or Ctrl-C, which free its mailboxes for the other listeners at once."""

import asyncio
import contextlib
import resource
import signal

from django.core.management.base import BaseCommand

from push.listener import Listener

# asyncio gives every TLS connection a read buffer of SSLProtocol.max_size (256 KiB in
# CPython 3.11 to 3.13: `self._ssl_buffer = bytearray(self.max_size)`), and the listener
# holds one connection per mailbox while IDLE answers are a few lines: 32 KiB (two TLS
# records) is ample. A private CPython attribute: tests/test_push_watcher.py pins that it
# is still there; without it the listener only uses more memory.
TLS_READ_BUFFER = 32 * 1024


def small_tls_buffers() -> None:
    import asyncio.sslproto

    if isinstance(getattr(asyncio.sslproto.SSLProtocol, "max_size", None), int):
        asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


class Command(BaseCommand):
    help = "Watch mailboxes (IMAP IDLE) and queue their sync as soon as new mail comes."

    def add_arguments(self, parser):
        parser.add_argument(
            "--holder", default="", help="This listener's name in the leases (default: host:pid)."
        )

    def handle(self, *args, holder: str = "", **options):
        # One socket per mailbox: the soft limit on open files (often 1,024) is raised to
        # what the system allows this process.
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        # This process's alone (the command's): web and worker keep asyncio's default.
        small_tls_buffers()
        listener = Listener(holder=holder)

        async def main():
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, listener.stop)
            await listener.run()

        asyncio.run(main())
