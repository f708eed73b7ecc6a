"""The rendered Compose project: what the committed compose/ says, without starting anything."""

from pathlib import Path

import yaml

from fl.backends import docker
from fl.cli import main
from fl.cluster import Cluster

DIGITS = docker.dataset_settings("digits")


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
    players = [name for name in services if name not in ("driver", "prometheus", "grafana")]
    assert len(players) == 1 + 5 + 3
    assert all("ports" not in services[name] for name in players)
    mounts = [volume.split(":")[0] for service in services.values() for volume in service.get("volumes", [])]
    named = [mount for mount in mounts if mount.endswith("-data")]
    assert len(named) == len(set(named)) == 1 + 5 + 1  # the owners' own and Prometheus's
    assert not any("-data" in volume for volume in services["driver"]["volumes"])


def test_prometheus_scrapes_every_player_and_the_driver(tmp_path):
    render(tmp_path, 4)
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    targets = [target for job in config["scrape_configs"] for group in job["static_configs"] for target in group["targets"]]
    players = [name for name, _ in docker.player_names(4)]
    assert sorted(targets) == sorted(f"{name}:{docker.METRICS_PORT}" for name in [*players, "driver"])
