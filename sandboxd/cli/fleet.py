"""The daemons of a fleet, each reached alone: which instance each one is, which to try next.

A fleet client sends most calls through its one ``round_robin`` channel; this is the rest: a client per
daemon, made when first needed, each asked its instance name once (``GetInfo``) — to send a session's calls
to the daemon its id names, to retry a refused call on a daemon that has not refused it, to show each daemon
in ``sandboxctl ps``. Behind a DNS name the members follow the name's addresses (re-resolved at most every
``refresh_s``, and at once when a session's daemon is not among them).

The members are any objects with ``target``, ``instance()``, ``is_ready()`` and ``close()`` —
:class:`SandboxClient` s in practice (this module does not import the client: the client imports it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from sandboxd.cli.errors import SandboxdError
from sandboxd.cli.targets import Endpoint, Targets

__all__ = ["Fleet", "Member", "NoSuchDaemon"]

DNS_REFRESH_S = 5.0


class Member(Protocol):
    @property
    def target(self) -> str: ...
    def instance(self) -> str: ...
    def is_ready(self) -> bool: ...
    def close(self) -> None: ...


M = TypeVar("M", bound=Member)


class NoSuchDaemon(LookupError):
    """No member of the fleet is the daemon asked for (or none answered)."""


class Fleet(Generic[M]):
    def __init__(self, targets: Targets, connect: Callable[[Endpoint], M], *,
                 refresh_s: float = DNS_REFRESH_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._targets = targets
        self._connect = connect
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._members: dict[str, M] = {}  # by endpoint target, in the order of the endpoints
        self._resolved_at: float | None = None
        self._next = 0  # where the next search for another daemon starts

    def members(self, *, refresh: bool = False) -> list[M]:
        """A client per daemon; behind DNS, the name's addresses as of at most ``refresh_s`` ago (NoSuchDaemon
        when the name does not resolve)."""
        with self._lock:
            now = self._clock()
            stale = self._resolved_at is None or (
                self._targets.dns is not None and (refresh or now - self._resolved_at >= self._refresh_s))
            if stale:
                try:
                    endpoints = self._targets.endpoints()
                except ValueError as exc:  # the name does not resolve
                    raise NoSuchDaemon(str(exc)) from None
                if not endpoints:
                    raise NoSuchDaemon(f"{self._targets.channel_target} has no address")
                kept: dict[str, M] = {}
                for endpoint in endpoints:
                    member = self._members.pop(endpoint.target, None)
                    kept[endpoint.target] = member if member is not None else self._connect(endpoint)
                for gone in self._members.values():  # an address the name no longer has
                    gone.close()
                self._members = kept
                self._resolved_at = now
            return list(self._members.values())

    def find(self, instance: str) -> M:
        """The member that is ``instance``; NoSuchDaemon naming the members asked when none is."""
        asked: list[str] = []
        for refresh in (False, True) if self._targets.dns is not None else (False,):
            for member in self.members(refresh=refresh):
                name = _instance_or_none(member)
                if name == instance:
                    return member
                asked.append(f"{member.target} ({name or 'no answer'})")
        raise NoSuchDaemon(f"no daemon of this fleet is the instance {instance!r} (asked {', '.join(asked)})")

    def other_than(self, refused: set[str]) -> M | None:
        """A member whose channel is ready and that is not one of the ``refused`` instances, taken in turn;
        None when there is none."""
        try:
            members = self.members()
        except NoSuchDaemon:
            return None
        with self._lock:
            start = self._next
            self._next += 1
        for offset in range(len(members)):
            member = members[(start + offset) % len(members)]
            if not member.is_ready():  # stopped, restarting, not connected yet: a call there would fail
                continue
            name = _instance_or_none(member)
            if name is not None and name not in refused:
                return member
        return None

    def close(self) -> None:
        with self._lock:
            for member in self._members.values():
                member.close()
            self._members = {}
            self._resolved_at = None


def _instance_or_none(member: Member) -> str | None:
    try:
        return member.instance()
    except SandboxdError:  # unreachable, refused: not a daemon to send anything to now
        return None
