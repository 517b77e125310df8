"""The demo mailbox's sample mail for `make dev-mail`: a small company's week.

Dana Demo (demo@example.test) sells to Northwind Traders, the demo company, whose people
are contacts in the app (DEMO_COMPANIES), and to Contoso; a colleague writes from the
company's own domain; a newsletter arrives as HTML; a signed framework agreement comes
as a PDF attachment. Folders nest (Customers/Northwind/Contracts), a thread runs across
INBOX and Sent, older mail is read and the newest is not. Dates are counted back from
the moment of seeding (at most five and a half days), so the wizard's default period
(one week) takes in all of it for a day or more.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

DEMO = "demo@example.test"
DEMO_NAME = "Dana Demo"
ME = f"{DEMO_NAME} <{DEMO}>"
TEAM = "Tom Team <team@example.test>"
NANCY = "Nancy Davolio <nancy.davolio@northwind.test>"
ANDREW = "Andrew Fuller <andrew.fuller@northwind.test>"
JANET = "Janet Leverling <janet.leverling@northwind.test>"
ROB = "Rob Walters <rob.walters@contoso.test>"
NEWS = "The Inbox Weekly <news@inboxweekly.test>"

# The CRM side: companies (web domain) and their contacts (name, address, job title, phone).
DEMO_COMPANIES = [
    (
        "Northwind Traders",
        "northwind.test",
        [
            ("Nancy Davolio", "nancy.davolio@northwind.test", "Purchasing Manager",
             "+1 206 555 9857"),
            ("Andrew Fuller", "andrew.fuller@northwind.test", "Vice President, Sales",
             "+1 206 555 9482"),
            ("Janet Leverling", "janet.leverling@northwind.test", "Accounts Payable",
             "+1 206 555 3412"),
        ],
    ),
    (
        "Contoso Pharmaceuticals",
        "contoso.test",
        [("Rob Walters", "rob.walters@contoso.test", "IT Director", "+1 425 555 0100")],
    ),
]  # fmt: skip


@dataclass
class Sample:
    key: str
    folder: str
    sender: str
    subject: str
    hours_ago: float
    body: str
    to: str = ME
    cc: str = ""
    reply_to_key: str = ""
    html: str = ""
    attachment: tuple[str, str, bytes] | None = None  # (name, content type, data)
    seen: bool = True
    headers: dict[str, str] = field(default_factory=dict)

    def message_id(self) -> str:
        domain = self.sender.rsplit("@", 1)[1].rstrip(">")
        return f"<sample-{self.key}@{domain}>"


def _pdf(title: str) -> bytes:
    """A small, valid one-page PDF (a reader opens it)."""
    text = f"BT /F1 18 Tf 72 720 Td ({title}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


NEWSLETTER_HTML = """<!doctype html>
<html><body style="margin:0;background:#f4f5f7;font-family:Helvetica,Arial,sans-serif">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0"><tr><td align="center">
<table role="presentation" width="600" style="background:#ffffff;margin:24px 0">
<tr><td style="background:#1d4ed8;color:#ffffff;padding:24px">
  <h1 style="margin:0;font-size:24px">The Inbox Weekly</h1>
  <p style="margin:4px 0 0">Issue 112 &middot; Email that works for your customers</p>
</td></tr>
<tr><td style="padding:24px">
  <img src="https://news.inboxweekly.test/banner.png" width="552" alt="Spring reading list">
  <h2 style="font-size:18px">Three habits of teams that answer within an hour</h2>
  <p>Shared mailboxes, clear owners and a CRM that shows every conversation in one
  place. We asked twelve sales teams how they keep response times down.</p>
  <p><a href="https://news.inboxweekly.test/articles/answer-within-an-hour"
     style="background:#1d4ed8;color:#ffffff;padding:10px 16px;text-decoration:none">Read the
     article</a></p>
  <h2 style="font-size:18px">Also this week</h2>
  <ul>
    <li><a href="https://news.inboxweekly.test/articles/signatures">Signatures that do not
      break on phones</a></li>
    <li><a href="https://news.inboxweekly.test/articles/imap-folders">Folders or labels?
      What IMAP makes of Gmail</a></li>
  </ul>
</td></tr>
<tr><td style="padding:16px 24px;color:#6b7280;font-size:12px">You receive this because you
  subscribed at inboxweekly.test. <a href="https://news.inboxweekly.test/unsubscribe">Unsubscribe</a>.
