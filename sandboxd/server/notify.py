"""The sd_notify(3) protocol, spoken directly (no libsystemd): one datagram per message to $NOTIFY_SOCKET.

::

    sandboxd                                                   systemd (Type=notify, WatchdogSec=)
      listening, audit durable ── READY=1 STATUS=… ──────────▶ started
      every WATCHDOG_USEC/2 ───── WATCHDOG=1 ────────────────▶ restarts us if none comes for WATCHDOG_USEC
        (only while healthy())
      SIGHUP ──────────────────── RELOADING=1 MONOTONIC_USEC=… ▶ reloading (systemd >= 253)
      new config in (or kept) ─── READY=1 STATUS=… ──────────▶ running
      SIGTERM ─────────────────── STOPPING=1 STATUS=… ───────▶ stopping

Outside systemd (no NOTIFY_SOCKET) every function is a no-op returning False. A failed send is logged and
returns False; it never raises: telling systemd is never a reason to fail a start or a stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("sandboxd.server.notify")


def notify(message: str) -> bool:
    """Send ``message`` (``KEY=value`` lines) to $NOTIFY_SOCKET; True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        target = "\0" + address[1:]
    elif address.startswith("/"):
        target = address
    else:  # vsock: (systemd >= 254, for VMs) is not ours to speak
        log.warning("NOTIFY_SOCKET=%s: only path and abstract (@) sockets are supported", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode(), target)
    except OSError as error:
        log.warning("cannot notify systemd at %s (%r): %s", address, message.split("\n", 1)[0],
                    error.strerror or error)
        return False
    return True


def _status_line(text: str) -> str:
    return "STATUS=" + " ".join(text.splitlines())  # one line: a newline would start another assignment


def _with_status(message: str, text: str) -> str:
    return f"{message}\n{_status_line(text)}" if text else message


def ready(status: str = "") -> bool:
    """Start-up (or a reload) is complete."""
    return notify(_with_status("READY=1", status))


def stopping(status: str = "") -> bool:
    """The drain begins."""
    return notify(_with_status("STOPPING=1", status))


def reloading() -> bool:
    """A reload begins; :func:`ready` ends it. systemd >= 253 wants the CLOCK_MONOTONIC time beside it."""
    monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")


def status(text: str) -> bool:
    """Free text for ``systemctl status``."""
    return notify(_status_line(text))


class Watchdog:
    """Pings ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` from the event loop while ``healthy()`` is True.

    Pinging from the loop means a wedged loop stops the pings too. Once ``healthy()`` returns False (or
    raises), the pings stop for good and the reason is logged once and put in STATUS=: systemd restarts the
    daemon when the interval runs out (Restart=on-failure); nothing here tries to repair anything.
    """

    def __init__(self, interval_usec: int, healthy: Callable[[], bool]) -> None:
        if interval_usec <= 0:
            raise ValueError(f"the watchdog interval must be positive, got {interval_usec} µs")
        self.interval_s = interval_usec / 1_000_000
        self.ping_interval_s = self.interval_s / 2
        self._healthy = healthy
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, healthy: Callable[[], bool], environ: Mapping[str, str] | None = None) -> Watchdog | None:
        """The watchdog systemd asked for (WatchdogSec=), or None when it asked for none or for another pid."""
        env = os.environ if environ is None else environ
        usec_text = env.get("WATCHDOG_USEC", "")
        if not usec_text:
            return None
        pid_text = env.get("WATCHDOG_PID", "")
        if pid_text and pid_text != str(os.getpid()):  # meant for the process that exec'd us, not for us
            return None
        try:
            usec = int(usec_text)
            if usec <= 0:
                raise ValueError
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r: not a positive number of microseconds", usec_text)
            return None
        return cls(usec, healthy)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start pinging (from the running event loop); the first ping goes out at once."""
        if self._task is not None:
            raise RuntimeError("the watchdog is already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sd-watchdog")
        log.info("systemd watchdog: %.1f s, pinging every %.1f s", self.interval_s, self.ping_interval_s)

    def stop(self) -> None:
        """Stop pinging (no await needed). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def _run(self) -> None:
        while True:
            why = self._unhealthy_reason()
            if why is not None:
                log.error("systemd watchdog: %s; no more WATCHDOG=1, systemd restarts the daemon within %.1f s",
                          why, self.interval_s)
                status(f"unhealthy: {why}")
                return
            notify("WATCHDOG=1")
            await asyncio.sleep(self.ping_interval_s)

    def _unhealthy_reason(self) -> str | None:
        name = getattr(self._healthy, "__qualname__", repr(self._healthy))
        try:
            if self._healthy():
                return None
        except Exception as error:  # a check that cannot answer is a failed check
            return f"health check {name} raised {error!r}"
        return f"health check {name} failed"
