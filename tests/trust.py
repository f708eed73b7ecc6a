"""What the trust-boundary tests share: the cluster's PKI and calls from a container that is not a player."""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf
from containers import BACKEND, SCENARIOS

from fl.backends import docker
from fl.cluster import DRIVER
from fl.mesh.pki import CA_FILE

PKI = BACKEND.directory / docker.PKI_DIR
OUTSIDER = SCENARIOS / "outsider_call.py"
WINDOW_BYTES = 16


def record_windows(shard: bytes, path: Path, per_owner: int = 100) -> list[bytes]:
    """WINDOW_BYTES of the feature bytes of an owner's records (its shard's bytes, kept at `path`), as they sit in
    memory, with no zero value: what would show on a wire that carried a record in the clear."""
    path.write_bytes(shard)
    schema = {"x": tf.io.FixedLenFeature([64], tf.float32)}
    features = [tf.io.parse_single_example(record, schema)["x"].numpy() for record in tf.data.TFRecordDataset(str(path))]
    values = WINDOW_BYTES // 4
    windows = [row[at : at + values].tobytes() for row in features for at in range(0, 64, values) if row[at : at + values].all()]
    return windows[:per_owner]


def project_network(engine, name: str) -> str:
    return next(n.name for n in engine.networks.list(filters={"label": f"com.docker.compose.network={name}"}))


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
