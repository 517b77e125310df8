"""A first sync's large batches parsed in a process of their own (sync/parsing_process.py):
the same ParsedEmails as in place, and nothing lost when that process dies, hangs, is
switched off or cannot start. Real processes, real signals."""

import gzip
import imaplib
import os
import signal
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from sync import engine, parsing_process
from sync.engine import FetchedBatch
from sync.models import Email, EmailLocation, SyncRun
from sync.parsing import UNREADABLE, fingerprint, parse_safely
from sync.services import ClaimLost, TransientSyncError, mailbox_sync
from tests.mailbox import make_message


def _message(number: int, size: int = 30_000) -> bytes:
    message = EmailMessage()
    message["Subject"] = f"Angebot {number} — Grüße"
    message["From"] = f"Olga <olga{number}@partner.test>"
    message["To"] = "me@example.test"
    message["Message-ID"] = make_msgid(idstring=str(number), domain="partner.test")
    message.set_content(("lorem ipsum dolor " * (size // 18))[:size])
    message.add_alternative(f"<p>Grüße {number}</p><script>x()</script>", subtype="html")
    message.add_attachment(b"%PDF" + bytes(range(256)) * 8, maintype="application",
                           subtype="pdf", filename=f"Rechnung {number}.pdf")  # fmt: skip
    return message.as_bytes()


@pytest.fixture
def batch() -> list[bytes]:
    raws = [_message(n) for n in range(12)]
    assert sum(map(len, raws)) >= parsing_process.MIN_BATCH_BYTES
    return raws


def _fresh(process: parsing_process._ParserProcess) -> None:
    with process.lock:
        process._end_locked()
        process.quiet_until = 0.0
        process.gave_up.clear()
        process.resend.clear()
        process.answers.clear()


@pytest.fixture
def parser(settings, monkeypatch):
    settings.MAIL_PARSE_PROCESS = True
    # These tests end processes young on purpose; the pause after that has its own test.
    monkeypatch.setattr(parsing_process, "DIED_YOUNG", 0)
    # Ended first too: an earlier test's large sync in this worker (under xdist, any
    # test of any file) leaves its parser process running for IDLE_END, and a test that
    # gives the parser a stand-in must not be answered by the real one.
    _fresh(parsing_process._process)
    yield parsing_process._process
    _fresh(parsing_process._process)


def _hanging(raw: bytes) -> bytes:
    """The message as tests/slow_parser.py's parser process hangs on it."""
    return b"X-Test-Hang: yes\r\n" + raw


@pytest.fixture
def hanging_parser(parser, monkeypatch):
    """The parser process replaced by tests/slow_parser.py (hangs on `_hanging`
    messages); every process started meanwhile, to show none is left behind."""
    monkeypatch.setattr(parser, "module", "tests.slow_parser")
    started, popen = [], parsing_process.subprocess.Popen

    def recording(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(parsing_process.subprocess, "Popen", recording)
    # And the size of every batch asked of them, one message or many.
    asked, ask = [], parser.ask
    monkeypatch.setattr(
        parser, "ask", lambda raws, limits: asked.append(len(raws)) or ask(raws, limits)
    )
    parser.started, parser.asked = started, asked
    yield parser
    del parser.started, parser.asked


def test_it_parses_a_large_batch_in_its_own_process_as_in_place(parser, batch):
    parsed = parsing_process.parse_later(batch)
    assert parsed.number is not None  # handed over, not parsed here
    assert parser.process.pid != os.getpid()
    assert parsed.result() == [parse_safely(raw) for raw in batch]
    # The process stays for the next batch.
    process = parser.process
    again = parsing_process.parse_later(batch[:11])
    assert again.result() == [parse_safely(raw) for raw in batch[:11]]
    assert parser.process is process


def test_it_parses_a_small_batch_in_place(parser, batch):
    parsed = parsing_process.parse_later(batch[:1])
    assert parsed.number is None
    assert parsed.result() == [parse_safely(batch[0])]


def test_it_parses_in_place_when_switched_off(settings, parser, batch):
    settings.MAIL_PARSE_PROCESS = False
    parsed = parsing_process.parse_later(batch)
    assert parsed.number is None and parser.process is None
    assert parsed.result() == [parse_safely(raw) for raw in batch]


def test_it_gives_the_parser_process_none_of_the_workers_environment(parser, batch, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "not-for-the-parser")
    monkeypatch.setenv("CREDENTIAL_KEYS", "not-for-the-parser-either")
    parsing_process.parse_later(batch).result()
    environ = open(f"/proc/{parser.process.pid}/environ", "rb").read()  # noqa: SIM115
    assert b"not-for-the-parser" not in environ
    assert b"DATABASE_URL" not in environ


def test_it_parses_message_by_message_what_a_dead_parser_process_had_and_starts_another(
    parser, batch, monkeypatch
):
    real = parsing_process._in_place
    parsing_process.parse_later(batch).result()  # started
    first = parser.process
    first.send_signal(signal.SIGSTOP)  # holds it before it can answer
    waiting = parsing_process.parse_later(batch)
    behind = parsing_process.parse_later(batch[:10])  # queued behind, never begun
    first.send_signal(signal.SIGKILL)
    in_place, asked, ask = [], [], parser.ask
    monkeypatch.setattr(
        parsing_process, "_in_place", lambda *args: in_place.append(1) or real(*args)
    )
    monkeypatch.setattr(
        parser, "ask", lambda raws, limits: asked.append(len(raws)) or ask(raws, limits)
    )
    # One of its messages may have ended it: each goes alone to a new process, none is
    # parsed in the worker, none lost.
    assert waiting.result() == [parse_safely(raw) for raw in batch]
    assert asked == [1] * 12 and in_place == []
    assert behind.result() == [parse_safely(raw) for raw in batch[:10]]
    assert asked[12:] == [10]  # sent again whole
    later = parsing_process.parse_later(batch)
    assert later.number is not None
    assert later.result() == [parse_safely(raw) for raw in batch]
    assert parser.process is not first and parser.process.poll() is None


def test_it_stops_waiting_for_a_stuck_parser_process_and_parses_message_by_message(
    parser, batch, monkeypatch
):
    parsing_process.parse_later(batch).result()  # started before the short waits
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 1.0)
    monkeypatch.setattr(parsing_process, "WAITING_EVERY", 0.2)
    stuck = parser.process
    stuck.send_signal(signal.SIGSTOP)
    parsed = parsing_process.parse_later(batch)
    renewals = []
    began = time.monotonic()
    assert parsed.result(waiting=lambda: renewals.append(1)) == [parse_safely(raw) for raw in batch]
    assert time.monotonic() - began < 10
    assert len(renewals) >= 3  # the caller kept its claim alive meanwhile
    assert stuck.wait(timeout=5) == -signal.SIGKILL  # ended, not left behind
    assert parser.process is not None and parser.process is not stuck  # a new one parsed them


def test_it_keeps_unread_only_the_message_that_holds_the_parser(hanging_parser, batch, monkeypatch):
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 1.0)
    monkeypatch.setattr(parsing_process, "MESSAGE_WAIT", 1.0)
    monkeypatch.setattr(parsing_process, "WAITING_EVERY", 0.2)
    batch[5] = _hanging(batch[5])
    parsed = parsing_process.parse_later(batch)
    assert parsed.number is not None
    renewals, began = [], time.monotonic()
    result = parsed.result(waiting=lambda: renewals.append(time.monotonic() - began))
    # The batch (1 s), then each message alone: the hanging one for 1 s, not an hour.
    assert time.monotonic() - began < 15
    # The claim kept alive through both waits: the batch's, and the hanging message's.
    assert len([at for at in renewals if at < 1.0]) >= 3
    assert len([at for at in renewals if at > 1.3]) >= 3
    held = result.pop(5)
    assert held.problem == UNREADABLE and held.notes == [parsing_process.TOO_SLOW]
    assert held.message_key == fingerprint(batch[5])  # stored with its original by it
    assert result == [parse_safely(raw) for n, raw in enumerate(batch) if n != 5]
    # The two processes that held it were ended; the one that parsed the rest stays.
    assert len(hanging_parser.started) == 3
    assert [process.wait(timeout=5) for process in hanging_parser.started[:2]] == [
        -signal.SIGKILL
    ] * 2
    assert hanging_parser.started[2] is hanging_parser.process
    assert hanging_parser.process.poll() is None


def test_it_isolates_the_held_batch_when_the_parser_takes_no_more_before_anyone_waits(
    hanging_parser, batch, monkeypatch
):
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 1.0)
    monkeypatch.setattr(parsing_process, "MESSAGE_WAIT", 1.0)
    asked = hanging_parser.asked
    held = [_hanging(batch[0]), *batch[1:]]
    first = parsing_process.parse_later(held)
    behind = [_message(n) for n in range(50)]  # more than the pipe to the process holds
    second = parsing_process.parse_later(behind)
    # The writer gives up on the stuck process before the first batch is waited for
    # (the storing thread is busy with an earlier one meanwhile).
    deadline = time.monotonic() + 10
    while hanging_parser.started[0].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hanging_parser.started[0].poll() == -signal.SIGKILL
    result = first.result()
    # Not parsed in place, where the same message would hold the worker: one by one.
    assert result[0].problem == UNREADABLE and result[0].notes == [parsing_process.TOO_SLOW]
    assert result[1:] == [parse_safely(raw) for raw in batch[1:]]
    assert second.result() == [parse_safely(raw) for raw in behind]
    assert asked == [12, 50, *[1] * 12, 50]  # the one behind sent again whole


def test_it_sends_again_whole_a_batch_queued_behind_the_one_that_holds_the_parser(
    hanging_parser, batch, monkeypatch
):
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 1.0)
    monkeypatch.setattr(parsing_process, "MESSAGE_WAIT", 1.0)
    asked = hanging_parser.asked
    held = parsing_process.parse_later([_hanging(batch[0]), *batch[1:]])
    behind = parsing_process.parse_later(batch)
    # Waited for first (the storing thread's order can differ from the process's): it
    # is not blamed for the batch before it.
    assert behind.result() == [parse_safely(raw) for raw in batch]
    assert asked == [12, 12, 12]  # the two, then this one again whole to a new process
    result = held.result()
    assert result[0].notes == [parsing_process.TOO_SLOW]
    assert result[1:] == [parse_safely(raw) for raw in batch[1:]]
    assert asked[3:] == [1] * 12  # the held one, message by message


