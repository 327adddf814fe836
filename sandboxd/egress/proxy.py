"""The egress proxy: one per daemon, one attachment per execution, on the daemon's event loop.

The daemon creates a listening socket on 127.0.0.1:3128 inside each sandbox's network namespace and hands
it over with :meth:`EgressProxy.attach`; from then on every connection a process inside makes to it is
accepted, decided against the execution's rules, connected, relayed, counted and reported to the
execution's hooks (see :mod:`sandboxd.egress.connection` for one connection's life). The listener is the
sandbox's only way out, and :meth:`ExecutionEgress.close` shuts it: afterwards no socket of that execution
is open.

Accepting is bounded per execution: at most ``connections_max`` clients may be between accept and a
decided tunnel (handshaking, being decided, or reading their refusal) at once; past that the proxy stops
accepting and the kernel's backlog holds the rest, so a flood of silent or refused clients costs a bounded
number of file descriptors and delays only its own execution.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Collection
from ipaddress import IPv4Address, IPv6Address

from sandboxd.egress.addresses import host_own_addresses
from sandboxd.egress.connection import Connection, Shared
from sandboxd.egress.events import ConnectAttempt, ConnectionClosed, EgressHooks, ExecutionRules
from sandboxd.egress.quota import ExecutionQuota
from sandboxd.egress.resolve import CachedOwnAddresses, SystemResolver
from sandboxd.egress.settings import EgressSettings

log = logging.getLogger("sandboxd.egress")

ACCEPT_BATCH = 16  # accepted per wake-up: one busy listener does not monopolize the loop
ACCEPT_RETRY_S = 0.5  # after the process ran out of file descriptors (EMFILE and kin)
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class ExecutionEgress:
    """One execution's listener and connections. Counters cover the allowed connections: ``bytes_sent``
    (sandbox → upstream), ``bytes_received`` and ``connections`` (how many were made)."""

    def __init__(self, *, shared: Shared, listener: socket.socket, rules: ExecutionRules, hooks: EgressHooks,
                 forget: Callable[[ExecutionEgress], None] = lambda _execution: None) -> None:
        self._forget = forget
        self._loop = asyncio.get_running_loop()
        self._shared = shared
        self._listener = listener
        self._rules = rules
        self._hooks = hooks
        settings = shared.settings
        self._quota = ExecutionQuota(connections_max=settings.connections_max,
                                     connections_per_second=settings.connections_per_second,
                                     network_max_bytes=rules.network_max_bytes, clock=self._loop.time)
        self._handshakes_max = settings.connections_max
        self._connections: set[Connection] = set()
        self._handshaking: set[Connection] = set()
        self._numbers = 0
        self._accepting = False
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self._byte_limit_reported = False
        self.bytes_sent = 0
        self.bytes_received = 0
        self.connections = 0
        listener.setblocking(False)
        self._fd = listener.fileno()
        self._accept_more()

    # what connections ask of their execution (connection.Execution)

    @property
    def rules(self) -> ExecutionRules:
        return self._rules

    @property
    def quota(self) -> ExecutionQuota:
        return self._quota

    def next_number(self) -> int:
        self._numbers += 1
        return self._numbers

    def emit_connect(self, event: ConnectAttempt) -> None:
        if event.outcome == "allowed":
            self.connections += 1
        self._call_hook("connect", self._hooks.connect, event)

    def emit_closed(self, event: ConnectionClosed) -> None:
        self._call_hook("closed", self._hooks.closed, event)

    def account(self, sent: bool, count: int) -> int:
        granted = self._quota.grant_bytes(count)
        if sent:
            self.bytes_sent += granted
        else:
            self.bytes_received += granted
        if self._quota.bytes_spent and not self._byte_limit_reported:
            self._byte_limit_reported = True
            self._call_hook("byte_limit", self._hooks.byte_limit)
            # The others end a moment later: not under the feet of the relay that is passing the last bytes.
            self._loop.call_soon(self._end_all, "byte limit")
        return granted

    def handshake_over(self, connection: Connection) -> None:
        self._handshaking.discard(connection)
        self._accept_more()

    # closing

    async def close(self) -> None:
        """Stop accepting, close the listener, abort every connection, and return once each allowed one has
        reported its ``ConnectionClosed`` (ended by "execution ended"). Idempotent."""
        if not self._closed:
            self._closed = True
            self._forget(self)
            self._stop_accepting()
            if self._retry is not None:
                self._retry.cancel()
            self._listener.close()
            for connection in list(self._connections):
                connection.end("execution ended", abort=True)
        tasks = [connection.task for connection in self._connections if connection.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    # accepting

    def _accept_more(self) -> None:
        if not self._closed and not self._accepting and self._retry is None \
                and len(self._handshaking) < self._handshakes_max:
            self._loop.add_reader(self._fd, self._on_acceptable)
            self._accepting = True

    def _stop_accepting(self) -> None:
        if self._accepting:
            self._loop.remove_reader(self._fd)
            self._accepting = False

    def _on_acceptable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if len(self._handshaking) >= self._handshakes_max:
                self._stop_accepting()  # handshake_over() starts it again
                return
            try:
                sock, _peer = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    log.error("egress: the listener failed (%s); no more connections for this execution", exc)
                    self._stop_accepting()
                    return
                log.warning("egress: cannot accept (%s); retrying in %.1f s", exc.strerror, ACCEPT_RETRY_S)
                self._stop_accepting()
                self._retry = self._loop.call_later(ACCEPT_RETRY_S, self._retry_accepting)
                return
            self._start(sock)

    def _retry_accepting(self) -> None:
        self._retry = None
        self._accept_more()

    def _start(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        connection = Connection(sock, self, self._shared)
        self._connections.add(connection)
        self._handshaking.add(connection)
        task = self._loop.create_task(connection.serve())
        connection.task = task
        task.add_done_callback(lambda _task: self._connections.discard(connection))

    def _end_all(self, ended_by: str) -> None:
        for connection in list(self._connections):
            connection.end(ended_by, abort=False)  # nothing more may pass; what was granted still goes out

    def _call_hook(self, name: str, hook: Callable[..., None], *args: object) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("egress: the %s hook raised; the proxy carries on", name)


class EgressProxy:
    """Shared by every execution: the settings, the resolver and the host's own addresses."""

    def __init__(
        self,
        settings: EgressSettings,
        *,
        resolver: Callable[[str, int], Awaitable[list[IPv4Address | IPv6Address]]] | None = None,
        own_addresses: Callable[[], Collection[IPv4Address | IPv6Address]] = host_own_addresses,
    ) -> None:
        self._system_resolver = SystemResolver() if resolver is None else None
        pins = {name.lower().rstrip("."): tuple(addresses) for name, addresses in settings.resolve.items()}
        self._shared = Shared(settings=settings, pins=pins, resolver=resolver or self._system_resolver_call,
                              own_addresses=CachedOwnAddresses(own_addresses))
        self._executions: set[ExecutionEgress] = set()

    async def _system_resolver_call(self, host: str, port: int) -> list[IPv4Address | IPv6Address]:
        if self._system_resolver is None:  # pragma: no cover - only installed when there is one
            raise RuntimeError("no system resolver")
        return await self._system_resolver(host, port)

    def attach(self, listener: socket.socket, rules: ExecutionRules, hooks: EgressHooks) -> ExecutionEgress:
        """Serve ``listener`` (bound and listening; the proxy now owns it) for one execution. Call on the
        running loop; accepting starts at once."""
        execution = ExecutionEgress(shared=self._shared, listener=listener, rules=rules, hooks=hooks,
                                    forget=self._executions.discard)
        self._executions.add(execution)
        return execution

    async def close(self) -> None:
        """Close every attachment (see :meth:`ExecutionEgress.close`) and stop the resolver's threads."""
        executions, self._executions = list(self._executions), set()
        await asyncio.gather(*(execution.close() for execution in executions))
        if self._system_resolver is not None:
            self._system_resolver.close()
