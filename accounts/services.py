"""Writes for mailboxes: adding one after a real sign-in check, notifications, keys."""

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.html import strip_tags
from django.views.decorators.debug import sensitive_variables

from mail.errors import MailError, SignInError
from mail.registry import check_sign_in
from mailsetup import crypto
from mailsetup.queue import publish_on_commit
from providers.addresses import Address, normalize_address
from providers.models import EmailProvider, Source
from providers.services import provider_domain_remember, provider_save_checked

from .models import (
    AccountChange,
    AccountNotification,
    ContactsImport,
    EmailAccount,
    SignInAttempt,
    TokenRevocation,
)
from .oauth import TokenError, token_revoke, tokens_store
from .signals import download_wanted, mailbox_deleting, protocol_changed, signed_in_again

logger = logging.getLogger(__name__)

# Sign-in checks per user and address, and per user whatever the address, in the
# window. Never per address alone: one person's attempts must not lock another out of
# adding their own mailbox (issue 15, point 7).
SIGN_IN_LIMIT = 5
SIGN_IN_LIMIT_PER_USER = 20
# Changed only after a real sign-in check, never through account_settings_update.
SIGN_IN_FIELDS = {"password_encrypted", "login", "provider"}
SIGN_IN_WINDOW = timedelta(minutes=10)
# A change of these settings wants the emails now, not at the next scheduled run: a
# longer period reaches further back.
DOWNLOAD_FIELDS = {"sync_period"}


class DuplicateAccount(Exception):
    def __init__(self, account: EmailAccount):
        super().__init__(f"You have already added {account.address}.")
        self.account = account


class AccountRemoved(Exception):
    """The mailbox was removed while its new sign-in was being checked: nothing of the
    new sign-in is kept (a new refresh token is revoked instead)."""


def _locked_live(account: EmailAccount) -> EmailAccount:
    """The mailbox's row, locked, if it is still there and not removed; else raise
    AccountRemoved. A removal takes the same lock: whichever comes second sees the
    other's result, so a removal never leaves a credential behind and a sign-in never
    brings one back."""
    locked = (
        EmailAccount.objects.select_for_update()
        .select_related("provider")
        .filter(pk=account.pk, removed_at__isnull=True)
        .first()
    )
    if locked is None:
        raise AccountRemoved(f"{account.address} was removed meanwhile; nothing was saved.")
    return locked


def _rate_limit(*, user, address: Address) -> None:
    since = timezone.now() - SIGN_IN_WINDOW
    recent = SignInAttempt.objects.filter(created_at__gte=since)
    mine = recent.filter(user=user)
    for attempts, limit, whose in (
        (mine.filter(address=address.email), SIGN_IN_LIMIT, f"for {address.email}"),
        (mine, SIGN_IN_LIMIT_PER_USER, "from your user account"),
    ):
        times = list(attempts.order_by("-created_at").values_list("created_at", flat=True)[:limit])
        if len(times) >= limit:
            # The oldest attempt that still counts leaves the window first.
            retry_at = times[limit - 1] + SIGN_IN_WINDOW
            minutes = max(1, round((retry_at - timezone.now()).total_seconds() / 60))
            raise SignInError(
                "rate_limited",
                f"Too many sign-in attempts {whose} ({limit} in "
                f"{SIGN_IN_WINDOW.seconds // 60} minutes). Try again after "
                f"{timezone.localtime(retry_at):%H:%M} (in about {minutes} "
                f"minute{'s' if minutes != 1 else ''}).",
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
            # With the mailbox, in one transaction: one whose tokens could not be kept
            # stayed saved without them, and adding it again said "already added".
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
        # A mailbox coming back signs in as it is added now: with a password, none of
        # an earlier OAuth sign-in stays (its tokens, or a "Reconnect" it was waiting for);
        # with OAuth, tokens_store sets them again.
        account.uses_oauth = False
        account.oauth_access_token_encrypted = account.oauth_refresh_token_encrypted = ""
        account.oauth_expires_at = account.reconnect_needed_at = None
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
    values: int = 0
    # "app.model.field" -> how many values of that column were re-encrypted
    fields: dict[str, int] = dataclasses.field(default_factory=dict)


def encrypted_fields(models=None) -> list:
    """Every column that holds a Fernet token, in every installed model (or in
    `models`): each field whose class is an EncryptedField (mailsetup.fields), whatever
    its name or subclass. tests/test_key_rotation.py also finds them by their contents,
    and fails when a secret lies in a column of another class."""
    from django.apps import apps

    from mailsetup.fields import EncryptedField

    return [
        field
        for model in (apps.get_models() if models is None else models)
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedField)
    ]