def test_it_does_not_blame_a_message_for_the_batch_before_it(hanging_parser, batch, monkeypatch):
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 1.5)
    monkeypatch.setattr(parsing_process, "MESSAGE_WAIT", 0.5)
    # A batch read ahead, holding the parser, no one waiting for it yet; then a single
    # message of a batch parsed one by one.
    held = parsing_process.parse_later([_hanging(batch[0]), *batch[1:]])
    alone = parsing_process._one_by_one(batch[1:2], parsing_process.DEFAULT_LIMITS, None)
    assert alone == [parse_safely(batch[1])]  # not TOO_SLOW after its 0.5 s
    assert held.result()[0].notes == [parsing_process.TOO_SLOW]


def test_it_ends_the_held_parser_when_the_claim_is_lost_message_by_message(
    hanging_parser, batch, monkeypatch
):
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 0.5)
    monkeypatch.setattr(parsing_process, "MESSAGE_WAIT", 30.0)
    monkeypatch.setattr(parsing_process, "WAITING_EVERY", 0.1)
    parsed = parsing_process.parse_later([_hanging(batch[0]), *batch[1:]])
    began = time.monotonic()

    def renew():
        if time.monotonic() - began > 1.0:  # in the hanging message's own wait
            raise ClaimLost("another run took the mailbox")

    with pytest.raises(ClaimLost):
        parsed.result(waiting=renew)
    parsed.forget()  # as the run's cleanup does
    assert len(hanging_parser.started) == 2  # lost while the message alone was waited for
    assert not hanging_parser.sent
    # Not left parsing a message for no one, nor holding the next run.
    assert hanging_parser.started[-1].wait(timeout=5) == -signal.SIGKILL
    assert not hanging_parser.gave_up and not hanging_parser.resend


