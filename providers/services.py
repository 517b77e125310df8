"""Writes to the provider directory: imports, built-ins and discovery results."""

import hashlib
import logging
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction

from .builtin import BUILTIN_PROVIDERS
from .ispdb import ClientConfig
from .models import AuthMethod, EmailProvider, LoginFormat, ProviderDomain, ServiceType, Source
from .naming import mimicked_builtin
from .platforms import PROVIDER, Platform, platforms

logger = logging.getLogger(__name__)

# Entries a person chose (or that we ship) are never overwritten by machine sources.
_CURATED = {Source.BUILTIN, Source.ADMIN, Source.USER}


class UnsupportedProvider(ValueError):
    """The configuration describes a provider mailsetup cannot connect to (POP3 only)."""


@dataclass
class ImportOutcome:
    provider: EmailProvider
    created: bool = False
    updated: bool = False
    domains_added: list[str] = field(default_factory=list)
    domains_moved: list[str] = field(default_factory=list)
    domains_removed: list[str] = field(default_factory=list)
    domains_kept: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.created
            or self.updated
            or self.domains_added
            or self.domains_moved
            or self.domains_removed
        )


def _fields_from_config(config: ClientConfig) -> dict:
    imap, smtp, exchange = config.imap, config.smtp, config.exchange
    if imap is None and exchange is None:
        raise UnsupportedProvider(
            f"{config.display_name} offers only {', '.join(config.protocols) or 'no'} "
            "incoming servers; mailsetup needs IMAP or Exchange."
        )
    values: dict = {
        "service_type": ServiceType.IMAP_SMTP if imap else ServiceType.EXCHANGE,
        "receive_enabled": True,
        "send_enabled": smtp is not None or imap is None,
        "imap_host": imap.hostname if imap else "",
        "imap_port": imap.port if imap else None,
        "smtp_host": smtp.hostname if smtp else "",
        "smtp_port": smtp.port if smtp else None,
        # ISPDB gives an Exchange server's host name; EWS lives at a fixed path on it.
        "exchange_url": f"https://{exchange.hostname}/EWS/Exchange.asmx"
        if exchange and not imap
        else "",
    }
    if imap:
        values["imap_security"] = imap.security
        values["login_format"] = imap.login_format
        values["auth_method"] = imap.auth_method
    if smtp:
        values["smtp_security"] = smtp.security
    return values


def _find_imported(config_id: str, name: str, domains: list[str]) -> EmailProvider | None:
    # ISPDB ids are not unique (Zoho's regional files all say "zoho.com"), so a file is
    # matched to the provider with its id that already serves one of its domains, or
    # failing that (its domains were unmapped since) to the one with its id and name.
    entry = (
        ProviderDomain.objects.select_related("provider")
        .filter(domain__in=domains, provider__ispdb_id=config_id)
        .order_by("pk")
        .first()
    )
    same = EmailProvider.objects.select_for_update()
    if entry is not None:
        return same.get(pk=entry.provider_id)
    # Any name the file's card may have been given; and as cards were named before names
    # were cut to fit (a long name cut short, its suffix with it).
    limit = EmailProvider._meta.get_field("name").max_length
    names = [*_spellings(name, config_id), name[:limit], f"{name} ({config_id})"[:limit]]
    return same.filter(ispdb_id=config_id, name__in=names).order_by("pk").first()


def _bounded_id(config_id: str) -> str:
    """A file's id as its column holds it (255 characters): "autoconfig:" and a domain
    of up to 253 crashed the wizard's step with a 500. A longer one keeps its start and a
    digest of the whole, so that two stay apart."""
    if len(config_id) <= 255:
        return config_id
    digest = hashlib.sha256(config_id.encode()).hexdigest()[:16]
    return f"{config_id[:238]}#{digest}"


def _fitted(name: str, suffix: str = "") -> str:
    """`name` + `suffix` within the name's column, the name shortened (marked "…") so that
    the suffix, which tells the candidates apart, is kept whole."""
    limit = EmailProvider._meta.get_field("name").max_length
    if len(name) + len(suffix) <= limit:
        return name + suffix
    return name[: limit - len(suffix) - 1].rstrip() + "…" + suffix


