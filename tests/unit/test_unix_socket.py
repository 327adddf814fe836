"""Claiming a socket's path: a dead daemon's socket is replaced; a file that is not a socket, or a socket that
another daemon serves, is refused naming the setting."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sandboxd.base.errors import ConfigError
from sandboxd.server.unix_socket import claim_socket_path


def test_a_dead_daemons_socket_is_removed_and_the_directory_made(tmp_path: Path) -> None:
    path = tmp_path / "run" / "s.sock"
    claim_socket_path(path, "daemon.framed_socket")
    assert path.parent.is_dir() and not path.exists()
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # bound, never listening: what a killed daemon leaves
    claim_socket_path(path, "daemon.framed_socket")
    assert not path.exists()


def test_a_file_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    path.write_text("mine")
    with pytest.raises(ConfigError, match=r"daemon\.framed_socket: .* exists and is not a socket"):
        claim_socket_path(path, "daemon.framed_socket")
    assert path.read_text() == "mine"


def test_a_socket_another_daemon_serves_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(ConfigError, match=r"daemon\.framed_socket: another daemon is listening"):
            claim_socket_path(path, "daemon.framed_socket")
    assert path.exists()
