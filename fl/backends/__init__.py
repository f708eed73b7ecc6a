"""Where a cluster runs: one OS process per player (`local`) or one container per player (`docker`).

Both backends offer the same small interface, so nothing outside this package asks which
one it is talking to: `up`, `down`, `status`, and `exec` (start a command where the
cluster's driver runs: this host, or the driver container); `check` refuses, before
anything starts, what a backend cannot do, and `shaped_links` says where `fl bench`
shapes each player's traffic.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from fl.cluster import Cluster


@dataclass(frozen=True)
class UpSettings:
    owners: int = 3
    dataset: str = "digits"
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

    @abstractmethod
    def check(self, settings: UpSettings, shaped_links: bool = False) -> None:
        """Raise FLError, saying why, if this backend cannot start `settings` (or shape its links)."""

    @abstractmethod
    def up(self, settings: UpSettings) -> Cluster:
        """Start every player (and its sidecar and the monitoring), return once all answer."""

    @abstractmethod
    def shaped_links(self, cluster: Cluster) -> list[tuple[str, str]]:
        """(container, address) of each player's interface to the others, for `tc`."""

    @abstractmethod
    def down(self) -> list[str]:
        """Remove what `up` made; return the services that were there."""

    @abstractmethod
    def status(self) -> list[PlayerStatus]: ...

    @abstractmethod
    def exec(self, argv: list[str], **popen: Any) -> subprocess.Popen:
        """Start `argv` where the cluster's driver runs; `popen` goes to subprocess.Popen."""

    @abstractmethod
    def is_up(self) -> bool: ...

    @property
    @abstractmethod
    def cluster_file(self) -> Path:
        """The cluster file as this host sees it."""

    @property
    @abstractmethod
    def driver_cluster_file(self) -> str:
        """The cluster file as the driver sees it (a path inside the driver container on docker)."""


def named(name: str, state_dir: Path) -> Backend:
    """`local`, `docker`, or `auto` (docker when an engine answers)."""
    from fl.backends.docker import DockerBackend
    from fl.backends.local import LocalBackend

    if name == "auto":
        name = automatic_choice()[0]
    return DockerBackend() if name == "docker" else LocalBackend(state_dir)


def automatic_choice() -> tuple[str, str]:
    """The backend `auto` picks, and why."""
    from fl.backends.docker import engine_answers

    return ("docker", "a Docker engine answers") if engine_answers() else ("local", "no Docker engine answers")


def active(state_dir: Path) -> Backend:
    """The backend whose cluster is up: the Compose testbed when it exists, else the local one in `state_dir`."""
    from fl.backends.docker import DockerBackend
    from fl.backends.local import LocalBackend

    docker = DockerBackend()
    return docker if docker.is_up() else LocalBackend(state_dir)
