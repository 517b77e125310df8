"""The system settings the code reads, with their types, defaults and limits.

A setting exists in code first; its row only holds the value an admin chose.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Definition:
    code: str
    value_type: str  # "integer" | "boolean" | "text"
    default: int | bool | str
    description: str
    minimum: int | None = None
    maximum: int | None = None
    unit: str = ""


MAILBOX_SYNC_INTERVAL = Definition(
    code="MailboxSyncInterval",
    value_type="integer",
    default=5,
    minimum=1,
    maximum=24 * 60,
    unit="minutes",
    description="How often, in minutes, each mailbox checks its server for new emails.",
)

ALLOW_INTERNAL_MAIL_SERVERS = Definition(
    code="AllowInternalMailServers",
    value_type="boolean",
    default=False,
    description="Let the mailbox wizard connect to mail servers on internal addresses "
    "(loopback, private, link-local). Off, a host that resolves to such an address is refused, "
    "so nobody can use the wizard to probe the company's internal network. Turn it on when "
    "the company's own mail server is on the internal network.",
)

CREATE_CONTACTS_FOR_UNKNOWN_SENDERS = Definition(
    code="CreateContactsForUnknownSenders",
    value_type="boolean",
    default=False,
    description="When downloading emails, create a contact for a sender the CRM does not know "
    "yet (never for no-reply addresses or the company's own domains).",
)

MAX_MESSAGE_SIZE = Definition(
    code="MaxMessageSizeMB",
    value_type="integer",
    default=25,
    minimum=1,
    maximum=1024,
    unit="MB",
    description="Emails larger than this are stored without their attachments: the text is "
    "stored, the attachments are listed with their sizes, and the email's first MB up to this "
    "size are kept as its original. Each such email carries a note.",
)

MAX_MESSAGE_PARTS = Definition(
    code="MaxMessageParts",
    value_type="integer",
    default=200,
    minimum=10,
    maximum=10_000,
    description="How many parts (texts and attachments) of one email are read; the rest is "
    "kept in the email's original, with a note.",
)

MAX_MIME_DEPTH = Definition(
    code="MaxMimeDepth",
    value_type="integer",
    default=20,
    minimum=3,
    maximum=100,
    description="How deeply nested parts of one email (attached messages inside attached "
    "messages) are read; deeper ones stay in the email's original, with a note.",
)

DEFINITIONS: dict[str, Definition] = {
    d.code: d
    for d in [
        MAILBOX_SYNC_INTERVAL,
        ALLOW_INTERNAL_MAIL_SERVERS,
        CREATE_CONTACTS_FOR_UNKNOWN_SENDERS,
        MAX_MESSAGE_SIZE,
        MAX_MESSAGE_PARTS,
        MAX_MIME_DEPTH,
    ]
}
