"""OAuth 2.0 tokens of a mailbox: a valid access token when one is needed, refreshed
before it expires, the rotated refresh token stored atomically, and a refusal of the
refresh token turned into "reconnect needed" instead of retries.

The token endpoint is the provider's (`oauth_token_url`); requests go over HTTPS,
verified with the same trust as the mail servers (`mail_ssl_context`).
"""

import base64
import functools
import hashlib
import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mailsetup import crypto

from .connection import mail_ssl_context
from .models import EmailAccount

# An access token this close to its expiry is refreshed first: a sync or a send may
# take minutes, and the server checks the token when it is used.
EARLY = timedelta(minutes=5)


class ReconnectNeeded(Exception):
    """The provider no longer honours the mailbox's sign-in: its owner must sign in again."""


class TokenError(Exception):
    """The token endpoint could not be reached or answered oddly: worth another try."""


def _post(url: str, form: dict) -> tuple[int, dict]:
    if not url.lower().startswith("https://"):
        # Tokens and the client secret never travel unencrypted, nor through file: URLs.
        raise TokenError("The provider's OAuth token address must start with https://.")
    request = urllib.request.Request(  # noqa: S310 (https only, checked above)
        url,
        data=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(  # noqa: S310 (https only, checked above)
            request, timeout=settings.MAIL_CONNECT_TIMEOUT, context=mail_ssl_context()
        ) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            body = json.loads(error.read() or b"{}")
        except ValueError:
            body = {}
        return error.code, body
    except (OSError, ValueError) as error:
        raise TokenError(
            f"The sign-in service could not be reached ({type(error).__name__})."
        ) from None


def tokens_store(*, account: EmailAccount, answer: dict) -> None:
    """Keep what a token endpoint answered, encrypted (the caller holds the row lock)."""
    account.oauth_access_token_encrypted = crypto.encrypt(answer["access_token"])
    if answer.get("refresh_token"):
        account.oauth_refresh_token_encrypted = crypto.encrypt(answer["refresh_token"])
    account.oauth_expires_at = timezone.now() + timedelta(
        seconds=int(answer.get("expires_in", 3600))
    )
    account.uses_oauth = True
    account.reconnect_needed_at = None
    account.save(
        update_fields=[
            "oauth_access_token_encrypted", "oauth_refresh_token_encrypted", "oauth_expires_at",
            "uses_oauth", "reconnect_needed_at", "updated_at",
        ]
    )  # fmt: skip


def access_token(*, account_id: int, force_refresh: bool = False) -> str:
    """A valid access token for the mailbox. Refreshes when it is about to expire, or
    when asked (`force_refresh`, after the server refused the current one). Only one
    refresh happens however many workers ask at once: the row is locked, and whoever
    comes second finds the new token. Raises ReconnectNeeded or TokenError."""
    refused = None
    with transaction.atomic():
        account = (
            EmailAccount.objects.select_for_update().select_related("provider").get(pk=account_id)
        )
        if account.reconnect_needed_at is not None:
            raise ReconnectNeeded(f"{account.address} needs to be connected again.")
        fresh = account.oauth_expires_at and account.oauth_expires_at - EARLY > timezone.now()
        if fresh and not force_refresh and account.oauth_access_token_encrypted:
            return crypto.decrypt(account.oauth_access_token_encrypted)
        provider = account.provider
        status, answer = _post(
            provider.oauth_token_url,
            {
                "grant_type": "refresh_token",
                "refresh_token": crypto.decrypt(account.oauth_refresh_token_encrypted),
                "client_id": provider.oauth_client_id,
                "client_secret": provider.get_oauth_client_secret(),
            },
        )
        if status == 200 and answer.get("access_token"):
            tokens_store(account=account, answer=answer)
            return answer["access_token"]
        if not (
            status in (400, 401) and answer.get("error") in ("invalid_grant", "invalid_client")
        ):
            raise TokenError(
                f"The sign-in service answered {status} ({answer.get('error', 'no reason')})."
            )
        # Saved and committed before raising: the refusal stands.
        account.reconnect_needed_at = timezone.now()
        account.save(update_fields=["reconnect_needed_at", "updated_at"])
        refused = answer.get("error_description") or answer["error"]
    raise ReconnectNeeded(
        f"{account.provider.name} no longer accepts this mailbox's sign-in ({refused}). "
        "Sign in again with “Reconnect”: every setting and email is kept."
    )


def session_for(session, account: EmailAccount):
    """`session` (imap_session or smtp_session) signed in as the mailbox: with its
    password, or with its OAuth 2.0 access token, refreshed once more if the server
    refuses the current one (revoked early, or expired by the server's clock). Raises
    SignInError, ReconnectNeeded or TokenError."""
    from providers.addresses import normalize_address

    from .connection import SignInError

    connect = functools.partial(
        session,
        provider=account.provider,
        address=normalize_address(account.address),
        login=account.login,
    )
    if not account.uses_oauth:
        return connect(password=account.get_password())
    try:
        return connect(access_token=access_token(account_id=account.pk))
    except SignInError as error:
        if error.kind != "credentials":
            raise
    return connect(access_token=access_token(account_id=account.pk, force_refresh=True))


# What the mailbox needs from each provider, and who the user is (OpenID Connect).
SCOPES = {
    "gmail": "https://mail.google.com/ openid email",
    "outlook": "https://outlook.office.com/IMAP.AccessAsUser.All "
    "https://outlook.office.com/SMTP.Send offline_access openid email",
}
DEFAULT_SCOPE = "mail openid email"


@dataclass
class Pending:
    """A started sign-in, kept in the user's session under its `state`."""

    address: str
    provider_id: int
    verifier: str
    # Set when an existing mailbox signs in again ("Reconnect"), not a new one.
    account_id: int | None = None


def authorization_start(
    *, provider, address: str, redirect_uri: str, account_id: int | None = None
) -> tuple[str, str, Pending]:
    """The provider's authorization address to send the browser to, with a fresh
    `state` (bound to the session by the caller) and a PKCE challenge (S256)."""
    state = secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    query = {
        "response_type": "code",
        "client_id": provider.oauth_client_id,
        "redirect_uri": redirect_uri,
        "scope": SCOPES.get(provider.security_guide, DEFAULT_SCOPE),
        "state": state,
        "code_challenge": challenge.decode(),
        "code_challenge_method": "S256",
        "login_hint": address,
        # A refresh token every time (Google gives one only with consent prompted).
        "access_type": "offline",
        "prompt": "consent",
    }
    return (
        f"{provider.oauth_authorize_url}?{urlencode(query)}",
        state,
        Pending(address=address, provider_id=provider.pk, verifier=verifier, account_id=account_id),
    )


def code_exchange(*, provider, code: str, verifier: str, redirect_uri: str) -> dict:
    """Trade the authorization code for tokens; raises TokenError with the reason."""
    status, answer = _post(
        provider.oauth_token_url,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": provider.oauth_client_id,
            "client_secret": provider.get_oauth_client_secret(),
        },
    )
    if status != 200 or not answer.get("access_token"):
        reason = answer.get("error_description") or answer.get("error") or status
        raise TokenError(f"The sign-in could not be completed ({reason}).")
    return answer


def signed_in_address(*, answer: dict, client_id: str) -> str:
    """The address of the account the user signed in with, from the ID token.

    The ID token came straight from the token endpoint over verified TLS, which OpenID
    Connect Core (3.1.3.7) accepts in place of checking its signature; its audience and
    expiry are still checked."""
    token = answer.get("id_token", "")
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise TokenError("The provider did not say which account signed in.") from None
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences or float(claims.get("exp", 0)) < timezone.now().timestamp():
        raise TokenError("The provider's answer was not meant for this app, or has expired.")
    return str(claims.get("email") or claims.get("preferred_username") or "").strip().lower()
