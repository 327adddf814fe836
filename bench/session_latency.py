"""An ``Execute`` inside a warm session against a fresh ``Execute``, through one real daemon, alternating
call by call: both run ``/bin/true`` as a raw command under full isolation with the audit log on disk. A fresh
one builds its sandbox (namespaces, root, cgroup leaf); a call in a session joins the session's and makes only
its own cgroup leaf. Prints p50 / p99 of each and the ratio.

    sudo .venv/bin/python bench/session_latency.py --runs 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from daemon_harness import UNMETERED_POLICY, make_daemon, running

from sandboxd.cli.client import SandboxClient
from sandboxd.cli.sessions import Session


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    fresh_ms: list[float] = []
    in_session_ms: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, running(make_daemon(Path(tmp), extra=UNMETERED_POLICY)) as daemon, \
            SandboxClient(daemon.socket) as client, Session.create(client, tool=None) as session:
        for _ in range(5):  # warm both paths
            client.run_command(["/bin/true"])
            session.run_command(["/bin/true"])
        for _ in range(args.runs):
            t0 = time.perf_counter()
            fresh = client.run_command(["/bin/true"])
            t1 = time.perf_counter()
            warm = session.run_command(["/bin/true"])
            t2 = time.perf_counter()
            assert fresh.status_name == warm.status_name == "OK", (fresh.result, warm.result)
            fresh_ms.append((t1 - t0) * 1000)
            in_session_ms.append((t2 - t1) * 1000)
    fresh_p50, warm_p50 = statistics.median(fresh_ms), statistics.median(in_session_ms)
    print(f"{args.runs} executions of /bin/true each, alternating, one daemon")
    print(f"  fresh Execute          p50 {fresh_p50:6.1f} ms  p99 {p99(fresh_ms):6.1f} ms")
    print(f"  Execute in a session   p50 {warm_p50:6.1f} ms  p99 {p99(in_session_ms):6.1f} ms")
    print(f"  ratio (session / fresh) p50 {warm_p50 / fresh_p50:.2f}")


if __name__ == "__main__":
    main()
