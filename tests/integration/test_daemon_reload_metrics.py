"""The daemon as an operator runs it: SIGHUP reloads (a good config applies at once; a broken one is
rejected with its reason and the old one keeps serving; running executions keep their limits), and
Prometheus metrics scraped over HTTP reflect what ran."""

from __future__ import annotations

import pytest
from daemon_harness import Daemon, daemon_fixture, reload_and_wait, scrape

from sandboxd.cli.client import SandboxdError, pb

pytestmark = pytest.mark.root

SLEEPER = """
description = "sleep for the given seconds"
argv = ["/usr/bin/python3", "-I", "-S", "-c",
        "import json, sys, time; time.sleep(json.loads(sys.stdin.readline())['s']); print('woke')"]
seccomp_profile = "python"
[limits]
wall_time = "20s"
[params_schema]
type = "object"
properties = { s = { type = "number" } }
"""

LATE = """
description = "a tool that appears with a reload"
argv = ["/bin/echo", "late"]
[params_schema]
type = "object"
"""

daemon = daemon_fixture(tools={"sleeper": SLEEPER}, metrics_listen="127.0.0.1:0")


def tool_names(daemon: Daemon) -> set[str]:
    with daemon.client() as client:
        return {tool.name for tool in client.list_tools()}


def test_sighup_applies_a_good_config_and_running_executions_keep_their_limits(daemon: Daemon) -> None:
    assert "late" not in tool_names(daemon)
    with daemon.client() as client:
        running = client.execute(tool="sleeper", params={"s": 2})
        assert next(e for e in running if e.WhichOneof("event") == "started").started.limits.wall_time_ms == 20_000
        # The new generation: one more tool, and the sleeper may only run 1 s.
        (daemon.tools_dir / "late.toml").write_text(LATE)
        (daemon.tools_dir / "sleeper.toml").write_text(SLEEPER.replace('wall_time = "20s"', 'wall_time = "1s"'))
        record = reload_and_wait(daemon)
        assert record["event"] == "daemon.reloaded", record
        assert "late" in record["details"]["tools"]
        assert "late" in tool_names(daemon)
        assert client.run_tool("late", {}).stdout == b"late\n"
        # A new execution gets the new limit ...
        assert client.run_tool("sleeper", {"s": 5}).status_name == "TIMEOUT"
        # ... while the one started under the old limits still has 20 s: it sleeps its 2 s and finishes.
        result = [e for e in running if e.WhichOneof("event") == "result"][-1].result
        assert pb.Status.Name(result.status) == "OK", result
    assert daemon.process is not None and daemon.process.poll() is None


@pytest.mark.parametrize(("breakage", "reason"), [
    (("\n", "\nbroken toml [\n"), "not valid TOML"),
    (("[daemon]\n", "[daemon]\nsocket_mode = '0600'\n"), "daemon.socket_mode"),
])
def test_sighup_rejects_a_broken_config_and_keeps_serving(
    daemon: Daemon, breakage: tuple[str, str], reason: str
) -> None:
    before = tool_names(daemon)
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good.replace(*breakage, 1))
    try:
        record = reload_and_wait(daemon)
    finally:
        daemon.config_path.write_text(good)
    assert record["event"] == "daemon.reload_failed"
    assert reason in record["details"]["message"]
    assert reason in daemon.logs()
    assert tool_names(daemon) == before
    with daemon.client() as client:
        assert client.run_tool("sleeper", {"s": 0}).stdout == b"woke\n"


def test_metrics_reflect_executions_that_ran(daemon: Daemon) -> None:
    before = scrape(daemon)
    with daemon.client() as client:
        assert client.run_tool("sleeper", {"s": 0}).status_name == "OK"
        assert client.run_command(["/bin/sh", "-c", "exit 3"]).status_name == "NONZERO_EXIT"
        with pytest.raises(SandboxdError):
            client.run_tool("sleeper", {"s": "not a number"})
    after = scrape(daemon)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('sandboxd_executions_total{status="OK",tool="sleeper"}') == 1
    assert delta('sandboxd_executions_total{status="NONZERO_EXIT",tool="(command)"}') == 1
    assert delta('sandboxd_decisions_total{decision="denied",reason="INVALID_PARAMS"}') == 1
    assert delta('sandboxd_decisions_total{decision="allowed",reason="ok"}') >= 2
    assert delta("sandboxd_execution_seconds_count") == 2
    assert delta("sandboxd_spawn_seconds_count") == 2
    assert delta('sandboxd_output_bytes_total{stream="stdout"}') == len(b"woke\n")
    assert after["sandboxd_active_executions"] == 0
    assert delta("sandboxd_audit_fsync_seconds_count") >= 1
