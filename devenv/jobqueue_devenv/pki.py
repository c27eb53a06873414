"""Throw-away certificates for one local cluster: a CA, the apiserver's serving cert, an admin client.

Everything is signed by one CA that lives as long as the cluster folder. The admin is a client
certificate in the `system:masters` group, as envtest does it.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    """Paths of the files `generate` wrote."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.dir / "apiserver.key"

    def kubelet_cert(self, node: str) -> Path:
        """A node agent's serving certificate (its kubelet port: logs, exec, port-forward), one per node."""
        return self.dir / f"kubelet-{node}.crt"

    def kubelet_key(self, node: str) -> Path:
        return self.dir / f"kubelet-{node}.key"

    @property
    def kubelet_client_cert(self) -> Path:
        """The apiserver's client certificate towards the node agent (`kubectl logs` is proxied)."""
        return self.dir / "apiserver-kubelet-client.crt"

    @property
    def kubelet_client_key(self) -> Path:
        return self.dir / "apiserver-kubelet-client.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def service_account_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.dir / "sa.pub"


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def generate(directory: Path, nodes: Sequence[str], extra_ips: tuple[str, ...] = ()) -> Pki:
    """Write a CA, a serving cert for 127.0.0.1 and the cluster names, one serving cert per node
    (CN system:node:<name>, as a kubelet's), an admin cert and an SA key."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("jobqueue-local-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki.ca_key, _key_pem(ca_key), private=True)
    _write(pki.ca_cert, _cert_pem(ca_cert))

    def leaf(subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)

    ips = ["127.0.0.1", "10.96.0.1", *extra_ips]
    serving_sans: list[x509.GeneralName] = [x509.DNSName(name) for name in APISERVER_DNS_NAMES]
    serving_sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert, key = leaf(_name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, serving_sans)
    _write(pki.apiserver_cert, cert)
    _write(pki.apiserver_key, key, private=True)

    for node in nodes:
        node_sans: list[x509.GeneralName] = [x509.DNSName(node), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert, key = leaf(_name(f"system:node:{node}", "system:nodes"), ExtendedKeyUsageOID.SERVER_AUTH, node_sans)
        _write(pki.kubelet_cert(node), cert)
        _write(pki.kubelet_key(node), key, private=True)

    cert, key = leaf(_name("kube-apiserver-kubelet-client", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _write(pki.kubelet_client_cert, cert)
    _write(pki.kubelet_client_key, key, private=True)

    cert, key = leaf(_name("jobqueue-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _write(pki.admin_cert, cert)
    _write(pki.admin_key, key, private=True)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki.service_account_key, _key_pem(sa_key), private=True)
    _write(
        pki.service_account_pub,
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    return pki
