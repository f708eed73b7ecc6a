"""The rendered Compose project: what the committed compose/ says, without starting anything."""

from pathlib import Path

import pytest
import yaml

from fl.backends import DataSettings, docker
from fl.cli import main
from fl.cluster import Cluster

DIGITS = DataSettings("digits")


def render(tmp_path: Path, owners: int) -> Path:
    return docker.write_project(tmp_path, owners, DIGITS)


def test_fl_render_writes_the_project_without_starting_anything(tmp_path):
    assert main(["render", "--owners", "4", "--directory", str(tmp_path)]) == 0
    cluster = Cluster.load(tmp_path / "cluster.json")
    assert len(cluster.data_owners) == 4 and cluster.backend == "docker"
    services = yaml.safe_load((tmp_path / "compose.yaml").read_text())["services"]
    assert set(services) >= {p.name for p in cluster.players} | {"driver", "prometheus"}


def test_players_publish_no_port_and_each_volume_has_one_owner(tmp_path):
    services = yaml.safe_load(render(tmp_path, 5).read_text())["services"]
    players = [name for name, _ in docker.player_names(5)]
    assert set(services) == {*players, *(f"{name}-tls" for name in [*players, "driver"]), "driver", "prometheus"}
    assert all("ports" not in services[name] for name in players)
    mounts = [volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])]
    named = [mount for mount in mounts if mount.endswith("-data")]
    assert len(named) == len(set(named)) == 1 + 5 + 1  # the owners' own and Prometheus's
    assert not any("-data" in volume for volume in services["driver"]["volumes"])
    runs = [name for name, service in services.items() if any(":/runs/" in v for v in service.get("volumes", []))]
    assert runs == ["driver"] and "./runs/scripts:/runs/scripts:ro" in services["driver"]["volumes"]


def test_each_tf_server_sits_alone_with_its_sidecar_which_answers_there_to_every_peer(tmp_path):
    compose = yaml.safe_load(render(tmp_path, 3).read_text())
    services, networks = compose["services"], compose["networks"]
    players = [name for name, _ in docker.player_names(3)]
    for identity in [*players, "driver"]:
        link = f"link-{identity}"
        assert services[identity]["networks"] == [link] and networks[link] == {"internal": True}
        sidecar = services[f"{identity}-tls"]
        assert set(sidecar["networks"]) == {"players", link}
        assert sidecar["networks"][link]["aliases"] == [name for name in players if name != identity]
        members = [name for name, service in services.items() if link in service.get("networks", [])]
        assert sorted(members) == sorted([identity, f"{identity}-tls"])
        pki_mounts = [v for v in sidecar["volumes"] if "/pki/" in v]
        assert pki_mounts == [f"./pki/{identity}:/etc/fl/tls:ro"]
        assert not any("/pki" in volume for volume in services[identity]["volumes"])
    driver_waits_for = set(services["driver"]["depends_on"])
    assert driver_waits_for == {*players, *(f"{name}-tls" for name in players)}


def test_no_tls_renders_the_plaintext_layout_and_says_so_in_the_cluster_file(tmp_path):
    assert main(["render", "--owners", "3", "--no-tls", "--directory", str(tmp_path)]) == 0
    services = yaml.safe_load((tmp_path / "compose.yaml").read_text())["services"]
    assert not [name for name in services if name.endswith("-tls")]
    assert all(services[name]["networks"] == ["players"] for name, _ in docker.player_names(3))
    cluster = Cluster.load(tmp_path / "cluster.json")
    assert cluster.mesh is None and cluster.links == "plaintext gRPC"
    assert not (tmp_path / "pki").exists()


@pytest.mark.parametrize(("tls", "target", "scheme"), [(True, "{name}-tls:9401", "https"), (False, "{name}:9400", None)])
def test_prometheus_scrapes_every_player_and_the_driver(tmp_path, tls, target, scheme):
    docker.write_project(tmp_path, 4, DIGITS, tls=tls)
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    targets = [target for job in config["scrape_configs"] for group in job["static_configs"] for target in group["targets"]]
    players = [name for name, _ in docker.player_names(4)]
    assert sorted(targets) == sorted(target.format(name=name) for name in [*players, "driver"])
    assert {job.get("scheme") for job in config["scrape_configs"]} == {scheme}
    prometheus = yaml.safe_load((tmp_path / "compose.yaml").read_text())["services"]["prometheus"]
    assert ("./pki/prometheus:/etc/fl/tls:ro" in prometheus["volumes"]) == tls
