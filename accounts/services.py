"""Writes for mailboxes: adding one after a real sign-in check, notifications, keys."""

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.html import strip_tags
from django.views.decorators.debug import sensitive_variables

from mailsetup import crypto
from providers.addresses import Address, normalize_address
from providers.models import EmailProvider, Source
from providers.services import provider_domain_remember, provider_save_checked

from .connection import SignInError, check_sign_in
from .models import AccountChange, AccountNotification, EmailAccount, SignInAttempt
from .oauth import tokens_store

SIGN_IN_LIMIT = 5
# Changed only after a real sign-in check, never through account_settings_update.
SIGN_IN_FIELDS = {"password_encrypted", "login", "provider"}
SIGN_IN_WINDOW = timedelta(minutes=10)


class DuplicateAccount(Exception):
    def __init__(self, account: EmailAccount):
        super().__init__(f"You have already added {account.address}.")
        self.account = account


def _rate_limit(*, user, address: Address) -> None:
    since = timezone.now() - SIGN_IN_WINDOW
    recent = SignInAttempt.objects.filter(created_at__gte=since)
    for attempts, whose in (
        (recent.filter(user=user), "from your user account"),
        (recent.filter(address=address.email), f"for {address.email}"),
    ):
        times = list(attempts.order_by("-created_at").values_list("created_at", flat=True))
        if len(times) >= SIGN_IN_LIMIT:
            # The oldest attempt that still counts leaves the window first.
            retry_at = times[SIGN_IN_LIMIT - 1] + SIGN_IN_WINDOW
            minutes = max(1, round((retry_at - timezone.now()).total_seconds() / 60))
            raise SignInError(
                "rate_limited",
                f"Too many sign-in attempts {whose} ({SIGN_IN_LIMIT} in "
                f"{SIGN_IN_WINDOW.seconds // 60} minutes). Try again after "
                f"{timezone.localtime(retry_at):%H:%M} (in about {minutes} minutes).",
            )


def _proves_domain(provider: EmailProvider, login: str, address: Address) -> bool:
    """Whether a passed check shows the provider really serves the address's domain.

    Only then is the domain remembered for everyone: the server accepted the full
    address as its login, and the provider is one an admin vouches for. Otherwise any
    user could map a company's domain to a server of their choosing and collect the
    next colleague's password.
    """
    return provider.source in {Source.BUILTIN, Source.ADMIN} and login == address.email


@sensitive_variables("password", "oauth", "token")
def account_create(
    *,
    user,
    provider: EmailProvider,
    address: Address,
    login: str,
    password: str = "",
    oauth: dict | None = None,
) -> EmailAccount:
    """Check the login against the real servers, then save the mailbox with defaults.
    `oauth` is a token endpoint's answer when the user signed in with OAuth 2.0.

    Nothing is written but the rate-limit record unless the check passes. An unsaved
    `provider` (a drafted new server) is saved with the mailbox, after the check.
    """
    connected = EmailAccount.objects.filter(owner=user, removed_at__isnull=True)
    existing = connected.filter(address=address.email).first()
    if existing is not None:
        raise DuplicateAccount(existing)
    with transaction.atomic():
        # One user's attempts are counted one at a time, so parallel requests cannot
        # slip past the limit between the count and the insert.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        _rate_limit(user=user, address=address)
        attempt = SignInAttempt.objects.create(user=user, address=address.email)
    token = oauth["access_token"] if oauth else ""
    directory = check_sign_in(
        provider=provider, address=address, login=login, password=password, access_token=token
    )
    SignInAttempt.objects.filter(pk=attempt.pk).update(succeeded=True)
    with transaction.atomic():
        if provider.pk is None:
            # A new server a manager drafted in the wizard: saved only now that its
            # servers accepted a real sign-in, in one transaction with the mailbox.
            provider = provider_save_checked(provider=provider, domain=address.domain)
        try:
            account = _account_save(user, provider, address, login, password)
        except IntegrityError:
            existing = connected.filter(address=address.email).first()
            if existing is not None:  # the same address added twice at once, from two tabs
                raise DuplicateAccount(existing) from None
            # Two first mailboxes added at once: both wanted to be the default sender.
            account = _account_save(user, provider, address, login, password, first=False)
    if oauth:
        tokens_store(account=account, answer=oauth)
    if directory and not account.display_name:
        # The name colleagues know the mailbox by, from the Exchange directory.
        account.display_name = directory
        account.save(update_fields=["display_name", "updated_at"])
    return account


