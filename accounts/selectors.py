from dataclasses import dataclass
from datetime import date, timedelta

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from django.utils import timezone

from mail.backend import login_for
from providers.addresses import Address, parent_domains
from providers.models import AuthMethod, EmailProvider, LoginFormat, ProviderDomain, Source
from providers.services import GUESSED

from .guides import GUIDES, Guide
from .models import AccountNotification, EmailAccount

# The rule itself lives with the save it decides; told here before it happens.
from .services import _proves_domain

MANAGE_PROVIDERS = "providers.manage_email_providers"


def accounts_for_user(user) -> QuerySet[EmailAccount]:
    """The mailboxes the user owns and has not removed. Who may do what with any
    mailbox, shared ones included, is decided in sharing.selectors."""
    return EmailAccount.objects.filter(owner=user, removed_at__isnull=True).select_related(
        "provider"
    )


# Owners hear of a known end of their mailbox's sign-in this long before it comes.
SIGN_IN_END_WARNING = timedelta(days=14)


@dataclass
class SignInAlert:
    """Why a mailbox signed in with OAuth 2.0 stops, or will stop, working."""

    account: EmailAccount
    # The provider refused its tokens: its owner must sign in again ("Reconnect").
    reconnect: bool
    # The end date of the app's client secret on the provider card, when near or past.
    ends_on: date | None

    @property
    def days_left(self) -> int | None:
        return None if self.ends_on is None else (self.ends_on - timezone.localdate()).days


def _alert(account: EmailAccount, warn_until: date) -> SignInAlert | None:
    ends_on = account.provider.oauth_secret_expires_on
    if ends_on is not None and ends_on > warn_until:
        ends_on = None
    if not account.uses_oauth or not (account.reconnect_needed_at or ends_on):
        return None
    return SignInAlert(
        account=account, reconnect=account.reconnect_needed_at is not None, ends_on=ends_on
    )


def sign_in_alert(account: EmailAccount) -> SignInAlert | None:
    return _alert(account, timezone.localdate() + SIGN_IN_END_WARNING)


def sign_in_alerts(user, *, accounts: list[EmailAccount] | None = None) -> list[SignInAlert]:
    """The banners of the user's own mailboxes: reconnect needed, or a sign-in that ends
    on a known day (one query). `accounts`: the user's own mailboxes as accounts_for_user
    read them (with their providers), on a page that lists them anyway: no query (issue
    19)."""
    warn_until = timezone.localdate() + SIGN_IN_END_WARNING
    if accounts is None:
        accounts = accounts_for_user(user).filter(
            Q(reconnect_needed_at__isnull=False)
            | Q(provider__oauth_secret_expires_on__lte=warn_until),
            uses_oauth=True,
        )
    return [alert for account in accounts if (alert := _alert(account, warn_until))]


def open_notifications(user) -> QuerySet[AccountNotification]:
    # Not a removed mailbox's: its "What next?" led to pages that no longer exist.
    return AccountNotification.objects.filter(
        account__owner=user, account__removed_at__isnull=True, dismissed_at__isnull=True
    ).select_related("account")


# Providers anyone may be offered: shipped, made by an administrator, or Thunderbird's
# curated ISPDB. One that discovery made from a domain's own autoconfig (or found by its
# MX) speaks for that domain only: a stranger's domain must not put a server of its
# choosing in everybody's list.
LISTED_SOURCES = [Source.BUILTIN, Source.ADMIN, Source.ISPDB]


def providers_offered(domain: str) -> QuerySet[EmailProvider]:
    """The providers a user adding an address of `domain` may choose or sign in with:
    those listed for everyone, and those mapped to the domain or to a parent of it up to
    the registrable domain (discovery finds a subdomain's server through its parent, and
    the parent's owner owns its subdomains)."""
    lineage = [domain, *parent_domains(domain)]
    mapped = ProviderDomain.objects.filter(domain__in=lineage).values("provider_id")
    # A card that neither receives nor sends connects nothing: offered, its users
    # learnt it only after typing their password.
    return EmailProvider.objects.filter(Q(source__in=LISTED_SOURCES) | Q(pk__in=mapped)).exclude(
        receive_enabled=False, send_enabled=False
    )


def providers_by_pk(pks: list[int]) -> dict[int, EmailProvider]:
    """Provider cards by id (those still there), for what discovery suggested."""
    return EmailProvider.objects.in_bulk(pks)


def providers_matching(query: str, domain: str) -> QuerySet[EmailProvider]:
    providers = providers_offered(domain)
    query = query.strip()
    if query:
        providers = providers.filter(
            Q(name__icontains=query) | Q(domains__domain__icontains=query)
        ).distinct()
    return providers


