"""The one error a client call raises: what the daemon said (code, reason, temporary, which daemon), or that
it could not be reached."""

from __future__ import annotations

import grpc

from sandboxd.api.status import (
    INSTANCE_METADATA_KEY,
    RETRY_AFTER_METADATA_KEY,
    TEMPORARY_METADATA_KEY,
    metadata_value,
    reason_from_metadata,
)

__all__ = ["NOT_CONNECTED_DETAILS", "SandboxdError"]

NOT_CONNECTED_DETAILS = "failed to connect to all addresses"  # grpc's details when no connection could be made


class SandboxdError(Exception):
    """The daemon refused a call, or could not be reached (``code`` UNAVAILABLE, ``reason`` empty).

    ``temporary``: the daemon said the same request may pass later (or on another daemon) — it refused it
    before it started. ``instance``: the daemon that refused, when it said. ``retry_after_s``: when it
    said how long to wait (RATE_LIMITED).
    """

    def __init__(self, code: grpc.StatusCode, reason: str, message: str, *, temporary: bool = False,
                 instance: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(f"{code.name}{f' ({reason})' if reason else ''}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.temporary = temporary
        self.instance = instance
        self.retry_after_s = retry_after_s

    @property
    def never_sent(self) -> bool:
        """grpc could not connect to any address, so the call left nothing anywhere: no daemon can have
        started it (gRPC's own wording for a pick that found no connection; a daemon's refusal has a reason)."""
        return (self.code == grpc.StatusCode.UNAVAILABLE and not self.reason
                and self.message.startswith(NOT_CONNECTED_DETAILS))

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> SandboxdError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        return cls.from_status(code, details or "", metadata)

    @classmethod
    def from_status(cls, code: grpc.StatusCode, details: str, metadata: object) -> SandboxdError:
        """The error a call's final status says: its code, its details, its trailing metadata (reason …)."""
        retry_after = metadata_value(metadata, RETRY_AFTER_METADATA_KEY)
        try:
            retry_after_s = float(retry_after) if retry_after else None
        except ValueError:
            retry_after_s = None
        return cls(code, reason_from_metadata(metadata), details,
                   temporary=metadata_value(metadata, TEMPORARY_METADATA_KEY) == "true",
                   instance=metadata_value(metadata, INSTANCE_METADATA_KEY), retry_after_s=retry_after_s)
