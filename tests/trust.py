"""What the trust-boundary tests share: the cluster's PKI and calls from a container that is not a player."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import tensorflow as tf
from containers import BACKEND, SCENARIOS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


def outsider_call(
    engine,
    workdir: Path,
    identity_file: Path | None,
    target: str = "data-owner-0",
    ca_file: Path = PKI / DRIVER / CA_FILE,
    address: tuple[str, int] | None = None,
    network: str | None = None,
) -> dict:
    """outsider_call.py in a fresh container, with `identity_file` as its certificate (or none), against `target`'s
    sidecar at `address` (default: its name on the Compose testbed's players' network, which it then joins)."""
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # pytest makes it 0700; the container's user must enter it
    copies = [(OUTSIDER, OUTSIDER.name), (ca_file, CA_FILE), *([(identity_file, "identity.pem")] if identity_file else [])]
    for source, name in copies:
        destination = workdir / name
        destination.write_bytes(source.read_bytes())
        destination.chmod(0o644)  # the test's own copy, readable by the container's user
    credentials = ["/w/identity.pem", "/w/identity.pem"] if identity_file else []
    host, port = address or (f"{target}-tls", docker.SIDECAR_PORT)
    output = engine.containers.run(
        f"{docker.IMAGE}-player",
        ["/w/outsider_call.py", host, str(port), target, f"/w/{CA_FILE}", *credentials],
        entrypoint="python",
        network=network or project_network(engine, docker.NETWORK),
        volumes={str(workdir): {"bind": "/w", "mode": "ro"}},
        remove=True,
        stderr=False,
    )
    return json.loads(output.decode().strip().splitlines()[-1])


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
