"""Filling a Dovecot mailbox for sync tests, over IMAP like any mail client."""

import itertools
import ssl
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from imapclient import IMAPClient

from tests.servers.certs import test_ca

_counter = itertools.count(1)


def make_message(
    *,
    subject: str = "Hello",
    sender: str = "Peter Partner <peter@partner.test>",
    to: str = "alice@example.test",
    age: timedelta = timedelta(hours=1),
    message_id: str | None = "auto",
    body: str = "Hi there.",
    html: str | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> bytes:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(datetime.now(UTC) - age)
    if message_id == "auto":
        message["Message-ID"] = make_msgid(idstring=str(next(_counter)), domain="partner.test")
    elif message_id:
        message["Message-ID"] = message_id
    message.set_content(body)
    if html:
        message.add_alternative(html, subtype="html")
    if attachment:
        name, data = attachment
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()


class Mailbox:
    """A test user's mailbox on the suite's Dovecot."""

    def __init__(self, dovecot, address: str, password: str):
        self.dovecot = dovecot
        self.address = address
        self.password = password

    def client(self) -> IMAPClient:
        context = ssl.create_default_context()
        test_ca().configure_trust(context)
        client = IMAPClient("localhost", port=self.dovecot.imaps_port, ssl_context=context)
        client.login(self.address, self.password)
        return client

    def append(self, folder: str, *messages: bytes, flags=(), when: datetime | None = None):
        with self.client() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for raw in messages:
                client.append(folder, raw, flags=flags, msg_time=when)

    def create(self, folder: str, special_use: str | None = None) -> None:
        with self.client() as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
