"""Egress end to end: sandboxes reach real servers on loopback only through the daemon's proxy, as their
allowlist says — HTTP, HTTPS (a throw-away CA) and SOCKS5, from Python, curl and the shipped ``http_fetch``
— and every connection, allowed or refused, is in the audit with its bytes.

No traffic leaves the machine: the upstreams listen on 127.0.0.1 and their names are pinned with
``[egress] resolve``. ``localhost`` is the one name left to the host's resolver: allowed by name, it
resolves inward and must be refused.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from certs import make_ca  # tests/ is on sys.path
from daemon_harness import Daemon, make_daemon, running, scrape
from upstream import Upstream

from sandboxd.cli.client import Outcome, SandboxClient, pb
from sandboxd.egress.settings import PROXY_PORT
from sandboxd.server.config import SHIPPED_TOOLS_DIR

pytestmark = [pytest.mark.root, pytest.mark.netns]

API, SECURE = "api.example.test", "secure.example.test"
FETCHER_TOKEN = "fetcher-token"
SANDBOX_CA = "/opt/test-ca/ca.pem"


def _fetch_tool(allow: list[str], ca_dir: Path) -> str:
    """The shipped http_fetch with an allowlist, trusting the test CA (a tool override, as the README shows)."""
    shipped = (SHIPPED_TOOLS_DIR / "http_fetch.toml").read_text()
    assert "allow = []" in shipped
    return shipped.replace("allow = []", f"allow = {json.dumps(allow)}") + textwrap.dedent(f"""
        [env]
        set = {{ SSL_CERT_FILE = "{SANDBOX_CA}" }}

        [[binds]]
        source = "{ca_dir}"
        target = "{Path(SANDBOX_CA).parent}"
        """)


# A Python client for raw commands: what it fetches is its argv; it prints one JSON line per attempt.
PY_CLIENT = r"""
import json, socket, ssl, struct, sys, time, urllib.request
def http(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}
    except Exception as e:
        return {"error": repr(e)}
def socks(host, port, path):
    s = socket.create_connection(("127.0.0.1", PROXY), timeout=10)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    name = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + struct.pack(">H", port))
    reply = s.recv(4)
    if reply[1] != 0:
        return {"socks_reply": reply[1]}
    s.recv(6 if reply[3] == 1 else 18)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return {"socks_reply": 0, "answer": data.decode().split("\r\n\r\n", 1)[1]}
for arg in sys.argv[1:]:
    kind, _, target = arg.partition("=")
    if kind == "http":
        out = http(target)
    elif kind == "socks":
        host, port, path = target.split(":", 2)
        out = socks(host, int(port), path)
    print(json.dumps(out), flush=True)
