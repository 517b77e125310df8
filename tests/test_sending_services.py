"""Sending an email through the suite's real SMTP server (aiosmtpd, STARTTLS, AUTH), and
its copy into Dovecot's Sent folder."""

import base64
import email
import email.policy
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from crm.models import Contact, ContactAddress
from sending.message import Draft
from sending.models import OutgoingEmail
from sending.services import (
    MAX_ATTEMPTS,
    UNCERTAIN_AFTER_CRASH,
    TransientSendError,
    claim_lease,
    outgoing_copy_store,
    outgoing_create,
    outgoing_send,
)
from sharing.models import MailboxGrant
from sync.models import Email, EmailLocation
from sync.services import mailbox_sync
from tests.factories import EmailAccountFactory, UserFactory
from tests.test_signatures import PNG


@pytest.fixture
def sender(synced_mailbox):
    account, mailbox = synced_mailbox
    account.display_name = "Sales Team"
    account.signature_html = (
        f'<p><b>Jane Doe</b>, Sales</p><p><img src="data:image/png;base64,{PNG}" alt="Logo"></p>'
    )
    account.save()
    return account, mailbox


def _draft(account, **fields) -> Draft:
    values = {
        "sender": account.address,
        "sender_name": account.display_name,
        "to": [{"name": "Peter Partner", "address": "peter@partner.test"}],
        "cc": [{"name": "", "address": "carol@partner.test"}],
        "bcc": [{"name": "", "address": "boss@example.test"}],
        "subject": "Offer for Grüße & co",
        "text": "Hello Peter,\n\nhere is our offer.",
        "signature_html": account.signature_html,
        "attachments": [("offer.pdf", "application/pdf", b"%PDF-1.4 offer")],
    }
    return Draft(**(values | fields))


def _queue(account, django_capture_on_commit_callbacks, **fields) -> OutgoingEmail:
    with django_capture_on_commit_callbacks() as queued:
        outgoing = outgoing_create(
            author=account.owner, account=account, draft=_draft(account, **fields)
        )
    assert len(queued) == 1  # the delivery task, queued on commit
    return outgoing


def _parsed(envelope) -> email.message.EmailMessage:
    return email.message_from_bytes(envelope.content, policy=email.policy.default)


def _parsed_raw(outgoing) -> email.message.EmailMessage:
    return email.message_from_bytes(bytes(outgoing.raw), policy=email.policy.default)


def test_it_sends_exactly_the_message_written(sender, outbox, django_capture_on_commit_callbacks):
    account, _mailbox = sender
    contact = Contact.objects.create(name="Peter Partner")
    ContactAddress.objects.create(contact=contact, address="peter@partner.test")
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    assert outgoing.state == OutgoingEmail.State.QUEUED

    with django_capture_on_commit_callbacks() as later:
        outgoing_send(outgoing_id=outgoing.pk)

    [envelope] = outbox.messages
    assert envelope.mail_from == account.address
    assert sorted(envelope.rcpt_tos) == [
        "boss@example.test",
        "carol@partner.test",
        "peter@partner.test",
    ]
    message = _parsed(envelope)
    assert message["From"] == f"Sales Team <{account.address}>"
    assert message["To"] == "Peter Partner <peter@partner.test>"
    assert message["Cc"] == "carol@partner.test"
    assert message["Bcc"] is None
    assert message["Subject"] == "Offer for Grüße & co"
    assert message["Message-ID"] == f"<{outgoing.message_id}>"
    assert message.get_content_type() == "multipart/mixed"
    text = message.get_body(("plain",)).get_content()
    text = text.replace("\r\n", "\n")
    assert "Hello Peter," in text and "\n-- \nJane Doe, Sales\n[Logo]" in text
    html_part = message.get_body(("html",))
    related = next(p for p in message.walk() if p.get_content_type() == "multipart/related")
    image = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html_part.get_content()
    assert "data:" not in html_part.get_content()
    assert image.get_content() == base64.b64decode(PNG)
    [attachment] = list(message.iter_attachments())
    assert (attachment.get_filename(), attachment.get_content()) == ("offer.pdf", b"%PDF-1.4 offer")

    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.SENT and outgoing.attempts == 1
    sent = outgoing.email
    assert (sent.account, sent.message_key, sent.subject) == (
        account,
        outgoing.message_id,
        "Offer for Grüße & co",
    )
    assert list(sent.contacts.all()) == [contact]
    assert len(later) == 1  # the Sent copy, queued on commit
    # A second delivery of the same task sends nothing more.
    outgoing_send(outgoing_id=outgoing.pk)
    assert len(outbox.messages) == 1


