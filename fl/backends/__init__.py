"""Where a cluster runs: one OS process per player (`local`), one container per player (`docker`), or one
container per player on the nodes of a Docker Swarm (`swarm`).

Both backends offer the same small interface, so nothing outside this package asks which
one it is talking to: `up`, `down`, `status`, and `exec` (start a command where the
cluster's driver runs: this host, or the driver container); `check` refuses, before
anything starts, what a backend cannot do, and `shaped_links` says where `fl bench`
shapes each player's traffic.

A cluster is identified by its state directory on either backend: `up` records there which
backend holds it, and every later command acts on that cluster only (`active`).
"""

from __future__ import annotations

import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from fl.cluster import Cluster
from fl.errors import FLError
from fl.policies import PARTITIONS

BACKENDS = ("local", "docker", "swarm")  # what `fl up` starts
RECORDED_BACKENDS = (*BACKENDS, "kit")  # what a state directory can hold: also a driver's kit (`fl kit`)
BACKEND_RECORD = "backend"  # in the state directory: the name of the backend that holds its cluster
# Resident memory of one player's TF server after a round (measured: 0.55 GB); sidecars add ~10 MB each
PLAYER_MEMORY_BYTES = 600 * 2**20


@dataclass(frozen=True)
class DataSettings:
    """What the owners hold: a public data set split among them (SIMULATION ONLY), or their own files.

    `own_data`: a directory with one subdirectory per data owner and the model owner, named after the
    player, which only that player sees (as `<its data dir>/own`); no split is made.
    """

    dataset: str = "digits"
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    own_data: Path | None = None

    def check(self, players: list[str]) -> None:
        """Refuse, before anything starts, a split that cannot be made or an own-data directory that lacks a player."""
        if self.partition not in PARTITIONS:
            raise FLError(f"--partition {self.partition!r}: use one of {', '.join(PARTITIONS)}")
        if self.partition == "dirichlet" and not self.alpha > 0:
            raise FLError(f"--alpha {self.alpha:g}: the Dirichlet concentration must be > 0, e.g. 0.5 (skewed) or 100")
        if self.own_data is None:
            return
        missing = [name for name in players if not (Path(self.own_data) / name).is_dir()]
        if missing:
            raise FLError(
                f"--data {self.own_data}: no directory for {', '.join(missing)}; make {self.own_data}/<player>/ "
                "for every data owner and the model owner, holding that player's own files"
            )

    def shards(self, owners: list[str]):
        """The split's public facts (each shard's size), as every owner will make its own shard."""
        from fl.data import datasets
        from fl.data.split import plan_shards

        return plan_shards(owners, datasets.load(self.dataset, seed=self.seed), self.partition, self.alpha, self.seed)[1]


@dataclass(frozen=True)
class UpSettings:
    owners: int = 3
    data: DataSettings = DataSettings()
    tls: bool | None = None  # None: the backend's default (docker: on; local: plaintext on loopback)
    insecure_randomness: bool = False


@dataclass(frozen=True)
class PlayerStatus:
    player: str
    role: str
    address: str
    process: str  # e.g. "running", "stopped", "absent"
    where: str  # pid or container name
    server: str  # "answering" or "not answering"
    link: str  # how the player is reached, e.g. its sidecar and that sidecar's health

    @property
    def healthy(self) -> bool:
        return self.server == "answering" and not self.link.endswith("(unhealthy)")