</td></tr></table></td></tr></table></body></html>
"""

SAMPLES: list[Sample] = [
    # -- INBOX ---------------------------------------------------------------------
    Sample("order-q3", "INBOX", NANCY, "Order for the Q3 catalogue", 132,
           "Hi Dana,\n\nwe would like to order 40 cases of Chai and 25 of Chang for the "
           "Q3 catalogue. Can you confirm prices and a delivery date before Friday?\n\n"
           "Best regards,\nNancy Davolio\nPurchasing Manager, Northwind Traders"),
    Sample("order-q3-re2", "INBOX", NANCY, "Re: Order for the Q3 catalogue", 118,
           "Thanks, Dana. Delivery on the 14th works for us. Please send the order "
           "confirmation to Janet in accounts payable as well.\n\nNancy",
           reply_to_key="order-q3-re1", cc="Janet Leverling <janet.leverling@northwind.test>"),
    Sample("visit", "INBOX", ANDREW, "Visit in Seattle next month", 100,
           "Dana,\n\nI'll be in Seattle from the 3rd to the 5th. Would you have an hour for "
           "lunch to talk about next year's volumes? Our board wants to consolidate "
           "suppliers.\n\nAndrew Fuller\nVice President, Sales"),
    Sample("invoice-question", "INBOX", JANET, "Invoice 2025-0412: payment terms", 90,
           "Hello,\n\ninvoice 2025-0412 says 14 days net; our framework agreement says 30. "
           "Could you send a corrected invoice?\n\nKind regards,\nJanet Leverling"),
    Sample("standup", "INBOX", TEAM, "Notes from Monday's stand-up", 75,
           "Hi all,\n\n- Northwind: Q3 order confirmed, delivery on the 14th\n"
           "- Contoso: migration pilot starts next week\n- Website relaunch: copy due "
           "Thursday\n\nTom", to="Sales <sales@example.test>"),
    Sample("contoso-pilot", "INBOX", ROB, "Pilot: who gets access first?", 60,
           "Hi Dana,\n\nfor the pilot we would start with our purchasing team, eight "
           "people. Do they each need their own mailbox connected, or can one shared "
           "mailbox do?\n\nRob"),
    Sample("lunch", "INBOX", ANDREW, "Re: Visit in Seattle next month", 50,
           "Perfect, Wednesday at 12:30 it is. I'll bring our forecast.\n\nAndrew",
           reply_to_key="visit-re1"),
    Sample("price-list", "INBOX", TEAM, "New price list is live", 40,
           "The new price list is on the shared drive. Northwind keeps last year's "
           "prices until the framework agreement is renewed.\n\nTom"),
    Sample("samples", "INBOX", NANCY, "Samples of the new tea range?", 30,
           "Dana, could you send us samples of the new tea range? Three of each would "
           "be plenty for our tasting panel.\n\nNancy", seen=False),
    Sample("payment", "INBOX", JANET, "Payment of invoice 2025-0398", 20,
           "Hello Dana,\n\nwe paid invoice 2025-0398 today; the transfer should arrive "
           "within two working days.\n\nJanet", seen=False),
    Sample("contoso-sso", "INBOX", ROB, "Single sign-on for the pilot", 12,
           "One more thing: our users sign in with Microsoft 365. Does that work with "
           "your setup, or do they need app passwords?\n\nRob", seen=False),
    Sample("holiday", "INBOX", TEAM, "Out of office next Friday", 8,
           "I'm off next Friday; Northwind questions go to Dana that day.\n\nTom",
           seen=False),
    Sample("forecast", "INBOX", ANDREW, "Forecast for next year", 4,
           "Dana,\n\nas promised, our rough forecast: about 20% more tea and the same "
           "volume of sauces. Details at lunch.\n\nAndrew", seen=False),
    Sample("welcome", "INBOX", "mailsetup <hello@mailsetup.test>",
           "Welcome to your demo mailbox", 1,
           "This mailbox is served by `make dev-mail` on your machine. Its emails "
           "from Northwind Traders show on that company's page and its contacts' pages "
           "once downloaded. Nothing here leaves your machine.", seen=False),
    # -- Customers/Northwind --------------------------------------------------------
    Sample("nw-kickoff", "Customers/Northwind", ANDREW, "Kick-off: supplier review", 108,
           "Dana, thanks for joining the supplier review. Minutes attached in the next "
           "mail; the short version: you're on the shortlist.\n\nAndrew"),
    Sample("nw-logistics", "Customers/Northwind", NANCY, "Delivery windows at the warehouse", 122,
           "Our warehouse takes deliveries Monday to Thursday, 7:00 to 15:00. Please tell "
           "your carrier.\n\nNancy"),
    Sample("nw-portal", "Customers/Northwind", JANET, "Supplier portal access", 130,
           "Hello Dana, your supplier portal account is ready; you can upload invoices "
           "there from now on.\n\nJanet"),
    Sample("nw-feedback", "Customers/Northwind", NANCY, "Feedback from the tasting panel", 110,
           "The panel loved the Darjeeling and found the Assam too strong. We'll order "
           "the first in the next round.\n\nNancy"),
    Sample("nw-renewal", "Customers/Northwind", ANDREW, "Renewal of the framework agreement", 95,
           "Our legal team is fine with the renewal as drafted. Janet will send the "
           "signed copy.\n\nAndrew"),
    # -- Customers/Northwind/Contracts ----------------------------------------------
    Sample("nw-contract", "Customers/Northwind/Contracts", JANET,
           "Signed framework agreement 2025", 88,
           "Hello Dana,\n\nattached is the signed framework agreement for 2025. Please "
           "countersign and send it back.\n\nKind regards,\nJanet Leverling",
           attachment=("Northwind-framework-agreement-2025.pdf", "application/pdf",
                       _pdf("Framework agreement 2025 - Northwind Traders"))),
    Sample("nw-contract-nda", "Customers/Northwind/Contracts", ANDREW, "NDA for the forecast", 70,
           "Before I share the forecast, legal asks for the usual mutual NDA. Our "
           "template is fine if yours is too.\n\nAndrew"),
    # -- Customers/Contoso -----------------------------------------------------------
    Sample("ct-intro", "Customers/Contoso", ROB, "Introduction: Contoso Pharmaceuticals", 126,
           "Hi Dana, Kim from your team suggested I get in touch about connecting our "
           "purchasing mailboxes to a CRM.\n\nRob Walters\nIT Director"),
    Sample("ct-requirements", "Customers/Contoso", ROB, "Our requirements", 120,
           "Three must-haves: shared mailboxes, sign-in with Microsoft 365, and nothing "
           "deleted on the mail server, ever.\n\nRob"),
    Sample("ct-dates", "Customers/Contoso", ROB, "Pilot dates", 65,
           "We can start the pilot on Monday the 9th.\n\nRob"),
    # -- Projects/Website relaunch ---------------------------------------------------
    Sample("web-brief", "Projects/Website relaunch", TEAM, "Website relaunch: brief", 118,
           "The brief is final: new product pages, a customer stories section, and a "
           "contact form that lands in the CRM.\n\nTom"),
    Sample("web-copy", "Projects/Website relaunch", TEAM, "Copy for the customer stories", 80,
           "Dana, could you ask Northwind whether we may quote Nancy on the tasting "
           "panel?\n\nTom"),
    Sample("web-photos", "Projects/Website relaunch", TEAM, "Photos from the shoot", 55,
           "The photographer's selection is on the shared drive, folder 'relaunch'.\n\nTom"),
    Sample("web-launch", "Projects/Website relaunch", TEAM, "Launch date moved", 16,
           "Launch moves one week to give legal time for the customer quotes.\n\nTom",
           seen=False),
    # -- Newsletters -----------------------------------------------------------------
    Sample("news-112", "Newsletters", NEWS, "Three habits of teams that answer within an hour", 36,
           "The Inbox Weekly, issue 112.\n\nThree habits of teams that answer within an "
           "hour: https://news.inboxweekly.test/articles/answer-within-an-hour\n\n"
           "Unsubscribe: https://news.inboxweekly.test/unsubscribe",
           html=NEWSLETTER_HTML,
           headers={"List-Unsubscribe": "<https://news.inboxweekly.test/unsubscribe>",
                    "List-Id": "The Inbox Weekly <weekly.inboxweekly.test>"}),
    Sample("news-receipt", "Newsletters", "Billing <noreply@billing.example.test>",
           "Your receipt for November", 26,
           "Thank you for your payment of USD 49.00 for the Team plan."),
    Sample("news-webinar", "Newsletters", NEWS, "Webinar: shared mailboxes done right", 6,
           "Join us on Thursday at 17:00 CET: https://news.inboxweekly.test/webinar",
           seen=False),
    # -- Sent ------------------------------------------------------------------------
    Sample("order-q3-re1", "Sent", ME, "Re: Order for the Q3 catalogue", 124,
           "Hi Nancy,\n\nprices as in the current list; we can deliver on the 14th. "
           "Does that work?\n\nDana", to=NANCY, reply_to_key="order-q3"),
    Sample("visit-re1", "Sent", ME, "Re: Visit in Seattle next month", 70,
           "Hi Andrew, lunch on Wednesday the 4th at 12:30 would suit me. Dana",
           to=ANDREW, reply_to_key="visit"),
    Sample("invoice-fixed", "Sent", ME, "Re: Invoice 2025-0412: payment terms", 85,
           "Hi Janet, you're right: the corrected invoice follows today. Dana",
           to=JANET, reply_to_key="invoice-question"),
    Sample("contoso-answer", "Sent", ME, "Re: Pilot: who gets access first?", 45,
           "Hi Rob, one shared mailbox is enough: each person gets access to it in the "
           "app, without its password. Dana", to=ROB, reply_to_key="contoso-pilot"),
]  # fmt: skip


def message_bytes(sample: Sample, now: datetime) -> bytes:
    by_key = {s.key: s for s in SAMPLES}
    message = EmailMessage()
    message["From"] = sample.sender
    message["To"] = sample.to
    if sample.cc:
        message["Cc"] = sample.cc
    message["Subject"] = sample.subject
    message["Date"] = format_datetime(when(sample, now))
    message["Message-ID"] = sample.message_id()
    if sample.reply_to_key:
        parent = by_key[sample.reply_to_key].message_id()
        message["In-Reply-To"] = parent
        message["References"] = parent
    for name, value in sample.headers.items():
        message[name] = value
    message.set_content(sample.body + "\n")
    if sample.html:
        message.add_alternative(sample.html, subtype="html")
    if sample.attachment:
        name, content_type, data = sample.attachment
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


def when(sample: Sample, now: datetime) -> datetime:
    return now - timedelta(hours=sample.hours_ago)
