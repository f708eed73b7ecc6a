"""The benchmark sweep: one cluster per number of data owners, every aggregation and size on it.

Each cluster is driven by its own `fl.bench.measure` process, because a process can
drive only one TensorFlow cluster; the sweep reads its JSON lines as they come.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from fl.backends import local
from fl.backends.local import StateDir
from fl.errors import FLError
from fl.train import AGGREGATIONS


@dataclass(frozen=True)
class SweepSettings:
    owners: tuple[int, ...]
    sizes: tuple[int, ...]
    aggregations: tuple[str, ...] = AGGREGATIONS
    rounds: int = 5
    warmup: int = 1


QUICK = SweepSettings(owners=(3, 5, 8), sizes=(10_000, 100_000, 1_000_000), rounds=5)
FULL = SweepSettings(owners=(3, 5, 8, 12, 16), sizes=(10_000, 100_000, 1_000_000, 10_000_000), rounds=20, warmup=2)


def run(settings: SweepSettings, verbose: int = 1) -> list[dict]:
    """Every measurement of the sweep, on the local backend, with a Keras progress bar."""
    total = len(settings.owners) * len(settings.sizes) * len(settings.aggregations)
    progress = tf.keras.utils.Progbar(total, verbose=verbose, stateful_metrics=["owners"], unit_name="measurement")
    rows: list[dict] = []
    for owners in settings.owners:
        with tempfile.TemporaryDirectory(prefix=f"fl-bench-{owners}-") as root:
            state = StateDir(Path(root))
            local.up(owners, state)
            try:
                for row in _measure(state.cluster_file, settings):
                    rows.append(row)
                    progress.add(1, [("owners", owners)])
            finally:
                local.down(state)
    return rows


def _measure(cluster_file: Path, settings: SweepSettings):
    command = [
        sys.executable,
        "-m",
        "fl.bench.measure",
        str(cluster_file),
        "--aggregations",
        *settings.aggregations,
        "--sizes",
        *map(str, settings.sizes),
        "--rounds",
        str(settings.rounds),
        "--warmup",
        str(settings.warmup),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            yield json.loads(line)
        errors = process.stderr.read()
    if process.returncode != 0:
        raise FLError(f"benchmark on {cluster_file} failed: {errors.strip().splitlines()[-1] if errors.strip() else 'no output'}")
