"""Cluster-file validation: every broken file gives one clear error."""

import importlib
import json

import pytest

from fl.aggregation.registry import REGISTRY, registration
from fl.cluster import Cluster
from fl.errors import ClusterConfigError


def cluster_dict(owners: int = 3, servers: int = 3) -> dict:
    names = ["model-owner", *(f"data-owner-{i}" for i in range(owners)), *(f"server{i}" for i in range(servers))]
    roles = ["model_owner", *["data_owner"] * owners, *["compute_server"] * servers]
    return {
        "hostmap": {name: f"127.0.0.1:{7100 + i}" for i, name in enumerate(names)},
        "roles": dict(zip(names, roles)),
    }


def test_valid_file_round_trips(tmp_path):
    path = tmp_path / "cluster.json"
    Cluster.from_dict(cluster_dict()).save(path)
    cluster = Cluster.load(path)
    assert [p.name for p in cluster.data_owners] == ["data-owner-0", "data-owner-1", "data-owner-2"]
    assert cluster.model_owner.device_name == "/job:tfe/replica:0/task:0/device:CPU:0"
    assert cluster.player("server2").index == 6


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["hostmap"].update({"server2": "127.0.0.1:7100"}), "share address 127.0.0.1:7100"),
        (lambda c: c["roles"].update({"server0": "auditor"}), "unknown role 'auditor'"),
        (lambda c: c["roles"].update({"model-owner": "data_owner"}), "exactly one player with role 'model_owner'"),
        (lambda c: c["roles"].pop("server1"), "player 'server1' has no role"),
        (lambda c: c["hostmap"].update({"server1": "no-port"}), "write it as host:port"),
        (lambda c: c.pop("roles"), "needs objects 'hostmap'"),
    ],
)
def test_broken_files_are_refused_with_one_clear_error(mutate, message):
    raw = cluster_dict()
    mutate(raw)
    with pytest.raises(ClusterConfigError, match=message):
        Cluster.from_dict(raw)


def test_fewer_than_two_data_owners_is_refused():
    with pytest.raises(ClusterConfigError, match="at least 2 data owners for secure averaging, found 1"):
        Cluster.from_dict(cluster_dict(owners=1))


def test_protocol_without_its_servers_is_refused():
    cluster = Cluster.from_dict(cluster_dict(servers=2))
    registration("additive").check(cluster)
    with pytest.raises(ClusterConfigError, match="'aby3' needs 3 compute servers but the cluster has 2"):
        registration("aby3").check(cluster)


def test_every_registered_aggregation_names_an_importable_class_and_an_unknown_one_is_refused():
    for entry in REGISTRY.values():
        module, name = entry.implementation.split(":")
        assert getattr(importlib.import_module(module), name).name == entry.name
    with pytest.raises(ClusterConfigError, match="unknown aggregation 'secagg'; choose one of additive, pond, aby3, plaintext"):
        registration("secagg")


def test_unreadable_and_missing_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ClusterConfigError, match="not valid JSON"):
        Cluster.load(broken)
    with pytest.raises(ClusterConfigError, match="not found: start a cluster with `fl up`"):
        Cluster.load(tmp_path / "absent.json")
    broken.write_text(json.dumps([1, 2]))
    with pytest.raises(ClusterConfigError, match="needs objects"):
        Cluster.load(broken)


def test_typed_sections_are_checked_with_one_clear_error():
    raw = cluster_dict()
    raw["metrics"] = {"players": {}, "colour": "blue"}
    with pytest.raises(ClusterConfigError, match="section 'metrics': unknown key"):
        Cluster.from_dict(raw)
    raw = cluster_dict()
    raw["dataset"] = {"name": "digits"}
    with pytest.raises(ClusterConfigError, match="section 'dataset' is incomplete"):
        Cluster.from_dict(raw)
    raw = cluster_dict()
    raw["extra_field"] = 1
    with pytest.raises(ClusterConfigError, match="unknown field"):
        Cluster.from_dict(raw)


def test_the_driver_identity_is_reserved_and_a_mesh_names_every_sidecar():
    raw = cluster_dict()
    raw["hostmap"]["driver"], raw["roles"]["driver"] = "127.0.0.1:7999", "compute_server"
    with pytest.raises(ClusterConfigError, match="'driver' is a reserved identity on the mesh"):
        Cluster.from_dict(raw)
    raw = cluster_dict()
    raw["mesh"] = {"sidecars": {name: f"{name}-tls" for name in raw["hostmap"]}, "ingress_port": 7443, "metrics_port": 9401}
    with pytest.raises(ClusterConfigError, match="gives no sidecar for driver"):
        Cluster.from_dict(raw)
    raw["mesh"]["sidecars"]["driver"] = "driver-tls"
    cluster = Cluster.from_dict(raw)
    assert cluster.mesh.sidecar_address("server0") == "server0-tls:7443"
    assert Cluster.from_dict(cluster.to_dict()) == cluster
