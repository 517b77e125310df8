"""Hosted-mail platforms and mail-security gateways, known by their MX hosts.

The table is data (providers/platforms.yaml), loaded and checked when the app starts
(providers.apps): a malformed row stops the start with the row and field named, rather
than sending someone's password to a mistyped host later. Lookups are by host name:
`match_mx` walks a host's parent names from the longest, so the most specific pattern
wins in a few dictionary lookups, however long the table grows.
"""

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from .addresses import AddressError, normalize_domain, registrable_domain
from .builtin import BUILTIN_PROVIDERS
from .models import IMAP_PORTS, SMTP_PORTS, LoginFormat, Security

TABLE_PATH = Path(__file__).with_name("platforms.yaml")

PROVIDER, GATEWAY, UNSUPPORTED = "provider", "gateway", "unsupported"
# Servers a hoster rents out, named under the hoster's domain: a company's own mail
# server there is not the hoster's mail service.
SERVERS = "servers"
_KINDS = {PROVIDER, GATEWAY, UNSUPPORTED, SERVERS}
_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,60}$")
# SPF include: names are DNS names, not host names: "_spf.google.com" has an underscore.
_DNS_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
_SERVER = re.compile(r"^(?P<host>[^:/\s]+):(?P<port>\d{1,5})/(?P<security>ssl|starttls)$")
_SECURITY = {"ssl": Security.SSL_TLS, "starttls": Security.STARTTLS}
_LOGINS = {"email": LoginFormat.EMAIL, "local_part": LoginFormat.LOCAL_PART}
_GUIDES = {"gmail", "outlook", "yahoo", "aol", "zoho", "icloud"}
_FIELDS = {
    "key", "name", "kind", "mx", "spf", "autodiscover", "ews", "source", "builtin", "card",
    "imap", "smtp", "login", "app_password_help_url", "guide", "ispdb", "reason",
}  # fmt: skip


