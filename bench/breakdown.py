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

The store's own parts follow (STORE_PARTS), each inside "store": which emails a batch
holds already ("identify"), the new emails' rows ("emails"), their locations, attachment
files and rows, the CRM links, the claim's renewal and the run's progress before and
after each batch, and its commit. Where the store's time goes tells whether a faster
parser would shorten a sync: the storing thread waits on the store, not on the parser,
when these add up to the sync's time.
"""

import time
from pathlib import Path

STORE_PARTS = (
    "identify", "emails", "locations", "attachment files", "attachment rows", "links",
    "claim", "progress", "commit",
)  # fmt: skip
STEPS = ("fetch", "read", "parse", "store", "database", *STORE_PARTS)
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

    _store_parts()

    import psycopg

    psycopg.Connection.wait = _timed("database", psycopg.Connection.wait)


def reset() -> None:
    for name in STEPS:
        totals[name] = cpu[name] = 0.0


def write(path: str) -> None:
    Path(path).write_text(
        ", ".join(f"{name} {totals[name]:.2f} s (CPU {cpu[name]:.2f} s)" for name in STEPS) + "\n"
    )


def _store_parts() -> None:
    from django.db import transaction

    from sync import files, models, services, store

    store.Store._identify = _timed("identify", store.Store._identify)
    store.insert_rows = _timed("emails", store.insert_rows)
    store.insert_rows_skipping_existing = _timed("locations", store.insert_rows_skipping_existing)
    files.WrittenFiles.save = _timed("attachment files", files.WrittenFiles.save)
    manager = store.Attachment.objects  # one instance, the model's
    manager.bulk_create = _timed("attachment rows", manager.bulk_create)
    store.emails_link = _timed("links", store.emails_link)
    # Looked up by name when the sync's `renew` is called.
    services._renew = _timed("claim", services._renew)
    models.SyncRun.save_progress = _timed("progress", models.SyncRun.save_progress)
    # A transaction's end: the batch's commit (a savepoint's release inside another).
    transaction.Atomic.__exit__ = _timed("commit", transaction.Atomic.__exit__)
