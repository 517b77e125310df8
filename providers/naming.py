"""Provider names people cannot mistake for a built-in provider's.

A user picks a provider by its name and then types the mailbox's password for it. A
card named "Gmail" (or "GMaiI", "Gmail Secure", "Outl00k.com") that a domain's own
autoconfig, an import or a manager created would be taken for the real one. Names are
compared by their skeleton: Unicode folded to ASCII look-alikes, digits read as the
letters they resemble, everything but letters dropped; a name mimics a built-in one
when its skeleton equals or is one edit away from a built-in's, or contains one of the
brands the built-in names carry (a short brand also when spelt across separators,
"G.M.X").

The look-alikes are Unicode's own (UTS #39 confusables, as the confusable-homoglyphs
package ships them): a hand-kept table misses scripts nobody thought of (Cherokee
"\u13c0" for G). The hand-kept tables below stay for what UTS #39 does not pair with a
plain letter (digits read as letters, small capitals).
"""

import re
import string
import unicodedata
from functools import cache

from .builtin import BUILTIN_PROVIDERS

# What digits, signs and Cyrillic or Greek letters pass for, to a reader of a provider
# list (written as escapes: the look-alikes are the point).
_LOOK_ALIKE = str.maketrans(
    {
        "0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b",
        "9": "g", "!": "l", "|": "l", "$": "s", "@": "a", "\u0456": "i", "\u043e": "o",
        "\u0430": "a", "\u0435": "e", "\u0441": "c", "\u0440": "p", "\u0445": "x",
        "\u0443": "y", "\u043a": "k", "\u043c": "m", "\u0442": "t", "\u0455": "s",
        "\u0458": "j", "\u0501": "d", "\u0261": "g", "\u03bf": "o", "\u03b1": "a",
        "\u03b9": "i", "\u03ba": "k", "\u03bd": "v", "\u03c1": "p", "\u03c4": "t",
        "\u03c5": "u", "\u03c7": "x", "\u04bb": "h", "\u04cf": "l", "\u051b": "q",
        "\u051d": "w", "\u0578": "n", "\u057d": "u", "\u0585": "o", "\u0570": "h",
        "\u0566": "q", "\u0251": "a", "\u0269": "i", "\u03f2": "c",
        "\u0432": "b", "\u043d": "h", "\u0433": "r", "\u0475": "v",
    }
)  # fmt: skip
# Latin letters that NFKC leaves alone but that read as a plain one: small capitals
# ("\u0262" for g), dotless i and j, script and hooked forms, by their Unicode names.
_LATIN_NAME = re.compile(
    r"LATIN (?:SMALL |CAPITAL )?LETTER (?:SMALL CAPITAL |DOTLESS |SCRIPT )?([A-Z])(?: WITH .*)?\Z"
)


def _plain_latin(ch: str) -> str:
    if "a" <= ch <= "z":
        return ch
    found = _LATIN_NAME.match(unicodedata.name(ch, ""))
    return found.group(1).lower() if found else ch


@cache
def _confusable_letters() -> dict[int, str]:
    """Every non-ASCII character UTS #39 finds confusable, directly or through others,
    with a plain letter or digit -> that letter (str.translate table). Its pairs form
    groups ("\uab7a" ~ "\u1d00"); a group holding no ASCII letter takes the letter a
    Latin member's name gives ("LATIN LETTER SMALL CAPITAL A")."""
    # Imported here: the package loads its whole table (about 6 MB of Python objects)
    # on import, and every process imports this module through the admin, while only a
    # process that names a provider needs it.
    from confusable_homoglyphs.confusables import confusables_data

    parent: dict[str, str] = {}

    def root(ch: str) -> str:
        while parent.setdefault(ch, ch) != ch:
            parent[ch] = parent[parent[ch]]
            ch = parent[ch]
        return ch

    for ch, entries in confusables_data.items():
        if len(ch) == 1:
            for entry in entries:
                if len(entry["c"]) == 1:
                    parent[root(ch)] = root(entry["c"])
    groups: dict[str, set[str]] = {}
    for ch in list(parent):
        groups.setdefault(root(ch), set()).add(ch)
    table = {}
    for group in groups.values():
        ascii_ = {ch.casefold() for ch in group if ch in string.ascii_letters + string.digits}
        # The only groups with two ASCII members are {1, I, l} and {0, O}: read as a letter
        # ("l" over "i": the skeleton reads i as l anyway).
        letters = sorted(ch for ch in ascii_ if ch.isalpha()) or sorted(ascii_)
        if not letters:
            letters = sorted({_plain_latin(ch) for ch in group} & set(string.ascii_lowercase))
        if letters:
            for ch in group:
                if not ch.isascii():
                    table[ord(ch)] = letters[-1]
    return table


