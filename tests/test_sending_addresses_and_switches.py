"""Sending what the compose form accepts, and only through a provider that sends: an
international domain, an address with letters outside ASCII, a provider card with
"send emails" or "receive emails" off. Real aiosmtpd servers (tests/servers/smtp.py)."""

import email
import email.policy

import pytest
from django.core.exceptions import ValidationError

from sending.forms import people
from sending.message import Draft
from sending.models import OutgoingEmail
from sending.services import NO_SENT_FOLDER, outgoing_create, outgoing_send
from sharing.selectors import sendable_mailboxes
from sync.models import MailboxSync
from sync.selectors import mailbox_health
from sync.services import mailbox_sync, mailboxes_due
from tests.conftest import MAIL_USERS
from tests.factories import EmailAccountFactory

State, Copy = OutgoingEmail.State, OutgoingEmail.Copy
ALICE = "alice@example.test"


@pytest.fixture
def alice(test_provider):
    return EmailAccountFactory(
        provider=test_provider, address=ALICE, login=ALICE, password=MAIL_USERS[ALICE]
    )


def _send(account, to, django_capture_on_commit_callbacks) -> OutgoingEmail:
    draft = Draft(
        sender=account.address, sender_name=account.display_name, subject="Hallo",
        text="Grüße", to=to, cc=[], bcc=[],
    )  # fmt: skip
    with django_capture_on_commit_callbacks():
        outgoing = outgoing_create(author=account.owner, account=account, draft=draft)
    with django_capture_on_commit_callbacks():
        outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    return outgoing


def _utf8_message(envelope):
    # RFC 6532: the headers are UTF-8 (a bytes parser would read them as escapes).
    return email.message_from_string(
        envelope.original_content.decode("utf-8"), policy=email.policy.default
    )


def test_it_sends_to_an_international_domain_in_its_ascii_form(
    alice, outbox, django_capture_on_commit_callbacks
):
    # The form took "anna@bücher.test"; the To header held an encoded word in the
    # domain, and smtplib's RCPT raised UnicodeEncodeError: the task crashed and the
    # email stayed "sending", then read "the app stopped while sending" seven times.
    to = people("Anna Bücher <anna@bücher.test>, ß <s@straße.de>")
    assert to == [
        {"name": "Anna Bücher", "address": "anna@xn--bcher-kva.test"},
        {"name": "ß", "address": "s@xn--strae-oqa.de"},  # IDNA 2008: not strasse.de
    ]
    outgoing = _send(alice, to, django_capture_on_commit_callbacks)
    assert outgoing.state == State.SENT
    [envelope] = outbox.messages
    assert envelope.rcpt_tos == ["anna@xn--bcher-kva.test", "s@xn--strae-oqa.de"]
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert "anna@xn--bcher-kva.test" in str(message["To"])
    with pytest.raises(ValidationError, match="is not a valid email address"):
        people("anna@xn--zz-.test")


def test_it_says_why_an_address_outside_ascii_cannot_go_through_a_server(
    alice, outbox, django_capture_on_commit_callbacks
):
    # The form refuses such a name before the @ in a recipient, not in a mailbox's own
    # address (the wizard takes RFC 6531 addresses); either way, without SMTPUTF8 the
    # server cannot take it, which is said, and nothing crashes.
    outgoing = _send(alice, [{"name": "", "address": "jürgen@partner.test"}],
                     django_capture_on_commit_callbacks)  # fmt: skip
    assert (outgoing.state, outgoing.error_kind) == (State.FAILED, "non_ascii")
    assert "jürgen@partner.test" in outgoing.error
    assert outbox.messages == []


@pytest.fixture
def smtputf8_server(smtp_servers):
    """An SMTP server of the suite's users that offers SMTPUTF8 (RFC 6531)."""
    from tests.servers.smtp import SmtpServer

    server = SmtpServer(users=smtp_servers["starttls"].users, smtputf8=True)
    server.start()
    yield server
    server.stop()


