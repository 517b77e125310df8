"""Email address normalisation with messages a user can act on.

Normal form: surrounding whitespace dropped, everything lower case, the domain in
its ASCII (xn--) form. Lower-casing the local part is a deliberate choice: every
mainstream provider treats it case-insensitively, and one spelling per mailbox is
what duplicate detection needs.
"""

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

import idna
from publicsuffixlist import PublicSuffixList

MAX_ADDRESS = 254  # RFC 5321 path limit minus the angle brackets
MAX_LOCAL = 64
MAX_DOMAIN = 253
MAX_LABEL = 63

# RFC 5322 atext plus the dot; non-ASCII letters allowed (RFC 6531 internationalised mail).
_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")


class AddressError(ValueError):
    """The address is not usable; str() is the message to show next to the field."""


@dataclass(frozen=True)
class Address:
    local: str
    domain: str

    @property
    def email(self) -> str:
        return f"{self.local}@{self.domain}"

    def __str__(self) -> str:
        return self.email


# IDNA treats these as dots; people type them on Chinese and Japanese keyboards.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def _invisible(text: str) -> bool:
    """Zero-width, bidirectional and control characters: they make one address look
    like another, and no provider allows them."""
    return any(unicodedata.category(ch) in {"Cf", "Cc", "Co", "Cn", "Cs"} for ch in text)


def normalize_address(raw: str | None) -> Address:
    text = (raw or "").strip()
    if not text:
        raise AddressError("Enter an email address, for example anna@example.com.")
    if any(ch.isspace() for ch in text):
        raise AddressError("An email address cannot contain spaces.")
    if _invisible(text):
        raise AddressError(
            "The email address contains an invisible or control character; type it again "
            "rather than pasting it."
        )
    count = text.count("@")
    if count == 0:
        raise AddressError(
            "An email address needs an @ between the name and the domain, "
            "for example anna@example.com."
        )
    if count > 1:
        raise AddressError(f"An email address has exactly one @; this one has {count}.")
    local, domain = text.split("@")
    local = _normalize_local(local)
    domain = normalize_domain(domain)
    address = Address(local=local, domain=domain)
    if len(address.email) > MAX_ADDRESS:
        raise AddressError(f"An email address can be at most {MAX_ADDRESS} characters long.")
    return address


def _normalize_local(local: str) -> str:
    # One spelling of each letter (RFC 6532 3.1): "jürgen" typed on a Mac (u and a
    # combining diaeresis) was another mailbox than the same name typed elsewhere.
    local = unicodedata.normalize("NFC", local)
    if not local:
        raise AddressError("Enter the name before the @, for example anna@example.com.")
    if len(local.encode()) > MAX_LOCAL:
        raise AddressError(f"The part before the @ can be at most {MAX_LOCAL} characters long.")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError(
            "The part before the @ cannot start or end with a dot or have two dots in a row."
        )
    if not all(_LOCAL_ATOM.match(atom) for atom in local.split(".")):
        raise AddressError(
            "The part before the @ contains a character that email addresses do not allow."
        )
    return local.lower()


def normalize_domain(raw: str | None) -> str:
    domain = (raw or "").strip().translate(_DOTS)
    if not domain:
        raise AddressError("Enter the domain after the @, for example example.com.")
    if any(ch.isspace() for ch in domain):
        raise AddressError("A domain cannot contain spaces.")
    if domain.endswith("."):
        raise AddressError("The domain cannot end with a dot.")
    if domain.startswith(".") or ".." in domain:
        raise AddressError("The domain cannot start with a dot or have two dots in a row.")
    if "@" in domain:
        raise AddressError("Enter the domain alone, without an @: example.com, not @example.com.")
    if domain.startswith("["):
        raise AddressError("Enter a domain name such as example.com, not an IP address.")
    ascii_domain = ".".join(_ascii_label(label) for label in domain.split("."))
    if len(ascii_domain) > MAX_DOMAIN:
        raise AddressError(f"The domain can be at most {MAX_DOMAIN} characters long.")
    labels = ascii_domain.split(".")
    if len(labels) < 2:
        raise AddressError("The domain needs a dot, for example example.com.")
    if labels[-1].isdigit():
        raise AddressError("Enter a domain name such as example.com, not an IP address.")
    return ascii_domain


def _ascii_label(label: str) -> str:
    if label.isascii():
        ascii_label = label.lower()
        if ascii_label.startswith("xn--"):
            try:
                idna.decode(ascii_label)
            except (idna.IDNAError, UnicodeError):
                raise AddressError(
                    f"The domain part {label!r} is not a valid international domain name."
                ) from None
    else:
        try:
            ascii_label = idna.encode(label, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise AddressError(
                f"The domain part {label!r} is not a valid international domain name."
            ) from None
    if len(ascii_label) > MAX_LABEL:
        raise AddressError(
            f"Each part of the domain between dots can be at most {MAX_LABEL} characters long."
        )
    if not _LABEL.match(ascii_label):
        raise AddressError(
            f"The domain part {label!r} may only hold letters, digits and hyphens "
            "(not at its start or end)."
        )
    return ascii_label


@cache
def _public_suffixes() -> PublicSuffixList:
    # The list as bundled with the package (publicsuffixlist ships a dated snapshot and
    # never fetches one by itself); unknown endings such as .test count as suffixes.
    return PublicSuffixList(accept_unknown=True)


def registrable_domain(domain: str) -> str | None:
    """The domain someone registered ("example.co.uk" for "a.b.example.co.uk"), by the
    public suffix list; None for a public suffix itself ("co.uk")."""
    return _public_suffixes().privatesuffix(domain.lower())


def parent_domains(domain: str) -> list[str]:
    """The domains a normalised domain lies under, nearest first, down to its registrable
    domain and never above it: "mail.sub.example.co.uk" gives "sub.example.co.uk" and
    "example.co.uk", never "co.uk"."""
    base = registrable_domain(domain)
    if base is None or base == domain or not domain.endswith("." + base):
        return []
    labels = domain.split(".")
    keep = len(base.split("."))
    return [".".join(labels[i:]) for i in range(1, len(labels) - keep + 1)]
