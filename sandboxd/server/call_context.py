"""A call to the servicer that did not come through gRPC: :class:`CallContext` is the part of
``grpc.aio.ServicerContext`` that :class:`~sandboxd.server.service.SandboxService` uses, and nothing more;
``context.abort`` raises :class:`CallAborted` with the status, its message and the trailing metadata. The MCP
listener (``mcp_source``) and the framed socket (``framed_socket``) call the servicer through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from sandboxd.api.status import TEMPORARY_METADATA_KEY, reason_from_metadata

__all__ = ["CallAborted", "CallContext", "Metadata"]

Metadata = tuple[tuple[str, str], ...]


class CallAborted(Exception):
    """What ``context.abort`` ends a call with: the status, its message and the trailing metadata (reason …)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata

    @property
    def reason(self) -> str:
        """The machine reason (AUTH_FAILED, RATE_LIMITED …), or the status code's name when none was sent."""
        return reason_from_metadata(self.trailing_metadata) or self.code.name

    @property
    def temporary(self) -> bool:
        return any(key == TEMPORARY_METADATA_KEY and value == "true" for key, value in self.trailing_metadata)

    def metadata_value(self, key: str) -> str | None:
        return next((value for name, value in self.trailing_metadata if name == key), None)


class CallContext:
    """A ``grpc.aio.ServicerContext`` for a call that never crossed gRPC: its credentials are ``authorization``
    values, its peer spelled as gRPC spells one — an MCP request's TCP address (``ipv4:…`` / ``ipv6:…``, never
    ``unix:``: such a caller is not the socket's principal, and failed logins count per address), or
    ``unix:`` for a caller on the framed socket, which passed the same mode and group as the gRPC socket's."""

    def __init__(self, *, authorization: Sequence[str], peer: str) -> None:
        self._metadata: Metadata = tuple(("authorization", value) for value in authorization)
        self._peer = peer

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> dict[str, list[bytes]]:
        return {}  # no client certificate reaches the servicer this way: a bearer token identifies

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise CallAborted(code, details, tuple((str(key), str(value)) for key, value in trailing_metadata or ()))