# Letter pairs that read as one letter, and letters read as each other.
_PAIRS = (("rn", "m"), ("vv", "w"), ("cl", "d"), ("i", "l"))


def skeleton(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name).translate(_confusable_letters())
    folded = folded.casefold().translate(_confusable_letters()).translate(_LOOK_ALIKE)
    folded = "".join(_plain_latin(ch) for ch in folded)
    decomposed = unicodedata.normalize("NFKD", folded)
    letters = "".join(ch for ch in decomposed if "a" <= ch <= "z")
    for pair, one in _PAIRS:
        letters = letters.replace(pair, one)
    return letters


def _words(name: str) -> list[str]:
    folded = unicodedata.normalize("NFKC", name).casefold()
    cleaned = "".join(ch if ch.isalnum() else " " for ch in folded)
    return [skeleton(word) for word in cleaned.split() if skeleton(word)]


# Words of the built-in names that say nothing about who the provider is.
_GENERIC = {"mail", "email", "for", "organisations", "com", "net", "ru", "workspace"}
# Other names the built-in providers go by.
_ALIASES = {
    "googlemail": "Gmail / Google Workspace",
    "hotmail": "Outlook.com",
    "office365": "Microsoft 365",
}


@cache
def _generic_shapes() -> frozenset[str]:
    # Computed when first asked, not on import: skeletons load Unicode's confusables.
    return frozenset(skeleton(word) for word in _GENERIC)


@cache
def _builtins() -> tuple[dict[str, str], dict[str, str]]:
    """Skeletons of the built-in names, and their brand words: skeleton -> name."""
    names, brands = {}, {}
    generic = _generic_shapes()
    for spec in BUILTIN_PROVIDERS:
        name = spec["name"]
        names[skeleton(name)] = name
        for word in _words(name):
            if word not in generic:
                brands.setdefault(word, name)
    for alias, name in _ALIASES.items():
        brands.setdefault(skeleton(alias), name)
    return names, brands


def _one_edit_apart(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1 or a == b:
        return a == b
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) == 1
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1 :] == short for i in range(len(long)))


def mimicked_builtin(name: str) -> str | None:
    """The built-in provider's name that `name` collides with or closely mimics, else
    None. A built-in name itself counts too: the caller exempts the card it belongs to."""
    names, brands = _builtins()
    shape = skeleton(name)
    if not shape:
        return None
    for builtin_shape, builtin in names.items():
        if shape == builtin_shape or (
            len(builtin_shape) >= 5 and _one_edit_apart(shape, builtin_shape)
        ):
            return builtin
    all_words = _words(name)
    words = [word for word in all_words if word not in _generic_shapes()]
    # Words run together across separators ("G.M.X", "GM X"): every run of neighbours.
    runs = {
        "".join(all_words[start:end])
        for start in range(len(all_words))
        for end in range(start + 2, len(all_words) + 1)
    }
    for brand, builtin in brands.items():
        # Short brands ("aol", "gmx") only as a word of their own, or spelt across
        # separators; longer ones anywhere.
        if brand in words or brand in runs or (len(brand) >= 5 and brand in shape):
            return builtin
        if len(brand) >= 5 and any(_one_edit_apart(word, brand) for word in words):
            return builtin
    return None


def impersonation_error(name: str) -> str | None:
    builtin = mimicked_builtin(name)
    if builtin is None:
        return None
    return (
        f"“{name}” could be taken for the built-in provider “{builtin}”: choose a name "
        "nobody can mistake for it (for example the company's or the domain's name)."
    )
