"""Prometheus metrics of one service (prometheus_client, one registry per app).

A registry per app (not the global one) lets tests and several apps in one process keep
their counts apart.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ductai.inference.serve.store import Analysis

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]


class ServiceMetrics:
    def __init__(self, service) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ductai_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "ductai_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.analyses = Counter(
            "ductai_analyses_finished",
            "Analyses finished, by final state (done, failed)",
            ["state", "source"],
            registry=r,
        )
        self.file_errors = Counter(
            "ductai_analysis_file_errors",
            "Files that could not be analysed inside finished analyses (errors.json entries)",
            registry=r,
        )
        self.analysis_seconds = Histogram(
            "ductai_analysis_duration_seconds",
            "Time from a worker's start to the analysis' end",
            buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.uploads_rejected = Counter(
            "ductai_uploads_rejected",
            "Uploaded files refused, by HTTP status (413, 415, 422)",
            ["status"],
            registry=r,
        )
        Gauge("ductai_queue_length", "Analyses waiting for a worker", registry=r).set_function(
            lambda: service.queue_length
        )
        Gauge("ductai_workers_busy", "Worker threads running an analysis", registry=r).set_function(
            lambda: service.workers_busy
        )
        Gauge(
            "ductai_ready", "1 when the model is loaded and workers run", registry=r
        ).set_function(lambda: 1.0 if service.ready else 0.0)
        service.add_listener(self.on_finished)

    def on_finished(self, analysis: Analysis) -> None:
        source = analysis.source.split(":", 1)[0]  # dicom:<AE> -> dicom: bounded labels
        self.analyses.labels(state=analysis.state, source=source).inc()
        if analysis.results:
            self.file_errors.inc(int(analysis.results.get("errors", 0) or 0))
            seconds = analysis.results.get("seconds")
            if seconds is not None:
                self.analysis_seconds.observe(float(seconds))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
