"""Where a worker's sync spends its time: fetch, parse, store (bench/worker.py).

Wraps the engine's steps with counters; cheap enough not to bend the figures the way a
profiler does. Each step is timed twice: by the wall clock and by its own thread's CPU
time (what it computed, not what it waited for: the server, the database, the GIL).
"fetch" is the time the storing thread waited for the next batch (fetched in a helper
thread) beyond the store it overlaps with; "read" is the helper's FETCH of the bodies
(the wire, TLS, imaplib); "parse" is the storing thread's wait for the batch's parsing
(sync/parsing_process.py: in the parser process, or in place for a small batch);
"database" is the time spent waiting for PostgreSQL's answers (psycopg's wait), most of
it inside the store.
"""

import time
from pathlib import Path

STEPS = ("fetch", "read", "parse", "store", "database")
totals = dict.fromkeys(STEPS, 0.0)
cpu = dict.fromkeys(STEPS, 0.0)


def _timed(name, function):
    def wrapper(*args, **kwargs):
        began, began_cpu = time.perf_counter(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - began
            cpu[name] += time.thread_time() - began_cpu

    return wrapper


def install() -> None:
    from sync import engine

    engine.FetchedBatch.parsed = _timed("parse", engine.FetchedBatch.parsed)
    engine.fetch_bodies = _timed("read", engine.fetch_bodies)
    engine.AccountSyncer._store_fetched = _timed("store", engine.AccountSyncer._store_fetched)
    fetched = engine.AccountSyncer._fetched

    def waited(self, uids):
        batches = fetched(self, uids)
        while True:
            began, began_cpu = time.perf_counter(), time.thread_time()
            parse, parse_cpu = totals["parse"], cpu["parse"]
            item = next(batches, None)
            # The wait for the parsing happens inside this step: counted there only.
            totals["fetch"] += time.perf_counter() - began - (totals["parse"] - parse)
            cpu["fetch"] += time.thread_time() - began_cpu - (cpu["parse"] - parse_cpu)
            if item is None:
                return
            yield item

    engine.AccountSyncer._fetched = waited

    import psycopg

    psycopg.Connection.wait = _timed("database", psycopg.Connection.wait)


def reset() -> None:
    for name in STEPS:
        totals[name] = cpu[name] = 0.0


def write(path: str) -> None:
    Path(path).write_text(
        ", ".join(f"{name} {totals[name]:.2f} s (CPU {cpu[name]:.2f} s)" for name in STEPS) + "\n"
    )
