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
import logging
import re
import secrets
import warnings
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from mail.errors import MailError
from mail.trust import InternalAddressRefused, guarded_adapter, refused_internal
from mailsetup import crypto, net
from providers.addresses import AddressError, normalize_address
from systemsettings.selectors import internal_mail_servers_allowed

from .models import EmailAccount

logger = logging.getLogger(__name__)

# An access token this close to its expiry is refreshed first: a sync or a send may
# take minutes, and the server checks the token when it is used.
EARLY = timedelta(minutes=5)


class ReconnectNeeded(MailError):
    """The provider no longer honours the mailbox's sign-in: its owner must sign in again."""

    def __init__(self, message: str):
        super().__init__("reconnect", message)


class TokenError(MailError):
    """The token endpoint could not be reached or answered oddly: worth another try."""

    def __init__(self, message: str):
        super().__init__("token_unavailable", message)


class OAuthAddressRefused(InternalAddressRefused):
    MESSAGE = (
        "The provider's OAuth address is on an internal network address, and connecting "
        "to internal servers is turned off; an administrator can allow it with the "
        "system setting AllowInternalMailServers, or correct the provider card."
    )


class OAuthInternalAddress(MailError):
    """An OAuth address of the provider card leads to an internal network address while
    those are not allowed: the card's administrator must act, no retry helps."""

    def __init__(self, message: str = OAuthAddressRefused.MESSAGE):
        super().__init__("internal_address", message)


def _unreachable(error: BaseException) -> MailError:
    """What a failed request to the provider's OAuth service means."""
    if refused_internal(error):
        return OAuthInternalAddress()
    return TokenError(f"The sign-in service could not be reached ({type(error).__name__}).")


