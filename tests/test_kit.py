"""`fl kit`: what each party's directory holds, and the addresses and mistakes it refuses. Pure: no container runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fl.backends import DataSettings, active
from fl.backends.kit import KitBackend
from fl.cluster import Cluster
from fl.errors import FLError
from fl.kit import PublicAddress, read_addresses, write

PLAYERS = ["model-owner", "data-owner-0", "data-owner-1", "data-owner-2", "server0", "server1", "server2"]
HOSTS = {  # two parties share host a, so they need ports of their own
    "model-owner": "a.example:7443",
    "data-owner-0": "a.example:7444",
    "data-owner-1": "10.0.0.2",
    "data-owner-2": "10.0.0.3",
    "server0": "10.0.0.4",
    "server1": "10.0.0.5",
    "server2": "10.0.0.6:9000",
}


@pytest.fixture
def kits(tmp_path: Path) -> Path:
    addresses = read_addresses([f"{name}={address}" for name, address in HOSTS.items()], None)
    write(tmp_path / "kits", 3, addresses, DataSettings())
    return tmp_path / "kits"


def files(directory: Path) -> list[str]:
    return sorted(str(path.relative_to(directory)) for path in directory.rglob("*") if path.is_file())


def test_every_kit_holds_its_own_key_the_ca_certificate_and_the_cluster_file_and_no_other_key(kits):
    assert sorted(path.name for path in kits.iterdir()) == sorted([*PLAYERS, "driver", "pki"])
    for party in [*PLAYERS, "driver"]:
        own = [".env", "README.md", "cluster.json", "compose.yaml", f"pki/{party}/ca.pem", f"pki/{party}/identity.pem"]
        expected = own + (["backend"] if party == "driver" else [])
        assert files(kits / party) == sorted(expected), party
        assert (kits / party / "pki" / party / "ca.pem").read_bytes() == (kits / "pki" / "ca" / "ca.pem").read_bytes()
    assert (kits / "pki" / "ca" / "ca.key").is_file()  # beside the kits, in none of them


def test_a_party_publishes_only_its_sidecars_tls_port_and_its_tf_server_sits_on_an_internal_link(kits):
    compose = yaml.safe_load((kits / "data-owner-0" / "compose.yaml").read_text())
    assert list(compose["services"]) == ["data-owner-0", "data-owner-0-tls"]
    player, sidecar = compose["services"]["data-owner-0"], compose["services"]["data-owner-0-tls"]
    assert "ports" not in player and sidecar["ports"] == ["7444:7443"]
    assert player["networks"] == ["link-data-owner-0"]
    assert compose["networks"] == {"players": {}, "link-data-owner-0": {"internal": True}}
    assert "cap_add" not in sidecar
    assert sidecar["volumes"] == ["./cluster.json:/etc/fl/cluster.json:ro", "./pki/data-owner-0:/etc/fl/tls:ro"]
    assert (kits / "data-owner-0" / ".env").read_text().startswith("COMPOSE_PROJECT_NAME=fl-kit-data-owner-0\n")


def test_the_drivers_kit_publishes_nothing_keeps_its_results_beside_it_and_is_a_state_directory(kits):
    compose = yaml.safe_load((kits / "driver" / "compose.yaml").read_text())
    assert list(compose["services"]) == ["driver", "driver-tls"]
    assert "ports" not in compose["services"]["driver-tls"] and "depends_on" not in compose["services"]["driver"]
    assert "./results:/home/fl/results" in compose["services"]["driver"]["volumes"]
    backend = active(kits / "driver")
    assert isinstance(backend, KitBackend) and backend.project == "fl-kit-driver"
    with pytest.raises(FLError, match="start it with `docker compose up -d` there, not `fl up`"):
        backend.up(None)


def test_every_party_reaches_every_sidecar_at_its_public_address(kits):
    for party in [*PLAYERS, "driver"]:
        mesh = Cluster.load(kits / party / "cluster.json").mesh
        reached = {name: mesh.sidecar_address(name) for name in PLAYERS}
        assert reached == {name: address if ":" in address else f"{address}:7443" for name, address in HOSTS.items()}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([f"{name}=h{index}" for index, name in enumerate(PLAYERS[:-1])], "no address for server2; give every one of"),
        ([*(f"{name}=h{index}" for index, name in enumerate(PLAYERS)), "server9=h9"], "no such player: server9"),
        ([f"{name}=same" for name in PLAYERS], "model-owner and data-owner-0 both at same:7443: parties on one host"),
    ],
)
def test_missing_stray_and_clashing_addresses_are_refused_before_anything_is_written(tmp_path, entries, message):
    with pytest.raises(FLError, match=message):
        write(tmp_path / "kits", 3, read_addresses(entries, None), DataSettings())
    assert not (tmp_path / "kits").exists()


def test_an_address_file_is_read_and_a_malformed_or_contradicting_entry_named(tmp_path):
    listing = tmp_path / "parties.txt"
    listing.write_text("# party = host[:port]\nmodel-owner = a.example:7443\n\ndata-owner-0=10.0.0.2  # office\n")
    assert read_addresses([], listing) == {"model-owner": PublicAddress("a.example"), "data-owner-0": PublicAddress("10.0.0.2")}
    with pytest.raises(FLError, match="'model-owner=a:port': write it as NAME=HOST or NAME=HOST:PORT"):
        read_addresses(["model-owner=a:port"], None)
    with pytest.raises(FLError, match=r"model-owner is given two addresses \(a.example:7443, b:7443\): keep one"):
        read_addresses(["model-owner=b"], listing)


def test_fl_kit_refuses_a_directory_that_holds_something_in_one_line(tmp_path):
    (tmp_path / "kits").mkdir()
    (tmp_path / "kits" / "old").write_text("")
    entries = [argument for name, address in HOSTS.items() for argument in ("--address", f"{name}={address}")]
    refused = subprocess.run(
        [sys.executable, "-m", "fl", "kit", "--out", str(tmp_path / "kits"), *entries], capture_output=True, text=True
    )
    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .endswith("is not empty: kits are written into a new directory (their keys must not mix with old ones)")
    )
    assert json.dumps(sorted(p.name for p in (tmp_path / "kits").iterdir())) == '["old"]'
