"""Which cluster a command acts on, and what `fl up` refuses before starting anything (no servers needed)."""

import os

import pytest

from fl import backends, driver_lock
from fl.backends import PLAYER_MEMORY_BYTES, check_owners
from fl.backends.docker import DockerBackend, project_name
from fl.backends.local import LocalBackend
from fl.backends.swarm import SwarmBackend
from fl.cli import main
from fl.errors import FLError


def test_a_state_directory_without_a_cluster_is_no_cluster(tmp_path, capsys):
    assert backends.active(tmp_path) is None
    assert main(["down", "--state-dir", str(tmp_path)]) == 0
    assert f"no cluster in {tmp_path}: nothing to stop" in capsys.readouterr().out
    for command in (["status"], ["logs"]):
        assert main([*command, "--state-dir", str(tmp_path)]) == 2
        assert f"no cluster in {tmp_path}: start one with `fl up --state-dir {tmp_path}`" in capsys.readouterr().err


def test_the_recorded_backend_is_the_one_a_state_directory_gets(tmp_path):
    local, docker = tmp_path / "local", tmp_path / "docker"
    LocalBackend(local).record()
    DockerBackend(docker).record()
    assert isinstance(backends.active(local), LocalBackend)
    found = backends.active(docker)
    assert type(found) is DockerBackend and found.project == project_name(docker)
    SwarmBackend(tmp_path / "swarm").record()
    assert type(backends.active(tmp_path / "swarm")) is SwarmBackend
    (local / backends.BACKEND_RECORD).write_text("kubernetes\n")
    with pytest.raises(FLError, match="names backend 'kubernetes', not one of local, docker, swarm"):
        backends.active(local)


def test_each_state_directory_has_its_own_compose_project(tmp_path, monkeypatch):
    first, second = DockerBackend(tmp_path / "a"), DockerBackend(tmp_path / "b")
    assert first.project != second.project and first.project.startswith("fl-testbed-")
    monkeypatch.chdir(tmp_path)
    assert DockerBackend("a").project == first.project  # the same directory, however it is named
    assert first.directory == (tmp_path / "a" / "compose")


def test_too_many_owners_for_this_machine_are_refused_saying_what_they_would_need():
    available = 24 * 2**30
    with pytest.raises(FLError) as refused:
        check_owners(40, available_bytes=available)
    needed = 44 * PLAYER_MEMORY_BYTES / 2**30
    most = available // PLAYER_MEMORY_BYTES - 4
    assert str(refused.value) == (
        f"--owners 40: 44 players need about {needed:.1f} GiB ({PLAYER_MEMORY_BYTES / 2**30:.2f} GiB each), "
        f"this machine has 24.0 GiB available; use at most {most} owners"
    )
    check_owners(most, available_bytes=available)
    with pytest.raises(FLError, match="--owners 1: secure averaging needs at least 2 data owners"):
        check_owners(1, available_bytes=available)


def test_up_refuses_before_recording_or_starting_anything(tmp_path, capsys):
    assert main(["up", "--backend", "local", "--owners", "1", "--state-dir", str(tmp_path)]) == 2
    assert "--owners 1: secure averaging needs at least 2 data owners" in capsys.readouterr().err
    assert backends.active(tmp_path) is None and not (tmp_path / "cluster.json").exists()


def test_train_has_no_dataset_flag_to_ignore():
    with pytest.raises(SystemExit) as parsed:
        main(["train", "--dataset", "mnist"])
    assert parsed.value.code == 2


def test_a_second_driver_on_the_same_cluster_is_refused_naming_the_first(tmp_path):
    cluster_file = str(tmp_path / "cluster.json")
    with driver_lock.hold(cluster_file):
        with pytest.raises(FLError, match=rf"another `fl train` \(pid {os.getpid()}\) is driving the cluster of"):
            with driver_lock.hold(cluster_file):
                pass
        with driver_lock.hold(str(tmp_path / "other-cluster.json")):
            pass
    with driver_lock.hold(cluster_file):  # released with its holder
        pass