def test_it_sends_an_address_outside_ascii_through_a_server_with_smtputf8(
    alice, django_capture_on_commit_callbacks, smtputf8_server
):
    server = smtputf8_server
    alice.provider.smtp_port = server.port
    alice.provider.save()
    outgoing = _send(alice, [{"name": "", "address": "jürgen@partner.test"}],
                     django_capture_on_commit_callbacks)  # fmt: skip
    assert outgoing.state == State.SENT, outgoing.error
    [envelope] = server.handler.messages
    assert envelope.rcpt_tos == ["jürgen@partner.test"]
    assert "SMTPUTF8" in envelope.mail_options
    message = _utf8_message(envelope)
    assert str(message["To"]) == "jürgen@partner.test"  # RFC 6532: UTF-8 in the header


def test_it_sends_from_a_mailbox_whose_address_is_outside_ascii(
    test_provider, django_capture_on_commit_callbacks, smtputf8_server
):
    # The wizard takes "jürgen@example.test" (RFC 6531); building its message raised
    # NonASCIILocalPartDefect: nothing could be sent from it.

    jurgen = EmailAccountFactory(
        provider=test_provider, address="jürgen@example.test", login=ALICE,
        password=MAIL_USERS[ALICE], display_name='Jürgen "J" Groß',
    )  # fmt: skip
    outgoing = _send(jurgen, [{"name": "Ann", "address": "ann@partner.test"}],
                     django_capture_on_commit_callbacks)  # fmt: skip
    assert (outgoing.state, outgoing.error_kind) == (State.FAILED, "non_ascii")
    server = smtputf8_server
    test_provider.smtp_port = server.port
    test_provider.save()
    outgoing = _send(jurgen, [{"name": "Ann", "address": "ann@partner.test"}],
                     django_capture_on_commit_callbacks)  # fmt: skip
    assert outgoing.state == State.SENT, outgoing.error
    [envelope] = server.handler.messages
    assert envelope.mail_from == "jürgen@example.test"
    message = _utf8_message(envelope)
    [sender] = message["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ('Jürgen "J" Groß', "jürgen@example.test")
    assert message["To"].addresses[0].addr_spec == "ann@partner.test"


def test_it_offers_no_mailbox_whose_provider_does_not_send(
    alice, outbox, django_capture_on_commit_callbacks
):
    # The provider card's "send emails" was read only by its own check: its mailboxes
    # stayed in the From list, and an email was tried for an hour against no server.
    outgoing = _send(alice, [{"name": "", "address": "p@partner.test"}],
                     django_capture_on_commit_callbacks)  # fmt: skip
    assert outgoing.state == State.SENT
    provider = alice.provider
    provider.send_enabled = False
    provider.smtp_host, provider.smtp_port = "", None
    provider.save()
    assert list(sendable_mailboxes(alice.owner)) == []
    outgoing = _send(alice, [{"name": "", "address": "p@partner.test"}],
                     django_capture_on_commit_callbacks)  # fmt: skip
    assert (outgoing.state, outgoing.error_kind) == (State.FAILED, "sending_off")
    assert f"Sending is turned off for the provider {provider.name}" in outgoing.error
    assert len(outbox.messages) == 1


def test_it_downloads_nothing_for_a_provider_that_only_sends_and_says_so(
    alice, outbox, django_capture_on_commit_callbacks
):
    # "receive emails" off: the dispatcher queued its mailboxes, each run failed
    # against no IMAP server ("failing: DNS"), and each sent email's copy was tried
    # in a Sent folder there is none of.
    provider = alice.provider
    provider.receive_enabled = False
    provider.imap_host, provider.imap_port = "", None
    provider.save()
    MailboxSync.objects.create(account=alice, download_requested_at=None)
    assert alice.pk not in mailboxes_due()
    assert mailbox_sync(account_id=alice.pk) is None  # "Download emails now": nothing
    health = mailbox_health(alice, MailboxSync.objects.get(account=alice), running=False)
    assert health.level == "off"
    assert health.headline == (
        f"The provider {provider.name} is set up for sending only: nothing is downloaded."
    )
    outgoing = _send(alice, [{"name": "", "address": "p@partner.test"}],
                     django_capture_on_commit_callbacks)  # fmt: skip
    assert outgoing.state == State.SENT
    assert (outgoing.sent_copy, outgoing.sent_copy_error) == (Copy.FAILED, NO_SENT_FOLDER)