@transaction.atomic
def credentials_rotate(*, models=None) -> RotationOutcome:
    """Re-encrypt every stored secret under the newest key in CREDENTIAL_KEYS: mailbox
    passwords, OAuth access and refresh tokens, client secrets, tokens waiting for
    revocation, and any encrypted field added later (`models`: only these)."""
    outcome = RotationOutcome()
    for field in encrypted_fields(models):
        model = field.model
        rows = model.objects.select_for_update().exclude(**{field.name: ""})
        for pk, token in rows.values_list("pk", field.name).iterator():
            # One UPDATE per value, of this column only: a row's other encrypted columns
            # and its other fields (updated_at) are left to their own pass.
            model.objects.filter(pk=pk).update(**{field.name: crypto.rotate(token)})
            name = f"{model._meta.label_lower}.{field.name}"
            outcome.values += 1
            outcome.fields[name] = outcome.fields.get(name, 0) + 1
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
    if DOWNLOAD_FIELDS & changed.keys():
        download_wanted.send(sender=EmailAccount, account_id=account.pk, items_only=False)
    return list(changed)


def account_import_now(*, account: EmailAccount, items: str) -> bool:
    """Saving an Exchange import section ("meetings" or "contacts") with its import on
    runs the import now, whatever the schedule. Returns whether it was asked for."""
    wanted = (
        account.meetings_import
        if items == "meetings"
        else account.contacts_import != ContactsImport.OFF
    )
    if wanted:
        download_wanted.send(sender=EmailAccount, account_id=account.pk, items_only=True)
    return wanted


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
        locked = _locked_live(account)
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
    signed_in_again.send(sender=EmailAccount, account_id=account.pk)
    return changed


@sensitive_variables("oauth")
def account_reconnect(
    *, account: EmailAccount, actor, oauth: dict, provider: EmailProvider | None = None
) -> None:
    """An OAuth 2.0 mailbox signed in again ("Reconnect"): the new tokens are checked
    with the real IMAP and SMTP servers first, then replace the old ones. Settings,
    folders and emails stay as they were; only the sign-in changes.

    With `provider` (one of accounts.selectors.same_sign_in_elsewhere's), the mailbox
    moves to that card's protocol: checked with its servers, it takes the card with the
    tokens, and sync reads it afresh (accounts.signals.protocol_changed); its settings
    and emails stay, the emails found again by their Message-ID."""
    address = normalize_address(account.address)
    moving = provider is not None and provider.pk != account.provider_id
    provider = provider if moving else account.provider
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=actor.pk).first()
        _rate_limit(user=actor, address=address)
        attempt = SignInAttempt.objects.create(user=actor, address=address.email)
    check_sign_in(
        provider=provider, address=address, login=account.login,
        access_token=oauth["access_token"],
    )  # fmt: skip
    SignInAttempt.objects.filter(pk=attempt.pk).update(succeeded=True)
    try:
        with transaction.atomic():
            locked = _locked_live(account)
            if moving:
                AccountChange.objects.create(
                    account=locked, address=locked.address, actor=actor, field="provider",
                    old_value=locked.provider.name, new_value=provider.name,
                )  # fmt: skip
                locked.provider = provider
                locked.save(update_fields=["provider"])
                protocol_changed.send(sender=EmailAccount, account_id=locked.pk)
            tokens_store(account=locked, answer=oauth)
            AccountChange.objects.create(
                account=locked, address=locked.address, actor=actor, field="sign-in",
                old_value="reconnect needed" if account.reconnect_needed_at else "",
                new_value="signed in again",
            )  # fmt: skip
    except AccountRemoved:
        with transaction.atomic():
            _revoke_unused(account, oauth)
        raise
    account.reconnect_needed_at = None
    if moving:
        account.provider = provider
    signed_in_again.send(sender=EmailAccount, account_id=account.pk)


