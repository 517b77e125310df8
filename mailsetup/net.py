"""Name resolution with a time limit, and the rule for internal addresses.

Both the provider discovery and the mailbox sign-in check connect to hosts that
come from user input (an address's domain, a typed server name). Left unchecked,
that lets anyone make the server probe the company's internal network, or a cloud
metadata endpoint, so callers refuse internal addresses unless told otherwise.
"""

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

# getaddrinfo() has no timeout of its own; a small pool lets callers stop waiting.
_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="resolve")

# Ranges that some Python versions call global; none hosts a public mail server.
_NOT_PUBLIC = [ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("192.0.0.0/24")]
# IPv6 forms that carry an IPv4 address in their last 32 bits: NAT64's well-known prefix
# (RFC 6052; a NAT64 gateway connects to the IPv4 address inside) and the deprecated
# IPv4-compatible form (::a.b.c.d, RFC 4291). Python calls both global whatever they
# carry, so 64:ff9b::10.0.0.1 would reach 10.0.0.1 through the company's gateway.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# SIIT's IPv4-translated form (::ffff:0:a.b.c.d, RFC 2765), which a stateless
# translator connects through like NAT64; Python calls it global too.
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


def resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """Socket addresses for host:port, in the resolver's order.

    Raises socket.gaierror when the name does not resolve and TimeoutError when the
    resolver takes longer than `timeout` seconds.
    """
    future = _pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout:
        raise TimeoutError(f"looking up {host} took longer than {timeout:.0f} s") from None
    seen, addresses = set(), []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[:2] not in seen:
            seen.add(sockaddr[:2])
            addresses.append(sockaddr)
    return addresses


def is_internal(ip: str) -> bool:
    """Anything but a globally routable unicast address: loopback, private, link-local
    (cloud metadata), shared, reserved, multicast, and IPv6 forms that embed one
    (IPv4-mapped, IPv4-translated, IPv4-compatible, NAT64, 6to4, Teredo)."""
    address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_site_local:
            return True
        if address in _IPV4_COMPATIBLE:
            # Deprecated since 2006 and routed nowhere; :: and ::1 are in it too.
            return True
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and (address in _NAT64 or address in _IPV4_TRANSLATED):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and address.teredo:
            embedded = address.teredo[1]
        if embedded is not None:
            return is_internal(str(embedded))
    return (
        not address.is_global
        or address.is_multicast
        or (
            isinstance(address, ipaddress.IPv4Address)
            and any(address in network for network in _NOT_PUBLIC)
        )
    )
