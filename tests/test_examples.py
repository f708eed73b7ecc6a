"""`fl run` and the examples on the local backend, each as a user runs it: `fl up`, then `fl run SCRIPT`."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
from dp_accounting.rdp import RdpAccountant
from report_page import ReportPage

from fl.privacy.accountant import ORDERS

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
FL = [sys.executable, "-m", "fl"]


def fl_command(*args: str, **run) -> subprocess.CompletedProcess:
    return subprocess.run([*FL, *args], capture_output=True, text=True, cwd=REPO, **run)


def copy_example(name: str, directory: Path) -> Path:
    """An example in a directory of its own, as a user's experiment is: its results/ lands there."""
    directory.mkdir(parents=True, exist_ok=True)
    for helper in ("experiment_args.py", name):
        shutil.copy(EXAMPLES / helper, directory / helper)
    return directory / name


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """A local testbed of its own with diabetes shards (the examples re-split it as they need)."""
    state = tmp_path_factory.mktemp("examples")
    up = fl_command("up", "--backend", "local", "--owners", "3", "--dataset", "diabetes", "--state-dir", str(state))
    assert up.returncode == 0, up.stderr[-1500:]
    yield state
    fl_command("down", "--state-dir", str(state))


def split(state: Path, dataset: str) -> None:
    """The shards an example needs, whichever test ran before on the module's testbed."""
    made = fl_command("split", "--dataset", dataset, "--config", str(state / "cluster.json"))
    assert made.returncode == 0, made.stderr[-1500:]


def run_example(state: Path, script: Path, *args: str) -> dict:
    ran = fl_command("run", "--state-dir", str(state), str(script), *args, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    (written,) = (script.parent / "results").glob(f"{script.stem}*.json")  # e.g. non_iid-additive.json
    return json.loads(written.read_text())


def test_the_regression_example_reports_r2_against_central_training(testbed, tmp_path):
    split(testbed, "diabetes")
    result = run_example(testbed, copy_example("regression_diabetes.py", tmp_path), "--rounds", "40")
    assert result["central_r2"] > 0.2 and abs(result["federated_r2"] - result["central_r2"]) < 0.05, result


def test_the_cnn_and_non_iid_examples_train_on_digits(testbed, tmp_path):
    split(testbed, "digits")
    assert run_example(testbed, copy_example("cnn_digits.py", tmp_path / "cnn"), "--rounds", "6")["test_accuracy"] > 0.8
    table = run_example(testbed, copy_example("non_iid.py", tmp_path / "non_iid"), "--rounds", "3")
    assert set(table) == {"central", "FedAvg, uniform", "FedAvg, weighted", "FedAvgM", "FedAdam", "FedYogi"}
    assert all(0.3 < accuracy <= 1 for accuracy in table.values()), table
    page = ReportPage(tmp_path / "non_iid" / "results" / "non_iid.html")  # one run per strategy, on every plot
    assert page.title == "fl run non_iid.py"
    assert page.facts() == {"script": "non_iid.py", "arguments": "--rounds 3", "outcome": "exit 0"}
    assert len(page.plots) == 4 and page.plots[0] == (1000, 360)  # the loss and the accuracy, by round
    assert "None: every round averaged every owner." in page.paragraphs


def test_the_dp_example_spends_the_gaussian_epsilon_centrally_and_about_as_much_distributed(testbed, tmp_path):
    split(testbed, "digits")
    result = run_example(testbed, copy_example("distributed_dp.py", tmp_path), "--rounds", "3", "--noise-multiplier", "0.7")
    library = RdpAccountant(ORDERS)
    library.compose(SelfComposedDpEvent(GaussianDpEvent(0.7), 3))
    central, distributed = result["central DP"], result["distributed DP"]
    assert central["epsilon"] == pytest.approx(library.get_epsilon(1e-5), rel=1e-9), result
    # Skellam on a fine lattice: a little more than the Gaussian, for the rounding's slack in the sensitivity
    assert central["epsilon"] < distributed["epsilon"] < 1.01 * central["epsilon"], result
    assert all(0 <= run["test_accuracy"] <= 1 for run in (central, distributed)), result


def test_a_script_gets_its_cluster_and_arguments_and_its_exit_code_is_fl_runs(testbed, tmp_path):
    script = tmp_path / "probe.py"
    shutil.copy(REPO / "tests" / "scenarios" / "run_probe.py", script)
    ran = fl_command("run", "--state-dir", str(testbed), str(script), "3", "--flag-of-the-script")
    assert ran.returncode == 3, ran.stderr[-1500:]
    probe = json.loads((tmp_path / "results" / "probe.json").read_text())
    assert probe["players"] == 7 and probe["argv"] == ["3", "--flag-of-the-script"]
    missing = fl_command("run", "--state-dir", str(testbed), str(tmp_path / "nothing.py"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"fl run: error: {tmp_path / 'nothing.py'}: no such script; pass the path of a Python file, e.g. examples/cnn_digits.py"
    )


def test_a_stopped_script_ends_with_130_and_frees_the_cluster_for_the_next_driver(testbed, tmp_path):
    split(testbed, "digits")
    script = copy_example("cnn_digits.py", tmp_path)
    command = [*FL, "run", "--state-dir", str(testbed), str(script), "--rounds", "500"]
    running = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in running.stdout:
            if line.startswith("Epoch 3/"):
                break
        running.send_signal(signal.SIGTERM)  # what a stopped run gets; fl maps it to Ctrl-C
        _, stderr = running.communicate(timeout=90)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode == 130 and stderr.strip().splitlines()[-1] == "fl run: interrupted", stderr[-1500:]
    started = time.monotonic()
    probe = shutil.copy(REPO / "tests" / "scenarios" / "run_probe.py", tmp_path / "probe.py")
    again = fl_command("run", "--state-dir", str(testbed), str(probe), "0")
    assert again.returncode == 0 and time.monotonic() - started < 120, again.stderr[-1500:]


def test_owners_own_files_are_linked_into_their_own_directories_and_the_csv_example_trains(tmp_path):
    owners = tmp_path / "owners"
    made = subprocess.run([sys.executable, str(EXAMPLES / "make_owner_files.py"), str(owners)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    state = tmp_path / "state"
    shutil.rmtree(owners / "data-owner-2")
    refused = fl_command("up", "--backend", "local", "--data", str(owners), "--state-dir", str(state))
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"fl up: error: --data {owners}: no directory for data-owner-2; make {owners}/<player>/ "
        "for every data owner and the model owner, holding that player's own files"
    )
    assert not (state / "pids.json").exists()  # nothing was started
    made = subprocess.run([sys.executable, str(EXAMPLES / "make_owner_files.py"), str(owners)], capture_output=True, text=True)
    up = fl_command("up", "--backend", "local", "--data", str(owners), "--state-dir", str(state))
    try:
        assert up.returncode == 0, up.stderr[-1500:]
        assert "data: each owner's own files (fl up --data)" in up.stdout
        own = state / "players" / "data-owner-1" / "own"
        assert own.resolve() == (owners / "data-owner-1").resolve()
        assert not (state / "players" / "data-owner-1" / "train.tfrecord").exists()  # no simulated split
        result = run_example(state, copy_example("csv_pipeline.py", tmp_path / "csv"), "--rounds", "8")
        assert result["test_accuracy"] > 0.85, result
    finally:
        fl_command("down", "--state-dir", str(state))