def endpoint_refusal(url: str) -> str | None:
    """Why the app must not use this OAuth address of a provider card (not https, or a
    host on an internal network address while those are not allowed), or None. The
    authorization address is only visited by the browser, so this is its whole check;
    the app's own requests are checked again on the socket (`_session`)."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        return "An OAuth address must start with https://."
    if internal_mail_servers_allowed():
        return None
    try:
        addresses = net.resolve(parts.hostname, parts.port or 443, settings.MAIL_CONNECT_TIMEOUT)
    except (OSError, UnicodeError, ValueError):
        return None  # unknown now; the connection is checked when it is made
    if any(net.is_internal(address[0]) for address in addresses):
        return (
            f"{parts.hostname} is on an internal network address. Connecting to internal "
            "servers is turned off; an administrator can allow it with the system setting "
            "AllowInternalMailServers."
        )
    return None


@sensitive_variables("form")
def _post(url: str, form: dict) -> tuple[int, dict]:
    import requests

    _https(url)
    try:
        response = _session().post(
            url, data=form, headers={"Accept": "application/json"},
            timeout=settings.MAIL_CONNECT_TIMEOUT, allow_redirects=False,
        )  # fmt: skip
    except (requests.RequestException, OSError) as error:
        raise _unreachable(error) from None
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}


def _durable() -> None:
    """The current transaction's commit waits for the disk, whatever the session says:
    a sync turns synchronous_commit off for its own rows, which a crash may cost and the
    next run fetches again, but a rotated refresh token lost in a crash cannot be had
    again (the provider spent the old one) and the mailbox would need its owner."""
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO on")


def _lifetime(answer: dict) -> int:
    """The access token's lifetime in seconds, as the server said it (RFC 6749 says an
    integer; "3600.0", null or a huge number were a crash), an hour where it said none."""
    value = answer.get("expires_in")
    try:
        seconds = 3600 if value in (None, "") else int(float(value))
    except (TypeError, ValueError, OverflowError):
        seconds = 3600
    return min(max(seconds, 0), 86_400 * 365)


@sensitive_variables("answer")
def tokens_store(*, account: EmailAccount, answer: dict) -> None:
    """Keep what a token endpoint answered, encrypted (the caller holds the row lock)."""
    account.oauth_access_token_encrypted = crypto.encrypt(answer["access_token"])
    if answer.get("refresh_token"):
        account.oauth_refresh_token_encrypted = crypto.encrypt(answer["refresh_token"])
    account.oauth_expires_at = timezone.now() + timedelta(seconds=_lifetime(answer))
    account.uses_oauth = True
    account.reconnect_needed_at = None
    account.save(
        update_fields=[
            "oauth_access_token_encrypted", "oauth_refresh_token_encrypted", "oauth_expires_at",
            "uses_oauth", "reconnect_needed_at", "updated_at",
        ]
    )  # fmt: skip


@sensitive_variables("answer")
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
        try:
            answer = _client(account.provider).refresh(
                crypto.decrypt(account.oauth_refresh_token_encrypted)
            )
        except Refused as refusal:
            _durable()
            # Saved and committed before raising: the refusal stands.
            account.reconnect_needed_at = timezone.now()
            account.save(update_fields=["reconnect_needed_at", "updated_at"])
            refused = str(refusal)
        else:
            # The provider may have rotated the refresh token: the old one is spent.
            _durable()
            tokens_store(account=account, answer=answer)
            return answer["access_token"]
    raise ReconnectNeeded(
        f"{account.provider.name} no longer accepts this mailbox's sign-in ({refused}). "
        "Sign in again with “Reconnect”: every setting and email is kept."
    )


def session_for(session, account: EmailAccount):
    """`session` (imap_session or smtp_session) signed in as the mailbox: with its
    password, or with its OAuth 2.0 access token, refreshed once more if the server
    refuses the current one (revoked early, or expired by the server's clock). Raises
    SignInError, ReconnectNeeded or TokenError."""
    from mail.errors import SignInError

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
# Google answers the "email" alias with its full name, and oauthlib takes any change of
# scope as a failure: the full name is asked for.
GOOGLE_MAIL = "https://mail.google.com/"
GOOGLE_SCOPES = [GOOGLE_MAIL, "openid", "https://www.googleapis.com/auth/userinfo.email"]
# msal adds openid, profile and offline_access itself (and refuses them as input);
# "email" puts the address in the ID token, where the sign-in name may differ from it.
# Microsoft's scopes are the protocol's: MailBackend.microsoft_scopes.
DEFAULT_SCOPE = "mail openid email"
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"


@dataclass
class Pending:
    """A started sign-in, kept in the user's session under its `state`."""

    address: str
    provider_id: int
    verifier: str
    # Set when an existing mailbox signs in again ("Reconnect"), not a new one.
    account_id: int | None = None
    # msal's own record of the flow it started (state, PKCE verifier, nonce).
    flow: dict | None = None


class Refused(Exception):
    """The provider refused the refresh token for good (revoked, expired consent)."""


def _session():
    """A requests session trusting what the mail connections trust (mail_ssl_context),
    with the internal-address rule on every connection: the token, revocation and
    OpenID discovery addresses come from provider cards, which discovery may write."""
    import requests

    session = requests.Session()
    adapter = guarded_adapter(OAuthAddressRefused)()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _https(url: str) -> str:
    if not url.lower().startswith("https://"):
        # Tokens and the client secret never travel unencrypted, nor through file: URLs.
        raise TokenError("The provider's OAuth addresses must start with https://.")
    return url


class _Standard:
    """RFC 6749 + PKCE, for providers without a client library of their own (Zoho,
    Yahoo, a company's own authorization server)."""

    def __init__(self, provider):
        self.provider = provider

    def start(self, *, state: str, address: str, redirect_uri: str) -> tuple[str, Pending]:
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        query = {
            "response_type": "code",
            "client_id": self.provider.oauth_client_id,
            "redirect_uri": redirect_uri,
            "scope": DEFAULT_SCOPE,
            "state": state,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "login_hint": address,
            "access_type": "offline",
            "prompt": "consent",
        }
        url = f"{_https(self.provider.oauth_authorize_url)}?{urlencode(query)}"
        return url, Pending(address=address, provider_id=self.provider.pk, verifier=verifier)

    @sensitive_variables("answer", "query", "pending")
    def exchange(self, *, pending: Pending, query: dict, redirect_uri: str) -> dict:
        status, answer = _post(
            self.provider.oauth_token_url,
            {
                "grant_type": "authorization_code",
                "code": query.get("code", ""),
                "redirect_uri": redirect_uri,
                "code_verifier": pending.verifier,
                "client_id": self.provider.oauth_client_id,
                "client_secret": self.provider.get_oauth_client_secret(),
            },
        )
        if status != 200 or not answer.get("access_token"):
            reason = answer.get("error_description") or answer.get("error") or status
            raise TokenError(f"The sign-in could not be completed ({reason}).")
        return answer

    @sensitive_variables("refresh_token", "answer", "credentials")
    def refresh(self, refresh_token: str) -> dict:
        status, answer = _post(
            self.provider.oauth_token_url,
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": self.provider.oauth_client_id,
                "client_secret": self.provider.get_oauth_client_secret(),
            },
        )
        if status == 200 and answer.get("access_token"):
            return answer
        if status in (400, 401) and answer.get("error") in ("invalid_grant", "invalid_client"):
            raise Refused(answer.get("error_description") or answer["error"])
        raise TokenError(
            f"The sign-in service answered {status} ({answer.get('error', 'no reason')})."
        )


