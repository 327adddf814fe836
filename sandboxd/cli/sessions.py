"""Sessions from Python: a sandbox that lives across calls, its ``/work`` reached with files in and out.

::

    with SandboxClient() as client, Session.create(client, tool="python") as session:
        session.put_file("data.csv", b"a,b\\n1,2\\n")
        session.run({"code": "print(open('data.csv').read())"})
        session.get_file("out.json")
    # closed on leaving: its sandbox, /work and every process of it are gone

With a client of a fleet, the session is made on the daemon round_robin picks (or another, if that one
refused), and its id names that daemon: every call of the session goes there (:meth:`SandboxClient.for_session`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sandboxd.cli.client import FILE_CHUNK_BYTES, Outcome, SandboxClient, SandboxdError, limits_message, pb


class Session:
    def __init__(self, client: SandboxClient, message: pb.Session) -> None:
        self.client = client
        self.message = message
        self._daemon: SandboxClient | None = None

    @property
    def daemon(self) -> SandboxClient:
        """The client of the daemon that keeps the session (the client itself, unless it is a fleet's)."""
        if self._daemon is None:
            self._daemon = self.client.for_session(self.session_id)
        return self._daemon

    @property
    def session_id(self) -> str:
        return str(self.message.session_id)

    @classmethod
    def create(cls, client: SandboxClient, *, tool: str | None = None, profile: str = "",
               allow_hosts: Sequence[str] = (), limits: Mapping[str, int] | None = None,
               idle_timeout_ms: int = 0, max_lifetime_ms: int = 0, labels: Mapping[str, str] | None = None,
               request_id: str = "") -> Session:
        """A new session for ``tool`` (``None``: a command session, for operators)."""
        request = pb.CreateSessionRequest(limits=limits_message(limits), idle_timeout_ms=idle_timeout_ms,
                                          max_lifetime_ms=max_lifetime_ms, labels=dict(labels or {}),
                                          request_id=request_id)
        if tool is not None:
            request.tool = tool
        else:
            request.command.profile = profile
            request.command.allow_hosts.extend(allow_hosts)
        return cls(client, client.call("CreateSession", request, timeout_s=None))

    def run(self, params: Mapping[str, Any] | str | None = None, **kwargs: Any) -> Outcome:
        """One call of the session's tool, collected."""
        return self.client.run(tool=self.message.tool, params=params, session_id=self.session_id, **kwargs)

    def run_command(self, argv: Sequence[str], **kwargs: Any) -> Outcome:
        """One raw command in a command session, collected."""
        return self.client.run(command=argv, session_id=self.session_id, **kwargs)

    def put_file(self, path: str, data: bytes, *, mode: int = 0) -> pb.FileInfo:
        """``data`` as ``/work/<path>`` in the session; its path, size and SHA-256 as the daemon wrote them."""

        def inputs() -> Iterator[pb.PutFileInput]:
            yield pb.PutFileInput(header=pb.FileHeader(session_id=self.session_id, path=path, mode=mode))
            for start in range(0, len(data), FILE_CHUNK_BYTES):
                yield pb.PutFileInput(data=data[start:start + FILE_CHUNK_BYTES])

        info: pb.FileInfo = self.daemon.call("PutFile", inputs(), timeout_s=None)
        return info

    def get_file(self, path: str) -> tuple[bytes, pb.FileInfo]:
        """The content of ``/work/<path>`` and its FileInfo (size, SHA-256, mode)."""
        data = bytearray()
        info = pb.FileInfo()
        for chunk in self.daemon.stream("GetFile", pb.GetFileRequest(session_id=self.session_id, path=path)):
            if chunk.WhichOneof("part") == "data":
                data.extend(chunk.data)
            else:
                info = chunk.info
        return bytes(data), info

    def close(self) -> None:
        """End the session (idempotent: one already gone is fine)."""
        try:
            self.daemon.call("CloseSession", pb.CloseSessionRequest(session_id=self.session_id), timeout_s=None)
        except SandboxdError as error:
            if error.reason != "SESSION_NOT_FOUND":
                raise

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def list_sessions(client: SandboxClient) -> list[pb.Session]:
    """The open sessions the caller may see: of every daemon of a fleet."""
    return [session for daemon in client.daemons()
            for session in daemon.call("ListSessions", pb.ListSessionsRequest()).sessions]
