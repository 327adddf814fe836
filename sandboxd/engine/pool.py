"""The warm pool: sandboxes built ahead of the request, each used once.

A pooled sandbox is a whole execution set up to its last step — uid taken, cgroup leaf made with its limits
and joined, every namespace made, the root built and pivoted, the init running, the handler-to-be with its
stdio installed, its rlimits, groups, uid and capabilities dropped and ``no_new_privs`` set — waiting at its
*gate* (a pipe) for the one thing a request brings: the argv and environment (stdin follows through its pipe).
On the request path only what must be per call remains, done by the handler-to-be's launch (``native/launch.c``,
once its privileges are gone): read the gate, find the handler, install seccomp, ``execve``.
Then it is an execution like any other (limits, verdict, release); nothing of it is reused.

Sandboxes are pooled per *key* — everything their building depends on: the seccomp filter, the limits, the
binds, the working directory, the hostname. A spec of another key (another tool's binds, a role's lower
ceilings, a door out of the network) is built fresh: a miss, never a compromise. The pool refills off the
request path; :meth:`WarmPool.configure` says what to keep ready and releases what it no longer wants (a
reload that changes what the sandboxes were built from).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field

from sandboxd.engine.child.launch import DEFAULT_PATH, encode_launch
from sandboxd.engine.reports import SpawnHandle
from sandboxd.engine.run import Run
from sandboxd.engine.spec import ExecutionSpec

log = logging.getLogger(__name__)

# What a request writes to the gate: below a pipe's capacity, so the write never blocks the event loop.
GO_MAX_BYTES = 32 * 1024


def pool_key(spec: ExecutionSpec) -> Hashable | None:
    """What a sandbox for ``spec`` is built from; None when such a sandbox is not pooled (a door out: its
    network namespace and proxy are made per execution)."""
    if spec.egress_listen_port is not None:
        return None
    return (spec.seccomp_bpf, spec.limits, spec.binds, spec.workdir, spec.workdir_source, spec.hostname,
            spec.seccomp_profile_name)


def go_message(spec: ExecutionSpec) -> bytes | None:
    """The gate's message for ``spec`` (:mod:`~sandboxd.engine.child.launch`); None when it is too large for the
    gate (the execution is built fresh)."""
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)  # as build_plan does for a sandbox built on the request
    data = encode_launch(spec.argv, env)  # a valid spec holds nothing execve cannot pass
    return data if len(data) <= GO_MAX_BYTES else None


@dataclass
class Pooled:
    """One sandbox standing ready: the executor's run state and handle, our ends of its pipes, its gate."""

    run: Run
    handle: SpawnHandle
    stdin_w: int
    stdout_r: int
    stderr_r: int
    gate_w: int
    built_s: float  # how long it took to build


@dataclass
class PoolStats:
    ready: int = 0
    building: int = 0
    hits: int = 0
    misses: int = 0
    built: int = 0
    failed: int = 0  # builds that failed, and ready sandboxes that died waiting
    build_seconds_total: float = 0.0
    keys: int = 0


@dataclass
class _Wanted:
    spec: ExecutionSpec
    size: int
    ready: collections.deque[Pooled] = field(default_factory=collections.deque)
    building: int = 0


Build = Callable[[ExecutionSpec], Awaitable[Pooled | None]]
Discard = Callable[[Pooled], Awaitable[None]]


