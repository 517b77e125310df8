"""Who sees and does what with a shared mailbox: every user kind x grant x surface,
while the mailbox is connected and once its owner removed it keeping its emails.

The expected outcome of each cell comes from the product's definition of the rights
(written out in `expected` below, independently of sharing.selectors): the owner has
all three; a direct grantee and a member of a granted role have the granted one;
a member of another role, a stranger and a superuser have none. Being a superuser
gives the two system operations, which the others lack, and nothing else. Removing a
mailbox ends its shares: its kept emails are its owner's alone, who still sees the
grants it had and may revoke them (issue 15, point 2).
"""

import re
from dataclasses import dataclass

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from accounts.models import EmailAccount
from accounts.services import account_remove
from crm.models import Activity, Company, Contact, EmailLinkChange
from sharing.models import GrantChange, MailboxGrant
from sharing.selectors import sendable_mailboxes
from sync.models import Attachment, Email
from tests.factories import EmailAccountFactory, EmailProviderFactory, GroupFactory, UserFactory

USERS = ["owner", "direct", "role_member", "other_role", "stranger", "superuser"]
GRANTS = ["access", "send", "setup", "none"]
STATES = ["connected", "removed"]
SUBJECT = "Quarterly offer 7f3a"
MEETING = "Kick-off 9c2e"
HTMX = {"HTTP_HX_REQUEST": "true"}


@dataclass
class World:
    account: EmailAccount
    email: Email
    attachment: Attachment
    contact: Contact
    company: Company
    users: dict
    inline: Attachment
    other_company: Company


@pytest.fixture
def world(db, settings, tmp_path) -> callable:
    settings.MEDIA_ROOT = tmp_path

    def build(grant: str, state: str = "connected") -> World:
        # Loopback, and internal servers are not allowed: a sign-in check or folder
        # list started by an allowed request fails at once, without leaving the machine.
        provider = EmailProviderFactory(imap_host="127.0.0.1", smtp_host="127.0.0.1")
        users = {kind: UserFactory() for kind in USERS[:-1]}
        users["superuser"] = UserFactory(is_superuser=True)
        GroupFactory(members=[users["role_member"]])
        granted_role = users["role_member"].groups.get()
        GroupFactory(members=[users["other_role"]])
        account = EmailAccountFactory(owner=users["owner"], provider=provider, shared_access=True)
        if grant != "none":
            right = {f"can_{grant}": True}
            MailboxGrant.objects.create(account=account, user=users["direct"], **right)
            MailboxGrant.objects.create(account=account, group=granted_role, **right)
        company = Company.objects.create(name="Partner Ltd", web_domain="partner.test")
        contact = Contact.objects.create(name="Peter Partner", company=company)
        email = Email.objects.create(account=account, message_key="k1", subject=SUBJECT)
        email.contacts.add(contact)
        email.companies.add(company)
        attachment = Attachment.objects.create(
            email=email, file=ContentFile(b"offer", name="offer.pdf"), name="offer.pdf", size=5
        )
        # The email's inline image (cid:), and a meeting from the same mailbox.
        inline = Attachment.objects.create(
            email=email, file=ContentFile(b"\x89PNG", name="logo.png"), name="logo.png",
            size=4, content_type="image/png", content_id="logo@partner.test",
        )  # fmt: skip
        meeting = Activity.objects.create(account=account, kind="meeting", external_id="m1",
                                          subject=MEETING)  # fmt: skip
        meeting.contacts.add(contact)
        meeting.companies.add(company)
        other = Company.objects.create(name="Other Inc", web_domain="other.test")
        if state == "removed":
            # Through the service, as the owner's "Remove" with "keep the emails" does.
            account_remove(account=account, actor=users["owner"], keep_emails=True)
            account.refresh_from_db()
        return World(account, email, attachment, contact, company, users, inline, other)

    return build


def rights(user: str, grant: str) -> set[str]:
    if user == "owner":
        return {"access", "send", "setup"}
    if user in ("direct", "role_member") and grant != "none":
        return {grant}
    return set()


def operations(user: str) -> set[str]:
    return {"share", "sync"} if user == "superuser" else set()