def account_remove(*, account: EmailAccount, actor, keep_emails: bool) -> None:
    """Remove a mailbox from the app; nothing on the mail server is touched. Its emails
    either stay (on the owner's CRM timelines, the row kept without any credential) or go
    with it. Every credential is wiped at once; an OAuth refresh token is also revoked
    at the provider (RFC 7009) by a background task that takes the mailbox's id, where
    the provider card has a revocation address. Its shares end with it: grantees lose
    access to the kept emails (sharing.selectors), the grants stay for its owner to see
    and revoke, and count again only if the owner adds it and shares it again. If it was
    the default sender, the next mailbox that sends becomes the default."""
    with transaction.atomic():
        try:
            locked = _locked_live(account)
        except AccountRemoved:
            return  # removed by someone else meanwhile: done once, logged once
        was_default = locked.is_default_sender
        revoking = _revocation_keep(locked)
        AccountChange.objects.create(
            account=locked, address=locked.address, actor=actor, field="removed",
            new_value="emails kept" if keep_emails else "emails deleted",
        )  # fmt: skip
        if locked.shared_access:
            AccountChange.objects.create(
                account=locked, address=locked.address, actor=actor, field="shared_access",
                old_value="On", new_value="Off (mailbox removed)",
            )  # fmt: skip
        if keep_emails:
            locked.removed_at = timezone.now()
            _credentials_wipe(locked)
            locked.auto_sync = locked.send_enabled = locked.is_default_sender = False
            locked.shared_access = False
            locked.save()
            # Its "What next?" ends with it: added again (the same row), it would show
            # beside the new one.
            locked.notifications.filter(dismissed_at__isnull=True).update(
                dismissed_at=timezone.now()
            )
        else:
            # The apps above this one clean up what they own of it (sync: its files,
            # once the rows are surely gone).
            mailbox_deleting.send(sender=EmailAccount, account=locked)
            locked.delete()
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
        if revoking:
            from .tasks import revoke_tokens

            # A task queue that is down does not stop the removal: the sweep queues it.
            publish_on_commit(revoke_tokens, account.pk)
    logger.info(
        "Mailbox %s (id %s) removed by user %s, emails %s; credentials wiped%s.",
        account.address, account.pk, getattr(actor, "pk", None),
        "kept" if keep_emails else "deleted",
        ", refresh token queued for revocation" if revoking else "",
    )  # fmt: skip


@sensitive_variables("oauth")
def _revoke_unused(account: EmailAccount, oauth: dict) -> None:
    """A refresh token issued for a mailbox removed meanwhile is kept only to be
    revoked, as the removal does with the old one (the caller's transaction)."""
    token = oauth.get("refresh_token")
    if not token or not account.provider.oauth_revoke_url:
        return
    TokenRevocation.objects.create(
        account_id=account.pk, address=account.address, provider=account.provider,
        token_encrypted=crypto.encrypt(token),
    )  # fmt: skip
    from .tasks import revoke_tokens

    publish_on_commit(revoke_tokens, account.pk)
    logger.info(
        "Mailbox %s (id %s) was removed during its reconnection; the new refresh token "
        "is queued for revocation.", account.address, account.pk,
    )  # fmt: skip


def _credentials_wipe(account: EmailAccount) -> None:
    account.password_encrypted = ""
    account.oauth_access_token_encrypted = ""
    account.oauth_refresh_token_encrypted = ""
    account.oauth_expires_at = None


