"""The project's Celery worker, started by the benchmark (B1 and Scale).

`--breakdown FILE` times the engine's fetch, parse and store steps in each sync task and
writes the totals of the last one to FILE; `--profile FILE` writes a cProfile of the
last sync task to FILE (pstats) and FILE.txt. Only "sync.mailbox" counts: the tasks a
sync queues (search vectors) run on the same worker afterwards and would overwrite it. The rest of the arguments go to
`celery worker`.
"""

import sys
from pathlib import Path

# This checkout's code, whatever else the interpreter's path holds.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import django

django.setup()

from celery.signals import task_postrun, task_prerun  # noqa: E402

from bench import breakdown  # noqa: E402
from mailsetup.celery import app  # noqa: E402


def _option(name: str) -> str | None:
    if name not in sys.argv:
        return None
    index = sys.argv.index(name)
    value = sys.argv[index + 1]
    del sys.argv[index : index + 2]
    return value


breakdown_file = _option("--breakdown")
profile_file = _option("--profile")
parse_free = "--parse-free" in sys.argv
if parse_free:
    sys.argv.remove("--parse-free")


def _sync_only(function):
    def handler(sender=None, **_):
        if getattr(sender, "name", None) == "sync.mailbox":
            function()

    return handler


if breakdown_file:
    breakdown.install()
    task_prerun.connect(_sync_only(breakdown.reset), weak=False)
    task_postrun.connect(_sync_only(lambda: breakdown.write(breakdown_file)), weak=False)
if profile_file:
    import cProfile
    import pstats

    profilers = [cProfile.Profile()]

    def _start():
        profilers[-1] = cProfile.Profile()  # each task's profile on its own
        profilers[-1].enable()

    def _stop():
        profilers[-1].disable()
        profilers[-1].dump_stats(profile_file)
        with open(profile_file + ".txt", "w") as out:
            for key in ("tottime", "cumulative"):
                pstats.Stats(profile_file, stream=out).sort_stats(key).print_stats(40)

    task_prerun.connect(_sync_only(_start), weak=False)
    task_postrun.connect(_sync_only(_stop), weak=False)

if parse_free:
    # `sync_bench.py --parse-free`: each message is parsed once, in its first round, and
    # its result taken from here in the next ones (the worker parses in place, by
    # MAIL_PARSE_PROCESS=false), so that those rounds cost everything but the parsing.
    from sync import parsing_process

    kept: dict[bytes, object] = {}
    parse = parsing_process.parse_safely

    def _kept_or_parsed(raw, limits=None):
        parsed = kept.get(raw)
        if parsed is None:
            parsed = kept[raw] = parse(raw, limits)
        return parsed

    parsing_process.parse_safely = _kept_or_parsed

app.worker_main(["worker", *sys.argv[1:]])
