"""Reading Thunderbird "clientConfig" 1.1 files (ISPDB and domain autoconfig).

The parser is strict about what it needs (an id, domains, hosts with valid ports)
and tolerant of everything else, because real files carry comments, unknown
elements and POP3-only or Exchange-only entries.
"""

import ipaddress
from dataclasses import dataclass, field

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from .addresses import AddressError, normalize_domain
from .models import IMAP_PORTS, PLACEHOLDER, SMTP_PORTS, AuthMethod, LoginFormat, Security

MAX_DOCUMENT_BYTES = 512 * 1024

_SOCKET_TYPES = {"SSL": Security.SSL_TLS, "STARTTLS": Security.STARTTLS, "plain": Security.NONE}
_USERNAME_FORMATS = {
    "%EMAILADDRESS%": LoginFormat.EMAIL,
    "%EMAILLOCALPART%": LoginFormat.LOCAL_PART,
}
_PASSWORD_AUTH = {"password-cleartext", "password-encrypted", "plain", "secure"}


class ClientConfigError(ValueError):
    """The document is not a usable clientConfig; str() says why."""


@dataclass(frozen=True)
class Server:
    kind: str  # imap, pop3, smtp, exchange
    hostname: str
    port: int | None
    security: str
    authentication: tuple[str, ...]
    username: str

    @property
    def login_format(self) -> str:
        return _USERNAME_FORMATS.get(self.username, LoginFormat.MANUAL)

    @property
    def auth_method(self) -> str:
        only_oauth = not set(self.authentication) & _PASSWORD_AUTH
        if self.authentication and only_oauth and "OAuth2" in self.authentication:
            return AuthMethod.OAUTH2
        return AuthMethod.PASSWORD


@dataclass(frozen=True)
class ClientConfig:
    provider_id: str
    display_name: str
    domains: tuple[str, ...]
    incoming: tuple[Server, ...]
    outgoing: tuple[Server, ...]
    documentation_url: str = ""
    skipped_domains: tuple[str, ...] = field(default=())

    @property
    def imap(self) -> Server | None:
        return _preferred(s for s in self.incoming if s.kind == "imap")

    @property
    def smtp(self) -> Server | None:
        return _preferred(s for s in self.outgoing if s.kind == "smtp")

    @property
    def exchange(self) -> Server | None:
        return next((s for s in self.incoming if s.kind == "exchange"), None)

    @property
    def protocols(self) -> list[str]:
        return sorted({s.kind for s in self.incoming})


def _preferred(servers) -> Server | None:
    # Files list servers in the provider's order of preference; we only move
    # unencrypted ones behind any encrypted alternative.
    servers = list(servers)
    encrypted = [s for s in servers if s.security != Security.NONE]
    return (encrypted or servers or [None])[0]


def parse_client_config(data: bytes | str) -> ClientConfig:
    if isinstance(data, str):
        data = data.encode()
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ClientConfigError(f"the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        root = ElementTree.fromstring(data)
    except DefusedXmlException as error:
        raise ClientConfigError(f"the XML uses a forbidden construct ({error})") from None
    except ElementTree.ParseError as error:
        raise ClientConfigError(f"not well-formed XML ({error})") from None
    if root.tag != "clientConfig":
        raise ClientConfigError(f"the root element is <{root.tag}>, not <clientConfig>")
    provider = root.find("emailProvider")
    if provider is None:
        raise ClientConfigError("there is no <emailProvider> element")
    provider_id = (provider.get("id") or "").strip().lower()
    if not provider_id:
        raise ClientConfigError("<emailProvider> has no id")

    domains: list[str] = []
    skipped: list[str] = []
    for element in provider.findall("domain"):
        text = (element.text or "").strip()
        try:
            domain = normalize_domain(text)
        except AddressError:
            skipped.append(text)
            continue
        if domain not in domains:
            domains.append(domain)
    if not domains:
        raise ClientConfigError("no valid <domain> is listed")

    display_name = (
        _text(provider, "displayName") or _text(provider, "displayShortName") or provider_id
    )
    documentation = provider.find("documentation")
    return ClientConfig(
        provider_id=provider_id,
        display_name=display_name,
        domains=tuple(domains),
        incoming=tuple(_servers(provider, "incomingServer")),
        outgoing=tuple(_servers(provider, "outgoingServer")),
        documentation_url=(documentation.get("url", "") if documentation is not None else ""),
        skipped_domains=tuple(skipped),
    )


def _text(parent, tag: str) -> str:
    element = parent.find(tag)
    return (element.text or "").strip() if element is not None else ""


# Longest server name taken from a file: an Exchange server's becomes its EWS address,
# "https://<name>/EWS/Exchange.asmx", in a column of 200 characters.
MAX_HOST = 170


# Stands for the placeholder while a name is checked and turned to its xn-- form.
_STAND_IN = "the-address-domain.invalid"


def _hostname(raw: str, kind: str) -> str | None:
    """A server name from a file as a card stores it, or None for one no card can use
    (the entry is left out; a file left with no usable server is refused as one without
    it). Lower case, but Thunderbird's placeholder (lower-cased, "mail.%emaildomain%"
    was never replaced: every sign-in went to that name); an international name in its
    xn-- form (IDNA 2008, as it was checked: connecting, Python spells "straße" as
    "strasse", another domain); a trailing dot dropped; localhost and IP addresses kept,
    for the sign-in check to allow or not (AllowInternalMailServers). Left out: a name
    no sign-in can look up or a card can hold (300 characters made the wizard's step a
    500), and an Exchange server named by the placeholder (its EWS address is used as
    stored)."""
    host = raw.strip().lower()
    host = host[:-1] if host.endswith(".") else host
    try:
        return str(ipaddress.ip_address(host.strip("[]")))  # as the card form stores it
    except ValueError:
        if host == "localhost":
            return host
    if (PLACEHOLDER.lower() in host and kind == "exchange") or _STAND_IN in host:
        return None
    stood_in = host.replace(PLACEHOLDER.lower(), _STAND_IN)
    try:
        if stood_in.isascii():
            # Checked with any underscore as a hyphen: some hosts' names hold one.
            normalize_domain(stood_in.replace("_", "-"))
        else:
            stood_in = normalize_domain(stood_in)
    except AddressError:
        return None
    if stood_in.count(_STAND_IN) != host.count(PLACEHOLDER.lower()):
        return None  # the placeholder inside a label with letters outside ASCII
    host = stood_in.replace(_STAND_IN, PLACEHOLDER)
    return host if len(host) <= MAX_HOST else None


def _servers(provider, tag: str):
    for element in provider.findall(tag):
        kind = (element.get("type") or "").strip().lower()
        hostname = _text(element, "hostname")
        if not kind or not hostname:
            continue
        hostname = _hostname(hostname, kind)
        if hostname is None:
            continue
        port_text = _text(element, "port")
        try:
            port = int(port_text) if port_text else None
        except ValueError:
            raise ClientConfigError(f"{tag} {hostname} has port {port_text!r}") from None
        if port is not None and not 0 < port < 65536:
            raise ClientConfigError(f"{tag} {hostname} has port {port}, outside 1-65535")
        socket_type = _text(element, "socketType")
        if socket_type in _SOCKET_TYPES:
            security = _SOCKET_TYPES[socket_type]
        else:
            known = IMAP_PORTS if kind == "imap" else SMTP_PORTS
            security = known.get(port, Security.SSL_TLS)
        yield Server(
            kind=kind,
            hostname=hostname,
            port=port,
            security=security,
            authentication=tuple(
                (a.text or "").strip() for a in element.findall("authentication") if a.text
            ),
            username=_text(element, "username"),
        )
