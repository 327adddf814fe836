"""What the ``sandboxctl`` command modules share: the usage error and the JSON line of a message."""

from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf.message import Message


class UsageError(Exception):
    """The command line asks for something impossible; sandboxctl says so and exits 125."""


def to_json_line(message: Message) -> str:
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":"), sort_keys=False)
