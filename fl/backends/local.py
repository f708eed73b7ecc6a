"""The local backend: one OS process per player on this machine, no Docker needed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fl.backends import Backend, DataSettings, PlayerStatus, UpSettings, check_owners
from fl.cluster import COMPUTE_SERVER, DATA_OWNER, DRIVER, MODEL_OWNER, SHARED_HOST, Cluster, MetricsEndpoints, Player, probe
from fl.errors import FLError, PlayerUnreachableError
from fl.metrics import dashboard, prometheus

DEFAULT_STATE_DIR = Path(".fl")
COMPUTE_SERVER_NAMES = ("server0", "server1", "server2")  # tfe's default names
DRIVER_METRICS = "driver-metrics"
FL_COMMAND = [sys.executable, "-m", "fl"]
PROMETHEUS = "prometheus"
PROMETHEUS_PORT = 9090


@dataclass(frozen=True)
class StateDir:
    """Where a local cluster keeps its cluster file, pids, logs and each player's own files."""

    root: Path

    def __post_init__(self) -> None:
        # players run in their own directories: every path handed to them must be absolute
        object.__setattr__(self, "root", Path(self.root).resolve())

    @property
    def cluster_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def pids_file(self) -> Path:
        return self.root / "pids.json"

    @property
    def commands_file(self) -> Path:
        """Each player's command line as `up` started it, so a restart starts it the same way."""
        return self.root / "commands.json"

    def log_file(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    @property
    def players_dir(self) -> Path:
        return self.root / "players"

    def player_dir(self, name: str) -> Path:
        return self.players_dir / name

    @property
    def driver_metrics_file(self) -> Path:
        return self.root / "metrics" / "driver.prom"

    @property
    def prometheus_dir(self) -> Path:
        return self.root / "prometheus"


def player_names(owners: int) -> list[tuple[str, str]]:
    return (
        [("model-owner", MODEL_OWNER)]
        + [(f"data-owner-{i}", DATA_OWNER) for i in range(owners)]
        + [(name, COMPUTE_SERVER) for name in COMPUTE_SERVER_NAMES]
    )


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def up(
    owners: int,
    state: StateDir,
    insecure_randomness: bool = False,
    timeout: float = 90.0,
    data: DataSettings | None = DataSettings(),
) -> Cluster:
    """Start every player, wait until each answers, give the owners their data (`data`; None: none) and write the
    cluster file."""
    if state.pids_file.exists() and any(_alive(pid) for pid in _read_pids(state).values()):
        raise FLError(f"a local cluster is already running from {state.root}; stop it with `fl down` first")
    names = player_names(owners)
    if data is not None:
        data.check([name for name, role in names if role in (DATA_OWNER, MODEL_OWNER)])
    ports = free_ports(2 * len(names) + 2)
    players = []
    for index, ((name, role), port) in enumerate(zip(names, ports)):
        data_dir = state.player_dir(name)
        data_dir.mkdir(parents=True, exist_ok=True)
        players.append(Player(name, f"127.0.0.1:{port}", role, index, str(data_dir)))
    metrics_ports = ports[len(names) :]
    prometheus_port = PROMETHEUS_PORT if port_free(PROMETHEUS_PORT) else metrics_ports[-1]
    exporters = {player.name: f"127.0.0.1:{port}" for player, port in zip(players, metrics_ports)}
    driver_exporter = f"127.0.0.1:{metrics_ports[len(names)]}"
    metrics = MetricsEndpoints(
        players=exporters,
        scrape_targets={**exporters, DRIVER: driver_exporter},
        driver=driver_exporter,
        driver_textfile=str(state.driver_metrics_file),
        prometheus=f"http://127.0.0.1:{prometheus_port}",
        listen_host="127.0.0.1",
        wire_bytes=SHARED_HOST,
    )
    cluster = Cluster(players=players, backend="local", metrics=metrics)
    Cluster.from_dict(cluster.to_dict())  # same validation as any cluster file
    cluster.save(state.cluster_file)
    commands = {player.name: _player_command(state, player.name, insecure_randomness) for player in players}
    state.commands_file.write_text(json.dumps(commands, indent=2))
    pids = {name: _spawn(command, state, name, cwd=state.player_dir(name)) for name, command in commands.items()}
    pids[DRIVER_METRICS] = _spawn([*FL_COMMAND, "driver-metrics", "--config", str(state.cluster_file)], state, DRIVER_METRICS)
    if prometheus.binary() is None:
        print("local backend: NO PROMETHEUS: `make install` unpacks Debian's; players still export /metrics", flush=True)
    else:
        config = prometheus.write_scrape_config(cluster, state.prometheus_dir / "prometheus.yml")
        listen = f"127.0.0.1:{prometheus_port}"
        page = dashboard.write_assets(state.prometheus_dir / "dashboard")
        pids[PROMETHEUS] = _spawn(prometheus.command(config, state.prometheus_dir / "data", listen, page), state, PROMETHEUS)
    state.pids_file.write_text(json.dumps(pids, indent=2))
    try:
        wait_until_ready(cluster, state, timeout)
    except PlayerUnreachableError:
        down(state)
        raise
    if data is not None:
        prepare_data(cluster, data)
        cluster.save(state.cluster_file)
    return cluster


def prepare_data(cluster: Cluster, data: DataSettings) -> None:
    """The players share this host's disk: split into each owner's directory, or link each one's own files there."""
    from fl.data import datasets
    from fl.data.split import write_shards

    if data.own_data is not None:
        for player in [cluster.model_owner, *cluster.data_owners]:
            link = Path(player.own_data_dir)
            link.unlink(missing_ok=True)
            link.symlink_to((Path(data.own_data) / player.name).resolve(), target_is_directory=True)
        cluster.dataset = None
        return
    dataset = datasets.load(data.dataset, seed=data.seed)
    print(f"SIMULATION ONLY: splitting {dataset.name} ({data.partition}) among {len(cluster.data_owners)} data owners")
    cluster.dataset = write_shards(cluster, dataset, data.partition, data.alpha, data.seed)


def _player_command(state: StateDir, name: str, insecure_randomness: bool) -> list[str]:
    command = [*FL_COMMAND, "player", name, "--config", str(state.cluster_file)]
    return [*command, "--insecure-randomness"] if insecure_randomness else command


def restart_player(state: StateDir, name: str, timeout: float = 90.0) -> None:
    """SIGKILL one player, start it again with the command line `up` gave it, and wait until it answers."""
    stop_player(state, name)
    pids = _read_pids(state)
    command = json.loads(state.commands_file.read_text())[name]
    pids[name] = _spawn(command, state, name, cwd=state.player_dir(name))
    state.pids_file.write_text(json.dumps(pids, indent=2))
    wait_until_ready(Cluster.load(state.cluster_file), state, timeout)


def _spawn(command: list[str], state: StateDir, name: str, cwd: Path | None = None) -> int:
    log = state.log_file(name)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as log_stream:
        process = subprocess.Popen(command, stdout=log_stream, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    return process.pid


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_until_ready(cluster: Cluster, state: StateDir, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pids = _read_pids(state)
    pending = list(cluster.players)
    while pending and time.monotonic() < deadline:
        for player in list(pending):
            if not _alive(pids.get(player.name, -1)):
                raise PlayerUnreachableError(f"player {player.name} exited during start-up: {_tail(state.log_file(player.name))}")
            if probe(player, timeout=0.5):
                pending.remove(player)
        time.sleep(0.2)
    if pending:
        raise PlayerUnreachableError(
            f"player(s) {', '.join(p.name for p in pending)} did not answer within {timeout:.0f}s; see {state.root / 'logs'}"
        )


def status(state: StateDir) -> list[PlayerStatus]:
    cluster = Cluster.load(state.cluster_file)
    pids = _read_pids(state)
    return [
        PlayerStatus(
            player=p.name,
            role=p.role,
            address=p.address,
            process="running" if _alive(pids.get(p.name, -1)) else "stopped",
            where=f"pid {pids.get(p.name)}",
            server="answering" if probe(p, timeout=0.5) else "not answering",
            link="plaintext on loopback",
        )
        for p in cluster.players
    ]


def down(state: StateDir, grace: float = 5.0, volumes: bool = False) -> list[str]:
    """Stop every player process and remove the cluster file and pids; with `volumes`, the players' files too."""
    pids = _read_pids(state)
    for pid in pids.values():
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        _signal(pid, signal.SIGKILL)
    for path in (state.pids_file, state.commands_file, state.cluster_file):
        path.unlink(missing_ok=True)
    if volumes:
        for directory in (state.players_dir, state.prometheus_dir):
            shutil.rmtree(directory, ignore_errors=True)
    return sorted(pids)


def stop_player(state: StateDir, name: str, timeout: float = 10.0) -> None:
    """Kill one player (for failure tests) and wait until its server stops answering.

    The port is the test: a killed leader thread can look like a zombie while the
    process's other threads still hold the listening socket.
    """
    player = Cluster.load(state.cluster_file).player(name)
    _signal(_read_pids(state)[name], signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while probe(player, timeout=0.2):
        if time.monotonic() > deadline:
            raise FLError(f"player {name} still answers {timeout:.0f}s after SIGKILL")
        time.sleep(0.05)


def _read_pids(state: StateDir) -> dict[str, int]:
    if not state.pids_file.exists():
        return {}
    return json.loads(state.pids_file.read_text())


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return not Path(f"/proc/{pid}/status").exists() or "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 3) -> str:
    if not path.exists():
        return "no log"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


class LocalBackend(Backend):
    """One OS process per player on this host; this process is the driver."""

    name = "local"
    driver_is_this_host = True

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        super().__init__(state_dir)
        self.state = StateDir(state_dir)

    @property
    def cluster_file(self) -> Path:
        return self.state.cluster_file

    @property
    def driver_cluster_file(self) -> str:
        return str(self.state.cluster_file)

    def is_up(self) -> bool:
        return any(_alive(pid) for pid in _read_pids(self.state).values())

    def check(self, settings: UpSettings, shaped_links: bool = False) -> None:
        if settings.tls:
            raise FLError(
                "--tls needs each player's own network view (a private link to its sidecar), which processes sharing "
                "one loopback do not have: use --backend docker, where mutual TLS is on by default"
            )
        if shaped_links:
            raise FLError("network profiles need each player's own interface to shape (tc); use --backend docker")
        check_owners(settings.owners)

    def up(self, settings: UpSettings) -> Cluster:
        self.check(settings)
        self.record()
        return up(settings.owners, self.state, settings.insecure_randomness, data=settings.data)

    def shaped_links(self, cluster: Cluster) -> list[tuple[str, str]]:
        self.check(UpSettings(), shaped_links=True)
        return []

    def down(self, volumes: bool = False) -> list[str]:
        stopped = down(self.state, volumes=volumes)
        self.forget()
        return stopped

    @property
    def where(self) -> str:
        return f"one process per player, state in {self.state.root}"

    def logs(self, lines: int) -> str:
        tails = []
        for log in sorted((self.state.root / "logs").glob("*.log")):
            tails += [f"==> {log.name} <==", *log.read_text(errors="replace").splitlines()[-lines:]]
        return "\n".join(tails)

    def status(self) -> list[PlayerStatus]:
        return status(self.state)

    def restart_player(self, name: str) -> None:
        restart_player(self.state, name)

    def interrupt_driver(self) -> None:
        """Nothing to pass on: the driver is the process the terminal's Ctrl-C reached."""

    def exec(self, argv: list[str], options: Sequence[str] = (), **popen: Any) -> subprocess.Popen:
        """`options` are the docker backend's (`docker exec`'s): a local process has none to take."""
        return subprocess.Popen(argv, **popen)
