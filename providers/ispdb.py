"""Reading Thunderbird "clientConfig" 1.1 files (ISPDB and domain autoconfig).

The parser is strict about what it needs (an id, domains, hosts with valid ports)
and tolerant of everything else, because real files carry comments, unknown
elements and POP3-only or Exchange-only entries.
"""

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


def _hostname(raw: str, tag: str) -> str:
    """A server name from a file, as a card stores it: lower case but the placeholder
    (lower-cased, "mail.%emaildomain%" was never replaced: every sign-in went to that
    name), a name a card can hold and a sign-in can look up, else the file is refused
    (a 300-character name crashed the wizard's step with a 500)."""
    host = raw.lower().replace(PLACEHOLDER.lower(), PLACEHOLDER)
    try:
        normalize_domain(host.replace(PLACEHOLDER, "example.com"))
    except AddressError as error:
        raise ClientConfigError(f"{tag} {raw[:80]!r} is not a server name: {error}") from None
    if len(host) > MAX_HOST:
        raise ClientConfigError(f"{tag} {raw[:80]!r}… is longer than {MAX_HOST} characters")
    return host


def _servers(provider, tag: str):
    for element in provider.findall(tag):
        kind = (element.get("type") or "").strip().lower()
        hostname = _text(element, "hostname")
        if not kind or not hostname:
            continue
        hostname = _hostname(hostname, tag)
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