# Each surface: what it needs, and how a request shows whether it was allowed.
SEES = {
    "panel list": {"send"},
    "panel count": {"send"},
    "panel search": {"send"},
    "contact timeline": {"access"},
    "company timeline": {"access"},
    "contact page meetings and tasks": {"access"},
    "company page meetings and tasks": {"access"},
    "contact list": {"access"},
    "company list": {"access"},
    "contact list search": {"access"},
    "email detail": {"access", "send"},
    "email detail links": {"access", "send"},
    "attachment download": {"access", "send"},
    "inline image": {"access", "send"},
    "link by hand": {"access", "send"},
    "unlink by hand": {"access", "send"},
    "From list": {"send"},
    "compose From field": {"send"},
    "mailbox list": {"send", "setup"},
    "sync status partial": {"send", "setup"},
}
# Settings URLs: open to "Setup mailbox" (else 404); some also need the owner or a
# system operation (else 403).
SETUP = {
    "settings page": None,
    "folders partial": "owner or sync",
    "signature preview": None,
    "grantee search partial": "share",
    "POST download settings": "owner or sync",
    "POST send settings": None,
    "POST folders": "owner or sync",
    "POST credentials": None,
    "POST signature": None,
    "POST remove": "owner",
    "POST sharing": "share",
    "POST download now": None,
    "POST folders refresh": "owner or sync",
}
# A removed mailbox's leftovers, for its owner alone: the grants it still has are listed
# on the mailbox list (when it has any), and may be revoked there.
REMOVED = {
    "removed grants list": None,
    "POST revoke removed grants": None,
}
# What the owner of a removed mailbox (emails kept) still has; everything else is gone
# for everyone: its settings and partials answer 404, it sends and lists nothing.
# What a removed mailbox's owner keeps: its emails and meetings on the CRM's pages, the
# email itself (its inline images, its links and changing them), and what the contact and
# company lists show of it. Everyone else loses all of it with the mailbox.
KEPT_BY_OWNER = {
    "contact timeline", "company timeline", "email detail", "attachment download",
    "contact page meetings and tasks", "company page meetings and tasks", "contact list",
    "contact list search", "company list", "email detail links", "inline image",
    "link by hand", "unlink by hand",
}  # fmt: skip


def expected(user: str, grant: str, surface: str, state: str = "connected") -> bool | int:
    if state == "removed":
        return expected_removed(user, grant, surface)
    if surface == "removed grants list":
        return False
    if surface == "POST revoke removed grants":
        return 404
    held = rights(user, grant)
    if surface in SEES:
        return bool(held & SEES[surface])
    if "setup" not in held:
        return 404
    extra = SETUP[surface]
    if extra is None:
        return 200
    ok = (
        (extra == "owner" and user == "owner")
        or (extra == "owner or sync" and (user == "owner" or "sync" in operations(user)))
        or (extra == "share" and "share" in operations(user))
    )
    return 200 if ok else 403


def expected_removed(user: str, grant: str, surface: str) -> bool | int:
    owner = user == "owner"
    if surface in SEES:
        return owner and surface in KEPT_BY_OWNER
    if surface == "removed grants list":
        return owner and grant != "none"
    if surface == "POST revoke removed grants":
        return 302 if owner else 404
    return 404


def observe(client, w: World, user, surface: str) -> bool | int:
    pk = w.account.pk
    if surface == "panel list":
        return SUBJECT in client.get(reverse("accounts:email")).text
    if surface == "panel count":
        return 'id="panel-count">1 email<' in client.get(reverse("accounts:email")).text
    if surface == "panel search":
        found = client.get(
            reverse("accounts:email"),
            {"q": "offer 7F3A"},
            HTTP_HX_REQUEST="true",
            HTTP_HX_TARGET="panel-emails",
        )
        return SUBJECT in re.sub("</?mark>", "", found.text)  # words found are highlighted

    if surface == "contact timeline":
        return SUBJECT in client.get(reverse("crm:contact", args=[w.contact.pk])).text
    if surface == "company timeline":
        return SUBJECT in client.get(reverse("crm:company", args=[w.company.pk])).text
    if surface == "contact page meetings and tasks":
        return MEETING in client.get(reverse("crm:contact", args=[w.contact.pk])).text
    if surface == "company page meetings and tasks":
        return MEETING in client.get(reverse("crm:company", args=[w.company.pk])).text
    if surface in ("contact list", "company list"):
        url = reverse("crm:contacts" if surface == "contact list" else "crm:companies")
        page = client.get(url).text
        # Listed for everyone; the email beside it only for those who may see it.
        assert w.contact.name in page or w.company.name in page
        return SUBJECT in page
    if surface == "contact list search":
        page = client.get(reverse("crm:contacts"), {"q": "peter"}, HTTP_HX_REQUEST="true",
                          HTTP_HX_TARGET="crm-list").text  # fmt: skip
        assert w.contact.name in page
        return SUBJECT in page
    if surface == "email detail":
        response = client.get(reverse("sync:email", args=[w.email.pk]))
        assert response.status_code in (200, 404)
        return response.status_code == 200 and SUBJECT in response.text
    if surface == "email detail links":
        response = client.get(reverse("sync:email", args=[w.email.pk]))
        return response.status_code == 200 and f'href="/contacts/{w.contact.pk}/"' in response.text
    if surface == "inline image":
        response = client.get(reverse("sync:inline", args=[w.email.pk, w.inline.pk]))
        assert response.status_code in (200, 404)
        return response.status_code == 200
    if surface in ("link by hand", "unlink by hand"):
        link = surface.startswith("link")
        target = {"company": w.other_company.pk} if link else {"contact": w.contact.pk}
        response = client.post(
            reverse("crm:email_links", args=[w.email.pk]),
            {"action": "link" if link else "unlink", **target}, HTTP_HX_REQUEST="true",
        )  # fmt: skip
        assert response.status_code in (200, 404)
        linked = (
            w.email.companies.filter(pk=w.other_company.pk).exists()
            if link
            else w.email.contacts.filter(pk=w.contact.pk).exists()
        )
        # Refused means refused: the links stay, and nothing is recorded.
        assert linked == (link == (response.status_code == 200))
        assert EmailLinkChange.objects.exists() == (response.status_code == 200)
        return response.status_code == 200
    if surface == "attachment download":
        response = client.get(reverse("sync:attachment", args=[w.email.pk, w.attachment.pk]))
        assert response.status_code in (200, 404)
        return response.status_code == 200 and b"".join(response.streaming_content) == b"offer"
    if surface == "From list":
        return w.account in sendable_mailboxes(user)
    if surface == "compose From field":
        page = client.get(reverse("sending:compose")).text
        return f'<option value="{pk}"' in page

    if surface == "mailbox list":
        page = client.get(reverse("accounts:list")).text
        # The "Removed mailboxes with grants" table is its own surface, below.
        return w.account.address in page.split('id="removed-mailboxes"')[0]
    if surface == "removed grants list":
        page = client.get(reverse("accounts:list")).text
        removed = page.split('id="removed-mailboxes"')
        return (
            len(removed) == 2
            and w.account.address in removed[1]
            and (w.users["direct"].username in removed[1])
        )
    if surface == "POST revoke removed grants":
        return client.post(reverse("sharing:revoke_removed", args=[pk])).status_code
    if surface == "sync status partial":
        status = client.get(reverse("sync:status", args=[pk]), **HTMX).status_code
        assert status in (200, 404)
        return status == 200
    return _setup_request(client, pk, surface).status_code


