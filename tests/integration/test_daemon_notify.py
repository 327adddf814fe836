"""The daemon speaks systemd's notify protocol to a real $NOTIFY_SOCKET: READY once it serves, RELOADING then
READY around a SIGHUP, STOPPING when it drains, and WATCHDOG pings at half of WATCHDOG_USEC."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from daemon_harness import assert_nothing_left, make_daemon

pytestmark = pytest.mark.root

WATCHDOG_USEC = 400_000


def receive_until(sock: socket.socket, wanted: str, timeout_s: float = 20.0) -> list[str]:
    """Datagrams up to and including the first that contains ``wanted``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if wanted in got[-1]:
            return got
    raise AssertionError(f"no {wanted!r} within {timeout_s}s; got {got}")


def test_notify_ready_reload_watchdog_stopping(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        daemon = make_daemon(tmp_path, env={"NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        daemon.start()
        try:
            ready = receive_until(sock, "READY=1")
            assert "STATUS=serving 4 tools" in ready[-1]
            # pings keep coming at about half the interval: at least 3 in 1.2 intervals' time
            t0 = time.monotonic()
            for _ in range(3):
                receive_until(sock, "WATCHDOG=1", timeout_s=WATCHDOG_USEC / 1e6)
            assert time.monotonic() - t0 < 3 * WATCHDOG_USEC / 1e6
            daemon.signal(signal.SIGHUP)
            reload = receive_until(sock, "READY=1")
            assert any("RELOADING=1" in message and "MONOTONIC_USEC=" in message for message in reload), reload
        finally:
            status = daemon.stop()
        messages = receive_until(sock, "STOPPING=1", timeout_s=5)
        assert status == 0, daemon.logs()
        assert "STATUS=draining 0 executions" in messages[-1]
    assert_nothing_left(daemon)
