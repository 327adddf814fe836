"""The ``sandboxd.v1.Sandbox`` service registered on a grpc.aio server, with requests decoded leniently.

The generated ``add_SandboxServicer_to_server`` decodes each request with ``FromString``; a request grpc cannot
decode (invalid UTF-8 in a string field, a truncated message) then fails inside grpc and reaches the caller as
``UNKNOWN: Unexpected DecodeError``. Here a request that does not decode becomes an :class:`Undecodable`,
which the servicer refuses as INVALID_ARGUMENT naming what is wrong — and audits like any refusal. A
client-streaming method receives its messages as they come, each a message or an :class:`Undecodable`, and
refuses an undecodable one itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import DecodeError, Message

from sandboxd.api._proto.sandboxd.v1 import sandbox_pb2 as pb

SERVICE = "sandboxd.v1.Sandbox"


@dataclass(frozen=True)
class Undecodable:
    """A request whose bytes are not a valid ``message_type`` message."""

    rpc: str
    message_type: str
    error: str


class Refuser(Protocol):
    async def refuse_undecodable(self, request: Undecodable, context: grpc.aio.ServicerContext) -> None:
        """Record the refusal and abort the call (never returns normally)."""


def _decoder(rpc: str, message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def decode(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as error:
            return Undecodable(rpc, message_class.DESCRIPTOR.full_name, str(error) or type(error).__name__)

    return decode


def _unary(servicer: Refuser, behaviour: Callable[[Any, Any], Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await servicer.refuse_undecodable(request, context)
        return await behaviour(request, context)

    return handler


def _stream(servicer: Refuser, behaviour: Callable[[Any, Any], AsyncIterator[Any]]) -> Callable[..., Any]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await servicer.refuse_undecodable(request, context)
            return
        async for item in behaviour(request, context):
            yield item

    return handler


def add_sandbox_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Register every method of ``sandboxd.v1.Sandbox`` on ``server``, served by ``servicer``'s methods."""
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["Sandbox"].methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        behaviour = getattr(servicer, method.name)
        options = {"request_deserializer": _decoder(method.name, request_class),
                   "response_serializer": response_class.SerializeToString}
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(behaviour, **options)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(behaviour, **options)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(_stream(servicer, behaviour), **options)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(_unary(servicer, behaviour), **options)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