def _spellings(name: str, config_id: str) -> list[str]:
    """Every name a file's card may be given, in the order they are tried: its own name
    (unless it could pass for a built-in provider's, providers.naming), then suffixed with
    where it came from, "Gmail (autoconfig:x.test)", then numbered, then with a digest of
    the file's id. Each as stored: cut to the column, the suffix whole."""
    where = config_id if len(config_id) <= 60 else config_id[:59] + "…"
    spellings = [_fitted(name, f" ({where})")]
    if mimicked_builtin(name) is None:
        spellings.insert(0, _fitted(name))
    spellings += [_fitted(name, f" ({where}, {n})") for n in range(2, 100)]
    # A hundred cards of one name: the file's id in full, digested, tells it apart.
    digest = hashlib.sha256(config_id.encode()).hexdigest()
    return [*spellings, _fitted(name, f" ({digest[:16]})"), _fitted(name, f" ({digest})")]


def _unique_name(name: str, config_id: str, *, exclude: int | None = None) -> str:
    """The first of the file's spellings no other card has. Each is checked as it would
    be stored: a long name cut to its column was checked whole before, and could then be
    another card's."""
    candidates = _spellings(name, config_id)
    others = EmailProvider.objects.filter(name__in=candidates).exclude(pk=exclude)
    taken = set(others.values_list("name", flat=True))
    free = (candidate for candidate in candidates if candidate not in taken)
    # The last, whole digest, is the file's own: found again by `_find_imported`.
    return next(free, candidates[-1])


@transaction.atomic
def provider_import_config(
    *,
    config: ClientConfig,
    source: Source,
    only_domains: list[str] | None = None,
    config_id: str | None = None,
) -> ImportOutcome:
    """Create or update the provider a clientConfig describes, and map its domains.

    `only_domains` limits the mapping to the domains a source may speak for: a
    domain's own autoconfig answers for that domain only, whatever it lists.
    `config_id` overrides the file's id for the same reason: an autoconfig file must
    not be able to claim the id of an ISPDB provider and rewrite its servers.
    """
    config_id = _bounded_id(config_id or config.provider_id)
    values = _fields_from_config(config)
    wanted = list(only_domains) if only_domains is not None else list(config.domains)
    provider = _find_imported(config_id, config.display_name, wanted)
    outcome: ImportOutcome
    if provider is None:
        created = True
        try:
            with transaction.atomic():
                provider = EmailProvider.objects.create(
                    name=_unique_name(config.display_name, config_id),
                    ispdb_id=config_id,
                    source=source,
                    **values,
                )
        except IntegrityError:
            # Another request imported it, or took the name, meanwhile (two tabs, two
            # colleagues of one domain): its card, or the name's next free spelling.
            provider = _find_imported(config_id, config.display_name, wanted)
            created = provider is None
            if provider is None:
                provider = EmailProvider.objects.create(
                    name=_unique_name(config.display_name, config_id),
                    ispdb_id=config_id,
                    source=source,
                    **values,
                )
        outcome = ImportOutcome(provider=provider, created=created)
    else:
        outcome = ImportOutcome(provider=provider)
        if provider.source not in _CURATED:
            if provider.name != config.display_name:
                values["name"] = _unique_name(config.display_name, config_id, exclude=provider.pk)
            changed = [name for name, value in values.items() if getattr(provider, name) != value]
            if changed:
                for name in changed:
                    setattr(provider, name, values[name])
                provider.save(update_fields=[*changed, "updated_at"])
                outcome.updated = True

    existing = {d.domain: d for d in ProviderDomain.objects.filter(domain__in=wanted)}
    # Parsed domains are normalised already, so save()'s normalising can be skipped;
    # ignore_conflicts lets a concurrent discovery of the same domain win quietly.
    new = [domain for domain in wanted if domain not in existing]
    ProviderDomain.objects.bulk_create(
        [ProviderDomain(domain=domain, provider=provider, source=source) for domain in new],
        ignore_conflicts=True,
    )
    outcome.domains_added = new
    for domain, entry in existing.items():
        if entry.provider_id == provider.pk:
            continue
        if entry.source == source and source not in _CURATED:
            # The file moved the domain to another provider of the same source.
            entry.provider = provider
            entry.save(update_fields=["provider"])
            outcome.domains_moved.append(domain)
        else:
            outcome.domains_kept.append(domain)

    if only_domains is None:
        stale = provider.domains.filter(source=source).exclude(domain__in=wanted)
        outcome.domains_removed = list(stale.values_list("domain", flat=True))
        stale.delete()
    return outcome


