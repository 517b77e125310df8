"""Watching an Exchange inbox with an EWS pull subscription (Subscribe, GetEvents), for
push.listener.

exchangelib is synchronous: each call runs in a thread while the listener's loop goes
on. A pull subscription is polled every `poll` seconds (one small GetEvents; Exchange
answers a StatusEvent when nothing happened), so new mail is seen within that, with no
connection held open between polls. The subscription lives on the server while polled
(its timeout is reset by every GetEvents); a subscription the server no longer knows
(a mailbox moved, a restart) is a broken connection: the listener subscribes again.
"""

import asyncio
import contextlib
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

from django.views.decorators.debug import sensitive_variables

from mail.backend import MailWatcher
from mail.errors import MailError

from . import session

# Mail arriving, leaving or changing in the inbox.
EVENT_TYPES = ("NewMailEvent", "CreatedEvent", "DeletedEvent", "ModifiedEvent", "MovedEvent")
# Minutes the server keeps an unpolled subscription (1-1440): a listener that died
# leaves nothing behind for long.
SUBSCRIPTION_MINUTES = 30


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    """The Exchange watchers' own threads (PUSH_EWS_THREADS): polls that wait on a slow
    server do not take asyncio's default executor, which the IMAP watchers' connects
    use (a few threads on a small machine)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            from django.conf import settings

            _pool = ThreadPoolExecutor(
                max_workers=settings.PUSH_EWS_THREADS, thread_name_prefix="push-ews"
            )
        return _pool


async def _in_thread(function):
    """`function` in one of the Exchange watchers' threads. exchangelib's adapter reads
    the system setting on internal addresses there, on a database connection of that
    thread's own: closed when done, or every thread of the pool would keep one open."""
    from django.db import connections

    def run():
        try:
            return function()
        finally:
            connections.close_all()

    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_threads(), context.run, run)


class EwsWatcher(MailWatcher):
    @sensitive_variables("password", "access_token")
    def __init__(
        self, *, provider, address, login: str, password: str = "", access_token: str = "",
        poll: float,
    ):  # fmt: skip
        self._open = lambda: session.ews_session(
            provider=provider, address=address, login=login, password=password,
            access_token=access_token,
        )  # fmt: skip
        self.poll = poll
        self.uses_token = bool(access_token)
        self._account = None
        self._subscription: str | None = None
        self._watermark: str | None = None

    def __repr__(self) -> str:  # never the secret
        return f"<EwsWatcher subscribed={self._subscription is not None}>"

    async def open(self) -> None:
        await _in_thread(self._subscribe)

    def _subscribe(self) -> None:
        self._account = self._open()  # raises SignInError
        try:
            self._subscription, self._watermark = self._account.inbox.subscribe_to_pull(
                event_types=EVENT_TYPES, timeout=SUBSCRIPTION_MINUTES
            )
        except Exception as error:
            raise self._failure(error) from None

    async def next_change(self, *, within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if await _in_thread(self._events):
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(self.poll, left))

    def _events(self) -> bool:
        """One GetEvents (more while the server says there are more): whether any was a
        change, not a StatusEvent."""
        from exchangelib.properties import StatusEvent

        if self._account is None or self._subscription is None:
            raise MailError("connection_lost", "The Exchange subscription is gone.")
        changed = False
        try:
            for notification in self._account.inbox.get_events(self._subscription, self._watermark):
                for event in notification.events:
                    self._watermark = event.watermark or self._watermark
                    changed = changed or not isinstance(event, StatusEvent)
        except Exception as error:
            raise self._failure(error) from None
        return changed

    def _failure(self, error: Exception) -> MailError:
        """exchangelib's errors in MailError's terms, as the reader has them (a refused
        token is the token's: the listener signs in again with a fresh one)."""
        from exchangelib import errors

        from .backend import exchange_failure

        if isinstance(error, MailError):
            return error
        if isinstance(error, errors.ErrorSubscriptionNotFound | errors.ErrorInvalidWatermark):
            name = type(error).__name__
            return MailError("connection", f"Exchange ended the subscription ({name}).")
        return exchange_failure(error, oauth=self.uses_token)

    async def close(self) -> None:
        account, subscription = self._account, self._subscription
        self._account = self._subscription = None
        if account is None:
            return

        def unsubscribe():
            with contextlib.suppress(Exception):
                if subscription:
                    account.inbox.unsubscribe(subscription)
            session.ews_close(account)

        with contextlib.suppress(Exception):
            await _in_thread(unsubscribe)
