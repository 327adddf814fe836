"""Where the daemons are, and what gRPC makes of it: one channel target, its load balancing, its TLS name.

=====================================  ==========================================================================
what the caller names                  the channel
=====================================  ==========================================================================
nothing, or a socket path              ``unix:PATH`` — one daemon
one ``HOST:PORT``                      that target — one daemon
several ``HOST:PORT``                  ``ipv4:A,B,C`` (or ``ipv6:``), ``round_robin`` — a fleet; host names are
                                       resolved once, here
``dns:///NAME:PORT``                   that target, ``round_robin`` over every address of NAME — a fleet (a
                                       Kubernetes headless Service); gRPC re-resolves it as daemons come and go
=====================================  ==========================================================================

The fleet's channel also watches each daemon's health (gRPC's client-side health checking): a daemon that
drains says NOT_SERVING and leaves the rotation at once. A fleet also reaches each daemon alone
(:meth:`Targets.endpoints`): a session's calls go to its daemon, a refused call is retried on another,
``sandboxctl ps`` asks each. Over TLS every daemon of a fleet is verified against one name: the
``tls_server_name`` given, else the one host name the addresses share, else (for DNS) NAME — so the daemons'
certificates carry the Service's name, or each its IP address when reached by IP.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_SOCKET", "DNS_SCHEME", "SOCKET_ENV", "Endpoint", "Resolver", "Targets", "parse_targets",
           "socket_path_from_env"]

DEFAULT_SOCKET = Path("/run/sandboxd/sandboxd.sock")
SOCKET_ENV = "SANDBOXD_SOCKET"
DNS_SCHEME = "dns:///"
HEALTH_SERVICE = "sandboxd.v1.Sandbox"  # the service whose health the daemon reports (NOT_SERVING once draining)
# round_robin over the daemons that say they serve: gRPC's client-side health checking (a Watch on each
# daemon's grpc.health.v1 service) takes a draining daemon out of the rotation before it stops listening
FLEET_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}],
                                   "healthCheckConfig": {"serviceName": HEALTH_SERVICE}})

# (host, port) → the IP addresses of host; socket.getaddrinfo by default
Resolver = Callable[[str, int], list[str]]


def socket_path_from_env(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET)


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address of ``host``, IPv4 first, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from None
    return sorted({str(info[4][0]) for info in infos}, key=lambda text: (":" in text, text))


@dataclass(frozen=True)
class Endpoint:
    """One daemon: the target of a channel to it alone; ``label`` is how messages name it."""

    target: str
    label: str


@dataclass(frozen=True)
class Targets:
    """The parsed answer to "where are the daemons" (see the module's table)."""

    channel_target: str
    fleet: bool
    tls_server_name: str | None = None  # the name every daemon's certificate is checked against
    addresses: tuple[str, ...] = ()  # a fleet of listed addresses: each "IP:PORT" (v6 in brackets)
    dns: tuple[str, int] | None = None  # a fleet behind one DNS name: (name, port)
    resolve: Resolver = field(default=resolve_addresses, compare=False, repr=False)

    def channel_options(self) -> list[tuple[str, str | int]]:
        options: list[tuple[str, str | int]] = []
        if self.fleet:
            options.append(("grpc.service_config", FLEET_SERVICE_CONFIG))
        if self.tls_server_name:
            options.append(("grpc.ssl_target_name_override", self.tls_server_name))
        return options

    def endpoints(self) -> list[Endpoint]:
        """Each daemon alone; for DNS, the name's addresses now. One daemon: its own target."""
        if self.dns is not None:
            name, port = self.dns
            return [_ip_endpoint(address, port) for address in self.resolve(name, port)]
        if self.addresses:
            return [Endpoint(f"{_scheme_of(address)}:{address}", address) for address in self.addresses]
        return [Endpoint(self.channel_target, self.channel_target)]


def parse_targets(
    *,
    socket_path: str | os.PathLike[str] | None = None,
    target: str | None = None,
    addresses: Sequence[str] = (),
    tls_server_name: str | None = None,
    resolve: Resolver = resolve_addresses,
) -> Targets:
    """Where the daemons are: ``addresses`` (several: a fleet; one ``dns:///NAME:PORT``: a fleet), else
    ``target`` (any gRPC target; ``dns:///`` makes a fleet), else the Unix socket. ValueError says what is
    wrong with them."""
    if addresses and target:
        raise ValueError("name the daemons either as addresses or as one target, not both")
    if len(addresses) == 1:
        target = addresses[0]
    elif addresses:
        return _listed_fleet(addresses, tls_server_name, resolve)
    if target is None:
        return Targets(f"unix:{socket_path_from_env(socket_path)}", fleet=False)
    if target.startswith(DNS_SCHEME):
        name, port = _host_port(target.removeprefix(DNS_SCHEME))
        # each daemon is also reached by its IP address alone: its certificate is still checked against NAME
        return Targets(target, fleet=True, tls_server_name=tls_server_name or name, dns=(name, port),
                       resolve=resolve)
    return Targets(target, fleet=False, tls_server_name=tls_server_name)


def _listed_fleet(items: Sequence[str], tls_server_name: str | None, resolve: Resolver) -> Targets:
    addresses: list[str] = []
    hosts: set[str] = set()
    for item in items:
        if item.startswith(DNS_SCHEME) or item.startswith("unix:"):
            raise ValueError(f"{item!r}: a fleet is either several HOST:PORT addresses or one dns:///NAME:PORT")
        host, port = _host_port(item)
        hosts.add(host)
        ips = [host] if _is_ip(host) else resolve(host, port)
        if not ips:
            raise ValueError(f"{host!r} has no address")
        addresses.append(_join(ips[0], port))
    families = {_scheme_of(address) for address in addresses}
    if len(families) > 1:
        raise ValueError("the addresses mix IPv4 and IPv6: one channel balances over one family; name them all "
                         "in one, or give one dns:///NAME:PORT")
    if tls_server_name is None and len(hosts) == 1:
        tls_server_name = next(iter(hosts))  # every daemon answers for the same name
    scheme = families.pop()
    return Targets(f"{scheme}:{','.join(addresses)}", fleet=True, tls_server_name=tls_server_name,
                   addresses=tuple(addresses), resolve=resolve)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _join(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _scheme_of(address: str) -> str:
    return "ipv6" if address.startswith("[") else "ipv4"


def _ip_endpoint(ip: str, port: int) -> Endpoint:
    address = _join(ip, port)
    return Endpoint(f"{_scheme_of(address)}:{address}", address)
