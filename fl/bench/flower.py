"""Flower as the peer in `fl bench`: SecAgg+ and plaintext FedAvg on this machine, same clients and sizes.

Flower runs under its own deployment engine (one SuperLink, one SuperNode process per
client, the ServerApp and ClientApps in their subprocesses) from `.venv-flower`, which
`make install` creates. The SuperNodes share this host's interfaces, so bytes come from
Flower's own serialization of each client's replies, not from the wire.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from fl.backends.local import free_ports
from fl.errors import FLError

APP_DIR = Path(__file__).with_name("flower_app")
VENV = Path(os.environ.get("FL_FLOWER_VENV", Path(__file__).resolve().parents[2] / ".venv-flower"))
AGGREGATIONS = {"flower-secagg+": True, "flower-fedavg": False}
# Both send each parameter as 4 bytes: SecAgg+ in its default 2^32 ring, FedAvg as float32.
ELEMENT_BYTES = 4
# The largest gap between the aggregate and the true mean that still counts as correct:
# SecAgg+ quantizes [-8, 8] to 2^22 levels, a step of about 4e-6.
TOLERANCE = 1e-4


def version() -> str:
    """The installed flwr version; an FLError saying how to install it when it is missing."""
    python = VENV / "bin" / "python"
    if not python.exists():
        raise FLError(f"Flower is not installed: {VENV} is missing; run `make install` (it creates .venv-flower)")
    result = subprocess.run(
        [str(python), "-c", "import flwr; print(flwr.__version__)"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise FLError(f"Flower in {VENV} does not import: {_last_line(result.stderr)}; run `make install` again")
    return result.stdout.strip()


def measure(aggregation: str, clients: int, size: int, rounds: int, warmup: int, timeout: float = 900.0) -> dict:
    """One benchmark row for Flower, in the same shape as `fl.bench.measure`'s."""
    framework = f"flower {version()}"
    measured = _run(clients, size, AGGREGATIONS[aggregation], rounds + warmup, timeout)[warmup:]
    for index, record in enumerate(measured):
        if record["clients"] != clients or record["failures"] or not record["max_abs_error"] <= TOLERANCE:
            raise FLError(f"{aggregation} round {warmup + index + 1} was wrong: {record}")
    seconds = [record["seconds"] for record in measured]
    return {
        "framework": framework,
        "aggregation": aggregation,
        "owners": clients,
        "size": size,
        "rounds": rounds,
        "median_seconds": statistics.median(seconds),
        "p95_seconds": float(np.percentile(seconds, 95)),
        "protocol_bytes_per_owner": statistics.fmean(b for record in measured for b in record["sent_bytes_per_client"]),
        "minimum_bytes_per_owner": ELEMENT_BYTES * size,
        "wire_bytes_per_owner": None,
        "wire_bytes_per_server": None,
        "wire_bytes_by_server": None,
        "backend": "local",
    }


def _run(clients: int, size: int, secure: bool, rounds: int, timeout: float) -> list[dict]:
    """Start a SuperLink and the SuperNodes, run the app once, stop them all."""
    with tempfile.TemporaryDirectory(prefix="fl-flower-") as root:
        home = Path(root)
        link_port, *node_ports = free_ports(1 + clients)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "bench"\n\n[superlink.bench]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
        )
        environment = {
            **os.environ,
            "FLWR_HOME": str(home),
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}",
        }
        logs = home / "logs"
        logs.mkdir()
        superlink = [
            "flower-superlink", "--insecure", "--port", str(link_port),
            "--database", ":flwr-in-memory:", "--disable-runtime-dependency-installation",
        ]  # fmt: skip
        processes = [_start(superlink, environment, logs / "superlink.log")]
        try:
            _wait_for_port(link_port, processes[0], logs / "superlink.log")
            for index, port in enumerate(node_ports):
                supernode = [
                    "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link_port}",
                    "--port", str(port), "--node-config", f"partition-id={index}",
                ]  # fmt: skip
                processes.append(_start(supernode, environment, logs / f"supernode-{index}.log"))
            out = home / "rounds.json"
            run_config = f"vector-size={size} rounds={rounds} clients={clients} secure={str(secure).lower()} out='{out}'"
            try:
                result = subprocess.run(
                    ["flwr", "run", str(APP_DIR), "bench", "--stream", "--run-config", run_config],
                    env=environment,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise FLError(f"Flower run with {clients} clients and {size:,} parameters took over {timeout:.0f} s") from error
            if result.returncode != 0 or not out.exists():
                raise FLError(f"Flower run failed: {_last_error(result.stdout + result.stderr)}")
            return json.loads(out.read_text())["rounds"]
        finally:
            for process in processes:
                _signal_group(process, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)


def _start(command: list[str], environment: dict, log: Path) -> subprocess.Popen:
    """In its own process group, so that stopping it also stops the apps it spawned."""
    with open(log, "wb") as stream:
        return subprocess.Popen(command, env=environment, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)


def _signal_group(process: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(process.pid, number)
    except ProcessLookupError:
        pass


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FLError(f"Flower SuperLink exited during start-up: {_last_line(log.read_text())}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise FLError(f"Flower SuperLink did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _last_error(text: str) -> str:
    """Flower ends a failed run with a link to its exit codes; the exception line says more."""
    errors = [line for line in text.splitlines() if "Error" in line or "Exception" in line]
    return errors[-1].strip() if errors else _last_line(text)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
