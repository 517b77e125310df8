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

DEFINITIONS: dict[str, Definition] = {
    d.code: d
    for d in [
        MAILBOX_SYNC_INTERVAL,
        ALLOW_INTERNAL_MAIL_SERVERS,
        CREATE_CONTACTS_FOR_UNKNOWN_SENDERS,
    ]
}
