"""One driver per cluster: `fl train` holds a lock named after its cluster file while it runs.

Two drivers on one cluster would interleave their rounds on the same players. The lock file
also holds the running driver's pid, so a host whose Ctrl-C cannot reach the driver's
process directly (the docker backend runs it in the driver container) can signal it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fl.errors import FLError


def lock_path(cluster_file: str, directory: str | None = None) -> str:
    """The lock of the cluster whose file the driver reads as `cluster_file`, in the driver's temp directory."""
    name = hashlib.sha256(str(Path(cluster_file).absolute()).encode()).hexdigest()[:12]
    return str(Path(directory or tempfile.gettempdir()) / f"fl-driver-{name}.lock")


@contextlib.contextmanager
def hold(cluster_file: str) -> Iterator[None]:
    """Refuse to start when another driver runs on this cluster; the lock goes when the process does."""
    path = lock_path(cluster_file)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise FLError(
                f"another `fl train` (pid {holder}) is driving the cluster of {cluster_file}: wait for it, or stop it "
                "with Ctrl-C where it runs"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            lock.seek(0)
            lock.truncate()


def forward_to_driver(backend, argv: list[str], options: list[str] = ()) -> int:
    """`argv` in the driver container (`options` for `docker exec`); its exit code, and a Ctrl-C here reaches it."""
    driver = backend.exec(argv, options)
    try:
        exit_code = driver.wait()
    except KeyboardInterrupt:
        backend.interrupt_driver()
        try:
            driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            driver.kill()
        raise
    stopped = backend.driver_stopped() if exit_code != 0 else None
    if stopped is not None:
        raise FLError(stopped)
    return exit_code
