"""Which addresses a *name* may lead a sandbox to: the public Internet, not back inside the host or its networks.

An allowed name is resolved by the proxy, and a name anybody can point anywhere — ``evil.example`` →
``127.0.0.1``, ``169.254.169.254`` (the cloud metadata service), a router on ``192.168.1.1`` — must not turn
the proxy into a way in (server-side request forgery). So every address a name resolves to is judged here,
and an inward one refused unless the allowlist names the address itself or the operator pinned the name.

The table follows the IANA special-purpose registries, failing closed: an IPv6 address outside 2000::/3
(the only block IANA allocates for global unicast) is "reserved". IPv6 spellings that carry an IPv4 address
— mapped ``::ffff:127.0.0.1``, compatible ``::127.0.0.1``, NAT64 ``64:ff9b::7f00:1``, 6to4 ``2002:7f00:1::``,
Teredo — are judged by the IPv4 address they carry, since that is where a packet to them may end up.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
from collections.abc import Collection
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path

log = logging.getLogger("sandboxd.egress")

Address = IPv4Address | IPv6Address

SHARED_ADDRESS_SPACE = "shared address space (100.64.0.0/10)"
OWN_ADDRESS = "the host's own address"

# Most specific first where blocks nest; the first match names the reason.
_IPV4_INWARD: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "unspecified"),  # "this network": connecting to 0.x reaches the host itself on Linux
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", SHARED_ADDRESS_SPACE),  # carrier-grade NAT, and the sandbox networks of some clouds
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),  # 169.254.169.254 is the cloud metadata service
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),  # IETF protocol assignments (NAT64 discovery, DS-Lite …)
        ("192.0.2.0/24", "reserved"),  # documentation
        ("192.88.99.0/24", "reserved"),  # the retired 6to4 relay anycast
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved"),  # benchmarking
        ("198.51.100.0/24", "reserved"),  # documentation
        ("203.0.113.0/24", "reserved"),  # documentation
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),  # future use, and the broadcast address 255.255.255.255
    )
)

_IPV6_INWARD: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(network), reason)
    for network, reason in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "private"),  # local-use NAT64 (RFC 8215): reaches whatever the local translator does
        ("100::/64", "reserved"),  # discard-only
        ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo is judged before, by what it carries)
        ("2001:db8::/32", "reserved"),  # documentation
        ("3fff::/20", "reserved"),  # documentation (RFC 9637)
        ("fc00::/7", "private"),  # unique local
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),  # the deprecated site-local block
        ("ff00::/8", "multicast"),
    )
)

_GLOBAL_UNICAST = IPv6Network("2000::/3")
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")


def _translated_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 spelling *is* (mapped, compatible, NAT64): judged as that address alone —
    public when it is (DNS64 hands out 64:ff9b:: addresses for every IPv4-only name)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if (address in _IPV4_COMPATIBLE and int(address) > 1) or address in _NAT64_WELL_KNOWN:
        return IPv4Address(int(address) & 0xFFFF_FFFF)  # :: and ::1 are themselves, not 0.0.0.0 / 0.0.0.1
    return None


def _tunnelled_ipv4(address: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses a tunnelling IPv6 address (6to4, Teredo) carries: inward ones make it inward."""
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        server, client = address.teredo
        return [client, server]
    return []


def within_inward_space(network: IPv4Network | IPv6Network, own: Collection[Address]) -> bool:
    """Whether an allowlist's address entry names inward space alone — one inward address, or a network inside
    one inward block (``10.1.0.0/16``, ``127.0.0.1``) — and so may reach it. A sweeping ``0.0.0.0/0`` opens the
    Internet, not the host's loopback and its networks."""
    if network.num_addresses == 1:
        return inward_reason(network.network_address, own) is not None
    if isinstance(network, IPv4Network):
        return any(network.subnet_of(block) for block, _ in _IPV4_INWARD)
    return any(network.subnet_of(block) for block, _ in _IPV6_INWARD)


def inward_reason(address: IPv4Address | IPv6Address, own: Collection[IPv4Address | IPv6Address]) -> str | None:
    """None when ``address`` is a public one a name may lead to; else a short reason why it is inward:
    "loopback", "link-local", "private", "shared address space (100.64.0.0/10)", "multicast", "unspecified",
    "reserved", or "the host's own address" (``own``: every address of the host's interfaces)."""
    if isinstance(address, IPv6Address):
        if address.scope_id is not None:
            address = IPv6Address(address.compressed.partition("%")[0])
        translated = _translated_ipv4(address)
        if translated is not None:
            return inward_reason(translated, own)
        for carried in _tunnelled_ipv4(address):
            reason = inward_reason(carried, own)
            if reason is not None:
                return reason
        for network6, reason6 in _IPV6_INWARD:
            if address in network6:
                return reason6
        if address not in _GLOBAL_UNICAST:
            return "reserved"
    else:
        for network4, reason4 in _IPV4_INWARD:
            if address in network4:
                return reason4
    if address in own:
        return OWN_ADDRESS
    return None


def host_own_addresses(proc_net: Path = Path("/proc/net")) -> frozenset[IPv4Address | IPv6Address]:
    """Every address of this host's interfaces, read afresh (addresses come and go with DHCP and hotplug).

    IPv4 from the kernel's local routing table (``fib_trie``: every ``/32 host LOCAL`` entry, so secondary
    addresses too), falling back to one ``SIOCGIFADDR`` per interface; IPv6 from ``if_inet6``.
    """
    ipv4 = _ipv4_from_fib_trie(proc_net / "fib_trie")
    if ipv4 is None:
        ipv4 = _ipv4_from_ioctl()
    return frozenset([*ipv4, *_ipv6_from_if_inet6(proc_net / "if_inet6")])


def _ipv4_from_fib_trie(path: Path) -> set[IPv4Address] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    found: set[IPv4Address] = set()
    last: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped.startswith("/32 host LOCAL") and last is not None:
            try:
                found.add(IPv4Address(last))
            except ValueError:
                log.warning("%s: unexpected address %r", path, last)
    return found


_SIOCGIFADDR = 0x8915


def _ipv4_from_ioctl() -> set[IPv4Address]:
    found: set[IPv4Address] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _index, name in socket.if_nameindex():
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:  # an interface without an IPv4 address
                continue
            found.add(IPv4Address(answer[20:24]))
    return found


def _ipv6_from_if_inet6(path: Path) -> set[IPv6Address]:
    try:
        text = path.read_text()
    except OSError:  # no IPv6 on this host
        return set()
    found: set[IPv6Address] = set()
    for line in text.splitlines():
        fields = line.split()
        if fields and len(fields[0]) == 32:
            try:
                found.add(IPv6Address(int(fields[0], 16)))
            except ValueError:
                log.warning("%s: unexpected line %r", path, line)
    return found