class _Google(_Standard):
    """Google, through google-auth-oauthlib (authorization) and google-auth (refresh)."""

    def _flow(self, redirect_uri: str, verifier: str | None = None):
        from google_auth_oauthlib.flow import Flow

        provider = self.provider
        config = {
            "web": {
                "client_id": provider.oauth_client_id,
                "client_secret": provider.get_oauth_client_secret(),
                "auth_uri": _https(provider.oauth_authorize_url),
                "token_uri": _https(provider.oauth_token_url),
            }
        }
        flow = Flow.from_client_config(
            config,
            scopes=GOOGLE_SCOPES,
            redirect_uri=redirect_uri,
            code_verifier=verifier,
            autogenerate_code_verifier=verifier is None,
        )
        flow.oauth2session.mount("https://", _session().get_adapter("https://"))
        return flow

    def start(self, *, state: str, address: str, redirect_uri: str) -> tuple[str, Pending]:
        flow = self._flow(redirect_uri)
        # A refresh token every time: Google gives one only when consent was asked.
        url, _state = flow.authorization_url(
            state=state, access_type="offline", prompt="consent", login_hint=address
        )
        verifier = flow.code_verifier
        return url, Pending(address=address, provider_id=self.provider.pk, verifier=verifier)

    @sensitive_variables("answer", "query", "pending")
    def exchange(self, *, pending: Pending, query: dict, redirect_uri: str) -> dict:
        from oauthlib.oauth2 import OAuth2Error

        flow = self._flow(redirect_uri, verifier=pending.verifier)
        try:
            answer = dict(flow.fetch_token(code=query.get("code", "")))
        except Warning as changed:
            # oauthlib's "Scope has changed": the user may have unticked mail access on
            # Google's consent page. Fine as long as mail access was granted.
            answer = dict(getattr(changed, "token", None) or {})
        except OAuth2Error as error:
            reason = error.description or error.error
            raise TokenError(f"The sign-in could not be completed ({reason}).") from None
        except (OSError, ValueError) as error:
            raise _unreachable(error) from None
        granted = answer.get("scope") or ""
        granted = granted.split() if isinstance(granted, str) else list(granted)
        if not answer.get("access_token") or GOOGLE_MAIL not in granted:
            raise TokenError(
                "Google did not allow access to the mailbox. Sign in again and allow "
                "“Read, compose, send and permanently delete all your email from Gmail”."
            )
        return answer

    @sensitive_variables("refresh_token", "answer", "credentials")
    def refresh(self, refresh_token: str) -> dict:
        from google.auth import exceptions
        from google.auth.transport.requests import Request
        from google.oauth2.credentials import Credentials

        provider = self.provider
        credentials = Credentials(
            token=None,
            refresh_token=refresh_token,
            token_uri=_https(provider.oauth_token_url),
            client_id=provider.oauth_client_id,
            client_secret=provider.get_oauth_client_secret(),
        )
        try:
            credentials.refresh(Request(session=_session()))
        except exceptions.RefreshError as error:
            details = error.args[1] if len(error.args) > 1 else {}
            details = details if isinstance(details, dict) else {}
            if details.get("error") in ("invalid_grant", "invalid_client"):
                raise Refused(details.get("error_description") or details["error"]) from None
            raise TokenError(f"The sign-in service refused to refresh ({error.args[0]}).") from None
        except exceptions.TransportError as error:
            raise _unreachable(error) from None
        expires_in = 3600
        if credentials.expiry is not None:  # naive UTC, as google-auth keeps it
            left = credentials.expiry - timezone.now().replace(tzinfo=None)
            expires_in = int(left.total_seconds())
        return {
            "access_token": credentials.token,
            "refresh_token": credentials.refresh_token,
            "expires_in": expires_in,
        }


