"""Throw-away certificate authorities and server certificates for the TLS tests (``cryptography``).

:func:`make_pki` writes, into a folder, a CA and a server certificate it signed for
``localhost`` and ``127.0.0.1`` (an IP SAN), a second CA with a server certificate for the
same names (a certificate "from another CA"), and a certificate of the first CA for another
host name only (a host name mismatch). Keys are EC P-256: fast to make.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "make_pki"]

LOCAL_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files :func:`make_pki` wrote."""

    ca: Path
    """The CA certificate clients are told to trust."""
    cert: Path
    key: Path
    """The server certificate (localhost, 127.0.0.1) the CA signed, and its key."""
    other_ca: Path
    other_cert: Path
    other_key: Path
    """A certificate for the same names from another CA (which no client trusts)."""
    wrong_name_cert: Path
    wrong_name_key: Path
    """A certificate of the trusted CA for ``elsewhere.example`` only."""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))


def _ca(common: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = _validity(x509.CertificateBuilder().subject_name(_name(common)).issuer_name(_name(common))
                        .public_key(key.public_key()).serial_number(x509.random_serial_number()))
    builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    return builder.sign(key, hashes.SHA256()), key


def _server(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey,
            names: tuple[str, ...]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    builder = _validity(x509.CertificateBuilder().subject_name(_name(names[0])).issuer_name(ca.subject)
                        .public_key(key.public_key()).serial_number(x509.random_serial_number()))
    builder = (builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
    return builder.sign(ca_key, hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate | None = None, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        assert key is not None
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    return path


def make_pki(folder: Path) -> Pki:
    """Two CAs and three server certificates in ``folder`` (see the module's docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("castore test CA")
    other_ca, other_ca_key = _ca("another CA")
    cert, key = _server(ca, ca_key, LOCAL_NAMES)
    other_cert, other_key = _server(other_ca, other_ca_key, LOCAL_NAMES)
    wrong, wrong_key = _server(ca, ca_key, ("elsewhere.example",))
    return Pki(
        ca=_write(folder / "ca.pem", ca), cert=_write(folder / "server.pem", cert),
        key=_write(folder / "server.key", key=key), other_ca=_write(folder / "other-ca.pem", other_ca),
        other_cert=_write(folder / "other-server.pem", other_cert), other_key=_write(folder / "other-server.key", key=other_key),
        wrong_name_cert=_write(folder / "elsewhere.pem", wrong), wrong_name_key=_write(folder / "elsewhere.key", key=wrong_key),
    )
