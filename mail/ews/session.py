"""Exchange Web Services (EWS) sessions, through exchangelib: the service address from
the provider card (or autodiscover when it has none), the mailbox's login, a password
(the server chooses NTLM or Basic) or an OAuth 2.0 access token, and the same trust and
internal-address rules as the IMAP and SMTP connections.

exchangelib talks HTTP through requests; its adapter is the app's MailTrustAdapter, so
the company's own CA works and verification is never turned off.
"""

import contextlib
import contextvars
import functools
import threading
from urllib.parse import urlsplit

from django.conf import settings
from django.views.decorators.debug import sensitive_variables
from requests.utils import get_environ_proxies, select_proxy

from mail import trust
from mail.errors import SignInError
from mailsetup import net
from providers.addresses import Address
from providers.models import EmailProvider
from systemsettings.selectors import internal_mail_servers_allowed


class InternalAddressRefused(trust.InternalAddressRefused):
    """A connection to an internal network address while those are not allowed."""

    MESSAGE = (
        "The Exchange server is on an internal network address, and connecting to "
        "internal mail servers is turned off; an administrator can allow it with the "
        "system setting AllowInternalMailServers."
    )


def _guarded_adapter():
    # The internal-address rule on every connection exchangelib opens: to the service
    # address, and to whatever autodiscover or a redirect points at.
    return trust.guarded_adapter(InternalAddressRefused)


def _exchangelib():
    # Imported on first use: only workers and views that talk to Exchange pay for it.
    import exchangelib
    import exchangelib.account
    from exchangelib.protocol import BaseProtocol

    if not getattr(BaseProtocol.HTTP_ADAPTER_CLS, "guards_exchange", False):
        adapter = _guarded_adapter()
        adapter.guards_exchange = True
        BaseProtocol.HTTP_ADAPTER_CLS = adapter
    BaseProtocol.TIMEOUT = settings.MAIL_CONNECT_TIMEOUT
    discovery = _autodiscovery()
    exchangelib.account.Autodiscovery = discovery
    # Autodiscover's own limits (its protocol's 10 s, its DNS look-ups' 4 and 10 s) stay,
    # unless the app's connect timeout is shorter.
    base = discovery.__mro__[1]
    connect = settings.MAIL_CONNECT_TIMEOUT
    discovery.DNS_RESOLVER_ATTRS = {
        **base.DNS_RESOLVER_ATTRS,
        "timeout": min(base.DNS_RESOLVER_ATTRS["timeout"], connect),
    }
    discovery.DNS_RESOLVER_LIFETIME = min(base.DNS_RESOLVER_LIFETIME, connect)
    return exchangelib


@functools.cache
def _autodiscovery():
    from exchangelib.autodiscover.discovery import Autodiscovery
    from exchangelib.errors import TransportError

    class StoppableAutodiscovery(Autodiscovery):
        """Does nothing more once its work ran out of time (its scope cancelled): cutting
        its connections ends each step, and it would go on to look up the next step's
        names. A walk that waited for exchangelib's process-wide lock behind another
        one, and ran out of time meanwhile, stops as it gets the lock: it would ask the
        cached endpoint with its connections refused, take the failure for the
        endpoint's, and forget it for every process of the host."""

        def discover(self):
            _stop_if_cancelled()
            return super().discover()

        def _quick(self, protocol):
            _stop_if_cancelled()
            return super()._quick(protocol)

        def _ensure_valid_hostname(self, url):
            if (scope := trust.current_scope()) and scope.cancelled:
                raise TransportError("autodiscover ran out of time")
            return super()._ensure_valid_hostname(url)

        def _get_srv_records(self, hostname):
            if (scope := trust.current_scope()) and scope.cancelled:
                return []
            return super()._get_srv_records(hostname)

    return StoppableAutodiscovery


class AutodiscoverCancelled(Exception):
    """Not exchangelib's AutoDiscoverFailed, on which it forgets the cached endpoint."""


def _stop_if_cancelled() -> None:
    if (scope := trust.current_scope()) and scope.cancelled:
        raise AutodiscoverCancelled


