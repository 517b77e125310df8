"""A stand-in for the parser process (`python -m sync.parsing_process`) that hangs on
any message with an `X-Test-Hang: yes` header, as the real parser would on a message
that took it minutes, takes the seconds an `X-Test-Slow: <seconds>` header says, and dies
on one with `X-Test-Crash: yes`, as a parser that ran out
of memory would. tests/test_parsing_process.py starts it through
`parsing_process._process.module`; everything else is the real process's code."""

import os
import re
import time

from sync import parsing_process

HANG = b"X-Test-Hang: yes"
CRASH = b"X-Test-Crash: yes"
SLOW = re.compile(rb"X-Test-Slow: ([0-9.]+)")
_real = parsing_process.parse_safely


def _hanging(raw, limits=None):
    if HANG in raw:
        time.sleep(3600)
    if CRASH in raw:
        os._exit(3)
    if slow := SLOW.search(raw):
        time.sleep(float(slow.group(1)))
    return _real(raw, limits)


if __name__ == "__main__":
    parsing_process.parse_safely = _hanging  # serve() parses through the module's name
    parsing_process.serve()
