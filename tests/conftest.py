"""Fixtures: a real multi-process player cluster, started by the tests themselves."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import fl
from fl.backends import local
from fl.backends.local import StateDir
from fl.data import datasets
from fl.data.split import write_shards

OWNERS = 3


def pytest_collection_modifyitems(config, items):
    """Docker tests must run in CI; elsewhere they skip loudly when no engine answers."""
    if os.environ.get("CI") or (shutil.which("docker") and _docker_answers()):
        return
    skip = pytest.mark.skip(reason="NO DOCKER ENGINE ANSWERS: docker tests skipped (they are required in CI)")
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(skip)


def _docker_answers() -> bool:
    import subprocess

    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def cluster_state(tmp_path_factory) -> StateDir:
    """Model owner, 3 data owners, 3 compute servers: one OS process each, with digits shards."""
    # relative, as `make up` passes .fl: players start in their own directories and must still find it
    state = StateDir(Path(os.path.relpath(tmp_path_factory.mktemp("cluster"))))
    cluster = local.up(OWNERS, state)
    try:
        cluster.extra["dataset"] = write_shards(cluster, datasets.load("digits"))
        cluster.save(state.cluster_file)
        yield state
    finally:
        local.down(state)


@pytest.fixture(scope="session")
def cluster(cluster_state) -> fl.Cluster:
    """This test process connected as the driver of the session's cluster."""
    return fl.connect(cluster_state.cluster_file)
