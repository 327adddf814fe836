"""Errors of the API layer (requests, tools, admission), and the one mapping of every error to gRPC.

Each error is a :class:`~sandboxd.errors.SandboxError` with a machine ``reason``; :func:`status_for` maps a
reason — ours or the engine's — to a status code in one table. The reason travels to the caller in the
trailing metadata (``sandboxd-reason``), beside ``sandboxd-temporary`` (``"true"`` when the same request
may succeed later), so callers branch on a word, not on message text.
"""

from __future__ import annotations

import grpc

from sandboxd.errors import SandboxError

REASON_METADATA_KEY = "sandboxd-reason"
TEMPORARY_METADATA_KEY = "sandboxd-temporary"


class UnknownTool(SandboxError):
    reason = "UNKNOWN_TOOL"


class UnknownProfile(SandboxError):
    reason = "UNKNOWN_PROFILE"


class UnknownExecution(SandboxError):
    reason = "EXECUTION_NOT_FOUND"


class InvalidRequest(SandboxError):
    """The request itself is malformed: no target, an empty argv, a limit of zero …"""

    reason = "INVALID_REQUEST"


class InvalidParams(SandboxError):
    """Params are not a JSON object or do not match the tool's schema; ``json_path`` names the first."""

    reason = "INVALID_PARAMS"

    def __init__(self, message: str, *, json_path: str = "$") -> None:
        super().__init__(message)
        self.json_path = json_path


class LimitAboveCeiling(SandboxError):
    """A per-call limit asks for more than the tool (or the daemon, for raw commands) allows."""

    reason = "LIMIT_ABOVE_CEILING"


class PayloadTooLarge(SandboxError):
    reason = "PAYLOAD_TOO_LARGE"


class TooManyExecutions(SandboxError):
    reason = "TOO_MANY_EXECUTIONS"
    temporary = True


class Draining(SandboxError):
    """The daemon is stopping: it finishes what runs and accepts nothing new."""

    reason = "DRAINING"
    temporary = True


STATUS_BY_REASON: dict[str, grpc.StatusCode] = {
    # requests
    "UNKNOWN_TOOL": grpc.StatusCode.NOT_FOUND,
    "UNKNOWN_PROFILE": grpc.StatusCode.NOT_FOUND,
    "EXECUTION_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "INVALID_REQUEST": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_PARAMS": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_SPEC": grpc.StatusCode.INVALID_ARGUMENT,
    "LIMIT_ABOVE_CEILING": grpc.StatusCode.INVALID_ARGUMENT,
    # gRPC itself answers RESOURCE_EXHAUSTED to an oversized message; ours says the same, with a reason
    "PAYLOAD_TOO_LARGE": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "TOO_MANY_EXECUTIONS": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "RATE_LIMITED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DRAINING": grpc.StatusCode.UNAVAILABLE,
    # callers (the policy issue raises these)
    "AUTH_FAILED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    # the daemon's own state
    "CONFIG_INVALID": grpc.StatusCode.FAILED_PRECONDITION,
    "PROFILE_INVALID": grpc.StatusCode.FAILED_PRECONDITION,
    "SPAWNER_FAILED": grpc.StatusCode.UNAVAILABLE,
    "CGROUP_FAILED": grpc.StatusCode.INTERNAL,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}


def status_for(error: SandboxError) -> grpc.StatusCode:
    """The status code of ``error``; a reason not in the table is INTERNAL (UNAVAILABLE if temporary)."""
    code = STATUS_BY_REASON.get(error.reason)
    if code is not None:
        return code
    return grpc.StatusCode.UNAVAILABLE if error.temporary else grpc.StatusCode.INTERNAL


def trailing_metadata_for(error: SandboxError) -> tuple[tuple[str, str], ...]:
    temporary = "true" if error.temporary else "false"
    return ((REASON_METADATA_KEY, error.reason), (TEMPORARY_METADATA_KEY, temporary))


def reason_from_metadata(metadata: object) -> str:
    """The machine reason in a call's trailing metadata (``""`` when there is none)."""
    if not metadata:
        return ""
    for item in metadata:  # type: ignore[attr-defined]
        key, value = item[0], item[1]
        if key == REASON_METADATA_KEY:
            return str(value)
    return ""
