"""Checkpoints on the model owner, and a run that resumes where an interrupted one stopped."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from report_page import ReportPage

import fl
from fl.aggregation.registry import make_aggregation
from fl.checkpoint import ModelOwnerCheckpoints
from fl.errors import FLError
from fl.settings import TrainSettings
from fl.train import build_classifier, train


def model_on_the_model_owner(cluster):
    federated = fl.FederatedLearning(cluster.model_owner, make_aggregation("plaintext", cluster))
    with federated:
        model = build_classifier((8, 8, 1), 10, hidden_units=64, learning_rate=0.3)
    return model, federated.server_update(model).state


def checkpoints_of(cluster) -> ModelOwnerCheckpoints:
    """The checkpoints `fl train` writes: the built-in classifier's weights and its server optimizer's state."""
    return ModelOwnerCheckpoints(cluster.model_owner, *model_on_the_model_owner(cluster))


def completed_rounds(directory: Path) -> int:
    rounds = [0]
    for manifest in directory.glob("manifest-*.json"):
        try:
            rounds.append(json.loads(manifest.read_text())["completed_rounds"])
        except (ValueError, KeyError):
            pass
    return max(rounds)


def test_each_round_is_checkpointed_on_the_model_owner_and_a_torn_checkpoint_is_passed_over(cluster_state, cluster):
    train(str(cluster_state.cluster_file), TrainSettings(epochs=3, verbose=0))
    directory = Path(cluster.model_owner.data_dir) / "checkpoints"  # the model owner's own storage
    assert sorted(p.name for p in directory.iterdir()) == ["manifest-a.json", "manifest-b.json", "weights-a.bin", "weights-b.bin"]
    checkpoints = checkpoints_of(cluster)
    latest = checkpoints.latest()
    assert latest.completed_rounds == 3 and latest.settings["learning_rate"] == 0.3 and "epochs" not in latest.settings
    (directory / f"manifest-{latest.slot}.json").write_text('{"completed_rou')  # a crash in the middle of the write
    older = checkpoints.latest()
    assert older.completed_rounds == 2
    (directory / f"weights-{older.slot}.bin").write_bytes(b"torn")
    assert checkpoints.latest() is None


@pytest.mark.parametrize("server", [("sgd", 1.0), ("adam", 0.01)])
def test_an_interrupted_run_says_so_and_its_resumption_ends_where_an_uninterrupted_run_does(
    cluster_state, cluster, tmp_path, server
):
    """Bit for bit: the weights and the server optimizer's moments after the resumed run are the uninterrupted run's."""
    config = str(cluster_state.cluster_file)
    optimizer, rate = server
    uninterrupted = train(config, TrainSettings(epochs=6, verbose=0, server_optimizer=optimizer, server_learning_rate=rate))
    fingerprint = checkpoints_of(cluster).latest().fingerprint  # of the weights and the optimizer state, on the model owner
    command = [sys.executable, "-m", "fl", "train", "--config", config, "--state-dir", str(tmp_path), "--epochs", "6"]
    command += ["--server-optimizer", optimizer, "--server-learning-rate", str(rate)]
    directory = Path(cluster.model_owner.data_dir) / "checkpoints"
    for manifest in directory.glob("manifest-*.json"):
        manifest.write_text("")  # what the next run clears when it begins; cleared here, so the wait below sees its rounds
    first = subprocess.Popen([*command, "--json", str(tmp_path / "first.json")], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while completed_rounds(directory) < 2:
        assert time.monotonic() < deadline and first.poll() is None, "the first run did not get to round 2"
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130 and stderr.strip().splitlines()[-1] == "fl train: interrupted", stderr[-1500:]
    interrupted = json.loads((tmp_path / "first.json").read_text())
    assert interrupted["status"] == "interrupted" and 2 <= interrupted["completed_rounds"] < 6
    page = ReportPage(tmp_path / "first.html")  # the report beside the JSON, of the same ending
    assert page.title == "fl train: additive on digits, 3 owners (interrupted)"
    assert page.facts()["status"] == "interrupted" and page.facts()["rounds"] == str(interrupted["rounds"])
    assert len(page.plots) == 4 and page.plots[0] == (1000, 360)  # the loss and the accuracy, by round
    resumed = subprocess.run([*command, "--resume", "--json", str(tmp_path / "resumed.json")], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert f"resuming after round {interrupted['completed_rounds'] - 1}" in resumed.stdout
    summary = json.loads((tmp_path / "resumed.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from_round"] == interrupted["completed_rounds"]
    assert summary["rounds"] == 6 - interrupted["completed_rounds"]
    assert summary["test_accuracy"] == pytest.approx(uninterrupted["test_accuracy"], abs=1e-9)
    assert summary["test_loss"] == pytest.approx(uninterrupted["test_loss"], rel=1e-5)
    latest = checkpoints_of(cluster).latest()
    assert latest.completed_rounds == 6 and latest.fingerprint == fingerprint


def test_resume_refuses_other_settings_and_a_missing_checkpoint(cluster_state, cluster, tmp_path):
    config = str(cluster_state.cluster_file)
    train(config, TrainSettings(epochs=1, verbose=0))
    with pytest.raises(
        FLError, match=r"--resume: the checkpoint of round 1 was written with learning_rate=0.3 \(this run: 0.1\)"
    ):
        train(config, TrainSettings(epochs=2, learning_rate=0.1, verbose=0, resume=True))
    for manifest in (Path(cluster.model_owner.data_dir) / "checkpoints").glob("manifest-*.json"):
        manifest.write_text("")
    with pytest.raises(FLError, match="--resume: no checkpoint on model-owner"):
        train(config, TrainSettings(epochs=2, verbose=0, resume=True))


def test_the_final_model_is_saved_on_the_model_owner_in_keras_format(cluster_state, cluster, tmp_path):
    config = str(cluster_state.cluster_file)
    command = [sys.executable, "-m", "fl", "train", "--config", config, "--state-dir", str(tmp_path), "--epochs", "2"]
    refused = subprocess.run([*command, "--save", "model.h5"], capture_output=True, text=True)
    assert refused.returncode == 2 and "'model.h5': the Keras format's files end in .keras" in refused.stderr
    saving = ["--save", "exported/final.keras", "--json", str(tmp_path / "run.json")]
    saved = subprocess.run([*command, *saving], capture_output=True, text=True)
    assert saved.returncode == 0, saved.stderr[-1500:]
    path = Path(cluster.model_owner.data_dir) / "exported" / "final.keras"  # the model owner's own storage
    assert f"saved the model in Keras format on model-owner: {path}" in saved.stdout
    assert json.loads((tmp_path / "run.json").read_text())["saved_model"] == {"player": "model-owner", "path": str(path)}
    loaded = tf.keras.models.load_model(path)
    final, state = model_on_the_model_owner(cluster)
    checkpoints = ModelOwnerCheckpoints(cluster.model_owner, final, state)
    checkpoints.restore(checkpoints.latest())  # the weights after the run's last round
    for exported, trained in zip(loaded.get_weights(), final.get_weights()):
        np.testing.assert_array_equal(exported, trained)
    assert loaded.predict(np.zeros((1, 8, 8, 1), np.float32), verbose=0).shape == (1, 10)


def test_a_quorum_the_cluster_cannot_meet_is_refused_before_the_checkpoints_are_touched(cluster_state, cluster, tmp_path):
    config = str(cluster_state.cluster_file)
    train(config, TrainSettings(epochs=1, verbose=0))
    command = [sys.executable, "-m", "fl", "train", "--config", config, "--state-dir", str(tmp_path)]
    for quorum in ("1", "4"):
        refused = subprocess.run([*command, "--min-owners", quorum], capture_output=True, text=True)
        assert refused.returncode == 2, refused.stderr[-1500:]
        assert refused.stderr.strip().splitlines()[-1] == (
            f"fl train: error: --min-owners {quorum}: a round averages at least 2 owners and at most the 3 training; "
            "pass a number in between"
        )
    latest = checkpoints_of(cluster).latest()
    assert latest is not None and latest.completed_rounds == 1  # the last run's checkpoint is still there