def microsoft_authority(provider) -> str:
    """Where msal finds the provider's endpoints: the card's tenant at Microsoft, else
    the authority its authorization address belongs to."""
    authorize = provider.oauth_authorize_url
    suffix = "/oauth2/v2.0/authorize"
    if provider.oauth_tenant and authorize.startswith(f"{MICROSOFT_AUTHORITY}/"):
        # The tenant on the card narrows the sign-in to the company's directory.
        return f"{MICROSOFT_AUTHORITY}/{provider.oauth_tenant}"
    if authorize.endswith(suffix):
        return authorize[: -len(suffix)]
    return f"{MICROSOFT_AUTHORITY}/{provider.oauth_tenant or 'organizations'}"


class _Microsoft:
    """Microsoft Entra ID (Microsoft 365), through msal."""

    def __init__(self, provider):
        self.provider = provider

    def _app(self):
        import msal

        provider = self.provider
        authority = microsoft_authority(provider)
        try:
            return msal.ConfidentialClientApplication(
                provider.oauth_client_id,
                client_credential=provider.get_oauth_client_secret(),
                authority=_https(authority),
                http_client=_session(),
                # The authority is the admin's, from the provider card: no lookup of it
                # at login.microsoftonline.com first.
                instance_discovery=False,
                timeout=settings.MAIL_CONNECT_TIMEOUT,
            )
        except (OSError, ValueError) as error:
            # msal reads the tenant's OpenID configuration here, through _session().
            raise _unreachable(error) from None

    def _scopes(self) -> list[str]:
        # Each protocol its own permission: EWS's for Exchange Online, else IMAP's and SMTP's.
        from mail.registry import backend_for

        return list(backend_for(self.provider).microsoft_scopes)

    def start(self, *, state: str, address: str, redirect_uri: str) -> tuple[str, Pending]:
        with warnings.catch_warnings():
            # msal suggests form_post, but the browser would then POST back across sites,
            # and the session cookie (SameSite=Lax), to which the state is bound, would
            # stay behind. The code in the query is protected by the state and PKCE.
            warnings.filterwarnings("ignore", message="response_mode='form_post'")
            flow = self._app().initiate_auth_code_flow(
                self._scopes(), redirect_uri=redirect_uri, state=state, login_hint=address,
                prompt="select_account", response_mode="query",
            )  # fmt: skip
        pending = Pending(
            address=address,
            provider_id=self.provider.pk,
            verifier=flow["code_verifier"],
            flow=flow,
        )
        return flow["auth_uri"], pending

    @sensitive_variables("answer", "query", "pending")
    def exchange(self, *, pending: Pending, query: dict, redirect_uri: str) -> dict:
        try:
            # msal checks the state, the PKCE verifier and the ID token's nonce.
            answer = self._app().acquire_token_by_auth_code_flow(pending.flow or {}, query)
        except OSError as error:
            raise _unreachable(error) from None
        except ValueError as error:
            raise TokenError(f"The sign-in could not be completed ({error}).") from None
        if "access_token" not in answer:
            reason = answer.get("error_description") or answer.get("error")
            raise TokenError(f"The sign-in could not be completed ({reason}).")
        return answer

    @sensitive_variables("refresh_token", "answer", "credentials")
    def refresh(self, refresh_token: str) -> dict:
        try:
            answer = self._app().acquire_token_by_refresh_token(refresh_token, self._scopes())
        except OSError as error:
            raise _unreachable(error) from None
        if "access_token" in answer:
            return answer
        if answer.get("error") in ("invalid_grant", "invalid_client", "interaction_required"):
            raise Refused(answer.get("error_description") or answer["error"])
        raise TokenError(
            f"The sign-in service refused to refresh ({answer.get('error', 'no reason')})."
        )


