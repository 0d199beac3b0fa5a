"""Prometheus metrics (``pip install 'toniq[metrics]'``): what this process did, and what the
store holds at scrape time. ``docs/metrics.md`` lists every metric with example queries.

In a ``toniq worker`` process: ``toniq worker myapp --metrics-port 9100``. In your own
program::

    import toniq.metrics

    toniq.metrics.start_http_server(9100)          # instruments the default app
    # or, into your own registry / web framework:
    metrics = toniq.metrics.instrument(app, registry=my_registry)

Counters (``toniq_jobs_*_total``) and the run-time histogram come from this process's
events (:func:`toniq.subscribe`): each process counts the jobs it enqueued and ran, and
Prometheus sums them over processes. The ``toniq_queue_*`` and ``toniq_nodes_alive``
series are read from the store when scraped, so every process shows the same fleet-wide
values (aggregate them with ``max``, not ``sum``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

try:
    import prometheus_client
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "toniq.metrics needs prometheus-client: pip install 'toniq[metrics]'"
    ) from exc

from toniq.events import EventKind, JobEvent
from toniq.job import JobState

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from toniq.app import Toniq

#: Run-time histogram buckets, in seconds: from quick async jobs to long batch jobs.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_QUEUE_STATES = (JobState.AVAILABLE, JobState.SCHEDULED, JobState.RUNNING, JobState.FAILED)


class StoreCollector(Collector):
    """Reads the store at scrape time: ``toniq_queue_jobs{worker,state}``,
    ``toniq_queue_done_total{worker}``, ``toniq_nodes_alive`` and ``toniq_store_up``
    (0 when the store could not be read; the other store series are then left out)."""

    def __init__(self, app: Toniq, namespace: str = "toniq") -> None:
        self.app = app
        self.namespace = namespace

    def describe(self) -> list[Metric]:
        return []  # unchecked: the series depend on the store's workers

    def collect(self) -> Iterator[Metric]:
        ns = self.namespace
        up = GaugeMetricFamily(f"{ns}_store_up", "1 if the store answered this scrape, else 0")
        try:
            counts = self.app.backend.counts()
            nodes = len(self.app.backend.nodes())
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily(
            f"{ns}_queue_jobs",
            "Jobs in the store per worker and state (available, scheduled, running, failed)",
            labels=["worker", "state"],
        )
        done = CounterMetricFamily(
            f"{ns}_queue_done",
            "Jobs done since the store was created, per worker (all nodes)",
            labels=["worker"],
        )
        from toniq.worker import registry as workers

        # Workers this process knows report zeros rather than vanish once their last job is
        # gone (a vanished series makes alerts on it go quiet instead of reading 0).
        for worker in sorted(counts.keys() | set(workers)):
            per = counts.get(worker, {})
            for state in _QUEUE_STATES:
                jobs.add_metric([worker, state.value], per.get(state.value, 0))
            done.add_metric([worker], per.get("done", 0))
        yield jobs
        yield done
        alive = GaugeMetricFamily(f"{ns}_nodes_alive", "Nodes registered in the store")
        alive.add_metric([], nodes)
        yield alive


class Metrics:
    """toniq's metrics for one app, registered in one Prometheus registry; made by
    :func:`instrument`. :meth:`close` unsubscribes and unregisters them."""

    def __init__(
        self, app: Toniq, registry: CollectorRegistry = REGISTRY, namespace: str = "toniq"
    ) -> None:
        self.app = app
        self.registry = registry

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["worker"], namespace=namespace, registry=registry)

        self.enqueued = counter("jobs_enqueued", "Jobs enqueued by this process, per worker")
        self.done = counter("jobs_done", "Job runs that succeeded on this process, per worker")
        self.retried = counter(
            "jobs_retried", "Job runs that raised and will be retried, on this process"
        )
        self.failed = counter(
            "jobs_failed", "Job runs that raised with no retry left (now failed), on this process"
        )
        self.duration = Histogram(
            "job_duration_seconds",
            "Run time of jobs on this process, per worker (every outcome)",
            ["worker"],
            namespace=namespace,
            registry=registry,
            buckets=BUCKETS,
        )
        self.store = StoreCollector(app, namespace)
        registry.register(self.store)
        self._by_kind = {
            EventKind.DONE: self.done,
            EventKind.RETRYING: self.retried,
            EventKind.FAILED: self.failed,
        }
        from toniq.worker import registry as workers

        for name in list(workers):  # zero series from the start, so rate() sees the first job
            self._touch(name)
        self._unsubscribe = [app.subscribe(self._on_event), app.events.on_enqueue(self._on_enqueue)]

    def _touch(self, worker: str) -> None:
        for metric in (self.enqueued, self.done, self.retried, self.failed, self.duration):
            metric.labels(worker)

    def _on_event(self, event: JobEvent) -> None:
        self._by_kind[event.kind].labels(event.worker).inc()
        self.duration.labels(event.worker).observe(event.duration)

    def _on_enqueue(self, worker: str, persisted: bool) -> None:
        self.enqueued.labels(worker).inc()

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for collector in (
            self.enqueued,
            self.done,
            self.retried,
            self.failed,
            self.duration,
            self.store,
        ):
            try:
                self.registry.unregister(collector)
            except KeyError:  # already unregistered
                pass
        with _lock:
            _instances.pop((id(self.app), id(self.registry)), None)


_lock = threading.Lock()
_instances: dict[tuple[int, int], Metrics] = {}


def instrument(
    app: Toniq | None = None, registry: CollectorRegistry | None = None, namespace: str = "toniq"
) -> Metrics:
    """Count ``app``'s jobs (default: the default app) in ``registry`` (default: the
    ``prometheus_client`` global registry, which also has the process and GC metrics).
    Calling it again for the same app and registry returns the same :class:`Metrics`.
    Example::

        registry = prometheus_client.CollectorRegistry()
        toniq.metrics.instrument(app, registry)
        print(prometheus_client.generate_latest(registry).decode())
    """
    from toniq.app import get_app

    app = app or get_app()
    registry = REGISTRY if registry is None else registry
    with _lock:
        key = (id(app), id(registry))
        metrics = _instances.get(key)
        if metrics is None:
            metrics = _instances[key] = Metrics(app, registry, namespace)
        return metrics


def start_http_server(
    port: int,
    addr: str = "127.0.0.1",
    *,
    app: Toniq | None = None,
    registry: CollectorRegistry | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Instrument ``app`` (see :func:`instrument`) and serve ``/metrics`` on ``addr:port``
    from a daemon thread; ``port=0`` picks a free port (``server.server_port``). Returns
    prometheus_client's ``(server, thread)``; ``server.shutdown()`` stops it. Example::

        server, _ = toniq.metrics.start_http_server(9100)
    """
    registry = REGISTRY if registry is None else registry
    instrument(app, registry)
    server, thread = prometheus_client.start_http_server(port, addr, registry=registry)
    return server, thread


__all__ = ["BUCKETS", "Metrics", "StoreCollector", "instrument", "start_http_server"]
