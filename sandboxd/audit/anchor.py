"""Anchoring a daemon's audit chain outside itself, so that records cut off its end are detected.

The hash chain proves the records in the files are the ones written, in order, with nothing dropped between
them — but whoever can write the files can also cut records off the end, and what is left is a shorter
chain that verifies. An *anchor* closes that gap: at an interval (``[audit] anchor_interval``) the daemon
ships the seq and hash of its last durable record to a place it does not keep itself (``[audit] anchor``):

- a file path: one JSON line appended (and fsynced) per shipment — on a volume the daemon's host does not
  own in practice (a mount from elsewhere), or collected from there;
- an ``http://`` / ``https://`` URL: the same JSON object POSTed; any 2xx is taken.

::

    {"instance":"node-a","seq":81234,"hash":"5f0e…","time":"2026-11-21T08:00:10.123456Z","log":"/var/log/sandboxd/audit.log"}

It ships only when the tip moved, and once more when the daemon stops (after its ``daemon.stopped`` record).
``sandboxctl audit verify --anchors FILE`` then checks each chain against its instance's last anchor: the
anchored seq must be in the files with the anchored hash — a chain that ends before it was cut, one whose
record there differs was rewritten. Since the chain links every record to the one before, the last anchor
vouches for everything up to it; what was written after the last shipment (at most one interval) is not
covered. A shipment that fails is logged and tried again at the next interval; it never stops the daemon.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sandboxd.audit.record import format_time
from sandboxd.base.errors import ConfigError

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 5.0
_FILE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


@dataclass(frozen=True)
class AnchorTarget:
    """Where anchors go: a file (``path``) or a URL (``url``), exactly one."""

    path: Path | None = None
    url: str | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else str(self.url)


def parse_anchor_target(value: object) -> AnchorTarget:
    """``[audit] anchor``: an absolute file path, or an http(s) URL. ValueError otherwise."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an absolute path or an http(s):// URL, got {value!r}")
    if value.startswith(("http://", "https://")):
        return AnchorTarget(url=value)
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path or an http(s):// URL, got {value!r}")
    return AnchorTarget(path=path)


@dataclass(frozen=True)
class Anchor:
    """One shipment: the chain of ``instance`` had ``seq`` with ``hash`` on disk at ``unix_time_s``."""

    instance: str
    seq: int
    hash: str
    unix_time_s: float
    log: str = ""

    def to_json(self) -> str:
        return json.dumps({"instance": self.instance, "seq": self.seq, "hash": self.hash,
                           "time": format_time(self.unix_time_s), "log": self.log}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Anchor:
        """ValueError naming what is wrong."""
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        instance, seq, hash_, when = (fields.get(key) for key in ("instance", "seq", "hash", "time"))
        if not isinstance(instance, str) or not instance:
            raise ValueError("no instance")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("no seq")
        if not isinstance(hash_, str) or len(hash_) != 64:
            raise ValueError("no hash")
        if not isinstance(when, str):
            raise ValueError("no time")
        try:
            unix_time_s = datetime.fromisoformat(when).timestamp()
        except ValueError:
            raise ValueError(f"time {when!r} is not RFC 3339") from None
        return cls(instance, seq, hash_, unix_time_s, str(fields.get("log", "")))

    @property
    def time_text(self) -> str:
        return format_time(self.unix_time_s)


def last_anchors(path: Path) -> dict[str, Anchor]:
    """The last anchor of each instance in an anchor file (file order is shipping order). ConfigError
    naming the file and line of one that is not an anchor."""
    found: dict[str, Anchor] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the anchors: {exc.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            anchor = Anchor.from_json(line)
        except ValueError as exc:
            raise ConfigError(f"{path}, line {number}: not an anchor: {exc}") from None
        found[anchor.instance] = anchor
    return found


def ship(anchor: Anchor, target: AnchorTarget) -> None:
    """Append ``anchor`` to the file, or POST it to the URL. OSError (urllib's errors included) on failure."""
    line = anchor.to_json() + "\n"
    if target.path is not None:
        fd = os.open(target.path, _FILE_FLAGS, 0o600)
        try:
            data = line.encode()
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    request = urllib.request.Request(str(target.url), data=line.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        if not 200 <= response.status < 300:
            raise OSError(f"{target.url} answered HTTP {response.status}")


class DurableTip(Protocol):
    def durable_tip(self) -> tuple[int, str]: ...

    @property
    def path(self) -> Path: ...


class AnchorShipper:
    """Ships ``audit``'s durable tip to ``target`` every ``interval_s`` when it moved (a thread of its own),
    and once more on :meth:`close`. ``on_shipped(ok, seq)`` reports each attempt (metrics)."""

    def __init__(self, audit: DurableTip, target: AnchorTarget, *, instance: str, interval_s: float,
                 on_shipped: Callable[[bool, int], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._audit = audit
        self._target = target
        self._instance = instance
        self._interval_s = interval_s
        self._on_shipped = on_shipped
        self._clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one shipment at a time: the thread's and close()'s
        self._shipped_seq: int | None = None
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="audit-anchor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def ship_now(self) -> bool:
        """Ship the tip if it moved since the last shipment; whether it is shipped now."""
        with self._lock:
            seq, hash_ = self._audit.durable_tip()
            if seq == self._shipped_seq:
                return True
            anchor = Anchor(self._instance, seq, hash_, self._clock(), str(self._audit.path))
            try:
                ship(anchor, self._target)
            except (OSError, urllib.error.URLError) as exc:
                if not self._failing:  # once per streak of failures, not every interval
                    log.error("cannot anchor the audit chain at %s (tried again every %g s): %s", self._target,
                              self._interval_s, exc)
                self._failing = True
                self._report(False, seq)
                return False
            if self._failing:
                log.info("the audit chain is anchored at %s again (seq %d)", self._target, seq)
            self._failing = False
            self._shipped_seq = seq
            self._report(True, seq)
            return True

    def _report(self, ok: bool, seq: int) -> None:
        if self._on_shipped is not None:
            try:
                self._on_shipped(ok, seq)
            except Exception:
                log.exception("audit anchor callback failed")

    def _run(self) -> None:
        self.ship_now()
        while not self._stop.wait(self._interval_s):
            self.ship_now()

    def close(self) -> bool:
        """Stop the thread, then ship the last tip (the daemon's stop is on disk by now); whether it went."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.ship_now()