def _revocation_keep(account: EmailAccount) -> bool:
    """Keep the refresh token (encrypted, apart from the mailbox) until the provider has
    been asked to revoke it; without a revocation address there is nothing to ask."""
    token = account.oauth_refresh_token_encrypted
    if not token:
        return False
    if not account.provider.oauth_revoke_url:
        logger.info(
            "Mailbox %s (id %s): %s has no revocation address; its refresh token is wiped, "
            "not revoked.", account.address, account.pk, account.provider.name,
        )  # fmt: skip
        return False
    TokenRevocation.objects.create(
        account_id=account.pk, address=account.address, provider=account.provider,
        token_encrypted=token,
    )  # fmt: skip
    return True


# Revocation is tried this often before the token is given up (and wiped anyway).
REVOKE_ATTEMPTS = 8


class RevocationPending(Exception):
    """The provider could not be asked now; the task tries again later."""


def tokens_revoke(*, account_id: int) -> int:
    """Ask the provider to revoke the refresh tokens kept for the removed mailbox, and
    forget each one the provider answered for; returns how many were revoked. Raises
    RevocationPending when the provider could not be reached (the task retries), until
    REVOKE_ATTEMPTS, after which the token is wiped unrevoked and that is logged.

    Each row is claimed (locked, skipping rows another worker holds) for the time of its
    request: the removal's task, the sweep's and a retry may all run at once, and a
    token is sent to the provider by one of them only, then forgotten."""
    revoked, pending = 0, []
    ids = TokenRevocation.objects.filter(account_id=account_id).order_by("pk")
    for row_id in list(ids.values_list("pk", flat=True)):
        with transaction.atomic():
            row = (
                TokenRevocation.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("provider")
                .filter(pk=row_id)
                .first()
            )
            if row is None:
                continue  # done meanwhile, or being done by another worker now
            outcome = _revoke_one(row, account_id)
        if outcome == "pending":
            pending.append(row.address)
        elif outcome == "revoked":
            revoked += 1
    if pending:
        raise RevocationPending(", ".join(pending))
    return revoked


def _revoke_one(row: TokenRevocation, account_id: int) -> str:
    """One claimed row: "revoked", "pending" (kept for a retry) or "dropped" (wiped
    unrevoked, logged). The token itself is never logged."""
    where = row.provider.oauth_revoke_url
    try:
        done = token_revoke(provider=row.provider, token=crypto.decrypt(row.token_encrypted))
    except TokenError as error:
        row.attempts += 1
        row.last_error = str(error)[:500]
        if row.attempts < REVOKE_ATTEMPTS:
            row.save(update_fields=["attempts", "last_error"])
            logger.warning(
                "Revoking the refresh token of removed mailbox %s (id %s) at %s failed "
                "(attempt %s, tried again later): %s",
                row.address, account_id, where, row.attempts, error,
            )  # fmt: skip
            return "pending"
        logger.error(
            "Gave up revoking the refresh token of removed mailbox %s (id %s) at %s "
            "after %s attempts (%s); the token is wiped here, unrevoked.",
            row.address, account_id, where, row.attempts, error,
        )  # fmt: skip
        outcome = "dropped"
    except (MailError, crypto.CredentialError) as error:
        logger.error(
            "The refresh token of removed mailbox %s (id %s) cannot be revoked at %s "
            "(%s); it is wiped here, unrevoked.", row.address, account_id, where, error,
        )  # fmt: skip
        outcome = "dropped"
    else:
        if done:
            logger.info(
                "Revoked the refresh token of removed mailbox %s (id %s) at %s.",
                row.address, account_id, where,
            )  # fmt: skip
            outcome = "revoked"
        else:
            logger.warning(
                "%s did not confirm revoking the refresh token of removed mailbox %s "
                "(id %s); it is wiped here.", where, row.address, account_id,
            )  # fmt: skip
            outcome = "dropped"
    row.delete()
    return outcome


def revocations_due() -> list[int]:
    """Mailboxes whose revocation waits longer than its task should have taken (the task
    queue was down at the removal, or a worker died): the sweep queues them again."""
    stale = timezone.now() - timedelta(minutes=10)
    rows = TokenRevocation.objects.filter(created_at__lt=stale)
    return sorted(set(rows.values_list("account_id", flat=True)))
