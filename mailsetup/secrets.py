"""Where the secret key and the credential-encryption keys come from.

Production passes them in the environment. A developer's machine (DEBUG on) gets
them generated once into var/ and reused, so a restart never makes stored
credentials unreadable; var/ is ignored by git, so they are never committed.
"""

import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from .env import env_list, env_str


def _read_or_create(path: Path, make) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Web, worker and beat may start at once on a fresh machine: write the whole key
        # to a private temporary file, then link it into place, so a reader never sees a
        # half-written file and exactly one key wins.
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
            handle.write(make() + "\n")
        temporary = Path(handle.name)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        except OSError:
            # A file system without hard links: an exclusive rename-free create instead.
            with contextlib.suppress(FileExistsError), path.open("x") as target:
                target.write(temporary.read_text())
        finally:
            temporary.unlink()
    value = path.read_text().strip()
    if not value:
        raise ImproperlyConfigured(f"{path} is empty; delete it to have a new key generated.")
    return value


def secret_key(*, debug: bool, var_dir: Path) -> str:
    value = env_str("SECRET_KEY")
    if value:
        return value
    if not debug:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    return _read_or_create(var_dir / "secret_key", lambda: secrets.token_urlsafe(50))


def credential_keys(*, debug: bool, var_dir: Path) -> list[str]:
    keys = env_list("CREDENTIAL_KEYS")
    if not keys:
        if not debug:
            raise ImproperlyConfigured(
                "CREDENTIAL_KEYS must be set when DEBUG is off: one or more Fernet keys, "
                "comma-separated, newest first (generate one with: python -c "
                "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')."
            )
        keys = [_read_or_create(var_dir / "credential_key", lambda: Fernet.generate_key().decode())]
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"CREDENTIAL_KEYS entry {position} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)."
            ) from None
    return keys
