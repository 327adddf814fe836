"""sandboxctl without a daemon: arguments, exit codes, and the --json rendering."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from sandboxd.cli import main as cli
from sandboxd.cli.client import pb


def result(status: str, **fields: Any) -> pb.Result:
    return pb.Result(status=status, **fields)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (result("OK", exit_code=0), 0),
        (result("NONZERO_EXIT", exit_code=3), 3),
        (result("SIGNALED", signal=11), 139),
        (result("TIMEOUT", signal=9), 137),
        (result("CPU_LIMIT", signal=24), 152),
        (result("MEMORY_LIMIT", signal=9), 137),
        (result("OUTPUT_LIMIT"), 137),
        (result("SECCOMP_VIOLATION", signal=31), 159),
        (result("CANCELLED", signal=9), 137),
        (result("SETUP_FAILED"), 125),
        (pb.Result(), 125),
    ],
)
def test_exit_codes(message: pb.Result, code: int) -> None:
    assert cli.exit_code_for(message) == code


def test_exec_argv_after_double_dash() -> None:
    args = cli.build_parser().parse_args(
        ["--socket", "/s", "exec", "--memory", "64M", "--timeout", "5s", "--", "/bin/sh", "-c", "exit 3"])
    assert args.argv == ["--", "/bin/sh", "-c", "exit 3"]
    assert cli._limits(args) == {"memory_max_bytes": 64 * 1024**2, "wall_time_ms": 5000}
    assert args.socket == "/s" and args.json is False


def test_common_options_after_the_subcommand() -> None:
    args = cli.build_parser().parse_args(["run", "python", "--json", "--socket", "/x", "--output-limit", "1K",
                                          "--cpu-time", "250ms", "--pids", "4", "--cpu-share", "50%"])
    assert args.json is True and args.socket == "/x"
    assert cli._limits(args) == {"output_max_bytes": 1024, "cpu_time_ms": 250, "pids_max": 4,
                                 "cpu_share_percent": 50}


def test_every_limit_of_the_api_has_an_option() -> None:
    args = cli.build_parser().parse_args(["exec", "--file-size", "8M", "--open-files", "16", "--tmpfs-size", "16M",
                                          "--", "/bin/true"])
    assert cli._limits(args) == {"file_size_max_bytes": 8 << 20, "open_files_max": 16, "tmpfs_size_bytes": 16 << 20}
    options = {dest for _, dest, _, _, _ in cli._LIMIT_OPTIONS}
    assert options == {field.name for field in pb.Limits.DESCRIPTOR.fields}


@pytest.mark.parametrize("bad", [["--memory", "lots"], ["--timeout", "5"], ["--pids", "0"], ["--open-files", "x"]])
def test_bad_limits_are_usage_errors(bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.build_parser().parse_args(["run", "python", *bad])
    assert caught.value.code == 2
    assert bad[0] in capsys.readouterr().err


class SchemaClient:
    def list_tools(self) -> list[pb.Tool]:
        schema = {"type": "object", "properties": {"code": {"type": "string"}, "lines": {"type": "integer"},
                                                   "flags": {"type": "array"}}}
        return [pb.Tool(name="t", params_schema_json=json.dumps(schema))]


def test_params_follow_the_schema_types(tmp_path: Any) -> None:
    params_file = tmp_path / "p.json"
    params_file.write_text('{"code": "from file", "other": 1}')
    args = cli.build_parser().parse_args(
        ["run", "t", "--params-json", f"@{params_file}", "--param", "code=1", "--param", "lines=5",
         "--param", 'flags=["a"]', "--param", "free=true", "--param", "word=hello"])
    params = cli.build_params(args, SchemaClient())  # type: ignore[arg-type]
    assert params == {"code": "1", "other": 1, "lines": 5, "flags": ["a"], "free": True, "word": "hello"}


@pytest.mark.parametrize(
    ("argv", "words"),
    [(["--param", "novalue"], "expects K=V"), (["--params-json", "[1]"], "JSON object"),
     (["--params-json", "{"], "not JSON"), (["--params-json", "@/no/such/file"], "cannot read")],
)
def test_param_errors(argv: list[str], words: str) -> None:
    args = cli.build_parser().parse_args(["run", "t", *argv])
    with pytest.raises(cli.UsageError, match=words):
        cli.build_params(args, SchemaClient())  # type: ignore[arg-type]


def events() -> list[pb.ExecuteEvent]:
    return [
        pb.ExecuteEvent(started=pb.Started(execution_id="e1", limits=pb.Limits(memory_max_bytes=1024))),
        pb.ExecuteEvent(output=pb.Output(stream=pb.STDOUT, data=b"out")),
        pb.ExecuteEvent(output=pb.Output(stream=pb.STDERR, data=b"err")),
        pb.ExecuteEvent(result=pb.Result(execution_id="e1", status=pb.TIMEOUT, message="too slow", signal=9)),
    ]


def test_stream_events_live() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    code = cli.stream_events(iter(events()), as_json=False, out=out, err=err)
    assert code == 137
    assert out.getvalue() == b"out"
    assert err.getvalue() == b"errsandboxctl: TIMEOUT: too slow\n"


def test_stream_events_json() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    code = cli.stream_events(iter(events()), as_json=True, out=out, err=err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 137
    assert lines[0] == {"started": {"executionId": "e1", "limits": {"memoryMaxBytes": "1024"}}}
    assert lines[1] == {"output": {"stream": "STDOUT", "data": "b3V0"}}
    assert lines[-1]["result"]["status"] == "TIMEOUT"
    assert err.getvalue() == b"sandboxctl: TIMEOUT: too slow\n"


def test_no_result_is_an_error() -> None:
    err = io.BytesIO()
    assert cli.stream_events(iter(events()[:2]), as_json=False, out=io.BytesIO(), err=err) == 125
    assert b"no result" in err.getvalue()


def test_unreachable_daemon_is_125(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--socket", str(tmp_path / "absent.sock"), "tools"]) == 125
    assert "sandboxd is not running" in capsys.readouterr().err


def test_tool_descriptions_wrap_at_words_and_nothing_is_cut(capsys: pytest.CaptureFixture[str]) -> None:
    description = "Read-only SQL against a database of the operator's choosing, with a row limit and a timeout"
    cli.print_table([["NAME", "DESCRIPTION"], ["sqlite_query", description]], wrap_last=30)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "NAME          DESCRIPTION"
    assert all(len(line) <= 14 + 30 for line in lines)
    assert " ".join(line[14:] for line in lines[1:]) == description  # every word, in order, under the column
    cli.print_table([["NAME", "DESCRIPTION"], ["sqlite_query", description]])  # --wide
    assert capsys.readouterr().out.splitlines()[1] == f"sqlite_query  {description}"


def test_an_unreachable_socket_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = tmp_path / "absent.sock"
    assert cli.unreachable_socket_hint(absent).startswith(f"no socket at {absent}: sandboxd is not running")
    present = tmp_path / "sandboxd.sock"
    present.touch()
    present.chmod(0o660)
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # as a user outside the socket's group
    hint = cli.unreachable_socket_hint(present)
    assert f"permission denied on {present}" in hint and "mode 0660" in hint
    assert "join the group" in hint and "usermod -aG" in hint and "or use sudo" in hint