# Autodiscover's whole walk, in connect timeouts: it tries several addresses, DNS and
# redirects, each within the timeout but together unbounded, and a server that answers
# a byte at a time trips no timeout at all. Four keep the wizard's OAuth callback (a
# token trade of two, the sign-in's requests) within gunicorn.conf.py's timeout.
AUTODISCOVER_CONNECTS = 4


class AutodiscoverTimeout(TimeoutError):
    pass


@sensitive_variables("credentials")
def _autodiscovered(ex, address: Address, credentials):
    """exchangelib's Account found by autodiscover, or AutodiscoverTimeout when that takes
    longer than AUTODISCOVER_CONNECTS connect timeouts. It runs in a thread of its own
    whose connections are cut when the time is up: the thread then ends, and with it the
    process-wide lock exchangelib holds while it discovers (every other autodiscover in
    the process waits on it)."""
    scope = trust.Cancellable(allow_internal=internal_mail_servers_allowed())
    outcome: dict = {}

    @sensitive_variables("credentials")
    def discover() -> None:
        with trust.connections_of(scope):
            try:
                outcome["account"] = ex.Account(
                    primary_smtp_address=address.email, credentials=credentials,
                    autodiscover=True, access_type=ex.DELEGATE, default_timezone=ex.UTC,
                )  # fmt: skip
            except BaseException as error:  # raised again by the caller, on its thread
                outcome["error"] = error

    # The caller's context (its log fields: the task, the mailbox) goes along.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(discover,), name="ews-autodiscover", daemon=True
    )
    thread.start()
    timed_out = True
    try:
        thread.join(AUTODISCOVER_CONNECTS * settings.MAIL_CONNECT_TIMEOUT)
        timed_out = thread.is_alive()
    finally:
        if timed_out:  # the time is up, or the wait itself was interrupted
            scope.cancel()
    # Asked once: cancelling cuts sockets, and the walk woken by it may end (stopped)
    # before a second look, which then saw a walk that had "failed".
    if timed_out or isinstance(outcome.get("error"), AutodiscoverCancelled):
        raise AutodiscoverTimeout
    if "error" in outcome:
        raise outcome["error"]
    return outcome["account"]


