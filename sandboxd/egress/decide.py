"""From a named target to a connected socket: match the lists, resolve once, judge every address, connect.

::

    the lists       the name (or literal) must match rules.allow, and rules.narrow when set    else 403 / 02
    resolve         a literal is its own address; a pinned name its pins; else the resolver    else 502 / 04
    judge           a name's addresses must all be outward (addresses.inward_reason)          else 403 / 02
                    — unless the target is a literal (only address entries match those) or pinned
    connect         to the judged addresses, in order, within connect_timeout                 else 502/504, 05/06

The addresses judged are the addresses connected to: nothing is resolved twice, so a name cannot answer
the check with a public address and the connection with a private one (DNS rebinding).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from sandboxd.egress.addresses import inward_reason, within_inward_space
from sandboxd.egress.allowlist import AllowEntry, Allowlist
from sandboxd.egress.events import ExecutionRules
from sandboxd.egress.target import Asked, Kind, Refused, format_target

Address = IPv4Address | IPv6Address
Resolver = Callable[[str, int], Awaitable[list[Address]]]

LISTED_ENTRIES_MAX = 8  # a refusal names this many entries of the list, then counts the rest


@dataclass(frozen=True)
class Decision:
    entry: AllowEntry  # the entry of rules.allow that let the target through
    addresses: tuple[Address, ...]  # checked, in the order to try them


def _listing(allowlist: Allowlist) -> str:
    texts = allowlist.texts()
    if not texts:
        return "the list is empty"
    shown = ", ".join(texts[:LISTED_ENTRIES_MAX])
    more = len(texts) - LISTED_ENTRIES_MAX
    return shown + (f" and {more} more" if more > 0 else "")


async def decide(asked: Asked, rules: ExecutionRules, *, pins: Mapping[str, tuple[Address, ...]],
                 resolver: Resolver, resolve_timeout_s: float,
                 own_addresses: Callable[[], Collection[Address]]) -> Decision:
    """The addresses ``asked`` may be connected to; :class:`Refused` (not allowed, or unresolved) otherwise."""
    entry = rules.allow.match(asked.host, asked.port)
    if entry is None:
        raise Refused(Kind.NOT_ALLOWED, f"not on the allowlist: {_listing(rules.allow)}")
    if rules.narrow is not None and rules.narrow.match(asked.host, asked.port) is None:
        raise Refused(Kind.NOT_ALLOWED, f"not on the caller's role allowlist: {_listing(rules.narrow)}")
    if asked.address is not None:  # only address entries match a literal: explicit
        own = _own(own_addresses)
        reason = inward_reason(asked.address, own)
        if reason is not None and (entry.network is None or not within_inward_space(entry.network, own)):
            raise Refused(Kind.NOT_ALLOWED,
                          f"{asked.address} is {reason}; {entry.text} also spans public space: list the inward address "
                          f"or network itself to reach it", str(asked.address))
        return Decision(entry, (asked.address,))
    pinned = pins.get(asked.host)
    if pinned is not None:
        return Decision(entry, pinned)
    addresses = await _resolve(asked, resolver, resolve_timeout_s)
    own = _own(own_addresses)
    for address in addresses:
        reason = inward_reason(address, own)
        if reason is not None:
            raise Refused(Kind.NOT_ALLOWED,
                          f"{asked.host} resolves to {address} ({reason}); an address entry or an [egress] "
                          f"resolve pin is needed to reach it", str(address))
    return Decision(entry, addresses)


def _own(own_addresses: Callable[[], Collection[Address]]) -> Collection[Address]:
    try:
        return own_addresses()
    except Exception as exc:  # without them "the host's own address" cannot be told: fail closed
        raise Refused(Kind.FAILED, f"the host's own addresses cannot be read ({exc})") from None


async def _resolve(asked: Asked, resolver: Resolver, timeout_s: float) -> tuple[Address, ...]:
    try:
        async with asyncio.timeout(timeout_s):
            found = await resolver(asked.host, asked.port)
    except TimeoutError:
        raise Refused(Kind.UNRESOLVED, f"{asked.host} did not resolve within {round(timeout_s * 1000)} ms") from None
    except socket.gaierror as exc:
        raise Refused(Kind.UNRESOLVED, f"{asked.host} does not resolve ({exc.strerror or exc})") from None
    except OSError as exc:
        raise Refused(Kind.UNRESOLVED, f"{asked.host} could not be resolved ({exc.strerror or exc})") from None
    addresses = tuple(dict.fromkeys(found))  # in the resolver's order, each once
    if not addresses:
        raise Refused(Kind.UNRESOLVED, f"{asked.host} resolves to no address")
    return addresses


async def connect(addresses: tuple[Address, ...], port: int, timeout_s: float) -> tuple[socket.socket, Address]:
    """A socket connected to the first of ``addresses`` that answers, all within ``timeout_s``;
    :class:`Refused` with the last failure otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = Refused(Kind.TIMEOUT, f"no answer within {round(timeout_s * 1000)} ms", str(addresses[0]))
    for address in addresses:
        remaining_s = deadline - loop.time()
        if remaining_s <= 0:
            break
        target = format_target(str(address), port)
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            last = Refused(Kind.FAILED, f"{target}: {exc.strerror or exc}", str(address))
            continue
        try:
            sock.setblocking(False)
            async with asyncio.timeout(remaining_s):
                await loop.sock_connect(sock, (str(address), port))
        except TimeoutError:
            _discard(loop, sock)
            last = Refused(Kind.TIMEOUT, f"no answer from {target} within {round(timeout_s * 1000)} ms", str(address))
        except OSError as exc:
            _discard(loop, sock)
            last = _connect_failure(exc, target, str(address))
        except BaseException:
            _discard(loop, sock)
            raise
        else:
            return sock, address
    raise last


def _connect_failure(exc: OSError, target: str, address: str) -> Refused:
    if isinstance(exc, ConnectionRefusedError):
        return Refused(Kind.REFUSED, f"{target} refused the connection", address)
    if exc.errno == errno.ENETUNREACH:
        return Refused(Kind.NETWORK_UNREACHABLE, f"{target}: the network is unreachable", address)
    if exc.errno == errno.EHOSTUNREACH:
        return Refused(Kind.HOST_UNREACHABLE, f"{target}: the host is unreachable", address)
    if exc.errno == errno.ETIMEDOUT:
        return Refused(Kind.TIMEOUT, f"{target}: the connection timed out", address)
    return Refused(Kind.FAILED, f"{target}: {exc.strerror or exc}", address)


def _discard(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    # Unregister before closing: asyncio drops a cancelled sock_connect's registration one loop turn later,
    # by fd number, and by then the number may belong to a new socket.
    if sock.fileno() != -1:
        loop.remove_writer(sock.fileno())
    sock.close()
