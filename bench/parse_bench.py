"""Parser throughput: parse_message over messages like B1's and over the shared corpora.

Run: .venv/bin/python bench/parse_bench.py [--messages 3000] [--rounds 5] [--baseline REV]
Prints messages/s (best of the rounds) for each set; the messages are generated once
(bench/sync_bench.py's generator, same seed) and held in memory, so only parsing is timed.
With --baseline, sync/parsing.py as of REV (git) is timed too, its rounds alternating
with today's, so that the load of a shared machine bends both alike.
"""

import argparse
import os
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailsetup.settings")
os.environ.setdefault("DEBUG", "true")


def _corpus() -> list[bytes]:
    corpora = ROOT.parent / "shared" / "corpora"
    skip = {".bmp", ".exr", ".gif", ".jpg", ".pbm", ".pgm", ".png", ".ppm", ".ras", ".sgi",
            ".tiff", ".webp", ".xbm", ".aifc", ".aiff", ".au", ".wav"}  # fmt: skip
    return [
        path.read_bytes()
        for path in sorted(corpora.rglob("*"))
        if path.is_file() and path.name not in {"LICENSE", "README.md"} and path.suffix not in skip
    ]


def _rates(parsers: dict, messages: list[bytes], rounds: int) -> dict[str, float]:
    best = dict.fromkeys(parsers, float("inf"))
    for _ in range(rounds):
        for name, parse in parsers.items():
            began = time.perf_counter()
            for raw in messages:
                parse(raw)
            best[name] = min(best[name], time.perf_counter() - began)
    return {name: len(messages) / seconds for name, seconds in best.items()}


def _baseline(revision: str):
    source = subprocess.run(
        ["git", "show", f"{revision}:sync/parsing.py"],  # noqa: S607
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("baseline_parsing")
    module.__package__ = "sync"
    exec(compile(source, f"{revision}:sync/parsing.py", "exec"), module.__dict__)  # noqa: S102
    return module.parse_message


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="a git revision whose parser is timed as well")
    options = parser.parse_args()
    import django

    django.setup()
    from bench.sync_bench import generate
    from sync.parsing import parse_message

    bench = [raw for folder in generate(options.messages).values() for raw in folder]
    corpus = _corpus()
    megabytes = sum(map(len, bench)) / 1e6
    parsers = {"today": parse_message}
    if options.baseline:
        parsers[options.baseline] = _baseline(options.baseline)
    for label, messages in (
        (f"bench-like ({len(bench)} messages, {megabytes:.1f} MB)", bench),
        (f"corpora ({len(corpus)} messages)", corpus),
    ):
        rates = _rates(parsers, messages, options.rounds)
        print(f"{label}: " + ", ".join(f"{n} {r:,.0f} messages/s" for n, r in rates.items()))


if __name__ == "__main__":
    main()