def _builtin_card(spec: dict, outcome_list: list[ImportOutcome] | None = None) -> EmailProvider:
    spec = dict(spec)
    domains = spec.pop("domains")
    provider = EmailProvider.objects.filter(name=spec["name"]).first()
    if provider is None and spec.get("ispdb_id"):
        provider = EmailProvider.objects.filter(ispdb_id=spec["ispdb_id"]).first()
    outcome = ImportOutcome(provider=provider)  # type: ignore[arg-type]
    if provider is None:
        provider = EmailProvider(source=Source.BUILTIN, **spec)
        provider.full_clean()
        provider.save()
        outcome = ImportOutcome(provider=provider, created=True)
    taken = set(ProviderDomain.objects.filter(domain__in=domains).values_list("domain", flat=True))
    for domain in domains:
        if domain in taken:
            continue
        ProviderDomain.objects.create(domain=domain, provider=provider, source=Source.BUILTIN)
        outcome.domains_added.append(domain)
    if outcome_list is not None:
        outcome_list.append(outcome)
    return provider


def _platform_card(platform: Platform) -> tuple[EmailProvider, bool]:
    """The card of a platform row with its own settings: found by its id, else the
    ISPDB card the row names, else created from the row (source built-in: its settings
    ship with the app)."""
    mine = EmailProvider.objects.filter(ispdb_id=platform.card_id).order_by("pk").first()
    if mine is not None:
        return mine, False
    if platform.ispdb:
        imported = EmailProvider.objects.filter(ispdb_id=platform.ispdb).order_by("pk").first()
        if imported is not None:
            return imported, False
    fields = platform.card_fields()
    fields["name"] = _unique_name(fields["name"], platform.card_id)
    provider = EmailProvider(source=Source.BUILTIN, **fields)
    provider.full_clean()
    try:
        with transaction.atomic():
            provider.save()
    except IntegrityError:
        # A concurrent discovery created it first.
        return EmailProvider.objects.get(ispdb_id=platform.card_id), False
    return provider, True


def provider_for_platform(*, platform: Platform) -> EmailProvider:
    """The provider card that serves a hosted-mail platform's customers: the built-in
    card it shares, or its own; created when missing (a database older than the row,
    or a card an administrator deleted), never overwritten (an admin's edits stand)."""
    if platform.kind != PROVIDER:
        raise ValueError(f"{platform.key} is a {platform.kind}, not a provider")
    if platform.builtin:
        spec = next(spec for spec in BUILTIN_PROVIDERS if spec["name"] == platform.builtin)
        return _builtin_card(spec)
    return _platform_card(platform)[0]


@transaction.atomic
def provider_load_builtins() -> list[ImportOutcome]:
    """Create the shipped providers that are missing, and their missing domains: the
    built-in cards, then the cards of the hosted-mail platform table.

    An admin's edits to a built-in provider survive: existing providers are not
    overwritten, only completed with domains nobody has mapped yet.
    """
    outcomes: list[ImportOutcome] = []
    for spec in BUILTIN_PROVIDERS:
        _builtin_card(spec, outcomes)
    for platform in platforms().platforms:
        if platform.kind == PROVIDER and not platform.builtin:
            provider, created = _platform_card(platform)
            outcomes.append(ImportOutcome(provider=provider, created=created))
    return outcomes


