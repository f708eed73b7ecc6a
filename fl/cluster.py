"""The cluster file: tfe's hostmap (player name -> host:port), each player's role, and typed sections.

Example::

    {
      "hostmap": {"model-owner": "127.0.0.1:7100", "data-owner-0": "127.0.0.1:7101", ...},
      "roles": {"model-owner": "model_owner", "data-owner-0": "data_owner", ...},
      "data_dirs": {"data-owner-0": "/data"},
      "backend": "local",
      "metrics": {...},   # where each exporter listens and Prometheus scrapes (MetricsEndpoints)
      "dataset": {...},   # public facts about the owners' data (DatasetInfo)
      "mesh": {...}       # present when every link is mutual TLS through sidecars (Mesh)
    }

The hostmap order gives each player its task index in the tfe job, exactly as
`tfe.RemoteConfig` does, so device names agree between the driver and the servers.
`data_dirs` says where each player keeps its own files *on its own host*; the
driver only ever passes these paths along, it never opens them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fl.errors import ClusterConfigError, PlayerUnreachableError

MODEL_OWNER = "model_owner"
DATA_OWNER = "data_owner"
COMPUTE_SERVER = "compute_server"
ROLES = (MODEL_OWNER, DATA_OWNER, COMPUTE_SERVER)

JOB_NAME = "tfe"  # tf_encrypted.RemoteConfig's default job name
DRIVER = "driver"  # the driver's identity on the mesh; no player may take this name
MONITOR = "prometheus"  # Prometheus's identity on the mesh: it scrapes every sidecar over mutual TLS
GET_STATUS = "/tensorflow.WorkerService/GetStatus"
MIN_DATA_OWNERS = 2
OWN_DATA_DIR = "own"  # under an owner's data directory: its own files, as `fl up --data` found them

# how a player's /metrics counts wire bytes: its own network namespace, or the host's shared interfaces
OWN_NAMESPACE = "own_namespace"
SHARED_HOST = "shared_host"


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
    def own_data_dir(self) -> str | None:
        """Where the owner's own files are (`fl up --data DIR` puts DIR/<name>/ there): read them with graph ops."""
        return f"{self.data_dir.rstrip('/')}/{OWN_DATA_DIR}" if self.data_dir else None

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class DatasetInfo:
    """Public facts about the data the owners hold (never the data): what the driver needs to build the model."""

    name: str
    feature_shape: tuple[int, ...]
    num_classes: int  # 0: a regression target
    label_dtype: str = "int64"
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    train_examples: dict[str, int] | None = None
    test_examples: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_shape", tuple(self.feature_shape))

    @property
    def feature_size(self) -> int:
        return math.prod(self.feature_shape)


@dataclass(frozen=True)
class MetricsEndpoints:
    """Where each exporter listens, where the driver and Prometheus reach them, and what wire bytes mean."""

    players: dict[str, str]  # player -> host:port where the driver reaches its /metrics
    scrape_targets: dict[str, str]  # player or "driver" -> host:port Prometheus scrapes
    driver: str  # host:port of the driver's exporter, as it listens
    driver_textfile: str
    prometheus: str  # Prometheus's URL from the host
    listen_host: str  # the address every exporter binds
    wire_bytes: str  # OWN_NAMESPACE or SHARED_HOST


@dataclass(frozen=True)
class Mesh:
    """Every link is mutual TLS: each identity (players and the driver) reaches the others only through its sidecar."""

    sidecars: dict[str, str]  # identity -> its sidecar's host on the players' network
    ingress_port: int  # the sidecars' mutual-TLS port
    metrics_port: int  # the sidecars' port relaying GET /metrics to their player
    # identity -> the port its mutual-TLS port is published at, where not ingress_port (kits: parties sharing a host)
    published_ports: dict[str, int] = field(default_factory=dict)

    def sidecar_address(self, identity: str) -> str:
        return f"{self.sidecars[identity]}:{self.published_ports.get(identity, self.ingress_port)}"


