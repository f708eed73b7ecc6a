"""The swarm backend without a swarm: where each player goes, and how the Compose project is split into a stack."""

from __future__ import annotations

import re

import pytest
import yaml

from fl.backends import DataSettings, UpSettings, docker
from fl.backends.local import player_names
from fl.backends.swarm import SwarmBackend
from fl.cluster import DRIVER
from fl.errors import FLError
from fl.mesh.pki import IDENTITY_FILE
from fl.swarm import stack
from fl.swarm.placement import Node, place

PLAYERS = player_names(3)  # model-owner, data-owner-0..2, server0..2
STACK = "fl-testbed-test"


def nodes(count: int, **labels: str) -> list[Node]:
    """`count` ready nodes; `labels`: node hostname -> its fl.players label."""
    names = [f"node-{index}" for index in range(1, count + 1)]
    return [
        Node(name, "ready", "active", {"fl.testbed": "1", **({"fl.players": labels[name]} if name in labels else {})})
        for name in names
    ]


def test_data_owners_are_spread_first_then_the_others_over_the_least_loaded_nodes():
    assert place(PLAYERS, nodes(3)) == {
        "model-owner": "node-1",
        "data-owner-0": "node-1",
        "data-owner-1": "node-2",
        "data-owner-2": "node-3",
        "server0": "node-2",
        "server1": "node-3",
        "server2": "node-1",
    }


def test_a_nodes_players_label_pins_them_and_the_rest_fill_the_other_nodes():
    pinned = nodes(3, **{"node-3": "data-owner-0, model-owner"})
    assert place(PLAYERS, pinned) == {
        "model-owner": "node-3",
        "data-owner-0": "node-3",
        "data-owner-1": "node-1",
        "data-owner-2": "node-2",
        "server0": "node-1",
        "server1": "node-2",
        "server2": "node-1",
    }


def test_one_node_holds_every_player():
    assert set(place(PLAYERS, nodes(1)).values()) == {"node-1"}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([], "no swarm node labelled fl.testbed is ready: `fl swarm up --nodes 3`"),
        ([Node("node-1", "down", "active", {})], "no swarm node labelled fl.testbed is ready"),
        (nodes(2, **{"node-2": "data-owner-9"}), "node node-2: label fl.players names 'data-owner-9', not a player"),
        (nodes(2, **{"node-1": "server0", "node-2": "server0"}), "server0 is pinned to two nodes (node-1, node-2)"),
        (
            [*nodes(1), Node("node-2", "ready", "drain", {"fl.players": "server1"})],
            "server1 is pinned to node node-2, which is ready and drain",
        ),
    ],
)
def test_a_placement_that_cannot_be_made_is_one_line(given, message):
    with pytest.raises(FLError, match="^" + re.escape(message)):
        place(PLAYERS, given)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    directory = tmp_path_factory.mktemp("swarm")
    compose_file = docker.write_project(directory, 3, DataSettings(), backend="swarm")
    where = place(PLAYERS, nodes(3))
    stack_file, this_engine = stack.render(yaml.safe_load(compose_file.read_text()), directory, STACK, where, 1400)
    return directory, where, stack_file, this_engine


def test_each_player_and_its_sidecar_are_stack_services_pinned_to_the_players_node(rendered):
    _, where, stack_file, _ = rendered
    expected = {**where, **{docker.sidecar_service(player): node for player, node in where.items()}}
    constraints = {name: service["deploy"]["placement"]["constraints"] for name, service in stack_file["services"].items()}
    assert constraints == {name: [f"node.hostname == {node}"] for name, node in expected.items()}
    assert {service["deploy"]["endpoint_mode"] for service in stack_file["services"].values()} == {"dnsrr"}
    assert not any("depends_on" in service for service in stack_file["services"].values())


def test_only_a_sidecar_receives_its_own_key_and_nothing_is_bind_mounted_from_this_host(rendered):
    directory, where, stack_file, _ = rendered
    for name, service in stack_file["services"].items():
        assert all(not volume.startswith(("./", "/")) for volume in service["volumes"]), name
        secrets = [secret["source"] for secret in service.get("secrets", [])]
        assert secrets == ([f"{name.removesuffix('-tls')}-identity"] if name.endswith("-tls") else []), name
    for player in where:
        secret = stack_file["secrets"][f"{player}-identity"]
        assert secret["file"] == str(directory / docker.PKI_DIR / player / IDENTITY_FILE)
        assert secret["name"].startswith(f"{STACK}-{player}-identity-")
    assert f"{DRIVER}-identity" not in stack_file["secrets"]
    assert stack_file["services"]["data-owner-1"]["volumes"] == [f"data-owner-1-data:{docker.DATA_DIR_IN_CONTAINER}"]


def test_overlays_ride_on_the_hosts_link_mtu_and_only_the_players_network_is_attachable(rendered):
    _, where, stack_file, _ = rendered
    networks = stack_file["networks"]
    assert set(networks) == {docker.NETWORK, *(docker.link_network(player) for player in where)}
    assert {network["driver_opts"]["com.docker.network.driver.mtu"] for network in networks.values()} == {"1400"}
    assert all(network["internal"] for network in networks.values())
    assert [name for name, network in networks.items() if network.get("attachable")] == [docker.NETWORK]


def test_the_driver_side_stays_on_this_engine_on_the_stacks_players_overlay(rendered):
    _, _, _, this_engine = rendered
    assert set(this_engine["services"]) == {DRIVER, docker.sidecar_service(DRIVER), "prometheus"}
    assert this_engine["networks"][docker.NETWORK] == {"external": True, "name": f"{STACK}_{docker.NETWORK}"}
    assert "depends_on" not in this_engine["services"][DRIVER]  # its readiness: the stack's tasks, polled first
    assert this_engine["services"][docker.sidecar_service(DRIVER)]["depends_on"] == {DRIVER: {"condition": "service_started"}}


def test_a_changed_file_gets_a_new_swarm_object_name(tmp_path):
    path = tmp_path / "cluster.json"
    path.write_text("{}")
    first = stack._swarm_object(STACK, "cluster", path)
    path.write_text('{"players": []}')
    assert stack._swarm_object(STACK, "cluster", path)["name"] != first["name"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (UpSettings(tls=False), "--no-tls: the swarm backend's links cross hosts"),
        (UpSettings(data=DataSettings(own_data="/srv/own")), "--data /srv/own: on the swarm backend"),
    ],
)
def test_what_the_swarm_backend_cannot_run_is_refused_before_anything_starts(tmp_path, settings, message):
    with pytest.raises(FLError, match="^" + re.escape(message)):
        SwarmBackend(tmp_path).check(settings)
    assert not (tmp_path / "backend").exists()


def test_bench_profiles_are_refused_on_the_swarm_backend(tmp_path):
    with pytest.raises(FLError, match=r"^fl bench shapes links on the local and docker backends"):
        SwarmBackend(tmp_path).check(UpSettings(), shaped_links=True)