def test_it_stores_the_sent_copy_and_the_next_sync_makes_no_second_email(
    sender, outbox, django_capture_on_commit_callbacks
):
    account, mailbox = sender
    mailbox.create("Sent Items")
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    outgoing_send(outgoing_id=outgoing.pk)

    outgoing_copy_store(outgoing_id=outgoing.pk)
    outgoing_copy_store(outgoing_id=outgoing.pk)  # run twice: one copy

    outgoing.refresh_from_db()
    assert outgoing.sent_copy == OutgoingEmail.Copy.STORED
    with mailbox.client() as client:
        client.select_folder("Sent Items")
        uids = client.search(["HEADER", "Message-ID", outgoing.message_id])
        assert len(uids) == 1
        assert b"\\Seen" in client.get_flags(uids)[uids[0]]
    mailbox_sync(account_id=account.pk)
    assert Email.objects.filter(account=account).count() == 1
    location = EmailLocation.objects.get(email__account=account)
    assert (location.email_id, location.folder.path) == (outgoing.email_id, "Sent Items")


def test_it_leaves_the_copy_to_a_provider_that_files_sent_mail_itself(
    sender, outbox, django_capture_on_commit_callbacks
):
    account, _mailbox = sender
    account.provider.stores_sent_copy = True
    account.provider.save()
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks() as later:
        outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert outgoing.sent_copy == OutgoingEmail.Copy.BY_SERVER
    assert later == []


def test_it_fails_with_the_servers_reason_when_the_password_is_wrong(
    sender, outbox, django_capture_on_commit_callbacks
):
    account, _mailbox = sender
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    account.set_password("changed elsewhere")
    account.save()
    outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.FAILED
    assert "did not accept the login or password" in outgoing.error and "535" in outgoing.error
    assert outbox.messages == []


def test_it_names_a_refused_recipient(sender, outbox, django_capture_on_commit_callbacks):
    account, _mailbox = sender
    outbox.recipient_replies["carol@partner.test"] = "550 5.1.1 No such user here"
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.FAILED
    assert outgoing.error == (
        "The server refused the recipient carol@partner.test "
        "(the server said: 550 5.1.1 No such user here)"
    )
    assert outbox.messages == [] and outgoing.email is None


def test_it_tries_again_later_when_the_server_is_busy(
    sender, outbox, django_capture_on_commit_callbacks
):
    account, _mailbox = sender
    outbox.recipient_replies["peter@partner.test"] = "421 4.3.2 Service shutting down, try later"
    outgoing = _queue(account, django_capture_on_commit_callbacks)

    with pytest.raises(TransientSendError):
        outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.QUEUED and "421" in outgoing.error

    outbox.recipient_replies.clear()
    outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert (outgoing.state, outgoing.attempts, len(outbox.messages)) == (
        OutgoingEmail.State.SENT,
        2,
        1,
    )


def test_it_gives_up_on_the_last_try(sender, outbox, django_capture_on_commit_callbacks):
    account, _mailbox = sender
    outbox.recipient_replies["peter@partner.test"] = "451 4.7.1 Greylisted"
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    OutgoingEmail.objects.filter(pk=outgoing.pk).update(attempts=MAX_ATTEMPTS - 1)
    outgoing_send(outgoing_id=outgoing.pk)  # the last try: no TransientSendError
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.FAILED
    assert outgoing.error == (
        f"Not sent after {MAX_ATTEMPTS} tries. The last answer: The server refused the "
        "recipient peter@partner.test (the server said: 451 4.7.1 Greylisted)"
    )


def test_it_says_may_have_been_sent_when_the_connection_breaks_after_the_data(
    sender, outbox, django_capture_on_commit_callbacks
):
    account, _mailbox = sender
    outbox.cut_after_data.add("peter@partner.test")
    outgoing = _queue(account, django_capture_on_commit_callbacks)

    outgoing_send(outgoing_id=outgoing.pk)  # no TransientSendError: never retried

    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.UNCERTAIN
    assert "It may have been sent" in outgoing.error
    assert outgoing.handed_over_at is not None
    outbox.cut_after_data.clear()
    outgoing_send(outgoing_id=outgoing.pk)
    assert outbox.messages == []


