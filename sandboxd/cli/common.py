"""What the ``sandboxctl`` command modules share: the usage error, the JSON line of a message, the addresses
given."""

from __future__ import annotations

import argparse
import json

from google.protobuf import json_format
from google.protobuf.message import Message


class UsageError(Exception):
    """The command line asks for something impossible; sandboxctl says so and exits 125."""


def to_json_line(message: Message, *, instance: str = "") -> str:
    """``message`` in protobuf's JSON mapping, on one line; ``instance``: first, the daemon it came from."""
    fields = json_format.MessageToDict(message)
    if instance:
        fields = {"instance": instance, **fields}
    return json.dumps(fields, separators=(",", ":"), sort_keys=False)


def addresses_of(args: argparse.Namespace) -> list[str]:
    """Every ``--address``: those before the command, then the command's own (argparse keeps them apart)."""
    return [*(getattr(args, "address", None) or []), *(getattr(args, "sub_address", None) or [])]