def _setup_request(client, pk: int, surface: str):
    post = lambda name, data=None, *args: client.post(  # noqa: E731
        reverse(name, args=[pk, *args]), data or {}, **HTMX
    )
    match surface:
        case "settings page":
            return client.get(reverse("accounts:settings", args=[pk]))
        case "folders partial":
            return client.get(reverse("accounts:folders", args=[pk]), **HTMX)
        case "signature preview":
            return post("accounts:signature_preview", {"signature-signature_html": "<p>Hi</p>"})
        case "grantee search partial":
            return client.get(reverse("sharing:grantees", args=[pk]), {"q": "user"}, **HTMX)
        case "POST download settings":
            data = {"download-sync_period": "1m", "download-auto_sync": "on"}
            return post("accounts:settings_save", data, "download")
        case "POST send settings":
            return post("accounts:settings_save", {"send-display_name": "Sales"}, "send")
        case "POST folders":
            return post("accounts:folders", {"folder_mode": "all"})
        case "POST credentials":
            return post("accounts:credentials", {"credentials-password": "new secret"})
        case "POST signature":
            return post("accounts:signature", {"signature-signature_html": "<p>Regards</p>"})
        case "POST remove":
            return post("accounts:remove", {"emails": "keep"})
        case "POST sharing":
            return post("sharing:mailbox", {"shared_access": "on", "save": "1"})
        case "POST download now":
            return post("sync:download")
        case "POST folders refresh":
            return post("accounts:folders_refresh")
    raise AssertionError(surface)


SURFACES = [*SEES, *SETUP, *REMOVED]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("grant", GRANTS)
@pytest.mark.parametrize("user", USERS)
def test_it_gives_each_user_exactly_what_their_grant_allows(
    client, world, queued, user, grant, surface, state
):
    w = world(grant, state)
    who = w.users[user]
    client.force_login(who)
    before = EmailAccount.objects.filter(pk=w.account.pk).values().get()
    grants_before = list(MailboxGrant.objects.values().order_by("pk"))
    outcome = expected(user, grant, surface, state)

    assert observe(client, w, who, surface) == outcome

    if outcome in (403, 404):
        # Refused means refused: nothing about the mailbox or its grants changed.
        assert EmailAccount.objects.filter(pk=w.account.pk).values().get() == before
        assert list(MailboxGrant.objects.values().order_by("pk")) == grants_before
        assert Email.objects.filter(pk=w.email.pk).exists()
        assert not queued
    if surface == "POST revoke removed grants" and outcome == 302:
        # The owner revoked what the removed mailbox still had, each grant logged.
        assert not MailboxGrant.objects.filter(account=w.account).exists()
        assert GrantChange.objects.filter(account=w.account).count() == len(grants_before)