def test_it_does_not_blame_a_batch_for_the_slow_one_before_it_while_feeding_the_parser(
    hanging_parser, batch, monkeypatch
):
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 2.0)
    monkeypatch.setattr(parsing_process, "MESSAGE_WAIT", 1.0)
    # Two batches each within their 2 s (one message of 1.3 s), and one behind them
    # larger than the pipe: the writer waits 2.6 s to hand it over, which is nobody's
    # fault.
    slow = [b"X-Test-Slow: 1.3\r\n" + batch[0], *batch[1:]]
    first = parsing_process.parse_later(slow)
    second = parsing_process.parse_later(slow)
    behind = [_message(n) for n in range(50)]
    third = parsing_process.parse_later(behind)
    expected = [parse_safely(raw) for raw in slow]
    assert first.result() == expected
    assert second.result() == expected  # not message by message, not TOO_SLOW
    assert third.result() == [parse_safely(raw) for raw in behind]
    assert len(hanging_parser.started) == 1


def test_it_keeps_unread_a_message_that_ends_the_parser_twice_and_reads_the_rest(
    hanging_parser, batch, monkeypatch
):
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 1.0)
    monkeypatch.setattr(parsing_process, "MESSAGE_WAIT", 1.0)
    batch[0] = _hanging(batch[0])
    batch[3] = b"X-Test-Crash: yes\r\n" + batch[3]
    result = parsing_process.parse_later(batch).result()
    assert result[0].notes == [parsing_process.TOO_SLOW]
    assert result[3].problem == UNREADABLE and result[3].notes == [parsing_process.ENDED]
    assert result[3].message_key == fingerprint(batch[3])
    rest = [n for n in range(12) if n not in (0, 3)]
    assert [result[n] for n in rest] == [parse_safely(batch[n]) for n in rest]


