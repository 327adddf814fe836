"""The one mapping of every error to gRPC: a reason — ours or the engine's — to a status code in one table.

The reason travels to the caller in the trailing metadata (``sandboxd-reason``), beside ``sandboxd-temporary``
(``"true"`` when the same request may succeed later), so callers branch on a word, not on message text. A
refusal that knows when a retry will pass (RATE_LIMITED) adds ``sandboxd-retry-after-s``: seconds, as a
decimal string. A daemon's refusals also name it (``sandboxd-instance``): a client of a fleet then knows which
daemon said no, and retries a temporary refusal on another. The refusals themselves are in
:mod:`sandboxd.base.refusals`.
"""

from __future__ import annotations

import math

import grpc

from sandboxd.base.errors import SandboxError

REASON_METADATA_KEY = "sandboxd-reason"
TEMPORARY_METADATA_KEY = "sandboxd-temporary"
RETRY_AFTER_METADATA_KEY = "sandboxd-retry-after-s"
INSTANCE_METADATA_KEY = "sandboxd-instance"


STATUS_BY_REASON: dict[str, grpc.StatusCode] = {
    # requests
    "UNKNOWN_TOOL": grpc.StatusCode.NOT_FOUND,
    "UNKNOWN_PROFILE": grpc.StatusCode.NOT_FOUND,
    "EXECUTION_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "GRANT_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "INVALID_REQUEST": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_PARAMS": grpc.StatusCode.INVALID_ARGUMENT,
    "INVALID_SPEC": grpc.StatusCode.INVALID_ARGUMENT,
    # a bigger request would not help, so not RESOURCE_EXHAUSTED (which callers may read as "retry later")
    "PAYLOAD_TOO_LARGE": grpc.StatusCode.INVALID_ARGUMENT,
    "TOO_MANY_EXECUTIONS": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "SESSION_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "TOO_MANY_SESSIONS": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "SESSION_FAILED": grpc.StatusCode.FAILED_PRECONDITION,
    "FILE_REFUSED": grpc.StatusCode.INVALID_ARGUMENT,
    "RATE_LIMITED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DRAINING": grpc.StatusCode.UNAVAILABLE,
    # callers (the policy issue raises these)
    "AUTH_FAILED": grpc.StatusCode.UNAUTHENTICATED,
    "PERMISSION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "TOOL_NOT_GRANTED": grpc.StatusCode.PERMISSION_DENIED,
    "GRANT_EXPIRED": grpc.StatusCode.PERMISSION_DENIED,
    "COMMAND_NOT_GRANTED": grpc.StatusCode.PERMISSION_DENIED,
    "LIMIT_ABOVE_CEILING": grpc.StatusCode.PERMISSION_DENIED,
    "PARAMS_NOT_GRANTED": grpc.StatusCode.PERMISSION_DENIED,
    "MFA_REQUIRED": grpc.StatusCode.PERMISSION_DENIED,
    "CLASSIFICATION_DENIED": grpc.StatusCode.PERMISSION_DENIED,
    "RISK_TOO_HIGH": grpc.StatusCode.PERMISSION_DENIED,
    "RISK_UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
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


def trailing_metadata_for(error: SandboxError, *, instance: str = "") -> tuple[tuple[str, str], ...]:
    """``instance``: the daemon that refuses (``""``: not named)."""
    temporary = "true" if error.temporary else "false"
    metadata: tuple[tuple[str, str], ...] = ((REASON_METADATA_KEY, error.reason), (TEMPORARY_METADATA_KEY, temporary))
    if instance:
        metadata += ((INSTANCE_METADATA_KEY, instance),)
    retry_after_s: float | None = getattr(error, "retry_after_s", None)
    if retry_after_s is not None:
        # up to the next millisecond: a caller that waits exactly this long must not be refused again
        metadata += ((RETRY_AFTER_METADATA_KEY, repr(math.ceil(retry_after_s * 1000) / 1000)),)
    return metadata


def reason_from_metadata(metadata: object) -> str:
    """The machine reason in a call's trailing metadata (``""`` when there is none)."""
    return metadata_value(metadata, REASON_METADATA_KEY)


def metadata_value(metadata: object, key: str) -> str:
    """The value of ``key`` in a call's metadata (``""`` when it is not there)."""
    for item in metadata or ():  # type: ignore[attr-defined]
        if item[0] == key:
            return str(item[1])
    return ""
