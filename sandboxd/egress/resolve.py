"""Where the proxy's addresses come from: the system resolver on threads of its own, and the host's own
addresses, re-read at most once a second.

``getaddrinfo`` blocks, so it runs on threads — but not on the event loop's default executor: a sandbox
asking for names whose servers never answer would hold those threads for the resolver's own timeouts, and
the daemon's other work on that executor would queue behind it. A lookup that outlives
``resolve_timeout_ms`` is abandoned; if it had not started yet it never runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Address, IPv6Address, ip_address

log = logging.getLogger("sandboxd.egress")

Address = IPv4Address | IPv6Address

RESOLVER_THREADS = 8
OWN_ADDRESSES_TTL_S = 1.0  # an address added to the host is refused at most this long after it appears


class SystemResolver:
    def __init__(self, threads: int = RESOLVER_THREADS) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="sandboxd-egress-dns")

    async def __call__(self, host: str, port: int) -> list[Address]:
        lookup = functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        infos = await asyncio.get_running_loop().run_in_executor(self._executor, lookup)
        return [ip_address(info[4][0]) for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class CachedOwnAddresses:
    """``read()`` (e.g. :func:`~sandboxd.egress.addresses.host_own_addresses`) at most once per TTL."""

    def __init__(self, read: Callable[[], Collection[Address]], ttl_s: float = OWN_ADDRESSES_TTL_S) -> None:
        self._read = read
        self._ttl_s = ttl_s
        self._addresses: Collection[Address] = frozenset()
        self._read_at: float | None = None

    def __call__(self) -> Collection[Address]:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self._ttl_s:
            self._addresses = frozenset(self._read())  # raises: the decision fails closed
            self._read_at = now
        return self._addresses
