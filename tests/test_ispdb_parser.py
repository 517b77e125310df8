import pytest

from providers.ispdb import ClientConfigError, parse_client_config


def test_it_reads_every_file_in_the_shared_ispdb(ispdb_dir):
    files = sorted(ispdb_dir.glob("*.xml"))
    assert len(files) > 100
    configs = [parse_client_config(path.read_bytes()) for path in files]
    assert all(config.domains for config in configs)
    with_imap = [c for c in configs if c.imap]
    assert all(c.imap.hostname and c.imap.port for c in with_imap)
    assert all(c.protocols == ["pop3"] for c in configs if not c.imap and not c.exchange)


def test_it_maps_the_fields_of_a_provider(ispdb_dir):
    config = parse_client_config((ispdb_dir / "aol.com.xml").read_bytes())
    assert config.provider_id == "aol.com"
    assert config.display_name == "AOL Mail"
    assert "aim.com" in config.domains
    assert (config.imap.hostname, config.imap.port, config.imap.security) == (
        "imap.aol.com",
        993,
        "ssl",
    )
    assert (config.smtp.hostname, config.smtp.port, config.smtp.security) == (
        "smtp.aol.com",
        465,
        "ssl",
    )
    assert config.imap.login_format == "email"
    assert config.imap.auth_method == "password"


def test_it_prefers_an_encrypted_server_over_a_plain_one():
    config = parse_client_config(
        b"""<clientConfig version="1.1"><emailProvider id="x.test"><domain>x.test</domain>
        <incomingServer type="imap"><hostname>plain.x.test</hostname><port>143</port>
          <socketType>plain</socketType></incomingServer>
        <incomingServer type="imap"><hostname>tls.x.test</hostname><port>993</port>
          <socketType>SSL</socketType></incomingServer>
        </emailProvider></clientConfig>"""
    )
    assert config.imap.hostname == "tls.x.test"


def test_it_marks_oauth_only_servers():
    config = parse_client_config(
        b"""<clientConfig version="1.1"><emailProvider id="o.test"><domain>o.test</domain>
        <incomingServer type="imap"><hostname>imap.o.test</hostname><port>993</port>
          <socketType>SSL</socketType><authentication>OAuth2</authentication>
          <username>%EMAILLOCALPART%.%EMAILDOMAIN%</username></incomingServer>
        </emailProvider></clientConfig>"""
    )
    assert config.imap.auth_method == "oauth2"
    assert config.imap.login_format == "manual"


def _provider(provider_id: str, inner: str) -> bytes:
    attribute = f' id="{provider_id}"' if provider_id else ""
    return (
        f"<clientConfig><emailProvider{attribute}>{inner}</emailProvider></clientConfig>".encode()
    )


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"<clientConfig", "not well-formed"),
        (b"<html></html>", "root element is <html>"),
        (b"<clientConfig/>", "no <emailProvider>"),
        (_provider("", "<domain>a.test</domain>"), "no id"),
        (_provider("a", "<domain>not a domain</domain>"), "no valid <domain>"),
        (
            _provider(
                "a",
                '<domain>a.test</domain><incomingServer type="imap">'
                "<hostname>h.test</hostname><port>99999</port></incomingServer>",
            ),
            "outside 1-65535",
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
            b"<clientConfig>&b;</clientConfig>",
            "forbidden construct",
        ),
        (b"<clientConfig>" + b" " * (600 * 1024) + b"</clientConfig>", "larger than"),
    ],
)
def test_it_refuses_a_document_it_cannot_use(document, reason):
    with pytest.raises(ClientConfigError, match=reason):
        parse_client_config(document)


@pytest.mark.parametrize(
    ("hostname", "kind", "stored"),
    [
        ("Mail.%EmailDomain%", "imap", "mail.%EMAILDOMAIN%"),
        ("%EMAILDOMAIN%", "imap", "%EMAILDOMAIN%"),
        ("imap.hoster.test.", "imap", "imap.hoster.test"),
        ("mail_1.hoster.test", "imap", "mail_1.hoster.test"),
        ("imap.straße.test", "imap", "imap.xn--strae-oqa.test"),  # IDNA 2008, not strasse
        ("192.0.2.10", "imap", "192.0.2.10"),  # the sign-in check allows it or not
        ("localhost", "imap", "localhost"),
        # Left out: no card can hold it or sign-in look it up (a 500 in the wizard's step).
        ("m" * 60 + "." + "n" * 60 + "." + "o" * 60 + ".test", "imap", None),
        ("mail server.test", "imap", None),
        ("mail.%EMAILDOMAIN%", "exchange", None),  # an EWS address is used as stored
        ("[2001:DB8::1]", "imap", "2001:db8::1"),  # as the card form stores it
        ("mäil-%EMAILDOMAIN%", "imap", None),  # xn-- would scatter the placeholder
        ("imap.mäil.%EMAILDOMAIN%", "imap", "imap.xn--mil-qla.%EMAILDOMAIN%"),
        ("the-address-domain.invalid.example.com", "imap", None),
    ],
)
def test_it_stores_a_server_name_as_a_sign_in_uses_it(hostname, kind, stored):
    tag = "incomingServer"
    config = parse_client_config(
        _provider(
            "a",
            f'<domain>a.test</domain><{tag} type="{kind}"><hostname>{hostname}</hostname>'
            f'</{tag}><{tag} type="pop3"><hostname>pop.a.test.</hostname></{tag}>',
        )
    )
    server = config.imap if kind == "imap" else config.exchange
    assert (server.hostname if server else None) == stored


def test_it_keeps_thunderbird_s_placeholder_in_a_server_name():
    # Lower-cased with the rest, "mail.%emaildomain%" was never replaced at sign-in: every
    # card from such a file tried the server "mail.%emaildomain%".
    config = parse_client_config(
        _provider(
            "a",
            '<domain>a.test</domain><incomingServer type="imap"><hostname>Mail.%EmailDomain%'
            "</hostname></incomingServer>",
        )
    )
    assert config.imap.hostname == "mail.%EMAILDOMAIN%"
