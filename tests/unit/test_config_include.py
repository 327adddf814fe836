"""``include``: the configuration split over files (a ConfigMap's settings, a Secret's principals)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.server.config import load_config

TOKEN_SHA256 = "0" * 64


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_an_included_files_tables_join_the_main_files(tmp_path: Path) -> None:
    secret = write(tmp_path / "principals.toml", f"""
[principals.ci]
roles = ["operator"]
token_sha256 = ["{TOKEN_SHA256}"]
""")
    main = write(tmp_path / "sandboxd.toml", f"""
include = ["{secret}"]
[daemon]
instance = "node-a"
health_listen = "0.0.0.0:7071"
[principals.local-admin]
roles = ["operator"]
[roles.operator]
tools = ["*"]
""")
    config = load_config(main)
    assert set(config.policy.principals) == {"ci", "local-admin"}
    assert (config.daemon.instance, config.daemon.health_listen) == ("node-a", "0.0.0.0:7071")


@pytest.mark.parametrize(("included", "error"), [
    ('[daemon]\ninstance = "other"\n', r"principals.toml: daemon.instance is set in .*sandboxd.toml too"),
    ('include = ["/x.toml"]\n', "an included file may not include others"),
])
def test_a_key_in_two_files_or_a_nested_include_is_an_error(tmp_path: Path, included: str, error: str) -> None:
    secret = write(tmp_path / "principals.toml", included)
    main = write(tmp_path / "sandboxd.toml", f'include = ["{secret}"]\n[daemon]\ninstance = "node-a"\n')
    with pytest.raises(ConfigError, match=error):
        load_config(main)


def test_include_names_absolute_files_that_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not an absolute path"):
        load_config(write(tmp_path / "a.toml", 'include = ["principals.toml"]\n'))
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_config(write(tmp_path / "b.toml", f'include = ["{tmp_path / "missing.toml"}"]\n'))
    with pytest.raises(ConfigError, match="health_listen"):
        load_config(write(tmp_path / "c.toml", '[daemon]\nhealth_listen = "somehost:7071"\n'))
