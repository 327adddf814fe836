"""Parameter constraints through a real daemon: a grant's JSON Schema admits some paths and SQL and refuses the
rest (PERMISSION_DENIED, PARAMS_NOT_GRANTED, naming the JSON path and the rule, one audited decision); ListTools
shows the caller the constraint it is held to; a broken constraint fails the start, and a reload to one is
rejected while the running constraint stays in force."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from daemon_harness import Daemon, make_daemon, reload_and_wait, running

from sandboxd.cli.client import SandboxClient, SandboxdError

pytestmark = pytest.mark.root

READER = """
description = "reads a file (here: exits 0)"
argv = ["/bin/true"]
[params_schema]
type = "object"
properties = { path = { type = "string" }, options = { type = "object", properties = { mode = { type = "string" } } } }
"""

QUERY = """
description = "runs SQL (here: exits 0)"
argv = ["/bin/true"]
[params_schema]
type = "object"
required = ["sql"]
properties = { sql = { type = "string" } }
"""

ANALYST_TOOLS = r"""[[roles.analyst.tools]]
name = "reader"
params.required = ["path"]
params.properties.path = { pattern = "^reports/" }
params.properties.options = { properties = { mode = { enum = ["read"] } } }
[[roles.analyst.tools]]
name = "query"
params = { properties = { sql = { pattern = "(?i)^\\s*select\\b" } } }"""

BROKEN_TOOLS = '[[roles.analyst.tools]]\nname = "reader"\nparams = { properties = { path = { pattern = "(" } } }'


def policy(analyst_tools: str = ANALYST_TOOLS) -> str:
    digest = hashlib.sha256(b"analyst-token").hexdigest()
    return f"""
[principals.local-admin]
roles = ["admin"]
[principals.analyst]
roles = ["analyst"]
token_sha256 = ["{digest}"]
[roles.admin]
tools = ["*"]
commands = true
admin = true
[roles.analyst]
{analyst_tools}
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    with running(make_daemon(tmp_path_factory.mktemp("constraints"), tools={"reader": READER, "query": QUERY},
                             extra=policy())) as started:
        yield started


def analyst(daemon: Daemon) -> SandboxClient:
    return SandboxClient(daemon.socket, token="analyst-token")


def decision_of(daemon: Daemon, request_id: str) -> dict[str, Any]:
    [record] = [r for r in daemon.audit_records() if r["request_id"] == request_id and r["event"] == "decision"]
    return record


def run(daemon: Daemon, tool: str, params: dict[str, Any]) -> str:
    request_id = uuid.uuid4().hex[:12]
    with analyst(daemon) as client:
        assert client.run_tool(tool, params, request_id=request_id).status_name == "OK"
    return request_id


def refused(daemon: Daemon, tool: str, params: dict[str, Any]) -> tuple[SandboxdError, dict[str, Any]]:
    request_id = uuid.uuid4().hex[:12]
    with analyst(daemon) as client, pytest.raises(SandboxdError) as caught:
        client.run_tool(tool, params, request_id=request_id)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PARAMS_NOT_GRANTED")
    records = [r for r in daemon.audit_records() if r["request_id"] == request_id]
    assert [r["event"] for r in records] == ["request.received", "decision"], records
    return caught.value, records[1]["details"]


@pytest.mark.parametrize("path", ["reports/q1.csv", "reports/2026/summary.txt"])
def test_an_allowed_path_runs_and_its_decision_names_the_grant(daemon: Daemon, path: str) -> None:
    details = decision_of(daemon, run(daemon, "reader", {"path": path}))["details"]
    assert (details["outcome"], details["role"], details["grant"]) == ("allowed", "analyst", "roles.analyst.tools[0]")


@pytest.mark.parametrize("path", ["etc/passwd", "../reports/x", "/reports/x"])
def test_a_path_outside_the_constraint_is_refused_and_audited(daemon: Daemon, path: str) -> None:
    error, details = refused(daemon, "reader", {"path": path})
    assert "$.path" in error.message and "properties.path.pattern" in error.message
    assert (details["outcome"], details["reason"], details["role"]) == ("denied", "PARAMS_NOT_GRANTED", "analyst")
    assert (details["json_path"], details["rule"]) == ("$.path", "properties.path.pattern")


def test_nested_properties(daemon: Daemon) -> None:
    run(daemon, "reader", {"path": "reports/a", "options": {"mode": "read"}})
    _, details = refused(daemon, "reader", {"path": "reports/a", "options": {"mode": "write"}})
    assert (details["json_path"], details["rule"]) == ("$.options.mode", "properties.options.properties.mode.enum")


@pytest.mark.parametrize("sql", ["select * from sales", "  SELECT count(*) FROM t"])
def test_select_runs(daemon: Daemon, sql: str) -> None:
    run(daemon, "query", {"sql": sql})


@pytest.mark.parametrize("sql", ["DELETE FROM sales", "drop table sales; select 1"])
def test_other_sql_is_refused(daemon: Daemon, sql: str) -> None:
    _, details = refused(daemon, "query", {"sql": sql})
    assert (details["json_path"], details["rule"]) == ("$.sql", "properties.sql.pattern")


def test_the_tools_own_schema_is_checked_first(daemon: Daemon) -> None:
    with analyst(daemon) as client, pytest.raises(SandboxdError) as caught:
        client.run_tool("query", {"sql": 42})
    assert caught.value.reason == "INVALID_PARAMS"


def test_list_tools_shows_the_constraint_the_caller_is_held_to(daemon: Daemon) -> None:
    with analyst(daemon) as client, daemon.client() as admin:
        tools = {tool.name: tool for tool in client.list_tools()}
        assert json.loads(tools["reader"].params_constraint_json)["properties"]["path"] == {"pattern": "^reports/"}
        assert json.loads(tools["query"].params_constraint_json) == {
            "properties": {"sql": {"pattern": "(?i)^\\s*select\\b"}}}
        assert json.loads(tools["query"].params_schema_json)["required"] == ["sql"]  # the tool's, unchanged
        assert all(not tool.params_constraint_json for tool in admin.list_tools())


def test_a_broken_constraint_fails_the_start_naming_file_and_key(tmp_path: Path) -> None:
    broken = make_daemon(tmp_path, tools={"reader": READER}, extra=policy(BROKEN_TOOLS))
    done = subprocess.run(broken.command(), capture_output=True, timeout=30)
    assert done.returncode == 78, done.stderr
    expected = f"{broken.config_path}: roles.analyst.tools[0].params: not a valid JSON Schema at properties.path"
    assert expected.encode() in done.stderr, done.stderr
    assert not broken.socket.exists()


def test_a_reload_to_a_broken_constraint_is_rejected_and_the_old_one_holds(tmp_path: Path) -> None:
    with running(make_daemon(tmp_path, tools={"reader": READER, "query": QUERY}, extra=policy())) as daemon:
        text = daemon.config_path.read_text()
        daemon.config_path.write_text(text.replace(ANALYST_TOOLS, BROKEN_TOOLS))
        record = reload_and_wait(daemon)
        assert record["event"] == "daemon.reload_failed"
        assert f"{daemon.config_path}: roles.analyst.tools[0].params: not a valid JSON Schema" in \
            record["details"]["message"]
        run(daemon, "reader", {"path": "reports/a"})
        refused(daemon, "reader", {"path": "etc/passwd"})
        # and a reload to a good, wider constraint applies to the next request
        daemon.config_path.write_text(text.replace('"^reports/"', '"^(reports|archive)/"'))
        assert reload_and_wait(daemon)["event"] == "daemon.reloaded"
        run(daemon, "reader", {"path": "archive/a"})
