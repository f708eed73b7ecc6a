"""Losing a player: the round fails fast, names the player, and leaves the model unchanged."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fl.backends import local
from fl.backends.local import StateDir
from fl.cluster import Cluster, probe

SCENARIOS = Path(__file__).parent / "scenarios"


pytestmark = pytest.mark.cluster


@pytest.fixture
def small_cluster(tmp_path):
    state = StateDir(tmp_path)
    local.up(2, state)
    yield state
    local.down(state)


@pytest.fixture(scope="module")
def three_owners(tmp_path_factory):
    """A cluster of its own: these tests freeze its players (and a failed one could leave one frozen)."""
    state = StateDir(tmp_path_factory.mktemp("frozen"))
    local.up(3, state)
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
    assert report["error"] == (
        "RoundFailedError: round 1 failed: not answering: data-owner-1; the model owner's weights are unchanged"
    )
    assert report["weights_unchanged"]
    assert report["failed_after_seconds"] < 10


def frozen(state: StateDir, victim: str, aggregation: str, *min_owners: str) -> dict:
    run = subprocess.run(
        [sys.executable, str(SCENARIOS / "player_frozen.py"), str(state.root), victim, aggregation, *min_owners],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("victim", "aggregation"),
    [
        ("data-owner-1", "additive"),  # its update never comes
        ("server0", "pond"),  # a compute server hangs the secure sum
    ],
)
def test_a_frozen_player_fails_the_round_by_name_well_within_its_deadline_then_training_goes_on(
    three_owners, victim, aggregation
):
    report = frozen(three_owners, victim, aggregation)
    assert report["frozen"]
    assert f"round 1 failed: not answering: {victim}; the model owner's weights are unchanged" in report["error"]
    assert report["weights_unchanged"]
    assert report["seconds"] < 15  # frozen mid-training, found by the probes every 2 s (each waits 2 s for an answer)
    assert report["rounds_after_thaw"] == 1


@pytest.mark.parametrize("aggregation", ["additive", "pond"])
def test_with_a_quorum_rounds_go_on_without_a_frozen_owner_and_take_it_back_once_thawed(three_owners, aggregation):
    report = frozen(three_owners, "data-owner-1", aggregation, "2")
    assert report["frozen"]
    assert report["error"] is None  # both rounds of the fit completed, with two owners each
    others = ["data-owner-0", "data-owner-2"]
    assert [r["participants"] for r in report["rounds"]] == [others, others], report
    first, second = (r["dropped"] for r in report["rounds"])
    assert first == {"data-owner-1": "not answering"}, report
    assert second == {"data-owner-1": "still training an earlier round"}, report
    assert report["rejoined_after_rounds"] <= 3, report  # once its late call ends, it trains again
    assert report["accuracy"] > 0.8


def test_a_restarted_player_comes_back_as_up_started_it(tmp_path):
    """The soak's restart: SIGKILL, then the same command line, here one with --insecure-randomness."""
    state = StateDir(tmp_path)
    local.up(2, state, insecure_randomness=True, data=None)
    try:
        before = json.loads(state.pids_file.read_text())["data-owner-0"]
        local.restart_player(state, "data-owner-0")
        after = json.loads(state.pids_file.read_text())["data-owner-0"]
        command = Path(f"/proc/{after}/cmdline").read_bytes().split(b"\0")
        assert after != before and b"--insecure-randomness" in command and b"data-owner-0" in command
        assert probe(Cluster.load(state.cluster_file).player("data-owner-0"), timeout=5)
    finally:
        local.down(state)
