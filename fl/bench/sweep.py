"""The benchmark sweep: one cluster per number of data owners, every aggregation and size on it.

Each cluster is driven by its own `fl.bench.measure` process, because a process can
drive only one TensorFlow cluster; the sweep reads its JSON lines as they come. On
the docker backend that process runs in the driver container, once per network profile.
Then the peers (Flower) run on this host; a peer that cannot run is reported with the
reason instead of stopping the sweep.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tensorflow as tf

from fl import backends
from fl.aggregation.registry import AGGREGATIONS
from fl.backends import Backend, UpSettings
from fl.bench import flower, netem
from fl.bench.netem import PROFILES
from fl.errors import FLError


@dataclass(frozen=True)
class SweepSettings:
    owners: tuple[int, ...]
    sizes: tuple[int, ...]
    aggregations: tuple[str, ...] = AGGREGATIONS
    rounds: int = 5
    warmup: int = 1
    backend: str = "local"
    profiles: tuple[str, ...] = ("lan",)
    tls: tuple[bool, ...] | None = None  # links with mutual TLS (True) and/or plaintext; None: the backend's default
    peers: tuple[str, ...] = ("flower",)
    # Flower's deployment engine takes seconds per message exchange, so it gets its own grid.
    peer_owners: tuple[int, ...] = (3,)
    peer_sizes: tuple[int, ...] = (1_000_000,)
    peer_rounds: int = 3
    peer_warmup: int = 1


@dataclass
class SweepResult:
    rows: list[dict]
    unavailable_peers: dict[str, str] = field(default_factory=dict)


QUICK = SweepSettings(owners=(3, 5, 8), sizes=(10_000, 100_000, 1_000_000), rounds=5)
FULL = SweepSettings(
    owners=(3, 5, 8, 12, 16),
    sizes=(10_000, 100_000, 1_000_000, 10_000_000),
    rounds=20,
    warmup=2,
    peer_owners=(3, 5, 8, 12, 16),
    peer_sizes=(10_000, 100_000, 1_000_000, 10_000_000),
    peer_rounds=5,
)
PEERS = ("flower",)


def run(settings: SweepSettings, verbose: int = 1) -> SweepResult:
    """Every measurement of the sweep, with a Keras progress bar."""
    backend = backends.named(settings.backend, Path(tempfile.gettempdir()))
    for tls in settings.tls or (None,):  # before any cluster starts
        backend.check(UpSettings(max(settings.owners), tls=tls), shaped_links=settings.profiles != ("lan",))
    unknown = [name for name in settings.profiles if name not in PROFILES]
    if unknown:
        raise FLError(f"unknown network profile(s) {', '.join(unknown)}; choose from {', '.join(PROFILES)}")
    unknown = [name for name in settings.peers if name not in PEERS]
    if unknown:
        raise FLError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    total = (
        len(settings.owners)
        * len(settings.profiles)
        * len(settings.sizes)
        * len(settings.aggregations)
        * len(settings.tls or (None,))
    )
    if settings.peers:
        total += len(settings.peer_owners) * len(settings.peer_sizes) * len(flower.AGGREGATIONS)
    progress = tf.keras.utils.Progbar(total, verbose=verbose, stateful_metrics=["owners"], unit_name="measurement")
    result = SweepResult(rows=[])
    for owners in settings.owners:
        for row in _rows(owners, settings):
            result.rows.append(row)
            progress.add(1, [("owners", owners)])
    if settings.peers:
        try:
            for row in _flower_rows(settings):
                result.rows.append(row)
                progress.add(1, [("owners", row["owners"])])
        except FLError as error:
            result.unavailable_peers["flower"] = str(error)
    return result


def _flower_rows(settings: SweepSettings):
    for owners in settings.peer_owners:
        for size in settings.peer_sizes:
            for aggregation in flower.AGGREGATIONS:
                row = flower.measure(aggregation, owners, size, settings.peer_rounds, settings.peer_warmup)
                yield {**row, "profile": "lan", "links": "plaintext"}  # its SuperLink and SuperNodes talk over loopback HTTP


def _rows(owners: int, settings: SweepSettings):
    """One cluster per links setting (mutual TLS and/or plaintext), each measured on every network profile."""
    with tempfile.TemporaryDirectory(prefix=f"fl-bench-{owners}-") as state_dir:
        backend = backends.named(settings.backend, Path(state_dir))
        for tls in settings.tls or (None,):
            try:  # a cluster that fails to come up is removed too
                cluster = backend.up(UpSettings(owners, tls=tls))
                links = backend.shaped_links(cluster) if settings.profiles != ("lan",) else []
                for name in settings.profiles:
                    for container, address in links:
                        netem.apply(container, address, PROFILES[name])
                    for row in _measure(backend, settings):
                        yield {**row, "profile": name}
            finally:
                backend.down(volumes=True)  # its state directory goes with it


def _measure(backend: Backend, settings: SweepSettings):
    command = [
        "python" if not backend.driver_is_this_host else sys.executable,
        "-m",
        "fl.bench.measure",
        backend.driver_cluster_file,
        "--aggregations",
        *settings.aggregations,
        "--sizes",
        *map(str, settings.sizes),
        "--rounds",
        str(settings.rounds),
        "--warmup",
        str(settings.warmup),
    ]
    with backend.exec(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            yield json.loads(line)
        errors = process.stderr.read()
    if process.returncode != 0:
        raise FLError(
            f"benchmark on {backend.cluster_file} failed: {errors.strip().splitlines()[-1] if errors.strip() else 'no output'}"
        )
