"""`fl driver-metrics`: serves the driver's training metrics textfile to Prometheus.

Runs for the life of the cluster, so a training run's final numbers are there
for the next scrape however short the run was.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from fl.cluster import Cluster


class TextfileCollector(Collector):
    def __init__(self, textfile: Path) -> None:
        self.textfile = textfile

    def collect(self) -> Iterator[Metric]:
        present = GaugeMetricFamily("fl_driver_metrics_textfile_present", "1 once a training run has written its metrics")
        present.add_metric([], 1 if self.textfile.exists() else 0)
        yield present
        if self.textfile.exists():
            yield from text_string_to_metric_families(self.textfile.read_text())


def driver_metrics_settings(cluster: Cluster) -> tuple[str, Path]:
    """The driver exporter's address and textfile from the cluster file."""
    metrics = cluster.extra.get("metrics", {})
    return metrics["driver"], Path(metrics["driver_textfile"])


def serve(cluster: Cluster) -> None:
    address, textfile = driver_metrics_settings(cluster)
    host, port = address.rsplit(":", 1)
    registry = CollectorRegistry()
    registry.register(TextfileCollector(textfile))
    start_http_server(int(port), addr="0.0.0.0" if cluster.backend == "docker" else host, registry=registry)
    print(f"driver metrics: serving {textfile} on port {port}", flush=True)
    while True:
        time.sleep(3600)
