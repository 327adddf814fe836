"""The warm pool through the daemon: tools' sandboxes and raw commands' are built ahead, an Execute takes one
(a hit in GetInfo and the metrics) and its Result is the same as a fresh one's; a reload that changes a tool
releases the sandboxes built from the old one; ``[sandbox.pool] size = 0`` turns it off."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_harness import make_daemon, reload_and_wait, running, scrape, wait_for

from sandboxd.cli.client import SandboxClient, pb

pytestmark = pytest.mark.root

READY_S = 60
ECHO = """
description = "print its params"
argv = ["/bin/cat"]
[limits]
memory = "64M"
[params_schema]
type = "object"
"""


def pool(client: SandboxClient) -> pb.PoolInfo:
    return client.info().pool


def test_executions_take_sandboxes_built_ahead(tmp_path: Path) -> None:
    made = make_daemon(tmp_path, tools={"echo": ECHO}, pool_size=1, metrics_listen="127.0.0.1:0")
    with running(made) as daemon, daemon.client() as client:
        kinds = pool(client).kinds
        assert kinds >= 2  # echo and raw commands (and the shipped tools without a door out)
        wait_for(lambda: pool(client).ready == kinds, READY_S, "every kind built ahead")
        outcome = client.run_tool("echo", {"word": "pooled"})
        assert outcome.status_name == "OK", outcome.result
        assert outcome.stdout == b'{"word":"pooled"}\n'
        command = client.run_command(["/bin/echo", "raw"])
        assert command.status_name == "OK" and command.stdout == b"raw\n"
        info = pool(client)
        assert (info.hits, info.misses, info.size) == (2, 0, 1)
        wait_for(lambda: pool(client).ready == kinds, READY_S, "the pool refilled")
        samples = scrape(daemon)
        assert samples["sandboxd_pool_hits_total"] == 2
        assert samples["sandboxd_pool_ready"] == kinds


def test_a_reload_releases_what_it_changed(tmp_path: Path) -> None:
    made = make_daemon(tmp_path, tools={"echo": ECHO}, pool_size=1)
    with running(made) as daemon, daemon.client() as client:
        wait_for(lambda: pool(client).ready == pool(client).kinds, READY_S, "every kind built ahead")
        built = pool(client).built
        (daemon.root / "tools" / "echo.toml").write_text(ECHO.replace("64M", "96M"))
        reload_and_wait(daemon)
        wait_for(lambda: pool(client).built == built + 1 and pool(client).ready == pool(client).kinds, READY_S,
                 "echo's sandbox rebuilt from its new limits")
        outcome = client.run_tool("echo", {})
        assert outcome.status_name == "OK" and outcome.started.limits.memory_max_bytes == 96 << 20
        assert pool(client).hits == 1


def test_size_zero_turns_the_pool_off(tmp_path: Path) -> None:
    with running(make_daemon(tmp_path, pool_size=0)) as daemon, daemon.client() as client:
        assert client.run_command(["/bin/true"]).status_name == "OK"
        info = pool(client)
        assert (info.size, info.kinds, info.ready, info.hits) == (0, 0, 0, 0)

