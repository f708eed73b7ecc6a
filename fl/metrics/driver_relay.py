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
from fl.errors import FLError


class TextfileCollector(Collector):
    def __init__(self, textfile: Path) -> None:
        self.textfile = textfile

    def collect(self) -> Iterator[Metric]:
        present = GaugeMetricFamily("fl_driver_metrics_textfile_present", "1 once a training run has written its metrics")
        present.add_metric([], 1 if self.textfile.exists() else 0)
        yield present
        if self.textfile.exists():
            yield from text_string_to_metric_families(self.textfile.read_text())


def serve(cluster: Cluster) -> None:
    if cluster.metrics is None:
        raise FLError("the cluster file has no 'metrics' section: regenerate it with `fl up`")
    textfile = Path(cluster.metrics.driver_textfile)
    port = cluster.metrics.driver.rsplit(":", 1)[1]
    registry = CollectorRegistry()
    registry.register(TextfileCollector(textfile))
    start_http_server(int(port), addr=cluster.metrics.listen_host, registry=registry)
    print(f"driver metrics: serving {textfile} on port {port}", flush=True)
    while True:
        time.sleep(3600)