""".replace("PROXY", str(PROXY_PORT))


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Upstream, Upstream, Path]]:
    ca_dir = tmp_path_factory.mktemp("ca")
    ca_dir.chmod(0o755)
    ca = make_ca(ca_dir)
    server = ca.issue_server("secure", hosts=(SECURE,))
    with Upstream() as plain, Upstream(tls=server) as secure:
        yield plain, secure, ca_dir


@pytest.fixture(scope="module")
def daemon(web: tuple[Upstream, Upstream, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    plain, secure, ca_dir = web
    allow = [f"{API}:{plain.port}", f"{SECURE}:{secure.port}", f"localhost:{plain.port}"]
    fetcher_sha = hashlib.sha256(FETCHER_TOKEN.encode()).hexdigest()
    extra = textwrap.dedent(f"""
        [egress]
        resolve = {{ "{API}" = "127.0.0.1", "{SECURE}" = "127.0.0.1" }}
        connections_max = 64
        connections_per_second = 1000

        [principals.local-admin]
        roles = ["admin"]
        [principals.fetcher]
        roles = ["fetcher"]
        token_sha256 = ["{fetcher_sha}"]

        [roles.admin]
        tools = ["*"]
        commands = true
        admin = true
        [roles.fetcher]
        tools = ["http_fetch"]
        network_allow = ["{SECURE}"]
        """)
    made = make_daemon(tmp_path_factory.mktemp("egress"), tools={"http_fetch": _fetch_tool(allow, ca_dir)},
                       extra=extra, max_concurrent_executions=32, metrics_listen="127.0.0.1:0")
    with running(made) as started:
        yield started


def fetch(client: SandboxClient, url: str, **params: Any) -> tuple[Outcome, dict[str, Any]]:
    outcome = client.run_tool("http_fetch", {"url": url, **params})
    answer = json.loads(outcome.stdout) if outcome.status_name == "OK" else {}
    return outcome, answer


def python(client: SandboxClient, *args: str, allow: list[str], **kwargs: Any) -> tuple[Outcome, list[Any]]:
    outcome = client.run_command(["/usr/bin/python3", "-I", "-S", "-c", PY_CLIENT, *args], allow_hosts=allow,
                                 **kwargs)
    return outcome, [json.loads(line) for line in outcome.stdout.splitlines()]


def records(daemon: Daemon, execution_id: str, event: str) -> list[dict[str, Any]]:
    return [r for r in daemon.audit_records() if r["execution_id"] == execution_id and r["event"] == event]


def test_http_fetch_reaches_an_allowed_name_over_http_and_https(daemon: Daemon,
                                                                web: tuple[Upstream, Upstream, Path]) -> None:
    plain, secure, _ = web
    with daemon.client() as client:
        outcome, answer = fetch(client, f"http://{API}:{plain.port}/hello")
        assert outcome.status_name == "OK", (outcome.result, outcome.stderr)
        assert (answer["status"], answer["body"]) == (200, "hello from upstream\n")
        usage = outcome.result.usage
        assert usage.network_connections == 1
        assert usage.network_bytes_received > len("hello from upstream\n") and usage.network_bytes_sent > 0

        outcome, answer = fetch(client, f"https://{SECURE}:{secure.port}/echo", method="POST", body="ping")
        assert outcome.status_name == "OK", (outcome.result, outcome.stderr)
        assert (answer["status"], answer["body"]) == (200, "ping")  # TLS verified against the test CA
    connect = records(daemon, outcome.result.execution_id, "network.connect")
    assert [(r["details"]["host"], r["details"]["port"], r["details"]["outcome"], r["details"]["address"])
            for r in connect] == [(SECURE, secure.port, "allowed", "127.0.0.1")]
    closed = records(daemon, outcome.result.execution_id, "network.closed")
    assert len(closed) == 1 and closed[0]["details"]["bytes_received"] == outcome.result.usage.network_bytes_received
    finished = records(daemon, outcome.result.execution_id, "execution.finished")[0]["details"]
    assert finished["network_connections"] == 1
    # the plain request was forwarded with its hop-by-hop headers stripped and the Host the URL names
    headers = next(r[2] for r in plain.requests if r[1] == "/hello")
    assert headers["Host"] == f"{API}:{plain.port}" and "Proxy-Connection" not in headers


def test_a_name_off_the_list_is_refused_readably_and_audited(daemon: Daemon,
                                                             web: tuple[Upstream, Upstream, Path]) -> None:
    plain, _, _ = web
    with daemon.client() as client:
        outcome, answer = fetch(client, f"http://evil.example.test:{plain.port}/hello")
        assert outcome.status_name == "OK", outcome.stderr
        assert answer["status"] == 403
        assert f"evil.example.test:{plain.port}" in answer["body"] and "not on the allowlist" in answer["body"]
        https, _ = fetch(client, f"https://evil.example.test:{plain.port}/")
        assert https.status_name == "NONZERO_EXIT"  # CONNECT refused: the reason is in the status line
        assert f"403 Forbidden (sandboxd egress: evil.example.test:{plain.port} is not allowed".encode() in https.stderr
    refused = records(daemon, outcome.result.execution_id, "network.connect")
    assert [(r["details"]["outcome"], r["details"]["host"]) for r in refused] == [("denied", "evil.example.test")]
    assert "not on the allowlist" in refused[0]["details"]["reason"]
    assert records(daemon, outcome.result.execution_id, "network.closed") == []


def test_an_allowed_name_resolving_inward_is_refused(daemon: Daemon, web: tuple[Upstream, Upstream, Path]) -> None:
    plain, _, _ = web
    # SOCKS5, since NO_PROXY keeps HTTP clients from proxying "localhost" at all
    allow = [f"localhost:{plain.port}", f"127.0.0.1:{plain.port}"]
    with daemon.client() as client:
        outcome, answers = python(client, f"socks=localhost:{plain.port}:/hello",
                                  f"socks=127.0.0.1:{plain.port}:/hello", allow=allow)
    assert answers == [{"socks_reply": 2}, {"socks_reply": 0, "answer": "hello from upstream\n"}], outcome.stderr
    denied, allowed = records(daemon, outcome.result.execution_id, "network.connect")
    assert denied["details"]["outcome"] == "denied" and "loopback" in denied["details"]["reason"]
    assert allowed["details"]["outcome"] == "allowed"  # an address entry may reach inward: it says so


def test_python_over_http_and_socks5_and_a_direct_connect_that_fails_at_once(
        daemon: Daemon, web: tuple[Upstream, Upstream, Path]) -> None:
    plain, _, _ = web
    script_direct = ("import socket, time\nt = time.monotonic()\ntry:\n"
                     "    socket.create_connection(('192.0.2.1', 80), timeout=10)\nexcept OSError as e:\n"
                     "    print(e.errno, time.monotonic() - t < 1)")
    with daemon.client() as client:
        outcome, answers = python(client, f"http=http://{API}:{plain.port}/hello",
                                  f"socks={API}:{plain.port}:/hello", f"socks=evil.example.test:{plain.port}:/",
                                  allow=[f"{API}:{plain.port}"])
        assert outcome.status_name == "OK", outcome.stderr
        assert answers[0] == {"status": 200, "body": "hello from upstream\n"}
        assert answers[1] == {"socks_reply": 0, "answer": "hello from upstream\n"}
        assert answers[2] == {"socks_reply": 2}  # "connection not allowed by ruleset"
        direct = client.run_command(["/usr/bin/python3", "-c", script_direct], allow_hosts=[f"{API}:{plain.port}"])
        assert direct.stdout == b"101 True\n"  # ENETUNREACH, at once: no route out, the proxy is the way
    protocols = [r["details"]["protocol"] for r in records(daemon, outcome.result.execution_id, "network.connect")]
    assert protocols == ["http", "socks5", "socks5"]


def test_curl_through_the_proxy(daemon: Daemon, web: tuple[Upstream, Upstream, Path]) -> None:
    plain, secure, ca_dir = web
    with daemon.client() as client:
        http = client.run_command(["/usr/bin/curl", "-sS", f"http://{API}:{plain.port}/hello"],
                                  allow_hosts=[f"{API}:{plain.port}"])
        assert (http.status_name, http.stdout) == ("OK", b"hello from upstream\n"), http.stderr
        socks = client.run_command(["/usr/bin/curl", "-sS", "--proxy", f"socks5h://127.0.0.1:{PROXY_PORT}",
                                    f"http://{API}:{plain.port}/hello"], allow_hosts=[f"{API}:{plain.port}"])
        assert (socks.status_name, socks.stdout) == ("OK", b"hello from upstream\n"), socks.stderr
        https = client.run_command(["/bin/sh", "-c", "cat > /tmp/ca.pem && exec /usr/bin/curl -sS --cacert /tmp/ca.pem "
                                    f"https://{SECURE}:{secure.port}/hello"], allow_hosts=[f"{SECURE}:{secure.port}"],
                                   stdin=(ca_dir / "ca.pem").read_bytes())
        assert (https.status_name, https.stdout) == ("OK", b"hello from upstream\n"), https.stderr
        refused = client.run_command(["/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                      f"http://{API}:{plain.port}/hello"], allow_hosts=[f"other.test:{plain.port}"])
        assert refused.stdout == b"403"


def test_the_role_narrows_the_tools_list(daemon: Daemon, web: tuple[Upstream, Upstream, Path]) -> None:
    plain, secure, _ = web
    with SandboxClient(daemon.socket, token=FETCHER_TOKEN) as client:
        narrowed, answer = fetch(client, f"http://{API}:{plain.port}/hello")  # the tool allows it, the role not
        assert answer["status"] == 403, answer
        _, answer = fetch(client, f"https://{SECURE}:{secure.port}/hello")
        assert answer["status"] == 200, answer
    decision = records(daemon, narrowed.result.execution_id, "decision")[0]["details"]
    assert decision["network"]["narrow"] == [SECURE]


def test_the_byte_budget_ends_the_execution_network_limit(daemon: Daemon,
                                                          web: tuple[Upstream, Upstream, Path]) -> None:
    plain, _, _ = web
    with daemon.client() as client:
        outcome, _ = python(client, f"http=http://{API}:{plain.port}/bytes/{4 << 20}", f"http=http://{API}:{plain.port}/hello",
                            allow=[f"{API}:{plain.port}"], limits={"network_max_bytes": 256 << 10})
    assert outcome.status_name == "NETWORK_LIMIT", outcome.result
    assert "network limit of 262144 bytes" in outcome.result.message
    usage = outcome.result.usage
    assert usage.network_bytes_sent + usage.network_bytes_received == 256 << 10
    assert records(daemon, outcome.result.execution_id, "execution.limit_hit")[0]["details"]["limit"] == "network"
    [closed] = records(daemon, outcome.result.execution_id, "network.closed")
    assert closed["details"]["ended_by"] == "byte limit"


def test_many_connections_from_several_executions(daemon: Daemon, web: tuple[Upstream, Upstream, Path]) -> None:
    plain, _, _ = web
    per_execution, executions = 50, 4
    script = textwrap.dedent(f"""
        import concurrent.futures, urllib.request
        def get(_):
            with urllib.request.urlopen("http://{API}:{plain.port}/hello", timeout=30) as r:
                return r.read()
        with concurrent.futures.ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(get, range({per_execution})))
        print(sum(a == b"hello from upstream\\n" for a in answers))
        """)
    outcomes: list[Outcome] = []

    def one() -> None:
        with daemon.client() as client:
            outcomes.append(client.run_command(["/usr/bin/python3", "-c", script], allow_hosts=[f"{API}:{plain.port}"],
                                               limits={"pids_max": 64}))

    threads = [threading.Thread(target=one) for _ in range(executions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [(o.status_name, o.stdout) for o in outcomes] == [("OK", f"{per_execution}\n".encode())] * executions, \
        [o.stderr[-500:] for o in outcomes]
    for outcome in outcomes:
        assert outcome.result.usage.network_connections == per_execution
        assert len(records(daemon, outcome.result.execution_id, "network.closed")) == per_execution


def test_hostile_clients_inside_do_not_disturb_a_concurrent_execution(
        daemon: Daemon, web: tuple[Upstream, Upstream, Path]) -> None:
    plain, _, _ = web
    hostile = textwrap.dedent(f"""
        import socket, sys, time
        held = []
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", {PROXY_PORT}))
            s.sendall(b"GET http://{API}:{plain.port}/hello HTTP/1.1\\r\\nX-Slow: ")  # never finished
            held.append(s)
        g = socket.create_connection(("127.0.0.1", {PROXY_PORT}))
        g.sendall(b"\\x16\\x03\\x01 garbage \\r\\n\\r\\n")
        print("garbage:", g.recv(100).split(b"\\r\\n")[0].decode(), flush=True)
        while True:
            for s in held:
                s.send(b"a")  # a byte now and then: a slowloris
            time.sleep(0.2)
        """)
    with daemon.client() as client:
        events = client.execute(command=["/usr/bin/python3", "-c", hostile], allow_hosts=[f"{API}:{plain.port}"],
                                limits={"wall_time_ms": 30_000})
        first = b""
        for event in events:  # until the slowloris is under way
            if event.WhichOneof("event") == "output":
                first += event.output.data
                if first.endswith(b"\n"):
                    break
        assert first == b"garbage: HTTP/1.1 400 Bad Request\n"
        _, answer = fetch(client, f"http://{API}:{plain.port}/hello")
        assert answer["status"] == 200
        running = [item.execution_id for item in client.list_executions()]
        events.close()  # the hostile one still ran while the other was served
    assert len(running) == 1, running  # served while the slowloris and the garbage were still at it


def test_connections_are_closed_when_the_execution_ends(daemon: Daemon,
                                                        web: tuple[Upstream, Upstream, Path]) -> None:
    plain, _, _ = web
    plain.held.clear()
    plain.held_closed.clear()
    script = textwrap.dedent(f"""
        import socket, time
        s = socket.create_connection(("127.0.0.1", {PROXY_PORT}))
        s.sendall(b"CONNECT {API}:{plain.port} HTTP/1.1\\r\\nHost: {API}:{plain.port}\\r\\n\\r\\n")
        s.recv(1000)
        s.sendall(b"GET /hold HTTP/1.1\\r\\nHost: {API}\\r\\n\\r\\n")
        print(s.recv(1000).split(b"\\r\\n")[0].decode(), flush=True)
        time.sleep(60)
        """)
    with daemon.client() as client:
        outcome = client.run_command(["/usr/bin/python3", "-c", script], allow_hosts=[f"{API}:{plain.port}"],
                                     limits={"wall_time_ms": 3000})
    assert outcome.status_name == "TIMEOUT" and outcome.stdout == b"HTTP/1.1 200 OK\n", outcome.stderr
    assert plain.held.is_set()
    assert plain.held_closed.wait(5), "the upstream connection outlived its execution"
    # closed, and recorded: by the daemon ending it, or — the sandbox being killed first — by the client's side
    # going away (a FIN or a reset, as the kill lands)
    [closed] = records(daemon, outcome.result.execution_id, "network.closed")
    assert closed["details"]["bytes_received"] > 0


def test_metrics_count_connections_and_bytes_per_tool(daemon: Daemon, web: tuple[Upstream, Upstream, Path]) -> None:
    plain, _, _ = web
    with daemon.client() as client:
        before = scrape(daemon)
        fetch(client, f"http://{API}:{plain.port}/hello")
        fetch(client, f"http://nowhere.example.test:{plain.port}/hello")
        after = scrape(daemon)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('sandboxd_network_connections_total{outcome="allowed",tool="http_fetch"}') == 1
    assert delta('sandboxd_network_connections_total{outcome="denied",tool="http_fetch"}') == 1
    assert delta('sandboxd_network_bytes_total{direction="received",tool="http_fetch"}') > len("hello from upstream\n")


def test_list_tools_and_sandboxctl_show_the_allowlist(daemon: Daemon, web: tuple[Upstream, Upstream, Path]) -> None:
    plain, _, _ = web
    with daemon.client() as client:
        tool = next(t for t in client.list_tools() if t.name == "http_fetch")
    assert tool.network == "allowlist" and f"{API}:{plain.port}" in tool.network_allow
    python_tool = daemon.ctl("tools", "--wide").stdout.decode()
    assert f"allow: {API}:{plain.port}" in python_tool
    assert pb.Status.Value("NETWORK_LIMIT") == 11
