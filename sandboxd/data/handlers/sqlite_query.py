"""The ``sqlite_query`` tool: read-only SQL against one SQLite database.

The database file is this program's first argument (its directory is bound read-only). It is opened
three ways read-only: the bind mount is read-only, the URI says ``mode=ro``, and ``PRAGMA query_only``
is on; an authorizer also refuses ATTACH, DETACH and every PRAGMA but a few readers, so a query cannot
reach another file. Params: ``sql`` (one statement), ``params`` (values bound to ``?``), ``max_rows``.
Prints one JSON object: ``{"columns": [...], "rows": [[...]], "row_count": n, "truncated": bool}``;
BLOBs appear as ``{"base64": "..."}``.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import sys
import urllib.parse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandboxd.data.handlers.handlerlib import fail, print_json, read_params
else:  # in the sandbox the handlers directory is all there is: import the helper beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from handlerlib import fail, print_json, read_params

_READ_PRAGMAS = {"table_info", "table_xinfo", "table_list", "index_list", "index_info", "foreign_key_list"}


def authorize(action: int, arg1: str | None, _arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() not in _READ_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def cell(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    return value


def main() -> None:
    if len(sys.argv) != 2:
        fail("usage: sqlite_query.py DATABASE")
    params = read_params()
    uri = "file:" + urllib.parse.quote(sys.argv[1]) + "?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True)
        connection.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        fail(f"cannot open the database: {exc}")
    connection.set_authorizer(authorize)
    max_rows = params.get("max_rows", 1000)
    try:
        cursor = connection.execute(params["sql"], params.get("params", []))
        rows = cursor.fetchmany(max_rows + 1)
    except sqlite3.Warning as exc:  # e.g. "You can only execute one statement at a time."
        fail(str(exc))
    except sqlite3.Error as exc:
        fail(f"{type(exc).__name__}: {exc}")
    columns = [description[0] for description in cursor.description or ()]
    print_json({
        "columns": columns,
        "rows": [[cell(value) for value in row] for row in rows[:max_rows]],
        "row_count": min(len(rows), max_rows),
        "truncated": len(rows) > max_rows,
    })


if __name__ == "__main__":
    main()
