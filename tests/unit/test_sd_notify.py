"""sd_notify messages reach a real AF_UNIX datagram socket verbatim; the watchdog pings at half its interval."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd.server import notify as sd_notify
from sandboxd.server.notify import Watchdog


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound in tmp_path and named by NOTIFY_SOCKET, as systemd sets it up."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def _received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, without blocking."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096, socket.MSG_DONTWAIT).decode())
        except BlockingIOError:
            return messages


def test_outside_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify.notify("READY=1") is False
    assert sd_notify.ready("x") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sd_notify.notify("READY=1") is False


def test_messages_arrive_verbatim_on_a_path_socket(notify_socket: socket.socket) -> None:
    assert sd_notify.notify("READY=1\nSTATUS=hello wörld") is True
    assert sd_notify.ready("serving 3 tools") is True
    assert sd_notify.ready() is True
    assert sd_notify.stopping("draining 2 executions") is True
    assert sd_notify.status("line one\nline two") is True
    assert _received(notify_socket) == [
        "READY=1\nSTATUS=hello wörld",
        "READY=1\nSTATUS=serving 3 tools",
        "READY=1",
        "STOPPING=1\nSTATUS=draining 2 executions",
        "STATUS=line one line two",  # a newline would have started a new assignment
    ]


def test_reloading_carries_the_monotonic_clock(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert sd_notify.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    (message,) = _received(notify_socket)
    first, second = message.split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"sandboxd-test-notify-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify.notify("READY=1") is True
        assert _received(sock) == ["READY=1"]


def test_a_socket_nobody_listens_on_is_false_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "absent"))
    assert sd_notify.ready("x") is False
    assert "cannot notify systemd" in caplog.text
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sd_notify.notify("READY=1") is False


def _never() -> bool:
    raise AssertionError("not called")


def test_watchdog_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Watchdog.from_env(_never, {}) is None
    watchdog = Watchdog.from_env(_never, {"WATCHDOG_USEC": "30000000"})
    assert watchdog is not None and watchdog.interval_s == 30 and watchdog.ping_interval_s == 15
    assert Watchdog.from_env(_never, {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) is not None
    assert Watchdog.from_env(_never, {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # not ours
    assert Watchdog.from_env(_never, {"WATCHDOG_USEC": "0"}) is None
    assert Watchdog.from_env(_never, {"WATCHDOG_USEC": "soon"}) is None
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    from_process = Watchdog.from_env(_never)
    assert from_process is not None and from_process.interval_s == 2


INTERVAL_USEC = 200_000  # pings every 0.1 s
PING_S = INTERVAL_USEC / 2 / 1e6


async def _run_for(watchdog: Watchdog, window_s: float) -> float:
    """Run the watchdog for ``window_s``; returns how long it really ran (a loaded machine sleeps longer)."""
    started = time.monotonic()
    watchdog.start()
    await asyncio.sleep(window_s)
    watchdog.stop()
    return time.monotonic() - started


def test_watchdog_pings_every_half_interval_while_healthy(notify_socket: socket.socket) -> None:
    checks = 0

    def healthy() -> bool:
        nonlocal checks
        checks += 1
        return True

    watchdog = Watchdog(INTERVAL_USEC, healthy)
    elapsed = asyncio.run(_run_for(watchdog, 1.0))
    pings = _received(notify_socket)
    assert set(pings) == {"WATCHDOG=1"}
    # One ping at start, then one per PING_S at most (never a burst); a slow machine only ever sends fewer.
    assert len(pings) <= elapsed / PING_S + 1
    assert len(pings) >= 4  # 11 expected; 4 still proves it repeats well before the 0.2 s interval runs out
    assert checks == len(pings)  # health is checked before every ping
    assert not watchdog.running


def test_watchdog_stops_pinging_for_good_when_unhealthy(notify_socket: socket.socket,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    answers = iter([True, True, True])

    def spawner_alive() -> bool:
        return next(answers, False)  # healthy three times, then never again

    watchdog = Watchdog(INTERVAL_USEC, spawner_alive)

    async def scenario() -> None:
        watchdog.start()
        for _ in range(200):  # the fourth check comes after ~0.3 s; give a slow machine 10 s
            await asyncio.sleep(0.05)
            if not watchdog.running:
                break
        assert not watchdog.running
        await asyncio.sleep(5 * PING_S)  # nothing more comes
        watchdog.stop()

    with caplog.at_level(logging.ERROR, logger="sandboxd.server.notify"):
        asyncio.run(scenario())
    messages = _received(notify_socket)
    assert messages[:3] == ["WATCHDOG=1"] * 3
    assert messages[3:] == ["STATUS=unhealthy: health check "
                            "test_watchdog_stops_pinging_for_good_when_unhealthy.<locals>.spawner_alive failed"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "spawner_alive failed" in errors[0].getMessage()
    assert "systemd restarts the daemon" in errors[0].getMessage()


def test_a_health_check_that_raises_is_unhealthy(notify_socket: socket.socket) -> None:
    def broken() -> bool:
        raise RuntimeError("pidfd gone")

    watchdog = Watchdog(INTERVAL_USEC, broken)
    asyncio.run(_run_for(watchdog, 0.2))
    messages = _received(notify_socket)
    assert len(messages) == 1 and "WATCHDOG=1" not in messages
    assert messages[0].startswith("STATUS=unhealthy: health check") and "pidfd gone" in messages[0]


def test_stop_before_start_and_twice_is_harmless() -> None:
    watchdog = Watchdog(INTERVAL_USEC, _never)
    watchdog.stop()
    watchdog.stop()
    with pytest.raises(ValueError, match="positive"):
        Watchdog(0, _never)