def test_it_stops_when_the_send_grant_was_revoked_before_the_task_ran(
    sender, outbox, django_capture_on_commit_callbacks
):
    account, _mailbox = sender
    account.shared_access = True
    account.save()
    colleague = UserFactory()
    grant = MailboxGrant.objects.create(account=account, user=colleague, can_send=True)
    with django_capture_on_commit_callbacks():
        outgoing = outgoing_create(author=colleague, account=account, draft=_draft(account))
    grant.delete()

    outgoing_send(outgoing_id=outgoing.pk)

    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.FAILED
    assert (
        outgoing.error
        == f"You may no longer send from {account.address}, so this email was not sent."
    )
    assert outbox.messages == []


def test_it_finds_the_sent_folder_by_its_special_use_before_its_name(
    sender, outbox, django_capture_on_commit_callbacks
):
    account, mailbox = sender
    mailbox.create("Sent Items")
    mailbox.create("Gesendete Objekte")  # marked \\Sent by the server
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    outgoing_send(outgoing_id=outgoing.pk)
    outgoing_copy_store(outgoing_id=outgoing.pk)
    with mailbox.client() as client:
        assert client.select_folder("Gesendete Objekte")[b"EXISTS"] == 1
        assert client.select_folder("Sent Items")[b"EXISTS"] == 0


