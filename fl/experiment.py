"""`fl run SCRIPT`: a user's own script as the driver of the cluster, on either backend.

The script runs in the driver's process (this one, under the driver lock), so it is the one
driver of its cluster and a Ctrl-C or SIGTERM reaches it as `KeyboardInterrupt`. It finds
its cluster with `fl.connect()` and writes what it produces under `fl.results_dir()`.

On docker the driver is a container: the script's directory is copied into it (owned by
root there, so read-only to the driver's user), the script runs inside it with `fl run`,
and its `results/` is copied back next to the script when it ends, however it ends.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import uuid
from pathlib import Path

from fl.errors import FLError

CLUSTER_FILE_VARIABLE = "FL_CLUSTER_FILE"
RESULTS_VARIABLE = "FL_RESULTS"
INSECURE_VARIABLE = "FL_INSECURE_RANDOMNESS"
RESULTS_DIR = "results"
# what the copy into the driver container leaves out
NOT_COPIED = (f"./{RESULTS_DIR}", "./__pycache__", "./.git")


def cluster_file() -> str:
    """The cluster `fl run` gave this script, else the default state directory's."""
    return os.environ.get(CLUSTER_FILE_VARIABLE, ".fl/cluster.json")


def insecure_randomness() -> bool:
    return os.environ.get(INSECURE_VARIABLE) == "1"


def results_dir() -> Path:
    """Where a script writes its results: `results/` next to it (brought back from the driver container on docker)."""
    path = Path(os.environ.get(RESULTS_VARIABLE, RESULTS_DIR))
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_here(script: Path, args: list[str], config: Path, insecure: bool = False) -> int:
    """Run `script` in this process as `python script args` would, with its cluster; its exit code."""
    os.environ[CLUSTER_FILE_VARIABLE] = str(Path(config).resolve())
    os.environ.setdefault(RESULTS_VARIABLE, str(script.parent / RESULTS_DIR))
    if insecure:
        os.environ[INSECURE_VARIABLE] = "1"
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    return 0


def run_in_container(backend, script: Path, args: list[str], argv: list[str]) -> int:
    """Copy the script's directory into the driver container, run it there, bring its results back."""
    from fl.cli import forward_to_driver

    if "--insecure-randomness" in argv:
        raise FLError("--insecure-randomness is for the local backend; the images carry the secure-random op")
    driver = backend.container("driver")
    remote = f"/tmp/fl-run-{uuid.uuid4().hex[:8]}"
    source = script.parent
    _copy_in(driver, source, remote)
    print(f"{backend.name} backend: {script.name} runs in the driver container ({driver}:{remote}, read-only)")
    try:
        environment = ["-e", f"{RESULTS_VARIABLE}={remote}/{RESULTS_DIR}", "-w", remote]
        command = ["fl", "run", "--config", backend.driver_cluster_file, f"{remote}/{script.name}", *args]
        return forward_to_driver(backend, command, environment)
    finally:
        _copy_out(driver, f"{remote}/{RESULTS_DIR}", source / RESULTS_DIR)
        subprocess.run(["docker", "exec", "-u", "root", driver, "rm", "-rf", remote], capture_output=True)


def _copy_in(driver: str, source: Path, remote: str) -> None:
    unpack = (
        f"mkdir -p {remote}/{RESULTS_DIR} && tar -C {remote} --no-same-owner -xf - && chmod -R a-w,a+rX {remote} "
        f"&& chown fl {remote}/{RESULTS_DIR} && chmod u+w {remote}/{RESULTS_DIR}"
    )
    excluded = [f"--exclude={path}" for path in NOT_COPIED]
    packer = subprocess.Popen(["tar", "-C", str(source), *excluded, "-cf", "-", "."], stdout=subprocess.PIPE)
    copied = subprocess.run(
        ["docker", "exec", "-i", "-u", "root", driver, "sh", "-c", unpack], stdin=packer.stdout, capture_output=True, text=True
    )
    packer.stdout.close()
    if packer.wait() != 0 or copied.returncode != 0:
        raise FLError(f"could not copy {source} into {driver}: {copied.stderr.strip() or 'tar failed'}")


def _copy_out(driver: str, remote: str, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    packer = subprocess.Popen(["docker", "exec", driver, "tar", "-C", remote, "-cf", "-", "."], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(target), "-xf", "-"], stdin=packer.stdout, capture_output=True)
    packer.stdout.close()
    packer.wait()
