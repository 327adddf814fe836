"""The wire: generated gRPC stubs (``_proto``), conversions between the engine's dataclasses and the protobuf
messages (``convert``), and the one mapping of error reasons to gRPC status codes (``status``)."""
