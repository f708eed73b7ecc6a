"""A kit per party, for a federation whose hosts share no scheduler (`fl kit`).

Each player's kit is a Compose project of its TF server and its TLS sidecar only, cut from
the docker backend's rendered project (fl/backends/docker.py), so a kit's containers are
the docker backend's: the TF server alone on its private link, the sidecar the only one on
a network with a published port, its mutual-TLS port. A kit holds its own key and
certificate, the CA's certificate and the cluster file, in which every sidecar is reached
at its party's public address. The driver's kit is a state directory of its own
(fl/backends/kit.py): `fl train --state-dir KIT` trains from there. The CA's key stays
where `fl kit` ran, in no kit.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from fl.backends import BACKEND_RECORD, DataSettings
from fl.backends.docker import (
    IMAGE,
    NETWORK,
    PKI_DIR,
    RUNS_DIR,
    SIDECAR_PORT,
    container_cluster,
    dataset_settings,
    identities,
    link_network,
    render_compose,
    sidecar_service,
)
from fl.backends.local import player_names
from fl.cluster import DRIVER, Cluster
from fl.errors import FLError
from fl.mesh.pki import ClusterPKI

KIT_BACKEND = "kit"  # what a driver's kit records as its backend
PROJECT_PREFIX = "fl-kit-"


@dataclass(frozen=True)
class PublicAddress:
    """Where the other parties reach a party's sidecar."""

    host: str
    port: int = SIDECAR_PORT

    @staticmethod
    def parse(entry: str) -> tuple[str, PublicAddress]:
        """`NAME=HOST` or `NAME=HOST:PORT`."""
        name, _, address = entry.partition("=")
        host, _, port = address.strip().rpartition(":") if ":" in address else (address.strip(), "", str(SIDECAR_PORT))
        if not name.strip() or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise FLError(f"address {entry!r}: write it as NAME=HOST or NAME=HOST:PORT, e.g. data-owner-0=10.0.0.5:7443")
        return name.strip(), PublicAddress(host, int(port))


def read_addresses(entries: list[str], file: Path | None) -> dict[str, PublicAddress]:
    """Addresses from `--address` entries and from a file of such lines (blank lines and # comments skipped)."""
    lines = []
    if file is not None:
        if not file.is_file():
            raise FLError(f"--addresses {file}: no such file; write one NAME=HOST[:PORT] line per party")
        lines = [line.split("#", 1)[0].strip() for line in file.read_text().splitlines()]
    parsed = [PublicAddress.parse(entry) for entry in [*(line for line in lines if line), *entries]]
    addresses: dict[str, PublicAddress] = {}
    for name, address in parsed:
        if name in addresses and addresses[name] != address:
            raise FLError(
                f"{name} is given two addresses ({addresses[name].host}:{addresses[name].port}, "
                f"{address.host}:{address.port}): keep one"
            )
        addresses[name] = address
    return addresses


def write(out: Path, owners: int, addresses: dict[str, PublicAddress], data: DataSettings) -> list[Path]:
    """One kit per player and one for the driver under `out`; return their directories."""
    players = [name for name, _ in player_names(owners)]
    missing = [name for name in players if name not in addresses]
    stray = sorted(set(addresses) - set(players))
    if missing or stray:
        detail = f"no address for {', '.join(missing)}" if missing else f"no such player: {', '.join(stray)}"
        raise FLError(f"{detail}; give every one of {', '.join(players)} an address (--address NAME=HOST[:PORT])")
    taken: dict[tuple[str, int], str] = {}
    for name in players:
        spot = (addresses[name].host, addresses[name].port)
        if spot in taken:
            raise FLError(f"{taken[spot]} and {name} both at {spot[0]}:{spot[1]}: parties on one host need ports of their own")
        taken[spot] = name
    if data.own_data is not None:
        raise FLError("--data: a kit's owner brings its own files on its own host; kits split a public data set only")
    if out.exists() and any(out.iterdir()):
        raise FLError(f"{out} is not empty: kits are written into a new directory (their keys must not mix with old ones)")
    cluster = container_cluster(owners, dataset_settings(data, owners))
    pki = ClusterPKI(out / PKI_DIR)  # beside the kits: the CA's key is in none of them
    pki.ensure({identity: names for identity, names in identities(cluster).items() if identity in cluster.mesh.sidecars})
    public = replace(
        cluster.mesh,
        sidecars={**cluster.mesh.sidecars, **{name: address.host for name, address in addresses.items()}},
        published_ports={name: address.port for name, address in addresses.items()},
    )
    cluster = replace(cluster, mesh=public, backend=KIT_BACKEND)
    project = render_compose(cluster, IMAGE)
    return [_write_kit(out / identity, identity, cluster, project, pki) for identity in [*players, DRIVER]]


