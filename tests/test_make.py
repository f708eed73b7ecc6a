"""`make train` forwards every `fl train` setting: a setting added to fl/settings.py and not to the Makefile fails here."""

import dataclasses
import subprocess
from pathlib import Path

import pytest

from fl import settings

REPO = Path(__file__).resolve().parents[1]
FIELDS = {field.name: field for field in dataclasses.fields(settings.TrainSettings)}


def make_train(*assignments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-n", "train", *assignments], capture_output=True, text=True, cwd=REPO)


@pytest.mark.parametrize("name", settings.flag_fields())
def test_make_train_forwards_the_setting_to_fl_train(name):
    flag = f"--{settings.flag_name(name)}"
    if isinstance(FIELDS[name].default, bool):
        assert flag not in make_train().stdout.split()
        assert flag in make_train(f"{name.upper()}=1").stdout.split()
    else:
        words = make_train(f"{name.upper()}=7").stdout.split()
        assert words[words.index(flag) + 1] == "7"


def test_a_switch_set_to_anything_but_1_is_refused_in_one_line():
    made = make_train("DP_CENTRAL=yes")
    assert made.returncode != 0
    assert "DP_CENTRAL=yes: set it to 1 or leave it unset." in made.stderr