@transaction.atomic
def provider_exchange_discovered(*, domain: str, ews_url: str) -> EmailProvider:
    """The Exchange card of one domain whose server Exchange autodiscover named.

    Like a domain's autoconfig, it speaks for that domain only: one card per domain
    (id "autodiscover:<domain>"), mapped to that domain alone; a later autodiscover
    answer updates its address unless an administrator took the card over.
    """
    config_id = f"autodiscover:{domain}"
    values = {
        "service_type": ServiceType.EXCHANGE,
        "exchange_url": ews_url,
        "receive_enabled": True,
        "send_enabled": True,
        "imap_host": "",
        "imap_port": None,
        "smtp_host": "",
        "smtp_port": None,
        "login_format": LoginFormat.EMAIL,
        "auth_method": AuthMethod.PASSWORD,
    }
    provider = EmailProvider.objects.select_for_update().filter(ispdb_id=config_id).first()
    if provider is None:
        provider = EmailProvider(
            name=_unique_name(f"Exchange server of {domain}", config_id),
            ispdb_id=config_id,
            source=Source.AUTOCONFIG,
            **values,
        )
        provider.full_clean()
        provider.save()
    elif provider.source not in _CURATED and provider.exchange_url != ews_url:
        provider.exchange_url = ews_url
        provider.full_clean()
        provider.save(update_fields=["exchange_url", "updated_at"])
    provider_domain_remember(domain=domain, provider=provider, source=Source.AUTOCONFIG)
    return provider


# Mappings discovery guessed before anyone signed in; a mapping an administrator made,
# or a sign-in proved (an admin-vouched card accepting the full address), replaces one.
GUESSED = {Source.MX, Source.AUTOCONFIG}
PROVEN = {Source.ADMIN, Source.USER}


def provider_domain_remember(
    *, domain: str, provider: EmailProvider, source: Source
) -> ProviderDomain:
    """Map a domain to a provider. The first mapping stays, except a guess (from MX or
    the domain's records) once a proven one comes: a wrong guess must not hold a domain
    for ever."""
    with transaction.atomic():
        entry, created = ProviderDomain.objects.select_for_update().get_or_create(
            domain=domain, defaults={"provider": provider, "source": source}
        )
        if not created and entry.source in GUESSED and source in PROVEN:
            if entry.provider_id != provider.pk:
                logger.info("Domain %s: %s's guess replaced by %s (%s)", domain,
                            entry.get_source_display(), provider.name, source)  # fmt: skip
            entry.provider, entry.source = provider, source
            entry.save(update_fields=["provider", "source"])
    return entry


# What the wizard's "Add new server" sets on a card (accounts.forms.NewServerForm).
DRAFT_FIELDS = (
    "name", "service_type", "receive_enabled", "send_enabled", "imap_host", "imap_security",
    "imap_port", "smtp_host", "smtp_security", "smtp_port", "exchange_url", "login_format",
)  # fmt: skip


def provider_from_draft(*, fields: dict) -> EmailProvider:
    """The card a manager drafted in the wizard, unsaved: what the sign-in check
    connects to before anything is written."""
    return EmailProvider(
        source=Source.ADMIN, **{name: fields[name] for name in DRAFT_FIELDS if name in fields}
    )


def _free_name(name: str) -> str:
    candidates = [name, *(f"{name} ({n})" for n in range(2, 100))]
    taken = set(EmailProvider.objects.filter(name__in=candidates).values_list("name", flat=True))
    return next((c[:200] for c in candidates if c not in taken), name)


@transaction.atomic
def provider_save_checked(*, provider: EmailProvider, domain: str) -> EmailProvider:
    """Save a drafted card once a real sign-in to its servers passed, and remember the
    domain it was checked for (unless a provider serves that domain already: the first
    mapping stays). Nothing of a draft is written before this, so an abandoned attempt
    leaves nothing in anyone's list and the same domain can be tried again."""
    if provider.pk is not None:
        raise ValueError("only a drafted, unsaved provider is saved here")
    # Another manager may have saved a provider of that name since the draft was made.
    provider.name = _free_name(provider.name)
    provider.source = Source.ADMIN
    provider.save()
    provider_domain_remember(domain=domain, provider=provider, source=Source.ADMIN)
    return provider