def _guard(url: str) -> None:
    """The internal-address and encryption rules of the mail connections, for the EWS
    address (checked when the session is made; requests resolves the name again)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise SignInError(
            "insecure",
            "The Exchange service address must start with https://, or the password would "
            "travel readable. Fix it on the provider card.",
            field="provider",
        )
    try:
        addresses = net.resolve(parts.hostname, parts.port or 443, settings.MAIL_CONNECT_TIMEOUT)
    except (OSError, UnicodeError):
        if select_proxy(url, get_environ_proxies(url)):
            # Reached through a proxy the environment names, which may be the only one
            # that can look the name up; the adapter still holds the server to the
            # internal-address rule by its name (mail.trust).
            return
        raise SignInError(
            "dns",
            f"We could not find the server {parts.hostname} (DNS lookup failed). Check the "
            "Exchange service address on the provider card.",
            field="provider",
        ) from None
    if not internal_mail_servers_allowed() and all(net.is_internal(a[0]) for a in addresses):
        raise SignInError(
            "internal_address",
            f"{parts.hostname} is on an internal network address. Connecting to internal "
            "mail servers is turned off; an administrator can allow it with the system "
            "setting AllowInternalMailServers.",
            field="provider",
        )


@sensitive_variables("password", "access_token")
def ews_session(
    *, provider: EmailProvider, address: Address, login: str, password: str = "",
    access_token: str = "",
):  # fmt: skip
    """An exchangelib Account for the mailbox, signed in (one GetFolder of the inbox
    proves it). Raises SignInError, whose kind says whether trying later may help."""
    ex = _exchangelib()
    from exchangelib.errors import (
        AutoDiscoverFailed,
        ErrorAccessDenied,
        ErrorNonExistentMailbox,
        ResponseMessageError,
        TransportError,
        UnauthorizedError,
    )

    if access_token:
        credentials = ex.OAuth2AuthorizationCodeCredentials(
            access_token={"access_token": access_token, "token_type": "Bearer"}
        )
    else:
        credentials = ex.Credentials(username=login, password=password)
    try:
        if provider.exchange_url:
            _guard(provider.exchange_url)
            config = ex.Configuration(
                service_endpoint=provider.exchange_url,
                credentials=credentials,
                auth_type=ex.OAUTH2 if access_token else None,
                retry_policy=ex.FailFast(),
                max_connections=2,
            )
            account = ex.Account(
                primary_smtp_address=address.email, config=config, autodiscover=False,
                access_type=ex.DELEGATE, default_timezone=ex.UTC,
            )  # fmt: skip
        else:
            account = _autodiscovered(ex, address, credentials)
            _guard(account.protocol.service_endpoint)
        account.inbox  # noqa: B018 (a GetFolder: the sign-in check itself)
    except UnauthorizedError:
        raise SignInError(
            "credentials",
            "Exchange did not accept the login and password. Check them; some servers want "
            "the login as DOMAIN\\user or as the full address.",
        ) from None
    except (ErrorAccessDenied, ErrorNonExistentMailbox) as error:
        raise SignInError(
            "contact_admin",
            f"Exchange refused access to {address.email} ({type(error).__name__}). Ask your "
            "Exchange administrator whether EWS is allowed for this mailbox.",
        ) from None
    except ResponseMessageError as error:
        # Exchange wrote this answer itself (ErrorMailboxConfiguration, ErrorServerBusy,
        # ...): the network worked. It is a TransportError to exchangelib, so it is
        # caught before that clause and means what it means while reading: a busy server
        # is worth another try, a refusal is not.
        from .backend import exchange_failure

        failure = exchange_failure(error)
        raise SignInError(failure.kind, str(failure), field="provider") from None
    except AutodiscoverTimeout:
        raise SignInError(
            "timeout",
            f"Exchange autodiscover for {address.domain} did not finish within "
            f"{AUTODISCOVER_CONNECTS * settings.MAIL_CONNECT_TIMEOUT} seconds. Try again "
            "later, or enter the Exchange service address on the provider card.",
            field="provider",
        ) from None
    except (TimeoutError, TransportError, OSError) as error:
        if trust.refused_internal(error):
            raise SignInError(
                "internal_address", InternalAddressRefused.MESSAGE, field="provider"
            ) from None
        if (reason := trust.untrusted_certificate(error)) is not None:
            # Not the network's: the same answer on every try until an administrator
            # fixes the server's certificate or the trusted CAs.
            raise SignInError(
                "certificate",
                "The Exchange server presented a security certificate that could not be "
                f"verified ({reason}). Your password was not sent. Ask your administrator "
                "to check the server's certificate and the trusted CAs.",
                field="provider",
            ) from None
        if isinstance(error, AutoDiscoverFailed):
            raise SignInError(
                "autodiscover",
                f"Exchange autodiscover found no server for {address.domain}. Enter the "
                "Exchange service address on the provider card.",
                field="provider",
            ) from None
        if refusal := trust.proxy_refusal(error):
            raise SignInError(
                "connection",
                trust.through_proxy("The Exchange server", refusal),
                field="provider",
            ) from None
        raise SignInError(
            "connection",
            f"The Exchange server could not be reached ({type(error).__name__}). Try again "
            "in a minute.",
            field="provider",
        ) from None
    return account


def directory_name(account, address: str) -> str:
    """The mailbox's display name in the Exchange directory (ResolveNames), or "" when
    the directory does not know it or will not say."""
    from exchangelib.errors import EWSError

    try:
        found = account.protocol.resolve_names([address], search_scope="ActiveDirectory")
    except (EWSError, OSError):
        return ""
    for mailbox in found:
        name = getattr(mailbox, "name", "") or ""
        if (getattr(mailbox, "email_address", "") or "").lower() == address.lower():
            return " ".join(name.split())[:200]
    return ""


def ews_close(account) -> None:
    """Give the session's connections back (exchangelib keeps a pool per endpoint)."""
    # Closing must not hide what happened before it.
    with contextlib.suppress(Exception):
        account.protocol.close()
