"""Email signatures: rich text from an editor or a paste, made safe and kept small.

The allow-list is narrower than the one for reading mail (sync/sanitize.py): no
script, no event handlers, no `javascript:` or other active URLs, no forms, frames,
SVG, MathML or <style>, and `data:` only for images of the types mail clients show.
Images are kept inline (data: URIs) and become `cid:` parts when a message is sent;
each is limited in size and their number is limited per signature.
"""

import base64
import binascii
import re
from dataclasses import dataclass

import nh3

MAX_IMAGE_BYTES = 1_000_000
MAX_IMAGES = 5
MAX_SIGNATURE_CHARS = 8_000_000  # the images' base64 and the markup around them
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}

TAGS = {
    "a", "b", "blockquote", "br", "div", "em", "font", "hr", "i", "img", "li", "ol", "p",
    "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr",
    "u", "ul", "h1", "h2", "h3", "h4",
}  # fmt: skip
ATTRIBUTES = {
    "*": {"style", "title", "dir", "align"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "font": {"color", "face", "size"},
    "table": {"width", "border", "cellpadding", "cellspacing"},
    "td": {"width", "colspan", "rowspan", "valign"},
    "th": {"width", "colspan", "rowspan", "valign"},
}
STYLE_PROPERTIES = {
    "color", "background-color", "font-family", "font-size", "font-weight", "font-style",
    "text-align", "text-decoration", "margin", "margin-left", "margin-right", "margin-top",
    "margin-bottom", "padding", "border", "width", "height", "line-height", "vertical-align",
}  # fmt: skip
# A style value is kept only if it is plain words, numbers, colours and units: no
# url(), expression(), escapes or at-rules (nh3 checks only the property names).
_PLAIN_VALUE = re.compile(r"[\w\s#.,%'\"+-]*\Z")
_COLOUR_FUNCTION = re.compile(r"(rgb|rgba|hsl|hsla)\([\d\s.,%]+\)\Z", re.I)
# Browsers drop tabs and line breaks anywhere in a URL and controls and spaces around
# it ("d\tata:", "\x01javascript:"): a URL is judged as a browser will read it.
_URL_NOISE = re.compile(r"[\x00-\x20]+")
# A link's scheme, where it has one (a relative link has none); only these are kept.
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]*):")
LINK_SCHEMES = {"http", "https", "mailto", "tel"}
_DATA_IMAGE = re.compile(r"data:(image/[a-z0-9.+-]+);base64,([A-Za-z0-9+/=\s]*)\Z", re.I)


def _safe_style(value: str) -> str:
    kept = []
    for declaration in value.split(";"):
        name, colon, setting = declaration.partition(":")
        name, setting = name.strip().lower(), setting.strip()
        if not colon or name not in STYLE_PROPERTIES:
            continue
        if _PLAIN_VALUE.match(setting) or _COLOUR_FUNCTION.match(setting):
            kept.append(f"{name}: {setting}")
    return "; ".join(kept)


def image_type(data: bytes) -> str | None:
    """The image type the bytes really are (not what a browser or a data: URI says)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class SignatureError(ValueError):
    """The signature cannot be saved as it is; the message says what to change."""


@dataclass
class CleanSignature:
    html: str
    images: int


def clean_signature(html: str, *, strict: bool = True) -> CleanSignature:
    """The signature as it will be saved and sent. Raises SignatureError for images that
    are too large, too many, or of a type mail clients do not show. Not `strict`: the
    same sanitising, but the problems are not raised (what is put back in the editor
    after an error, so the user can fix it there and nothing of theirs ever runs)."""
    if len(html) > MAX_SIGNATURE_CHARS:
        if not strict:
            return CleanSignature(html="", images=0)
        raise SignatureError("The signature is too large: keep it under 8 MB with its images.")
    problems: list[str] = []
    images = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal images
        if tag == "img" and attribute == "src":
            lowered = _URL_NOISE.sub("", value).lower()
            if lowered.startswith(("https:", "cid:")):
                return value
            found = _DATA_IMAGE.match(value.strip())
            if found is None:
                problems.append("An image could not be read; insert it again as a file.")
                return None
            kind = found.group(1).lower()
            if kind not in IMAGE_TYPES:
                problems.append(
                    f"Images of type {kind} cannot be used; use PNG, JPEG, GIF or WebP."
                )
                return None
            try:
                data = base64.b64decode(found.group(2), validate=False)
            except (binascii.Error, ValueError):
                problems.append("An image could not be read; insert it again as a file.")
                return None
            if image_type(data) != kind:
                problems.append(f"An image is not the {kind} it says it is; insert it again.")
                return None
            size = len(data)
            images += 1
            if size > MAX_IMAGE_BYTES:
                problems.append(
                    f"Image {images} is {size / 1_000_000:.1f} MB; each image may be at most "
                    f"{MAX_IMAGE_BYTES // 1_000_000} MB."
                )
            return value
        if attribute == "style":
            return _safe_style(value) or None
        if attribute == "href":
            # data: only ever for images; javascript:, vbscript: and the like never.
            scheme = _SCHEME.match(_URL_NOISE.sub("", value).lower())
            if scheme is not None and scheme.group(1) not in LINK_SCHEMES:
                return None
        return value

    cleaned = nh3.clean(
        html,
        tags=TAGS,
        clean_content_tags={"script", "style", "noscript", "template", "svg", "math"},
        attributes=ATTRIBUTES,
        attribute_filter=keep,
        url_schemes={"https", "http", "mailto", "tel", "cid", "data"},
        filter_style_properties=STYLE_PROPERTIES,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    if images > MAX_IMAGES:
        problems.append(f"The signature has {images} images; it may have at most {MAX_IMAGES}.")
    if problems and strict:
        raise SignatureError(" ".join(dict.fromkeys(problems)))
    return CleanSignature(html=cleaned.strip(), images=images)
