"""Issue 17, point 5: an email's inline images (cid:) are shown from the app under the
email's access rules, and only real attachments are listed."""

import html
import re
import struct
import zlib
from email.message import EmailMessage

from django.urls import reverse

from sync.files import WrittenFiles
from sync.models import Attachment, Email
from sync.parsing import parse_message
from sync.sanitize import cids_shown, inline_images
from tests.factories import EmailAccountFactory, UserFactory


def png(width: int = 120, height: int = 40, rgb=(0x1F, 0x6F, 0xEB)) -> bytes:
    """A solid PNG of that size (visible in a screenshot, unlike a 1x1 pixel)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


LOGO = png()


def related_message(*, subject: str = "Newsletter with a logo", cid: str = "logo.1@partner.test"):
    """An HTML email with an inline image (multipart/related) and a real attachment."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = "Peter Partner <peter@partner.test>"
    message["To"] = "alice@example.test"
    message["Message-ID"] = f"<{subject.replace(' ', '.')}@partner.test>"
    message.set_content("Our news. [logo]")
    message.add_alternative(
        f'<p>Our news.</p><p><img src="cid:{cid}" alt="Partner logo"></p>', subtype="html"
    )
    message.get_payload()[1].add_related(
        LOGO, "image", "png", cid=f"<{cid}>", filename="logo.png", disposition="inline"
    )
    message.add_attachment(b"%PDF-1.4 offer", "application", "pdf", filename="offer.pdf")
    return message.as_bytes()


def _srcdoc(page: str) -> str:
    return html.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))


def _stored(account, raw: bytes) -> Email:
    """The message stored as the sync stores it: parsed, its parts written as files."""
    parsed = parse_message(raw)
    email = Email.objects.create(
        account=account, message_key=parsed.message_key, subject=parsed.subject,
        html_body=parsed.html_body, text_body=parsed.text_body,
    )  # fmt: skip
    files = WrittenFiles()
    for part in parsed.attachments:
        Attachment.objects.create(
            email=email, name=part.name, content_type=part.content_type, size=len(part.data),
            file=files.save("attachments", part.data, like=part.name), content_id=part.content_id,
        )  # fmt: skip
    return email


def test_it_reads_each_parts_content_id():
    parsed = parse_message(related_message(cid="Logo.1@Partner.test"))
    by_name = {part.name: part.content_id for part in parsed.attachments}
    assert by_name == {"logo.png": "Logo.1@Partner.test", "offer.pdf": ""}
    assert 'src="cid:Logo.1@Partner.test"' in parsed.html_body  # kept by the sanitiser
    assert cids_shown(parsed.html_body) == {"logo.1@partner.test"}


def test_it_points_cid_images_at_the_apps_addresses_and_drops_unknown_ones():
    safe = (
        '<img src="cid:a%40x" alt="A"><img alt="B" src="CID:missing@x">'
        '<img src="https://remote.test/p.png"><a href="cid:a@x">cid:a@x as text</a>'
    )
    out = inline_images(safe, {"a@x": "http://app.test/emails/1/inline/5/"})
    assert out == (
        '<img src="http://app.test/emails/1/inline/5/" alt="A"><img alt="B">'
        '<img src="https://remote.test/p.png"><a href="cid:a@x">cid:a@x as text</a>'
    )