def test_it_makes_a_sent_folder_when_there_is_none(
    sender, outbox, django_capture_on_commit_callbacks
):
    account, mailbox = sender
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    outgoing_send(outgoing_id=outgoing.pk)
    outgoing_copy_store(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert (outgoing.sent_copy, outgoing.sent_copy_error) == (OutgoingEmail.Copy.STORED, "in Sent")
    with mailbox.client() as client:
        assert client.select_folder("Sent")[b"EXISTS"] == 1


def test_it_retries_a_busy_server_with_backoff_then_records_the_failure(
    transactional_db, sender, outbox, monkeypatch, caplog
):
    # Transactional: the task's signals close the connection of a test transaction.
    # Celery runs an eager task's retries at once, in turn, so the whole chain shows.
    from sending import tasks

    queued = []
    monkeypatch.setattr(tasks.send_email, "delay", queued.append)
    account, _mailbox = sender
    outbox.recipient_replies["peter@partner.test"] = "421 4.3.2 Try later"
    outgoing = outgoing_create(author=account.owner, account=account, draft=_draft(account))
    assert queued == [outgoing.pk]

    tasks.send_email.apply(args=[outgoing.pk])

    waits = [float(w) for w in re.findall(r"Retry in ([0-9.]+)s", caplog.text)]
    assert len(waits) == MAX_ATTEMPTS - 1
    # Exponential with jitter: each wait within [half, all] of 30 s x 2^n, capped at 30 min.
    for n, wait in enumerate(waits):
        ceiling = min(30 * 2**n, 1800)
        assert ceiling / 2 <= wait <= ceiling
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.FAILED
    assert outgoing.attempts == MAX_ATTEMPTS
    assert "421 4.3.2 Try later" in outgoing.error and outbox.messages == []


def test_it_sends_from_an_oauth_mailbox_over_xoauth2(
    oauth_mailbox, oauth_server, outbox, django_capture_on_commit_callbacks
):
    account, _mailbox = oauth_mailbox
    outgoing = _queue(account, django_capture_on_commit_callbacks, signature_html="")
    outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.SENT, outgoing.error
    assert len(outbox.messages) == 1
    outgoing_copy_store(outgoing_id=outgoing.pk)  # IMAP over XOAUTH2 too
    outgoing.refresh_from_db()
    assert outgoing.sent_copy == OutgoingEmail.Copy.STORED, outgoing.sent_copy_error


def test_it_does_not_send_once_the_grant_is_revoked(
    oauth_mailbox, oauth_server, outbox, django_capture_on_commit_callbacks
):
    account, _mailbox = oauth_mailbox
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    oauth_server.expire_access_tokens()
    oauth_server.state.refresh_tokens.clear()
    outgoing_send(outgoing_id=outgoing.pk)  # no TransientSendError: nothing to retry
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.FAILED
    assert "Reconnect" in outgoing.error and outbox.messages == []


HTMX = {"HTTP_HX_REQUEST": "true"}


def test_it_sends_a_not_sent_email_again_once_the_password_is_fixed(
    sender, outbox, client, django_capture_on_commit_callbacks
):
    account, _mailbox = sender
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    password = account.get_password()
    account.set_password("changed elsewhere")
    account.save()
    outgoing_send(outgoing_id=outgoing.pk)
    client.force_login(account.owner)
    page = client.get(outgoing.get_absolute_url()).text
    assert "Not sent" in page and "here is our offer." in page  # what was written shows
    assert 'id="send-again"' in page and f"?again={outgoing.pk}" in page

    account.set_password(password)
    account.save()
    written = _parsed_raw(outgoing)
    OutgoingEmail.objects.filter(pk=outgoing.pk).update(
        raw=bytes(outgoing.raw).replace(
            written["Date"].encode(), b"Mon, 02 Nov 2026 09:00:00 +0000", 1
        )
    )  # written a month ago
    resend = reverse("sending:resend", args=[outgoing.pk])
    with django_capture_on_commit_callbacks() as queued:
        answer = client.post(resend, **HTMX).text
    assert len(queued) == 1
    # Said outside the status the page polls (a poll would take it away at once).
    notice = answer.index('id="resent-state"')
    assert "Queued again" in answer[notice:] and answer.index('id="outgoing-status"') < notice
    assert answer.index("</div>", answer.index('id="outgoing-status"')) < notice
    outgoing.refresh_from_db()
    assert (outgoing.state, outgoing.attempts, outgoing.error) == ("queued", 0, "")
    outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.SENT
    [delivered] = outbox.messages
    sent = _parsed(delivered)
    assert sent["Message-ID"] == f"<{outgoing.message_id}>"
    # Dated when it went, every other header and part as written.
    assert sent["Date"].datetime > timezone.now() - timedelta(minutes=5)
    assert (sent["Subject"], sent.get_body(("plain",)).get_content()) == (
        written["Subject"], written.get_body(("plain",)).get_content(),
    )  # fmt: skip
    # Sent now: never again, whatever is posted.
    with django_capture_on_commit_callbacks() as queued:
        answer = client.post(resend, {"checked": "unsent"}, **HTMX).text
    assert queued == [] and "It is not “Not sent” any more" in answer
    # Without JavaScript: back to its page, with what happened said there.
    page = client.post(resend, follow=True).text
    assert "It is not “Not sent” any more" in page


def test_it_tells_of_an_email_sent_again_and_refused_again_however_old_it_is(
    sender, outbox, client, django_capture_on_commit_callbacks
):
    # The Outbox and the mailbox's health read a week of emails by when they were
    # written: one written a month ago, sent again today and refused again showed
    # nowhere, and the mailbox read "OK".
    from sending.selectors import outgoing_unsent
    from sync.models import MailboxSync
    from sync.selectors import mailbox_health

    account, _mailbox = sender
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    password = account.get_password()
    account.set_password("changed elsewhere")
    account.save()
    outgoing_send(outgoing_id=outgoing.pk)
    month_ago = timezone.now() - timedelta(days=30)
    OutgoingEmail.objects.filter(pk=outgoing.pk).update(created_at=month_ago, queued_at=month_ago)

    def health():
        state = MailboxSync.objects.filter(account=account).first()
        return mailbox_health(account, state, running=False)

    assert list(outgoing_unsent(account.owner)) == [] and health().sending == []
    client.force_login(account.owner)
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("sending:resend", args=[outgoing.pk]), **HTMX)
    outgoing_send(outgoing_id=outgoing.pk)  # the password is still the wrong one
    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.FAILED
    assert list(outgoing_unsent(account.owner)) == [outgoing]
    assert "Offer for Grüße &amp; co" in client.get(reverse("accounts:email")).text
    [line] = health().sending
    assert line.startswith("1 email not sent. The last:")
    # Sent at last: a failure no longer.
    account.set_password(password)
    account.save()
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("sending:resend", args=[outgoing.pk]), **HTMX)
    outgoing_send(outgoing_id=outgoing.pk)
    assert list(outgoing_unsent(account.owner)) == [] and health().sending == []


