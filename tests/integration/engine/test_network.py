"""The sandbox has its own network namespace with only loopback: the host is unreachable."""

from __future__ import annotations

import socket

from sandboxd.engine.result import Status

from .conftest import Engine


def test_tcp_connect_to_host_loopback_listener_fails(engine: Engine) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        probe = socket.create_connection(("127.0.0.1", port), timeout=2)  # the listener really is there
        probe.close()
        script = (
            "import socket\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('CONNECTED')\n"
            "except OSError as e:\n    print('refused', e.errno)\n"
        )
        run = engine.run(engine.spec("/usr/bin/python3", "-c", script))
    assert run.result.status is Status.OK, (run.result, run.stderr)
    assert run.stdout.startswith(b"refused"), run.stdout


def test_only_loopback_exists_and_is_up(engine: Engine) -> None:
    run = engine.run(engine.spec("/bin/cat", "/proc/net/dev"))
    assert run.result.status is Status.OK, run.result
    interfaces = [line.split(b":")[0].strip() for line in run.stdout.splitlines()[2:]]
    assert interfaces == [b"lo"]
    script = "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print('listening')"
    assert engine.run(engine.spec("/usr/bin/python3", "-c", script)).stdout == b"listening\n"
