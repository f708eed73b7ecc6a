"""Who may place work on a player on the Compose testbed, tried from the attacker's side.

Every link is mutual TLS through one HAProxy sidecar per player; only the driver's identity
may place work on a player (fl/mesh/policy.py). Each refusal here comes with a control that
shows the same attempt succeeding where it should, so no test passes for the wrong reason.
"""

from __future__ import annotations

import re
import time

import pytest
from containers import SCENARIOS, container, copy_into, log_lines, quiet_since, train_in_driver
from trust import PKI, other_ca_identity, outsider_call

from fl.backends import docker
from fl.cluster import DRIVER
from fl.mesh.pki import IDENTITY_FILE

pytestmark = pytest.mark.docker
ATTACK = SCENARIOS / "attack_from_compute_server.py"


def markers(output: bytes) -> list[str]:
    """The attack script's success markers (CONNECTED, READ n, WROTE) among TF's log lines."""
    return [line for line in output.decode(errors="replace").splitlines() if re.fullmatch(r"CONNECTED|READ \d+|WROTE", line)]


def shard_files(engine, owner: str) -> list[str]:
    _, listing = container(engine, owner).exec_run(["ls", "-A", "/data"])
    return listing.decode().split()


@pytest.mark.parametrize(
    ("victim", "path", "mode"),
    [
        ("data-owner-0", "/data/train.tfrecord", "file"),
        ("data-owner-0", "/data/train.tfrecord", "pipeline"),
        ("model-owner", "/data/test.tfrecord", "file"),
    ],
)
def test_a_compute_server_cannot_read_or_write_another_players_data(compose_cluster, engine, victim, path, mode):
    """The issue's attack: from server0's container, connect as a driver would, read the victim's data (as a file,
    or through an owner pipeline placed on the victim), plant a file."""
    server = container(engine, "server0")
    files_before = shard_files(engine, victim)
    since = time.time()
    exit_code, output = server.exec_run(["python", copy_into(server, ATTACK), victim, path, mode], demux=True)
    stdout, stderr = (part or b"" for part in output)
    assert not any(marker.startswith(("READ", "WROTE")) for marker in markers(stdout)), markers(stdout)
    assert exit_code != 0 and b"status: 403" in stderr, stderr.decode(errors="replace")[-1500:]
    denied = [
        line for line in log_lines(engine, f"{victim}-tls", since) if "caller=server0" in line and "decision=DENIED" in line
    ]
    assert denied and all("status=403" in line for line in denied), denied
    assert shard_files(engine, victim) == files_before


@pytest.mark.parametrize("mode", ["file", "pipeline"])
def test_control_the_same_script_as_the_driver_reads_and_writes(compose_cluster, engine, mode):
    """The attack works when the caller holds the driver's identity: the owners trust the driver
    (docs/trust-boundary.md, threat model)."""
    driver = container(engine, DRIVER)
    _, size = container(engine, "data-owner-0").exec_run(["stat", "-c", "%s", "/data/train.tfrecord"])
    records = compose_cluster.dataset.train_examples["data-owner-0"]
    attack = ["python", copy_into(driver, ATTACK), "data-owner-0", "/data/train.tfrecord", mode]
    exit_code, output = driver.exec_run(attack, demux=True)
    container(engine, "data-owner-0").exec_run(["rm", "-f", "/data/planted-by-attacker"], user="root")
    assert exit_code == 0, (output[1] or b"").decode(errors="replace")[-1500:]
    assert markers(output[0]) == ["CONNECTED", f"READ {records if mode == 'pipeline' else int(size)}", "WROTE"]


def test_an_outsider_without_a_cluster_certificate_is_refused_in_the_handshake(compose_cluster, engine, tmp_path):
    since = time.time()
    none = outsider_call(engine, tmp_path, None)
    impostor = outsider_call(engine, tmp_path, other_ca_identity(tmp_path, DRIVER))  # claims to be the driver
    assert "alert certificate required" in none["handshake"] and none["grpc"].startswith("UNAVAILABLE")
    assert "alert unknown ca" in impostor["handshake"] and impostor["grpc"].startswith("UNAVAILABLE")
    logged = "\n".join(log_lines(engine, "data-owner-0-tls", since))
    assert "ingress/1: SSL handshake failure" in logged and "ingress/1: SSL client certificate not trusted" in logged