SECTIONS = {"dataset": DatasetInfo, "metrics": MetricsEndpoints, "mesh": Mesh}


@dataclass
class Cluster:
    players: list[Player]
    backend: str = "local"
    metrics: MetricsEndpoints | None = None
    dataset: DatasetInfo | None = None
    mesh: Mesh | None = None

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

    @property
    def links(self) -> str:
        """How players reach each other, as `fl status` says it."""
        return "mutual TLS 1.3 through a sidecar per player" if self.mesh else "plaintext gRPC"

    def to_dict(self) -> dict:
        sections = {name: asdict(getattr(self, name)) for name in SECTIONS if getattr(self, name) is not None}
        return {
            "hostmap": self.hostmap,
            "roles": {p.name: p.role for p in self.players},
            "data_dirs": {p.name: p.data_dir for p in self.players if p.data_dir},
            "backend": self.backend,
            **sections,
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
        unknown = sorted(set(raw) - {"hostmap", "roles", "data_dirs", "backend", *SECTIONS})
        if unknown:
            raise ClusterConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; regenerate the file with `fl up`")
        players = [
            Player(name, _checked_address(source, name, address), _checked_role(source, name, roles), index, data_dirs.get(name))
            for index, (name, address) in enumerate(hostmap.items())
        ]
        sections = {name: _section(source, name, kind, raw.get(name)) for name, kind in SECTIONS.items()}
        cluster = cls(players=players, backend=raw.get("backend", "local"), **sections)
        _validate(source, cluster, roles)
        return cluster


def _section(source: str, name: str, kind: type, raw: object):
    """One typed section of the file, or None when absent."""
    if raw is None:
        return None
    expected = {f.name for f in fields(kind)}
    if not isinstance(raw, dict) or set(raw) - expected:
        stray = sorted(set(raw) - expected) if isinstance(raw, dict) else []
        detail = f"unknown key(s) {', '.join(stray)}" if stray else "not an object"
        raise ClusterConfigError(f"{source}: section {name!r}: {detail}; regenerate the file with `fl up`")
    try:
        return kind(**raw)
    except TypeError as error:
        raise ClusterConfigError(
            f"{source}: section {name!r} is incomplete ({error}); regenerate the file with `fl up`"
        ) from None


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
    for reserved in (DRIVER, MONITOR):
        if reserved in cluster.hostmap:
            raise ClusterConfigError(f"{source}: {reserved!r} is a reserved identity on the mesh; give that player another name")
    if cluster.mesh is not None:
        missing = sorted({*cluster.hostmap, DRIVER} - set(cluster.mesh.sidecars))
        if missing:
            raise ClusterConfigError(
                f"{source}: section 'mesh' gives no sidecar for {', '.join(missing)}; regenerate with `fl up`"
            )
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
    """True when the player's TF server answers a gRPC call within `timeout`.

    A call, not a TCP connect: with mutual TLS the player's address leads to the caller's own
    sidecar, which accepts connections whether or not the TF server behind the peer's is up.
    `GetStatus` (a worker's devices) is harmless and allowed to the driver.
    """
    import grpc  # TensorFlow's dependency; imported here so the TF-free sidecar can load this module

    with grpc.insecure_channel(player.address) as channel:
        try:
            channel.unary_unary(GET_STATUS)(b"", timeout=timeout)
            return True
        except grpc.RpcError:
            return False


def unreachable(players: list[Player], timeout: float = 2.0) -> list[Player]:
    """The players that do not answer a probe, all probed at once (a hung player costs `timeout`, once)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(len(players), 1)) as pool:
        answers = list(pool.map(lambda player: probe(player, timeout), players))
    return [player for player, answered in zip(players, answers) if not answered]


def require_reachable(players: list[Player], timeout: float = 2.0) -> None:
    down = unreachable(players, timeout)
    if down:
        names = ", ".join(f"{p.name} ({p.address})" for p in down)
        raise PlayerUnreachableError(f"player(s) not answering: {names}; check `fl status` and restart them (`fl up`)")