def provider_managers() -> list:
    """Who a user can ask to add a mail server: holders of the manage permission."""
    # Named: django-axes adds its own authentication backend, which keeps no permissions.
    users = (
        get_user_model()
        .objects.with_perm(MANAGE_PROVIDERS, backend="django.contrib.auth.backends.ModelBackend")
        .filter(is_active=True)
    )
    return list(users.order_by("last_name", "username")[:5])


def guide_for(provider: EmailProvider) -> Guide | None:
    return GUIDES.get(provider.security_guide)


@dataclass(frozen=True)
class DomainMemory:
    """Whether a sign-in through the wizard makes the address's domain lead everyone to
    the provider, and why, in words for the sign-in step (`before`) and for the message
    once the mailbox is added (`after`). `remembered` is None while it depends on the
    login the user is still to type."""

    remembered: bool | None
    before: str
    after: str


def _may_prove(provider: EmailProvider, address: Address, login: str | None) -> bool:
    """Whether a passed sign-in would prove the provider serves the domain (and so
    replace a mapping discovery only guessed): a drafted new server, or `_proves_domain`."""
    if provider.pk is None:
        return True
    return _proves_domain(provider, login or login_for(provider, address), address)


def domain_memory(*, provider: EmailProvider, address: Address, login: str | None) -> DomainMemory:
    """What accounts.services does with the domain after a passed sign-in check (a
    drafted new server saves it with the card; otherwise `_proves_domain` decides, and
    the first mapping stays), told before it happens. `login`: None while unknown."""
    domain, name = address.domain, provider.name
    everyone = f"people with an @{domain} address go straight to {name}"
    entry = ProviderDomain.objects.select_related("provider").filter(domain=domain).first()
    if entry is not None and provider.pk is not None and entry.provider_id == provider.pk:
        text = f"{domain} is already remembered for everyone: {everyone}."
        return DomainMemory(True, text, "")
    if entry is not None and not (entry.source in GUESSED and _may_prove(provider, address, login)):
        kept = (
            f"{domain} stays remembered for everyone as served by {entry.provider.name} "
            f"(source: {entry.get_source_display()}): one person's choice does not change "
            "that. A provider manager can change it under Email providers domains."
        )
        return DomainMemory(False, kept, kept)
    if provider.pk is None:
        return DomainMemory(
            True,
            f"Once you sign in, {name} is added to the email providers and {domain} is "
            f"remembered for everyone: {everyone}. Nothing is saved before the sign-in works.",
            f"{name} was added to the email providers and {domain} is remembered for "
            f"everyone: {everyone}.",
        )
    not_remembered = f"{domain} will not be remembered for everyone"
    if provider.source not in {Source.BUILTIN, Source.ADMIN}:
        why = (
            f"{not_remembered}: {name} was not set up by an administrator (its card came "
            f"from {provider.get_source_display()}), so a sign-in there does not show that "
            f"it serves {domain}. Each colleague chooses the provider, as you did."
        )
        return DomainMemory(False, why, why.replace("will not be", "was not"))
    if provider.login_format == LoginFormat.MANUAL and login is None:
        return DomainMemory(
            None,
            f"{domain} is remembered for everyone only if you sign in with your full address "
            f"{address.email} as the login: only then does {name} show that it serves "
            f"{domain}, and {everyone} afterwards.",
            "",
        )
    login = login if login is not None else login_for(provider, address)
    if _proves_domain(provider, login, address):
        return DomainMemory(
            True,
            f"Once you sign in, {domain} is remembered for everyone: {everyone}, since its "
            f"servers accept {address.email} as the login.",
            f"{domain} is now remembered for everyone: {everyone}.",
        )
    if login != address.email:
        why = (
            f"{not_remembered}: you sign in with the login {login}, not your full address, "
            f"which does not show that {name} serves {domain}. Each colleague chooses the "
            "provider, as you did."
        )
    else:
        why = f"{not_remembered}: a sign-in to {name} does not show that it serves {domain}."
    return DomainMemory(False, why, why.replace("will not be", "was not"))


def same_sign_in_elsewhere(provider: EmailProvider, domain: str) -> list[EmailProvider]:
    """Provider cards that sign in to the same accounts as `provider` (OAuth 2.0 at the
    same identity platform and tenant: the same token address) through another
    protocol, among those offered to addresses of `domain`: a mailbox of `provider` may
    move to one by signing in again (its address is checked as at the first sign-in),
    and the wizard offers them beside it (Microsoft 365 over IMAP or over Graph)."""
    if provider.auth_method != AuthMethod.OAUTH2 or not provider.oauth_token_url:
        return []
    # Only cards an address of `domain` may pick at all (the wizard's own rule): a card
    # of another organisation on the same identity platform is not one.
    return [
        card
        for card in providers_offered(domain)
        .filter(
            auth_method=AuthMethod.OAUTH2,
            oauth_token_url=provider.oauth_token_url,
        )
        .exclude(pk=provider.pk)
        .exclude(service_type=provider.service_type)
        .order_by("name")
        if card.oauth_ready
    ]
