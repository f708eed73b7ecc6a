"""`fl train`'s settings: every bad one is refused in one line before a cluster is looked for."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fl.cli import main
from fl.settings import flag_fields

BAD_SETTINGS = [
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--epochs", "-3"], "--epochs -3: must be at least 1"),
    (["--rounds-per-epoch", "0"], "--rounds-per-epoch 0: must be at least 1"),
    (["--local-epochs", "0"], "local_epochs 0: each owner trains at least 1 epoch a round"),
    (["--batch-size", "0"], "batch_size 0: at least 1 example a batch"),
    (["--value-range", "-1"], "value_range -1: the range ±R needs R > 0"),
    (["--max-clipped-fraction", "2"], "max_clipped_fraction 2: a fraction in [0, 1]"),
    (["--server-learning-rate", "0"], "server learning rate 0: > 0"),
    (["--proximal-mu", "-1"], "proximal_mu -1: FedProx's mu is >= 0"),
    (["--max-weight", "0"], "max_weight 0: the most examples an owner has in a local epoch"),
    (["--dp-noise-multiplier", "-1"], "--dp-noise-multiplier -1: the noise's scale over the clip, > 0"),
    (["--dp-noise-multiplier", "1", "--dp-clip-norm", "0"], "--dp-clip-norm 0: the largest L2 norm"),
    (["--dp-noise-multiplier", "1", "--dp-delta", "1"], "--dp-delta 1: a probability in (0, 1)"),
    (["--dp-noise-multiplier", "1", "--dp-target-epsilon", "-2"], "--dp-target-epsilon -2: a budget > 0"),
    (["--dp-clip-norm", "2"], "--dp-clip-norm without --dp-noise-multiplier: DP is off"),
    (["--dp-central"], "--dp-central without --dp-noise-multiplier: DP is off"),
    (["--dp-noise-multiplier", "1", "--weighting", "examples"], "--weighting examples with --dp-noise-multiplier"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_SETTINGS, ids=[" ".join(flags) for flags, _ in BAD_SETTINGS])
def test_a_bad_setting_is_one_line_naming_it_and_nothing_is_made(tmp_path, capsys, flags, message):
    state_dir = tmp_path / "state"
    assert main(["train", "--state-dir", str(state_dir), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fl train: error: {message}"), lines
    assert not state_dir.exists()


def test_every_setting_is_a_flag_of_fl_train(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert [name for name in flag_fields() if f"--{name.replace('_', '-')} " not in text] == []


def test_a_driver_started_with_sigint_ignored_says_how_to_stop_it(tmp_path):
    """A background job inherits SIGINT ignored; `fl train` keeps it so (POSIX) and says SIGTERM stops it."""
    command = [str(Path(sys.executable).with_name("fl")), "train", "--state-dir", str(tmp_path)]
    ignored = subprocess.run(
        command, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN), capture_output=True, text=True
    )
    default = subprocess.run(command, capture_output=True, text=True)
    assert ignored.returncode == default.returncode == 2
    first = ignored.stderr.splitlines()[0]
    assert first.startswith("fl train: SIGINT is ignored (started as a background job)") and "SIGTERM (kill " in first
    assert "SIGINT" not in default.stderr


@pytest.mark.parametrize("handler, seen", [("installed", "stopped at the round boundary"), ("default", "went on")])
def test_a_ctrl_c_lost_in_a_gc_callback_still_stops_at_the_next_round(handler, seen):
    """Python drops a KeyboardInterrupt raised inside a gc callback ("Exception ignored"); fl's handler keeps the request."""
    scenario = Path(__file__).parent / "scenarios" / "interrupt_in_gc_callback.py"
    run = subprocess.run(
        [sys.executable, str(scenario), handler],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Exception ignored" in run.stderr and "KeyboardInterrupt" in run.stderr, run.stderr
    assert (run.returncode, run.stdout.strip()) == (0, seen)
