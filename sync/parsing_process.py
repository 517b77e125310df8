"""A first sync's batches parsed in a process of their own, beside the worker.

Why: parsing is most of a worker's CPU during a first sync (B1: 0.8 s of 1.4 s for
3,000 messages), and in the worker's own process it holds the GIL against the thread
that stores the batch before. In a process of its own it runs on the other core while
the worker reads the next batch from the server and stores the last one.

How: one parser process per worker process, started on the first large batch and kept
for the next ones (`python -m sync.parsing_process`, our own code: it imports the parser,
none of the apps, sets up no Django, and is given no secret nor the worker's
environment; setting MAIL_PARSE_PROCESS=false keeps parsing in the worker). A batch goes to
it as its raw messages and comes back as ParsedEmails, in pickle frames over its stdin
and stdout; a reader thread takes the answers, so the process never blocks on one that
is not asked for yet. Small batches (an ordinary run's few new messages) are parsed in
place: the round trip is not worth it.

Nothing is lost for it: if the process cannot start, dies, or gives no answer in
ANSWER_WAIT, the batch is parsed in place as it always was (and the process started
again for a later batch).
"""

import contextlib
import fcntl
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from .parsing import DEFAULT_LIMITS, Limits, ParsedEmail, parse_safely

logger = logging.getLogger(__name__)

# Below this many bytes a batch is parsed in place (a round trip and the copies cost
# about what parsing 100 KB does).
MIN_BATCH_BYTES = 256_000
# An answer later than this (the process stuck, or starved of CPU for that long) is not
# waited for: the process is ended and the batch parsed in place.
ANSWER_WAIT = 300
# The caller's `waiting` is called this often while it waits (the sync renews its claim).
WAITING_EVERY = 20
# The pipe to the parser holds this much (Linux's default limit for a pipe's size).
PIPE_BYTES = 1 << 20
_FRAME = struct.Struct("!Q")
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
            answer = _process.answer(self.number, waiting)
            if answer is None or len(answer) != len(self.raws):
                answer = [parse_safely(raw, self.limits) for raw in self.raws]
            self.parsed = answer
        return self.parsed

    def forget(self) -> None:
        """Not wanted any more (the run ended): its answer is dropped when it comes."""
        if self.parsed is None and self.number is not None:
            _process.forget(self.number)


def parse_later(raws: list[bytes], limits: Limits = DEFAULT_LIMITS) -> Parsed:
    """The batch handed to the parser process (or parsed now, if it is small or the
    process cannot be had); `result()` gives the ParsedEmails."""
    if sum(map(len, raws)) >= MIN_BATCH_BYTES and settings.MAIL_PARSE_PROCESS:
        number = _process.ask(raws, limits)
        if number is not None:
            return Parsed(raws, limits, number)
    return Parsed(raws, limits)


