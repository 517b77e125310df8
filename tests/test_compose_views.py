"""Writing an email: the From list, the checks on what was typed, replies and forwards."""

import email
import email.policy
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from sending.models import OutgoingEmail
from sync.models import Email
from tests.factories import EmailAccountFactory, MailboxGrantFactory, UserFactory

URL = reverse("sending:compose")


@pytest.fixture
def no_delivery(monkeypatch):
    from sending import tasks

    queued = []
    monkeypatch.setattr(tasks.send_email, "delay", queued.append)
    return queued


def _message(outgoing: OutgoingEmail):
    return email.message_from_bytes(bytes(outgoing.raw), policy=email.policy.default)


def test_it_offers_exactly_the_mailboxes_the_user_may_send_from(client, db):
    user = UserFactory()
    own = EmailAccountFactory(owner=user, address="me@example.test", display_name="Me")
    default = EmailAccountFactory(owner=user, address="main@example.test", is_default_sender=True)
    EmailAccountFactory(owner=user, address="quiet@example.test", send_enabled=False)
    shared = MailboxGrantFactory(
        user=user,
        can_send=True,
        account=EmailAccountFactory(address="sales@example.test", shared_access=True),
    ).account
    MailboxGrantFactory(
        user=user,
        can_access=True,
        account=EmailAccountFactory(address="read@example.test", shared_access=True),
    )
    client.force_login(user)

    page = client.get(URL).text

    assert f'<option value="{default.pk}" selected>main@example.test</option>' in page
    assert f'<option value="{own.pk}">Me &lt;me@example.test&gt;</option>' in page
    assert f'<option value="{shared.pk}">sales@example.test</option>' in page
    assert "quiet@example.test" not in page and "read@example.test" not in page


def test_it_refuses_a_mailbox_the_user_may_not_send_from(client, db, no_delivery):
    user = UserFactory()
    EmailAccountFactory(owner=user)
    other = EmailAccountFactory()
    client.force_login(user)
    page = client.post(URL, {"sender": other.pk, "to": "a@b.test"}).text
    assert "From: Choose one of the mailboxes you may send from." in page
    assert not OutgoingEmail.objects.exists() and no_delivery == []


def test_it_names_each_bad_address_and_keeps_what_was_typed(client, db, no_delivery):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    page = client.post(
        URL,
        {"sender": account.pk, "to": "ok@x.test, bob@, Ann <ann@>", "cc": "not an address",
         "subject": "Keep me", "body": "My long text"},
    ).text  # fmt: skip
    assert "To: “bob@”, “Ann &lt;ann@&gt;” are not valid email addresses." in page
    assert "Cc: “not an address” is not a valid email address." in page
    assert 'value="Keep me"' in page and "My long text" in page
    assert not OutgoingEmail.objects.exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("subject", "Hi\r\nBcc: victim@x.test"),
        ("subject", "Hi\u2028there"),  # a line separator: building the message failed
        ("subject", "Hi\x0bthere"),
        ("to", "Ann\r\nBcc: victim@x.test <ann@x.test>"),
        ("cc", "ann@x.test\nBcc: victim@x.test"),
    ],
)
def test_it_refuses_line_breaks_that_would_inject_a_header(client, db, no_delivery, field, value):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    data = {"sender": account.pk, "to": "ok@x.test", field: value}
    page = client.post(URL, data).text
    assert "cannot contain line breaks" in page
    assert not OutgoingEmail.objects.exists()


