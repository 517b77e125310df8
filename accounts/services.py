"""Writes for mailboxes: adding one after a real sign-in check, notifications, keys."""

from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from mailsetup import crypto
from providers.addresses import Address
from providers.models import EmailProvider, Source
from providers.services import provider_domain_remember

from .connection import SignInError, check_sign_in
from .models import AccountNotification, EmailAccount, SignInAttempt

SIGN_IN_LIMIT = 5
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


def account_create(
    *,
    user,
    provider: EmailProvider,
    address: Address,
    login: str,
    password: str,
) -> EmailAccount:
    """Check the login against the real servers, then save the mailbox with defaults.

    Nothing is written but the rate-limit record unless the check passes.
    """
    existing = EmailAccount.objects.filter(owner=user, address=address.email).first()
    if existing is not None:
        raise DuplicateAccount(existing)
    _rate_limit(user=user, address=address)
    attempt = SignInAttempt.objects.create(user=user, address=address.email)
    check_sign_in(provider=provider, address=address, login=login, password=password)
    SignInAttempt.objects.filter(pk=attempt.pk).update(succeeded=True)
    try:
        with transaction.atomic():
            first = not EmailAccount.objects.filter(owner=user).exists()
            account = EmailAccount(
                owner=user,
                provider=provider,
                address=address.email,
                login=login,
                display_name=user.get_full_name(),
                is_default_sender=first,
            )
            account.set_password(password)
            account.save()
            AccountNotification.objects.create(
                account=account, kind=AccountNotification.Kind.ACCOUNT_ADDED
            )
            # The next person with this domain skips choosing a provider. A mapping
            # that exists (built-in, an admin's, discovery's) stays as it is.
            provider_domain_remember(domain=address.domain, provider=provider, source=Source.USER)
    except IntegrityError:
        # The same address added twice at once, from two tabs.
        existing = EmailAccount.objects.get(owner=user, address=address.email)
        raise DuplicateAccount(existing) from None
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
    for account in EmailAccount.objects.select_for_update().only("pk", "password_encrypted"):
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
