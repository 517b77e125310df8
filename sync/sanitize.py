"""Email HTML made safe once, when the email is downloaded, and shown from what was stored.

`safe_html` runs nh3 against an allow-list and keeps remote image addresses as they are;
the email page then only holds those images back (`hold_back_remote_images`, a linear
rewrite of the stored result) unless the user asked for them. The page shows the result
in a sandboxed iframe with its own Content-Security-Policy, so even a sanitiser gap
could neither run script nor load anything remote unasked.

html5ever, under nh3, spends time in proportion to the depth of the open elements for
every tag: 1.3 MB of nested `<div>` took 37 s. A linear pre-check of the nesting depth
comes first; past `max_depth` the excess tags are dropped (their text stays) before
nh3 sees the document, so its cost is bounded by size times max_depth.
"""

import html as html_lib
import re
from collections.abc import Iterator
from urllib.parse import unquote

import nh3

TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "col", "colgroup",
    "dd", "del", "div", "dl", "dt", "em", "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "li", "ol", "p", "pre", "q", "s", "small", "span", "strike",
    "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
COMMON = {"style", "title", "dir", "lang", "align", "class"}
ATTRIBUTES = {
    "*": COMMON,
    "a": {"href", "name"},
    "img": {"src", "alt", "width", "height"},
    "font": {"color", "face", "size"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"width", "colspan", "rowspan", "valign", "bgcolor"},
    "th": {"width", "colspan", "rowspan", "valign", "bgcolor"},
    "col": {"width", "span"},
}
STYLE_PROPERTIES = {
    "color", "background", "background-color", "font-family", "font-size", "font-weight",
    "font-style", "text-align", "text-decoration", "margin", "margin-left", "margin-right",
    "margin-top", "margin-bottom", "padding", "padding-left", "padding-right", "padding-top",
    "padding-bottom", "border", "border-collapse", "width", "height", "line-height",
    "vertical-align",
}  # fmt: skip
# Removed with their content: a document's title would otherwise show as its first line.
CONTENT_REMOVED = {"script", "style", "title"}
# Elements nested deeper than this are flattened (a browser's own parser stops at 512).
MAX_DEPTH = 128

_REMOTE = ("http:", "https:", "//")
_IMAGE_DATA = ("data:image/png", "data:image/jpeg", "data:image/gif", "cid:")
# Browsers drop tabs and line breaks inside a URL ("ht\ttps:"); so do we, so that what
# is stored reads as what a browser would load.
_URL_NOISE = re.compile(r"[\x00-\x20]+")


# A declaration whose value could fetch something, or hide what it does: url() and the
# other image functions, IE's expression(), and escapes or comments (u\72l(, ur/**/l().
_CSS_FETCHING = (
    "url(", "src(", "image(", "image-set(", "cross-fade(", "element(", "expression(",
)  # fmt: skip
_CSS_SPACE = re.compile(r"\s+")


def _safe_style(value: str) -> str | None:
    """The style attribute without the declarations that could load anything, and only
    the allowed properties. An element's text colour goes with a background that could
    not stay (an image, or a property not allowed): newsletters write white on a blue
    image or gradient, which read white on white (one that stays keeps it)."""
    kept, background_lost = [], False
    for declaration in value.split(";"):
        squeezed = _CSS_SPACE.sub("", declaration).lower()
        if not squeezed:
            continue
        name = squeezed.split(":", 1)[0]
        unsafe = "\\" in squeezed or "/*" in squeezed or any(f in squeezed for f in _CSS_FETCHING)
        if unsafe or name not in STYLE_PROPERTIES:
            background_lost |= name.startswith("background")
            continue
        kept.append((name, declaration.strip()))
    if background_lost and not any(name.startswith("background") for name, _ in kept):
        kept = [(name, declaration) for name, declaration in kept if name != "color"]
    return "; ".join(declaration for _name, declaration in kept) or None


def _keep(tag: str, attribute: str, value: str) -> str | None:
    if tag == "img" and attribute == "src":
        value = _URL_NOISE.sub("", value)
        if value.lower().startswith(_REMOTE + _IMAGE_DATA):
            return value
        return None
    if attribute == "href" and _URL_NOISE.sub("", value).lower().startswith("data:"):
        # A data: link opens a document the email made up (a login page, a script):
        # dropped however it is spelt (" data:", "d\tata:", "DATA:").
        return None
    if attribute == "style":
        return _safe_style(value)
    return value


