"""The privacy benchmark: accuracy against epsilon on digits, distributed DP next to central DP and no DP,
and what distributed DP adds to a round.

Distributed and central DP clip the same way at the same noise multiplier; they differ in
who adds the noise (each owner before sharing, or the model owner once to the un-noised
sum), so the gap between them is what it costs never to reveal the un-noised sum. Each
setting trains `repeats` times, since a noised run's accuracy varies from run to run. The
cluster is driven by this module's own process (`python -m fl.bench.privacy`), one JSON
line per measurement, because a process can drive only one TensorFlow cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import tensorflow as tf

from fl import backends
from fl.backends import UpSettings
from fl.errors import FLError


@dataclass(frozen=True)
class PrivacyBenchSettings:
    owners: int = 5
    noise_multipliers: tuple[float, ...] = (0.2, 0.5, 1.0)
    aggregation: str = "additive"
    epochs: int = 10
    repeats: int = 5
    clip_norm: float = 1.0
    delta: float = 1e-5
    cost_size: int = 1_000_000  # the round cost of DP is measured at this many parameters
    cost_rounds: int = 5

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise FLError(f"--repeats {self.repeats}: train each setting at least once")
        refused = [f"{z:g}" for z in self.noise_multipliers if not z > 0]
        if refused:
            raise FLError(f"--noise-multipliers {' '.join(refused)}: each the noise's scale over the clip, > 0, e.g. 1")

    def runs(self) -> list[tuple[str, float | None]]:
        """(privacy, noise multiplier) of every accuracy setting, no DP first."""
        return [("none", None)] + [(mode, z) for z in self.noise_multipliers for mode in ("distributed", "central")]


def run(settings: PrivacyBenchSettings, verbose: int = 1) -> list[dict]:
    """Every measurement, on a local cluster of its own, with a Keras progress bar."""
    total = len(settings.runs()) * settings.repeats + 2  # and the round cost with and without DP
    progress = tf.keras.utils.Progbar(total, verbose=verbose, unit_name="measurement")
    rows = []
    with tempfile.TemporaryDirectory(prefix="fl-bench-privacy-") as state_dir:
        backend = backends.named("local", Path(state_dir))
        backend.check(UpSettings(settings.owners))
        try:
            backend.up(UpSettings(settings.owners))
            command = [sys.executable, "-m", "fl.bench.privacy", backend.driver_cluster_file, json.dumps(asdict(settings))]
            with tempfile.TemporaryFile("w+") as errors:  # a file: what training prints must never fill a pipe
                with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True) as process:
                    for line in process.stdout:
                        rows.append(json.loads(line))
                        progress.add(1)
                if process.returncode != 0:
                    errors.seek(0)
                    last = errors.read().strip().splitlines()
                    raise FLError(f"privacy benchmark failed: {last[-1] if last else 'no output'}")
        finally:
            backend.down(volumes=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """One row per setting: accuracy's mean and spread over the repeats, the epsilon spent."""
    settings: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["kind"] == "accuracy":
            settings.setdefault((row["privacy"], row["noise_multiplier"]), []).append(row)
    summary = []
    for (privacy, noise_multiplier), runs in settings.items():
        accuracies = [run["test_accuracy"] for run in runs]
        summary.append(
            {
                "privacy": privacy,
                "noise_multiplier": noise_multiplier,
                "epsilon": runs[0]["epsilon"],
                "runs": len(runs),
                "mean_accuracy": statistics.fmean(accuracies),
                "accuracy_stdev": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            }
        )
    return summary


def gaps(summary: list[dict]) -> dict[float, tuple[float, float]]:
    """By noise multiplier: distributed DP's mean accuracy minus central DP's, and that difference's standard error."""
    rows = {(row["privacy"], row["noise_multiplier"]): row for row in summary}
    differences = {}
    for (privacy, z), central in rows.items():
        if privacy == "central":
            distributed = rows["distributed", z]
            error = math.sqrt(sum(row["accuracy_stdev"] ** 2 / row["runs"] for row in (distributed, central)))
            differences[z] = (distributed["mean_accuracy"] - central["mean_accuracy"], error)
    return differences


def _accuracy_rows(cluster_file: str, settings: PrivacyBenchSettings):
    from fl.settings import TrainSettings
    from fl.train import train

    for privacy, noise_multiplier in settings.runs():
        dp = {}
        if noise_multiplier is not None:
            dp = dict(
                dp_noise_multiplier=noise_multiplier,
                dp_clip_norm=settings.clip_norm,
                dp_delta=settings.delta,
                dp_central=privacy == "central",
            )
        for repeat in range(settings.repeats):
            trained = TrainSettings(aggregation=settings.aggregation, epochs=settings.epochs, seed=repeat, verbose=0, **dp)
            summary = train(cluster_file, trained)
            yield {
                "kind": "accuracy",
                "privacy": privacy,
                "noise_multiplier": noise_multiplier,
                "seed": repeat,
                "test_accuracy": summary["test_accuracy"],
                "epsilon": summary.get("epsilon"),
                "rounds": summary["rounds"],
            }


def _cost_rows(cluster_file: str, settings: PrivacyBenchSettings):
    """The aggregation stage alone, as fl/bench/measure.py times it, without DP and with distributed DP."""
    from fl import privacy as dp
    from fl.aggregation.registry import make_aggregation
    from fl.bench.measure import owner_updates
    from fl.connection import connect
    from fl.policies import DifferentialPrivacy
    from fl.rounds import CompiledAverage

    cluster = connect(cluster_file)
    owners = cluster.data_owners
    aggregation = make_aggregation(settings.aggregation, cluster)
    updates = owner_updates(cluster, settings.cost_size)
    dp_settings = DifferentialPrivacy(settings.noise_multipliers[-1], settings.clip_norm, settings.delta)
    mechanism = dp.calibrate(dp_settings, aggregation, settings.cost_size, len(owners), len(owners))
    for privacy, mechanism_used in (("none", None), ("distributed", mechanism)):
        compiled = CompiledAverage(aggregation, owners, settings.cost_size, privacy=mechanism_used)
        for _ in range(2):  # tracing, then the first call's allocations
            compiled(updates)
        seconds = []
        for _ in range(settings.cost_rounds):
            started = time.perf_counter()
            compiled(updates)
            seconds.append(time.perf_counter() - started)
        yield {
            "kind": "cost",
            "privacy": privacy,
            "size": settings.cost_size,
            "owners": len(owners),
            "median_seconds": statistics.median(seconds),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description="the privacy benchmark's measurements on one cluster, as JSON lines")
    parser.add_argument("cluster_file")
    parser.add_argument("settings", help="PrivacyBenchSettings as JSON")
    args = parser.parse_args()
    fields = json.loads(args.settings)
    settings = PrivacyBenchSettings(**{**fields, "noise_multipliers": tuple(fields["noise_multipliers"])})
    rows = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the rows alone
        for row in itertools.chain(_accuracy_rows(args.cluster_file, settings), _cost_rows(args.cluster_file, settings)):
            print(json.dumps(row), file=rows, flush=True)


if __name__ == "__main__":
    main()
