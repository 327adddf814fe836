"""A loopback risk assessor for tests: ``http.server`` in a thread, speaking either the plain assessor protocol
(POST the context, answer the assessment) or OpenAI's chat-completions format (``POST /v1/chat/completions``,
the context in the user message, the assessment as the message content). Nothing leaves 127.0.0.1.

What it answers depends on words in the request's context (its params or argv)::

    "danger"    risk_score 90, threats ["data exfiltration"]      anything else   risk_score 10
    "error500"  HTTP 500                                          "garbage"       a body that is not JSON
    "notjson"   (chat) a message content that is not JSON         "fenced"        (chat) the JSON in a code fence
    "badscore"  risk_score 150                                    "hold"          waits until release() (or 30 s)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOLD_MAX_S = 30.0


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    context: dict[str, Any]


@dataclass
class AssessorServer:
    chat: bool
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)  # set: a "hold" request has arrived
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self) -> None:
        self.released.set()

    def contexts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [item.context for item in self.seen]

    def answer(self, context: dict[str, Any]) -> tuple[int, str]:
        """(status, body or message content) for one context."""
        text = json.dumps(context)
        if "hold" in text:
            self.held.set()
            self.released.wait(HOLD_MAX_S)
        if "error500" in text:
            return 500, "internal error"
        if "garbage" in text:
            return 200, "<html>definitely not json</html>"
        if "notjson" in text:
            return 200, "I would rate this request as fairly low risk."
        if "badscore" in text:
            return 200, json.dumps({"risk_score": 150, "threats": [], "reason": "off the scale"})
        if "danger" in text:
            assessment = {"risk_score": 90, "threats": ["data exfiltration"], "reason": "it reads the secrets"}
        else:
            assessment = {"risk_score": 10, "threats": [], "reason": "an ordinary request"}
        if "fenced" in text:
            return 200, "```json\n" + json.dumps(assessment) + "\n```"
        return 200, json.dumps(assessment)


def _handler(server: AssessorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            if server.chat:
                if self.path != "/v1/chat/completions":
                    self._send(404, "no such endpoint")
                    return
                context = json.loads(body["messages"][-1]["content"])
            else:
                context = body
            with server.lock:
                server.seen.append(Seen(self.path, dict(self.headers.items()), body, context))
            status, text = server.answer(context)
            if server.chat and status == 200 and "garbage" not in json.dumps(context):
                text = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "model": body.get("model"),
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": text}}]})
            self._send(status, text)

        def _send(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def assessor_server(*, chat: bool = False) -> Iterator[AssessorServer]:
    """A server on 127.0.0.1 (a free port) until the block ends; ``url`` is what [policy.risk] url names."""
    state = AssessorServer(chat=chat)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    state.url = f"http://127.0.0.1:{port}/v1" if chat else f"http://127.0.0.1:{port}/assess"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release()
        httpd.shutdown()
        httpd.server_close()
        thread.join()
