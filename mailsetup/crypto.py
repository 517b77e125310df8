"""Encryption of stored credentials (passwords, OAuth secrets and tokens).

MultiFernet: the first key in CREDENTIAL_KEYS encrypts and every key decrypts, so a
new key can be put first while values written under the old one stay readable.
"""

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class CredentialError(Exception):
    """A stored credential cannot be decrypted with any configured key."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.CREDENTIAL_KEYS))


def encrypt(plain: str) -> str:
    return _current().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken:
        raise CredentialError(
            "A stored credential cannot be decrypted: CREDENTIAL_KEYS no longer holds its key."
        ) from None


def rotate(token: str) -> str:
    return _current().rotate(token.encode()).decode()
