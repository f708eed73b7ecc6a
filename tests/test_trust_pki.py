"""The cluster's keys on the Compose testbed: each in its own sidecar only, and rotated while training goes on.

Runs after the other trust-boundary modules: the rotation gives everyone a new CA and keys.
"""

from __future__ import annotations

import stat
import time

import pytest
from containers import BACKEND, STATE_DIR, container, train_in_driver
from trust import PKI, outsider_call

from fl.backends import docker
from fl.cli import main
from fl.cluster import DRIVER, MONITOR
from fl.mesh.haproxy import OLD_CONNECTIONS_AFTER_RELOAD
from fl.mesh.pki import IDENTITY_FILE

pytestmark = pytest.mark.docker


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
