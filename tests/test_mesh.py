"""The mesh without containers: the cluster PKI, and the HAProxy configuration a sidecar renders from the policy."""

from __future__ import annotations

import datetime
import re
import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fl.backends import DataSettings, UpSettings, docker
from fl.backends.local import LocalBackend
from fl.cluster import DRIVER
from fl.errors import FLError
from fl.mesh import haproxy, pki, policy
from fl.mesh.pki import CA_FILE, IDENTITY_FILE, ClusterPKI

IDENTITIES = ["model-owner", "data-owner-0", "data-owner-1", DRIVER]
NAMES = {identity: [identity, f"{identity}-tls"] for identity in IDENTITIES}


def certificate(directory, identity: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((directory / identity / IDENTITY_FILE).read_bytes())


def test_every_identity_gets_a_key_and_a_certificate_from_the_cluster_ca(tmp_path):
    issued = ClusterPKI(tmp_path).ensure(NAMES)
    assert issued == IDENTITIES
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / CA_FILE).read_bytes())
    for identity in IDENTITIES:
        cert = certificate(tmp_path, identity)
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == identity
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert names == [identity, f"{identity}-tls"]
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert stat.S_IMODE((tmp_path / identity / IDENTITY_FILE).stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / identity).stat().st_mode) == 0o700
        assert (tmp_path / identity / CA_FILE).read_bytes() == (tmp_path / "ca" / CA_FILE).read_bytes()
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    assert not any((tmp_path / identity / "ca.key").exists() for identity in IDENTITIES)


def test_valid_certificates_are_reused_and_only_new_identities_are_issued(tmp_path):
    authority = ClusterPKI(tmp_path)
    authority.ensure(NAMES)
    before = {c.identity: c.sha256 for c in authority.certificates()}
    assert authority.ensure({**NAMES, "server0": ["server0"]}) == ["server0"]
    assert authority.ensure({**NAMES, "server0": ["server0", "server0-tls"]}) == ["server0"]  # names changed
    after = {c.identity: c.sha256 for c in authority.certificates()}
    assert {identity: after[identity] for identity in before} == before


def test_certificates_close_to_expiry_are_reissued(tmp_path, monkeypatch):
    monkeypatch.setattr(pki, "IDENTITY_LIFETIME", pki.RENEW_BEFORE - datetime.timedelta(days=1))
    authority = ClusterPKI(tmp_path)
    authority.ensure(NAMES)
    monkeypatch.undo()
    assert authority.ensure(NAMES) == IDENTITIES


def test_rotation_replaces_the_ca_and_every_key_in_place(tmp_path):
    """In place: running sidecars mount the identity directories, and a recreated directory would not reach them."""
    authority = ClusterPKI(tmp_path)
    authority.ensure(NAMES)
    old_ca = x509.load_pem_x509_certificate((tmp_path / "ca" / CA_FILE).read_bytes())
    directory_inodes = {identity: (tmp_path / identity).stat().st_ino for identity in IDENTITIES}
    old = certificate(tmp_path, DRIVER)
    assert authority.ensure(NAMES, rotate=True) == IDENTITIES
    new_ca = x509.load_pem_x509_certificate((tmp_path / "ca" / CA_FILE).read_bytes())
    assert new_ca.fingerprint(new_ca.signature_hash_algorithm) != old_ca.fingerprint(old_ca.signature_hash_algorithm)
    with pytest.raises(InvalidSignature):
        old.verify_directly_issued_by(new_ca)
    certificate(tmp_path, DRIVER).verify_directly_issued_by(new_ca)
    assert {identity: (tmp_path / identity).stat().st_ino for identity in IDENTITIES} == directory_inodes


@pytest.fixture
def mesh_cluster(tmp_path):
    docker.write_project(tmp_path, 3, DataSettings())
    return docker.Cluster.load(tmp_path / "cluster.json")


ADDRESSES = haproxy.SidecarAddresses(private="10.9.0.3", principal="10.9.0.2")


def rendered(cluster, identity: str) -> str:
    return haproxy.render(cluster, identity, ADDRESSES, "/tls/identity.pem", "/tls/ca.pem")