def test_control_cluster_identities_pass_the_handshake_and_only_the_driver_may_call_control_methods(
    compose_cluster, engine, tmp_path
):
    peer = outsider_call(engine, tmp_path, PKI / "server0" / IDENTITY_FILE)
    driver = outsider_call(engine, tmp_path, PKI / DRIVER / IDENTITY_FILE)
    assert (
        peer["handshake"].startswith("accepted") and peer["grpc"] == "PERMISSION_DENIED: Received http2 header with status: 403"
    )
    assert driver["handshake"].startswith("accepted") and driver["grpc"] == "OK"


@pytest.fixture(scope="module")
def trained_since(compose_cluster, engine) -> float:
    """A legitimate secure training run (a new driver process, so it creates its contexts); when it started,
    after the calls of the tests before it were all logged."""
    identities = [*(p.name for p in compose_cluster.players), DRIVER]
    started = quiet_since(engine, [docker.sidecar_service(identity) for identity in identities])
    train_in_driver(engine, 3, "trust-boundary-train.json")
    time.sleep(1)  # the last calls are logged when their streams close
    return started


CHECKED_METHODS = ("/RecvTensor", "/CreateContext")  # peers' pulls of shares and seeds; the driver's contexts
# HAProxy's termination state, second letter: the call ended while the egress waited for its request,
# in its queue or for a connection, so it never reached the peer
NOT_FORWARDED = "RQC"


def calls(lines: list[str], direction: str, party: str) -> dict[str, tuple[str, str, str]]:
    """Call id -> (peer, method, decision or, egress, termination state) of each ingress (peer = caller)
    or egress (peer = callee) line."""
    pattern = re.compile(
        rf"^{direction} player=\S+ {party}=(\S+) method=(\S+) (?:decision=(\S*) )?.*?(?:ended=(\S+) )?call=(\S+)$"
    )
    return {match[5]: (match[1], match[2], match[3] or match[4]) for match in map(pattern.match, lines) if match}


def test_every_call_arrives_as_the_identity_that_sent_it(compose_cluster, engine, trained_since):
    """Each call a sidecar sent (its egress log: to whom, which method, the call id it added) against the
    callee's ingress log of the same call id: who the receiver saw calling, and its decision.

    A sidecar that presented another identity's certificate (e.g. a resumed TLS session of
    another identity) would show up here as a call received under the wrong caller.
    """
    identities = [*(p.name for p in compose_cluster.players), DRIVER]
    deadline = time.monotonic() + 20
    while True:  # a call is logged on each side when its stream closes, not always in the same second
        sent = {
            identity: calls(log_lines(engine, docker.sidecar_service(identity), trained_since), "egress", "callee")
            for identity in identities
        }
        # the receivers' logs from earlier on: a call that straddles the start is logged on one side first
        received = {
            identity: calls(log_lines(engine, docker.sidecar_service(identity), trained_since - 60), "ingress", "caller")
            for identity in identities
        }
        checked, not_forwarded = {}, {}
        for sender in identities:
            for call, (callee, method, ended) in sent[sender].items():
                if method.endswith(CHECKED_METHODS):
                    (not_forwarded if ended[1] in NOT_FORWARDED else checked)[call] = (sender, callee, method, ended)
        unmatched = {call: seen for call, seen in checked.items() if call not in received.get(seen[1], {})}
        if not unmatched or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert unmatched == {}
    training_logs = (log_lines(engine, docker.sidecar_service(identity), trained_since) for identity in identities)
    assert [line for lines in training_logs for line in lines if "decision=DENIED" in line] == []
    # a call that never left its sender's sidecar was given up by the sender's own TF server (e.g. a cancelled pull)
    assert all(ended[0] == "C" for *_, ended in not_forwarded.values()), not_forwarded
    assert len(not_forwarded) < len(checked) / 10, not_forwarded
    arrived = {call: received[callee][call] for call, (_, callee, _, _) in checked.items()}
    assert {call: (sender, method, "allowed") for call, (sender, _, method, _) in checked.items()} == arrived
    peer_pairs = {(sender, callee) for sender, callee, _, _ in checked.values() if sender != DRIVER}
    assert len(peer_pairs) >= len(compose_cluster.data_owners)  # owners pull seeds from each other, the model owner pulls sums
    driver_contexts = {
        callee for sender, callee, method, _ in checked.values() if sender == DRIVER and method.endswith("/CreateContext")
    }
    assert driver_contexts == {p.name for p in compose_cluster.players}
