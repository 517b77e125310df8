"""The push listener: one asyncio process holding a watching connection to each of many
mailboxes (mail.backend.MailWatcher: IMAP IDLE), queueing a mailbox's sync as soon as
its server reports a change.

- Which mailboxes: leases in the database (push.services). Every tick the listener
  renews its leases, drops the mailboxes that must no longer be watched, and claims
  free ones, a batch at a time, so several listeners share the mailboxes and take over
  those of a listener that died once its leases run out.
- A change queues the sync through sync.services (debounced: one queued per window,
  and none while a run holds the mailbox's claim: it is queued after that run).
- A broken connection (BYE, reset, timeout) reconnects with exponential backoff and
  full jitter, and no more than PUSH_CONNECT_CONCURRENCY sign-ins at once, so a server
  restart does not bring every mailbox back in the same second. Each sign-in reads the
  mailbox's credentials afresh (a changed password, a refreshed OAuth token). A refusal
  that only the owner can fix is recorded as the sync records it and ends the watch.
- Database work runs in threads of the listener's own, each with its own database
  connection (Django's are per thread): the leases (renew, drop, claim, release) in one
  that nothing else uses, so a slow query or sign-in elsewhere never lets them run out;
  sign-ins, which may refresh an OAuth token over HTTP, in a few of their own; the rest
  (states, queueing syncs) in one more.
Log lines name the mailbox by id (and bind it as `mailbox_id` for LOG_FORMAT=json,
mailsetup/logs.py: each watch is an asyncio task with a context of its own) and never
carry a secret.
"""

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections

from mail.backend import WatchUnsupported
from mail.errors import MailError, Retry
from mail.registry import backend_for
from mailsetup.logs import bind, unbind
from sync import selectors as sync_selectors

from . import services
from .models import MailboxWatch

logger = logging.getLogger(__name__)
State = MailboxWatch.State
DATABASE_GONE = (OperationalError, InterfaceError)
UNEXPECTED = "The listener met an unexpected error watching this mailbox; it tries again."


@dataclass(frozen=True)
class ListenerConfig:
    renew: float  # IDLE is ended and started again this often (RFC 2177: < 29 min)
    tick: float  # leases renewed, mailboxes claimed and dropped this often
    debounce: float  # at most one sync queued per mailbox per this many seconds
    backoff_base: float
    backoff_max: float
    max_mailboxes: int
    claim_batch: int
    connect_concurrency: int
    busy_poll: float = 1.0  # how often a mailbox whose run holds the claim is looked at

    @classmethod
    def from_settings(cls) -> "ListenerConfig":
        return cls(
            renew=settings.PUSH_IDLE_RENEW_SECONDS,
            tick=settings.PUSH_TICK_SECONDS,
            debounce=settings.PUSH_DEBOUNCE_SECONDS,
            backoff_base=settings.PUSH_BACKOFF_BASE_SECONDS,
            backoff_max=settings.PUSH_BACKOFF_MAX_SECONDS,
            max_mailboxes=settings.PUSH_MAX_MAILBOXES,
            claim_batch=settings.PUSH_CLAIM_BATCH,
            connect_concurrency=settings.PUSH_CONNECT_CONCURRENCY,
        )


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """Full jitter (a random wait up to the exponential bound): reconnects after a
    server restart spread over the window instead of arriving together."""
    bound = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(0, bound)  # noqa: S311 (spreading, not secrecy)


class _Threads:
    """Database work in threads of the listener's own (`workers` of them). A database
    gone away closes the thread's connection so that the next call opens a new one;
    `close_after` closes it after every call (a pool of several threads, used now and
    then, keeps no connection open)."""

    def __init__(self, name: str, workers: int = 1, *, close_after: bool = False):
        self.workers = workers
        self.close_after = close_after
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def __call__(self, function):
        close_after = self.close_after

        def guarded(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except DATABASE_GONE:
                connections.close_all()
                raise
            finally:
                if close_after:
                    connections.close_all()

        async def run(*args, **kwargs):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, _in_context(guarded, *args, **kwargs))

        return run

    async def close(self) -> None:
        """Close the threads' connections, then the threads."""
        loop = asyncio.get_running_loop()
        if self.workers == 1:
            with contextlib.suppress(Exception):
                await loop.run_in_executor(self.pool, connections.close_all)
        await loop.run_in_executor(None, self.pool.shutdown)


