"""``sandboxctl policy suggest`` over audit files (no daemon): the roles, the filters, and ``--assessor``'s
comments from a loopback chat-completions endpoint — printed as comments, and a failing one only warned of."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from assessor_server import assessor_server

from sandboxd.audit.record import ZERO_HASH, AuditRecord
from sandboxd.cli import main as cli

MIB = 1 << 20


def write_trail(path: Path, records: list[tuple[str, str, str, dict[str, Any]]]) -> Path:
    prev, lines = ZERO_HASH, []
    for seq, (event, principal, tool, details) in enumerate(records, start=1):
        record = AuditRecord.create(seq=seq, unix_time_s=time.time(), event=event, prev=prev, key=None,
                                    principal=principal, tool=tool, details=details)
        prev = record.hash
        lines.append(record.to_line())
    path.write_text("".join(lines))
    return path


def finished(principal: str, tool: str, memory: int = 20 * MIB) -> tuple[str, str, str, dict[str, Any]]:
    return ("execution.finished", principal, tool, {"outcome": "OK", "memory_peak_bytes": memory,
                                                    "cpu_user_usec": 1000, "cpu_system_usec": 0, "wall_time_ms": 30,
                                                    "stdout_bytes": 10, "stderr_bytes": 0})


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    return write_trail(tmp_path / "audit.log", [
        ("daemon.started", "", "", {}),
        finished("alice", "reader"),
        finished("bob", "sqlite_query"),
        ("decision", "bob", "python", {"outcome": "denied", "rpc": "Execute", "reason": "TOOL_NOT_GRANTED"}),
    ])


def suggest(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["policy", "suggest", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_roles_from_an_audit_file(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = suggest(capsys, "--audit-file", str(trail), "--margin", "100%")
    assert code == 0
    roles = tomllib.loads(out)["roles"]
    assert roles["least-alice"] == {"tools": ["reader"], "ceilings": {"memory": "40M", "cpu_time": "1s",
                                                                      "wall_time": "1s", "output": "64K"}}
    assert roles["least-bob"]["tools"] == ["sqlite_query"]
    assert "# refused: python (TOOL_NOT_GRANTED), 1 time" in out


def test_only_the_principals_asked_for(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = suggest(capsys, "--audit-file", str(trail), "--principal", "bob")
    assert list(tomllib.loads(out)["roles"]) == ["least-bob"]


def test_a_missing_file_is_passed_over_and_a_bad_margin_refused(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = suggest(capsys, "--audit-file", str(tmp_path / "nope.log"), "--since", "1h")
    assert code == 0  # a file gone (expired, rotated away) is passed over, as audit export does
    code, _, err = suggest(capsys, "--audit-file", str(tmp_path), "--margin", "lots")
    assert code == 125 and "--margin" in err


def config_file(tmp_path: Path, url: str, assessor: str = "chat-completions") -> Path:
    model = 'model = "reviewer"\n' if assessor == "chat-completions" else ""
    path = tmp_path / "sandboxd.toml"
    path.write_text(f'[policy.risk]\nassessor = "{assessor}"\nurl = "{url}"\n{model}')
    return path


def test_assessor_comments_come_as_comments(trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with assessor_server(chat=True) as server:
        code, out, _ = suggest(capsys, "--audit-file", str(trail), "--assessor", "--config",
                               config_file(tmp_path, server.url).as_posix())
        [seen] = server.seen
    assert code == 0
    assert seen.body["model"] == "reviewer" and "response_format" not in seen.body
    assert "least-privilege report" in seen.body["messages"][0]["content"]
    assert seen.context["bob"]["refused"] == [{"tool": "python", "reason": "TOOL_NOT_GRANTED", "count": 1}]
    assert "# What the assessor's model makes of it" in out
    assert '#   {"risk_score": 10' in out  # whatever the model says, as comments
    assert tomllib.loads(out)["roles"]["least-alice"]["tools"] == ["reader"]


def test_a_failing_assessor_leaves_a_warning_and_the_roles(trail: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with assessor_server(chat=True) as server:
        url = server.url
    code, out, err = suggest(capsys, "--audit-file", str(trail), "--assessor", "--config",
                             config_file(tmp_path, url).as_posix())
    assert code == 0 and "the assessor gave no comment: cannot connect" in err
    assert "least-alice" in tomllib.loads(out)["roles"]


def test_assessor_needs_a_chat_completions_endpoint(trail: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = suggest(capsys, "--audit-file", str(trail), "--assessor", "--config",
                           config_file(tmp_path, "http://127.0.0.1:1/assess", "http").as_posix())
    assert code == 125 and 'comments need "chat-completions"' in err
    (tmp_path / "empty.toml").write_text("")
    code, _, err = suggest(capsys, "--audit-file", str(trail), "--assessor", "--config", str(tmp_path / "empty.toml"))
    assert code == 125 and "has no [policy.risk] table" in err
