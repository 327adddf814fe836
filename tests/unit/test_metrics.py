"""Metrics move as the service reports events; /metrics serves them over real HTTP on loopback only."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from sandboxd.base.errors import ConfigError
from sandboxd.engine.result import Result, Status
from sandboxd.server.metrics import Metrics, MetricsServer, parse_metrics_listen


def _result(status: Status) -> Result:
    return Result("exec-1", status, "")


def _samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) → value, parsed back from the text format as a scraper would."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return _samples(metrics).get((name, frozenset(labels.items())), 0.0)


def test_executions_count_by_tool_and_status_with_a_label_for_raw_commands() -> None:
    metrics = Metrics()
    metrics.execution_finished("grep", _result(Status.OK), seconds=0.2)
    metrics.execution_finished("grep", _result(Status.OK), seconds=0.3)
    metrics.execution_finished("", _result(Status.NONZERO_EXIT), seconds=0.01)
    assert _value(metrics, "sandboxd_executions_total", tool="grep", status="OK") == 2
    assert _value(metrics, "sandboxd_executions_total", tool="(command)", status="NONZERO_EXIT") == 1
    assert _value(metrics, "sandboxd_execution_seconds_count") == 3
    assert _value(metrics, "sandboxd_execution_seconds_sum") == pytest.approx(0.51)
    assert _value(metrics, "sandboxd_execution_seconds_bucket", le="0.25") == 2


def test_oom_kills_and_seccomp_violations_are_counted_from_the_result() -> None:
    metrics = Metrics()
    metrics.execution_finished("hog", _result(Status.MEMORY_LIMIT), seconds=1)
    metrics.execution_finished("bad", _result(Status.SECCOMP_VIOLATION), seconds=1)
    metrics.execution_finished("bad", _result(Status.SECCOMP_VIOLATION), seconds=1)
    metrics.execution_finished("ok", _result(Status.TIMEOUT), seconds=1)
    assert _value(metrics, "sandboxd_oom_kills_total") == 1
    assert _value(metrics, "sandboxd_seccomp_violations_total") == 2


def test_decisions_name_the_refusal_reason_and_ok_when_allowed() -> None:
    metrics = Metrics()
    metrics.decision("allowed", "")
    metrics.decision("denied", "RATE_LIMITED")
    metrics.decision("denied", "RATE_LIMITED")
    assert _value(metrics, "sandboxd_decisions_total", decision="allowed", reason="ok") == 1
    assert _value(metrics, "sandboxd_decisions_total", decision="denied", reason="RATE_LIMITED") == 2


def test_latency_histograms_gauge_output_and_fsync() -> None:
    metrics = Metrics()
    metrics.queue_seconds.observe(0.0005)
    metrics.spawn_seconds.observe(0.004)
    metrics.audit_fsync_seconds.observe(0.00007)
    metrics.active_executions.inc()
    metrics.active_executions.inc()
    metrics.active_executions.dec()
    metrics.output_bytes("stdout", 100)
    metrics.output_bytes("stdout", 28)
    metrics.output_bytes("stderr", 5)
    assert _value(metrics, "sandboxd_queue_seconds_bucket", le="0.001") == 1
    assert _value(metrics, "sandboxd_spawn_seconds_bucket", le="0.0025") == 0
    assert _value(metrics, "sandboxd_spawn_seconds_bucket", le="0.005") == 1
    assert _value(metrics, "sandboxd_audit_fsync_seconds_bucket", le="5e-05") == 0
    assert _value(metrics, "sandboxd_audit_fsync_seconds_bucket", le="0.0001") == 1
    assert _value(metrics, "sandboxd_active_executions") == 1
    assert _value(metrics, "sandboxd_output_bytes_total", stream="stdout") == 128
    assert _value(metrics, "sandboxd_output_bytes_total", stream="stderr") == 5


def test_buckets_span_a_millisecond_to_a_minute() -> None:
    samples = _samples(Metrics())
    bounds = {dict(labels)["le"] for name, labels in samples if name == "sandboxd_execution_seconds_bucket"}
    assert {"0.001", "60.0", "+Inf"} <= bounds
    fsync = {dict(labels)["le"] for name, labels in samples if name == "sandboxd_audit_fsync_seconds_bucket"}
    assert {"5e-05", "1.0", "+Inf"} <= fsync


def test_info_and_start_time() -> None:
    metrics = Metrics()
    metrics.set_info(version="1.2.3", instance="main", cgroup_backend="v2")
    assert _value(metrics, "sandboxd_info", version="1.2.3", instance="main", cgroup_backend="v2") == 1
    assert _value(metrics, "sandboxd_start_time_seconds") > 1.6e9


def test_every_name_is_prefixed_and_the_global_registry_is_untouched() -> None:
    before = {family.name for family in REGISTRY.collect()}
    metrics = Metrics()
    names = {name for name, _ in _samples(metrics)}
    assert names and all(name.startswith("sandboxd_") for name in names)
    assert {family.name for family in REGISTRY.collect()} == before
    Metrics()  # a second daemon object in one process (tests) does not collide


@pytest.mark.parametrize(("value", "expected"), [
    ("", None),
    ("127.0.0.1:9464", "127.0.0.1:9464"),
    ("localhost:9464", "localhost:9464"),
    ("[::1]:9464", "[::1]:9464"),
    ("127.0.0.1:0", "127.0.0.1:0"),
])
def test_parse_metrics_listen_accepts_loopback(value: str, expected: str | None) -> None:
    assert parse_metrics_listen(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("0.0.0.0:9464", "not a loopback address"),
    ("192.0.2.1:9464", "not a loopback address"),
    ("[::]:9464", "not a loopback address"),
    ("9464", "host:port"),
    ("127.0.0.1:", "host:port"),
    ("127.0.0.1:65536", "host:port"),
    ("::1:9464", "brackets"),
    ("metrics.example:9464", "not an IP address"),
    (9464, "host:port"),
])
def test_parse_metrics_listen_refuses_with_a_reason(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_metrics_listen(value)


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_scrape_over_http_then_stop_frees_the_port() -> None:
    metrics = Metrics()
    metrics.execution_finished("grep", _result(Status.OK), seconds=0.1)
    metrics.output_bytes("stdout", 42)
    server = MetricsServer(metrics)
    host, port = server.start("127.0.0.1:0")
    try:
        assert host == "127.0.0.1" and port > 0
        status, content_type, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain") and "version=0.0.4" in content_type
        text = body.decode()
        assert 'sandboxd_executions_total{status="OK",tool="grep"} 1.0' in text
        assert 'sandboxd_output_bytes_total{stream="stdout"} 42.0' in text
        metrics.execution_finished("grep", _result(Status.OK), seconds=0.1)  # served live, not a snapshot
        assert 'sandboxd_executions_total{status="OK",tool="grep"} 2.0' in _get(
            f"http://127.0.0.1:{port}/metrics")[2].decode()
        for path in ("/", "/metrics/", "/favicon.ico", "/metricsx"):
            assert _get(f"http://127.0.0.1:{port}{path}")[0] == 404
    finally:
        server.stop()
    with socket.socket() as probe:  # nothing listens any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    server.stop()  # idempotent
    again = MetricsServer(Metrics())  # and a restarted daemon gets the same port back (TIME_WAIT or not)
    assert again.start(f"127.0.0.1:{port}") == ("127.0.0.1", port)
    again.stop()


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    server = MetricsServer(Metrics())
    try:
        host, port = server.start("[::1]:0")
    except ConfigError as error:  # a host with IPv6 disabled (sysctl) cannot bind ::1
        pytest.skip(f"cannot bind ::1 here: {error.message}")
    try:
        assert host == "::1"
        assert _get(f"http://[::1]:{port}/metrics")[0] == 200
    finally:
        server.stop()


def test_non_loopback_is_refused_unless_allowed() -> None:
    server = MetricsServer(Metrics())
    with pytest.raises(ConfigError, match="not a loopback address"):
        server.start("0.0.0.0:0")
    host, port = server.start("0.0.0.0:0", allow_remote=True)
    try:
        assert host == "0.0.0.0" and port > 0
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 200
    finally:
        server.stop()


def test_a_taken_port_is_a_config_error_naming_the_key() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"daemon.metrics_listen: cannot listen on 127.0.0.1:{port}"):
            MetricsServer(Metrics()).start(f"127.0.0.1:{port}")


def test_post_is_refused() -> None:
    server = MetricsServer(Metrics())
    _, port = server.start("127.0.0.1:0")
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=5)
        assert error.value.code == 405
    finally:
        server.stop()