def test_it_shows_inline_images_from_the_app_and_lists_only_real_attachments(
    client, db, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    account = EmailAccountFactory()
    email = _stored(account, related_message())
    logo = email.attachments.get(name="logo.png")
    client.force_login(account.owner)

    page = client.get(reverse("sync:email", args=[email.pk])).text
    base = f"http://testserver/emails/{email.pk}/inline/"
    document = _srcdoc(page)
    src = re.search(r'<img src="([^"]+)" alt="Partner logo">', document).group(1)
    assert src.startswith(f"{base}{logo.pk}/?k=")
    # The frame may load that one address of ours, and data: images; nothing else.
    assert f"img-src data: {base}; style-src" in document
    assert "offer.pdf" in page
    assert "logo.png" not in page

    # The frame's requests carry no cookie (it has no origin of its own): the key says
    # who asks, for this email only.
    client.logout()
    response = client.get(src)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert b"".join(response.streaming_content) == LOGO

    assert client.get(src.split("?")[0]).status_code == 404  # no key, no session
    client.force_login(account.owner)
    # With remote images allowed, the policy adds them beside the same address.
    shown = _srcdoc(client.get(reverse("sync:email", args=[email.pk]), {"images": "1"}).text)
    assert f"img-src data: {base} https: http:;" in shown


def test_it_serves_inline_parts_only_to_those_who_may_see_the_email(client, db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    email = _stored(EmailAccountFactory(), related_message())
    logo = email.attachments.get(name="logo.png")
    offer = email.attachments.get(name="offer.pdf")
    url = reverse("sync:inline", args=[email.pk, logo.pk])

    client.force_login(UserFactory())
    assert client.get(url).status_code == 404
    client.force_login(email.account.owner)
    assert client.get(url).status_code == 200
    # Not a part with a Content-ID, or not this email's: none of this address's business.
    assert client.get(reverse("sync:inline", args=[email.pk, offer.pk])).status_code == 404
    other = _stored(email.account, related_message(subject="Another one"))
    assert client.get(reverse("sync:inline", args=[other.pk, logo.pk])).status_code == 404


def test_it_serves_a_cid_part_that_is_no_picture_as_nothing_a_browser_runs(
    client, db, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    email = _stored(EmailAccountFactory(), related_message())
    sneaky = Attachment.objects.create(
        email=email, name="x.svg", content_type="image/svg+xml", size=30, content_id="x@x",
        file=WrittenFiles().save("attachments", b"<svg onload=alert(1)></svg>", like="x.svg"),
    )  # fmt: skip
    client.force_login(email.account.owner)
    response = client.get(reverse("sync:inline", args=[email.pk, sneaky.pk]))
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_it_lists_an_inline_part_the_html_does_not_show(client, db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    raw = related_message().replace(b'src="cid:logo.1@partner.test"', b'src="cid:other@x"')
    email = _stored(EmailAccountFactory(), raw)
    client.force_login(email.account.owner)
    page = client.get(reverse("sync:email", args=[email.pk])).text
    # Not shown in the text, so it is listed: nothing the sender sent goes unseen.
    assert "logo.png" in page and "offer.pdf" in page
    assert "/inline/" not in page


def test_it_checks_the_emails_access_rules_again_for_the_keys_user(
    client, db, settings, tmp_path, monkeypatch
):
    from django.core import signing

    from sharing.models import MailboxGrant
    from sync.views import INLINE_KEY_MAX_AGE, inline_key

    settings.MEDIA_ROOT = tmp_path
    account = EmailAccountFactory(shared_access=True)
    email = _stored(account, related_message())
    other = _stored(account, related_message(subject="Another one"))
    logo = email.attachments.get(name="logo.png")
    reader = UserFactory()
    grant = MailboxGrant.objects.create(account=account, user=reader, can_access=True)
    url = reverse("sync:inline", args=[email.pk, logo.pk])

    key = inline_key(reader, email)
    assert client.get(url, {"k": key}).status_code == 200
    # Made for another email, forged, or for a user who may not see it: nothing.
    assert client.get(url, {"k": inline_key(reader, other)}).status_code == 404
    assert client.get(url, {"k": key[:-2] + "xx"}).status_code == 404
    assert client.get(url, {"k": inline_key(UserFactory(), email)}).status_code == 404
    # A revoked grant counts at once, whatever keys were handed out before.
    grant.delete()
    assert client.get(url, {"k": key}).status_code == 404
    MailboxGrant.objects.create(account=account, user=reader, can_access=True)
    assert client.get(url, {"k": key}).status_code == 200
    # A key outlives its page by an hour at most.
    later = signing.time.time() + INLINE_KEY_MAX_AGE + 5
    monkeypatch.setattr(signing.time, "time", lambda: later)
    assert client.get(url, {"k": key}).status_code == 404


def test_it_keeps_listing_a_part_the_html_shows_that_is_no_picture(client, db, settings, tmp_path):
    """Apple Mail shows a PDF in the HTML by cid: it must stay findable in the list."""
    settings.MEDIA_ROOT = tmp_path
    email = _stored(EmailAccountFactory(), related_message())
    Attachment.objects.create(
        email=email, name="contract.pdf", content_type="application/pdf", size=8,
        content_id="contract@apple",
        file=WrittenFiles().save("attachments", b"%PDF-1.4", like="contract.pdf"),
    )  # fmt: skip
    email.html_body += '<img src="cid:contract@apple" alt="contract">'
    email.save()
    client.force_login(email.account.owner)
    page = client.get(reverse("sync:email", args=[email.pk])).text
    contract = email.attachments.get(name="contract.pdf")
    assert reverse("sync:attachment", args=[email.pk, contract.pk]) in page


def test_it_shows_the_pictures_of_an_email_stored_before_content_ids_were_kept(
    client, db, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    email = _stored(EmailAccountFactory(), related_message(cid="image001.png@01DA2B"))
    Attachment.objects.filter(email=email).update(content_id="")  # as stored before
    Attachment.objects.filter(email=email, name="logo.png").update(name="image001.png")
    client.force_login(email.account.owner)
    page = client.get(reverse("sync:email", args=[email.pk])).text
    picture = email.attachments.get(name="image001.png")
    assert f"/emails/{email.pk}/inline/{picture.pk}/?k=" in _srcdoc(page)
    listed = page.split("<h2>Attachments</h2>")[1]
    assert "offer.pdf" in listed and "image001.png" not in listed
