"""http_fetch: one HTTP(S) request, answered as JSON.

Params: ``url`` (http or https), ``method`` (GET, POST, HEAD), ``headers`` (an object of strings), ``body`` (a
string, sent as UTF-8), ``timeout_s``, ``max_bytes`` (the most body bytes returned; the rest is cut and
``truncated`` says so). Answer: ``{"url", "status", "reason", "headers": [[name, value], ...], "body",
"body_encoding": "utf-8" | "base64", "truncated"}`` — 4xx and 5xx answers included, as they came.

The sandbox has no route out: urllib goes through the daemon's egress proxy (``HTTP_PROXY``/``HTTPS_PROXY``),
which allows only the tool's allowlist. A refusal is reported as the proxy said it (exit 1, the reason on
stderr); TLS is verified against the host's CA bundle, as anywhere.
"""

from __future__ import annotations

import base64
import os
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandboxd.data.handlers.handlerlib import fail, print_json, read_params
else:  # in the sandbox the handlers directory is all there is: import the helper beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from handlerlib import fail, print_json, read_params

EXIT_FETCH_FAILED = 1


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers like any other: the caller decides whether to follow one (and to where)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _answer(url: str, status: int, reason: str, headers: list[tuple[str, str]], body: bytes,
            truncated: bool) -> dict[str, Any]:
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    return {"url": url, "status": status, "reason": reason, "headers": [list(item) for item in headers],
            "body": text, "body_encoding": encoding, "truncated": truncated}


def _read_bounded(response: Any, max_bytes: int) -> tuple[bytes, bool]:
    body = response.read(max_bytes + 1)
    return body[:max_bytes], len(body) > max_bytes


def main() -> int:
    params = read_params()
    url = params["url"]
    method = params.get("method", "GET")
    data = params["body"].encode() if "body" in params else None
    request = urllib.request.Request(url, data=data, method=method, headers=params.get("headers", {}))
    max_bytes = params.get("max_bytes", 1024 * 1024)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=params.get("timeout_s", 20)) as response:
            body, truncated = _read_bounded(response, max_bytes)
            print_json(_answer(response.url, response.status, response.reason, list(response.headers.items()),
                               body, truncated))
    except urllib.error.HTTPError as error:  # an answer too: 4xx/5xx (or a redirect not followed)
        body, truncated = _read_bounded(error, max_bytes)
        print_json(_answer(url, error.code, str(error.reason), list(error.headers.items()), body, truncated))
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        fail(f"{method} {url}: {reason}", EXIT_FETCH_FAILED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