@dataclass(frozen=True)
class IdentityHosts:
    """Where an OAuth sign-in goes, as the client the app uses for the provider has it:
    `sign_in`, the host whose page the browser is sent to (the password is typed there);
    `tokens`, the host the app trades the code and refreshes the tokens with.
    `origins`: the sign-in page's scheme, host and port (the pages' form-action)."""

    sign_in: str
    tokens: str
    origins: tuple[str, ...]


def identity_hosts(provider) -> IdentityHosts:
    """For msal (Microsoft) these are its authority's host, whatever else the card's
    authorization address says: msal finds both endpoints under the authority."""
    if isinstance(_client(provider), _Microsoft):
        authority = urlsplit(microsoft_authority(provider))
        host = authority.hostname or ""
        origin = f"https://{authority.netloc}".lower() if host else ""
        return IdentityHosts(sign_in=host, tokens=host, origins=(origin,) if origin else ())
    authorize = urlsplit(provider.oauth_authorize_url)
    token = urlsplit(provider.oauth_token_url)
    origin = f"https://{authorize.netloc}".lower() if authorize.hostname else ""
    return IdentityHosts(
        sign_in=authorize.hostname or "",
        tokens=token.hostname or "",
        origins=(origin,) if origin else (),
    )


def _client(provider):
    """The provider's own client library where it has one; the standard flow otherwise."""
    if provider.security_guide == "gmail":
        return _Google(provider)
    if provider.security_guide == "outlook" or provider.oauth_tenant:
        return _Microsoft(provider)
    return _Standard(provider)


def authorization_start(
    *, provider, address: str, redirect_uri: str, account_id: int | None = None
) -> tuple[str, str, Pending]:
    """The provider's authorization address to send the browser to, with a fresh
    `state` (bound to the session by the caller) and a PKCE challenge (S256)."""
    refusal = endpoint_refusal(provider.oauth_authorize_url)
    if refusal:
        # The browser would be sent there to type the password: an internal page could
        # pass itself off as the provider's.
        raise OAuthInternalAddress(refusal)
    state = secrets.token_urlsafe(24)
    url, pending = _client(provider).start(state=state, address=address, redirect_uri=redirect_uri)
    pending.account_id = account_id
    return url, state, pending


@sensitive_variables("query")
def code_exchange(*, provider, pending: Pending, query: dict, redirect_uri: str) -> dict:
    """Trade the authorization code the browser brought back for tokens; raises
    TokenError with the reason."""
    return _client(provider).exchange(pending=pending, query=query, redirect_uri=redirect_uri)


MICROSOFT_ISSUER = re.compile(r"\A/(?P<tenant>[^/]+)/v2\.0\Z")
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")


def _issuer_expected(provider, issuer: str, claims: dict) -> bool:
    """Whether the ID token comes from the provider's own sign-in service, judged by the
    card's authorization address (the page the user signed in on):
    - the issuer has the same origin, and the authorization address lies under its path
      (Google's https://accounts.google.com, Zoho's, Keycloak's realm paths);
    - Google also writes its issuer without the scheme ("accounts.google.com");
    - Microsoft's is https://login.microsoftonline.com/<the user's tenant id>/v2.0, the
      tenant id also in the `tid` claim; a card with a tenant id takes only that one."""
    authorize = urlsplit(provider.oauth_authorize_url)
    origin = f"{authorize.scheme}://{authorize.netloc}".lower()
    if issuer.lower() == authorize.netloc.lower() and isinstance(_client(provider), _Google):
        return True
    parts = urlsplit(issuer)
    if f"{parts.scheme}://{parts.netloc}".lower() != origin or parts.query or parts.fragment:
        return False
    path = parts.path.rstrip("/")
    if isinstance(_client(provider), _Microsoft):
        found = MICROSOFT_ISSUER.search(path)
        tenant = provider.oauth_tenant.strip().lower()
        if found and str(claims.get("tid", "")).lower() == found["tenant"].lower():
            return not _GUID.match(tenant) or tenant == found["tenant"].lower()
    return authorize.path == path or authorize.path.startswith(f"{path}/")


