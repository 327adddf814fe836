"""sandboxd's command line: overrides of the file's values, and refusals before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.server.daemon import configure, main, parse_args


def test_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config_file = tmp_path / "c.toml"
    config_file.write_text('[daemon]\ninstance = "from-file"\nmax_concurrent_executions = 3\n')
    config = configure(parse_args(["--config", str(config_file), "--socket", "rel.sock", "--state-dir", "st",
                                   "--instance", "blue"]))
    assert config.daemon.socket == tmp_path / "rel.sock"
    assert config.daemon.state_dir == tmp_path / "st"
    assert config.daemon.instance == "blue"
    assert config.daemon.max_concurrent_executions == 3
    assert configure(parse_args(["--config", str(config_file)])).daemon.instance == "from-file"


@pytest.mark.parametrize("instance", ["../x", "a/b", ".hidden", ""])
def test_instance_names_directories_safely(instance: str) -> None:
    with pytest.raises(ConfigError, match="--instance"):
        configure(parse_args(["--config", "/dev/null", "--instance", instance]))


def test_bad_config_exits_78_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "c.toml"
    config_file.write_text('[daemon]\ngrace_period = "soon"\n')
    assert main(["--config", str(config_file), "--state-dir", str(tmp_path / "state")]) == 78
    assert f"{config_file}: daemon.grace_period: " in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # refused before anything was created