@sensitive_variables("password")
def _account_save(user, provider, address, login, password, first=None) -> EmailAccount:
    with transaction.atomic():
        if first is None:
            first = not EmailAccount.objects.filter(owner=user, removed_at__isnull=True).exists()
        # A mailbox removed with its emails kept comes back with them, and its sync
        # resumes where it stopped instead of downloading everything again.
        account = EmailAccount.objects.select_for_update().filter(
            owner=user, address=address.email, removed_at__isnull=False
        ).first() or EmailAccount(owner=user, address=address.email)
        account.provider = provider
        account.login = login
        account.removed_at = None
        account.auto_sync = account.send_enabled = True
        # Its old grants are kept but wait for the owner to share it again: coming back
        # is not a decision to give anyone their rights back.
        account.shared_access = False
        account.is_default_sender = first
        if not account.display_name:
            account.display_name = user.get_full_name()
        account.set_password(password)
        account.save()
        AccountNotification.objects.create(
            account=account, kind=AccountNotification.Kind.ACCOUNT_ADDED
        )
        if _proves_domain(provider, login, address):
            # The next person with this domain skips choosing a provider. A mapping
            # that exists (built-in, an admin's, discovery's) stays as it is.
            provider_domain_remember(domain=address.domain, provider=provider, source=Source.USER)
    return account


def notification_dismiss(*, user, notification_id: int) -> bool:
    updated = AccountNotification.objects.filter(
        pk=notification_id, account__owner=user, dismissed_at__isnull=True
    ).update(dismissed_at=timezone.now())
    return bool(updated)


@dataclass
class RotationOutcome:
    accounts: int = 0
    providers: int = 0


@transaction.atomic
def credentials_rotate() -> RotationOutcome:
    """Re-encrypt every stored secret under the newest key in CREDENTIAL_KEYS."""
    outcome = RotationOutcome()
    accounts = EmailAccount.objects.select_for_update().exclude(password_encrypted="")
    for account in accounts.only("pk", "password_encrypted"):
        account.password_encrypted = crypto.rotate(account.password_encrypted)
        account.save(update_fields=["password_encrypted"])
        outcome.accounts += 1
    providers = EmailProvider.objects.select_for_update().exclude(oauth_client_secret_encrypted="")
    for provider in providers.only("pk", "oauth_client_secret_encrypted"):
        provider.oauth_client_secret_encrypted = crypto.rotate(
            provider.oauth_client_secret_encrypted
        )
        provider.save(update_fields=["oauth_client_secret_encrypted"])
        outcome.providers += 1
    return outcome


def _shown(field: str, value) -> str:
    if field == "signature_html":
        # The trail says what changed, not megabytes of markup and images.
        text = " ".join(strip_tags(value).split())
        images = value.count("<img")
        return (text[:120] + (f" (+{images} image{'s' * (images != 1)})" if images else "")) or (
            "none"
        )
    model_field = EmailAccount._meta.get_field(field)
    if model_field.choices:
        return str(dict(model_field.flatchoices).get(value, value))
    if isinstance(value, bool):
        return "On" if value else "Off"
    return str(value)


