"""Errors of the API layer (requests, tools, admission), and the one mapping of every error to gRPC.

Each error is a :class:`~sandboxd.errors.SandboxError` with a machine ``reason``; :func:`status_for` maps a
reason — ours or the engine's — to a status code in one table. The reason travels to the caller in the
trailing metadata (``sandboxd-reason``), beside ``sandboxd-temporary`` (``"true"`` when the same request
may succeed later), so callers branch on a word, not on message text. A refusal that knows when a retry
will pass (RATE_LIMITED) adds ``sandboxd-retry-after-s``: seconds, as a decimal string.

The policy's refusals (:class:`PolicyDenied` and its subclasses) carry the ``role`` that matched, ``""``
when none did, for the audit record of the decision.
"""

from __future__ import annotations

import math

import grpc

from sandboxd.errors import SandboxError

REASON_METADATA_KEY = "sandboxd-reason"
TEMPORARY_METADATA_KEY = "sandboxd-temporary"
RETRY_AFTER_METADATA_KEY = "sandboxd-retry-after-s"


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


class AuthFailed(SandboxError):
    """The caller has no identity we accept. The message says what was wrong, never the credential."""

    reason = "AUTH_FAILED"


class PolicyDenied(SandboxError):
    """A refusal by the policy; ``role`` is the caller's role that matched the request (``""``: none)."""

    reason = "PERMISSION_DENIED"

    def __init__(self, message: str, *, role: str = "") -> None:
        super().__init__(message)
        self.role = role


class ToolNotGranted(PolicyDenied):
    reason = "TOOL_NOT_GRANTED"


class GrantExpired(PolicyDenied):
    """The only grants of the tool the caller's roles hold have expired."""

    reason = "GRANT_EXPIRED"


class CommandNotGranted(PolicyDenied):
    """A raw command, and none of the caller's roles has ``commands = true``."""

    reason = "COMMAND_NOT_GRANTED"


class LimitAboveCeiling(PolicyDenied):
    """A per-call limit asks for more than the tool, the role (or the daemon, for raw commands) allows."""

    reason = "LIMIT_ABOVE_CEILING"


class PayloadTooLarge(PolicyDenied):
    """The request is larger than the role's ``max_payload`` (or the daemon's ``max_request_bytes``)."""

    reason = "PAYLOAD_TOO_LARGE"


class RateLimited(PolicyDenied):
    """The role's rate for this principal is used up; ``retry_after_s`` says when the next request passes."""

    reason = "RATE_LIMITED"
    temporary = True

    def __init__(self, message: str, *, retry_after_s: float, role: str = "") -> None:
        super().__init__(message, role=role)
        self.retry_after_s = retry_after_s


class AdminOnly(PolicyDenied):
    """What only a role with ``admin = true`` may do: the audit stream, another principal's executions."""

    reason = "ADMIN_ONLY"


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
    # a bigger request would not help, so not RESOURCE_EXHAUSTED (which callers may read as "retry later")
    "PAYLOAD_TOO_LARGE": grpc.StatusCode.INVALID_ARGUMENT,
    "TOO_MANY_EXECUTIONS": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "RATE_LIMITED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DRAINING": grpc.StatusCode.UNAVAILABLE,
    # callers (the policy issue raises these)
    "AUTH_FAILED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "TOOL_NOT_GRANTED": grpc.StatusCode.PERMISSION_DENIED,
    "GRANT_EXPIRED": grpc.StatusCode.PERMISSION_DENIED,
    "COMMAND_NOT_GRANTED": grpc.StatusCode.PERMISSION_DENIED,
    "LIMIT_ABOVE_CEILING": grpc.StatusCode.PERMISSION_DENIED,
    "ADMIN_ONLY": grpc.StatusCode.PERMISSION_DENIED,
    "SUBSCRIBER_TOO_SLOW": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "AUDIT_UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
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
    metadata: tuple[tuple[str, str], ...] = ((REASON_METADATA_KEY, error.reason), (TEMPORARY_METADATA_KEY, temporary))
    retry_after_s: float | None = getattr(error, "retry_after_s", None)
    if retry_after_s is not None:
        # up to the next millisecond: a caller that waits exactly this long must not be refused again
        metadata += ((RETRY_AFTER_METADATA_KEY, repr(math.ceil(retry_after_s * 1000) / 1000)),)
    return metadata


def reason_from_metadata(metadata: object) -> str:
    """The machine reason in a call's trailing metadata (``""`` when there is none)."""
    if not metadata:
        return ""
    for item in metadata:  # type: ignore[attr-defined]
        key, value = item[0], item[1]
        if key == REASON_METADATA_KEY:
            return str(value)
    return ""
