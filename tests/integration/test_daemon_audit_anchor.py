"""The audit chain anchored outside the daemon (``[audit] anchor``), through a real daemon.

It proves: the daemon ships its durable tip (instance, seq, hash) to an anchor file at its interval and once
more after it stopped, so the last anchor is the log's last record; ``sandboxctl audit verify --anchors``
accepts the log as it is, and catches what the chain alone cannot — records cut cleanly off the end, and a
tail rewritten with recomputed hashes (a plain SHA-256 chain can be re-hashed by whoever edits it); an HTTP
anchor receives the same objects by POST; an anchor that cannot be reached is logged, and the daemon goes on
serving.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from daemon_harness import SANDBOXCTL, make_daemon, running, scrape, wait_for

from sandboxd.audit.record import AuditRecord

pytestmark = pytest.mark.root


def anchored(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SANDBOXCTL), "audit", "verify", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_anchors_catch_a_cut_and_a_rewritten_tail(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    anchors = tmp_path / "elsewhere" / "anchors.jsonl"
    anchors.parent.mkdir()
    made = make_daemon(tmp_path, extra=f'[audit]\npath = "{tmp_path / "log" / "audit.log"}"\n'
                                       f'anchor = "{anchors}"\nanchor_interval = "200ms"\n')
    log_file = tmp_path / "log" / "audit.log"
    with running(made):
        with made.client() as client:
            for index in range(5):
                assert client.run_command(["/bin/true"], request_id=f"anchor-{index}").status_name == "OK"
        last = json.loads(lines_of(log_file)[-1])
        wait_for(lambda: any(a["seq"] >= last["seq"] for a in anchored(anchors)), 30, "an anchor of the tip")
        shipped = anchored(anchors)
        assert [a["seq"] for a in shipped] == sorted({a["seq"] for a in shipped})  # only when the tip moved
        assert {a["instance"] for a in shipped} == {made.instance}
        assert "anchoring the audit chain at" in made.logs()
    # After the stop, the last anchor is the last record: the daemon's stop is vouched for too.
    final, records = anchored(anchors)[-1], [json.loads(line) for line in lines_of(log_file)]
    assert (final["seq"], final["hash"]) == (records[-1]["seq"], records[-1]["hash"])
    assert records[-1]["event"] == "daemon.stopped"
    assert (final["log"], final["instance"]) == (str(log_file), made.instance)

    done = verify("--anchors", anchors, log_file)
    assert done.returncode == 0, done.stderr
    assert f"anchored at seq {final['seq']}" in done.stdout

    # Records cut cleanly off the end: still a chain that verifies alone — but not against its anchor.
    cut = tmp_path / "cut" / "audit.log"
    cut.parent.mkdir()
    cut.write_text("".join(lines_of(log_file)[:-3]))
    assert verify(cut).returncode == 0
    done = verify("--anchors", anchors, cut)
    assert done.returncode == 1, done.stdout
    assert f"audit chain broken at seq {final['seq']}: cut off the end" in done.stderr, done.stderr
    assert f"the files end at seq {final['seq'] - 3}" in done.stderr

    # The last records rewritten, every hash after the edit recomputed: the chain alone cannot tell.
    forged = tmp_path / "forged" / "audit.log"
    forged.parent.mkdir()
    kept = [AuditRecord.from_line(line) for line in lines_of(log_file)]
    rewritten = kept[:-3]
    for record in kept[-3:]:
        details = dict(record.details, forged=True)
        rewritten.append(AuditRecord.create(
            seq=record.seq, unix_time_s=record.unix_time_s, event=record.event, prev=rewritten[-1].hash, key=None,
            principal=record.principal, tool=record.tool, execution_id=record.execution_id,
            request_id=record.request_id, details=details))
    forged.write_text("".join(record.to_line() for record in rewritten))
    assert verify(forged).returncode == 0
    done = verify("--anchors", anchors, forged)
    assert done.returncode == 1
    assert f"at seq {final['seq']}: anchored record differs" in done.stderr, done.stderr

    # A fleet's directories at once: each chain against its own instance's anchor.
    whole = tmp_path / "whole"
    shutil.copytree(log_file.parent, whole)
    done = verify("--anchors", anchors, whole, cut.parent)
    assert done.returncode == 1
    verdicts = sorted((line.split(": ")[0], line.split(": ")[1].split()[0]) for line in done.stdout.splitlines())
    assert verdicts == [(made.instance, "BROKEN"), (made.instance, "ok")], done.stdout


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]]  # each fixture's subclass has its own

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/anchors", received
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_anchor_receives_the_tip_and_an_unreachable_one_is_only_logged(
        tmp_path: Path, collector: tuple[str, list[dict[str, Any]]]) -> None:
    if os.geteuid() != 0:
        pytest.skip("the daemon's end-to-end tests need root")
    url, received = collector
    made = make_daemon(tmp_path, extra=f'[audit]\npath = "{tmp_path / "log" / "audit.log"}"\n'
                                       f'anchor = "{url}"\nanchor_interval = "200ms"\n')
    with running(made):
        with made.client() as client:
            assert client.run_command(["/bin/true"]).status_name == "OK"
        wait_for(lambda: received and received[-1]["seq"] >= 4, 30, "a POSTed anchor")
    last = json.loads(lines_of(tmp_path / "log" / "audit.log")[-1])
    assert (received[-1]["seq"], received[-1]["hash"], received[-1]["instance"]) == (
        last["seq"], last["hash"], made.instance)

    nowhere = make_daemon(tmp_path, extra=f'[audit]\npath = "{tmp_path / "log2" / "audit.log"}"\n'
                                          'anchor = "http://127.0.0.1:9/anchors"\nanchor_interval = "100ms"\n',
                          metrics_listen="127.0.0.1:0")
    with running(nowhere):
        with nowhere.client() as client:
            assert client.run_command(["/bin/true"]).status_name == "OK"  # the daemon serves on
        failed = 'sandboxd_audit_anchors_total{result="failed"}'
        wait_for(lambda: scrape(nowhere).get(failed, 0) >= 3, 30, "three failed shipments")
        assert "cannot anchor the audit chain at http://127.0.0.1:9/anchors" in nowhere.logs()
        assert nowhere.logs().count("cannot anchor") == 1  # once per streak, not at every interval
