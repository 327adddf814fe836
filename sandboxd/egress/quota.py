"""One execution's share of the proxy: connections open at once, new connections per second, bytes in all.

All three are checked together, before the allowlist, when a client has named a target (so a flood of
refused names costs its rate as much as allowed ones do), and a refusal says which bound and its value.
The rate is a token bucket holding ``connections_per_second`` tokens, refilled at that many per second: a
burst of that size passes at once, then one connection per ``1 / connections_per_second`` seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from sandboxd.base.units import format_size


class ExecutionQuota:
    def __init__(self, *, connections_max: int, connections_per_second: int, network_max_bytes: int | None,
                 clock: Callable[[], float]) -> None:
        self.connections_max = connections_max
        self.connections_per_second = connections_per_second
        self.network_max_bytes = network_max_bytes
        self._clock = clock
        self._open = 0
        self._tokens = float(connections_per_second)
        self._refilled_at = clock()
        self.bytes_total = 0

    @property
    def bytes_spent(self) -> bool:
        return self.network_max_bytes is not None and self.bytes_total >= self.network_max_bytes

    def open_connection(self) -> str | None:
        """Take a connection slot and a token; or, leaving both untaken, the reason the connection is refused.
        A taken slot is given back with :meth:`close_connection`."""
        if self.bytes_spent:
            return (f"the execution's network byte limit of {format_size(self.network_max_bytes or 0)} "
                    f"bytes (sent and received) is spent")
        if self._open >= self.connections_max:
            return (f"{self._open} connections are open, the most this execution may hold "
                    f"(egress connections_max = {self.connections_max})")
        now = self._clock()
        self._tokens = min(float(self.connections_per_second),
                           self._tokens + (now - self._refilled_at) * self.connections_per_second)
        self._refilled_at = now
        if self._tokens < 1.0:
            return (f"more than {self.connections_per_second} new connections a second "
                    f"(egress connections_per_second = {self.connections_per_second})")
        self._tokens -= 1.0
        self._open += 1
        return None

    def close_connection(self) -> None:
        self._open = max(0, self._open - 1)

    @property
    def open_connections(self) -> int:
        return self._open

    def grant_bytes(self, count: int) -> int:
        """Count up to ``count`` bytes against the budget; how many may pass (fewer once it is spent)."""
        if self.network_max_bytes is not None:
            count = max(0, min(count, self.network_max_bytes - self.bytes_total))
        self.bytes_total += count
        return count
