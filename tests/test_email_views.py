import html
import re

from django.core.files.base import ContentFile
from django.urls import reverse

from sync.files import WrittenFiles
from sync.models import Attachment, Email
from sync.parsing import parse_message
from tests.factories import EmailAccountFactory, UserFactory

HOSTILE = (
    '<p onclick="steal()">Hello<script>alert(1)</script></p>'
    '<img src="https://tracker.example/pixel.gif"><a href="javascript:alert(1)">link</a>'
    "<form action=https://evil.example><input name=password></form>"
)


def _srcdoc(page: str) -> str:
    return html.unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))


def _email(account, **fields):
    return Email.objects.create(account=account, message_key=f"k{Email.objects.count()}", **fields)


def test_it_lists_the_users_emails_newest_first(client, db):
    account = EmailAccountFactory()
    from datetime import UTC, datetime

    _email(account, subject="older", sent_at=datetime(2026, 1, 1, tzinfo=UTC))
    _email(account, subject="newer", sent_at=datetime(2026, 2, 1, tzinfo=UTC))
    _email(EmailAccountFactory(), subject="someone else's")
    client.force_login(account.owner)
    page = client.get(reverse("accounts:email")).text
    assert page.index(">newer<") < page.index(">older<")
    assert "someone else&#x27;s" not in page and "someone else's" not in page


def test_it_shows_each_row_s_sender_subject_and_local_date_escaped(client, db, settings):
    from datetime import UTC, datetime

    settings.TIME_ZONE = "America/New_York"
    account = EmailAccountFactory()
    offer = _email(
        account, subject="<b>Offer</b> & more", from_name="Ann <ann@x.test>",
        from_address="ann@x.test", sent_at=datetime(2026, 11, 30, 12, tzinfo=UTC), seen=True,
    )  # fmt: skip
    blank = _email(account, subject="", from_address="bob@y.test", sent_at=None)
    client.force_login(account.owner)
    page = client.get(reverse("accounts:email")).text
    # 12:00 UTC is 7 a.m. in New York; subject and sender escaped, the email linked.
    assert (
        '<tr class=""><td data-label="From">Ann &lt;ann@x.test&gt;</td>\n<td class="subject">'
        f'<a href="{offer.get_absolute_url()}">&lt;b&gt;Offer&lt;/b&gt; &amp; more</a></td>\n'
        '<td data-label="Date">30 Nov 2026, 07:00</td></tr>'
    ) in page
    # The email's own page says the date alike (mailsetup/formats: no "11/30/2026").
    assert "30 Nov 2026, 07:00" in client.get(offer.get_absolute_url()).text
    # Unread, no name (its address), no subject, no date.
    assert (
        '<tr class="unread"><td data-label="From">bob@y.test</td>\n<td class="subject">'
        f'<a href="{blank.get_absolute_url()}">(no subject)</a></td>\n'
        '<td data-label="Date"></td></tr>'
    ) in page
    found = client.get(reverse("accounts:email"), {"q": "offer"}).text
    # Searched: the subject's words found marked, the rest escaped.
    assert f'<a href="{offer.get_absolute_url()}">&lt;b&gt;<mark>Offer</mark>' in found
    assert "(no subject)" not in found
    body = _email(account, subject="Hello", text_body="About the turbine contract.")
    found = client.get(reverse("accounts:email"), {"q": "turbine"}).text
    # Found in the body: a snippet below the subject, the word marked.
    # (PostgreSQL's headline ends at the word; SQLite's snippet goes on to the stop.)
    snippet = re.escape(
        f'<a href="{body.get_absolute_url()}">Hello</a>\n'
        '<div class="muted snippet">About the <mark>turbine</mark> contract'
    )
    assert re.search(snippet + r"[^<]*</div></td>", found)


def test_it_names_the_list_cells_by_their_column_for_a_phone(client, db):
    """At 390 px the list reflows into one block per row: From and Date say what they
    are (data-label, as the other lists); the subject, the row's link, is its title."""
    account = EmailAccountFactory()
    _email(account, subject="Offer", from_name="Ann Smith")
    client.force_login(account.owner)
    page = client.get(reverse("accounts:email")).text
    assert '<td data-label="From">Ann Smith</td>' in page
    assert '<td data-label="Date">' in page
    assert '<td class="subject"><a href=' in page


def test_it_shows_html_sanitised_in_a_sandbox_with_remote_images_held_back(client, db):
    account = EmailAccountFactory()
    parsed = parse_message(
        b"Subject: hostile\r\nContent-Type: text/html\r\n\r\n" + HOSTILE.encode()
    )
    email = _email(account, subject=parsed.subject, html_body=parsed.html_body)
    client.force_login(account.owner)
    page = client.get(reverse("sync:email", args=[email.pk])).text
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in page
    body = _srcdoc(page)
    for forbidden in ("<script", "onclick", "javascript:", "tracker.example", "<form", "<input"):
        assert forbidden not in body
    assert "1 remote image held back" in page
    assert "img-src data:;" in body  # nothing of ours: the email has no inline part

    shown = _srcdoc(client.get(reverse("sync:email", args=[email.pk]), {"images": "1"}).text)
    assert "https://tracker.example/pixel.gif" in shown
    assert "<script" not in shown


