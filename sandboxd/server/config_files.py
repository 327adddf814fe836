"""The configuration file and the files it includes, read into one TOML document.

::

    include = ["/etc/sandboxd/secret/principals.toml"]   # absolute paths; each one's tables join this file's

The configuration may be split where it is kept: on Kubernetes the daemon's settings come from a ConfigMap
and the principals with their token hashes from a Secret. An included file's tables merge into the main
file's (``[principals.ci]`` from one beside ``[principals.gateway]`` from the other); a key set in two files is
an error naming both, not an override, so no file silently changes what another says. Included files may
not include others. A reload (SIGHUP) reads them all again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandboxd.base.errors import ConfigError
from sandboxd.base.toml import read_toml

INCLUDE_KEY = "include"


def read_config_tree(path: Path) -> dict[str, Any]:
    """``path``'s TOML with the files its ``include`` names merged in."""
    document = read_toml(path)
    includes = document.pop(INCLUDE_KEY, [])
    if not isinstance(includes, list) or not all(isinstance(item, str) for item in includes):
        raise ConfigError(f"{path}: include: expected a list of absolute paths, got {includes!r}")
    for item in includes:
        included = Path(item)
        if not included.is_absolute():
            raise ConfigError(f"{path}: include: {item!r} is not an absolute path")
        extra = read_toml(included)
        if INCLUDE_KEY in extra:
            raise ConfigError(f"{included}: include: an included file may not include others")
        _merge(document, extra, into=path, source=included, prefix="")
    return document


def _merge(document: dict[str, Any], extra: dict[str, Any], *, into: Path, source: Path, prefix: str) -> None:
    for key, value in extra.items():
        dotted = f"{prefix}{key}"
        if key not in document:
            document[key] = value
        elif isinstance(document[key], dict) and isinstance(value, dict):
            _merge(document[key], value, into=into, source=source, prefix=f"{dotted}.")
        else:
            raise ConfigError(f"{source}: {dotted} is set in {into} too: a key may be set in one file only")