class PlatformTableError(ValueError):
    """The table file is not usable; str() names the row and the field."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    security: str


@dataclass(frozen=True)
class Platform:
    key: str
    name: str
    kind: str
    mx: tuple[str, ...]
    source: str
    spf: tuple[str, ...] = ()
    autodiscover: tuple[str, ...] = ()
    ews: tuple[str, ...] = ()
    builtin: str = ""
    card: str = ""
    imap: Server | None = None
    smtp: Server | None = None
    login: str = LoginFormat.EMAIL
    app_password_help_url: str = ""
    guide: str = ""
    ispdb: str = ""
    reason: str = ""

    @property
    def card_id(self) -> str:
        """The id a card of its own carries in EmailProvider.ispdb_id."""
        return f"platform:{self.key}"

    def card_fields(self) -> dict:
        """The EmailProvider fields of a row that describes its own card."""
        assert self.imap and self.smtp, self.key
        return {
            "name": self.card,
            "imap_host": self.imap.host,
            "imap_port": self.imap.port,
            "imap_security": self.imap.security,
            "smtp_host": self.smtp.host,
            "smtp_port": self.smtp.port,
            "smtp_security": self.smtp.security,
            "login_format": self.login,
            "app_password_required": bool(self.app_password_help_url),
            "app_password_help_url": self.app_password_help_url,
            "security_guide": self.guide,
            "ispdb_id": self.card_id,
        }


@dataclass(frozen=True)
class MxMatch:
    platform: Platform
    pattern: str


class PlatformTable:
    def __init__(self, platforms: list[Platform]):
        self.platforms = platforms
        self._exact: dict[str, Platform] = {}
        self._under: dict[str, Platform] = {}
        self._spf: dict[str, Platform] = {}
        self._autodiscover: dict[str, Platform] = {}
        self._ews: dict[str, Platform] = {}
        for platform in platforms:
            for pattern in platform.mx:
                if pattern.startswith("*."):
                    _claim(self._under, pattern[2:], platform, f"mx pattern {pattern}")
                else:
                    _claim(self._exact, pattern, platform, f"mx pattern {pattern}")
            for name in platform.spf:
                _claim(self._spf, name, platform, f"spf {name}")
            for name in platform.autodiscover:
                _claim(self._autodiscover, name, platform, f"autodiscover {name}")
            for name in platform.ews:
                _claim(self._ews, name, platform, f"ews {name}")

    def __len__(self) -> int:
        return len(self.platforms)

    def get(self, key: str) -> Platform | None:
        return next((p for p in self.platforms if p.key == key), None)

    def match_mx(self, host: str) -> MxMatch | None:
        host = host.lower().rstrip(".")
        if host in self._exact:
            return MxMatch(self._exact[host], host)
        labels = host.split(".")
        for start in range(1, len(labels) - 1):
            parent = ".".join(labels[start:])
            if parent in self._under:
                return MxMatch(self._under[parent], f"*.{parent}")
        return None

    def match_spf(self, name: str) -> Platform | None:
        return self._spf.get(name.lower().rstrip("."))

    def match_autodiscover(self, host: str) -> Platform | None:
        return self._autodiscover.get(host.lower().rstrip("."))

    def match_ews(self, host: str) -> Platform | None:
        return self._ews.get(host.lower().rstrip("."))


def _claim(index: dict, name: str, platform: Platform, what: str) -> None:
    other = index.get(name)
    if other is not None and other.key != platform.key:
        raise PlatformTableError(f"row {platform.key}: {what} is claimed by row {other.key} too")
    index[name] = platform


def _host(value, where: str, *, wildcard: bool = False) -> str:
    if not isinstance(value, str) or not value:
        raise PlatformTableError(f"{where}: expected a host name, got {value!r}")
    name = value.lower()
    under = wildcard and name.startswith("*.")
    bare = name[2:] if under else name
    try:
        if normalize_domain(bare) != bare or "*" in bare or "%" in bare:
            raise AddressError("not in its normal form")
    except AddressError as error:
        raise PlatformTableError(f"{where}: {value!r} is not a host name ({error})") from None
    # "*.co.uk" would claim every company in the UK: a pattern stays at or below a
    # registrable domain, by the public suffix list.
    if registrable_domain(bare) is None:
        raise PlatformTableError(f"{where}: {value!r} is a public suffix, not a provider's host")
    return name


def _dns_name(value, where: str) -> str:
    name = value.lower() if isinstance(value, str) else ""
    labels = name.split(".")
    if len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
        raise PlatformTableError(f"{where}: {value!r} is not a DNS name")
    if registrable_domain(name) is None:
        raise PlatformTableError(f"{where}: {value!r} is a public suffix")
    return name


def _names(row: dict, field: str, where: str, *, wildcard: bool = False) -> tuple[str, ...]:
    values = row.get(field, [])
    if not isinstance(values, list):
        raise PlatformTableError(f"{where}: {field} must be a list")
    if field == "spf":
        return tuple(_dns_name(v, f"{where} spf") for v in values)
    return tuple(_host(v, f"{where} {field}", wildcard=wildcard) for v in values)


def _server(value, where: str, ports: dict) -> Server:
    match = _SERVER.match(value) if isinstance(value, str) else None
    if match is None:
        raise PlatformTableError(f"{where}: {value!r} is not host:port/ssl or host:port/starttls")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise PlatformTableError(f"{where}: port {port} is outside 1-65535")
    security = _SECURITY[match["security"]]
    if ports.get(port, security) != security:
        raise PlatformTableError(f"{where}: port {port} does not take {match['security']}")
    return Server(_host(match["host"], where), port, security)


def _https(value, where: str) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme != "https" or not parts.hostname:
        raise PlatformTableError(f"{where}: {value!r} is not an https:// address")
    return value


def _platform(row, number: int, builtins: set[str]) -> Platform:
    if not isinstance(row, dict):
        raise PlatformTableError(f"row {number}: expected a mapping")
    key = row.get("key")
    if not isinstance(key, str) or not _KEY.match(key):
        raise PlatformTableError(f"row {number}: key {key!r} is missing or malformed")
    where = f"row {key}"
    unknown = set(row) - _FIELDS
    if unknown:
        raise PlatformTableError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name, kind = row.get("name"), row.get("kind")
    if not isinstance(name, str) or not name.strip():
        raise PlatformTableError(f"{where}: name is missing")
    if kind not in _KINDS:
        raise PlatformTableError(f"{where}: kind must be one of {', '.join(sorted(_KINDS))}")
    mx = _names(row, "mx", where, wildcard=True)
    if not mx:
        raise PlatformTableError(f"{where}: mx lists no pattern")
    values = {
        "key": key, "name": name.strip(), "kind": kind, "mx": mx,
        "source": _https(row.get("source"), f"{where} source"),
        "spf": _names(row, "spf", where), "autodiscover": _names(row, "autodiscover", where),
        "ews": _names(row, "ews", where),
    }  # fmt: skip
    settings = {"builtin", "card", "imap", "smtp", "login", "app_password_help_url", "guide"}
    if kind != PROVIDER:
        stray = settings & set(row)
        if stray:
            raise PlatformTableError(f"{where}: a {kind} row has no {', '.join(sorted(stray))}")
        if kind == UNSUPPORTED:
            reason = row.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise PlatformTableError(f"{where}: say why it is not supported (reason)")
            values["reason"] = " ".join(reason.split())
        return Platform(**values)
    if "reason" in row:
        raise PlatformTableError(f"{where}: only an unsupported row has a reason")
    if "builtin" in row:
        if row["builtin"] not in builtins:
            raise PlatformTableError(f"{where}: no built-in provider is named {row['builtin']!r}")
        stray = (settings - {"builtin"}) & set(row)
        if stray:
            raise PlatformTableError(
                f"{where}: the built-in card has its own settings; drop {', '.join(sorted(stray))}"
            )
        return Platform(**values, builtin=row["builtin"])
    card = row.get("card")
    if not isinstance(card, str) or not card.strip() or len(card) > 200:
        raise PlatformTableError(f"{where}: name the built-in card (builtin) or its own (card)")
    login = row.get("login", "email")
    guide = row.get("guide", "")
    if login not in _LOGINS:
        raise PlatformTableError(f"{where}: login must be email or local_part")
    if guide and guide not in _GUIDES:
        raise PlatformTableError(f"{where}: guide must be one of {', '.join(sorted(_GUIDES))}")
    help_url = row.get("app_password_help_url", "")
    ispdb = row.get("ispdb", "")
    if not isinstance(ispdb, str):
        raise PlatformTableError(f"{where}: ispdb must be an ISPDB id")
    return Platform(
        **values,
        card=card.strip(),
        imap=_server(row.get("imap"), f"{where} imap", IMAP_PORTS),
        smtp=_server(row.get("smtp"), f"{where} smtp", SMTP_PORTS),
        login=_LOGINS[login],
        app_password_help_url=_https(help_url, f"{where} app_password_help_url")
        if help_url
        else "",
        guide=guide,
        ispdb=ispdb.lower(),
    )


def parse(text: str) -> PlatformTable:
    try:
        rows = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PlatformTableError(f"not valid YAML ({error})") from None
    if not isinstance(rows, list) or not rows:
        raise PlatformTableError("expected a list of rows")
    builtins = {spec["name"] for spec in BUILTIN_PROVIDERS}
    platforms = [_platform(row, number, builtins) for number, row in enumerate(rows, 1)]
    seen: dict[tuple[str, str], str] = {}
    for platform in platforms:
        for label, value in (("key", platform.key), ("card", platform.card)):
            if value and (label, value) in seen:
                raise PlatformTableError(f"row {platform.key}: {label} {value!r} is used twice")
            seen[(label, value)] = platform.key
    return PlatformTable(platforms)


@cache
def platforms() -> PlatformTable:
    """The table, read once per process."""
    try:
        return parse(TABLE_PATH.read_text(encoding="utf-8"))
    except PlatformTableError as error:
        raise PlatformTableError(f"{TABLE_PATH.name}: {error}") from None
