"""Throw-away PKI for the TLS tests: a CA, a server certificate for 127.0.0.1/localhost, a broker
certificate for localhost only (hostname verification), a client certificate, and an unrelated
second CA with its own client certificate (the refusals)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLIENT_KEY_PASSWORD = "client-key-password"  # the client keys are encrypted: the password is used
VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Identity:
    """PEM files of one certificate: `cert`, `key` (encrypted when `password`), and `bundle`
    (key then certificate in one file: what Kafka's and Cassandra's PEM keystores read)."""

    cert: Path
    key: Path
    bundle: Path
    password: str | None


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Identity  # names localhost and 127.0.0.1
    broker: Identity  # names localhost only
    client: Identity
    other_ca: Path
    other_client: Identity  # signed by other_ca


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    # Certificates only need to be valid around now; the tests' clock is not involved.
    return datetime.datetime.now(datetime.UTC)  # noqa: TID251


class _Authority:
    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(common_name)
        self.cert = (
            self._builder(self.name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
            .sign(self.key, hashes.SHA256())
        )

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name if hasattr(self, "name") else subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + VALIDITY)
        )

    def issue(
        self, common_name: str, *, server: bool, with_ip: bool = True
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = self._builder(_name(common_name), key.public_key())
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)  # the broker is its own client too
            names: list[x509.GeneralName] = [x509.DNSName("localhost")]
            if with_ip:
                names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        ).add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())

    def write_ca(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


def _write_identity(
    directory: Path,
    stem: str,
    key: ec.EllipticCurvePrivateKey,
    cert: x509.Certificate,
    password: str | None,
) -> Identity:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    paths = [directory / f"{stem}.{ext}" for ext in ("crt", "key", "pem")]
    for path, content in zip(paths, (cert_pem, key_pem, key_pem + cert_pem), strict=True):
        path.write_bytes(content)
        path.chmod(0o600)
    return Identity(*paths, password=password)


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = _Authority("scheduler test CA"), _Authority("unrelated test CA")
    return Pki(
        ca=ca.write_ca(directory / "ca.crt"),
        server=_write_identity(directory, "server", *ca.issue("localhost", server=True), None),
        broker=_write_identity(
            directory, "broker", *ca.issue("localhost", server=True, with_ip=False), None
        ),
        client=_write_identity(
            directory, "client", *ca.issue("scheduler", server=False), CLIENT_KEY_PASSWORD
        ),
        other_ca=other.write_ca(directory / "other-ca.crt"),
        other_client=_write_identity(
            directory, "other-client", *other.issue("stranger", server=False), CLIENT_KEY_PASSWORD
        ),
    )
