"""The cluster's PKI: one CA per cluster, one key and certificate per identity (each player and the driver).

Layout under the PKI directory (the backend decides where it lives)::

    ca/ca.key, ca/ca.pem                  the CA; its key never leaves the host that ran `fl up`
    <identity>/identity.pem               certificate + private key (mode 0600), HAProxy's `crt` format
    <identity>/ca.pem                     the CA certificate, to verify peers

Each identity's directory is mounted into that identity's sidecar (or Prometheus) only. The
identity is the certificate's common name; its DNS subject alternative names are the names
it is reached by. Sidecars verify a peer's name against the SAN and authorize by the common name.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DIR = "ca"
IDENTITY_FILE = "identity.pem"
CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_LIFETIME = datetime.timedelta(days=365)
IDENTITY_LIFETIME = datetime.timedelta(days=90)
RENEW_BEFORE = datetime.timedelta(days=14)  # `fl up` reissues what expires sooner than this
ORGANIZATION = "FL Testbed cluster"


@dataclass(frozen=True)
class CertificateInfo:
    identity: str
    serial: int
    not_after: datetime.datetime
    sha256: str


class ClusterPKI:
    """A cluster CA in `directory` and the identities it issued."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def identity_dir(self, identity: str) -> Path:
        return self.directory / identity

    @property
    def ca_certificate_file(self) -> Path:
        return self.directory / CA_DIR / CA_FILE

    def ensure(self, identities: Mapping[str, Sequence[str]], rotate: bool = False) -> list[str]:
        """Create the CA and a key and certificate for each identity (-> its DNS names), reusing valid ones;
        return the identities issued.

        `rotate` issues a new CA and new certificates for everyone, so old keys stop being trusted.
        Files are replaced inside their directories: running sidecars mount those directories.
        """
        ca_cert, ca_key, ca_new = self._ca(renew=rotate)
        issued = []
        for identity, names in identities.items():
            if ca_new or not self._valid_identity(identity, list(names), ca_cert):
                self._issue(identity, list(names), ca_cert, ca_key)
                issued.append(identity)
        return issued

    def certificates(self) -> list[CertificateInfo]:
        """What each identity currently holds, for `fl certs`."""
        found = []
        for path in sorted(self.directory.glob(f"*/{IDENTITY_FILE}")):
            cert = x509.load_pem_x509_certificate(path.read_bytes())
            found.append(
                CertificateInfo(
                    identity=path.parent.name,
                    serial=cert.serial_number,
                    not_after=cert.not_valid_after_utc,
                    sha256=cert.fingerprint(hashes.SHA256()).hex(),
                )
            )
        return found

    def _ca(self, renew: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
        cert_path, key_path = self.ca_certificate_file, self.directory / CA_DIR / CA_KEY_FILE
        if not renew and cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if cert.not_valid_after_utc - _now() > RENEW_BEFORE:
                return cert, serialization.load_pem_private_key(key_path.read_bytes(), None), False
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, "FL Testbed cluster CA"),
            ]
        )
        cert = (
            _builder(name, name, key.public_key(), CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert, key, True

    def _valid_identity(self, identity: str, names: list[str], ca_cert: x509.Certificate) -> bool:
        path = self.identity_dir(identity) / IDENTITY_FILE
        if not path.exists() or not (self.identity_dir(identity) / CA_FILE).exists():
            return False
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        try:
            cert.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        held = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        return held == names and cert.not_valid_after_utc - _now() > RENEW_BEFORE

    def _issue(self, identity: str, names: list[str], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION), x509.NameAttribute(NameOID.COMMON_NAME, identity)]
        )
        cert = (
            _builder(subject, ca_cert.subject, key.public_key(), IDENTITY_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        directory = self.identity_dir(identity)
        _write_private(directory / IDENTITY_FILE, cert.public_bytes(serialization.Encoding.PEM) + _key_pem(key))
        _write_public(directory / CA_FILE, ca_cert.public_bytes(serialization.Encoding.PEM))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, lifetime: datetime.timedelta) -> x509.CertificateBuilder:
    start = _now() - datetime.timedelta(minutes=5)  # tolerate clocks a little behind this host's
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write_private(path: Path, content: bytes) -> None:
    """Mode 0600 from the first byte, replaced atomically."""
    _write(path, content, 0o600)


def _write_public(path: Path, content: bytes) -> None:
    _write(path, content, 0o644)


def _write(path: Path, content: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(descriptor, content)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