def test_it_refuses_attachments_over_the_limit_with_their_size(client, db, settings, no_delivery):
    settings.SEND_ATTACHMENTS_MAX_BYTES = 1024
    account = EmailAccountFactory()
    client.force_login(account.owner)
    files = [SimpleUploadedFile(f"f{n}.bin", b"x" * 700) for n in range(2)]
    page = client.post(URL, {"sender": account.pk, "to": "a@b.test", "attachments": files}).text
    assert "Attachments: Together the files are 1.4\xa0KB; at most 1.0\xa0KB can be sent." in page
    assert not OutgoingEmail.objects.exists()
    # Over by less than the rounding: "20.0 MB; at most 20.0 MB" said nothing.
    settings.SEND_ATTACHMENTS_MAX_BYTES = 20 * 1024 * 1024
    files = [SimpleUploadedFile("big.bin", b"x" * 21_000_000)]
    page = client.post(URL, {"sender": account.pk, "to": "a@b.test", "attachments": files}).text
    assert "Together the files are 21,000,000 bytes; at most 20,971,520 bytes can be" in page


def test_it_sends_a_new_email_with_attachments_and_shows_its_progress(
    client, db, no_delivery, django_capture_on_commit_callbacks
):
    account = EmailAccountFactory(display_name="Jane")
    client.force_login(account.owner)
    files = [SimpleUploadedFile("offer.pdf", b"%PDF offer", content_type="application/pdf")]
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            URL,
            {"sender": account.pk, "to": "Peter <peter@partner.test>", "bcc": "boss@x.test",
             "subject": "Offer", "body": "Hello", "attachments": files},
        )  # fmt: skip
    outgoing = OutgoingEmail.objects.get()
    assert response.status_code == 302 and response.url == outgoing.get_absolute_url()
    assert no_delivery == [outgoing.pk]
    message = _message(outgoing)
    assert message["From"] == f"Jane <{account.address}>" and message["Bcc"] is None
    assert outgoing.recipients == ["peter@partner.test", "boss@x.test"]
    assert [a.get_filename() for a in message.iter_attachments()] == ["offer.pdf"]
    page = client.get(outgoing.get_absolute_url()).text
    assert "Queued" in page and 'hx-trigger="every 1s"' in page
    client.force_login(UserFactory())
    assert client.get(outgoing.get_absolute_url()).status_code == 404


def test_it_threads_a_reply_all_in_the_message_language(client, db, no_delivery):
    account = EmailAccountFactory(address="me@example.test", message_language="de")
    original = Email.objects.create(
        account=account, message_key="orig@partner.test", message_id="orig@partner.test",
        subject="Angebot", from_name="Peter", from_address="peter@partner.test",
        to=[{"name": "", "address": "me@example.test"},
            {"name": "Ann", "address": "ann@partner.test"}],
        cc=[{"name": "", "address": "carl@partner.test"}],
        references="<first@partner.test>", text_body="Line one\nLine two",
    )  # fmt: skip
    client.force_login(account.owner)

    page = client.get(URL, {"reply": original.pk, "mode": "all"}).text
    assert 'value="AW: Angebot"' in page
    assert (
        "&quot;Peter&quot; &lt;peter@partner.test&gt;, &quot;Ann&quot; &lt;ann@partner.test&gt;"
        in page
    )
    assert 'value="carl@partner.test"' in page
    assert "me@example.test</option>" in page and "me@example.test," not in page

    client.post(
        URL,
        {"sender": account.pk, "to": "peter@partner.test", "subject": "AW: Angebot",
         "body": "Danke", "reply": original.pk, "mode": "all"},
    )  # fmt: skip
    message = _message(OutgoingEmail.objects.get())
    assert message["In-Reply-To"] == "<orig@partner.test>"
    assert message["References"] == "<first@partner.test> <orig@partner.test>"
    assert message["Content-Language"] == "de"
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    # Introduced in the message language too, not only the subject's prefix.
    assert 'Danke\n\n"Peter" <peter@partner.test> schrieb:\n> Line one\n> Line two' in text


