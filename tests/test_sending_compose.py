"""sending.services.outgoing_compose: the compose page's email made by a service, with
its thread (RFC 5322 In-Reply-To and References) for an answer and none for a forward."""

import email
import email.policy

from sending.message import answer_headers
from sending.services import outgoing_compose
from sync.models import Email
from tests.factories import EmailAccountFactory

TO = [{"name": "", "address": "partner@partner.test"}]


def _compose(account, original=None, mode=""):
    return outgoing_compose(
        author=account.owner, account=account, to=TO, cc=[], bcc=[], subject="Re: Plans",
        text="Fine by me.", attachments=[], original=original, mode=mode,
    )  # fmt: skip


def test_it_threads_an_answer_and_not_a_forward(db):
    account = EmailAccountFactory()
    original = Email.objects.create(
        account=account, message_key="k", subject="Plans", message_id="two@partner.test",
        references="<one@partner.test>", text_body="Shall we?",
    )  # fmt: skip
    reply = _compose(account, original, "reply")
    assert (reply.in_reply_to, reply.references) == (
        "two@partner.test",
        "<one@partner.test> <two@partner.test>",
    )
    sent = email.message_from_bytes(bytes(reply.raw))
    assert sent["In-Reply-To"] == "<two@partner.test>"
    text = next(part for part in sent.walk() if part.get_content_type() == "text/plain")
    # Quoted below the answer.
    assert "Shall we?" in text.get_payload(decode=True).decode()
    forward = _compose(account, original, "forward")
    assert (forward.in_reply_to, forward.references) == ("", "")
    new = _compose(account)
    assert (new.in_reply_to, new.references) == ("", "")


def test_it_keeps_the_thread_of_an_email_without_a_message_id():
    assert answer_headers("", "<one@partner.test>") == ("", "<one@partner.test>")
    assert answer_headers("two@partner.test", "") == ("two@partner.test", "<two@partner.test>")


def test_it_keeps_the_signature_s_lines_in_the_plain_text(db):
    # The signature editor writes "Name<div>Title</div>": its plain-text version read
    # "NameTitle" on one line.
    account = EmailAccountFactory(
        signature_html="Sämi Séller — Sales 🎉<div>Northwind account manager</div>"
        "<div><b>+41</b> 44 000 00 00</div>",
        add_signature=True,
    )
    sent = email.message_from_bytes(bytes(_compose(account).raw), policy=email.policy.default)
    text = sent.get_body(("plain",)).get_content()
    assert "Sämi Séller — Sales 🎉\nNorthwind account manager\n+41 44 000 00 00" in text.replace(
        "\r\n", "\n"
    )