@pytest.mark.parametrize("warm", [False, True])
def test_it_keeps_unread_the_messages_that_end_the_parser_and_reads_the_rest(
    hanging_parser, batch, monkeypatch, warm
):
    # With the pause after a broken installation's start as configured: a process that
    # became ready and is then ended by a message is not taken for one.
    monkeypatch.setattr(parsing_process, "DIED_YOUNG", 5)
    if warm:
        assert parsing_process.parse_later(batch).result() == [parse_safely(raw) for raw in batch]
    in_place = []
    monkeypatch.setattr(parsing_process, "_in_place", lambda *args: in_place.append(1))
    crashing = (0, 4, 8)
    for n in crashing:
        batch[n] = b"X-Test-Crash: yes\r\n" + batch[n]
    result = parsing_process.parse_later(batch).result()
    for n in crashing:
        assert result[n].problem == UNREADABLE and result[n].notes == [parsing_process.ENDED]
        assert result[n].message_key == fingerprint(batch[n])
    rest = [n for n in range(12) if n not in crashing]
    assert [result[n] for n in rest] == [parse_safely(batch[n]) for n in rest]
    assert in_place == []  # none of them in the worker, where a crasher would end it
    clean = [raw for n, raw in enumerate(batch) if n not in crashing]
    assert parsing_process.parse_later(clean).number is not None  # no pause after


