"""A first sync's batches parsed in a process of their own, beside the worker.

Why: parsing is most of a worker's CPU during a first sync (B1: 0.8 s of 1.4 s for
3,000 messages), and in the worker's own process it holds the GIL against the thread
that stores the batch before. In a process of its own it runs on the other core while
the worker reads the next batch from the server and stores the last one.

How: one parser process per worker process, started on the first large batch and kept
for the next ones (`python -m sync.parsing_process`, our own code: it imports the parser,
none of the apps, sets up no Django, and is given no secret nor the worker's
environment; setting MAIL_PARSE_PROCESS=false keeps parsing in the worker). A batch goes
to it as its raw messages and comes back as ParsedEmails, in numbered pickle frames over
its stdin and stdout. A writer thread feeds it, so the thread that read the batch goes on
to read the next one at once; a reader thread takes the answers, so the process never
blocks on one that is not asked for yet. Small batches (an ordinary run's few new
messages) are parsed in place: the round trip is not worth it.

Nothing is lost for it, and no message can hold or end the worker through it. If no
process can be had (it cannot start, or one never became ready: a broken installation,
paused for QUIET_AFTER_DEATH), the batch is parsed in place as it always was. A process
that works on one batch for ANSWER_WAIT (a message that takes the parser minutes) is
stuck on it, and one that ends while it has a batch may have been ended by one of its
messages (out of memory): that batch is not parsed in place, where the same message
would hold or end the worker, but goes to a new process message by message, each given
MESSAGE_WAIT of the parser's time; a message that takes longer, or ends two processes,
is stored unreadable with its original, the others as usual. The batches queued behind
it are sent again whole. The waiting caller is kept alive throughout (`waiting`, the
sync's claim renewal). A run that ends with batches still in the process ends the
process too, so the next run does not wait behind them, and a process given no batch
for IDLE_END ends, so that a worker's parser does not keep its memory between first
syncs.
"""

import contextlib
import fcntl
import logging
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .parsing import DEFAULT_LIMITS, UNREADABLE, Limits, ParsedEmail, fingerprint, parse_safely

logger = logging.getLogger(__name__)

# Below this many bytes a batch is parsed in place (a round trip and the copies cost
# about what parsing 100 KB does).
MIN_BATCH_BYTES = 256_000
# A batch the process has worked on this long (stuck, or starved of CPU for that long)
# is not waited for: the process is ended and that batch's messages parsed one at a time.
ANSWER_WAIT = 300
# One message alone is given this long of the process's time; one that takes longer is
# stored unreadable. (The largest message parsed whole is sync.engine.LARGE, 3 MB:
# about a second here.)
MESSAGE_WAIT = 60
# A batch queued behind one the process was ended on is sent again whole, at most this
# many times.
RESENDS = 3
# A parser process given no batch for this long ends (its 20-30 MB back to the system);
# the next large batch starts another, in about a tenth of a second.
IDLE_END = 120
# The caller's `waiting` is called this often while it waits (the sync renews its claim).
WAITING_EVERY = 20
# The pipes to and from the parser hold this much (Linux's limit for a pipe's size
# without privileges): the writer thread waits less often for the parser to take a frame.
PIPE_BYTES = 1 << 20
# A parser process that ends this soon after it started without becoming ready (it sends
# a first empty frame before it reads anything: a broken installation does not) is not
# started again for QUIET_AFTER_DEATH: large batches are parsed in place meanwhile.
DIED_YOUNG = 5
QUIET_AFTER_DEATH = 60
_FRAME = struct.Struct("!Q")
READY = 0  # the number of the process's first frame, sent before it reads any
# `answer`'s words for a batch the process worked on for its whole wait without an
# answer (and was ended for it), for one queued behind a batch the process was ended
# on, and (`_answered`'s) for a batch no process could be had for.
GAVE_UP, RESEND, NO_PROCESS = object(), object(), object()
TOO_SLOW = (
    f"Reading this message took longer than {MESSAGE_WAIT} s: it is kept as it was received, unread"
)
ENDED = "Reading this message ended the parser: it is kept as it was received, unread"
_ROOT = Path(__file__).resolve().parent.parent


