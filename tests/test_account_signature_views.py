"""The signature section of the settings page: editor posts, uploads and the preview."""

import base64

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import AccountChange, EmailAccount
from tests.factories import EmailAccountFactory, UserFactory
from tests.test_signatures import IMAGE, PNG

HTMX = {"HTTP_HX_REQUEST": "true"}


def _post(client, account, html, image=None, view="accounts:signature", **headers):
    data = {"signature-signature_html": html}
    if image is not None:
        data["signature-image"] = image
    return client.post(reverse(view, args=[account.pk]), data, **headers)


def test_it_saves_a_formatted_signature_with_an_image_sanitised(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    html = (
        f'<p><b>Jane</b> · Sales</p><img src="{IMAGE}" alt="logo" onerror="steal()">'
        "<script>x()</script>"
    )
    body = _post(client, account, html, **HTMX).content.decode()
    assert "Saved." in body
    account.refresh_from_db()
    assert account.signature_html == f'<p><b>Jane</b> · Sales</p><img src="{IMAGE}" alt="logo">'
    change = AccountChange.objects.get(field="signature_html")
    assert (change.old_value, change.new_value) == ("none", "Jane · Sales (+1 image)")


def test_it_refuses_a_too_large_image_and_keeps_what_was_typed(client, db):
    account = EmailAccountFactory(signature_html="<p>Old</p>")
    client.force_login(account.owner)
    big = base64.b64encode(base64.b64decode(PNG) + b"\0" * 1_100_000).decode()
    html = f'<p>New text</p><img src="data:image/png;base64,{big}">'
    for headers in (HTMX, {}):
        body = _post(client, account, html, **headers).content.decode()
        assert "Signature: Image 1 is 1.1 MB; each image may be at most 1 MB." in body
        assert "&lt;p&gt;New text&lt;/p&gt;" in body  # still in the field
    account.refresh_from_db()
    assert account.signature_html == "<p>Old</p>"


def test_it_adds_an_uploaded_image_without_javascript(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    upload = SimpleUploadedFile("logo.png", base64.b64decode(PNG), content_type="image/png")
    response = _post(client, account, "<p>Jane</p>", image=upload)
    assert response.status_code == 302
    account.refresh_from_db()
    assert account.signature_html == f'<p>Jane</p><p><img src="{IMAGE}" alt="logo.png"></p>'


def test_it_names_an_upload_that_is_no_image(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    upload = SimpleUploadedFile("x.png", b"<svg onload=alert(1)>", content_type="image/png")
    body = _post(client, account, "<p>Jane</p>", image=upload, **HTMX).content.decode()
    assert "Add an image: Use a PNG, JPEG, GIF or WebP image." in body
    account.refresh_from_db()
    assert account.signature_html == ""


def test_it_previews_what_would_be_saved(client, db):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    url = "accounts:signature_preview"
    body = _post(client, account, "<p><i>Jane</i><script>x()</script></p>", view=url).content
    body = body.decode()
    assert "<iframe sandbox" in body
    assert "&lt;i&gt;Jane&lt;/i&gt;" in body and "script" not in body
    assert "default-src &#x27;none&#x27;" in body
    refused = _post(client, account, '<img src="data:image/svg+xml;base64,PHN2Zz4=">', view=url)
    assert "Signature: Images of type image/svg+xml cannot be used" in refused.content.decode()
    account.refresh_from_db()
    assert account.signature_html == ""


def test_it_hides_another_users_signature(client, db):
    account = EmailAccountFactory(signature_html="<p>Mine</p>")
    client.force_login(UserFactory())
    assert _post(client, account, "<p>Theirs</p>").status_code == 404
    assert _post(client, account, "<p>x</p>", view="accounts:signature_preview").status_code == 404
    account.refresh_from_db()
    assert account.signature_html == "<p>Mine</p>"


def test_it_puts_back_a_refused_signature_sanitised_never_as_posted(client, db):
    """Issue 15, point 11: after an error the editor got the raw post back (self-XSS)."""
    from html import unescape

    account = EmailAccountFactory()
    client.force_login(account.owner)
    hostile = (
        '<p>Jane</p><img src="x" onerror="alert(1)"><script>alert(2)</script>'
        '<a href="javascript:alert(3)">me</a>'
    )
    for headers in (HTMX, {}):
        body = _post(client, account, hostile, **headers).content.decode()
        assert "An image could not be read" in body
        textarea = body.split('name="signature-signature_html"')[1].split("</textarea>")[0]
        shown = unescape(textarea)
        assert "<p>Jane</p>" in shown
        for gone in ("onerror", "<script", "alert(", "javascript:"):
            assert gone not in shown, shown
    account.refresh_from_db()
    assert account.signature_html == ""


def test_it_never_empties_a_signature_the_post_did_not_carry(client, db):
    account = EmailAccountFactory(signature_html="<p>Jane</p>")
    client.force_login(account.owner)
    url = reverse("accounts:signature", args=[account.pk])
    # A page that lost its editor posts no signature field at all.
    body = client.post(url, {"signature-shown": "x"}, **HTMX).content.decode()
    assert "Saved." in body
    account.refresh_from_db()
    assert account.signature_html == "<p>Jane</p>"
    assert not AccountChange.objects.exists()


def test_it_keeps_a_signature_saved_elsewhere_unless_this_one_was_changed(client, db):
    from accounts.services import Digest

    account = EmailAccountFactory(signature_html="<p>Jane</p>")
    client.force_login(account.owner)
    page = client.get(reverse("accounts:settings", args=[account.pk])).content.decode()
    shown = Digest.of("<p>Jane</p>").hex
    assert f'name="signature-shown" value="{shown}"' in page
    EmailAccount.objects.filter(pk=account.pk).update(signature_html="<p>Jane Doe</p>")
    url = reverse("accounts:signature", args=[account.pk])

    # Posted as it was shown: untouched, so what was saved elsewhere stays.
    client.post(url, {"signature-signature_html": "<p>Jane</p>", "signature-shown": shown}, **HTMX)
    account.refresh_from_db()
    assert account.signature_html == "<p>Jane Doe</p>"

    # Changed here too: the user is told, nothing is saved; saving again replaces it.
    data = {"signature-signature_html": "<p>Jane, Sales</p>", "signature-shown": shown}
    body = client.post(url, data, **HTMX).content.decode()
    assert "Someone changed this signature since the page was shown (it now reads “Jane Doe”)" in (
        body
    )
    assert "&lt;p&gt;Jane, Sales&lt;/p&gt;" in body
    account.refresh_from_db()
    assert account.signature_html == "<p>Jane Doe</p>"
    now = Digest.of("<p>Jane Doe</p>").hex
    assert f'name="signature-shown" value="{now}"' in body
    client.post(url, data | {"signature-shown": now}, **HTMX)
    account.refresh_from_db()
    assert account.signature_html == "<p>Jane, Sales</p>"