def test_it_takes_the_answers_a_parser_wrote_before_it_ended(hanging_parser, batch, monkeypatch):
    # The reader thread is slow (the worker's other threads hold the interpreter); the
    # writer meets the ended process first. What the process answered before it ended
    # is still its answer, not a batch to parse again message by message.
    read = parsing_process._read_frame

    def slow_read(stream):
        first = len(hanging_parser.started) == 1  # the later ones read at speed
        if first and threading.current_thread().name == "parser-answers":
            time.sleep(1.0)
        return read(stream)

    monkeypatch.setattr(parsing_process, "_read_frame", slow_read)
    asked = hanging_parser.asked
    answered = parsing_process.parse_later(batch)
    # Ends the process half a second in: the next batch is being fed to it by then.
    ending = parsing_process.parse_later(
        [b"X-Test-Slow: 0.5\r\n" + batch[0], b"X-Test-Crash: yes\r\n" + batch[1], *batch[2:]]
    )
    behind = parsing_process.parse_later([_message(n) for n in range(120)])  # > the pipe
    assert answered.result() == [parse_safely(raw) for raw in batch]
    assert asked == [12, 12, 120]  # answered as a batch: nothing asked again
    ended = ending.result()
    assert ended[1].notes == [parsing_process.ENDED]
    assert ended[0] == parse_safely(b"X-Test-Slow: 0.5\r\n" + batch[0])
    assert len(behind.result()) == 120
    assert parsing_process.parse_later(batch).number is not None  # no pause taken


def test_it_starts_one_parser_for_two_threads_that_find_it_ended(
    hanging_parser, batch, monkeypatch
):
    parsing_process.parse_later(batch).result()
    end = hanging_parser._end

    def slow_end(process):
        time.sleep(0.5)  # the reader still taking the ended process's last answers
        end(process)

    monkeypatch.setattr(hanging_parser, "_end", slow_end)
    hanging_parser.process.kill()
    hanging_parser.process.wait()
    results = {}

    def sync_one(name):
        results[name] = parsing_process.parse_later(batch).result()

    threads = [threading.Thread(target=sync_one, args=(n,)) for n in ("fetch", "store")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    expected = [parse_safely(raw) for raw in batch]
    assert results == {"fetch": expected, "store": expected}
    assert len(hanging_parser.started) == 2  # the first, and one after it ended
    assert hanging_parser.started[1] is hanging_parser.process


def test_it_ends_a_parser_process_left_idle_and_starts_another_when_needed(
    parser, batch, monkeypatch
):
    monkeypatch.setattr(parsing_process, "IDLE_END", 0.3)
    parsing_process.parse_later(batch).result()
    idle = parser.process
    assert idle.wait(timeout=10) is not None  # ended by the worker, memory given back
    assert parser.process is None
    again = parsing_process.parse_later(batch)
    assert again.number is not None
    assert again.result() == [parse_safely(raw) for raw in batch]
    assert parser.process is not idle


def test_it_does_not_wait_for_ever_on_a_parser_process_that_takes_no_batch(
    parser, batch, monkeypatch
):
    parsing_process.parse_later(batch).result()  # started before the short wait
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 1.0)
    stuck = parser.process
    stuck.send_signal(signal.SIGSTOP)
    larger = [_message(n) for n in range(50)]  # more than its input pipe holds
    assert sum(map(len, larger)) > parsing_process.PIPE_BYTES
    began = time.monotonic()
    parsed = parsing_process.parse_later(larger)
    assert time.monotonic() - began < 0.5  # the reading thread goes on at once
    assert parsed.result() == [parse_safely(raw) for raw in larger]
    assert time.monotonic() - began < 10
    assert stuck.wait(timeout=5) == -signal.SIGKILL


def test_it_drops_the_answer_no_one_waits_for_any_more(parser, batch):
    forgotten = parsing_process.parse_later(batch)
    process = parser.process
    deadline = time.monotonic() + 20
    while forgotten.number not in parser.answers and time.monotonic() < deadline:
        time.sleep(0.02)  # answered, not yet taken
    forgotten.forget()
    assert parser.answers == {}
    wanted = parsing_process.parse_later(batch[:10])
    assert wanted.result() == [parse_safely(raw) for raw in batch[:10]]
    assert parser.answers == {} and parser.process is process  # kept for the next


