"""Issue 17, points 10 and 11, in headless Chromium: every page of the app, at 390 px
(a phone) and 1280 px (a laptop).

- No page scrolls sideways at either width (documentElement.scrollWidth <= clientWidth);
  at 1280 px the header's brand and navigation share one row.
- The navigation marks the page's section with aria-current="page".
- axe-core (axe-playwright-python, which ships axe.min.js: nothing is fetched) finds no
  serious or critical violation. Run with -s to read the counts per page.

Screenshots: test-results/issue17-10-<page>-<width>.png."""

import uuid
from datetime import timedelta

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth.models import Group
from django.utils import timezone

from crm.models import Activity, Company, Contact, ContactAddress
from sending.models import OutgoingEmail
from sharing.models import MailboxGrant
from sync.models import Email, Folder, SyncRun
from tests.browser import SCREENSHOTS
from tests.factories import EmailAccountFactory, UserFactory
from tests.test_browser_wizard import _sign_in

WIDTHS = (390, 1280)
SERIOUS = {"serious", "critical"}


@pytest.fixture
def world(db, test_provider):
    """A user with a mailbox shared with a colleague and a role, its emails linked to a
    company and its contacts, and a meeting: every page has something to show."""
    user = UserFactory(
        first_name="Alexandra", last_name="Longname-Whitfield", is_staff=True, is_superuser=True
    )
    account = EmailAccountFactory(
        owner=user,
        provider=test_provider,
        address="alexandra.longname-whitfield@example.test",
        shared_access=True,
        signature_html="<p>Alexandra · Sales</p>",
    )
    colleague = UserFactory(first_name="Bartholomew", last_name="Colleague")
    MailboxGrant.objects.create(account=account, user=colleague, can_access=True, can_send=True)
    role = Group.objects.create(name="Customer service representatives")
    MailboxGrant.objects.create(account=account, group=role, can_access=True, can_setup=True)
    company = Company.objects.create(
        name="Northwind Traders International", web_domain="northwind.test"
    )
    contact = Contact.objects.create(
        name="Nancy Davolio", company=company, job_title="Sales Representative"
    )
    ContactAddress.objects.create(contact=contact, address="nancy.davolio@northwind.test")
    # A folder read: the problems page lists it.
    Folder.objects.create(account=account, path="INBOX", messages=3)
    now = timezone.now()
    email = None
    for n in range(3):
        email = Email.objects.create(
            account=account, message_key=f"k{n}-{uuid.uuid4().hex}",
            subject=f"Framework agreement, revision {n}: pricing for 2027 and delivery terms",
            sent_at=now - timedelta(hours=n), from_address="nancy.davolio@northwind.test",
            from_name="Nancy Davolio",
            to=[{"address": account.address, "name": "Alexandra"}],
            text_body="Dear Alexandra,\n\nplease find the revised agreement attached.\n\nNancy",
        )  # fmt: skip
        email.contacts.add(contact)
        email.companies.add(company)
    meeting = Activity.objects.create(
        account=account, kind="meeting", external_id="m1", subject="Quarterly review",
        starts_at=now - timedelta(days=1), location="Room 2",
    )  # fmt: skip
    meeting.contacts.add(contact)
    outgoing = OutgoingEmail.objects.create(
        account=account, author=user, message_id=f"{uuid.uuid4().hex}@example.test", raw=b"",
        subject="Re: Framework agreement", to=[{"address": "nancy.davolio@northwind.test"}],
        state=OutgoingEmail.State.SENT, sent_copy="stored", sent_at=now,
    )  # fmt: skip
    SyncRun.objects.create(
        account=account, state="failed", finished_at=now,
        error="The server did not answer in time: imap.example.test:993 (a timeout).",
    )  # fmt: skip
    return {"user": user, "account": account, "email": email, "contact": contact,
            "company": company, "outgoing": outgoing}  # fmt: skip