def test_it_introduces_what_it_quotes_in_the_message_language(db, settings):
    from datetime import UTC, datetime

    from sending.selectors import quote

    settings.TIME_ZONE = "UTC"
    original = Email(
        message_key="q", subject="Angebot", from_name="Peter", from_address="p@partner.test",
        sent_at=datetime(2026, 12, 2, 16, 0, tzinfo=UTC), text_body="Line one",
        to=[{"name": "", "address": "me@example.test"}],
    )  # fmt: skip
    assert quote(original, forward=False, language="de")[0].startswith(
        'Am 2. Dezember 2026 16:00 schrieb "Peter" <p@partner.test>:\n> Line one'
    )
    assert quote(original, forward=False, language="en")[0].startswith(
        'On 2 Dec 2026, 16:00, "Peter" <p@partner.test> wrote:'
    )
    text, markup = quote(original, forward=True, language="fr")
    assert '---------- Message transféré ----------\nDe: "Peter"' in text
    assert "Objet: Angebot\nÀ: me@example.test" in text
    assert "<p><p>" not in markup
    # A language without its own lines: English, its date too (not "2026年12月2日").
    assert quote(original, forward=False, language="ja")[0].startswith(
        'On 2 Dec 2026, 16:00, "Peter" <p@partner.test> wrote:'
    )


def test_it_forwards_with_the_originals_attachments(client, db, settings, tmp_path, no_delivery):
    from django.core.files.base import ContentFile

    from sync.models import Attachment

    settings.MEDIA_ROOT = tmp_path
    account = EmailAccountFactory()
    original = Email.objects.create(
        account=account, message_key="o@x", message_id="o@x", subject="Report",
        from_address="a@x.test", text_body="See attached",
    )  # fmt: skip
    Attachment.objects.create(
        email=original, file=ContentFile(b"data", name="r.csv"), name="r.csv",
        content_type="text/csv", size=4,
    )  # fmt: skip
    client.force_login(account.owner)
    assert 'value="Fwd: Report"' in client.get(URL, {"reply": original.pk, "mode": "forward"}).text
    client.post(
        URL,
        {"sender": account.pk, "to": "b@x.test", "subject": "Fwd: Report", "reply": original.pk,
         "mode": "forward"},
    )  # fmt: skip
    message = _message(OutgoingEmail.objects.get())
    assert message["In-Reply-To"] is None
    assert "---------- Forwarded message ----------" in message.get_body(("plain",)).get_content()
    [attachment] = list(message.iter_attachments())
    assert (attachment.get_filename(), attachment.get_content()) == ("r.csv", "data")


def test_it_answers_404_for_an_email_the_user_may_not_see(client, db):
    hidden = Email.objects.create(account=EmailAccountFactory(), message_key="h", subject="Secret")
    user = UserFactory()
    EmailAccountFactory(owner=user)
    client.force_login(user)
    assert client.get(URL, {"reply": hidden.pk}).status_code == 404
    assert client.post(URL, {"reply": hidden.pk, "to": "a@b.test"}).status_code == 404


def test_it_says_so_when_there_is_no_mailbox_to_send_from(client, db):
    client.force_login(UserFactory())
    page = client.get(URL).text
    assert "You have no mailbox you may send from." in page
    # Someone with emails shared to read only: what only the owner can change is said so.
    assert "its owner grants you “Send emails”" in page


def test_it_lists_emails_not_sent_in_the_outbox_on_the_email_page(client, db):
    account = EmailAccountFactory()
    OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id="a@x", raw=b"", subject="Refused one",
        state=OutgoingEmail.State.FAILED, error="The server refused the recipient x@y.test",
    )  # fmt: skip
    OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id="b@x", raw=b"", subject="Went fine",
        state=OutgoingEmail.State.SENT,
    )  # fmt: skip
    client.force_login(account.owner)
    page = client.get(reverse("accounts:email")).text
    assert "Refused one" in page and "The server refused the recipient x@y.test" in page
    assert "Went fine" not in page
    client.force_login(UserFactory())
    assert "Refused one" not in client.get(reverse("accounts:email")).text