@dataclass(frozen=True)
class Digest:
    """A value as shown, by its digest: a signature with images is too large to post
    twice."""

    hex: str

    @classmethod
    def of(cls, value: str) -> "Digest":
        return cls(hashlib.sha256(value.encode()).hexdigest())

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            return Digest.of(other).hex == self.hex
        return isinstance(other, Digest) and other.hex == self.hex

    __hash__ = None  # type: ignore[assignment]


class SettingsConflict(Exception):
    """Settings this user changed that someone else changed too since the page was
    shown: field -> the value now. Nothing was saved."""

    def __init__(self, now: dict):
        super().__init__(", ".join(now))
        self.now = now


def shown_text(field: str, value) -> str:
    """A setting's value in words, as the audit trail and a conflict name it."""
    return _shown(field, value)


@transaction.atomic
def account_settings_update(
    *, account: EmailAccount, actor, values: dict, shown: dict | None = None
) -> list[str]:
    """Save the settings that changed, each written to the audit trail (who, what,
    old -> new). One default sender per user: choosing one clears the other, and a
    mailbox that stops sending stops being the default. Returns the changed fields.

    `values` holds only what the user changed; `shown`, the values those fields had on
    the user's page (a Digest for a signature). A field someone else changed meanwhile
    to another value than this user's raises SettingsConflict, and nothing is saved."""
    if values.keys() & SIGN_IN_FIELDS:
        raise ValueError("credentials are changed through the sign-in check, not here")
    locked = EmailAccount.objects.select_for_update().get(pk=account.pk)
    conflicts = {
        field: getattr(locked, field)
        for field, value in values.items()
        if shown is not None
        and field in shown
        and shown[field] != getattr(locked, field)
        and getattr(locked, field) != value
    }
    if conflicts:
        raise SettingsConflict(conflicts)
    changed = {field: value for field, value in values.items() if getattr(locked, field) != value}
    if changed.get("is_default_sender") and not changed.get("send_enabled", locked.send_enabled):
        # Sending was turned off elsewhere since the page showed it on.
        raise SettingsConflict({"send_enabled": locked.send_enabled})
    if changed.get("send_enabled") is False and locked.is_default_sender:
        changed["is_default_sender"] = False
    trail = []
    if changed.get("is_default_sender"):
        others = EmailAccount.objects.select_for_update().filter(
            owner_id=locked.owner_id, is_default_sender=True
        )
        for other in others.exclude(pk=locked.pk):
            other.is_default_sender = False
            other.save(update_fields=["is_default_sender", "updated_at"])
            trail.append((other, "is_default_sender", True, False))
    for field, value in changed.items():
        trail.append((locked, field, getattr(locked, field), value))
        setattr(locked, field, value)
    if changed:
        locked.save(update_fields=[*changed, "updated_at"])
    AccountChange.objects.bulk_create(
        [
            AccountChange(
                account=row,
                address=row.address,
                actor=actor,
                field=field,
                old_value=_shown(field, old),
                new_value=_shown(field, new),
            )
            for row, field, old, new in trail
        ]
    )
    for field in changed:
        setattr(account, field, getattr(locked, field))
    return list(changed)


def account_change_record(*, account: EmailAccount, actor, field: str, old: str, new: str):
    """One line of the settings audit trail, for changes made outside this module (the
    folder choice lives with the sync)."""
    return AccountChange.objects.create(
        account=account, address=account.address, actor=actor, field=field,
        old_value=old, new_value=new,
    )  # fmt: skip