def _pages(world) -> list[tuple[str, str, str]]:
    """(name, path, the navigation link marked current) of every page the suite visits."""
    account, address = world["account"], "carol@elsewhere.test"
    return [
        ("email", "/email/", "Email"),
        ("home", "/", ""),
        ("email-detail", f"/emails/{world['email'].pk}/", "Email"),
        ("compose", "/compose/", "Email"),
        ("outgoing", f"/outgoing/{world['outgoing'].pk}/", "Email"),
        ("reply", f"/compose/?reply={world['email'].pk}", "Email"),
        ("contacts", "/contacts/", "Contacts"),
        ("contact", f"/contacts/{world['contact'].pk}/", "Contacts"),
        ("companies", "/companies/", "Companies"),
        ("company", f"/companies/{world['company'].pk}/", "Companies"),
        ("mailboxes", "/mailboxes/", "Mailbox settings"),
        ("settings", f"/mailboxes/{account.pk}/", "Mailbox settings"),
        ("problems", f"/mailboxes/{account.pk}/problems/", "Mailbox settings"),
        ("wizard-address", "/mailboxes/new/", "Mailbox settings"),
        ("wizard-provider", f"/mailboxes/new/provider/?address={address}", "Mailbox settings"),
        ("wizard-new-server", f"/mailboxes/new/server/?address={address}", "Mailbox settings"),
        (
            "wizard-sign-in",
            f"/mailboxes/new/sign-in/?address=alice@example.test&provider={account.provider_id}",
            "Mailbox settings",
        ),
        ("help-secure-connection", "/help/secure-connection/", "Mailbox settings"),
        # The operator's pages (issue 18, health/).
        ("mailbox-health", "/admin/mailbox-health/", ""),
        ("mailbox-runs", f"/admin/mailbox-health/{account.pk}/runs/", ""),
    ]


def _overflow(page) -> dict:
    return page.evaluate(
        """() => {
          const doc = document.documentElement;
          const wide = [...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > doc.clientWidth + 1)
            .filter((e) => !e.closest('.visually-hidden'))
            .slice(0, 5)
            .map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')
                 + (e.className && typeof e.className === 'string' ? '.' + e.className : ''));
          return {scroll: doc.scrollWidth, client: doc.clientWidth, wide};
        }"""
    )


def _unnamed_cells(page) -> list[str]:
    """Rows of list tables (one block per row on a phone) with more than one cell that
    does not say its column: one is the row's title (a name, often its link); the
    others need a data-label. Cells of controls (a checkbox, a button) and cells across
    the row are left out."""
    return page.evaluate(
        """() => [...document.querySelectorAll('table.list tbody tr')]
          .map((row) => [...row.cells].filter((cell) => !cell.dataset.label
              && cell.colSpan === 1 && !cell.querySelector('input:not([type=hidden]), button')))
          .filter((unnamed) => unnamed.length > 1)
          .map((unnamed) => unnamed.map((cell) => cell.innerText.trim().slice(0, 30)).join(' | '))
          .slice(0, 3)"""
    )


def test_it_fits_every_page_at_both_widths_marks_the_section_and_passes_axe(
    live_server, browser, world
):
    axe = Axe()
    counts, problems = {}, []
    # The check can fail: a picture without a text alternative is a critical violation.
    control = browser.new_page()
    control.set_content('<!doctype html><html lang="en"><title>t</title><img src="data:,">')
    found = axe.run(control, options={"iframes": False}).response["violations"]
    assert [v["impact"] for v in found if v["id"] == "image-alt"] == ["critical"]
    control.context.close()
    for width in WIDTHS:
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        pages = _pages(world)
        # The sign-in page first, signed out.
        pages.insert(0, ("login", "/login/", ""))
        for name, path, current in pages:
            if name == "email":
                _sign_in(page, live_server, world["user"])
            response = page.goto(f"{live_server.url}{path}")
            assert response.status == 200, (name, response.status)
            page.wait_for_load_state("load")
            SCREENSHOTS.mkdir(exist_ok=True)
            page.screenshot(path=SCREENSHOTS / f"issue17-10-{name}-{width}.png", full_page=True)
            fit = _overflow(page)
            if fit["scroll"] > fit["client"]:
                problems.append(f"{name} at {width}px scrolls sideways: {fit}")
            marked = page.locator("header.top nav a[aria-current=page]").all_inner_texts()
            if marked != ([current] if current else []):
                problems.append(f"{name}: the navigation marks {marked}, not {current!r}")
            if width == 1280:
                brand, nav = (
                    page.locator(".brand").bounding_box(),
                    page.locator("header.top nav").bounding_box(),
                )
                if abs((brand["y"] + brand["height"] / 2) - (nav["y"] + nav["height"] / 2)) > 4:
                    problems.append(f"{name} at 1280px: brand and navigation not on one row")
            if width == 390:
                problems += [f"{name} at 390px: {row}" for row in _unnamed_cells(page)]
            # The sandboxed mail frames run no script, so axe checks the page around them.
            results = axe.run(page, options={"iframes": False})
            violations = results.response["violations"]
            serious = [v for v in violations if v["impact"] in SERIOUS]
            counts[(name, width)] = (len(serious), len(violations))
            problems += [
                f"{name} at {width}px: axe {v['id']} ({v['impact']}): {v['help']} "
                f"{[n['target'] for n in v['nodes']][:3]}"
                for v in serious
            ]
        context.close()
    print("\naxe-core violations per page (serious or critical / all):")
    for (name, width), (serious, total) in counts.items():
        print(f"  {name:24} {width:5}px  {serious} / {total}")
    assert not problems, "\n".join(problems)