_CLEANER = nh3.Cleaner(
    tags=TAGS,
    clean_content_tags=CONTENT_REMOVED,
    attributes={tag: set(names) | COMMON for tag, names in ATTRIBUTES.items()},
    attribute_filter=_keep,
    url_schemes={"http", "https", "mailto", "cid", "data"},
    filter_style_properties=STYLE_PROPERTIES,
    link_rel="noopener noreferrer nofollow",
)

# A tag's name after its "<" (and "/" for a closing tag); the tag ends at the next ">",
# as an HTML tokenizer ends it (a "<" inside a tag is an attribute's character there).
_NAME = re.compile(r"(/?)([A-Za-z][A-Za-z0-9:-]*)")


def _tags(markup: str) -> Iterator[tuple[int, int, bool, str, bool]]:
    """(start, end, closing, lower-case name, self-closing) of each tag, in one pass:
    every character is looked at a bounded number of times, whatever the input (a
    regular expression over tags either missed `<div x=<>` or scanned to the end of the
    markup from every "<" of a markup that has no ">")."""
    position = 0
    while (start := markup.find("<", position)) != -1:
        name = _NAME.match(markup, start + 1)
        if name is None:
            position = start + 1
            continue
        end = markup.find(">", name.end())
        if end == -1:
            return  # a tag the markup never ends: the parser drops it
        yield start, end + 1, bool(name.group(1)), name.group(2).lower(), markup[end - 1] == "/"
        position = end + 1


# Elements that do not nest: void ones, and those a new sibling closes implicitly.
_FLAT = {
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img",
    "input", "keygen", "link", "meta", "param", "source", "track", "wbr",
    "p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "thead", "tbody",
    "tfoot", "colgroup", "rb", "rt", "rp", "rtc", "html", "head", "body",
}  # fmt: skip


def _too_deep(markup: str, max_depth: int) -> bool:
    # Below 16 KB even the worst nesting costs nh3 a few milliseconds.
    if len(markup) < 16_384 or markup.count("<") <= max_depth:
        return False
    return any(_nesting(markup, max_depth))