@sensitive_variables("password")
def account_credentials_change(
    *, account: EmailAccount, actor, login: str, password: str
) -> list[str]:
    """Re-enter the password (and the login, where the provider lets the user choose
    it): the wizard's real sign-in check runs first, and the stored secret is replaced
    only once the new one works. Returns what changed, for the audit trail's sake."""
    address = normalize_address(account.address)
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=actor.pk).first()
        _rate_limit(user=actor, address=address)
        attempt = SignInAttempt.objects.create(user=actor, address=address.email)
    check_sign_in(provider=account.provider, address=address, login=login, password=password)
    SignInAttempt.objects.filter(pk=attempt.pk).update(succeeded=True)
    with transaction.atomic():
        locked = EmailAccount.objects.select_for_update().get(pk=account.pk)
        changed = ["password"]
        trail = [AccountChange(field="password", old_value="", new_value="changed")]
        if login != locked.login:
            changed.append("login")
            trail.append(AccountChange(field="login", old_value=locked.login, new_value=login))
        locked.login = login
        locked.set_password(password)
        locked.save(update_fields=["login", "password_encrypted", "updated_at"])
        for change in trail:
            change.account, change.address, change.actor = locked, locked.address, actor
        AccountChange.objects.bulk_create(trail)
    account.login, account.password_encrypted = locked.login, locked.password_encrypted
    return changed


@sensitive_variables("oauth")
def account_reconnect(*, account: EmailAccount, actor, oauth: dict) -> None:
    """An OAuth 2.0 mailbox signed in again ("Reconnect"): the new tokens are checked
    with the real IMAP and SMTP servers first, then replace the old ones. Settings,
    folders and emails stay as they were; only the sign-in changes."""
    address = normalize_address(account.address)
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=actor.pk).first()
        _rate_limit(user=actor, address=address)
        attempt = SignInAttempt.objects.create(user=actor, address=address.email)
    check_sign_in(
        provider=account.provider, address=address, login=account.login,
        access_token=oauth["access_token"],
    )  # fmt: skip
    SignInAttempt.objects.filter(pk=attempt.pk).update(succeeded=True)
    with transaction.atomic():
        locked = EmailAccount.objects.select_for_update().get(pk=account.pk)
        tokens_store(account=locked, answer=oauth)
        AccountChange.objects.create(
            account=locked, address=locked.address, actor=actor, field="sign-in",
            old_value="reconnect needed" if account.reconnect_needed_at else "",
            new_value="signed in again",
        )  # fmt: skip
    account.reconnect_needed_at = None


def account_remove(*, account: EmailAccount, actor, keep_emails: bool) -> None:
    """Remove a mailbox from the app; nothing on the mail server is touched. Its emails
    either stay (on the CRM's timelines, the row kept without its secret) or go with it.
    If it was the default sender, the next mailbox that sends becomes the default."""
    with transaction.atomic():
        locked = EmailAccount.objects.select_for_update().get(pk=account.pk)
        was_default = locked.is_default_sender
        AccountChange.objects.create(
            account=locked, address=locked.address, actor=actor, field="removed",
            new_value="emails kept" if keep_emails else "emails deleted",
        )  # fmt: skip
        if keep_emails:
            locked.removed_at = timezone.now()
            locked.password_encrypted = ""
            locked.auto_sync = locked.send_enabled = locked.is_default_sender = False
            locked.save()
        else:
            files = _files_of(locked)
            locked.delete()
            # The files go once the rows are surely gone.
            transaction.on_commit(lambda: _delete_files(files))
        if was_default:
            successor = (
                EmailAccount.objects.filter(
                    owner_id=locked.owner_id, removed_at__isnull=True, send_enabled=True
                )
                .order_by("address")
                .first()
            )
            if successor is not None:
                successor.is_default_sender = True
                successor.save(update_fields=["is_default_sender", "updated_at"])


def _files_of(account: EmailAccount) -> list[str]:
    """The names of the mailbox's attachment files and kept originals."""
    from django.apps import apps

    # The sync app owns emails and depends on this one, not the other way round.
    attachments = apps.get_model("sync", "Attachment").objects.filter(email__account=account)
    originals = apps.get_model("sync", "Email").objects.filter(account=account)
    return [
        *attachments.exclude(file="").values_list("file", flat=True),
        *originals.exclude(original="").values_list("original", flat=True),
    ]


def _delete_files(names: list[str]) -> None:
    from django.core.files.storage import default_storage

    for name in names:
        default_storage.delete(name)
