"""``sandboxctl`` over a fleet: ask every daemon at once, and name each in what is printed.

    sandboxctl --address 10.0.0.5:7070 --address 10.0.0.6:7070 ps | info | audit tail [-f]
    sandboxctl --address dns:///sandboxd.sandboxd.svc.cluster.local:7070 ps

A daemon that does not answer is named on stderr and the others are shown; the command then exits 1 (the
view is incomplete). When none answers, it is an error like any other (exit 125). With one daemon nothing
changes: no instance column, no extra call.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sandboxd.cli.client import SandboxClient, SandboxdError

__all__ = ["EXIT_INCOMPLETE", "FleetAnswers", "ask_each", "follow_each"]

EXIT_INCOMPLETE = 1
_MAX_PARALLEL_ASKS = 16

T = TypeVar("T")


@dataclass
class FleetAnswers(Generic[T]):
    """Each daemon's answer with its instance name (``""`` for a client of one daemon), in the fleet's order;
    and the daemons that did not answer, with why."""

    answers: list[tuple[str, T]] = field(default_factory=list)
    failures: list[tuple[str, SandboxdError]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_INCOMPLETE if self.failures else 0

    def report_failures(self) -> None:
        for target, error in self.failures:
            print(f"sandboxctl: {target}: {error}", file=sys.stderr)


def ask_each(client: SandboxClient, ask: Callable[[SandboxClient], T]) -> FleetAnswers[T]:
    """``ask`` of every daemon, in parallel. Raises the error when no daemon answered."""
    result: FleetAnswers[T] = FleetAnswers()
    if not client.is_fleet:
        result.answers.append(("", ask(client)))
        return result
    daemons = client.daemons()

    def one(daemon: SandboxClient) -> tuple[str, T]:
        return daemon.instance(), ask(daemon)

    with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL_ASKS, max(1, len(daemons)))) as pool:
        futures = [(daemon, pool.submit(one, daemon)) for daemon in daemons]
        for daemon, future in futures:
            try:
                result.answers.append(future.result())
            except SandboxdError as error:
                result.failures.append((daemon.target, error))
    if not result.answers:  # (a fleet has at least one daemon: daemons() raises otherwise)
        raise result.failures[-1][1]
    return result


def follow_each(client: SandboxClient, stream: Callable[[SandboxClient], Iterator[T]]) -> Iterator[
        tuple[str, T] | tuple[str, SandboxdError]]:
    """What ``stream`` yields from every daemon, as it comes, each with the daemon's instance (its target when
    it cannot be asked); a daemon whose stream fails yields its error, once, and is done. Ends when every
    stream has ended. Each stream runs in a thread of its own; closing this iterator leaves them to the
    channels' close."""
    items: queue.Queue[tuple[str, object] | None] = queue.Queue()
    daemons = client.daemons()

    def pump(daemon: SandboxClient) -> None:
        name = daemon.target
        try:
            name = daemon.instance() if client.is_fleet else ""
            for item in stream(daemon):
                items.put((name, item))
        except SandboxdError as error:
            items.put((name, error))
        finally:
            items.put(None)

    for daemon in daemons:
        threading.Thread(target=pump, args=(daemon,), name=f"follow-{daemon.target}", daemon=True).start()
    running = len(daemons)
    while running:
        got = items.get()
        if got is None:
            running -= 1
            continue
        yield got  # type: ignore[misc]
