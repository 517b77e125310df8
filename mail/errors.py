"""What a failure met while talking to a mail server means, for sync and sending alike.

Every error about a mail server is a MailError(kind, message, field, retry): `kind` a
stable word for code, str() for people, `field` the form field it is about (if any), and
`retry` the decision, which this one table gives for each kind:
- LATER: nothing is wrong with the mailbox's settings; the network, the server or our
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
Backends translate their libraries' exceptions into MailError where they meet them, so
callers catch one class and read one decision.
"""

from enum import StrEnum


class Retry(StrEnum):
    LATER = "later"
    OWNER = "owner"
    NEVER = "never"
    UNKNOWN = "unknown"


ACTIONS: dict[str, Retry] = {
    # The network, a busy or restarting server, our own database or task queue.
    "temporary": Retry.LATER,  # the server said "try again later" (4xx, [UNAVAILABLE])
    "timeout": Retry.LATER,  # no answer within the time limit
    "refused": Retry.LATER,  # connection refused: the server is down or restarting
    "connection": Retry.LATER,  # the connection closed or reset before the answer
    "connection_lost": Retry.LATER,  # broke in the middle of a download or a copy
    "dns": Retry.LATER,  # the name did not resolve (it did when the mailbox was added)
    "unreachable": Retry.LATER,  # no route to the server
    "busy": Retry.LATER,  # Exchange: ErrorServerBusy, throttling, a moving mailbox
    "token_unavailable": Retry.LATER,  # the OAuth token endpoint could not be reached
    "database": Retry.LATER,  # our own database went away during the work
    "queue": Retry.LATER,  # our own task queue (the broker) could not be reached
    "storage": Retry.LATER,  # our own files: a full disk, a volume we may not write
    # A person has to act: the owner, or an administrator where the message says so.
    "credentials": Retry.OWNER,
    "app_password": Retry.OWNER,
    "imap_disabled": Retry.OWNER,
    "expired": Retry.OWNER,
    "contact_admin": Retry.OWNER,
    "non_ascii": Retry.OWNER,
    "login_missing": Retry.OWNER,
    "password_missing": Retry.OWNER,
    "protocol": Retry.OWNER,  # the server did not understand the login's syntax
    "smtp_auth_disabled": Retry.OWNER,
    "smtp_refuses": Retry.OWNER,  # the login may not send as this address
    "reconnect": Retry.OWNER,  # the OAuth grant was revoked or ran out
    "access_denied": Retry.OWNER,  # Exchange: no access to this mailbox
    "sending_off": Retry.OWNER,  # the author may no longer send from the mailbox
    "certificate": Retry.OWNER,  # an administrator fixes the server or the CA
    "tls": Retry.OWNER,  # TLS does not fit the port: the provider card's security
    "insecure": Retry.OWNER,
    "internal_address": Retry.OWNER,
    "auth_unsupported": Retry.OWNER,
    "starttls_unsupported": Retry.OWNER,
    "nothing_to_check": Retry.OWNER,
    "autodiscover": Retry.OWNER,
    "rate_limited": Retry.OWNER,  # our own limit on sign-in checks (the wizard's)
    # This attempt cannot succeed as it is.
    "rejected": Retry.NEVER,  # the server refused the message or a recipient (5xx)
    "server_error": Retry.NEVER,  # the server answered NO/BAD to a command of ours
    # It may have happened.
    "handed_over": Retry.UNKNOWN,
}

# Kinds an administrator fixes on the provider card or the server, not the owner:
# saving the provider lets the dispatcher try its mailboxes again.
PROVIDER_KINDS = frozenset(
    {"certificate", "tls", "insecure", "internal_address", "auth_unsupported",
     "starttls_unsupported", "nothing_to_check", "autodiscover"}
)  # fmt: skip


def action_of(kind: str) -> Retry:
    """The table's answer; an unknown kind is a programming error, not a guess."""
    try:
        return ACTIONS[kind]
    except KeyError:
        raise ValueError(f"the failure kind {kind!r} is not classified") from None


class MailError(Exception):
    """A failure with a kind; str() is for people, `retry` for code, `field` for forms.
    `retry` is the table's answer for the kind unless the one who met the failure knows
    better (it must still name a classified kind)."""

    # Seconds the server asked to be left alone before the next try (its Retry-After),
    # where it said; the caller waits at least that long (sync: MailboxSync.not_before).
    wait: float | None = None

    def __init__(self, kind: str, message: str, field: str = "", retry: Retry | None = None):
        decided = action_of(kind)  # refuse unclassified kinds where they are made
        super().__init__(message)
        self.kind = kind
        self.field = field
        self._retry = Retry(retry) if retry is not None else decided

    @property
    def retry(self) -> Retry:
        return self._retry

    @property
    def action(self) -> Retry:
        """The robustness issue's name for `retry`."""
        return self._retry

    def __reduce__(self):
        # Exceptions pickle as cls(*args), which fits neither (kind, message) nor a
        # subclass's own arguments; Celery pickles the errors of retries and failures.
        return (_rebuilt, (type(self), self.args, self.__dict__))


class SignInError(MailError):
    """A sign-in check failed. `kind` is stable for code (its retry says what it
    means); str() is for people; `field` is the form field it is about."""

    def __init__(self, kind: str, message: str, *, field: str = "password"):
        super().__init__(kind, message, field)


def _rebuilt(cls: type, args: tuple, state: dict) -> MailError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error