class Parsed:
    """A batch's ParsedEmails, in the order of its messages, once `result()` is asked."""

    def __init__(self, raws: list[bytes], limits: Limits, number: int | None = None):
        self.raws, self.limits, self.number = raws, limits, number
        self.parsed: list[ParsedEmail] | None = None
        if number is None:
            self.parsed = [parse_safely(raw, limits) for raw in raws]

    def result(self, waiting: Callable[[], None] | None = None) -> list[ParsedEmail]:
        if self.parsed is None:
            answer = _answered(self.raws, self.limits, waiting, number=self.number)
            if answer is GAVE_UP or answer is RESEND or answer is None:
                # Stuck on it, or ended while it had it: one of its messages may hold
                # or end any parser, this worker's too.
                answer = _one_by_one(self.raws, self.limits, waiting)
            elif answer is NO_PROCESS or len(answer) != len(self.raws):
                answer = _in_place(self.raws, self.limits, waiting)
            self.parsed = answer
        return self.parsed

    def forget(self) -> None:
        """Not wanted any more (the run ended): its answer is dropped when it comes."""
        if self.parsed is None and self.number is not None:
            _process.forget(self.number)


def _answered(
    raws: list[bytes], limits: Limits, waiting: Callable[[], None] | None,
    wait: float | None = None, number: int | None = None,
):  # fmt: skip
    """The process's answer for `raws` (asked now, unless `number` says it was), sent
    again whole if it was queued behind a batch the process was ended on: ParsedEmails,
    GAVE_UP, RESEND (sent again RESENDS times already), NO_PROCESS (none to be had), or
    None (the process ended while it had them)."""
    for _attempt in range(RESENDS + 1):
        if number is None:
            number = _process.ask(raws, limits)
            if number is None:
                return NO_PROCESS
        try:
            answer = _process.answer(number, waiting, wait)
        except BaseException:
            _process.forget(number)  # `waiting` raised (the claim lost): nobody wants it
            raise
        if answer is not RESEND:
            return answer
        number = None
    return RESEND


def _renewing(raws: list[bytes], waiting: Callable[[], None] | None):
    """`raws` one after the other, the caller kept alive (`waiting`) every WAITING_EVERY
    seconds between them."""
    since = time.monotonic()
    for raw in raws:
        if waiting is not None and time.monotonic() - since > WAITING_EVERY:
            waiting()
            since = time.monotonic()
        yield raw


def _in_place(
    raws: list[bytes], limits: Limits, waiting: Callable[[], None] | None
) -> list[ParsedEmail]:
    """The batch parsed here, the caller kept alive between messages (a batch the
    parser process gave up on may take long)."""
    parsed = []
    for raw in _renewing(raws, waiting):
        parsed.append(parse_safely(raw, limits))
    return parsed


def _one_by_one(
    raws: list[bytes], limits: Limits, waiting: Callable[[], None] | None
) -> list[ParsedEmail]:
    """A batch the parser process gave no answer for (stuck on it, or ended while it had
    it): each message alone, so that the one that holds or ends the parser is told apart,
    and only it is kept unread, with its original.

    A message whose process ends while it has it is asked again of a new one; one that
    ends two, or ends one when no other can be had (the pause after a process that died
    young), is kept unread. A message that has ended none is parsed here when no process
    can be had, as without one."""
    parsed = []
    for raw in _renewing(raws, waiting):
        ends = 0
        for _attempt in range(RESENDS + 2):
            answer = _answered([raw], limits, waiting, MESSAGE_WAIT)
            if answer is None:
                ends += 1
                if ends < 2:
                    continue
            elif answer is RESEND:
                continue
            break
        if answer is GAVE_UP:
            logger.warning("A message took the parser more than %s s; kept unread", MESSAGE_WAIT)
            parsed.append(_unread(raw, TOO_SLOW))
        elif isinstance(answer, list) and len(answer) == 1:
            parsed.extend(answer)
        elif ends:
            logger.warning("A message ended the parser process; kept unread")
            parsed.append(_unread(raw, ENDED))
        else:
            parsed.extend(_in_place([raw], limits, waiting))
    return parsed


