"""Which backend serves which service type: the one place that chooses a protocol."""

from providers.models import CARD_RULES, EmailProvider, ServiceType

from .backend import MailBackend
from .ews.backend import EwsBackend
from .graph.backend import GraphBackend
from .imap_smtp.backend import ImapSmtpBackend

BACKENDS: dict[str, MailBackend] = {
    ServiceType.IMAP_SMTP: ImapSmtpBackend(),
    ServiceType.EXCHANGE: EwsBackend(),
    ServiceType.GRAPH: GraphBackend(),
}
# What EmailProvider.clean() asks of each card (providers may not import mail).
CARD_RULES.update({kind: backend.validate_provider for kind, backend in BACKENDS.items()})


def backend_for(provider: EmailProvider) -> MailBackend:
    """The backend of a provider card (a KeyError is a service type without one, which
    tests/test_mail_contract.py forbids)."""
    return BACKENDS[provider.service_type]


def check_sign_in(*, provider: EmailProvider, **credentials) -> str:
    """The provider's backend's sign-in check (mail.backend.MailBackend.check_sign_in)."""
    return backend_for(provider).check_sign_in(provider=provider, **credentials)


def provider_fields_by_type() -> dict[str, list[str]]:
    """{service type: the provider card's fields only its backend uses}: what a provider
    form shows for each choice of service type."""
    return {kind: list(backend.provider_fields) for kind, backend in BACKENDS.items()}
