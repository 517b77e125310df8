from io import StringIO

from django.core.management import call_command

from providers.builtin import BUILTIN_PROVIDERS
from providers.models import EmailProvider, ProviderDomain, Source
from providers.platforms import PROVIDER, platforms
from providers.services import provider_load_builtins

REQUIRED = ["Gmail", "Outlook.com", "Microsoft 365", "Yahoo", "AOL", "Zoho", "iCloud", "GMX",
            "Yandex", "Mail.ru", "Fastmail"]  # fmt: skip


def test_it_ships_the_providers_people_use(db):
    provider_load_builtins()
    names = list(EmailProvider.objects.values_list("name", flat=True))
    for wanted in REQUIRED:
        assert any(wanted in name for name in names), wanted
    for provider in EmailProvider.objects.all():
        provider.full_clean()
        assert provider.source == Source.BUILTIN


def test_it_gives_app_password_guidance_where_the_provider_needs_one(db):
    provider_load_builtins()
    for name in ["Gmail", "Yahoo", "AOL", "Zoho Mail"]:
        provider = EmailProvider.objects.filter(name__startswith=name).first()
        assert provider.app_password_required
        assert provider.app_password_help_url.startswith("https://")


def test_it_maps_each_providers_domains(db):
    provider_load_builtins()
    assert ProviderDomain.objects.get(domain="gmail.com").provider.imap_host == "imap.gmail.com"
    assert ProviderDomain.objects.get(domain="icloud.com").provider.smtp_port == 587
    expected = sum(len(spec["domains"]) for spec in BUILTIN_PROVIDERS)
    assert ProviderDomain.objects.count() == expected


def test_it_loads_twice_without_duplicates_and_keeps_admin_edits(db):
    call_command("load_builtin_providers", stdout=StringIO())
    gmail = EmailProvider.objects.get(name="Gmail / Google Workspace")
    gmail.smtp_port = 587
    gmail.save()
    ProviderDomain.objects.filter(domain="googlemail.com").delete()
    out = StringIO()
    call_command("load_builtin_providers", stdout=out)
    # The built-in cards, and the cards of the hosted-mail platform table's own rows.
    own_cards = [p for p in platforms().platforms if p.kind == PROVIDER and not p.builtin]
    assert EmailProvider.objects.count() == len(BUILTIN_PROVIDERS) + len(own_cards)
    gmail.refresh_from_db()
    assert gmail.smtp_port == 587
    assert ProviderDomain.objects.get(domain="googlemail.com").provider == gmail
    assert "0 created" in out.getvalue()