def test_it_parses_in_place_when_the_parser_process_cannot_start(parser, batch, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(parsing_process.subprocess, "Popen", refused)
    parsed = parsing_process.parse_later(batch)
    assert parsed.number is None
    assert parsed.result() == [parse_safely(raw) for raw in batch]


def test_it_stores_a_first_sync_parsed_beside_the_worker_once_each(
    parser, synced_mailbox, monkeypatch
):
    account, mailbox = synced_mailbox
    # One batch whatever the default bound (a small last batch would be parsed in place).
    monkeypatch.setattr(engine, "BATCH_BYTES", 3_000_000)
    raws = [_message(n, size=20_000) for n in range(40)]
    mailbox.append("INBOX", *raws)
    asked, ask = [], parser.ask

    def counting(raws, limits):
        asked.append(len(raws))
        return ask(raws, limits)

    monkeypatch.setattr(parser, "ask", counting)
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert sum(asked) == 40  # every message went through the parser process
    assert Email.objects.filter(account=account).count() == 40
    assert EmailLocation.objects.filter(email__account=account).count() == 40
    assert set(Email.objects.values_list("subject", flat=True)) == {
        f"Angebot {n} — Grüße" for n in range(40)
    }
    # The HTML was made safe there as here.
    assert not Email.objects.filter(html_body__contains="<script").exists()


def test_it_stores_every_message_once_when_the_parser_process_dies_mid_sync(
    parser, synced_mailbox, monkeypatch
):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *[_message(n, size=20_000) for n in range(60)])
    monkeypatch.setattr("sync.engine.BATCH", 15)
    ask, asked = parser.ask, []

    def ask_then_kill(raws, limits):
        number = ask(raws, limits)
        asked.append(len(raws) if number is not None else None)
        if len(asked) == 2:
            os.kill(parser.process.pid, signal.SIGKILL)
        return number

    monkeypatch.setattr(parser, "ask", ask_then_kill)
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    # The batch it worked on went message by message to a new process; those queued
    # behind it (read ahead: two at most), whole again.
    assert asked.count(1) == 15 and 4 <= asked.count(15) <= 6
    assert Email.objects.filter(account=account).count() == 60
    assert EmailLocation.objects.filter(email__account=account).count() == 60


def test_it_stores_the_message_that_holds_the_parser_unread_with_its_original(
    hanging_parser, synced_mailbox, monkeypatch
):
    account, mailbox = synced_mailbox
    monkeypatch.setattr(engine, "BATCH_BYTES", 3_000_000)  # one batch, to the process
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 1.0)
    monkeypatch.setattr(parsing_process, "MESSAGE_WAIT", 1.0)
    raws = [_message(n, size=20_000) for n in range(20)]
    raws[7] = _hanging(raws[7])
    mailbox.append("INBOX", *raws)
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    emails = Email.objects.filter(account=account)
    assert emails.count() == 20 and EmailLocation.objects.filter(email__in=emails).count() == 20
    held = emails.get(problem=Email.Problem.UNREADABLE)
    assert parsing_process.TOO_SLOW in held.notes
    with held.original.open("rb") as original:
        kept = original.read()
    kept = gzip.decompress(kept) if kept[:2] == b"\x1f\x8b" else kept
    assert b"X-Test-Hang: yes" in kept and b"Angebot 7" in kept
    assert emails.exclude(pk=held.pk).filter(problem="").count() == 19


def test_it_leaves_no_answer_behind_when_the_claim_is_lost_while_waiting(
    parser, batch, monkeypatch
):
    parsing_process.parse_later(batch).result()  # started
    monkeypatch.setattr(parsing_process, "WAITING_EVERY", 0.01)
    parser.process.send_signal(signal.SIGSTOP)  # busy: the first wait surely times out
    fetched = FetchedBatch(raw=[(uid, raw, False) for uid, raw in enumerate(batch, 1)])
    fetched.parsing = parsing_process.parse_later(batch)
    assert fetched.parsing.number is not None

    def renew():
        parser.process.send_signal(signal.SIGCONT)
        raise ClaimLost("another run took the mailbox")

    with pytest.raises(ClaimLost):
        fetched.parsed(waiting=renew)
    fetched.cleanup()  # as _fetched's `finally` does
    deadline = time.monotonic() + 20
    while parser.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not parser.sent and parser.answers == {}


