"""The warm pool in the metrics, read from the engine at each scrape (no copy to keep in step)::

    sandboxd_pool_ready              sandboxes standing ready
    sandboxd_pool_building           being built
    sandboxd_pool_hits_total         executions that took a ready sandbox
    sandboxd_pool_misses_total       executions of a pooled kind that found none ready (built fresh)
    sandboxd_pool_built_total        sandboxes built for the pool
    sandboxd_pool_failed_total       builds that failed, and ready sandboxes that died unused
    sandboxd_pool_build_seconds_total   time spent building them (÷ built: the refill latency)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sandboxd.engine.pool import PoolStats


class PoolCollector(Collector):
    def __init__(self, stats: Callable[[], PoolStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield GaugeMetricFamily("sandboxd_pool_ready", "Sandboxes built ahead, standing ready.", value=stats.ready)
        yield GaugeMetricFamily("sandboxd_pool_building", "Sandboxes being built for the pool.",
                                value=stats.building)
        yield CounterMetricFamily("sandboxd_pool_hits", "Executions that took a sandbox of the pool.",
                                  value=stats.hits)
        yield CounterMetricFamily("sandboxd_pool_misses", "Executions of a pooled kind built fresh: none was ready.",
                                  value=stats.misses)
        yield CounterMetricFamily("sandboxd_pool_built", "Sandboxes built for the pool.", value=stats.built)
        yield CounterMetricFamily("sandboxd_pool_failed", "Pool builds that failed, and ready sandboxes that died.",
                                  value=stats.failed)
        yield CounterMetricFamily("sandboxd_pool_build_seconds", "Time spent building the pool's sandboxes.",
                                  value=stats.build_seconds_total)


def watch_pool(registry: CollectorRegistry, stats: Callable[[], PoolStats]) -> None:
    registry.register(PoolCollector(stats))
