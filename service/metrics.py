"""Prometheus metrics: one histogram per stage of a search, request latency, and the served index.

Each app has its own registry (several apps in one process, as in the tests, never mix their figures);
``/metrics`` renders it with the process, platform and GC collectors.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

# Seconds: sub-millisecond catalog look-ups up to multi-second cold encodes.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.request_seconds = Histogram(
            "tvr_http_request_duration_seconds",
            "HTTP request latency by route template, method and status code.",
            ["method", "route", "status"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.encode_seconds = Histogram(
            "tvr_encode_seconds", "Text encoder time per batch of queries.", buckets=STAGE_BUCKETS, registry=registry
        )
        self.encode_batch = Histogram(
            "tvr_encode_batch_size",
            "Queries encoded together in one batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.query_cache = Counter(
            "tvr_query_cache_total", "Query embedding cache look-ups.", ["result"], registry=registry
        )
        self.search_seconds = Histogram(
            "tvr_search_seconds",
            "FAISS search time per call (one or several queries).",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.catalog_seconds = Histogram(
            "tvr_catalog_seconds",
            "Catalog look-up time per batch of queries.",
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.index_vectors = Gauge("tvr_index_vectors", "Vectors in the served index.", registry=registry)
        self.index_bytes = Gauge("tvr_index_size_bytes", "Size of the served index file.", registry=registry)
        self.index_version = Gauge("tvr_index_version", "Published version of the served index.", registry=registry)
        self.index_reloads = Counter(
            "tvr_index_reloads_total", "Index swaps by outcome.", ["outcome"], registry=registry
        )
        self.ready = Gauge(
            "tvr_ready", "1 when the encoder, catalog and index are loaded and agree.", registry=registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
