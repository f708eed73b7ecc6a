"""The cluster file: tfe's hostmap (player name -> host:port) plus each player's role.

Example::

    {
      "hostmap": {"model-owner": "127.0.0.1:7100", "data-owner-0": "127.0.0.1:7101", ...},
      "roles": {"model-owner": "model_owner", "data-owner-0": "data_owner", ...},
      "data_dirs": {"data-owner-0": "/data"},
      "backend": "local"
    }

The hostmap order gives each player its task index in the tfe job, exactly as
`tfe.RemoteConfig` does, so device names agree between the driver and the servers.
`data_dirs` says where each player keeps its own files *on its own host*; the
driver only ever passes these paths along, it never opens them.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from pathlib import Path

from fl.errors import ClusterConfigError, PlayerUnreachableError

MODEL_OWNER = "model_owner"
DATA_OWNER = "data_owner"
COMPUTE_SERVER = "compute_server"
ROLES = (MODEL_OWNER, DATA_OWNER, COMPUTE_SERVER)

JOB_NAME = "tfe"  # tf_encrypted.RemoteConfig's default job name
MIN_DATA_OWNERS = 2
COMPUTE_SERVERS_NEEDED = {"pond": 3, "aby3": 3, "additive": 0, "plaintext": 0}


@dataclass(frozen=True)
class Player:
    """One party of the federation: a TF server at `address` with a role."""

    name: str
    address: str
    role: str
    index: int
    data_dir: str | None = None

    @property
    def device_name(self) -> str:
        return f"/job:{JOB_NAME}/replica:0/task:{self.index}/device:CPU:0"

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def __str__(self) -> str:
        return self.name


@dataclass
class Cluster:
    players: list[Player]
    backend: str = "local"
    extra: dict = field(default_factory=dict)

    @property
    def hostmap(self) -> dict[str, str]:
        return {player.name: player.address for player in self.players}

    @property
    def model_owner(self) -> Player:
        return next(p for p in self.players if p.role == MODEL_OWNER)

    @property
    def data_owners(self) -> list[Player]:
        return [p for p in self.players if p.role == DATA_OWNER]

    @property
    def compute_servers(self) -> list[Player]:
        return [p for p in self.players if p.role == COMPUTE_SERVER]

    def player(self, name: str) -> Player:
        for candidate in self.players:
            if candidate.name == name:
                return candidate
        known = ", ".join(p.name for p in self.players)
        raise ClusterConfigError(f"no player named {name!r} in the cluster file; known players: {known}")

    def require_protocol(self, protocol: str) -> None:
        """Check the cluster has the compute servers `protocol` needs."""
        needed = COMPUTE_SERVERS_NEEDED.get(protocol)
        if needed is None:
            raise ClusterConfigError(f"unknown aggregation {protocol!r}; choose one of {', '.join(COMPUTE_SERVERS_NEEDED)}")
        have = len(self.compute_servers)
        if have < needed:
            raise ClusterConfigError(
                f"aggregation {protocol!r} needs {needed} compute servers but the cluster has {have}: "
                f"add players with role {COMPUTE_SERVER!r} (fl up starts 3)"
            )

    def to_dict(self) -> dict:
        return {
            "hostmap": self.hostmap,
            "roles": {p.name: p.role for p in self.players},
            "data_dirs": {p.name: p.data_dir for p in self.players if p.data_dir},
            "backend": self.backend,
            **self.extra,
        }

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Cluster:
        path = Path(path)
        if not path.exists():
            raise ClusterConfigError(f"cluster file {path} not found: start a cluster with `fl up` (or `make up`)")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ClusterConfigError(
                f"cluster file {path} is not valid JSON ({error}): fix or regenerate it with `fl up`"
            ) from None
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: object, source: str = "cluster file") -> Cluster:
        if not isinstance(raw, dict) or not isinstance(raw.get("hostmap"), dict) or not isinstance(raw.get("roles"), dict):
            raise ClusterConfigError(f"{source}: needs objects 'hostmap' (name -> host:port) and 'roles' (name -> role)")
        hostmap, roles = raw["hostmap"], raw["roles"]
        data_dirs = raw.get("data_dirs", {})
        extra = {k: v for k, v in raw.items() if k not in ("hostmap", "roles", "data_dirs", "backend")}
        players = [
            Player(name, _checked_address(source, name, address), _checked_role(source, name, roles), index, data_dirs.get(name))
            for index, (name, address) in enumerate(hostmap.items())
        ]
        cluster = cls(players=players, backend=raw.get("backend", "local"), extra=extra)
        _validate(source, cluster, roles)
        return cluster


def _checked_address(source: str, name: str, address: object) -> str:
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterConfigError(f"{source}: player {name!r} has address {address!r}; write it as host:port")
    return str(address)


def _checked_role(source: str, name: str, roles: dict) -> str:
    role = roles.get(name)
    if role is None:
        raise ClusterConfigError(f"{source}: player {name!r} has no role; add it to 'roles' as one of {', '.join(ROLES)}")
    if role not in ROLES:
        raise ClusterConfigError(f"{source}: player {name!r} has unknown role {role!r}; use one of {', '.join(ROLES)}")
    return role


def _validate(source: str, cluster: Cluster, roles: dict) -> None:
    stray = sorted(set(roles) - set(cluster.hostmap))
    if stray:
        raise ClusterConfigError(f"{source}: roles name players missing from 'hostmap': {', '.join(stray)}")
    seen: dict[str, str] = {}
    for player in cluster.players:
        if player.address in seen:
            raise ClusterConfigError(
                f"{source}: players {seen[player.address]!r} and {player.name!r} share address {player.address}; "
                "give each its own port"
            )
        seen[player.address] = player.name
    owners = [p for p in cluster.players if p.role == MODEL_OWNER]
    if len(owners) != 1:
        raise ClusterConfigError(f"{source}: needs exactly one player with role {MODEL_OWNER!r}, found {len(owners)}")
    if len(cluster.data_owners) < MIN_DATA_OWNERS:
        raise ClusterConfigError(
            f"{source}: needs at least {MIN_DATA_OWNERS} data owners for secure averaging, found {len(cluster.data_owners)}"
        )


def probe(player: Player, timeout: float = 2.0) -> bool:
    """True when the player's TF server accepts connections."""
    try:
        with socket.create_connection((player.host, player.port), timeout=timeout):
            return True
    except OSError:
        return False


def require_reachable(players: list[Player], timeout: float = 2.0) -> None:
    down = [p for p in players if not probe(p, timeout)]
    if down:
        names = ", ".join(f"{p.name} ({p.address})" for p in down)
        raise PlayerUnreachableError(f"player(s) not answering: {names}; check `fl status` and restart them (`fl up`)")
