import pytest

from mailsetup.net import is_internal


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "192.0.0.8", "0.0.0.0",  # noqa: S104
        "224.0.0.1", "::1", "fe80::1%eth0", "fd00:ec2::254", "fec0::1",
        "::ffff:127.0.0.1", "2002:7f00:1::1", "2002:a00:1::1",
        # NAT64 (RFC 6052), IPv4-compatible and 6to4 forms of internal IPv4 addresses.
        "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.1", "::127.0.0.1",
        "::10.0.0.1", "::169.254.169.254", "::93.184.215.14", "2002:a9fe:a9fe::1",
        "2002:c0a8:101::",
        # IPv4-mapped (::ffff:0:0/96), in either spelling, and SIIT's IPv4-translated
        # form (::ffff:0:0:0/96, RFC 2765), which a translator also connects through.
        "::ffff:10.0.0.1", "::ffff:a00:1", "::ffff:169.254.169.254", "::ffff:192.168.1.1",
        "::ffff:100.64.0.1", "::ffff:0.0.0.0", "::ffff:0:10.0.0.1", "::ffff:0:127.0.0.1",
        "::ffff:0:a9fe:a9fe", "::ffff:0:0:0",
    ],
)  # fmt: skip
def test_it_treats_internal_addresses_as_internal(ip):
    assert is_internal(ip)


@pytest.mark.parametrize(
    "ip",
    [
        "93.184.215.14",
        "2606:4700:4700::1111",
        "::ffff:93.184.215.14",
        "::ffff:0:93.184.215.14",
        # A NAT64 gateway's form of a public address is public.
        "64:ff9b::93.184.215.14",
    ],
)
def test_it_treats_public_addresses_as_public(ip):
    assert not is_internal(ip)
