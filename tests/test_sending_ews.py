"""Sending from an Exchange mailbox: CreateItem with SendAndSaveCopy against the suite's
EWS protocol fake (tests/servers/ews.py, which answers EWS SOAP like Exchange 2016; it
is not Exchange). The server keeps the Sent copy; the app does not append one."""

import email
import email.policy

from sending.message import Draft
from sending.models import OutgoingEmail
from sending.services import TransientSendError, outgoing_create, outgoing_send
from sync.models import Email, SyncRun
from sync.services import mailbox_sync


def _queue(account, django_capture_on_commit_callbacks, **fields) -> OutgoingEmail:
    draft = Draft(
        **{
            "sender": account.address,
            "sender_name": "Erin Exchange",
            "to": [{"name": "Peter Partner", "address": "peter@partner.test"}],
            "cc": [],
            "bcc": [{"name": "", "address": "boss@corp.test"}],
            "subject": "Quote from Exchange",
            "text": "Hello Peter,\n\nthe quote.",
            "signature_html": "",
            "attachments": [("quote.pdf", "application/pdf", b"%PDF-1.4 quote")],
        }
        | fields
    )
    with django_capture_on_commit_callbacks():
        return outgoing_create(author=account.owner, account=account, draft=draft)


def test_it_sends_through_exchange_which_keeps_the_sent_copy(
    exchange_mailbox, ews_server, django_capture_on_commit_callbacks
):
    account, address = exchange_mailbox
    outgoing = _queue(account, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks() as later:
        outgoing_send(outgoing_id=outgoing.pk)

    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.SENT, outgoing.error
    assert outgoing.sent_copy == OutgoingEmail.Copy.BY_SERVER and later == []
    [sent] = [m for m in ews_server.sent if m.user == address]
    assert sent.disposition == "SendAndSaveCopy"
    assert sent.bcc == ["boss@corp.test"] and "peter@partner.test" in sent.to
    message = email.message_from_bytes(sent.mime, policy=email.policy.default)
    assert message["Message-ID"] == f"<{outgoing.message_id}>" and "Bcc" not in message
    assert [p.get_filename() for p in message.iter_attachments()] == ["quote.pdf"]
    # The server's copy in Sent Items joins the email already on the timelines.
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    stored = Email.objects.get(account=account, message_key=outgoing.message_id)
    assert stored.locations.get().folder.path == "Sent Items"


def test_it_names_what_exchange_refused(
    exchange_mailbox, ews_server, django_capture_on_commit_callbacks
):
    account, _address = exchange_mailbox
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    ews_server.fail_next("CreateItem", "ErrorInvalidRecipients")

    outgoing_send(outgoing_id=outgoing.pk)

    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.FAILED
    assert "ErrorInvalidRecipients" in outgoing.error


def test_it_queues_again_when_exchange_is_busy_and_never_guesses_after_a_cut(
    exchange_mailbox, ews_server, django_capture_on_commit_callbacks
):
    account, address = exchange_mailbox
    busy = _queue(account, django_capture_on_commit_callbacks)
    ews_server.fail_next("CreateItem", "ErrorServerBusy", back_off_ms=10)
    try:
        outgoing_send(outgoing_id=busy.pk)
    except TransientSendError:
        pass
    else:
        raise AssertionError("a busy server must lead to another try")
    busy.refresh_from_db()
    assert busy.state == OutgoingEmail.State.QUEUED
    with django_capture_on_commit_callbacks():
        outgoing_send(outgoing_id=busy.pk)
    busy.refresh_from_db()
    assert busy.state == OutgoingEmail.State.SENT

    cut = _queue(account, django_capture_on_commit_callbacks, subject="Cut")
    ews_server.drop_next("CreateItem")
    outgoing_send(outgoing_id=cut.pk)
    cut.refresh_from_db()
    # The request may have reached Exchange: "May have been sent", never sent again.
    assert cut.state == OutgoingEmail.State.UNCERTAIN
    assert [m.subject for m in ews_server.sent if m.user == address] == ["Quote from Exchange"]


def test_it_never_resends_when_the_answer_is_lost_after_exchange_took_the_message(
    exchange_mailbox, ews_server, django_capture_on_commit_callbacks
):
    account, address = exchange_mailbox
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    # Exchange sends it; a proxy on the way back answers 503, which exchangelib reports
    # as ErrorServerBusy.
    ews_server.answer_next("CreateItem", 503)

    outgoing_send(outgoing_id=outgoing.pk)

    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.UNCERTAIN
    assert len([m for m in ews_server.sent if m.user == address]) == 1


def test_it_sends_on_a_fresh_connection_so_a_stale_one_never_reads_may_have_been_sent(
    exchange_mailbox, ews_server, django_capture_on_commit_callbacks
):
    account, address = exchange_mailbox
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    # A load balancer let go of the connection the requests before CreateItem kept
    # alive: a request sent on it is lost before Exchange sees it.
    ews_server.drop_next_on_reused("CreateItem")

    with django_capture_on_commit_callbacks():
        outgoing_send(outgoing_id=outgoing.pk)

    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.SENT, outgoing.error
    assert len([m for m in ews_server.sent if m.user == address]) == 1
    # It came on a new connection: the drop is still waiting (taken back, as the server
    # is the session's).
    assert ews_server.state.stale_drops.pop("CreateItem") == 1


def test_it_keeps_the_signed_in_connection_for_a_sign_in_bound_to_it(
    exchange_mailbox, ews_server, django_capture_on_commit_callbacks, monkeypatch
):
    from mail.ews import delivery

    account, _address = exchange_mailbox
    outgoing = _queue(account, django_capture_on_commit_callbacks)
    # As NTLM signs in a connection (the fake speaks Basic: counted as such here), the
    # message goes on the one already signed in, not up three times on a new one.
    monkeypatch.setattr(delivery, "CONNECTION_AUTH", {"basic"})
    ews_server.drop_next_on_reused("CreateItem")

    outgoing_send(outgoing_id=outgoing.pk)

    outgoing.refresh_from_db()
    assert outgoing.state == OutgoingEmail.State.UNCERTAIN
    assert ews_server.state.stale_drops["CreateItem"] == 0
