"""What a failure met while talking to a mail server means, for sync and sending alike.

Every error about a mail server carries a `kind`, a stable word for code, and this one
table answers what the kind means for whoever met it:
- RETRY: nothing is wrong with the mailbox's settings; the network, the server or our
  own queue or database failed for now. Try again later, with backoff.
- OWNER: no retry will change the answer until a person acts: the mailbox's owner (a
  password, a consent, a setting at the provider) or, where the message says so, an
  administrator (the provider card's servers, ports, security, certificates). Sync stops
  queueing the mailbox; sending reports "Not sent" at once.
- NEVER: this attempt can never succeed as it is (the server refused the message or a
  recipient); trying again would get the same answer.
- UNKNOWN: the outcome cannot be known: the message was handed over and the answer
  never came. Trying again could do it twice, so nothing is tried again.

Sync and sending used to keep a list each and disagreed on ten kinds (a TLS failure was
retried for ever by one and failed at once by the other); now both ask `action_of`.
"""

from enum import StrEnum


class Action(StrEnum):
    RETRY = "retry"
    OWNER = "owner"
    NEVER = "never"
    UNKNOWN = "unknown"


ACTIONS: dict[str, Action] = {
    # The network, a busy or restarting server, our own database or task queue.
    "temporary": Action.RETRY,  # the server said "try again later" (4xx, [UNAVAILABLE])
    "timeout": Action.RETRY,  # no answer within the time limit
    "refused": Action.RETRY,  # connection refused: the server is down or restarting
    "connection": Action.RETRY,  # the connection closed or reset before the answer
    "connection_lost": Action.RETRY,  # broke in the middle of a download or a copy
    "dns": Action.RETRY,  # the name did not resolve (it did when the mailbox was added)
    "unreachable": Action.RETRY,  # no route to the server
    "busy": Action.RETRY,  # Exchange: ErrorServerBusy, throttling, a moving mailbox
    "token_unavailable": Action.RETRY,  # the OAuth token endpoint could not be reached
    "database": Action.RETRY,  # our own database went away during the work
    "queue": Action.RETRY,  # our own task queue (the broker) could not be reached
    "storage": Action.RETRY,  # our own files: a full disk, a volume we may not write
    # A person has to act: the owner, or an administrator where the message says so.
    "credentials": Action.OWNER,
    "app_password": Action.OWNER,
    "imap_disabled": Action.OWNER,
    "expired": Action.OWNER,
    "contact_admin": Action.OWNER,
    "non_ascii": Action.OWNER,
    "login_missing": Action.OWNER,
    "password_missing": Action.OWNER,
    "protocol": Action.OWNER,  # the server did not understand the login's syntax
    "smtp_auth_disabled": Action.OWNER,
    "smtp_refuses": Action.OWNER,  # the login may not send as this address
    "reconnect": Action.OWNER,  # the OAuth grant was revoked or ran out
    "access_denied": Action.OWNER,  # Exchange: no access to this mailbox
    "sending_off": Action.OWNER,  # the author may no longer send from the mailbox
    "certificate": Action.OWNER,  # an administrator fixes the server or the CA
    "tls": Action.OWNER,  # TLS does not fit the port: the provider card's security
    "insecure": Action.OWNER,
    "internal_address": Action.OWNER,
    "auth_unsupported": Action.OWNER,
    "starttls_unsupported": Action.OWNER,
    "nothing_to_check": Action.OWNER,
    "autodiscover": Action.OWNER,
    "rate_limited": Action.OWNER,  # our own limit on sign-in checks (the wizard's)
    # This attempt cannot succeed as it is.
    "rejected": Action.NEVER,  # the server refused the message or a recipient (5xx)
    "server_error": Action.NEVER,  # the server answered NO/BAD to a command of ours
    # It may have happened.
    "handed_over": Action.UNKNOWN,
}

# Kinds an administrator fixes on the provider card or the server, not the owner:
# saving the provider lets the dispatcher try its mailboxes again.
PROVIDER_KINDS = frozenset(
    {"certificate", "tls", "insecure", "internal_address", "auth_unsupported",
     "starttls_unsupported", "nothing_to_check", "autodiscover"}
)  # fmt: skip


def action_of(kind: str) -> Action:
    """The table's answer; an unknown kind is a programming error, not a guess."""
    try:
        return ACTIONS[kind]
    except KeyError:
        raise ValueError(f"the failure kind {kind!r} is not classified") from None


class MailError(Exception):
    """A failure with a kind; str() is for people, `action` for code."""

    def __init__(self, kind: str, message: str):
        action_of(kind)  # refuse unclassified kinds where they are made
        super().__init__(message)
        self.kind = kind

    @property
    def action(self) -> Action:
        return action_of(self.kind)

    @property
    def retry(self) -> bool:
        return self.action == Action.RETRY

    def __reduce__(self):
        # Exceptions pickle as cls(*args), which fits neither (kind, message) nor a
        # subclass's own arguments; Celery pickles the errors of retries and failures.
        return (_rebuilt, (type(self), self.args, self.__dict__))


def _rebuilt(cls: type, args: tuple, state: dict) -> MailError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error
