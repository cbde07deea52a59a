"""Certificates and the service-account key of the local control plane.

One CA signs the API server's serving certificate and a client certificate per
component; each component is then known to RBAC by the name it has in a real cluster
(system:kube-controller-manager, system:kube-scheduler), so the default bootstrap
roles apply to it unchanged.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for any local session, short enough not to look like a production CA.
VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ClientCert:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    clients: dict[str, ClientCert]
    # The aggregation layer: the API server proxies to extension API servers with this
    # client certificate, and those (and the controller-manager's and scheduler's
    # delegated authentication) trust request headers only from it.
    front_proxy_ca: Path
    front_proxy_client: ClientCert


# user name -> groups; system:masters is what kubeadm's admin.conf used to carry.
CLIENTS = {
    "recop-admin": ["system:masters"],
    "system:kube-controller-manager": [],
    "system:kube-scheduler": [],
    # KWOK plays every kubelet: it writes node and pod status, so it gets admin rights
    # rather than one system:node:<name> identity per fake node.
    "recop-kwok": ["system:masters"],
    # The real node (devstack.node): its kubelet as the Node authorizer knows kubelets,
    # kube-proxy as the default system:node-proxier binding names it, CoreDNS with a
    # read-only role of its own.
    "system:node:recop-node": ["system:nodes"],
    "system:kube-proxy": [],
    "recop-coredns": [],
    # The API server's client certificate towards kubelets (logs, exec, port-forward).
    "kube-apiserver-kubelet-client": ["system:masters"],
}
FRONT_PROXY_CLIENT = "front-proxy-client"


def generate(directory: Path, service_ip: str) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _Ca(directory, "ca", "recop-local-ca")
    # Every name a client may use for the API server: loopback, and the in-cluster names
    # and Service IP that pods' service-account kubeconfigs point at.
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"]
    sans = [x509.DNSName(name) for name in dns] + [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", service_ip)
    ]
    serving_cert, serving_key = ca.issue("apiserver", _name("kube-apiserver"),
                                         ExtendedKeyUsageOID.SERVER_AUTH, sans)
    clients = {}
    for user, groups in CLIENTS.items():
        cert, key = ca.issue(user.replace(":", "-"), _name(user, groups),
                             ExtendedKeyUsageOID.CLIENT_AUTH)
        clients[user] = ClientCert(cert, key)
    front_proxy_ca = _Ca(directory, "front-proxy-ca", "recop-front-proxy-ca")
    front_proxy_client = ClientCert(*front_proxy_ca.issue(
        FRONT_PROXY_CLIENT, _name(FRONT_PROXY_CLIENT), ExtendedKeyUsageOID.CLIENT_AUTH))

    # The API server verifies service-account tokens with the public half; the
    # controller-manager's token controller and the TokenRequest API sign with the
    # private half.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key_path = directory / "sa.key"
    sa_pub_path = directory / "sa.pub"
    sa_key_path.write_bytes(_private_pem(sa_key))
    sa_key_path.chmod(0o600)
    sa_pub_path.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return Pki(ca.cert_path, ca.key_path, serving_cert, serving_key, sa_key_path, sa_pub_path,
               clients, front_proxy_ca.cert_path, front_proxy_client)


class _Ca:
    """A self-signed CA, written to <stem>.crt/.key, that issues leaf certificates."""

    def __init__(self, directory: Path, stem: str, common_name: str):
        self.directory = directory
        self.key = _new_key()
        self.name = _name(common_name)
        self.cert = (
            _builder(self.name, self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path, self.key_path = _write(directory, stem, self.cert, self.key)

    def issue(self, stem: str, subject: x509.Name, usage, sans=None) -> tuple[Path, Path]:
        key = _new_key()
        builder = (
            _builder(subject, self.name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            # Strict verifiers (Python 3.13's default, Go's) expect the issuer's key id.
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _write(self.directory, stem, cert, key)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 rather than RSA: generated in milliseconds, which keeps a cold start short.
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations=()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # Backdated a little so that a clock a few seconds behind still accepts it.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _private_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(directory: Path, stem: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
    cert_path = directory / f"{stem}.crt"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_private_pem(key))
    key_path.chmod(0o600)
    return cert_path, key_path