class _ParserProcess:
    """The worker process's parser process, started when first needed and again after
    it ended. Batches are numbered; `sent` lists those the running process has yet to
    answer, in order, which is the order of its answers."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.answered = threading.Condition(self.lock)
        self.writing = threading.Lock()  # one frame at a time on the process's input
        self.numbered = 0
        self.sent: deque[int] = deque()
        self.answers: dict[int, list[ParsedEmail]] = {}
        self.forgotten: set[int] = set()

    def ask(self, raws: list[bytes], limits: Limits) -> int | None:
        frame = pickle.dumps((limits, raws), protocol=pickle.HIGHEST_PROTOCOL)
        with self.writing:
            with self.lock:
                if not self._running():
                    return None
                self.numbered += 1
                number, process = self.numbered, self.process
                self.sent.append(number)
            # Outside the lock: the write may wait until the process takes the frame,
            # and the reader thread needs the lock to hand over answers meanwhile.
            if not _write(process.stdin.fileno(), _FRAME.pack(len(frame)) + frame):
                self._end(process)
                return None
        return number

    def answer(self, number: int, waiting: Callable[[], None] | None) -> list[ParsedEmail] | None:
        deadline = time.monotonic() + ANSWER_WAIT
        with self.lock:
            while number not in self.answers:
                if number not in self.sent:
                    return None  # the process that had it ended
                left = deadline - time.monotonic()
                if left <= 0:
                    logger.warning("The parser process gave no answer in %s s; ended", ANSWER_WAIT)
                    self._end_locked()
                    return None
                if not self.answered.wait(timeout=min(left, WAITING_EVERY)) and waiting:
                    self.lock.release()
                    try:
                        waiting()
                    finally:
                        self.lock.acquire()
            return self.answers.pop(number)

    def forget(self, number: int) -> None:
        with self.lock:
            if self.answers.pop(number, None) is None and number in self.sent:
                self.forgotten.add(number)

    def _running(self) -> bool:
        if self.process is not None and self.process.poll() is None:
            return True
        self._end_locked()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sync.parsing_process"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=_ROOT,
                # Nothing of the worker's environment (its keys, its database): the
                # parser needs none of it.
                env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(_ROOT)},
            )  # fmt: skip
        except OSError as error:
            logger.warning("The parser process could not start (%r); parsing in place", error)
            self.process = None
            return False
        with contextlib.suppress(OSError):
            # A batch's frame (about BATCH_BYTES) fits at once: the worker goes on
            # without waiting for the parser to take it.
            fcntl.fcntl(self.process.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(self.process.stdin.fileno(), False)
        threading.Thread(
            target=self._read, args=(self.process,), name="parser-answers", daemon=True
        ).start()
        return True

    def _read(self, process: subprocess.Popen) -> None:
        try:
            while True:
                head = process.stdout.read(_FRAME.size)
                if len(head) < _FRAME.size:
                    break
                (size,) = _FRAME.unpack(head)
                body = process.stdout.read(size)
                if len(body) < size:
                    break
                answer = pickle.loads(body)  # noqa: S301 (our own process's answer)
                with self.lock:
                    if self.process is not process or not self.sent:
                        return
                    number = self.sent.popleft()
                    if number in self.forgotten:
                        self.forgotten.discard(number)
                    else:
                        self.answers[number] = answer
                    self.answered.notify_all()
        except Exception:
            logger.exception("Reading the parser process's answers failed")
        finally:
            with contextlib.suppress(Exception):
                process.stdout.close()
        self._end(process)

    def _end(self, process: subprocess.Popen) -> None:
        with self.lock:
            if self.process is process:
                self._end_locked()

    def _end_locked(self) -> None:
        """The process ended (or ends now): what it had not answered is parsed in place
        by those who wait for it."""
        process, self.process = self.process, None
        self.sent.clear()
        self.forgotten.clear()
        self.answered.notify_all()
        if process is not None:
            with contextlib.suppress(OSError):
                process.kill()
            with contextlib.suppress(Exception):
                process.wait(timeout=5)
            with contextlib.suppress(Exception):
                process.stdin.close()  # its output is the reader thread's to close


def _write(fd: int, data: bytes) -> bool:
    """`data` written to the parser's input, or False if the process is gone or takes
    none of it for ANSWER_WAIT (stuck: the worker must not wait on it for ever)."""
    view, deadline = memoryview(data), time.monotonic() + ANSWER_WAIT
    try:
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                logger.warning("The parser process took no batch in %s s; ended", ANSWER_WAIT)
                return False
            with contextlib.suppress(BlockingIOError):
                view = view[os.write(fd, view) :]
    except OSError:
        return False
    return True


_process = _ParserProcess()


def serve() -> None:
    """The parser process: a frame of (limits, raw messages) in, a frame of their
    ParsedEmails out, until its input ends (the worker went)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not break a frame
    while True:
        head = stdin.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        (size,) = _FRAME.unpack(head)
        limits, raws = pickle.loads(stdin.read(size))  # noqa: S301 (the worker's frame)
        answer = pickle.dumps(
            [parse_safely(raw, limits) for raw in raws], protocol=pickle.HIGHEST_PROTOCOL
        )
        stdout.write(_FRAME.pack(len(answer)) + answer)
        stdout.flush()


if __name__ == "__main__":
    serve()
