"""SQLite (the embedded default) made to compare text as PostgreSQL does.

SQLite's LIKE ignores case for ASCII letters only: on SQLite, Django's `icontains` (and
`contains`, `iexact`, which it also writes as LIKE) missed "MÜLLER" for "müller", "Åsa"
for "åsa", any Greek or Cyrillic word typed in another case: in the Email page's search,
the timelines', the contacts and companies lists', the sharing form's people. SQLite
lets an application replace LIKE with a function of its own (`like(pattern, value
[, escape])`), which every such lookup then uses, so no caller changes: this one upper-
cases both sides with Python's Unicode rules, as PostgreSQL's `UPPER(...) LIKE
UPPER(...)` reads every alphabet. It costs a Python call a row (README, "Search").

Also `mailsetup_people(json)`: the names and addresses of a JSON list of recipients as
one text, for searching them: the column holds JSON with non-ASCII letters escaped
("J\\u00fcrgen") and its keys ("name", "address") as text.
"""

import json
import re
from functools import lru_cache


def _fold(text: str) -> str:
    # upper(), as PostgreSQL's UPPER(...) LIKE UPPER(...) reads case: lower() misses
    # "ΟΔΥΣ" in "ΟΔΥΣΣΕΑΣ" (a final sigma) and a Turkish word with a dotless i typed in
    # lower case in the same word in capitals.
    return text.upper()


@lru_cache(maxsize=256)
def _pattern(pattern: str, escape: str | None) -> tuple[str | None, re.Pattern | None]:
    """(a folded text to find, or an expression to match whole): "%text%" with no other
    wildcard, the usual `icontains`, is a plain substring. Between two %, a part is
    matched at its first place and never tried again (an atomic group, as fnmatch does):
    a pattern of many % cannot make the match take exponential time."""
    if escape is not None and len(escape) != 1:
        raise ValueError("ESCAPE expression must be a single character")
    segments: list[list[str]] = [[]]  # between the %, each a list of regex pieces
    texts: list[list[str]] = [[]]  # the same, as the folded characters themselves
    literal = True
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if escape and char == escape:
            position += 1
            if position == len(pattern):  # SQL: an escape with nothing after matches nothing
                return None, None
            char = pattern[position]
        elif char == "%":
            segments.append([])
            texts.append([])
            position += 1
            continue
        elif char == "_":
            segments[-1].append(".")
            literal = False
            position += 1
            continue
        segments[-1].append(re.escape(_fold(char)))
        texts[-1].append(_fold(char))
        position += 1
    if literal and len(segments) == 3 and not segments[0] and not segments[2]:
        return "".join(texts[1]), None
    parts = ["".join(segment) for segment in segments]
    if len(parts) == 1:
        return None, re.compile(parts[0], re.DOTALL)
    middle = "".join(f"(?>.*?{part})" for part in parts[1:-1])
    return None, re.compile(f"{parts[0]}{middle}.*{parts[-1]}", re.DOTALL)


def _text(value) -> str:
    # SQLite hands over what the column holds: text, a number, or bytes.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def like(pattern, value, escape=None) -> int | None:
    """SQL's `value LIKE pattern [ESCAPE escape]`, in any case of any alphabet."""
    if pattern is None or value is None:
        return None
    value = value if isinstance(value, str) else _text(value)
    text, expression = _pattern(pattern if isinstance(pattern, str) else _text(pattern), escape)
    if text is not None:
        return int(text in _fold(value))
    if expression is None:
        return 0
    return int(expression.fullmatch(_fold(value)) is not None)


@lru_cache(maxsize=4096)
def people(value) -> str:
    """'name address name address …' of a JSON list of {"name", "address"}. Remembered:
    a mailbox's emails go to the same few people over and over."""
    if not value:
        return ""
    try:
        listed = json.loads(value)
    except (TypeError, ValueError):
        return str(value)
    if not isinstance(listed, list):
        return ""
    return " ".join(
        f"{person.get('name') or ''} {person.get('address') or ''}"
        for person in listed
        if isinstance(person, dict)
    )


def on_connect(sender, connection, **kwargs) -> None:
    """`connection_created`: the functions above, on every new SQLite connection."""
    if connection.vendor != "sqlite":
        return
    raw = connection.connection
    raw.create_function("like", 2, like, deterministic=True)
    raw.create_function("like", 3, like, deterministic=True)
    raw.create_function("mailsetup_people", 1, people, deterministic=True)
