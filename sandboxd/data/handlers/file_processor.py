"""The ``file_processor`` tool: read-only operations on the files of one allowed directory.

The directory is bound read-only into the sandbox; its path is this program's first argument. Params:

- ``operation``: ``list`` | ``count`` | ``grep`` | ``head`` | ``json_query``
- ``path``: relative to the directory (``list`` defaults to ``.``); never absolute, never ``..``
- ``pattern`` and ``ignore_case`` (grep): a Python regular expression; prints ``<line>:<text>`` per match
- ``lines`` (head): how many lines, default 10
- ``query`` (json_query): a path such as ``warehouse.items[0].sku`` or ``items.*.sku``; prints the JSON

``count`` prints ``{"lines": …, "words": …, "bytes": …}``. Errors go to stderr with exit status 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandboxd.data.handlers.handlerlib import fail, print_json, read_params
else:  # in the sandbox the handlers directory is all there is: import the helper beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from handlerlib import fail, print_json, read_params

_QUERY_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def resolve(root: str, relative: str) -> str:
    if relative.startswith("/") or ".." in relative.split("/"):
        fail(f"path {relative!r} must be relative to the allowed directory, without '..'")
    path = os.path.realpath(os.path.join(root, relative))
    if path != root and not path.startswith(root + "/"):
        fail(f"path {relative!r} leads outside the allowed directory")
    return path


def open_text(path: str) -> Any:
    try:
        return open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        fail(f"no such file: {os.path.basename(path)}")
    except IsADirectoryError:
        fail(f"{os.path.basename(path)} is a directory")
    except PermissionError:
        fail(f"{os.path.basename(path)} is not readable")


def do_list(root: str, path: str) -> None:
    try:
        entries = sorted(os.scandir(path), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        fail(f"no such directory: {os.path.relpath(path, root)}")
    for entry in entries:
        kind = "dir" if entry.is_dir(follow_symlinks=False) else "file"
        size = entry.stat(follow_symlinks=False).st_size if kind == "file" else 0
        print_json({"name": entry.name, "type": kind, "size_bytes": size})


def do_count(path: str) -> None:
    lines = words = size = 0
    with open_text(path) as file:
        for line in file:
            lines += line.endswith("\n")
            words += len(line.split())
            size += len(line.encode("utf-8"))
    print_json({"lines": lines, "words": words, "bytes": size})


def do_grep(path: str, pattern: str, ignore_case: bool) -> None:
    try:
        regex = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        fail(f"invalid pattern: {exc}")
    with open_text(path) as file:
        for number, line in enumerate(file, 1):
            if regex.search(line):
                sys.stdout.write(f"{number}:{line if line.endswith(chr(10)) else line + chr(10)}")


def do_head(path: str, count: int) -> None:
    with open_text(path) as file:
        for number, line in enumerate(file):
            if number >= count:
                break
            sys.stdout.write(line)


def query(value: Any, expression: str) -> list[Any]:
    """Follow ``a.b[0].c`` (``*`` fans out over a list or an object's values); return every match."""
    matches = [value]
    position = 0
    while position < len(expression):
        token = _QUERY_TOKEN.match(expression, position)
        if token is None or token.end() == position:
            fail(f"cannot parse query {expression!r} at {expression[position:]!r}")
        position = token.end()
        key, index = token.group(1), token.group(2)
        following: list[Any] = []
        for item in matches:
            if key == "*" and isinstance(item, dict):
                following.extend(item.values())
            elif key == "*":
                following.extend(item if isinstance(item, list) else [])
            elif index is not None:
                if isinstance(item, list) and int(index) < len(item):
                    following.append(item[int(index)])
            elif isinstance(item, dict) and key in item:
                following.append(item[key])
            elif isinstance(item, list) and key.isdigit() and int(key) < len(item):
                following.append(item[int(key)])
        matches = following
    return matches


def do_json_query(path: str, expression: str) -> None:
    with open_text(path) as file:
        try:
            document = json.load(file)
        except json.JSONDecodeError as exc:
            fail(f"not JSON: {exc}")
    matches = query(document, expression)
    if not matches:
        fail(f"nothing at {expression!r}", code=1)
    for match in matches:
        print_json(match)


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: file_processor.py ALLOWED_DIR")
    root = os.path.realpath(sys.argv[1])
    params = read_params()
    operation = params["operation"]
    path = resolve(root, params.get("path", "."))
    if operation == "list":
        do_list(root, path)
    elif operation == "count":
        do_count(path)
    elif operation == "grep":
        do_grep(path, params["pattern"], params.get("ignore_case", False))
    elif operation == "head":
        do_head(path, params.get("lines", 10))
    elif operation == "json_query":
        do_json_query(path, params["query"])
    else:
        fail(f"unknown operation {operation!r}")


if __name__ == "__main__":
    main()