def _nesting(markup: str, max_depth: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each tag that would nest an element deeper than `max_depth`, or
    close one that did, as an HTML parser builds the tree: a closing tag closes the
    nearest open element of its name and those opened after it, and one that closes
    nothing is ignored; a non-void element written `<div/>` opens all the same. The
    search for a name looks at most `max_depth` elements down, so the cost stays linear."""
    open_names: list[str] = []  # the elements kept, innermost last
    dropped: dict[str, int] = {}  # elements past the depth, by name: their tags go
    for start, end, closing, name, _self_closing in _tags(markup):
        if name in _FLAT:
            continue
        if not closing:
            if len(open_names) >= max_depth:
                dropped[name] = dropped.get(name, 0) + 1
                yield start, end
            else:
                open_names.append(name)
            continue
        if dropped.get(name):
            dropped[name] -= 1
            yield start, end
            continue
        for index in range(len(open_names) - 1, -1, -1):
            if open_names[index] == name:
                del open_names[index:]
                break


def _flatten(markup: str, max_depth: int) -> str:
    """The markup without the tags that nest past `max_depth` (and the closing tags that
    pair with them); all text stays."""
    pieces: list[str] = []
    position = 0
    for start, end in _nesting(markup, max_depth):
        pieces.append(markup[position:start])
        position = end
    pieces.append(markup[position:])
    return "".join(pieces)


def safe_html(markup: str, *, max_depth: int = MAX_DEPTH) -> tuple[str, bool]:
    """HTML from a message made safe to store and show, and whether its nesting had to
    be flattened (past `max_depth`). Remote image addresses are kept as they are."""
    flattened = _too_deep(markup, max_depth)
    if flattened:
        markup = _flatten(markup, max_depth)
    return _CLEANER.clean(markup), flattened


# In nh3's output every "<" starts a tag (text has "&lt;") and every attribute value is
# in double quotes, which may hold ">".
_SAFE_TAG = re.compile(r'<(/?)([a-zA-Z][a-zA-Z0-9]*+)((?:[^>"]++|"[^"]*+")*+)>')
_REMOTE_SRC = re.compile(r'\ssrc="(?:https?:|//)[^"]*+"', re.IGNORECASE)
_IMG = re.compile(r'<img\b(?:[^>"]++|"[^"]*+")*+>')


def hold_back_remote_images(safe: str) -> tuple[str, int]:
    """Stored safe HTML without its remote images' addresses, and how many were held
    back."""
    if "<img" not in safe:
        return safe, 0
    held = 0

    def without_remote(found: re.Match) -> str:
        nonlocal held
        tag, count = _REMOTE_SRC.subn("", found.group(0))
        held += bool(count)
        return tag

    return _IMG.sub(without_remote, safe), held


_PRE = re.compile(r"(<pre\b[^>]*+>.*?</pre>)", re.DOTALL)
_SPACES = re.compile(r"\s+")
_BREAK = re.compile(
    r"<(?:br|/?(?:address|blockquote|center|div|dl|dt|dd|h[1-6]|ol|p|pre|table|tr|ul))\b[^>]*+>"
)
_RULE = re.compile(r"<hr\b[^>]*+>")
_ITEM = re.compile(r"<li\b[^>]*+>")
_CELL_END = re.compile(r"</t[dh]>")
_IMAGE = re.compile(r"<img\b[^>]*+>")
_ALT = re.compile(r'\salt="([^"]*+)"')
_OTHER = re.compile(r"<[^>]*+>")
_LINE_EDGES = re.compile(r"[^\S\n]*+\n[^\S\n]*+")
_BLANK_LINES = re.compile(r"\n{3,}")


def _alt(found: re.Match) -> str:
    alt = _ALT.search(found.group(0))
    return f"[{alt.group(1).strip()}]" if alt and alt.group(1).strip() else ""


def html_text(safe: str) -> str:
    """The readable text of safe HTML (for search, reply quoting and the text view of an
    email that came only as HTML). A few regular-expression passes: nh3's output has
    lowercase tags, and ">" escaped inside attribute values."""
    pieces = _PRE.split(safe)
    for index in range(0, len(pieces), 2):  # outside <pre>, white space is a space
        pieces[index] = _SPACES.sub(" ", pieces[index])
    text = _RULE.sub("\n\n", "".join(pieces))
    text = _ITEM.sub("\n• ", _BREAK.sub("\n", text))
    text = _CELL_END.sub("\t", text)
    if "<img" in text:
        text = _IMAGE.sub(_alt, text)
    text = html_lib.unescape(_OTHER.sub("", text))
    text = _BLANK_LINES.sub("\n\n", _LINE_EDGES.sub("\n", text))
    return text.strip()


def text_html(text: str) -> str:
    """Plain text as HTML that shows it as it was written."""
    return f'<div style="white-space: pre-wrap">{html_lib.escape(text, quote=False)}</div>'


_CID_SRC = re.compile(r'(\ssrc=")cid:([^"]*+)"', re.IGNORECASE)


def cid_key(reference: str) -> str:
    """A `cid:` URL's id (RFC 2392: the Content-ID, URL-encoded) as Content-IDs are
    compared: decoded, without angle brackets, in lower case (senders differ in case)."""
    return unquote(html_lib.unescape(reference)).strip().strip("<>").lower()


def cids_shown(safe: str) -> set[str]:
    """The Content-IDs that stored safe HTML shows as images (see `cid_key`)."""
    if "cid:" not in safe.lower():
        return set()
    shown = set()
    for found in _IMG.finditer(safe):
        reference = _CID_SRC.search(found.group(0))
        if reference:
            shown.add(cid_key(reference.group(2)))
    return shown


def inline_images(safe: str, urls: dict[str, str]) -> str:
    """Stored safe HTML with each `cid:` image pointing at the app's address for that
    part (`urls`: cid_key -> URL); one the email does not have loses its address (its
    alternative text shows)."""
    if "cid:" not in safe.lower():
        return safe

    def pointed(found: re.Match) -> str:
        def swap(reference: re.Match) -> str:
            url = urls.get(cid_key(reference.group(2)))
            return f'{reference.group(1)}{html_lib.escape(url)}"' if url else ""

        return _CID_SRC.sub(swap, found.group(0))

    return _IMG.sub(pointed, safe)


def email_document(html: str, *, allow_remote_images: bool, inline_source: str = "") -> str:
    """A whole document for the iframe's srcdoc, with a policy that forbids scripts and
    allows remote images only when the user asked for them. `inline_source`: the one
    address (a path prefix) the email's own inline images are served from."""
    images = " ".join(
        ["data:", *([inline_source] if inline_source else [])]
        + (["https:", "http:"] if allow_remote_images else [])
    )
    policy = f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; font-src data:"
    return (
        f'<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<base target="_blank"></head>'
        # A long word or address breaks instead of running past the frame's edge.
        f'<body style="font-family: system-ui, sans-serif; margin: 0; overflow-wrap: anywhere">'
        f"{html}</body></html>"
    )
