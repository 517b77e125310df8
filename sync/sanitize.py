"""Email HTML made safe to show: nh3 against an allow-list, remote images held back.

The result is shown in a sandboxed iframe with its own Content-Security-Policy, so
even a sanitiser gap could neither run script nor load anything remote unasked.
"""

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
    "color", "background-color", "font-family", "font-size", "font-weight", "font-style",
    "text-align", "text-decoration", "margin", "margin-left", "margin-right", "margin-top",
    "margin-bottom", "padding", "padding-left", "padding-right", "padding-top",
    "padding-bottom", "border", "border-collapse", "width", "height", "line-height",
    "vertical-align",
}  # fmt: skip


def clean_email_html(html: str, *, allow_remote_images: bool) -> tuple[str, int]:
    """Sanitised HTML and how many remote images were held back."""
    blocked = 0

    def keep(tag: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        if tag == "img" and attribute == "src":
            lowered = value.strip().lower()
            if lowered.startswith(("http:", "https:", "//")):
                if not allow_remote_images:
                    blocked += 1
                    return None
            elif not lowered.startswith(
                ("data:image/png", "data:image/jpeg", "data:image/gif", "cid:")
            ):
                return None
        return value

    cleaned = nh3.clean(
        html,
        tags=TAGS,
        attributes={tag: set(names) | COMMON for tag, names in ATTRIBUTES.items()},
        attribute_filter=keep,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        filter_style_properties=STYLE_PROPERTIES,
        link_rel="noopener noreferrer nofollow",
    )
    return cleaned, blocked


def email_document(html: str, *, allow_remote_images: bool) -> str:
    """A whole document for the iframe's srcdoc, with a policy that forbids scripts and
    allows remote images only when the user asked for them."""
    images = "data: cid: https: http:" if allow_remote_images else "data: cid:"
    policy = f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; font-src data:"
    return (
        f'<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">'
        '<base target="_blank"></head>'
        f'<body style="font-family: system-ui, sans-serif; margin: 0">{html}</body></html>'
    )
