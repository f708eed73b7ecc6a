"""The trust boundary on the Compose testbed, tried from the attacker's side.

Every link is mutual TLS through one HAProxy sidecar per player; only the driver's identity
may place work on a player (fl/mesh/policy.py). Each refusal here comes with a control that
shows the same attempt succeeding where it should, so no test passes for the wrong reason.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from containers import (
    BACKEND,
    SCENARIOS,
    STATE_DIR,
    container,
    copy_into,
    log_lines,
    read_until,
    stdout_lines,
    train_in_driver,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pcap import payload, tcp_streams, tls_record_bytes

from fl.backends import docker
from fl.cli import main
from fl.cluster import DRIVER, MONITOR
from fl.mesh.haproxy import OLD_CONNECTIONS_AFTER_RELOAD
from fl.mesh.pki import CA_FILE, IDENTITY_FILE

pytestmark = pytest.mark.docker

PKI = BACKEND.directory / docker.PKI_DIR
ATTACK = SCENARIOS / "attack_from_compute_server.py"
OUTSIDER = SCENARIOS / "outsider_call.py"
CAPTURE_SIZE = 50_000  # float32 values per owner update: 200 KB
UPDATE_SEED = 4242
WINDOW_BYTES = 16
WINDOWS_PER_OWNER = 200
CAPTURE_BUFFER_KIB = 65_536  # the kernel's capture buffer: the rounds' bursts must not overrun tcpdump


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
    """The attack works when the caller holds the driver's identity: the owners trust the driver (README threat model)."""
    driver = container(engine, DRIVER)
    _, size = container(engine, "data-owner-0").exec_run(["stat", "-c", "%s", "/data/train.tfrecord"])
    records = compose_cluster.dataset.train_examples["data-owner-0"]
    attack = ["python", copy_into(driver, ATTACK), "data-owner-0", "/data/train.tfrecord", mode]
    exit_code, output = driver.exec_run(attack, demux=True)
    container(engine, "data-owner-0").exec_run(["rm", "-f", "/data/planted-by-attacker"], user="root")
    assert exit_code == 0, (output[1] or b"").decode(errors="replace")[-1500:]
    assert markers(output[0]) == ["CONNECTED", f"READ {records if mode == 'pipeline' else int(size)}", "WROTE"]


def project_network(engine, name: str) -> str:
    return next(n.name for n in engine.networks.list(filters={"label": f"com.docker.compose.network={name}"}))


def other_ca_identity(directory: Path, name: str) -> Path:
    """A certificate for `name` from a CA that is not the cluster's: what an outsider can make for itself."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"other-ca-{name}.pem"
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


def outsider_call(engine, workdir: Path, identity_file: Path | None, target: str = "data-owner-0") -> dict:
    """outsider_call.py in a fresh container on the players' network, with `identity_file` as its certificate (or none)."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # pytest makes it 0700; the container's user must enter it
    for source in (OUTSIDER, PKI / DRIVER / CA_FILE, *([identity_file] if identity_file else [])):
        destination = workdir / source.name if source != identity_file else workdir / "identity.pem"
        destination.write_bytes(source.read_bytes())
        destination.chmod(0o644)  # the test's own copy, readable by the container's user
    credentials = ["/w/identity.pem", "/w/identity.pem"] if identity_file else []
    output = engine.containers.run(
        f"{docker.IMAGE}-player",
        ["/w/outsider_call.py", f"{target}-tls", str(docker.SIDECAR_PORT), target, f"/w/{CA_FILE}", *credentials],
        entrypoint="python",
        network=project_network(engine, docker.NETWORK),
        volumes={str(workdir): {"bind": "/w", "mode": "ro"}},
        remove=True,
        stderr=False,
    )
    return json.loads(output.decode().strip().splitlines()[-1])


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


PROBE = """
import json, socket, sys
found = {}
for target in sys.argv[1:]:
    kind, host, port = target.split(":")
    try:
        with socket.create_connection((host, int(port)), 2) as connection:
            if kind == "get":  # plain HTTP, as a scraper without a certificate would ask
                connection.sendall(b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
                connection.settimeout(3)
                reply = connection.recv(65536)
                found[target] = "metrics" if b"# TYPE" in reply else f"no metrics ({len(reply)} bytes)"
            else:
                found[target] = "open"
    except OSError as error:
        found[target] = type(error).__name__
print(json.dumps(found))
"""