def _unread(raw: bytes, note: str) -> ParsedEmail:
    return ParsedEmail(message_key=fingerprint(raw), problem=UNREADABLE, notes=[note])


def parse_later(raws: list[bytes], limits: Limits = DEFAULT_LIMITS) -> Parsed:
    """The batch handed to the parser process (or parsed now, if it is small or the
    process cannot be had); `result()` gives the ParsedEmails."""
    # Imported here, not above: the parser process imports this module and must not
    # load Django (it would cost it a third of its memory).
    from django.conf import settings

    if sum(map(len, raws)) >= MIN_BATCH_BYTES and settings.MAIL_PARSE_PROCESS:
        number = _process.ask(raws, limits)
        if number is not None:
            return Parsed(raws, limits, number)
    return Parsed(raws, limits)


class _ParserProcess:
    """The worker process's parser process, started when first needed and again after
    it ended. Batches are numbered; `sent` lists those the running process has yet to
    answer, in order, and each answer names its batch."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.answered = threading.Condition(self.lock)
        self.numbered = 0
        self.sent: deque[int] = deque()
        self.frames: queue.SimpleQueue | None = None  # the writer thread's, per process
        self.answers: dict[int, list[ParsedEmail]] = {}
        # When the process began on `sent[0]` (its previous answer, or its asking).
        self.head_since = 0.0
        # The batch a process was stuck on when it was ended (its waiter goes message by
        # message rather than in place), and those queued behind the batch of any process
        # that ended (sent again whole).
        self.gave_up: set[int] = set()
        self.resend: set[int] = set()
        self.started_at = 0.0
        self.ready = False  # whether the running process sent its first, empty frame
        self.quiet_until = 0.0
        self.module = "sync.parsing_process"  # the tests give it a stand-in

    def ask(self, raws: list[bytes], limits: Limits) -> int | None:
        try:
            with self.lock:
                if not self._running():
                    return None
                self.numbered += 1
                # In the lock: frames are written in the order of `sent`, and an answer
                # is read (under the lock) only once its number is in `sent`.
                self.frames.put((self.numbered, limits, raws))
                if not self.sent:
                    self.head_since = time.monotonic()
                self.sent.append(self.numbered)
                return self.numbered
        except Exception:
            # Whatever keeps the process from taking it (no thread, no memory): the batch
            # is parsed in place, and the process, if any, ended.
            logger.exception("A batch could not go to the parser process; parsing in place")
            with self.lock:
                self._end_locked()
            return None

    def answer(
        self, number: int, waiting: Callable[[], None] | None, wait: float | None = None
    ) -> list[ParsedEmail] | object | None:
        """The batch's answer; None if the process ended without giving it (it was
        killed, or a pipe to it broke); GAVE_UP if the process worked on it for `wait`
        (ANSWER_WAIT) seconds without answering, and was ended for it; RESEND if it
        was queued behind a batch the process was ended for.

        Only the process's time on the batch itself counts: a batch queued behind
        another is not blamed for it. One queued behind a batch that no one waits for
        yet (read ahead) ends the process after ANSWER_WAIT of that batch."""
        wait = ANSWER_WAIT if wait is None else wait
        with self.lock:
            while number not in self.answers:
                if number not in self.sent:
                    if number in self.gave_up:
                        self.gave_up.discard(number)
                        return GAVE_UP
                    if number in self.resend:
                        self.resend.discard(number)
                        return RESEND
                    return None  # the process that had it ended
                if self.sent[0] == number:
                    deadline = self.head_since + wait
                else:
                    deadline = self.head_since + ANSWER_WAIT
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning(
                        "The parser process worked on batch %s for %.0f s with no answer; "
                        "ended", self.sent[0], time.monotonic() - self.head_since,
                    )  # fmt: skip
                    self._end_locked(stuck=True)
                    continue
                if not self.answered.wait(timeout=min(left, WAITING_EVERY)) and waiting:
                    try:
                        self.lock.release()
                        waiting()
                    finally:
                        self.lock.acquire()
            return self.answers.pop(number)

    def forget(self, number: int) -> None:
        with self.lock:
            self.gave_up.discard(number)
            self.resend.discard(number)
            if self.answers.pop(number, None) is not None:
                return
            if number in self.sent:
                # Still to be parsed for a run that ended: the process is ended rather
                # than kept busy with it, so that the next run does not wait behind it.
                self._end_locked()

    def _running(self) -> bool:
        while self.process is not None:
            if self.process.poll() is None:
                return True
            # Ended: its reader thread says so once it has taken every answer the process
            # wrote before it ended (deciding here could count those batches as ended).
            # The wait lets go of the lock: another thread may start the next process
            # meanwhile, which is then the one to use.
            process = self.process
            if not self.answered.wait_for(lambda ended=process: self.process is not ended, 5):
                self._ended_by_itself_locked()
        if time.monotonic() < self.quiet_until:
            return False
        try:
            process = subprocess.Popen(  # noqa: S603 (our own module, no shell)
                [sys.executable, "-m", self.module],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_ROOT,
                # Nothing of the worker's environment (its keys, its database): the
                # parser needs none of it.
                env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(_ROOT)},
            )  # fmt: skip
        except OSError as error:
            logger.warning("The parser process could not start (%r); parsing in place", error)
            return False
        for stream in (process.stdin, process.stdout):
            with contextlib.suppress(OSError):
                fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(process.stdin.fileno(), False)
        frames: queue.SimpleQueue = queue.SimpleQueue()
        try:
            threading.Thread(
                target=self._read, args=(process,), name="parser-answers", daemon=True
            ).start()
            threading.Thread(
                target=self._write, args=(process, frames), name="parser-frames", daemon=True
            ).start()
        except Exception:
            frames.put(None)
            _reap(process)
            raise
        self.process, self.frames, self.started_at = process, frames, time.monotonic()
        self.ready = False
        return True

    def _write(self, process: subprocess.Popen, frames: queue.SimpleQueue) -> None:
        """The writer thread: each batch pickled and written as the process takes it;
        the process ended once it has had nothing to do for IDLE_END."""
        written = WRITTEN
        try:
            while (item := self._next_frame(process, frames)) is not None:
                frame = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
                written = _write(
                    process.stdin.fileno(), _FRAME.pack(len(frame)), frame,
                    deadline=lambda: self.head_since + ANSWER_WAIT,
                )  # fmt: skip
                if written == STUCK:
                    # Taking nothing for so long, it is stuck on the batch it works on,
                    # whose waiter may not have waited that long yet.
                    with self.lock:
                        if self.process is process:
                            self._end_locked(stuck=True)
                if written != WRITTEN:
                    break
                del item, frame
        except Exception:
            logger.exception("Writing to the parser process failed")
        finally:
            # Its input is this thread's alone to close: no write can go to a number
            # the system gave to another file meanwhile.
            with contextlib.suppress(Exception):
                process.stdin.close()
        # Unless the process went: then its reader thread ends it, once it has taken the
        # answers the process wrote before it went (ending it here could count those
        # batches as ended).
        if written != GONE:
            self._end(process)

    def _next_frame(self, process: subprocess.Popen, frames: queue.SimpleQueue):
        while True:
            try:
                return frames.get(timeout=IDLE_END)
            except queue.Empty:
                with self.lock:
                    # In the lock: `ask` sends nothing to a process ended here.
                    if self.process is not process:
                        return None
                    if not self.sent:
                        self._end_locked()
                        return None

    def _read(self, process: subprocess.Popen) -> None:
        try:
            while True:
                body = _read_frame(process.stdout)
                if body is None:
                    break
                number, answer = pickle.loads(body)  # noqa: S301 (our own process's answer)
                with self.lock:
                    if self.process is not process:
                        return
                    if number == READY:
                        # Its start-up is not counted against the batch it was given.
                        self.ready, self.head_since = True, time.monotonic()
                        continue
                    if not self.sent or self.sent[0] != number:
                        logger.error("The parser process answered batch %s out of turn", number)
                        self._end_locked()
                        return
                    self.sent.popleft()
                    self.head_since = time.monotonic()
                    self.answers[number] = answer
                    self.answered.notify_all()
        except Exception:
            logger.exception("Reading the parser process's answers failed")
        finally:
            with contextlib.suppress(Exception):
                process.stdout.close()
        self._end(process)

    def _end(self, process: subprocess.Popen) -> None:
        """From its threads: the process went (or a pipe to it broke)."""
        with self.lock:
            if self.process is process:
                self._ended_by_itself_locked()

    def _ended_by_itself_locked(self) -> None:
        # A broken installation's process ends at once, never ready; one that was ready
        # and then ended was ended by what it was given.
        if time.monotonic() - self.started_at < DIED_YOUNG and not self.ready:
            logger.warning(
                "The parser process ended %.1f s after it started (exit code %s); parsing "
                "in place for %s s", time.monotonic() - self.started_at,
                self.process.poll(), QUIET_AFTER_DEATH,
            )  # fmt: skip
            self.quiet_until = time.monotonic() + QUIET_AFTER_DEATH
        self._end_locked()

    def _end_locked(self, stuck: bool = False) -> None:
        """The process ended (or ends now). The batch it worked on is its waiter's to
        parse message by message (GAVE_UP if it was `stuck` on it, else None); those
        queued behind it, never begun, are sent again whole. Its threads end by themselves
        on the closed pipes."""
        process, frames = self.process, self.frames
        self.process, self.frames = None, None
        if self.sent:
            if stuck:
                self.gave_up.add(self.sent[0])
            self.resend.update(list(self.sent)[1:])
        self.sent.clear()
        self.answered.notify_all()
        if frames is not None:
            frames.put(None)
        if process is not None:
            _reap(process)


def _reap(process: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        process.kill()
    with contextlib.suppress(Exception):
        process.wait(timeout=5)


WRITTEN, GONE, STUCK = "written", "gone", "stuck"


def _write(fd: int, *parts: bytes, deadline: Callable[[], float]) -> str:
    """`parts` written to the parser's input (WRITTEN), or not: the process is GONE, or
    is STUCK, not having taken all of them by `deadline()` (ANSWER_WAIT after it began on
    the batch it works on, read again as that batch changes: nothing may wait on it for
    ever, and no batch is blamed for the time of the one before)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                left = deadline() - time.monotonic()
                if left <= 0:
                    logger.warning("The parser process took no batch in %s s; ended", ANSWER_WAIT)
                    return STUCK
                if not poller.poll(min(left, WAITING_EVERY) * 1000):
                    continue
                with contextlib.suppress(BlockingIOError):
                    view = view[os.write(fd, view) :]
    except OSError:
        return GONE
    return WRITTEN


def _read_frame(stream) -> bytes | None:
    """The next frame's body, or None at the end of the stream (or a frame cut short)."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    body = stream.read(size)
    return body if len(body) == size else None


_process = _ParserProcess()


def serve() -> None:
    """The parser process: a frame of (number, limits, raw messages) in, a frame of
    (number, their ParsedEmails) out, until its input ends (the worker went)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not break a frame
    ready = pickle.dumps((READY, None), protocol=pickle.HIGHEST_PROTOCOL)
    stdout.write(_FRAME.pack(len(ready)) + ready)
    stdout.flush()
    while (frame := _read_frame(stdin)) is not None:
        number, limits, raws = pickle.loads(frame)  # noqa: S301 (the worker's frame)
        answer = pickle.dumps(
            (number, [parse_safely(raw, limits) for raw in raws]),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        stdout.write(_FRAME.pack(len(answer)))
        stdout.write(answer)
        stdout.flush()


if __name__ == "__main__":
    serve()