def acl(configuration: str, name: str) -> list[str]:
    return re.search(rf"^    acl {name} \S+ -m str (.*)$", configuration, re.MULTILINE).group(1).split()


def test_ingress_allows_the_driver_its_methods_and_peers_only_theirs(mesh_cluster):
    configuration = rendered(mesh_cluster, "data-owner-0")
    assert acl(configuration, "caller_driver") == [DRIVER]
    assert acl(configuration, "caller_peer") == [p.name for p in mesh_cluster.players if p.name != "data-owner-0"]
    assert acl(configuration, "driver_method") == list(policy.DRIVER_METHODS)
    assert acl(configuration, "peer_method") == ["/tensorflow.WorkerService/RecvTensor"]
    assert "bind :7443 ssl crt /tls/identity.pem ca-file /tls/ca.pem verify required alpn h2" in configuration
    assert "ssl-default-bind-options ssl-min-ver TLSv1.3" in configuration
    # deny by default: whatever was not allowed is refused and logged as DENIED
    assert "http-request set-var(txn.decision) str(DENIED) unless { var(txn.decision) -m str allowed }" in configuration
    assert "http-request deny deny_status 403 if { var(txn.decision) -m str DENIED }" in configuration


def test_no_player_may_create_contexts_or_place_work_on_another():
    placing = {"CreateContext", "UpdateContext", "Enqueue", "StreamingEnqueue", "RunComponentFunction"}
    assert {method.rsplit("/", 1)[1] for method in policy.PEER_METHODS} & placing == set()
    assert {method.rsplit("/", 1)[1] for method in policy.DRIVER_METHODS} >= placing


def test_egress_is_bound_to_the_private_link_and_leaves_with_this_identity_verifying_the_peer(mesh_cluster):
    configuration = rendered(mesh_cluster, "data-owner-0")
    assert "    bind 10.9.0.3:7000 proto h2\n" in configuration
    assert configuration.count("tcp-request connection reject unless { src 10.9.0.2 }") == 1
    assert (
        "server data-owner-1 data-owner-1-tls:7443 ssl crt /tls/identity.pem ca-file /tls/ca.pem "
        "verify required verifyhost data-owner-1 sni str(data-owner-1) alpn h2 init-addr none\n"
    ) in configuration
    assert "backend grpc_data-owner-0" not in configuration  # no route to itself


def test_the_driver_sidecar_accepts_no_grpc_and_reaches_every_player(mesh_cluster):
    configuration = rendered(mesh_cluster, DRIVER)
    assert "frontend ingress" not in configuration
    assert all(f"backend grpc_{player.name}\n" in configuration for player in mesh_cluster.players)
    assert all(f"backend metrics_{player.name}\n" in configuration for player in mesh_cluster.players)
    assert "    bind 10.9.0.3:9400\n" in configuration
    assert configuration.count("tcp-request connection reject unless { src 10.9.0.2 }") == 2


def test_metrics_need_a_certificate_and_are_served_to_prometheus_and_the_driver_only(mesh_cluster):
    configuration = rendered(mesh_cluster, "server0")
    assert "bind :9401 ssl crt /tls/identity.pem ca-file /tls/ca.pem verify required" in configuration
    assert acl(configuration, "reader") == ["prometheus", DRIVER]
    assert "http-request deny deny_status 403 unless reader METH_GET { path /metrics }" in configuration
    assert "frontend metrics_egress" not in configuration  # a player reads no one's metrics


def test_plaintext_links_have_no_sidecar_to_render(tmp_path):
    docker.write_project(tmp_path, 3, DataSettings(), tls=False)
    with pytest.raises(ValueError, match="no 'mesh' section"):
        rendered(docker.Cluster.load(tmp_path / "cluster.json"), "data-owner-0")


def test_the_local_backend_refuses_tls_before_starting_anything(tmp_path):
    with pytest.raises(FLError, match=r"--tls needs each player's own network view.*use --backend docker"):
        LocalBackend(tmp_path).up(UpSettings(owners=2, tls=True))
    assert list(tmp_path.iterdir()) == []