def test_only_the_sidecars_tls_ports_answer_on_the_players_network(compose_cluster, engine):
    """From a container on the players' network: no TF server, no driver, no sidecar relay, no plaintext metrics."""
    closed, open_, plain_gets = [], [], []
    for identity in [*(p.name for p in compose_cluster.players), DRIVER]:
        for network in container(engine, identity).attrs["NetworkSettings"]["Networks"].values():
            closed += [f"tcp:{network['IPAddress']}:{port}" for port in (docker.PLAYER_PORT, docker.METRICS_PORT)]
        closed.append(f"tcp:{identity}:{docker.PLAYER_PORT}")  # the name does not resolve here
        sidecar = docker.sidecar_service(identity)
        closed += [f"tcp:{sidecar}:{port}" for port in (docker.PLAYER_PORT, docker.METRICS_PORT)]  # relays: private link only
        open_.append(f"tcp:{sidecar}:{docker.SIDECAR_METRICS_PORT}")
        open_ += [] if identity == DRIVER else [f"tcp:{sidecar}:{docker.SIDECAR_PORT}"]
        plain_gets.append(f"get:{sidecar}:{docker.SIDECAR_METRICS_PORT}")
    output = engine.containers.run(
        f"{docker.IMAGE}-player",
        ["-c", PROBE, *closed, *open_, *plain_gets],
        entrypoint="python3",
        network=project_network(engine, docker.NETWORK),
        remove=True,
    )
    found = json.loads(output.decode().strip().splitlines()[-1])
    assert {target: found[target] for target in open_} == dict.fromkeys(open_, "open")
    assert [target for target in closed if found[target] == "open"] == []
    assert [target for target in plain_gets if found[target] == "metrics"] == []


@pytest.fixture(scope="module")
def trained_since(compose_cluster, engine) -> float:
    """A legitimate secure training run (a new driver process, so it creates its contexts); when it started."""
    started = time.time()
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


def bridge(engine, network: str) -> str:
    """The host's bridge interface of a Compose network: where tcpdump sees every frame between its containers."""
    return "br-" + engine.networks.get(project_network(engine, network)).id[:12]


