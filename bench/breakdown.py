"""Where a worker's sync spends its time: fetch, parse, store (bench/worker.py).

Wraps the engine's steps with wall-clock counters; cheap enough not to bend the
figures the way a profiler does. "fetch" is the time the engine waited for the next
batch (fetched and parsed in a helper thread) beyond the store it overlaps with; "parse"
is the helper's time in the parser, overlapping the store.
"""

import time
from pathlib import Path

totals = {"fetch": 0.0, "parse": 0.0, "store": 0.0}


def _timed(name, function):
    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - began

    return wrapper


def install() -> None:
    from sync import engine

    engine.parse_message = _timed("parse", engine.parse_message)
    engine.AccountSyncer._store_fetched = _timed("store", engine.AccountSyncer._store_fetched)
    fetched = engine.AccountSyncer._fetched

    def waited(self, uids):
        batches = fetched(self, uids)
        while True:
            began = time.perf_counter()
            item = next(batches, None)
            totals["fetch"] += time.perf_counter() - began
            if item is None:
                return
            yield item

    engine.AccountSyncer._fetched = waited


def reset() -> None:
    for name in totals:
        totals[name] = 0.0


def write(path: str) -> None:
    fetch = totals["fetch"]
    Path(path).write_text(
        f"fetch {fetch:.2f} s, parse {totals['parse']:.2f} s, store {totals['store']:.2f} s\n"
    )
