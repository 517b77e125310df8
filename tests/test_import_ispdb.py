import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from providers.models import EmailProvider, ProviderDomain, Source


def _snapshot():
    providers = list(
        EmailProvider.objects.order_by("pk").values_list(
            "pk", "name", "imap_host", "imap_port", "smtp_host", "updated_at"
        )
    )
    domains = list(
        ProviderDomain.objects.order_by("domain").values_list("domain", "provider", "source")
    )
    return providers, domains


def _import(directory) -> str:
    out = StringIO()
    call_command("import_ispdb", str(directory), stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_imports_every_imap_provider_and_skips_pop_only_ones(db, ispdb_dir):
    output = _import(ispdb_dir)
    assert "0 failed" in output
    aol = EmailProvider.objects.get(ispdb_id="aol.com")
    assert (aol.imap_host, aol.imap_port, aol.smtp_host) == ("imap.aol.com", 993, "smtp.aol.com")
    # The built-in AOL provider gains the file's other domains instead of getting a twin.
    assert ProviderDomain.objects.get(domain="aol.it").provider == aol
    assert ProviderDomain.objects.get(domain="aol.it").source == Source.ISPDB
    assert aol.source == Source.BUILTIN
    assert "yahoo.co.jp.xml: skipped" in output
    assert not ProviderDomain.objects.filter(domain="yahoo.co.jp").exists()
    # Zoho's regional files share one id and must stay four providers.
    assert EmailProvider.objects.filter(ispdb_id="zoho.com").count() == 4


def test_it_changes_nothing_when_run_twice(db, ispdb_dir):
    _import(ispdb_dir)
    before = _snapshot()
    output = _import(ispdb_dir)
    assert _snapshot() == before
    assert " 0 created, 0 updated" in output


def test_it_updates_the_provider_of_a_changed_file(db, ispdb_dir, tmp_path):
    folder = tmp_path / "ispdb"
    shutil.copytree(ispdb_dir, folder)
    _import(folder)
    path = folder / "posteo.de.xml"
    text = path.read_text()
    assert "posteo.de</hostname>" in text
    path.write_text(
        text.replace(
            "<hostname>posteo.de</hostname>", "<hostname>imap.posteo.example</hostname>", 1
        ).replace("<domain>posteo.net</domain>", "")
    )
    output = _import(folder)
    provider = EmailProvider.objects.get(ispdb_id="posteo.de")
    assert provider.imap_host == "imap.posteo.example"
    assert "posteo.de.xml: updated" in output
    assert not ProviderDomain.objects.filter(domain="posteo.net").exists()
    assert EmailProvider.objects.filter(ispdb_id="posteo.de").count() == 1


def test_it_keeps_what_an_admin_maintains(db, ispdb_dir, builtin_providers):
    gmail = EmailProvider.objects.get(ispdb_id="googlemail.com")
    gmail.smtp_port = 587
    gmail.smtp_security = "starttls"
    gmail.save()
    output = _import(ispdb_dir)
    gmail.refresh_from_db()
    assert (gmail.smtp_port, gmail.smtp_security, gmail.source) == (587, "starttls", Source.BUILTIN)
    # Domains the ISPDB file adds are mapped to the built-in provider, not to a copy of it.
    assert ProviderDomain.objects.get(domain="google.com").provider == gmail
    assert ProviderDomain.objects.get(domain="gmail.com").source == Source.BUILTIN
    assert "0 failed" in output


def test_it_says_which_file_is_broken_and_fails(db, tmp_path):
    (tmp_path / "broken.xml").write_text("<clientConfig>")
    (tmp_path / "fine.xml").write_text(
        '<clientConfig><emailProvider id="fine.test"><domain>fine.test</domain>'
        '<incomingServer type="imap"><hostname>imap.fine.test</hostname><port>993</port>'
        "<socketType>SSL</socketType></incomingServer></emailProvider></clientConfig>"
    )
    err = StringIO()
    with pytest.raises(CommandError, match="1 files could not be read"):
        call_command("import_ispdb", str(tmp_path), stdout=StringIO(), stderr=err)
    assert "broken.xml: not imported: not well-formed XML" in err.getvalue()
    assert ProviderDomain.objects.filter(domain="fine.test").exists()


def test_it_refuses_a_folder_that_is_not_there(db, tmp_path):
    with pytest.raises(CommandError, match="is not a folder"):
        call_command("import_ispdb", str(tmp_path / "missing"))


def test_it_renames_an_imported_provider_when_its_file_does(db, ispdb_dir, tmp_path):
    folder = tmp_path / "ispdb"
    shutil.copytree(ispdb_dir, folder)
    _import(folder)
    path = folder / "posteo.de.xml"
    text = path.read_text()
    old_name = EmailProvider.objects.get(ispdb_id="posteo.de").name
    path.write_text(
        text.replace(
            f"<displayName>{old_name}</displayName>", "<displayName>Posteo Mail</displayName>"
        )
    )
    _import(folder)
    assert EmailProvider.objects.get(ispdb_id="posteo.de").name == "Posteo Mail"
    before = _snapshot()
    _import(folder)
    assert _snapshot() == before


def test_it_imports_an_exchange_only_provider_with_its_ews_address(db, tmp_path):
    (tmp_path / "ex.xml").write_text(
        '<clientConfig><emailProvider id="ex.test"><domain>ex.test</domain>'
        '<incomingServer type="exchange"><hostname>mail.ex.test</hostname>'
        "<authentication>OAuth2</authentication></incomingServer>"
        "</emailProvider></clientConfig>"
    )
    _import(tmp_path)
    provider = EmailProvider.objects.get(ispdb_id="ex.test")
    assert provider.service_type == "exchange"
    assert provider.exchange_url == "https://mail.ex.test/EWS/Exchange.asmx"
    provider.full_clean()
