"""Losing a player: the round fails fast, names the player, and leaves the model unchanged."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fl.backends import local
from fl.backends.local import StateDir
from fl.data import datasets
from fl.data.split import write_shards

SCENARIOS = Path(__file__).parent / "scenarios"


pytestmark = pytest.mark.cluster


@pytest.fixture
def small_cluster(tmp_path):
    state = StateDir(tmp_path)
    cluster = local.up(2, state)
    cluster.dataset = write_shards(cluster, datasets.load("digits"))
    cluster.save(state.cluster_file)
    yield state
    local.down(state)


def test_unreachable_data_owner_fails_the_round_by_name_and_keeps_the_weights(small_cluster):
    run = subprocess.run(
        [sys.executable, str(SCENARIOS / "owner_lost.py"), str(small_cluster.root), "data-owner-1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["error"].startswith("PlayerUnreachableError: player(s) not answering: data-owner-1")
    assert report["weights_unchanged"]
    assert report["failed_after_seconds"] < 10
