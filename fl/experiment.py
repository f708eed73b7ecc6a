"""`fl run SCRIPT`: a user's own script as the driver of the cluster, on either backend.

The script runs in the driver's process (this one, under the driver lock), so it is the one
driver of its cluster and a Ctrl-C or SIGTERM reaches it as `KeyboardInterrupt`. It finds
its cluster with `fl.connect()` and writes what it produces under `fl.results_dir()`.

On docker the driver is a container: the script's directory is copied where the driver
container mounts it read-only, the script runs inside it with `fl run`, and its
`results/` is copied back next to the script when it ends, however it ends.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import uuid
from pathlib import Path

from fl import report
from fl.errors import FLError

CLUSTER_FILE_VARIABLE = "FL_CLUSTER_FILE"
RESULTS_VARIABLE = "FL_RESULTS"
INSECURE_VARIABLE = "FL_INSECURE_RANDOMNESS"
RESULTS_DIR = "results"
# what the copy for the driver container leaves out, anywhere in the script's directory
NOT_COPIED = ("__pycache__", ".git")


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
    """Run `script` in this process as `python script args` would, with its cluster; its exit code.

    Its federated runs are reported in `results/<script>.html`, however the script ends.
    """
    os.environ[CLUSTER_FILE_VARIABLE] = str(Path(config).resolve())
    os.environ.setdefault(RESULTS_VARIABLE, str(script.parent / RESULTS_DIR))
    if insecure:
        os.environ[INSECURE_VARIABLE] = "1"
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))
    outcome = "raised an exception"
    with report.recording() as records:
        try:
            code = _run_script(script)
            outcome = f"exit {code}"
            return code
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            facts = {"script": script.name, "arguments": " ".join(args) or "none", "outcome": outcome}
            path = report.write_run_report(results_dir() / f"{script.stem}.html", f"fl run {script.name}", records, facts)
            print(f"report: {path}")


def _run_script(script: Path) -> int:
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    return 0


def run_in_container(backend, script: Path, args: list[str], argv: list[str]) -> int:
    """Copy the script's directory where the driver container sees it read-only, run it there, bring its results back."""
    from fl.backends.docker import RUNS_DIR, RUNS_IN_CONTAINER
    from fl.driver_lock import forward_to_driver

    if "--insecure-randomness" in argv:
        raise FLError("--insecure-randomness is for the local backend; the images carry the secure-random op")
    runs = backend.directory / RUNS_DIR
    if not (runs / "scripts").is_dir():
        raise FLError(f"the cluster of {backend.state_dir} predates `fl run` (no {runs}): restart it with `fl down` and `fl up`")
    run = uuid.uuid4().hex[:8]
    scripts, results = runs / "scripts" / run, runs / "results" / run
    shutil.copytree(script.parent, scripts, ignore=_not_copied(script.parent))
    results.mkdir()
    remote = f"{RUNS_IN_CONTAINER}/scripts/{run}"
    print(f"{backend.name} backend: {script.name} runs in the driver container ({remote}, read-only)")
    try:
        environment = ["-e", f"{RESULTS_VARIABLE}={RUNS_IN_CONTAINER}/results/{run}", "-e", "PYTHONDONTWRITEBYTECODE=1"]
        command = ["fl", "run", "--config", backend.driver_cluster_file, f"{remote}/{script.name}", *args]
        return forward_to_driver(backend, command, [*environment, "-w", remote])
    finally:
        shutil.copytree(results, script.parent / RESULTS_DIR, dirs_exist_ok=True)
        print(f"{backend.name} backend: the run's results copied back to {script.parent / RESULTS_DIR}")
        shutil.rmtree(scripts)
        shutil.rmtree(results)


def _not_copied(top: Path):
    """copytree's filter: caches and git anywhere, and the earlier runs' `results/` beside the script."""

    def ignored(directory: str, names: list[str]) -> list[str]:
        left_out = {*NOT_COPIED, *([RESULTS_DIR] if Path(directory) == top else [])}
        return [name for name in names if name in left_out]

    return ignored
