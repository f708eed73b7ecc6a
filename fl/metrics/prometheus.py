"""The Prometheus server of the monitoring stack: its scrape config and, on the local backend, its process.

Targets come from the cluster file, so every player and the driver exporter is
scraped under its player name and role, the same on either backend.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from fl.cluster import DRIVER, Cluster

SCRAPE_INTERVAL = "2s"  # rounds take about half a second: scrape often enough to see them
REPO_PROMETHEUS = Path(__file__).resolve().parents[2] / "build" / "prometheus"


def scrape_config(cluster: Cluster, tls: dict | None = None) -> dict:
    """`tls`: Prometheus's `tls_config` (CA, its own certificate and key) when the targets speak mutual TLS."""
    targets = cluster.metrics.scrape_targets
    players = [
        {"targets": [targets[player.name]], "labels": {"player": player.name, "role": player.role}} for player in cluster.players
    ]
    jobs = [
        {"job_name": "players", "static_configs": players},
        # the driver's metrics carry their own `player` label (expected bytes per player): keep it
        {"job_name": "driver", "honor_labels": True, "static_configs": [{"targets": [targets[DRIVER]]}]},
    ]
    if tls:
        jobs = [{**job, "scheme": "https", "tls_config": tls} for job in jobs]
    return {"global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL}, "scrape_configs": jobs}


def write_scrape_config(cluster: Cluster, path: Path, tls: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(scrape_config(cluster, tls), sort_keys=False))
    return path


def binary(name: str = "prometheus") -> str | None:
    """Debian's Prometheus as `make install` unpacks it into build/, else one on PATH."""
    override = os.environ.get(f"FL_{name.upper()}")
    if override:
        return override
    unpacked = REPO_PROMETHEUS / name
    if unpacked.exists():
        return str(unpacked)
    return shutil.which(name)


def command(config: Path, storage: Path, listen: str, dashboard: Path) -> list[str]:
    executable = binary()
    if executable is None:
        raise FileNotFoundError("no prometheus binary: run `make install` (it unpacks Debian's) or put one on PATH")
    return [executable, *arguments(config, storage, listen, dashboard)]


def arguments(config: Path | str, storage: Path | str, listen: str, dashboard: Path | str) -> list[str]:
    """Prometheus's flags on either backend; it also serves the dashboard page from `dashboard`."""
    return [
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address={listen}",
        f"--web.user-assets={dashboard}",
        "--storage.tsdb.retention.time=7d",
    ]
