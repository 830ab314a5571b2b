"""Certificates and credentials for the local control plane, in the shape envtest uses.

A serving CA and serving certificate, a client CA with an admin client certificate in
``system:masters``, and a separate key pair that signs ServiceAccount tokens. The node
(devcluster/node.py) adds serving names and addresses, and a client certificate for each of
its components, in the users and groups that Kubernetes' bootstrap RBAC and the Node
authorizer expect.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import pathlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=7)


@dataclasses.dataclass(frozen=True)
class Pair:
    cert_pem: bytes
    key_pem: bytes
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(subject: x509.Name, key: ec.EllipticCurvePrivateKey,
           issuer: Pair | None, *, ca: bool,
           usages: list[x509.ObjectIdentifier] | None = None,
           sans: list[x509.GeneralName] | None = None) -> Pair:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=not ca, content_commitment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
            encipher_only=False, decipher_only=False), critical=True)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = issuer.key if issuer else key
    cert = builder.sign(signer, hashes.SHA256())
    return Pair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), cert, key)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclasses.dataclass(frozen=True)
class ControlPlaneCredentials:
    serving_ca: Pair
    serving: Pair
    client_ca: Pair
    admin: Pair
    sa_signer: Pair

    def write(self, cert_dir: pathlib.Path) -> None:
        """Write the files under the names the apiserver flags refer to."""
        cert_dir.mkdir(parents=True, exist_ok=True)
        files = {
            "serving-ca.crt": self.serving_ca.cert_pem,
            "apiserver.crt": self.serving.cert_pem,
            "apiserver.key": self.serving.key_pem,
            "client-cert-auth-ca.crt": self.client_ca.cert_pem,
            # The node's kube-controller-manager signs certificate requests with it.
            "client-ca.key": self.client_ca.key_pem,
            "sa-signer.crt": self.sa_signer.cert_pem,
            "sa-signer.key": self.sa_signer.key_pem,
            "admin.crt": self.admin.cert_pem,
            "admin.key": self.admin.key_pem,
        }
        for name, data in files.items():
            path = cert_dir / name
            path.write_bytes(data)
            path.chmod(0o600)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def generate(extra_sans: tuple[str, ...] = ()) -> ControlPlaneCredentials:
    """The control plane's credentials; ``extra_sans`` (names or addresses) are added to the
    serving certificate's localhost and 127.0.0.1."""
    serving_ca = _issue(_name("fluxsupport-devcluster-serving-ca"), _new_key(), None, ca=True)
    serving = _issue(
        _name("kube-apiserver"), _new_key(), serving_ca, ca=False,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[_san(name) for name in ("localhost", "127.0.0.1", *extra_sans)],
    )
    client_ca = _issue(_name("fluxsupport-devcluster-client-ca"), _new_key(), None, ca=True)
    admin = client_certificate(client_ca, "admin", "system:masters")
    sa_signer = _issue(_name("fluxsupport-devcluster-sa-signer"), _new_key(), None, ca=True)
    return ControlPlaneCredentials(serving_ca, serving, client_ca, admin, sa_signer)


def server_certificate(names: tuple[str, ...]) -> tuple[Pair, Pair]:
    """A CA of its own and a serving certificate it signed for ``names`` (addresses or DNS
    names): for a test server that a client must reach over verified TLS."""
    ca = _issue(_name("fluxsupport-devcluster-test-ca"), _new_key(), None, ca=True)
    serving = _issue(_name(names[0]), _new_key(), ca, ca=False,
                     usages=[ExtendedKeyUsageOID.SERVER_AUTH],
                     sans=[_san(name) for name in names])
    return ca, serving


def client_certificate(client_ca: Pair, user: str, group: str | None = None) -> Pair:
    """A client certificate for ``user`` (CN) in ``group`` (O), signed by the client CA."""
    return _issue(_name(user, group), _new_key(), client_ca, ca=False,
                  usages=[ExtendedKeyUsageOID.CLIENT_AUTH])
