"""Which provider a domain is remembered for: the first mapping stays, except a guess
discovery made (from MX or the domain's own records) once a mapping is proven."""

from providers.models import ProviderDomain, Source
from providers.services import provider_domain_remember
from tests.factories import EmailProviderFactory


def test_it_keeps_the_first_mapping_against_other_guesses_and_choices(db):
    first, other = EmailProviderFactory(), EmailProviderFactory()
    provider_domain_remember(domain="acme.test", provider=first, source=Source.ISPDB)
    provider_domain_remember(domain="acme.test", provider=other, source=Source.MX)
    provider_domain_remember(domain="acme.test", provider=other, source=Source.USER)
    entry = ProviderDomain.objects.get(domain="acme.test")
    assert (entry.provider, entry.source) == (first, Source.ISPDB)


def test_it_replaces_a_guess_once_a_sign_in_or_an_administrator_proves_another(db):
    guessed, proven, admins = EmailProviderFactory(), EmailProviderFactory(), EmailProviderFactory()
    provider_domain_remember(domain="acme.test", provider=guessed, source=Source.MX)
    provider_domain_remember(domain="acme.test", provider=proven, source=Source.USER)
    entry = ProviderDomain.objects.get(domain="acme.test")
    assert (entry.provider, entry.source) == (proven, Source.USER)
    # Proven now: a later guess or choice does not move it.
    provider_domain_remember(domain="acme.test", provider=admins, source=Source.AUTOCONFIG)
    provider_domain_remember(domain="acme.test", provider=admins, source=Source.ADMIN)
    assert ProviderDomain.objects.get(domain="acme.test").provider == proven
    # An administrator's checked new server replaces an autodiscover guess.
    provider_domain_remember(domain="corp.test", provider=guessed, source=Source.AUTOCONFIG)
    provider_domain_remember(domain="corp.test", provider=admins, source=Source.ADMIN)
    assert ProviderDomain.objects.get(domain="corp.test").provider == admins