def test_it_keeps_the_email_queued_and_says_so_when_the_task_queue_is_down(
    client, db, django_capture_on_commit_callbacks
):
    from tests.servers.broker import publishing_to
    from tests.servers.dovecot import free_port

    account = EmailAccountFactory()
    client.force_login(account.owner)
    # A broker address nothing listens on: the task queue is down.
    with (
        publishing_to(f"redis://127.0.0.1:{free_port()}/0"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = client.post(
            URL, {"sender": account.pk, "to": "peter@partner.test", "subject": "Offer"}
        )

    outgoing = OutgoingEmail.objects.get()
    assert response.status_code == 302 and response.url == outgoing.get_absolute_url()
    assert (outgoing.state, outgoing.error_kind) == (OutgoingEmail.State.QUEUED, "queue")
    waiting = "Waiting for the app&#x27;s task queue, which could not be reached."
    page = client.get(outgoing.get_absolute_url()).text
    assert waiting in page and "will be sent automatically once the queue is back" in page
    outbox = client.get(reverse("accounts:email")).text
    assert "Offer" in outbox and waiting in outbox


@pytest.mark.parametrize("reply", ["abc", "1e3", "-1", "1.0", "٣", "99999999999999999999999"])
def test_it_answers_404_for_a_malformed_email_id(client, db, no_delivery, reply):
    # Issue 15, point 12: /compose/?reply=abc answered 500.
    account = EmailAccountFactory()
    client.force_login(account.owner)
    assert client.get(reverse("sending:compose"), {"reply": reply}).status_code == 404
    data = {"sender": account.pk, "to": "a@b.test", "subject": "s", "body": "b", "reply": reply}
    assert client.post(reverse("sending:compose"), data).status_code == 404
    assert not OutgoingEmail.objects.exists()


def _refused(outgoing: OutgoingEmail) -> None:
    OutgoingEmail.objects.filter(pk=outgoing.pk).update(
        state=OutgoingEmail.State.FAILED, error="refused"
    )


def _hidden(page: str) -> dict:
    """The compose form's hidden answer fields as the page holds them."""
    return dict(re.findall(r'<input type="hidden" name="(reply|mode)" value="([^"]*)"', page))


def test_it_forwards_again_what_a_not_sent_forward_forwarded(
    client, db, settings, tmp_path, no_delivery
):
    # "Edit as a new email" of a forward gave its text without the email it forwarded or
    # that email's files; the email lives in a mailbox shared with the author.
    from django.core.files.base import ContentFile

    from sync.models import Attachment

    settings.MEDIA_ROOT = tmp_path
    user = UserFactory()
    own = EmailAccountFactory(owner=user)
    grant = MailboxGrantFactory(
        user=user, can_access=True, account=EmailAccountFactory(shared_access=True)
    )
    original = Email.objects.create(
        account=grant.account, message_key="o@x", message_id="o@x", subject="Report",
        from_address="a@x.test", text_body="See attached",
    )  # fmt: skip
    Attachment.objects.create(
        email=original, file=ContentFile(b"data", name="r.csv"), name="r.csv",
        content_type="text/csv", size=4,
    )  # fmt: skip
    client.force_login(user)
    written = {"sender": own.pk, "to": "b@x.test", "subject": "Fwd: Report", "body": "For you"}
    mine = SimpleUploadedFile("notes.txt", b"mine", content_type="text/plain")
    client.post(URL, written | {"reply": original.pk, "mode": "forward", "attachments": [mine]})
    first = OutgoingEmail.objects.get()
    assert (first.original, first.mode) == (original, "forward")
    # Its page lists what it carries (it listed no file at all).
    page = client.get(first.get_absolute_url()).text
    assert "notes.txt (4\xa0bytes); r.csv (4\xa0bytes), forwarded</dd>" in page
    _refused(first)

    page = client.get(URL, {"again": first.pk}).text
    assert _hidden(page) == {"reply": str(original.pk), "mode": "forward"}
    assert "and the email it forwards with that email's files" in page
    assert "not carried over: choose them again (notes.txt)." in page
    assert "See attached" in page and "For you" in page
    client.post(URL, written | _hidden(page))
    again = OutgoingEmail.objects.exclude(pk=first.pk).get()
    [attachment] = list(_message(again).iter_attachments())
    assert (attachment.get_filename(), attachment.get_content()) == ("r.csv", "data")
    assert (
        "---------- Forwarded message ----------"
        in _message(again).get_body(("plain",)).get_content()
    )

    # The shared mailbox taken away: its text still, nothing of the email, and said so.
    grant.delete()
    page = client.get(URL, {"again": first.pk}).text
    assert _hidden(page).get("reply", "") == "" and "See attached" not in page
    assert "but not the email it forwarded: it was deleted, or you may no longer see it" in page
    assert "For you" in page
    # Deleted: the same.
    original.delete()
    page = client.get(URL, {"again": first.pk}).text
    assert "but not the email it forwarded: it was deleted" in page


def test_it_answers_again_an_email_of_another_mailbox_the_author_may_see(client, db, no_delivery):
    # Found by its Message-ID, the email answered was looked for only in the mailbox
    # the answer went from: an answer from one's own mailbox to an email of a shared
    # one came back unthreaded.
    user = UserFactory()
    own = EmailAccountFactory(owner=user)
    shared = MailboxGrantFactory(
        user=user, can_access=True, account=EmailAccountFactory(shared_access=True)
    ).account
    answered = Email.objects.create(
        account=shared, message_key="p@x", message_id="plans@partner.test", subject="Plans",
        from_address="peter@partner.test", text_body="Shall we meet?",
    )  # fmt: skip
    client.force_login(user)
    written = {"sender": own.pk, "to": "peter@partner.test", "subject": "Re: Plans", "body": "Yes"}
    client.post(URL, written | {"reply": answered.pk, "mode": "all"})
    first = OutgoingEmail.objects.get()
    _refused(first)
    page = client.get(URL, {"again": first.pk}).text
    assert _hidden(page) == {"reply": str(answered.pk), "mode": "all"}
    assert "Shall we meet?" in page and "and the email it answers" in page
    client.post(URL, written | _hidden(page))
    again = OutgoingEmail.objects.exclude(pk=first.pk).get()
    assert _message(again)["In-Reply-To"] == "<plans@partner.test>"
    assert (again.original, again.mode) == (answered, "all")


def test_it_says_what_an_email_written_before_it_was_kept_may_have_forwarded(client, db):
    # Written before the app kept how an email was written: a forward cannot be told
    # from a new email, and the page says what that means.
    account = EmailAccountFactory()
    old = OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id="old@x", raw=b"",
        subject="Fwd: Report", state=OutgoingEmail.State.FAILED, mode="",
    )  # fmt: skip
    new = OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id="new@x", raw=b"", subject="Hello",
        state=OutgoingEmail.State.FAILED,
    )  # fmt: skip
    client.force_login(account.owner)
    said = "if it forwarded an email, that email is not carried over"
    assert said in client.get(URL, {"again": old.pk}).text
    assert said not in client.get(URL, {"again": new.pk}).text


