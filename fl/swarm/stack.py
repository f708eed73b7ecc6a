"""The docker backend's Compose project, split for a swarm: the players as a stack, the driver on this engine.

Each player and its sidecar become stack services pinned to the player's node, so their
private link stays on one host. What a bind mount gave them on one engine reaches a node
that shares no files with this one as swarm objects: the cluster file and the CA
certificate as configs, each identity's key as a secret that only its own sidecar's task
receives (the swarm sends a secret only to the nodes running a task that uses it).
Services resolve by DNS round-robin to their task's own address, not through the swarm's
virtual-IP balancer, which drops connections idle for 900 s. Overlays are told the MTU of
the hosts' links, from which the overlay driver takes VXLAN's 50 bytes: its default of 1500
would send frames larger than a link of 1400 (docker0's here) carries.

The driver, its sidecar and Prometheus stay a Compose project on this engine, attached to the
stack's players' overlay (attachable), so `fl train`, results and `fl run` work as on docker.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fl.backends.docker import CLUSTER_FILE_IN_CONTAINER, NETWORK, PKI_DIR, TLS_DIR_IN_CONTAINER, sidecar_service
from fl.mesh.pki import CA_FILE, IDENTITY_FILE, ClusterPKI

STACK_FORMAT = "3.8"  # the Compose file version `docker stack deploy` reads
CLUSTER_CONFIG = "cluster"
CA_CONFIG = "ca"
READ_ONLY = 0o444
OWNER_ONLY = 0o400


def _start_period(service: dict) -> int:
    """How long its player may take to turn healthy: until then the swarm's DNS does not resolve it."""
    return int(service["healthcheck"]["start_period"].removesuffix("s"))


def overlay(link_mtu: int, attachable: bool = False) -> dict:
    network = {"driver": "overlay", "internal": True, "driver_opts": {"com.docker.network.driver.mtu": str(link_mtu)}}
    return {**network, "attachable": True} if attachable else network


def _pinned(spec: dict, node: str) -> dict:
    """A Compose service as a stack service on `node`: no bind mounts (the cluster file comes as a config), no
    `depends_on` (the swarm ignores it), reached at its task's own address."""
    service = {key: value for key, value in spec.items() if key not in ("depends_on", "volumes")}
    service["volumes"] = [volume for volume in spec["volumes"] if not volume.startswith(("./", "/"))]
    service["configs"] = [{"source": CLUSTER_CONFIG, "target": CLUSTER_FILE_IN_CONTAINER, "mode": READ_ONLY}]
    service["deploy"] = {"endpoint_mode": "dnsrr", "placement": {"constraints": [f"node.hostname == {node}"]}}
    return service


def _swarm_object(stack: str, key: str, path: Path) -> dict:
    """A config or secret named after its content: the swarm never updates one in place, so a changed file gets a
    new name and a redeploy picks it up."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return {"name": f"{stack}-{key}-{digest}", "file": str(path)}


def render(compose: dict, directory: Path, stack: str, placement: dict[str, str], link_mtu: int) -> tuple[dict, dict]:
    """(stack file, this engine's Compose file) from the rendered Compose project in `directory`.

    `placement`: player -> node hostname; `link_mtu`: the MTU of the links between the hosts.
    """
    configs = {
        CLUSTER_CONFIG: _swarm_object(stack, CLUSTER_CONFIG, directory / "cluster.json"),
        CA_CONFIG: _swarm_object(stack, CA_CONFIG, ClusterPKI(directory / PKI_DIR).ca_certificate_file),
    }
    secrets: dict[str, dict] = {}
    services: dict[str, dict] = {}
    for player, node in placement.items():
        sidecar = sidecar_service(player)
        services[player] = _pinned(compose["services"][player], node)
        services[sidecar] = _pinned(compose["services"][sidecar], node)
        # its identity's key and the CA certificate, nobody else's key; its player's name resolves once it is healthy
        secret = f"{player}-identity"
        secrets[secret] = _swarm_object(stack, secret, directory / PKI_DIR / player / IDENTITY_FILE)
        services[sidecar]["secrets"] = [
            {"source": secret, "target": f"{TLS_DIR_IN_CONTAINER}/{IDENTITY_FILE}", "mode": OWNER_ONLY}
        ]
        services[sidecar]["configs"].append(
            {"source": CA_CONFIG, "target": f"{TLS_DIR_IN_CONTAINER}/{CA_FILE}", "mode": READ_ONLY}
        )
        discovery = _start_period(compose["services"][player])
        services[sidecar]["command"] = [*compose["services"][sidecar]["command"], "--discovery-seconds", str(discovery)]
    stack_networks = {NETWORK: overlay(link_mtu, attachable=True)}
    for service in services.values():
        for network in service["networks"]:
            stack_networks.setdefault(network, overlay(link_mtu))
    volumes = {volume.split(":")[0] for service in services.values() for volume in service["volumes"]}
    stack_file = {
        "version": STACK_FORMAT,
        "services": services,
        "networks": stack_networks,
        "volumes": {volume: {} for volume in sorted(volumes)},
        "configs": configs,
        "secrets": secrets,
    }
    return stack_file, _this_engine(compose, set(services), f"{stack}_{NETWORK}")


def _this_engine(compose: dict, on_nodes: set[str], players_network: str) -> dict:
    """What stays on this engine: every other service, its readiness waits on its own services only, and the
    players' network is the stack's overlay."""
    services = {name: dict(spec) for name, spec in compose["services"].items() if name not in on_nodes}
    for spec in services.values():
        waits_for = {name: ready for name, ready in spec.pop("depends_on", {}).items() if name in services}
        if waits_for:
            spec["depends_on"] = waits_for
    used = {network for spec in services.values() for network in spec.get("networks", [])}
    networks = {name: network for name, network in compose["networks"].items() if name in used}
    networks[NETWORK] = {"external": True, "name": players_network}
    used_volumes = {volume.split(":")[0] for spec in services.values() for volume in spec.get("volumes", [])}
    volumes = {name: volume for name, volume in compose.get("volumes", {}).items() if name in used_volumes}
    return {"services": services, "networks": networks, "volumes": volumes}
