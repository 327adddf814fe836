"""A uid and gid of its own for every running execution, from a range no host account uses.

Per-user kernel quotas — inotify instances, POSIX message queues, ``RLIMIT_NPROC``, keys — are counted per
uid, so executions that share a uid share them: one could starve another. As isolate's boxes and systemd's
``DynamicUser`` do, each execution gets a uid (and a gid of the same number) of its own while it runs.

The range's first id is not handed out: it is the group every sandbox has as a supplementary group, the one
an operator gives writable binds to (``chgrp`` + ``g+rws``), so that what one execution writes there the next —
another uid — may change. An id goes back to the pool only once its execution's cgroup is removed, i.e. once
no process of it lives; a leaf that cannot be removed keeps its id out of the pool for the daemon's life.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandboxd.base.errors import ConfigError, SandboxError

MAX_ID = 2**32 - 2  # (uid_t) -1 is "no change"


@dataclass(frozen=True)
class IdRange:
    first: int  # the sandboxes' shared group; never a uid
    count: int

    def __post_init__(self) -> None:
        if self.first < 1 or self.count < 2 or self.first + self.count - 1 > MAX_ID:
            raise ConfigError(f"sandbox id range {self.first}+{self.count}: expected 1 <= first, 2 <= count, "
                              f"last <= {MAX_ID}")

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    @property
    def shared_gid(self) -> int:
        return self.first

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.first <= value <= self.last

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    @classmethod
    def parse(cls, text: str) -> IdRange:
        """``"FIRST-LAST"``, inclusive."""
        first, sep, last = text.partition("-")
        if not sep or not first.strip().isdigit() or not last.strip().isdigit():
            raise ConfigError(f"expected an id range FIRST-LAST, got {text!r}")
        return cls(int(first), int(last) - int(first) + 1)


DEFAULT_SANDBOX_IDS = IdRange(2_000_000_000, 65_536)


class IdsExhausted(SandboxError):
    reason = "SANDBOX_IDS_EXHAUSTED"
    temporary = True


class IdPool:
    """Hands out the ids of a range round-robin, so a released id is the last to be used again."""

    def __init__(self, ids: IdRange) -> None:
        self.range = ids
        self._next = ids.first + 1
        self._in_use: set[int] = set()

    def allocate(self) -> int:
        usable = self.range.count - 1
        if len(self._in_use) >= usable:
            raise IdsExhausted(f"all {usable} sandbox ids of {self.range} are in use")
        while True:
            candidate = self._next
            self._next = candidate + 1 if candidate < self.range.last else self.range.first + 1
            if candidate not in self._in_use:
                self._in_use.add(candidate)
                return candidate

    def release(self, value: int) -> None:
        self._in_use.discard(value)

    @property
    def in_use(self) -> int:
        return len(self._in_use)
