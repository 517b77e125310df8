"""The suite's SMTP server (aiosmtpd, STARTTLS, AUTH) with a gate: it can hold a session
at RCPT (before the client hands the message over) or right after the message's data
arrived (before its answer), until the test releases it. A worker can then be killed
at exactly that moment."""

import asyncio
import threading
from dataclasses import dataclass, field

from tests.servers.smtp import Handler, SmtpServer


@dataclass
class GatedHandler(Handler):
    hold_at: str | None = None  # "rcpt" or "data"
    holds: int = 1  # how many sessions are held; later ones pass
    answer: str = "250 Message accepted"  # a held DATA's answer (set before it is held)
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def _take(self, where: str) -> bool:
        if self.hold_at != where or self.holds <= 0:
            return False
        self.holds -= 1
        return True

    async def _wait(self) -> None:
        self.reached.set()
        while not self.release.is_set():
            await asyncio.sleep(0.05)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self._take("rcpt"):
            await self._wait()
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        if self._take("data"):
            # The server has the message (a real one would deliver it); only its answer
            # is held back.
            if self.answer.startswith("2"):
                self.messages.append(envelope)
            await self._wait()
            return self.answer
        return await super().handle_DATA(server, session, envelope)


def gated_smtp_server(users: dict[str, str]) -> SmtpServer:
    server = SmtpServer(users=users)
    server.handler = GatedHandler()
    server.controller.handler = server.handler
    return server
