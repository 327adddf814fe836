"""Which addresses a name may lead to: the inward table (IPv4, IPv6, and IPv6 spellings of IPv4 addresses),
the host's own addresses, and reading them from /proc fixtures."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import pytest

from sandboxd.egress.addresses import host_own_addresses, inward_reason

OWN: frozenset[IPv4Address | IPv6Address] = frozenset({IPv4Address("198.51.0.7"), IPv6Address("2a01:4f8::7")})


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fec0::1", "private"),
        ("100.64.0.1", "shared address space (100.64.0.0/10)"),
        ("100.127.255.255", "shared address space (100.64.0.0/10)"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),
        ("198.18.0.1", "reserved"),
        ("2001:db8::1", "reserved"),
        ("100::1", "reserved"),
        ("4000::1", "reserved"),  # outside 2000::/3: nothing there is allocated
        # IPv6 spellings of inward IPv4 addresses are judged as what they carry
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("::127.0.0.1", "loopback"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::a00:1", "private"),  # local-use NAT64
        ("2002:c0a8:0101::1", "private"),  # 6to4 of 192.168.1.1
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo whose client is 10.0.0.1
        # the host's own public addresses
        ("198.51.0.7", "the host's own address"),
        ("::ffff:198.51.0.7", "the host's own address"),
        ("2a01:4f8::7", "the host's own address"),
    ],
)
def test_inward_addresses_say_why(address: str, reason: str) -> None:
    assert inward_reason(ip_address(address), OWN) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "8.8.8.8", "2606:4700:4700::1111",
                                     "::ffff:1.1.1.1", "64:ff9b::808:808", "2002:808:808::1", "172.32.0.1",
                                     "100.128.0.1", "192.169.0.1"])
def test_public_addresses_may_be_reached(address: str) -> None:
    assert inward_reason(ip_address(address), OWN) is None


def test_own_addresses_are_read_from_proc(tmp_path: Path) -> None:
    (tmp_path / "fib_trie").write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
        "     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n"
        "              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n"
        "     |-- 203.0.113.9\n        /32 host LOCAL\n     |-- 203.0.113.255\n        /32 link BROADCAST\n"
        "Local:\n     |-- 203.0.113.9\n        /32 host LOCAL\n")
    (tmp_path / "if_inet6").write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "2a0104f8000000000000000000000007 02 40 00 80     eth0\n")
    assert host_own_addresses(tmp_path) == {IPv4Address("127.0.0.1"), IPv4Address("203.0.113.9"),
                                            IPv6Address("::1"), IPv6Address("2a01:4f8::7")}


def test_this_hosts_own_addresses_include_loopback() -> None:
    own = host_own_addresses()
    assert IPv4Address("127.0.0.1") in own
    assert all(isinstance(address, IPv4Address | IPv6Address) for address in own)
