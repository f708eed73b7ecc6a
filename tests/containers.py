"""Helpers of the Docker tests: reach a container of the Compose project, run a scenario script in it."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker as docker_sdk
from docker.models.containers import Container

from fl.backends import docker

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = Path(__file__).parent / "scenarios"
# the Docker tests' own testbed: a state directory of their own, so a user's testbed stays untouched
STATE_DIR = REPO / ".fl-docker-test"
BACKEND = docker.DockerBackend(STATE_DIR)


def interruptible(argv: list[str], **popen: object) -> subprocess.Popen:
    """`argv` started so that a SIGINT reaches it as Ctrl-C would, however pytest itself was started: a background
    job inherits SIGINT ignored (POSIX), and Python then installs no KeyboardInterrupt handler."""
    return subprocess.Popen(argv, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)


def container(engine: docker_sdk.DockerClient, service: str) -> Container:
    return engine.containers.get(BACKEND.container(service))


def copy_into(target: Container, source: Path, directory: str = "/tmp") -> str:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(source.name)
        info.size, info.mode = source.stat().st_size, 0o644
        tar.addfile(info, io.BytesIO(source.read_bytes()))
    assert target.put_archive(directory, archive.getvalue())
    return f"{directory}/{source.name}"


def run_scenario(engine: docker_sdk.DockerClient, name: str, service: str = "driver", *args: str) -> dict:
    """A script from tests/scenarios run by `service`'s Python; its last stdout line is JSON."""
    target = container(engine, service)
    exit_code, output = target.exec_run(["python", copy_into(target, SCENARIOS / name), *args], demux=True)
    stdout, stderr = (part.decode() if part else "" for part in output)
    assert exit_code == 0, stderr[-2000:]
    return json.loads(stdout.strip().splitlines()[-1])


def train_in_driver(engine: docker_sdk.DockerClient, epochs: int, json_name: str) -> dict:
    argv = ["fl", "train", "--aggregation", "additive", "--epochs", str(epochs), "--config", docker.CLUSTER_FILE_IN_CONTAINER]
    exit_code, output = container(engine, "driver").exec_run([*argv, "--json", f"results/{json_name}"])
    assert exit_code == 0, output.decode()[-2000:]
    return json.loads((REPO / "results" / json_name).read_text())


def stdout_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    pending = ""
    for chunk in chunks:
        pending += chunk.decode()
        *complete, pending = pending.split("\n")
        yield from complete


def read_until(lines: Iterator[str], marker: str) -> str:
    """The rest of the first line starting with `marker`."""
    for line in lines:
        if line.startswith(marker):
            return line[len(marker) :].strip()
    raise AssertionError(f"driver scenario ended before printing {marker!r}")


def wait_healthy(target: Container, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        target.reload()
        if target.attrs["State"].get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(1)
    raise AssertionError(f"{target.name} not healthy after {timeout:.0f}s")


def log_lines(engine: docker_sdk.DockerClient, service: str, since: float | None = None) -> list[str]:
    """`service`'s log (a sidecar's HAProxy log: one line per gRPC call), from `since` (epoch seconds, to the
    microsecond: a whole second would take in the calls of the second before) on."""
    logs = container(engine, service).logs(stdout=True, stderr=True, since=since)
    return logs.decode(errors="replace").splitlines()


def quiet_since(engine: docker_sdk.DockerClient, services: list[str], quiet: float = 2.0, timeout: float = 60) -> float:
    """A moment after which none of `services` has logged for `quiet` seconds: a call is logged when its stream
    closes, so an earlier test's last calls may still arrive in the log after it returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        if not any(log_lines(engine, service, now - quiet) for service in services):
            return now
        time.sleep(0.5)
    raise AssertionError(f"{', '.join(services)} kept logging for {timeout:.0f}s with nothing running")