class WarmPool:
    def __init__(self, build: Build, discard: Discard) -> None:
        self._build = build
        self._discard = discard
        self._wanted: dict[Hashable, _Wanted] = {}
        self._total = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._stats = PoolStats()
        self._closed = False

    @property
    def enabled(self) -> bool:
        return bool(self._wanted)

    def stats(self) -> PoolStats:
        ready = sum(len(w.ready) for w in self._wanted.values())
        building = sum(w.building for w in self._wanted.values())
        return PoolStats(ready, building, self._stats.hits, self._stats.misses, self._stats.built,
                         self._stats.failed, self._stats.build_seconds_total, len(self._wanted))

    def configure(self, specs: Sequence[ExecutionSpec], *, per_spec: int, total: int) -> None:
        """Keep ``per_spec`` sandboxes ready for each of ``specs``' keys, at most ``total`` in all (0 or no
        specs: the pool is off); sandboxes of keys no longer wanted are released."""
        wanted: dict[Hashable, ExecutionSpec] = {}
        if per_spec > 0 and total > 0:
            for spec in specs:
                key = pool_key(spec)
                if key is not None and key not in wanted and len(wanted) * per_spec < total:
                    wanted[key] = spec
        for key in list(self._wanted):
            if key not in wanted:
                gone = self._wanted.pop(key)
                for entry in gone.ready:
                    self._spawn_task(self._discard(entry))
        for key, spec in wanted.items():
            if key in self._wanted:
                self._wanted[key].size = per_spec
            else:
                self._wanted[key] = _Wanted(spec, per_spec)
        self._total = total
        for key in self._wanted:
            self._fill(key)

    def take(self, spec: ExecutionSpec) -> Pooled | None:
        """A ready sandbox for ``spec``, or None (a miss: build it fresh). The caller calls :meth:`refill` once
        done with it."""
        key = pool_key(spec)
        wanted = self._wanted.get(key) if key is not None else None
        if wanted is None:
            return None
        if not wanted.ready:
            self._stats.misses += 1
            self._fill(key)  # a miss says the pool is short now, whatever is still running
            return None
        entry = wanted.ready.popleft()
        self._stats.hits += 1
        return entry

    def refill(self, spec: ExecutionSpec) -> None:
        """Build what ``spec``'s key is short of — called once the execution that took one is released, so
        the build does not compete with that execution for the CPU and the spawner."""
        key = pool_key(spec)
        if key is not None:
            self._fill(key)

    async def close(self) -> None:
        """Release every ready sandbox and wait for the builds under way (their sandboxes released too)."""
        self._closed = True
        entries = [entry for wanted in self._wanted.values() for entry in wanted.ready]
        self._wanted.clear()
        for entry in entries:
            self._spawn_task(self._discard(entry))
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- filling ---------------------------------------------------------------------------------------

    def _fill(self, key: Hashable) -> None:
        wanted = self._wanted.get(key)
        if wanted is None or self._closed:
            return
        held = sum(len(w.ready) + w.building for w in self._wanted.values())
        while len(wanted.ready) + wanted.building < wanted.size and held < self._total:
            wanted.building += 1
            held += 1
            self._spawn_task(self._build_one(key, wanted))

    async def _build_one(self, key: Hashable, wanted: _Wanted) -> None:
        started_at = time.monotonic()
        entry: Pooled | None = None
        try:
            entry = await self._build(wanted.spec)
        except Exception:
            log.exception("building a pooled sandbox failed")
        finally:
            wanted.building -= 1
        if entry is None:
            self._stats.failed += 1
            return  # not refilled at once: a build that fails would fail again in a loop
        entry.built_s = time.monotonic() - started_at
        self._stats.built += 1
        self._stats.build_seconds_total += entry.built_s
        if self._closed or self._wanted.get(key) is not wanted:  # released meanwhile
            await self._discard(entry)
            return
        wanted.ready.append(entry)
        entry.handle.started.add_done_callback(lambda _: self._died_waiting(key, entry))

    def _died_waiting(self, key: Hashable, entry: Pooled) -> None:
        """A ready sandbox reported its start or a failure before anyone took it: it is no use; replace it."""
        wanted = self._wanted.get(key)
        if wanted is None or entry not in wanted.ready:
            return  # taken (its start is the request's), or released
        wanted.ready.remove(entry)
        self._stats.failed += 1
        future = entry.handle.started
        why = "cancelled" if future.cancelled() else (future.exception() or future.result())
        log.warning("a pooled sandbox ended before it was used: %s", why)
        self._spawn_task(self._discard(entry))

    def _spawn_task(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
