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


_HOSTER = """<?xml version="1.0"?>
<clientConfig version="1.1"><emailProvider id="hoster.test">
  <domain>hoster.test</domain><displayName>Hoster</displayName>
  <incomingServer type="imap"><hostname>mail.%EMAILDOMAIN%</hostname><port>993</port>
    <socketType>SSL</socketType><username>%EMAILADDRESS%</username></incomingServer>
  <outgoingServer type="smtp"><hostname>smtp.%EMAILDOMAIN%</hostname><port>465</port>
    <socketType>SSL</socketType><username>%EMAILADDRESS%</username></outgoingServer>
</emailProvider></clientConfig>"""


def test_it_signs_in_to_the_servers_a_placeholder_names(db):
    # Found by a review: the placeholder was stored lower case and never replaced.
    from mail.imap_smtp.connection import endpoints_for
    from providers.addresses import normalize_address
    from providers.ispdb import parse_client_config
    from providers.services import provider_import_config

    outcome = provider_import_config(config=parse_client_config(_HOSTER), source=Source.ISPDB)
    address = normalize_address("anna@customer.test")
    hosts = [e.host for e in endpoints_for(outcome.provider, address)]
    assert hosts == ["mail.customer.test", "smtp.customer.test"]
    # A card imported before keeps "%emaildomain%": replaced all the same.
    assert outcome.provider.host_for("imap.%emaildomain%", "x.test") == "imap.x.test"


def test_it_imports_one_card_when_two_requests_import_one_file_at_once(
    transactional_db, monkeypatch
):
    # Two tabs, or two colleagues of one domain: each found no card, both created one,
    # and the second's unique name failed the wizard's step with a 500.
    import threading

    from django.db import connection

    from providers import services
    from providers.ispdb import parse_client_config

    barrier, first = threading.Barrier(2, timeout=10), threading.local()
    real = services._find_imported

    def find_then_wait(*args, **kwargs):
        found = real(*args, **kwargs)
        if not getattr(first, "done", False):
            first.done = True
            barrier.wait()  # both have looked, neither has created
        return found

    monkeypatch.setattr(services, "_find_imported", find_then_wait)
    config = parse_client_config(_HOSTER)
    made, errors = [], []

    def run():
        try:
            made.append(services.provider_import_config(config=config, source=Source.ISPDB))
        except Exception as error:  # what the wizard's step would raise
            errors.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert EmailProvider.objects.filter(ispdb_id="hoster.test").count() == 1
    assert made[0].provider.pk == made[1].provider.pk
    assert sorted(outcome.created for outcome in made) == [False, True]


def test_it_keeps_a_long_domain_s_autoconfig_id_within_its_column(db):
    from providers.ispdb import parse_client_config
    from providers.services import provider_import_config

    domain = ("d" * 60 + ".") * 4 + "test"  # 248 characters: "autoconfig:" makes 259
    config = parse_client_config(_HOSTER.replace("hoster.test", domain))
    made = provider_import_config(
        config=config, source=Source.AUTOCONFIG, config_id=f"autoconfig:{domain}"
    )
    again = provider_import_config(
        config=config, source=Source.AUTOCONFIG, config_id=f"autoconfig:{domain}"
    )
    assert len(made.provider.ispdb_id) == 255 and again.provider.pk == made.provider.pk