def test_it_parses_in_place_when_the_parser_processs_threads_cannot_start(
    parser, batch, monkeypatch
):
    class NoThread:
        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            raise RuntimeError("can't start new thread")

    monkeypatch.setattr(parsing_process.threading, "Thread", NoThread)
    parsed = parsing_process.parse_later(batch)
    assert parsed.number is None and parser.process is None  # none left unread
    assert parsed.result() == [parse_safely(raw) for raw in batch]


def test_it_does_not_hold_the_next_run_behind_a_batch_an_ended_run_left(parser, batch, monkeypatch):
    parsing_process.parse_later(batch).result()  # started
    monkeypatch.setattr(parsing_process, "ANSWER_WAIT", 30.0)
    parser.process.send_signal(signal.SIGSTOP)  # stands in for a message parsed for minutes
    parsing_process.parse_later(batch).forget()  # the run that asked for it ended
    began = time.monotonic()
    assert parsing_process.parse_later(batch[:10]).result() == [
        parse_safely(raw) for raw in batch[:10]
    ]
    # Not behind the other run's batch (30 s): a new process's start and this batch only.
    assert time.monotonic() - began < 15


def test_it_pauses_a_parser_process_that_dies_young_and_parses_in_place(parser, batch, monkeypatch):
    monkeypatch.setattr(parsing_process, "DIED_YOUNG", 30)
    monkeypatch.setattr(parsing_process, "QUIET_AFTER_DEATH", 1.0)
    # A broken installation: the process ends at once, having answered nothing.
    monkeypatch.setattr(parser, "module", "tests.no_such_parser_module")
    asked, ask = [], parser.ask
    monkeypatch.setattr(
        parser, "ask", lambda raws, limits: asked.append(ask(raws, limits)) or asked[-1]
    )
    first = parsing_process.parse_later(batch)
    assert first.number is not None
    # Its batch, message by message, finds no process to be had: all parsed here, none
    # kept unread for it.
    assert first.result() == [parse_safely(raw) for raw in batch]
    assert asked[1:] == [None] * 12
    paused = parsing_process.parse_later(batch)
    assert paused.number is None  # not started again at once
    assert paused.result() == [parse_safely(raw) for raw in batch]
    time.sleep(1.1)
    assert parsing_process.parse_later(batch).number is not None  # after the pause


def test_it_keeps_the_claim_alive_while_parsing_in_place_what_the_process_gave_up(
    parser, batch, monkeypatch
):
    monkeypatch.setattr(parsing_process, "WAITING_EVERY", 0.0)
    renewals = []
    parsing_process._in_place(batch, parsing_process.DEFAULT_LIMITS, lambda: renewals.append(1))
    assert len(renewals) >= len(batch) - 1


def test_it_reads_no_further_batch_once_the_helper_failed(synced_mailbox, monkeypatch):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *[make_message(subject=f"m{n}") for n in range(30)])
    monkeypatch.setattr(engine, "BATCH", 10)
    calls, real = [], engine.fetch_bodies

    def cut_on_first(client, uids):
        calls.append(list(uids))
        if len(calls) == 1:
            raise imaplib.IMAP4.abort("socket error: connection reset")
        time.sleep(0.5)  # a slow line: the failing run would wait for this batch too
        return real(client, uids)

    monkeypatch.setattr(engine, "fetch_bodies", cut_on_first)
    with pytest.raises(TransientSyncError):
        mailbox_sync(account_id=account.pk)
    assert len(calls) == 1  # nothing more asked of a connection known to be broken


def test_it_starts_the_parser_without_django(tmp_path):
    # The parser process imports this module; Django would cost it a third of its memory
    # (asyncio and ssl with it), and it has no settings to read.
    code = (
        "import sys; import sync.parsing_process as p; from sync.parsing import parse_safely;"
        "parse_safely(b'Subject: hi\\r\\n\\r\\nbody');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'ssl')))"
    )
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(parsing_process._ROOT)}
    loaded = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    assert loaded == "[]"