def _in_context(function, *args, **kwargs):
    """`function(*args, **kwargs)` as a thread's callable, in the caller's context (the
    mailbox id bound for the logs)."""
    import contextvars
    import functools

    context = contextvars.copy_context()
    return functools.partial(context.run, function, *args, **kwargs)


class Listener:
    def __init__(self, *, holder: str = "", config: ListenerConfig | None = None):
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.config = config or ListenerConfig.from_settings()
        self.watches: dict[int, asyncio.Task] = {}
        self._queuers: dict[int, asyncio.Task] = {}
        self._chores: set[asyncio.Task] = set()
        self._pending: set[int] = set()
        self._last_queued: dict[int, float] = {}
        # When each mailbox's watch last ended, and those whose release is under way.
        self._ended_at: dict[int, float] = {}
        self._releasing: set[int] = set()
        # Mailboxes waiting to know whether a run holds them (_sync_running).
        self._asks: dict[int, list[asyncio.Future]] = {}
        self._asker: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._leases = _Threads("push-leases")
        self._database = _Threads("push-db")
        self._sign_ins = _Threads(
            "push-sign-in", max(1, settings.PUSH_SIGN_IN_THREADS), close_after=True
        )

    # -- the process ----------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._connecting = asyncio.Semaphore(self.config.connect_concurrency)
        logger.info("listener %s started", self.holder)
        try:
            while not self._stop.is_set():
                claimed = await self._tick()
                # A full batch: more mailboxes may be waiting; the next batch soon, still
                # one at a time so that listeners starting together share them.
                pause = min(1.0, self.config.tick) if claimed >= self.config.claim_batch else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause or self.config.tick)
        finally:
            await self._shutdown()

    def stop(self) -> None:
        """Stop from the listener's own loop (a signal handler)."""
        if self._stop is not None:
            self._stop.set()

    def stop_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.stop)

    async def _shutdown(self) -> None:
        tasks = [*self.watches.values(), *self._queuers.values()]
        if self._asker is not None:
            tasks.append(self._asker)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._chores, return_exceptions=True)
        with contextlib.suppress(*DATABASE_GONE):
            await self._leases(services.watches_release)(holder=self.holder)
        # The threads' database connections go with the listener.
        for threads in (self._leases, self._database, self._sign_ins):
            await threads.close()
        logger.info("listener %s stopped", self.holder)

    async def _tick(self) -> int:
        """Renew, drop, claim; returns how many mailboxes were claimed."""
        begun = asyncio.get_running_loop().time()
        try:
            held = await self._leases(services.watches_renew)(holder=self.holder)
            for account_id in [a for a in self.watches if a not in held]:
                # Taken over while this listener could not renew, or the mailbox is gone.
                logger.info("mailbox %s: no longer held by this listener", account_id)
                self._drop(account_id)
            dropped = await self._leases(services.watches_drop_ineligible)(holder=self.holder)
            for account_id in dropped:
                logger.info("mailbox %s: no longer to be watched", account_id)
                self._drop(account_id)
            room = self.config.max_mailboxes - len(self.watches)
            claimed = await self._leases(services.watches_claim)(
                holder=self.holder, limit=min(room, self.config.claim_batch)
            )
        except DATABASE_GONE as error:
            logger.warning("listener %s: database unavailable (%s)", self.holder,
                           type(error).__name__)  # fmt: skip
            return 0
        # Held, and nothing watches it: its watch ended before this tick and could not
        # let it go (the database was away when it released it, or the mailbox seemed
        # gone at its sign-in and is not). Renewed for ever, nobody would watch it.
        for account_id in held - dropped - set(self.watches) - self._releasing:
            if self._ended_at.get(account_id, -1.0) < begun:
                logger.info("mailbox %s: held and not watched; watching it again", account_id)
                self._start(account_id, catch_up=False)
        for account_id, taken_over in claimed:
            if account_id not in self.watches:
                self._start(account_id, catch_up=taken_over)
        return len(claimed)

    def _start(self, account_id: int, *, catch_up: bool) -> None:
        task = asyncio.create_task(self._watch(account_id, catch_up=catch_up))
        self.watches[account_id] = task
        task.add_done_callback(lambda _t, a=account_id: self._ended(a, _t))

    def _drop(self, account_id: int) -> None:
        task = self.watches.pop(account_id, None)
        if task is not None:
            task.cancel()

    def _ended(self, account_id: int, task: asyncio.Task) -> None:
        if self.watches.get(account_id) is task:
            del self.watches[account_id]
        self._ended_at[account_id] = asyncio.get_running_loop().time()
        if not task.cancelled() and task.exception() is not None:
            # One of our own bugs: the mailbox must not read "watching" while nobody
            # watches it. Freed, it is claimed again at a next tick. (A done-callback runs
            # in its own copy of the loop's context: what it binds, it and its chore see.)
            bind(mailbox_id=account_id)
            logger.error("mailbox %s: the watch failed", account_id, exc_info=task.exception())
            chore = asyncio.create_task(self._release(account_id, State.STOPPED, UNEXPECTED))
            self._chores.add(chore)
            self._releasing.add(account_id)

            def released(chore, account_id=account_id):
                self._chores.discard(chore)
                self._releasing.discard(account_id)
                self._ended_at[account_id] = asyncio.get_running_loop().time()

            chore.add_done_callback(released)

    # -- one mailbox ----------------------------------------------------------------

    async def _state(self, account_id: int, state: str, failure: MailError | None = None):
        """Record the state; connecting keeps the last error (why it reconnects),
        watching clears it."""
        if failure is not None:
            error, kind = str(failure), failure.kind
        else:
            error, kind = (None, "") if state == State.CONNECTING else ("", "")
        # Twice: a database that restarted leaves the thread's connection stale, and the
        # guard closes it, so the second try opens a new one (the write is idempotent).
        for _attempt in range(2):
            try:
                await self._database(services.watch_state_set)(
                    account_id=account_id, holder=self.holder, state=state, error=error,
                    error_kind=kind,
                )  # fmt: skip
                return
            except DATABASE_GONE:
                continue

    async def _watch(self, account_id: int, *, catch_up: bool) -> None:
        """Watch one mailbox until told to stop, or until it cannot be watched."""
        bind(mailbox_id=account_id)
        attempt, refresh = 0, False
        while True:
            if attempt:
                config = self.config
                await asyncio.sleep(
                    backoff_delay(attempt, base=config.backoff_base, cap=config.backoff_max)
                )
            await self._state(account_id, State.CONNECTING)
            try:
                sign_in = await self._sign_ins(services.watch_sign_in)(
                    account_id=account_id, force_refresh=refresh
                )
            except MailError as failure:  # ReconnectNeeded (the owner's), TokenError (later)
                if failure.retry == Retry.OWNER:
                    await self._owner_needed(account_id, failure)
                    return
                attempt += 1
                await self._state(account_id, State.BACKOFF, failure)
                continue
            except DATABASE_GONE:
                attempt += 1
                continue
            if sign_in is None:
                return  # gone meanwhile: the next tick drops it
            provider, uses_oauth, arguments = sign_in
            watcher = backend_for(provider).watcher(**arguments)
            del arguments
            if watcher is None:
                await self._release(account_id, State.NOT_SUPPORTED,
                                    "This kind of mailbox cannot be watched.")  # fmt: skip
                return
            try:
                async with self._connecting:
                    await watcher.open()
            except WatchUnsupported as why:
                await watcher.close()
                logger.info("mailbox %s: not watched (%s)", account_id, why)
                await self._release(account_id, State.NOT_SUPPORTED, str(why))
                return
            except MailError as failure:
                await watcher.close()
                if failure.kind == "credentials" and uses_oauth and not refresh:
                    # The token may have been revoked early or run out by the server's
                    # clock: one refresh, at once, before the owner is asked.
                    refresh = True
                    continue
                if failure.retry == Retry.OWNER:
                    await self._owner_needed(account_id, failure)
                    return
                attempt += 1
                logger.info("mailbox %s: sign-in failed (%s), attempt %s", account_id,
                            failure.kind, attempt)  # fmt: skip
                await self._state(account_id, State.BACKOFF, failure)
                continue
            refresh = False
            try:
                await self._state(account_id, State.WATCHING)
                logger.info("mailbox %s: watching", account_id)
                if catch_up or await self._inbox_changed(account_id, watcher):
                    # The connection was down (or another listener's was), or nobody
                    # watched (a first watch, a listener restarted): a change may have
                    # come meanwhile.
                    self._changed(account_id)
                attempt, catch_up = 0, True
                while True:
                    if await watcher.next_change(within=self.config.renew):
                        self._changed(account_id)
            except MailError as failure:
                attempt += 1
                logger.info("mailbox %s: connection ended (%s)", account_id, failure.kind)
                await self._state(account_id, State.BACKOFF, failure)
            finally:
                await watcher.close()

    async def _inbox_changed(self, account_id: int, watcher) -> bool:
        """Whether the inbox the server opened differs from what the last sync stored
        (mail came or went while nobody watched). A mailbox never synced is left to
        its first sync."""
        seen = watcher.inbox_status()
        if seen is None:
            # The protocol or server says nothing to compare (Exchange; an IMAP server
            # leaving UIDNEXT out of EXAMINE): one sync more costs less than mail that
            # came while nobody watched waiting for the interval.
            return True
        try:
            stored = await self._database(sync_selectors.inbox_stored_status)(account_id=account_id)
        except DATABASE_GONE:
            return True  # cannot tell: one sync more costs less than mail missed
        return stored is not None and stored != seen

    async def _release(self, account_id: int, state: str, error: str) -> None:
        with contextlib.suppress(*DATABASE_GONE):
            await self._leases(services.watch_release)(
                account_id=account_id, holder=self.holder, state=state, error=error
            )

    async def _owner_needed(self, account_id: int, failure: MailError) -> None:
        logger.info("mailbox %s: needs its owner (%s)", account_id, failure.kind)
        with contextlib.suppress(*DATABASE_GONE):
            await self._database(services.watch_owner_needed)(
                account_id=account_id, holder=self.holder, failure=failure
            )

    # -- queueing syncs ---------------------------------------------------------------

    async def _sync_running(self, account_id: int) -> bool:
        """Whether a run holds the mailbox's claim. The mailboxes waiting are asked
        about together, one query every busy_poll at most, however many they are."""
        future = asyncio.get_running_loop().create_future()
        self._asks.setdefault(account_id, []).append(future)
        if self._asker is None or self._asker.done():
            self._asker = asyncio.create_task(self._ask_running())
        return await future

    async def _ask_running(self) -> None:
        # Started by whichever mailbox asked first, in a copy of its context: it asks
        # for all of them, so its lines name none.
        unbind("mailbox_id")
        while self._asks:
            asks, self._asks = self._asks, {}
            failure, running = None, set()
            try:
                running = await self._database(sync_selectors.mailboxes_sync_running)(
                    account_ids=list(asks)
                )
            except Exception as error:  # any: every waiting caller must hear of it
                failure = error
            for account_id, futures in asks.items():
                for future in futures:
                    if future.done():
                        continue
                    if failure is not None:
                        future.set_exception(failure)
                    else:
                        future.set_result(account_id in running)
            await asyncio.sleep(self.config.busy_poll)

    def _changed(self, account_id: int) -> None:
        self._pending.add(account_id)
        if account_id not in self._queuers:
            self._queuers[account_id] = asyncio.create_task(self._queue_soon(account_id))

    async def _queue_soon(self, account_id: int) -> None:
        bind(mailbox_id=account_id)
        loop = asyncio.get_running_loop()
        try:
            while account_id in self._pending:
                wait = self._last_queued.get(account_id, -1e9) + self.config.debounce - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                try:
                    if await self._sync_running(account_id):
                        # The run going on may have read the inbox before this change:
                        # asked again with the others waiting, after busy_poll.
                        continue
                    self._pending.discard(account_id)
                    queued = await self._database(services.watch_sync_queue)(account_id=account_id)
                except Exception as error:  # any: a change is never dropped
                    if not isinstance(error, DATABASE_GONE):
                        logger.warning("mailbox %s: queueing its sync failed (%s); trying again",
                                       account_id, type(error).__name__)  # fmt: skip
                    self._pending.add(account_id)  # still to queue
                    await asyncio.sleep(self.config.busy_poll)
                    continue
                if queued == services.BUSY:
                    # A run took the mailbox meanwhile: queued after it, as above.
                    self._pending.add(account_id)
                    continue
                self._last_queued[account_id] = loop.time()
                if queued == services.WAITING:
                    logger.info("mailbox %s: the sync queued last has not started yet",
                                account_id)  # fmt: skip
                elif queued == services.QUEUE_DOWN:
                    logger.warning("mailbox %s: the task queue is down; the interval applies",
                                   account_id)  # fmt: skip
        finally:
            self._queuers.pop(account_id, None)
