"""The client's address and the request's scheme behind a reverse proxy the operator
trusts (TRUSTED_PROXIES), and from no one else.

Django's SECURE_PROXY_SSL_HEADER believes X-Forwarded-Proto from whoever sends it, so
it is set only when proxies are named, and this middleware (before SecurityMiddleware)
drops the X-Forwarded-* headers of any request that did not come through one of them:
a client talking to gunicorn directly cannot claim https, or another address.
"""

import ipaddress
from functools import cache

from django.conf import settings

FORWARDED = ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST")


@cache
def _networks(proxies: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def bare_address(entry: str) -> str:
    """The address alone in a forwarded entry some proxies write with a port or in
    RFC 7239 form: `ip:port` (IPv4), `[v6]:port`, `[v6]`, each perhaps in double
    quotes. Anything that is not one of these forms comes back as it was (stripped): a
    port left on would give every connection of one client its own throttle bucket."""
    entry = entry.strip()
    text = entry[1:-1] if len(entry) > 1 and entry[0] == entry[-1] == '"' else entry
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1 :]
        if end < 0 or not (rest == "" or (rest[:1] == ":" and rest[1:].isdigit())):
            return entry
        host = text[1:end]
    elif text.count(":") == 1:
        host, port = text.split(":")
        if not port.isdigit():
            return entry
    else:
        host = text
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return entry
    return host


def _trusted(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(bare_address(address).split("%", 1)[0])
    except ValueError:
        return False
    return any(ip in network for network in _networks(tuple(settings.TRUSTED_PROXIES)))


def client_ip(request) -> str:
    """The address the request came from: behind trusted proxies, the last address in
    X-Forwarded-For that is not one of them (each proxy appends who it heard from)."""
    address = request.META.get("REMOTE_ADDR", "")
    if not _trusted(address):
        return address
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        hop = bare_address(hop)
        if hop and not _trusted(hop):
            return hop
    return address


def throttle_address(address: str) -> str:
    """The address failed logins are counted under: an IPv4 address as it is (an
    IPv4-mapped IPv6 one as its IPv4 address), an IPv6 address as the first address of
    its /64. A /64 is one subscriber's (RFC 6177): counted per address, one attacker
    could rotate through 2**64 of them and never be throttled. A port or brackets
    around it (bare_address) are dropped first."""
    address = bare_address(address)
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False).network_address)
    return str(ip)


def axes_client_ip(request) -> str:
    # django-axes counts failed logins per client address (AXES_CLIENT_IP_CALLABLE).
    return throttle_address(client_ip(request))


class TrustedProxyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not _trusted(request.META.get("REMOTE_ADDR", "")):
            for header in FORWARDED:
                request.META.pop(header, None)
        return self.get_response(request)
