"""Fixtures: a real multi-process player cluster and a real Compose testbed, started by the tests themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import fl
from fl.backends import UpSettings, local
from fl.backends.local import StateDir

OWNERS = 3


# fixtures that start real servers: the tests using them are `cluster` tests (`make test-unit` leaves them out)
SERVER_FIXTURES = {"cluster_state", "cluster", "compose_cluster", "images"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs servers `cluster`; Docker tests must run in CI, elsewhere they skip loudly."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or "docker" in item.keywords:
            item.add_marker(pytest.mark.cluster)
    if os.environ.get("CI") or (shutil.which("docker") and _docker_answers()):
        return
    skip = pytest.mark.skip(reason="NO DOCKER ENGINE ANSWERS: docker tests skipped (they are required in CI)")
    for item in items:
        if "docker" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def engine_out_of_the_testbeds_swarm():
    """Set up first, so torn down last: once every Compose project is down, a swarm the tests started is left
    (fl/swarm/nodes.py keeps it while containers resolve names, since leaving would break theirs)."""
    yield
    if shutil.which("docker") and _docker_answers():
        from fl.swarm import nodes

        nodes.down()


def _docker_answers() -> bool:
    import subprocess

    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def cluster_state(tmp_path_factory) -> StateDir:
    """Model owner, 3 data owners, 3 compute servers: one OS process each, with digits shards."""
    # relative, as `make up` passes .fl: players start in their own directories and must still find it
    state = StateDir(Path(os.path.relpath(tmp_path_factory.mktemp("cluster"))))
    local.up(OWNERS, state)
    try:
        yield state
    finally:
        local.down(state)


@pytest.fixture(scope="session")
def cluster(cluster_state) -> fl.Cluster:
    """This test process connected as the driver of the session's cluster."""
    return fl.connect(cluster_state.cluster_file)


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def images() -> None:
    """Build the images (cached layers when nothing changed)."""
    subprocess.run([str(REPO / "scripts" / "build-images.sh")], check=True, cwd=REPO)


@pytest.fixture(scope="session")
def compose_cluster(images) -> fl.Cluster:
    """The Compose testbed with mutual TLS (after whatever an earlier run left behind is gone), for every Docker test."""
    from containers import BACKEND

    os.chdir(REPO)
    if BACKEND.is_up():
        BACKEND.down(volumes=True)
    yield BACKEND.up(UpSettings(OWNERS))
    BACKEND.down(volumes=True)


@pytest.fixture(scope="session")
def engine():
    import docker as docker_sdk

    client = docker_sdk.from_env()
    yield client
    client.close()
