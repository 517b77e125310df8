"""Issue 17, point 12: the small things a user would mind. ("is connected" said once is
checked in tests/test_wizard_views.py and tests/test_browser_oauth.py; the compose box's
style in tests/test_browser_polish.py.)"""

import html
from datetime import timedelta

import pytest
from django.conf import settings
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from accounts.forms import SendSettingsForm
from accounts.guides import GUIDES
from sending.models import OutgoingEmail
from sharing.models import MailboxGrant
from sync.models import Email
from tests.factories import EmailAccountFactory, EmailProviderFactory, UserFactory


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, "just now"), (59, "just now"), (60, "1\xa0minute ago"), (300, "5\xa0minutes ago")],
)
def test_it_says_just_now_rather_than_zero_minutes_ago(seconds, expected):
    then = timezone.now() - timedelta(seconds=seconds)
    assert Template("{{ then|ago }}").render(Context({"then": then})) == expected


@pytest.mark.parametrize(
    ("copy", "sentence"),
    [
        ("stored", "A copy is in the Sent folder."),
        ("by_server", "The provider keeps the copy in the Sent folder."),
        ("storing", "A copy is being put in the Sent folder."),
        ("failed", "The copy could not be put in the Sent folder (disk full)."),
        ("pending", "The copy is not in the Sent folder yet."),
    ],
)
def test_it_says_where_the_sent_copy_is_in_one_sentence(client, db, copy, sentence):
    account = EmailAccountFactory()
    outgoing = OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id="a@x", raw=b"", subject="Offer",
        state=OutgoingEmail.State.SENT, sent_copy=copy,
        sent_copy_error="disk full" if copy == "failed" else "",
    )  # fmt: skip
    client.force_login(account.owner)
    page = client.get(reverse("sending:outgoing", args=[outgoing.pk])).text
    assert f'<p class="muted" id="sent-copy">{sentence}</p>' in page
    assert "Sent folder: In the Sent folder" not in page


def test_it_leads_from_the_help_page_back_to_the_wizard(client, db):
    provider = EmailProviderFactory(security_guide="gmail", app_password_required=True)
    client.force_login(UserFactory())
    step = reverse("accounts:wizard_sign_in") + f"?address=ann%40gmail.test&provider={provider.pk}"
    page = client.get(step).text
    link = html.unescape(page.split('" id="secure-connection-help"')[0].rsplit('href="', 1)[1])
    assert link.startswith("/help/secure-connection/?back=") and link.endswith("#gmail")
    help_page = client.get(link.split("#")[0]).text
    assert f'<a href="{html.escape(step)}" id="back-to-wizard">' in help_page


@pytest.mark.parametrize(
    "back", ["https://evil.example/mailboxes/new/", "//evil.example/x", "/contacts/", ""]
)
def test_it_offers_no_way_back_but_to_this_sites_wizard(client, db, back):
    client.force_login(UserFactory())
    page = client.get(reverse("accounts:secure_connection"), {"back": back}).text
    assert "back-to-wizard" not in page and "evil" not in page


def test_it_mentions_in_the_gmail_guide_only_what_the_wizard_offers():
    guide = GUIDES["gmail"]
    words = " ".join([guide.summary, *guide.steps])
    # The guide shows beside a password field: no OAuth sign-in, no POP there.
    assert "OAuth" not in words and "POP" not in words
    assert "app password" in words


def test_it_lists_the_message_languages_by_name(db):
    form = SendSettingsForm(instance=EmailAccountFactory())
    choices = form.fields["message_language"].choices
    assert choices[0] == ("", "Same as the app")
    names = [str(name) for _, name in choices[1:]]
    assert names == sorted(names, key=str.casefold)
    assert len(names) == len(settings.LANGUAGES)


def test_it_shows_reply_only_to_someone_who_may_send_from_a_mailbox(client, db):
    account = EmailAccountFactory(shared_access=True)
    email = Email.objects.create(account=account, message_key="k", subject="Offer")
    reader = UserFactory()
    grant = MailboxGrant.objects.create(account=account, user=reader, can_access=True)
    client.force_login(reader)
    url = reverse("sync:email", args=[email.pk])
    page = client.get(url).text
    assert "Offer" in page
    assert "mode=reply" not in page and ">Reply</a>" not in page and "mode=forward" not in page
    # Allowed to send from it: Reply is there.
    grant.can_send = True
    grant.save()
    assert ">Reply</a>" in client.get(url).text
    # Or from a mailbox of one's own.
    grant.can_send = False
    grant.save()
    EmailAccountFactory(owner=reader)
    assert ">Reply</a>" in client.get(url).text