class Backend(ABC):
    name: ClassVar[str]
    # True when the driver runs in the process that asked (local); else commands go through `exec`
    driver_is_this_host: ClassVar[bool]

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).resolve()

    @abstractmethod
    def check(self, settings: UpSettings, shaped_links: bool = False) -> None:
        """Raise FLError, saying why, if this backend cannot start `settings` (or shape its links)."""

    def record(self) -> None:
        """Mark the state directory as holding this backend's cluster (before anything starts, so `down` finds it)."""
        holder = active(self.state_dir)
        if holder is not None and holder.name != self.name and holder.is_up():
            raise FLError(
                f"{self.state_dir} already holds a running {holder.name} cluster: `fl down --state-dir {self.state_dir}` "
                "first, or give this one another --state-dir"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / BACKEND_RECORD).write_text(self.name + "\n")

    def forget(self) -> None:
        (self.state_dir / BACKEND_RECORD).unlink(missing_ok=True)

    @abstractmethod
    def up(self, settings: UpSettings) -> Cluster:
        """Start every player (and its sidecar and the monitoring), return once all answer."""

    @abstractmethod
    def shaped_links(self, cluster: Cluster) -> list[tuple[str, str]]:
        """(container, address) of each player's interface to the others, for `tc`."""

    @abstractmethod
    def down(self, volumes: bool = False) -> list[str]:
        """Stop what `up` started; return the services that were there. Players' stored data stays unless `volumes`."""

    @abstractmethod
    def status(self) -> list[PlayerStatus]: ...

    @abstractmethod
    def exec(self, argv: list[str], options: Sequence[str] = (), **popen: Any) -> subprocess.Popen:
        """Start `argv` where the cluster's driver runs (`options`: the container's, e.g. `-e`, `-w`); `popen` goes to
        subprocess.Popen."""

    @abstractmethod
    def restart_player(self, name: str) -> None:
        """Kill one player (no grace: a crash) and start it again; return once it answers (for `make soak`)."""

    @abstractmethod
    def interrupt_driver(self) -> None:
        """Pass a Ctrl-C on to the running `fl train` where the host's own signal does not reach it."""

    def driver_stopped(self) -> str | None:
        """After a forwarded run failed: one line saying that the driver's own place (its container) stopped, and how
        to go on; None while it runs."""
        return None

    @abstractmethod
    def is_up(self) -> bool: ...

    @property
    @abstractmethod
    def where(self) -> str:
        """Where this cluster lives, for people: its processes' state directory, or its Compose project."""

    @abstractmethod
    def logs(self, lines: int) -> str:
        """The last `lines` of every player's log."""

    @property
    @abstractmethod
    def cluster_file(self) -> Path:
        """The cluster file as this host sees it."""

    @property
    @abstractmethod
    def driver_cluster_file(self) -> str:
        """The cluster file as the driver sees it (a path inside the driver container on docker)."""


def named(name: str, state_dir: Path) -> Backend:
    """`local`, `docker`, `swarm`, `kit` (a driver's kit, never started by `fl up`), or `auto` (docker when an engine
    answers), for the cluster in `state_dir`."""
    from fl.backends.docker import DockerBackend
    from fl.backends.kit import KitBackend
    from fl.backends.local import LocalBackend
    from fl.backends.swarm import SwarmBackend

    if name == "auto":
        name = automatic_choice()[0]
    kinds = {"docker": DockerBackend, "swarm": SwarmBackend, "local": LocalBackend, "kit": KitBackend}
    return kinds[name](state_dir)


def automatic_choice() -> tuple[str, str]:
    """The backend `auto` picks, and why."""
    from fl.backends.docker import engine_answers

    return ("docker", "a Docker engine answers") if engine_answers() else ("local", "no Docker engine answers")


def active(state_dir: Path) -> Backend | None:
    """The backend holding the cluster of `state_dir`, as `fl up` recorded it; None when it holds none."""
    record = Path(state_dir) / BACKEND_RECORD
    if not record.exists():
        return None
    name = record.read_text().strip()
    if name not in RECORDED_BACKENDS:
        known = ", ".join(RECORDED_BACKENDS)
        raise FLError(f"{record} names backend {name!r}, not one of {known}: remove it, then `fl up` again")
    return named(name, state_dir)


def check_owners(owners: int, available_bytes: int | None = None) -> None:
    """Refuse, before starting any of it, a cluster that could not average or that this machine cannot hold."""
    from fl.backends.local import player_names
    from fl.cluster import MIN_DATA_OWNERS

    if owners < MIN_DATA_OWNERS:
        raise FLError(f"--owners {owners}: secure averaging needs at least {MIN_DATA_OWNERS} data owners")
    available = _available_memory() if available_bytes is None else available_bytes
    others = len(player_names(0))
    needed = (owners + others) * PLAYER_MEMORY_BYTES
    if available is not None and needed > available:
        raise FLError(
            f"--owners {owners}: {owners + others} players need about {needed / 2**30:.1f} GiB "
            f"({PLAYER_MEMORY_BYTES / 2**30:.2f} GiB each), this machine has {available / 2**30:.1f} GiB available; "
            f"use at most {max(available // PLAYER_MEMORY_BYTES - others, 0)} owners"
        )


def _available_memory() -> int | None:
    if not sys.platform.startswith("linux"):
        return None
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None