def test_it_never_sends_again_an_email_once_written_again_and_sent(client, db, no_delivery):
    # "Edit as a new email", sent: the first stayed "Not sent" with "Send again" in the
    # Outbox and the mailbox's health for a week, and both could arrive.
    from sending.selectors import outgoing_unsent
    from sync.selectors import sending_lines_for

    account = EmailAccountFactory()
    client.force_login(account.owner)
    client.post(URL, {"sender": account.pk, "to": "b@x.test", "subject": "Pilot", "body": "Hi"})
    first = OutgoingEmail.objects.get()
    _refused(first)
    assert list(outgoing_unsent(account.owner)) == [first]
    assert sending_lines_for([account])[account.pk].lines

    page = client.get(URL, {"again": first.pk}).text
    assert f'name="again" value="{first.pk}"' in page
    assert "the first one leaves your Outbox and is never sent again" in page
    client.post(URL, {"sender": account.pk, "to": "b@x.test", "subject": "Pilot", "body": "Hi",
                      "again": first.pk})  # fmt: skip
    second = OutgoingEmail.objects.exclude(pk=first.pk).get()
    first.refresh_from_db()
    assert first.written_again_as == second
    assert list(outgoing_unsent(account.owner)) == [second]  # queued, on its way
    OutgoingEmail.objects.filter(pk=second.pk).update(state=OutgoingEmail.State.SENT)
    assert list(outgoing_unsent(account.owner)) == []
    assert sending_lines_for([account])[account.pk].lines == []
    page = client.get(first.get_absolute_url()).text
    assert 'id="send-again"' not in page and "Written again as a new email" in page
    assert second.get_absolute_url() in page
    answer = client.post(reverse("sending:resend", args=[first.pk]), follow=True).text
    assert "It was written again as a new email" in answer
    first.refresh_from_db()
    assert first.state == OutgoingEmail.State.FAILED

    # Someone else's email cannot be marked through the form: not found.
    other = EmailAccountFactory()
    client.force_login(other.owner)
    answer = client.post(URL, {"sender": other.pk, "to": "b@x.test", "again": second.pk})
    assert answer.status_code == 404


