"""One error hierarchy for sandboxd, each error with a machine ``reason``.

The gRPC layer maps ``reason`` to a status code in exactly one place; lower layers only raise.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of every error sandboxd raises on purpose.

    ``reason`` is a stable machine-readable word (``PROFILE_INVALID``, ``SETUP_FAILED`` …);
    ``temporary`` says whether retrying the same request later may succeed.
    """

    reason = "INTERNAL"
    temporary = False

    def __init__(self, message: str, *, reason: str | None = None, temporary: bool | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason
        if temporary is not None:
            self.temporary = temporary

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(SandboxError):
    """A configuration file, key or value is wrong. The message names the file and key."""

    reason = "CONFIG_INVALID"


class ProfileError(SandboxError):
    """A seccomp profile cannot be loaded or compiled. The message names the file and the rule."""

    reason = "PROFILE_INVALID"


class CgroupError(SandboxError):
    """A cgroup could not be created, limited, read or removed. The message names the file."""

    reason = "CGROUP_FAILED"


class SpawnerError(SandboxError):
    """The spawner process is gone or answered something it should not have."""

    reason = "SPAWNER_FAILED"
    temporary = True


class InvalidSpec(SandboxError):
    """An execution spec is malformed (empty argv, relative bind target, …)."""

    reason = "INVALID_SPEC"