def _not_sent(sender, client, capture, state="failed", **fields) -> OutgoingEmail:
    """An email written, left "Not sent" (or `state`), its author signed in."""
    account, _mailbox = sender
    outgoing = _queue(account, capture, **fields)
    OutgoingEmail.objects.filter(pk=outgoing.pk).update(state=state, error="refused")
    client.force_login(account.owner)
    return outgoing


def test_it_sends_what_may_have_been_sent_again_only_once_checked(
    sender, client, django_capture_on_commit_callbacks
):
    outgoing = _not_sent(sender, client, django_capture_on_commit_callbacks, "uncertain")
    page = client.get(outgoing.get_absolute_url()).text
    assert "I checked: it was not sent" in page
    # This provider's server files no copy in Sent; the app files one only once the
    # server confirmed: the Sent folder cannot tell.
    assert "Only a recipient can tell whether it arrived" in page
    resend = reverse("sending:resend", args=[outgoing.pk])
    with django_capture_on_commit_callbacks() as queued:
        answer = client.post(resend, **HTMX).text
    outgoing.refresh_from_db()
    assert queued == [] and outgoing.state == "uncertain"
    assert "Tick “I checked: it was not sent”" in answer
    with django_capture_on_commit_callbacks() as queued:
        client.post(resend, {"checked": "unsent"}, **HTMX)
    outgoing.refresh_from_db()
    assert len(queued) == 1 and outgoing.state == "queued"
    # Someone else's: not found, and nothing changes.
    client.force_login(UserFactory())
    assert client.post(resend, {"checked": "unsent"}).status_code == 404


def test_it_writes_a_not_sent_email_again_as_a_new_one(
    sender, client, django_capture_on_commit_callbacks
):
    outgoing = _not_sent(sender, client, django_capture_on_commit_callbacks)
    page = client.get(reverse("sending:compose"), {"again": outgoing.pk}).text
    assert 'id="written-again"' in page
    assert 'value="&quot;Peter Partner&quot; &lt;peter@partner.test&gt;"' in page
    assert 'value="boss@example.test"' in page and "Offer for Grüße &amp; co" in page
    assert "here is our offer." in page
    # Someone else (with a mailbox to send from): not found.
    client.force_login(EmailAccountFactory().owner)
    assert client.get(reverse("sending:compose"), {"again": outgoing.pk}).status_code == 404


def test_it_does_not_send_again_while_a_delivery_the_sweep_gave_up_on_may_run(
    sender, client, django_capture_on_commit_callbacks
):
    account, _mailbox = sender
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    # The sweep's "may have been sent": its worker outlived the lease after the hand-over
    # and may still be at it (its answer would come later).
    crashed = OutgoingEmail.objects.filter(pk=outgoing.pk)
    crashed.update(state="uncertain", error=UNCERTAIN_AFTER_CRASH, claimed_at=timezone.now())
    client.force_login(account.owner)
    resend = reverse("sending:resend", args=[outgoing.pk])
    with django_capture_on_commit_callbacks() as queued:
        answer = client.post(resend, {"checked": "unsent"}, **HTMX).text
    assert queued == [] and "Its delivery may still be running" in answer
    assert crashed.get().state == "uncertain"
    crashed.update(claimed_at=timezone.now() - 2 * claim_lease() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks() as queued:
        client.post(resend, {"checked": "unsent"}, **HTMX)
    assert len(queued) == 1 and crashed.get().state == "queued"


def test_it_writes_an_answer_again_with_the_email_it_answers(
    sender, client, django_capture_on_commit_callbacks
):
    account, _mailbox = sender
    answered = Email.objects.create(
        account=account, message_key="k-a", message_id="plans@partner.test",
        subject="Plans", from_address="peter@partner.test", text_body="Shall we meet?",
    )  # fmt: skip
    outgoing = _not_sent(
        sender, client, django_capture_on_commit_callbacks, in_reply_to="plans@partner.test"
    )
    page = client.get(reverse("sending:compose"), {"again": outgoing.pk}).text
    assert f'name="reply" value="{answered.pk}"' in page and "Shall we meet?" in page
    assert "and the email it answers" in page