def test_it_hides_other_users_emails_and_attachments(client, db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    email = _email(EmailAccountFactory(), subject="private")
    attachment = Attachment.objects.create(
        email=email,
        file=ContentFile(b"<svg onload=alert(1)>", name="a.svg"),
        name="a.svg",
        content_type="image/svg+xml",
        size=21,
    )
    client.force_login(UserFactory())
    assert client.get(reverse("sync:email", args=[email.pk])).status_code == 404
    url = reverse("sync:attachment", args=[email.pk, attachment.pk])
    assert client.get(url).status_code == 404

    client.force_login(email.account.owner)
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    assert response["Content-Type"] == "application/octet-stream"


def test_it_searches_the_panel_by_subject_and_sender_and_pages_with_the_query(client, db):
    account = EmailAccountFactory()
    for n in range(55):
        _email(account, subject=f"Invoice {n}", from_address="billing@vendor.test")
    _email(account, subject="Lunch", from_name="Invoice Bot", from_address="bot@x.test")
    _email(account, subject="Holiday plans", from_address="friend@x.test")
    client.force_login(account.owner)

    page = client.get(reverse("accounts:email"), {"q": "invoice"}).text
    assert 'id="panel-count">56 emails matching “invoice”<' in page
    assert "Holiday plans" not in page
    assert "?page=2&amp;q=invoice" in page

    partial = client.get(
        reverse("accounts:email"), {"q": "FRIEND@"}, HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="panel-emails",
    ).text  # fmt: skip
    assert partial.lstrip().startswith('<div id="panel-emails">')
    assert "Holiday plans" in partial and "<h1>" not in partial
    assert (
        "No email matches “nothing-like-this”."
        in client.get(reverse("accounts:email"), {"q": "nothing-like-this"}).text
    )


def test_it_shows_the_problem_in_words_and_every_note(client, db):
    account = EmailAccountFactory()
    parsed = parse_message(
        b'Subject: cut\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\n'
        b"the text before the cut\r\n--b\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nthis is no base64, and the message ends"
    )
    assert len(parsed.notes) == 2
    email = _email(
        account, subject=parsed.subject, text_body=parsed.text_body, problem=parsed.problem,
        notes="\n".join(parsed.notes),
    )  # fmt: skip
    client.force_login(account.owner)
    page = client.get(reverse("sync:email", args=[email.pk])).text
    assert "This email could not be read completely" in page
    for note in parsed.notes:
        assert f"<li>{html.escape(note)}</li>" in page
    assert "the text before the cut" in page
    assert "Download the original" not in page  # none was kept


def test_it_offers_the_original_only_to_those_who_may_see_the_email(client, db, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    raw = "Subject: Résumé/Q3\r\nContent-Type: multipart/mixed\r\n\r\nno parts\r\n".encode()
    email = _email(
        EmailAccountFactory(), subject="Résumé/Q3", problem=Email.Problem.INCOMPLETE,
        notes="The email says it has several parts.", original=WrittenFiles().save_original(raw),
    )  # fmt: skip
    url = reverse("sync:original", args=[email.pk])

    client.force_login(UserFactory())
    assert client.get(url).status_code == 404

    client.force_login(email.account.owner)
    assert f'href="{url}"' in client.get(reverse("sync:email", args=[email.pk])).text
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == raw
    assert response["Content-Type"] == "message/rfc822"
    assert response["Content-Length"] == str(len(raw))
    assert response["Content-Disposition"] == (
        "attachment; filename*=utf-8''R%C3%A9sum%C3%A9-Q3.eml"
    )

    without = _email(email.account, subject="fine")
    assert client.get(reverse("sync:original", args=[without.pk])).status_code == 404
    assert "Download the original" not in client.get(reverse("sync:email", args=[without.pk])).text


def test_it_makes_the_html_of_emails_stored_earlier_safe_once(transactional_db):
    """Emails stored before HTML was sanitised at download: the migration cleans them,
    since the page now shows what is stored."""
    import importlib

    from django.apps import apps

    from sync.models import Email
    from tests.factories import EmailAccountFactory

    email = Email.objects.create(
        account=EmailAccountFactory(), message_key="old",
        html_body='<p onclick="steal()">Hi<script>alert(1)</script></p>',
    )  # fmt: skip
    migration = importlib.import_module("sync.migrations.0012_sanitise_stored_html")
    migration.sanitise(apps, None)
    email.refresh_from_db()
    assert "script" not in email.html_body and "onclick" not in email.html_body
    assert "Hi" in email.html_body


def test_it_makes_the_links_of_a_plain_text_email_links_and_escapes_the_rest(client, db):
    account = EmailAccountFactory()
    text = "See https://partner.test/offer?id=1&x=2 or write to bob@partner.test <b>now</b>"
    email = _email(account, subject="Plain", text_body=text)
    client.force_login(account.owner)
    page = client.get(email.get_absolute_url()).text
    body = re.search(r'<pre class="email-text">(.*?)</pre>', page, re.S).group(1)
    assert '<a href="https://partner.test/offer?id=1&amp;x=2" rel="nofollow">' in body
    assert '<a href="mailto:bob@partner.test">bob@partner.test</a>' in body
    assert "&lt;b&gt;now&lt;/b&gt;" in body and "<b>" not in body
    # A very long text is shown as it is (making links of 2 MB would hold the page).
    long = _email(account, subject="Long", text_body="https://partner.test " * 3000)
    page = client.get(long.get_absolute_url()).text
    assert 'href="https://partner.test"' not in page


def test_it_lets_the_keyboard_skip_to_the_page_s_content(client, db):
    client.force_login(UserFactory())
    page = client.get(reverse("accounts:email")).text
    assert page.index('<a class="skip" href="#main">') < page.index('<header class="top">')
    assert '<main id="main" tabindex="-1">' in page
    assert 'placeholder="Subject, sender or text"' in page
