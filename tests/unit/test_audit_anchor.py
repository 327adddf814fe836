"""Anchors: the [audit] keys, the anchor line, shipping to a file (only when the tip moved; a failure logged
once per streak), and verifying a chain — or several — against them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from sandboxd.audit.anchor import Anchor, AnchorShipper, AnchorTarget, last_anchors, parse_anchor_target
from sandboxd.audit.config import parse_audit_config
from sandboxd.audit.verify import ChainBroken, Why, chain_order, chains_of, verify_files
from sandboxd.audit.writer import AuditLog
from sandboxd.base.errors import ConfigError
from sandboxd.base.toml import TomlTable


def test_the_anchor_keys() -> None:
    def parse(**values: object) -> object:
        return parse_audit_config(TomlTable(dict(values), file="/etc/sandboxd/sandboxd.toml", prefix="audit"))

    config = parse(anchor="/mnt/anchors/a.jsonl", anchor_interval="30s")
    assert (config.anchor, config.anchor_interval_ms) == (AnchorTarget(path=Path("/mnt/anchors/a.jsonl")), 30_000)
    assert parse(anchor="https://collector.example/anchors").anchor == AnchorTarget(  # type: ignore[attr-defined]
        url="https://collector.example/anchors")
    assert parse(anchor="").anchor is None and parse().anchor is None  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"audit\.anchor.*absolute path or an http"):
        parse(anchor="anchors.jsonl")
    with pytest.raises(ConfigError, match=r"audit\.anchor_interval"):
        parse(anchor="/a", anchor_interval="0s")
    with pytest.raises(ValueError, match="absolute path or an http"):
        parse_anchor_target("ftp://collector.example/anchors")


def log_of(path: Path, count: int) -> AuditLog:
    log = AuditLog.open(path, hmac_key=None, rotate_bytes=1 << 30, retention_days=None)
    log.append("daemon.started", details={"instance": "node-a"})
    for index in range(count - 1):
        log.append("test.event", details={"i": index})
    log.flush(10)
    return log


def test_an_anchor_line_reads_back_and_the_last_of_each_instance_counts(tmp_path: Path) -> None:
    anchor = Anchor("node-a", 42, "ab" * 32, 1_790_000_000.5, "/var/log/sandboxd/audit.log")
    assert Anchor.from_json(anchor.to_json()) == anchor
    anchors = tmp_path / "anchors.jsonl"
    later = Anchor("node-a", 50, "cd" * 32, 1_790_000_010.0)
    other = Anchor("node-b", 7, "ef" * 32, 1_790_000_005.0)
    anchors.write_text("\n".join(a.to_json() for a in (anchor, other, later)) + "\n")
    assert last_anchors(anchors) == {"node-a": later, "node-b": other}
    anchors.write_text(anchor.to_json() + '\n{"instance": "x"}\n')
    with pytest.raises(ConfigError, match=r"anchors.jsonl, line 2: not an anchor: no seq"):
        last_anchors(anchors)


def test_the_shipper_ships_when_the_tip_moves_and_logs_a_failure_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = log_of(tmp_path / "audit.log", 3)
    target = tmp_path / "out" / "anchors.jsonl"
    reported: list[tuple[bool, int]] = []
    shipper = AnchorShipper(log, AnchorTarget(path=target), instance="node-a", interval_s=3600,
                            on_shipped=lambda ok, seq: reported.append((ok, seq)))
    try:
        with caplog.at_level(logging.ERROR, logger="sandboxd.audit.anchor"):
            assert not shipper.ship_now() and not shipper.ship_now()  # the directory is missing
        assert len([r for r in caplog.records if "cannot anchor" in r.getMessage()]) == 1
        target.parent.mkdir()
        assert shipper.ship_now() and shipper.ship_now()  # the second: nothing moved, nothing shipped
        log.append("test.event")
        log.flush(10)
        assert shipper.close()
    finally:
        log.close()
    shipped = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(a["instance"], a["seq"]) for a in shipped] == [("node-a", 3), ("node-a", 4)]
    assert shipped[-1]["hash"] == json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])["hash"]
    assert reported == [(False, 3), (False, 3), (True, 3), (True, 4)]


def test_a_chain_is_held_to_its_instances_anchor(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = log_of(path, 10)
    seq, hash_ = log.durable_tip()
    log.close()
    lines = path.read_text().splitlines(keepends=True)
    report = verify_files([path], hmac_key=None, anchors={"node-a": Anchor("node-a", seq, hash_, 0.0)})
    assert report.instance == "node-a" and "anchored at seq 10" in report.summary()
    assert verify_files([path], hmac_key=None, anchors={"node-b": Anchor("node-b", 99, hash_, 0.0)}).anchor is None

    path.write_text("".join(lines[:7]))  # three records cut off the end
    with pytest.raises(ChainBroken) as cut:
        verify_files([path], hmac_key=None, anchors={"node-a": Anchor("node-a", 10, hash_, 0.0)})
    assert (cut.value.why, cut.value.seq, cut.value.line_no, cut.value.instance) == (Why.CUT_OFF, 10, 8, "node-a")
    assert "the files end at seq 7" in str(cut.value)
    with pytest.raises(ChainBroken) as differs:
        verify_files([path], hmac_key=None, anchors={"node-a": Anchor("node-a", 5, "00" * 32, 0.0)})
    assert (differs.value.why, differs.value.seq, differs.value.line_no) == (Why.ANCHOR_MISMATCH, 5, 5)

    suffix = tmp_path / "suffix.jsonl"  # an export that starts after the anchored seq cannot be held to it
    suffix.write_text("".join(lines[7:]))
    report = verify_files([suffix], hmac_key=None, anchors={"node-a": Anchor("node-a", 3, "00" * 32, 0.0)})
    assert report.anchor is None  # (no daemon.started in it: the instance is unknown)


def test_directories_hold_chains_and_loose_files_one(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "audit.log").write_text("")
        (tmp_path / name / "audit.log.000000000001").write_text("")
    (tmp_path / "b" / "other.log").write_text("")
    loose = [tmp_path / "x.jsonl", tmp_path / "a" / "audit.log"]
    chains = chains_of([tmp_path / "a", tmp_path / "b", *loose])
    assert chains == [
        (str(tmp_path / "a"), [tmp_path / "a" / "audit.log.000000000001", tmp_path / "a" / "audit.log"]),
        (str(tmp_path / "b" / "audit.log"), [tmp_path / "b" / "audit.log.000000000001", tmp_path / "b" / "audit.log"]),
        (str(tmp_path / "b" / "other.log"), [tmp_path / "b" / "other.log"]),
        (f"{tmp_path / 'x.jsonl'} …", chain_order(loose)),
    ]