@contextlib.contextmanager
def tcpdump(interface: str, path: Path):
    command = ["tcpdump", "-i", interface, "-w", str(path), "-B", str(CAPTURE_BUFFER_KIB), "-s", "0", "-n", "tcp"]
    process = subprocess.Popen(command if os.geteuid() == 0 else ["sudo", "-n", *command], stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert "listening on" in line, f"tcpdump on {interface} did not start: {line}{process.stderr.read()[:500]}"
        yield
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def owner_update_bytes(index: int) -> bytes:
    """What capture_rounds.py makes on owner `index`, recomputed here (stateless: the same on every CPU)."""
    values = tf.random.stateless_uniform([CAPTURE_SIZE], seed=[index, UPDATE_SEED], minval=-4.0, maxval=4.0)
    return values.numpy().tobytes()


def windows(update: bytes, seed: int) -> list[bytes]:
    offsets = np.random.default_rng(seed).choice(len(update) // 4 - WINDOW_BYTES // 4, WINDOWS_PER_OWNER, replace=False)
    return [update[4 * offset : 4 * offset + WINDOW_BYTES] for offset in offsets]


def shard_windows(engine, owner: str, directory: Path, per_owner: int = 100) -> list[bytes]:
    """WINDOW_BYTES of the feature bytes of records in `owner`'s shard, as they sit in memory, with no zero value."""
    shard = directory / f"{owner}.tfrecord"
    shard.write_bytes(container(engine, owner).exec_run(["cat", "/data/train.tfrecord"]).output)
    schema = {"x": tf.io.FixedLenFeature([64], tf.float32)}
    features = [tf.io.parse_single_example(record, schema)["x"].numpy() for record in tf.data.TFRecordDataset(str(shard))]
    values = WINDOW_BYTES // 4
    windows = [row[at : at + values].tobytes() for row in features for at in range(0, 64, values) if row[at : at + values].all()]
    return windows[:per_owner]


def test_a_capture_of_the_players_network_shows_only_tls_no_update_and_no_seed(compose_cluster, engine, tmp_path):
    """A plaintext and an additive round, and one trained through owner pipelines, captured on the players' bridge
    and, as the control, on data-owner-0's private link, which carries the same calls before TLS; no record of any
    shard crosses either, nor the driver's private link."""
    driver = container(engine, DRIVER)
    driver.exec_run(["rm", "-f", "/tmp/capture-go", "/tmp/capture-stopped"])
    script = copy_into(driver, SCENARIOS / "capture_rounds.py")
    lines = stdout_lines(
        driver.exec_run(["python", script, str(CAPTURE_SIZE), str(UPDATE_SEED)], stream=True, stderr=False).output
    )
    players_pcap, link_pcap = tmp_path / "players.pcap", tmp_path / "link-data-owner-0.pcap"
    driver_pcap = tmp_path / "link-driver.pcap"
    try:
        read_until(lines, "READY")
        with (
            tcpdump(bridge(engine, docker.NETWORK), players_pcap),
            tcpdump(bridge(engine, "link-data-owner-0"), link_pcap),
            tcpdump(bridge(engine, f"link-{DRIVER}"), driver_pcap),
        ):
            driver.exec_run(["touch", "/tmp/capture-go"])
            read_until(lines, "DONE")
    finally:
        driver.exec_run(["touch", "/tmp/capture-go", "/tmp/capture-stopped"])
    seeds = json.loads(read_until(lines, "SEEDS"))
    players, link = tcp_streams(players_pcap), tcp_streams(link_pcap)
    owner_windows = [windows(owner_update_bytes(i), i) for i in range(len(compose_cluster.data_owners))]
    seed_bytes = {bytes.fromhex(seed["bytes"]): seed["owner"] for seed in seeds}
    owners = len(compose_cluster.data_owners)
    assert len(seeds) == owners * (owners - 1) // 2  # one seed per pair of owners

    link_bytes = payload(link)
    found_on_link = sum(window in link_bytes for window in owner_windows[0])
    assert found_on_link >= 0.9 * WINDOWS_PER_OWNER, f"control: only {found_on_link} of data-owner-0's windows on its own link"
    assert all(seed in link_bytes for seed, owner in seed_bytes.items() if owner == "data-owner-0")

    on_the_wire = payload(players)
    assert len(on_the_wire) > 4 * CAPTURE_SIZE * len(compose_cluster.data_owners)  # the updates did cross this network
    assert sum(window in on_the_wire for owner in owner_windows for window in owner) == 0
    assert [owner for seed, owner in seed_bytes.items() if seed in on_the_wire] == []
    record_windows = [window for owner in compose_cluster.data_owners for window in shard_windows(engine, owner.name, tmp_path)]
    to_and_from_driver = payload(tcp_streams(driver_pcap))
    assert len(to_and_from_driver) > 10_000 and len(record_windows) > 100  # the driver did run the rounds
    assert [window for window in record_windows if window in on_the_wire or window in to_and_from_driver] == []
    tls_ports = {docker.SIDECAR_PORT, docker.SIDECAR_METRICS_PORT}  # gRPC and metrics, both mutual TLS
    assert [flow for flow in players if not tls_ports & {flow.source_port, flow.destination_port}] == []
    in_records = sum(map(tls_record_bytes, players.values()))
    captured = sum(len(piece) for pieces in players.values() for piece in pieces)
    assert in_records >= 0.99 * captured, f"{in_records} bytes of {captured} in TLS records"
    assert b"/tensorflow." not in on_the_wire and b"/tensorflow.WorkerService/RecvTensor" in link_bytes


def test_each_identity_key_is_mounted_into_its_own_sidecar_only(compose_cluster, engine):
    mounted = {}
    for listed in engine.containers.list(filters={"label": f"com.docker.compose.project={BACKEND.project}"}):
        service = listed.labels["com.docker.compose.service"]
        mounted[service] = sorted(m["Source"] for m in listed.attrs["Mounts"] if m["Source"].startswith(str(PKI)))
    identities = [*(p.name for p in compose_cluster.players), DRIVER]
    expected = {docker.sidecar_service(identity): [str(PKI / identity)] for identity in identities}
    expected["prometheus"] = [str(PKI / MONITOR)]
    assert {service: sources for service, sources in mounted.items() if sources} == expected
    for path in PKI.glob(f"*/{IDENTITY_FILE}"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    _, found = container(engine, "data-owner-0").exec_run(["sh", "-c", "find / -xdev -name '*.pem' -path '*tls*' 2>/dev/null"])
    assert found.decode().strip() == ""


def test_rotated_certificates_replace_the_old_ones_and_training_goes_on(compose_cluster, engine, tmp_path):
    """Runs last in this module: a new CA and keys for everyone; the old driver key is then refused."""
    old_driver = tmp_path / "old-driver.pem"
    old_driver.write_bytes((PKI / DRIVER / IDENTITY_FILE).read_bytes())
    assert main(["certs", "--rotate", "--state-dir", str(STATE_DIR)]) == 0
    time.sleep(int(OLD_CONNECTIONS_AFTER_RELOAD.rstrip("s")) + 3)  # the old HAProxy processes have closed their connections
    assert "alert unknown ca" in outsider_call(engine, tmp_path / "old", old_driver)["handshake"]
    assert outsider_call(engine, tmp_path / "new", PKI / DRIVER / IDENTITY_FILE)["grpc"] == "OK"
    summary = train_in_driver(engine, 2, "trust-boundary-after-rotation.json")
    assert summary["rounds"] == 2 and summary["links"].startswith("mutual TLS")