def signed_in_address(*, answer: dict, provider) -> str:
    """The address of the account the user signed in with, from the ID token.

    The ID token came straight from the token endpoint over verified TLS, which OpenID
    Connect Core (3.1.3.7) accepts in place of checking its signature; its issuer,
    audience and expiry are still checked, and an address the provider says it has not
    verified is not taken (msal hands over the claims decoded, without checking them
    since its 1.38)."""
    claims = answer.get("id_token_claims")
    if claims is None:
        token = answer.get("id_token", "")
        try:
            payload = token.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (IndexError, ValueError):
            raise TokenError("The provider did not say which account signed in.") from None
    if not isinstance(claims, dict):
        raise TokenError("The provider did not say which account signed in.")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    try:
        expired = float(claims.get("exp", 0)) < timezone.now().timestamp()
    except (TypeError, ValueError):
        expired = True
    issuer = str(claims.get("iss") or "")
    if (
        provider.oauth_client_id not in audiences
        or expired
        or not _issuer_expected(provider, issuer, claims)
    ):
        raise TokenError("The provider's answer was not meant for this app, or has expired.")
    if "email_verified" in claims and claims["email_verified"] not in (True, "true", "True"):
        raise TokenError(
            f"{provider.name} has not verified the address of the account you signed in "
            "with. Verify it with the provider first, then sign in again."
        )
    claimed = str(claims.get("email") or claims.get("preferred_username") or "").strip()
    try:
        # As addresses are stored: an international domain in its xn-- form, names in
        # NFC ("anna@bücher.example" is the mailbox "anna@xn--bcher-kva.example").
        return normalize_address(claimed).email
    except AddressError:
        return claimed.lower()  # not an address: another account, named as it came


@sensitive_variables("pending", "query")
def sign_in_answer(
    *, provider, pending: Pending, query: dict, redirect_uri: str, address: str, reconnecting: bool
) -> dict:
    """The provider's answer at the redirect URI (`query`), traded for tokens, for the
    account of `address` (the one the sign-in started for) and no other; TokenError
    says what went wrong."""
    if query.get("error"):
        reason = query.get("error_description") or query["error"]
        raise TokenError(f"{provider.name} did not sign you in ({reason}).")
    answer = code_exchange(
        provider=provider, pending=pending, query=query, redirect_uri=redirect_uri
    )
    signed_in = signed_in_address(answer=answer, provider=provider)
    if signed_in != address:
        instead = "" if reconnecting else f", or add {signed_in or 'that account'} instead"
        raise TokenError(
            f"You signed in to {provider.name} as {signed_in or 'another account'}, "
            f"not as {address}. Sign in with {address}{instead}."
        )
    return answer


@sensitive_variables("token")
def token_revoke(*, provider, token: str) -> bool:
    """Revoke a refresh token at the provider's revocation address (RFC 7009), when the
    card has one. True when the provider confirmed (200; RFC 7009 answers 200 for a
    token it no longer knows too). Raises TokenError or OAuthInternalAddress when the
    provider could not be asked."""
    url = provider.oauth_revoke_url
    if not url:
        return False
    status, answer = _post(
        url,
        {
            "token": token,
            "token_type_hint": "refresh_token",
            "client_id": provider.oauth_client_id,
            "client_secret": provider.get_oauth_client_secret(),
        },
    )
    if status == 200:
        return True
    if status == 503 or status >= 500:
        raise TokenError(f"The provider's revocation address answered {status}.")
    logger.warning(
        "Revocation at %s refused: HTTP %s (%s)", urlsplit(url).hostname, status,
        answer.get("error", "no reason"),
    )  # fmt: skip
    return False