def test_it_says_which_files_a_forward_carries(client, db, settings, tmp_path):
    from django.core.files.base import ContentFile

    from sync.models import Attachment

    settings.MEDIA_ROOT = tmp_path
    account = EmailAccountFactory()
    original = Email.objects.create(account=account, message_key="f@x", subject="Report")
    Attachment.objects.create(
        email=original, file=ContentFile(b"data", name="r.csv"), name="r.csv",
        content_type="text/csv", size=4,
    )  # fmt: skip
    Attachment.objects.create(email=original, name="huge.mov", content_type="video/mp4", size=9)
    client.force_login(account.owner)
    page = client.get(URL, {"reply": original.pk, "mode": "forward"}).text
    assert "Its files go along: r.csv (4\xa0bytes)." in page
    assert "so not forwarded: huge.mov." in page
    assert "go along" not in client.get(URL, {"reply": original.pk, "mode": "reply"}).text


def test_it_keeps_asking_about_a_sent_email_until_its_sent_copy_is_settled(client, db):
    # The page stopped asking once the email was sent: "The copy is not in the Sent
    # folder yet" stayed on it after the copy was stored.
    account = EmailAccountFactory()
    outgoing = OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id="s@x", raw=b"", subject="Hello",
        state=OutgoingEmail.State.SENT, sent_copy=OutgoingEmail.Copy.PENDING,
    )  # fmt: skip
    client.force_login(account.owner)
    poll = f'hx-get="{outgoing.get_absolute_url()}"'
    page = client.get(outgoing.get_absolute_url()).text
    assert poll in page and "The copy is not in the Sent folder yet" in page
    OutgoingEmail.objects.filter(pk=outgoing.pk).update(sent_copy=OutgoingEmail.Copy.STORED)
    status = client.get(outgoing.get_absolute_url(), HTTP_HX_REQUEST="true").text
    assert "A copy is in the Sent folder." in status and poll not in status


def test_it_refuses_to_send_a_written_again_email_once_the_first_went_again(
    client, db, no_delivery
):
    # "Send again" on the first (another tab, or before posting this form): both went.
    from sending.services import outgoing_resend

    account = EmailAccountFactory()
    client.force_login(account.owner)
    client.post(URL, {"sender": account.pk, "to": "b@x.test", "subject": "Pilot", "body": "Hi"})
    first = OutgoingEmail.objects.get()
    _refused(first)
    page = client.get(URL, {"again": first.pk}).text
    assert 'id="again-gone"' not in page
    outgoing_resend(outgoing=first)
    page = client.get(URL, {"again": first.pk}).text
    assert 'id="again-gone"' in page and "would deliver it twice" in page
    answer = client.post(URL, {"sender": account.pk, "to": "b@x.test", "subject": "Pilot",
                               "body": "Hi", "again": first.pk})  # fmt: skip
    assert answer.status_code == 200
    assert "went its own way meanwhile" in answer.text
    assert OutgoingEmail.objects.count() == 1
