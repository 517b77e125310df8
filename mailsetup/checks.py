"""System checks that stop the app (`manage.py check`, runserver, migrate) when the
login throttle (django-axes) is set up so that it protects nothing or can be turned
against users: a client address anyone can forge, a user name throttled on its own
(anyone could lock its owner out from everywhere), or parts of it missing."""

from django.conf import settings
from django.core.checks import Error, register

CLIENT_IP_CALLABLE = "mailsetup.proxy.axes_client_ip"
FORWARDED_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


def _hint(text: str) -> str:
    return f"{text} See the login throttle in mailsetup/settings.py."


@register("security")
def login_throttle_check(app_configs=None, **kwargs) -> list[Error]:
    errors = []
    if not getattr(settings, "AXES_ENABLED", True):
        errors.append(Error("The login throttle is off (AXES_ENABLED is False).",
                            hint=_hint("Turn it on."), id="mailsetup.E001"))  # fmt: skip
    if "axes.middleware.AxesMiddleware" not in settings.MIDDLEWARE:
        errors.append(Error("AxesMiddleware is missing from MIDDLEWARE: a locked-out login "
                            "would not be answered as one.", hint=_hint("Put it last."),
                            id="mailsetup.E002"))  # fmt: skip
    backends = list(settings.AUTHENTICATION_BACKENDS)
    if not backends or backends[0] != "axes.backends.AxesStandaloneBackend":
        errors.append(Error("axes.backends.AxesStandaloneBackend must be the first "
                            "authentication backend, or failed logins are not counted.",
                            hint=_hint("Put it first."), id="mailsetup.E003"))  # fmt: skip
    if getattr(settings, "AXES_CLIENT_IP_CALLABLE", None) != CLIENT_IP_CALLABLE:
        errors.append(Error(
            f"AXES_CLIENT_IP_CALLABLE must be {CLIENT_IP_CALLABLE!r}: otherwise the client "
            "address comes from django-ipware, which believes X-Forwarded-For from anyone, "
            "and IPv6 clients are not grouped by their /64.",
            hint=_hint("Name trusted proxies in TRUSTED_PROXIES instead."), id="mailsetup.E004",
        ))  # fmt: skip
    order = getattr(settings, "AXES_IPWARE_META_PRECEDENCE_ORDER", None) or ()
    if not settings.TRUSTED_PROXIES and any(h in FORWARDED_HEADERS for h in order):
        errors.append(Error(
            "The login throttle takes the client address from a proxy header "
            "(AXES_IPWARE_META_PRECEDENCE_ORDER) while TRUSTED_PROXIES names no proxy: "
            "anyone could claim any address.",
            hint=_hint("Set TRUSTED_PROXIES, or drop the proxy headers."), id="mailsetup.E005",
        ))  # fmt: skip
    parameters = getattr(settings, "AXES_LOCKOUT_PARAMETERS", None) or []
    groups = [[p] if isinstance(p, str) else list(p) for p in parameters]
    if not groups:
        errors.append(Error("AXES_LOCKOUT_PARAMETERS is empty: nothing is throttled.",
                            hint=_hint("Keep [['username', 'ip_address'], 'ip_address']."),
                            id="mailsetup.E006"))  # fmt: skip
    if any("ip_address" not in group for group in groups):
        errors.append(Error(
            "AXES_LOCKOUT_PARAMETERS throttles a user name (or another value anyone can "
            "send) without the client address: anyone could lock a person out from every "
            "address.",
            hint=_hint("Combine it with 'ip_address'."), id="mailsetup.E007",
        ))  # fmt: skip
    return errors