def _write_kit(directory: Path, identity: str, cluster: Cluster, project: dict, pki: ClusterPKI) -> Path:
    sidecar = sidecar_service(identity)
    services = {identity: project["services"][identity], sidecar: project["services"][sidecar]}
    services[identity].pop("depends_on", None)  # the driver's: the players are other parties' kits
    services[sidecar].pop("cap_add")  # for `fl bench`'s shaping on one engine; a party's links are its own
    if identity == DRIVER:
        services[identity]["volumes"] = [
            volume if not volume.endswith(":/home/fl/results") else "./results:/home/fl/results"
            for volume in services[identity]["volumes"]
        ]
        for runs in ("scripts", "results"):
            (directory / RUNS_DIR / runs).mkdir(parents=True)
        (directory / "results").mkdir()
        (directory / BACKEND_RECORD).write_text(KIT_BACKEND + "\n")
    else:
        services[sidecar]["ports"] = [f"{cluster.mesh.published_ports[identity]}:{SIDECAR_PORT}"]
    volumes = {volume.split(":", 1)[0]: {} for volume in services[identity]["volumes"] if not volume.startswith(("./", "/"))}
    compose = {"services": services, "networks": {NETWORK: {}, link_network(identity): {"internal": True}}}
    if volumes:
        compose["volumes"] = volumes
    directory.mkdir(parents=True, exist_ok=True)
    principal = "the driver" if identity == DRIVER else "its TF server"
    header = f"# {identity}'s kit, written by `fl kit`: {principal} and its TLS sidecar; edit fl/kit.py instead.\n"
    (directory / "compose.yaml").write_text(header + yaml.safe_dump(compose, sort_keys=False))
    project_name = f"{PROJECT_PREFIX}{identity}"
    (directory / ".env").write_text(f"COMPOSE_PROJECT_NAME={project_name}\nFL_UID={os.getuid()}\nFL_GID={os.getgid()}\n")
    cluster.save(directory / "cluster.json")
    shutil.copytree(pki.identity_dir(identity), directory / PKI_DIR / identity)
    (directory / "README.md").write_text(_instructions(identity, cluster))
    return directory


def _instructions(identity: str, cluster: Cluster) -> str:
    """What the party who receives this kit does with it."""
    images = "fl-testbed-driver and fl-testbed-sidecar" if identity == DRIVER else "fl-testbed-player and fl-testbed-sidecar"
    lines = [
        f"# {identity}'s kit",
        "",
        f"1. This host needs the images {images} (`docker load` them from the testbed's `make images`).",
    ]
    if identity == DRIVER:
        lines += [
            "2. `docker compose up -d` in this directory starts the driver and its TLS sidecar.",
            "3. `fl status --state-dir THIS_DIRECTORY` shows which parties answer; `fl train --state-dir THIS_DIRECTORY` trains.",
        ]
    else:
        lines += [
            f"2. The other parties reach this one at {cluster.mesh.sidecar_address(identity)}: let that port through.",
            "3. `docker compose up -d` in this directory starts its TF server and its TLS sidecar.",
        ]
    lines += ["", f"`pki/{identity}/` holds this party's key, which never leaves this host.", ""]
    return "\n".join(lines)
