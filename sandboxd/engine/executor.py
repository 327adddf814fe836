"""The one place that knows an execution's lifecycle order:

cgroup (limits written) → network namespace with its door out (``NetworkReady``, when the spec asks) → pipes →
spawn (child joins cgroup, namespaces, root, ids, caps, seccomp, execve) → ``Started`` → relay output while
enforcing wall time, CPU time, output bytes and (v1) group OOM → reap → read accounting → verdict → ``Result``
→ kill what is left, close the door, remove the cgroup.

Everything that can fail before ``execve`` ends the execution SETUP_FAILED: nothing runs half-sandboxed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from sandboxd.base.errors import CgroupError, ConfigError, InvalidSpec, SpawnerError
from sandboxd.base.limits import Limits
from sandboxd.engine.cgroups import Backend, CgroupCreation, CgroupLimits, ExecCgroup, detect_backend
from sandboxd.engine.child.program import CREATE_CGROUP_STAGE, check_spawner
from sandboxd.engine.config import EngineConfig
from sandboxd.engine.hostcheck import check_host
from sandboxd.engine.ids import IdPool, IdsExhausted
from sandboxd.engine.kmsg import find_seccomp_kill
from sandboxd.engine.netns import PreparedNetwork, prepare_network
from sandboxd.engine.plan import build_plan
from sandboxd.engine.pool import Pooled, PoolStats, WarmPool, go_message
from sandboxd.engine.relay import OwnedFd, cancel_and_wait, feed_stdin, relay_output, widen_pipe
from sandboxd.engine.reports import ExitReport, SetupFailure, SpawnHandle
from sandboxd.engine.result import Event, NetworkReady, Result, Started, Status
from sandboxd.engine.run import (
    Run,
    RunningExecution,
    SessionSandbox,
    cgroup_pids_max,
    hung_stage,
    open_pidfd,
    read_usage,
    violation,
)
from sandboxd.engine.seccomp.constant import allows_launch_after_gate
from sandboxd.engine.seccomp.names import syscall_name
from sandboxd.engine.spawnclient import SpawnerClient, close_quietly
from sandboxd.engine.spec import ExecutionSpec
from sandboxd.engine.stop import stop_reason
from sandboxd.engine.verdict import Facts, decide

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05
# After a pooled execution's release: the Result's way out (its audit commit, the caller's last messages) goes
# first, then the pool builds its replacement (measured: 1 ms of a 14 ms Execute when built at once).
POOL_REFILL_DELAY_S = 0.02
# After a kill: how long the sandbox may take to be reported gone before we carry on without the report.
EXIT_REPORT_TIMEOUT_S = 10.0
# What a caller may send the handler (Executor.signal): asking it to stop, one way or another; nothing that
# stops, continues or otherwise steers it.
SIGNALS_ACCEPTED = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL, signal.SIGQUIT})
KEEPER_LEAF = "keeper"  # a session's own sandbox, in exec-keeper below the session's cgroup


class Executor:
    def __init__(
        self, config: EngineConfig, backend: Backend, spawner: SpawnerClient, *, recovered_leaves: Sequence[str] = ()
    ) -> None:
        self._config = config
        self._backend = backend
        self._spawner = spawner
        self._runs: dict[str, Run] = {}
        self._ids = IdPool(config.sandbox_ids)
        # releases, undos and recordings that outlived a cancellation
        self._background: set[asyncio.Future[None]] = set()
        self._spawner_lock = asyncio.Lock()
        self._accounted: set[Run] = set()  # executions whose CPU time (or v1 OOM) the sweep watches
        self._sweeper: asyncio.Task[None] | None = None
        self._sessions: dict[str, SessionSandbox] = {}  # by keeper execution id, while the keeper runs
        self._pool = WarmPool(self._build_pooled, self._discard_pooled)
        # Execution cgroups an earlier instance left (it crashed): killed and removed before we started.
        self.recovered_leaves = tuple(recovered_leaves)

    @classmethod
    async def create(cls, config: EngineConfig) -> Executor:
        check_host()
        check_spawner()
        backend = detect_backend(config.cgroup_root, config.instance)
        backend.prepare()
        stale = backend.stale_leaves()
        for leaf in stale:
            log.warning("removing stale cgroup %s left by an earlier instance", leaf)
            backend.remove_leaf(leaf)  # kills what still runs in it first
        config.state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        config.root_mountpoint.mkdir(mode=0o755, exist_ok=True)
        if any(config.root_mountpoint.iterdir()):
            raise ConfigError(f"sandbox root mount point {config.root_mountpoint} must be empty")
        return cls(config, backend, await SpawnerClient.start(), recovered_leaves=stale)

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def cgroup_base(self) -> str:
        return self._backend.base

    async def close(self) -> None:
        await self._pool.close()
        for run in list(self._runs.values()):
            await asyncio.to_thread(run.kill, Status.CANCELLED)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._sweeper is not None:
            await cancel_and_wait([self._sweeper])
        await self._spawner.close()
        if not self._runs:
            self._backend.remove_base()

    def cancel(self, execution_id: str) -> bool:
        """Cancel a running execution by id; False if it is not running. A caller that may cancel before the
        engine knows the id passes its own token to :meth:`execute` instead."""
        run = self._runs.get(execution_id)
        if run is None:
            return False
        run.cancel.set()
        return True

    def signal(self, execution_id: str, signum: int) -> bool:
        """Send ``signum`` (one of :data:`SIGNALS_ACCEPTED`) to the handler of a running execution — its pid 2
        — through the pidfd opened at its Started. False when it is not running: not started yet, or gone.

        Never to another process: the pidfd names one process for good, and the handler may have been reaped
        (and its pid reused) before it was opened; so the pid is first seen in the execution's cgroup, then the
        signal sent through the pidfd — which fails unless that process is still alive, and so still the one
        just seen there."""
        if signum not in SIGNALS_ACCEPTED:
            raise ValueError(f"signal {signum} is not one a caller may send (SIGINT, SIGTERM, SIGHUP, SIGKILL, "
                             "SIGQUIT)")
        run = self._runs.get(execution_id)
        if run is None or run.pidfd is None:
            return False
        try:
            if run.pid not in run.cgroup.pids():
                return False
            signal.pidfd_send_signal(run.pidfd.fd, signum)
        except (CgroupError, ProcessLookupError, ValueError):  # the leaf is going away; the handler has exited;
            return False                                        # or the release has closed the pidfd
        return True

    def running(self) -> list[RunningExecution]:
        result = []
        for run in self._runs.values():
            stats = run.stats()
            result.append(RunningExecution(run.execution_id, run.spec.tool, run.spec.labels, run.started_at,
                                           run.pid, stats.cpu_usec, stats.memory_peak_bytes))
        return result

    def configure_pool(self, specs: Sequence[ExecutionSpec], *, per_spec: int, total: int) -> None:
        """Keep ``per_spec`` sandboxes built ahead for each of ``specs`` (by what they are built from: see
        :mod:`sandboxd.engine.pool`), at most ``total``; ``per_spec = 0`` turns the pool off."""
        self._pool.configure(specs, per_spec=per_spec, total=total)

    def pool_stats(self) -> PoolStats:
        return self._pool.stats()

    async def _build_pooled(self, spec: ExecutionSpec) -> Pooled | None:
        """One sandbox for the pool, standing at its gate; None when it could not be built (logged)."""
        pool_id = uuid.uuid4().hex[:16]
        try:
            uid = self._ids.allocate()
        except IdsExhausted:
            return None
        try:
            cgroup, procs_files, creation = await self._create_cgroup(pool_id, spec.limits, session=None,
                                                                      opens_session=False)
        except BaseException as e:
            self._ids.release(uid)
            if isinstance(e, CgroupError):
                log.warning("pool: %s", e)
                return None
            raise
        run = Run(pool_id, spec, cgroup, asyncio.Event(), uid, procs_files=procs_files, creation=creation)
        ours: list[int] = []
        gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
        try:
            spawned = await self._spawn(run, None, ours, gate=gate_r)
        finally:
            os.close(gate_r)
        if isinstance(spawned, Result):
            log.warning("pool: %s", spawned.message)
            os.close(gate_w)
            await self._release(run, None, [], OwnedFd(ours.pop(0) if ours else -1), tuple(ours), None)
            return None
        return Pooled(run, spawned, ours[0], ours[1], ours[2], gate_w, 0.0)

    async def _discard_pooled(self, entry: Pooled) -> None:
        """Let an unused pooled sandbox go: its gate's EOF ends its handler-to-be, then it is released."""
        close_quietly(entry.gate_w)
        try:
            await asyncio.wait_for(asyncio.shield(entry.handle.exited), EXIT_REPORT_TIMEOUT_S)
        except (TimeoutError, SpawnerError):
            pass  # the release kills what is left
        await self._release(entry.run, entry.handle, [], OwnedFd(entry.stdin_w), (entry.stdout_r, entry.stderr_r),
                            None)

    async def _live_spawner(self) -> SpawnerClient:
        # One restart however many executions find the spawner dead at once: the rest wait for it.
        async with self._spawner_lock:
            if not self._spawner.alive:
                log.error("the spawner died; starting a new one")
                await self._spawner.close()
                self._spawner = await SpawnerClient.start()
            return self._spawner

    def session(self, session_id: str) -> SessionSandbox | None:
        """The session an execution opened (``opens_session``), from its Started until its Result."""
        return self._sessions.get(session_id)

    async def execute(
        self, spec: ExecutionSpec, *, execution_id: str | None = None, cancel: asyncio.Event | None = None,
        session: SessionSandbox | None = None, opens_session: bool = False,
        stdin_stream: AsyncIterator[bytes] | None = None,
        record: Callable[[Result], Awaitable[None]] | None = None,
    ) -> AsyncIterator[Event]:
        """Run ``spec``; yield ``NetworkReady`` (when the spec has a door out), ``Started``, ``Output``… and
        always exactly one ``Result`` last.

        ``cancel``, once set — before the execution is set up, during, or while it runs — ends it CANCELLED
        (or for the reason a :class:`~sandboxd.engine.stop.StopToken` carries): the one place cancellation is
        handled, whenever it comes.

        ``stdin_stream``: more of the handler's stdin after ``spec.stdin``, each chunk written as it comes (the
        next taken only once the pipe has room); its end closes the handler's stdin. Without it, stdin is
        ``spec.stdin`` alone. While it runs, :meth:`signal` reaches the handler.

        ``record``: called with the Result as soon as it is decided, while the sandbox is being released — what
        the caller must write down (its audit records) need not wait for the cgroup's removal. The Result is
        yielded once both are done; what ``record`` raises is raised then.

        ``opens_session``: this execution keeps a session — its cgroup holds the session's limits and, below
        it, its own leaf and its calls'; from its Started until its Result, :meth:`session` returns the
        :class:`SessionSandbox`. ``session``: this execution is a call in that session — it joins the
        session's namespaces and root and runs as its uid, in a cgroup below the session's; ``spec``'s root,
        binds and network are the session's, not its own."""
        eid = execution_id or uuid.uuid4().hex[:16]
        if eid in self._runs:
            raise InvalidSpec(f"execution id {eid} is already running")
        cancel = cancel if cancel is not None else asyncio.Event()
        if cancel.is_set():
            reason, message = stop_reason(cancel)
            yield Result(eid, reason, message or "cancelled before it started")
            return
        t0 = time.monotonic()
        limits = spec.limits
        if session is not None and (spec.egress_listen_port is not None or opens_session):
            raise InvalidSpec("a call in a session uses the session's network and cannot open one")
        pooled = self._take_pooled(spec, eid, cancel) if session is None and not opens_session else None
        if pooled is not None:
            run, uid, cgroup = pooled.run, pooled.run.uid, pooled.run.cgroup
        else:
            try:
                uid = self._ids.allocate() if session is None else session.uid
            except IdsExhausted as e:
                yield Result(eid, Status.SETUP_FAILED, e.message, setup_stage="ids")
                return
            try:
                cgroup, procs_files, creation = await self._create_cgroup(eid, limits, session=session,
                                                                          opens_session=opens_session)
            except CgroupError as e:
                if session is None:
                    self._ids.release(uid)
                yield Result(eid, Status.SETUP_FAILED, str(e), setup_stage="cgroup")
                return
            except BaseException:  # cancelled: what the worker thread made is gone again
                if session is None:
                    self._ids.release(uid)
                raise
            run = Run(eid, spec, cgroup, cancel, uid, procs_files=procs_files, session=session, creation=creation)
        self._runs[eid] = run
        # From here one try/finally holds everything: the release runs whatever fails or is cancelled.
        stdin_w = OwnedFd(-1)
        ours: list[int] = []  # our ends of the pipes, closed by the release
        handle: SpawnHandle | None = None
        if pooled is not None:  # built ahead: its pipes are made, its handler-to-be is at the gate
            handle = pooled.handle
            stdin_w = OwnedFd(pooled.stdin_w)
            ours = [pooled.stdout_r, pooled.stderr_r]
        tasks: list[asyncio.Task[None]] = []
        final: Result | None = None
        network: PreparedNetwork | None = None
        try:
            tasks.append(asyncio.create_task(self._watch_cancel(run)))
            if spec.egress_listen_port is not None:
                try:
                    network = await asyncio.to_thread(prepare_network, spec.egress_listen_port)
                except OSError as e:  # fail closed: no door out, no execution
                    final = Result(eid, Status.SETUP_FAILED, f"network: {e.strerror or e}", setup_stage="network",
                                   setup_errno=e.errno or 0)
                else:
                    yield NetworkReady(eid, network.listener)
            if final is None and handle is None:
                spawned = await self._spawn(run, network, ours)
                if ours:
                    stdin_w = OwnedFd(ours.pop(0))  # feed_stdin closes it when done (EOF for the handler)
                if isinstance(spawned, Result):
                    final = spawned
                else:
                    handle = spawned
            if handle is not None:
                out_r, err_r = ours
                tasks.append(asyncio.create_task(feed_stdin(stdin_w, spec.stdin, stdin_stream)))
                started = await self._await_started(run, handle)
                if isinstance(started, SetupFailure):
                    final = await self._setup_failed(run, handle, started, t0)
                else:
                    run.pid = started
                    run.pidfd = open_pidfd(started, eid)
                    if run.kill_reason is not None:  # killed while it was being set up: kill what joined since
                        await run.kill_aside(run.kill_reason)
                    tasks.append(asyncio.create_task(self._monitor(run, t0)))
                    if opens_session and run.pidfd is not None:  # a keeper already gone opens no session
                        self._sessions[eid] = SessionSandbox(eid, uid, cgroup, started, run.pidfd.fd)
                    yield Started(eid, started, limits, cgroup.name, uid)
                    async for event in relay_output(run, out_r, err_r, limits.output_max_bytes):
                        yield event
                    final = await self._finish(run, await handle.exited, t0)
        finally:
            # Shielded: a second cancellation (a stop during the release) must not skip the kill, the closes
            # or the rmdir; the release then goes on by itself.
            release = asyncio.ensure_future(self._release(run, handle, tasks, stdin_w, tuple(ours), network))
            recording = asyncio.ensure_future(record(final)) if record is not None and final is not None else None
            if pooled is not None:  # refilled once this one is gone and answered, not while it runs
                release.add_done_callback(
                    lambda _: asyncio.get_running_loop().call_later(POOL_REFILL_DELAY_S, self._pool.refill, spec))
            try:
                await asyncio.shield(release)
            except asyncio.CancelledError:
                for work in (release, recording):
                    if work is not None:
                        self._keep_going(work)
                raise
        if recording is not None:
            await recording
        # Yielded only after the release: a caller that stops at the Result finds nothing of it left.
        if final is not None:
            yield final

    def _take_pooled(self, spec: ExecutionSpec, eid: str, cancel: asyncio.Event) -> Pooled | None:
        """A sandbox of the pool for ``spec``, made this execution's and let through its gate; None: a miss."""
        message = go_message(spec) if self._pool.enabled else None
        pooled = self._pool.take(spec) if message is not None else None
        if pooled is None or message is None:
            return None
        run = pooled.run
        run.execution_id, run.spec, run.cancel, run.started_at = eid, spec, cancel, time.time()
        try:  # below the pipe's capacity: never blocks; EPIPE: it died at the gate, which its start reports
            os.write(pooled.gate_w, message)
        except OSError as e:
            log.warning("execution %s: the pooled sandbox's gate: %s", eid, e.strerror or e)
        finally:
            os.close(pooled.gate_w)
        return pooled

    async def _spawn(self, run: Run, network: PreparedNetwork | None, ours: list[int],
                     gate: int | None = None) -> SpawnHandle | Result:
        """The stdio pipes, then the spawn — or why not. ``ours`` collects our ends (stdin's first), which the
        release closes; the sandbox's ends are closed here once the spawner has its own."""
        theirs: list[int] = []
        try:
            for _ in range(3):
                read_end, write_end = os.pipe2(os.O_CLOEXEC)
                if theirs:  # stdout, stderr
                    widen_pipe(read_end)
                ours.append(write_end if not theirs else read_end)
                theirs.append(read_end if not theirs else write_end)
            spawner = await self._live_spawner()
            plan = build_plan(self._config, run.spec, run.execution_id, run.procs_files, run.uid,
                              join_pid=0 if run.session is None else run.session.pid)
            if run.alone_in_cgroup:
                made = run.creation or CgroupCreation((), ())
                plan = dataclasses.replace(plan, cgroup_final_reads=run.cgroup.final_reads,
                                           cgroup_removal=run.cgroup.removal_dirs, cgroup_create=made.dirs,
                                           cgroup_writes=made.writes)
            if gate is not None:
                plan = dataclasses.replace(plan, gated=True,
                                           seccomp_before_gate=allows_launch_after_gate(run.spec.seccomp_bpf))
            join = network.namespace_fd if network is not None else None
            return spawner.spawn(plan, (theirs[0], theirs[1], theirs[2]),
                                 run.session.pidfd if run.session is not None else join, gate)
        except SpawnerError as e:
            return Result(run.execution_id, Status.SETUP_FAILED, str(e), setup_stage="spawn")
        except OSError as e:  # EMFILE and the like: nothing was started
            return Result(run.execution_id, Status.SETUP_FAILED, f"pipes: {e.strerror or e}", setup_stage="pipes",
                          setup_errno=e.errno or 0)
        finally:
            close_quietly(*theirs)

    async def _create_cgroup(self, eid: str, limits: Limits, *, session: SessionSandbox | None, opens_session: bool,
                             ) -> tuple[ExecCgroup, tuple[str, ...], CgroupCreation | None]:
        """The execution's cgroup, the procs files its sandbox joins, and how its waiter makes it: a leaf of its
        own is only planned here (its limits checked) and made by the sandbox's waiter, first of all — no thread's
        hop on the event loop's way. A session's cgroup with the keeper's leaf below it, or a call's leaf below
        its session's, is made here in a worker thread (None: nothing for the waiter to make); if the caller is
        cancelled meanwhile, the thread still finishes: wait for it and remove what it made, so no empty leaf is
        left behind."""
        cgroup_limits = CgroupLimits(limits.memory_max_bytes, limits.cpu_share_percent,
                                     cgroup_pids_max(limits.pids_max))
        if session is None and not opens_session:
            leaf, creation = self._backend.plan_leaf(eid, cgroup_limits)
            return leaf, leaf.procs_files, creation

        def create() -> tuple[ExecCgroup, tuple[str, ...], CgroupCreation | None]:
            if session is not None:
                call = self._backend.create(eid, cgroup_limits, parent=session.cgroup)
                return call, call.procs_files, None
            cgroup = self._backend.create(eid, cgroup_limits, holds_children=True)
            try:
                keeper = self._backend.create(KEEPER_LEAF, CgroupLimits(None, None, None), parent=cgroup)
            except BaseException:
                cgroup.remove()
                raise
            return cgroup, keeper.procs_files, None

        creating = asyncio.ensure_future(asyncio.to_thread(create))
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            self._keep_going(asyncio.ensure_future(self._undo_create(creating)))
            raise

    def _keep_going(self, work: asyncio.Future[None]) -> None:
        """Let ``work`` finish after its caller was cancelled (awaited by :meth:`close`); a failure is logged."""
        self._background.add(work)
        work.add_done_callback(self._background.discard)
        work.add_done_callback(_log_failure)

    @staticmethod
    async def _undo_create(creating: asyncio.Future[tuple[ExecCgroup, tuple[str, ...], CgroupCreation | None]],
                           ) -> None:
        try:
            cgroup, _, _ = await creating
        except BaseException:
            return  # nothing was made
        try:
            await asyncio.to_thread(cgroup.remove)
        except CgroupError as e:
            log.error("%s", e)

    async def _release(self, run: Run, handle: SpawnHandle | None, tasks: list[asyncio.Task[None]],
                       stdin: OwnedFd, fds: tuple[int, ...], network: PreparedNetwork | None) -> None:
        """Kill what is left, close our pipe ends and the network's door, remove the cgroup. Runs exactly once
        per execution."""
        self._sessions.pop(run.execution_id, None)  # no call joins it from here: its pidfd is closed below
        await cancel_and_wait(tasks)  # before any fd is closed
        self._accounted.discard(run)
        await asyncio.gather(*run.kills, return_exceptions=True)  # no kill still at work on the leaf
        stdin.close()
        if run.pidfd is not None:
            run.pidfd.close()
        if handle is not None and not handle.exited.done():  # the consumer left early
            await run.kill_aside(Status.CANCELLED)
            try:
                await asyncio.wait_for(asyncio.shield(handle.exited), EXIT_REPORT_TIMEOUT_S)
            except (TimeoutError, SpawnerError) as e:
                log.error("execution %s: no exit report after kill: %r", run.execution_id, e)
        close_quietly(*fds)
        if network is not None:
            network.close()

        def remove() -> None:
            if not run.cgroup.remove_if_empty():  # usually it is: its init's end took every process along
                run.cgroup.remove()

        try:
            # Usually its waiter removes it once the sandbox has ended, while the outcome is written down. Else
            # in a worker thread: an rmdir waits for the kernel's cgroup lock, which any process's move of
            # another (a cgroup.procs write: ours no longer make one on v1) holds through an RCU grace period.
            if not run.cgroup_not_made and not await _removed_by_waiter(handle):
                await asyncio.to_thread(remove)
        except CgroupError as e:  # its processes may live on: its uid stays out of the pool
            log.error("execution %s: %s; uid %d is not reused", run.execution_id, e, run.uid)
        else:
            if run.session is None:  # a call's uid is its session's
                self._ids.release(run.uid)
        self._runs.pop(run.execution_id, None)  # a pooled sandbox released unused was never listed

    async def _watch_cancel(self, run: Run) -> None:
        await run.cancel.wait()
        reason, message = stop_reason(run.cancel)
        if run.kill_reason is None and message is not None:
            run.kill_message = message
        await run.kill_aside(reason)

    async def _monitor(self, run: Run, t0: float) -> None:
        """Wall time by a timer (no polling); CPU time and v1's group OOM by the one accounting sweep."""
        if run.spec.limits.cpu_time_ms is not None or run.cgroup.oom_group_emulated:
            self._accounted.add(run)
            if self._sweeper is None or self._sweeper.done():
                self._sweeper = asyncio.create_task(self._sweep())
        wall_time_ms = run.spec.limits.wall_time_ms
        if wall_time_ms is None:
            return
        await asyncio.sleep(max(0.0, wall_time_ms / 1000 - (time.monotonic() - t0)))
        await run.kill_aside(Status.TIMEOUT)

    async def _sweep(self) -> None:
        """Every ``POLL_INTERVAL_S``, read the accounting of every execution that needs it in one worker thread
        (never on the event loop, one thread hop however many run), and end those over their CPU time, those
        v1 OOM-killed a task of, and — with a clear verdict — those whose accounting cannot be read, since
        their CPU-time limit could no longer be enforced."""
        while self._accounted:
            await asyncio.sleep(POLL_INTERVAL_S)
            runs = [run for run in self._accounted if run.kill_reason is None]
            for run, usage in zip(runs, await asyncio.to_thread(read_usage, runs), strict=True):
                limits = run.spec.limits
                reason: Status | None = None
                if isinstance(usage, CgroupError) and not run.cgroup.exists():
                    continue  # its waiter removed it: everything in it has ended, the accounting is in its report
                if isinstance(usage, CgroupError):
                    run.kill_message = (f"ended: the cgroup's accounting could not be read ({usage.message}), so its "
                                        "CPU time and memory limits could no longer be enforced")
                    reason = Status.CANCELLED
                elif limits.cpu_time_ms is not None and usage.cpu_usec >= limits.cpu_time_ms * 1000:
                    reason = Status.CPU_LIMIT
                elif run.cgroup.oom_group_emulated and usage.oom_kill_count > 0:
                    reason = Status.MEMORY_LIMIT  # v1 killed one task: kill all
                if reason is not None:
                    self._accounted.discard(run)
                    run.kill_aside(reason)

    async def _await_started(self, run: Run, handle: SpawnHandle) -> int | SetupFailure:
        """The handler's pid once it has passed ``execve``, or why not — a setup that hangs (a FIFO, a dead
        network mount) is ended after ``setup_timeout_ms``, naming the stage it hung in."""
        timeout_ms = self._config.setup_timeout_ms
        try:
            return await asyncio.wait_for(asyncio.shield(handle.started), timeout_ms / 1000)
        except TimeoutError:
            pass
        stage = await asyncio.to_thread(hung_stage, run.cgroup.pids(), run.spec)
        await run.kill_aside(Status.SETUP_FAILED)
        return SetupFailure(stage, errno.ETIMEDOUT,
                            f"{stage}: the sandbox's setup did not finish within {timeout_ms} ms")

    async def _setup_failed(self, run: Run, handle: SpawnHandle, failure: SetupFailure, t0: float) -> Result:
        report: ExitReport | None = None
        try:
            report = await asyncio.wait_for(asyncio.shield(handle.exited), EXIT_REPORT_TIMEOUT_S)
        except (TimeoutError, SpawnerError) as e:
            log.error("execution %s: no exit report after a failed setup: %r", run.execution_id, e)
        run.cgroup_not_made = run.creation is not None and failure.stage == CREATE_CGROUP_STAGE
        stats = run.stats(() if report is None else report.cgroup_reads)
        message = failure.message
        if stats.oom_kill_count:
            message += " (the sandbox's setup was OOM-killed: memory limit too low?)"
        return Result(run.execution_id, Status.SETUP_FAILED, message, setup_stage=failure.stage,
                      setup_errno=failure.errno, wall_time_ms=int((time.monotonic() - t0) * 1000),
                      memory_peak_bytes=stats.memory_peak_bytes)

    async def _finish(self, run: Run, report: ExitReport, t0: float) -> Result:
        wall_time_ms = int((time.monotonic() - t0) * 1000)
        stats = run.stats(report.cgroup_reads)
        violations = tuple(violation(pid, arch, nr) for pid, arch, nr in report.seccomp_kills)
        own = next((v for v in violations if v.pid == run.pid), None)
        handler_killed = True if own is not None else (False if report.traced else None)
        verdict = decide(Facts(run.kill_reason, report.wait_status, stats, run.spec.limits, handler_killed))
        syscall_nr: int | None = None
        syscall = ""
        message = run.kill_message or verdict.message
        if verdict.status is Status.SECCOMP_VIOLATION:
            if own is not None:
                syscall_nr, syscall = own.syscall_nr, own.syscall_name
                where = f" ({own.abi} {syscall_nr})"
            else:  # not traced (ptrace refused): the kernel's audit record is the fallback
                syscall_nr = await asyncio.to_thread(find_seccomp_kill, run.pid)
                syscall = syscall_name(syscall_nr) if syscall_nr is not None else "unknown"
                where = f" ({syscall_nr})" if syscall_nr is not None else " (not recorded by the kernel)"
            message = f"killed by the seccomp filter on syscall {syscall}{where}"
        others = [v for v in violations if v is not own]
        if others:
            message += "; the seccomp filter also killed " + ", ".join(
                f"pid {v.pid} on {v.syscall_name} ({v.abi} {v.syscall_nr})" for v in others)
        if report.seccomp_kills_more:
            message += f" and {report.seccomp_kills_more} more processes"
        cpu_user = stats.cpu_user_usec or report.cpu_user_usec
        cpu_system = stats.cpu_system_usec or report.cpu_system_usec
        return Result(
            run.execution_id, verdict.status, message, exit_code=verdict.exit_code, signal=verdict.signal,
            cpu_user_usec=cpu_user, cpu_system_usec=cpu_system, wall_time_ms=wall_time_ms,
            memory_peak_bytes=stats.memory_peak_bytes or report.maxrss_bytes,
            stdout_bytes=run.stdout_bytes, stderr_bytes=run.stderr_bytes, output_truncated=run.output_truncated,
            seccomp_syscall_nr=syscall_nr, seccomp_syscall_name=syscall, seccomp_violations=violations)


async def _removed_by_waiter(handle: SpawnHandle | None) -> bool:
    """Whether the sandbox's waiter removed its cgroup, which it does right after its exit report."""
    if handle is None or not handle.exited.done():  # no report: the waiter's end is not coming for it either
        return False
    try:
        return await asyncio.wait_for(asyncio.shield(handle.removed), EXIT_REPORT_TIMEOUT_S)
    except TimeoutError:
        return False


def _log_failure(work: asyncio.Future[None]) -> None:
    if not work.cancelled() and work.exception() is not None:
        log.error("work left to finish in the background failed: %r", work.exception())
