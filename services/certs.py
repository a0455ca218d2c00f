"""`polybot certs`: the bus's CA and a certificate per identity (services/tls.py uses them). Apart from tls.py so that
services, which only read certificates, do not load the X.509 builder at every start."""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .config import Config
from .tls import FIXED, SERVER_NAME

VALID_DAYS = 825


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "polybot mesh"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _ca(where: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The mesh's CA, made once and kept: later runs issue more certificates from it."""
    cert_file, key_file = where / "ca.crt", where / "ca.key"
    if cert_file.exists() and key_file.exists():
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        return x509.load_pem_x509_certificate(cert_file.read_bytes()), key  # type: ignore[return-value]
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name("polybot mesh CA")).issuer_name(_name("polybot mesh CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    _write(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(where: Path, names: list[str], hosts: list[str] = (), renew: bool = False) -> list[str]:
    """The CA (made if missing) and a certificate per name (missing ones, or all with ``renew``); returns the names
    issued now. ``hosts``: more DNS names or IP addresses for the certificates (where each machine is reached)."""
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca, ca_key = _ca(where)
    now = dt.datetime.now(dt.timezone.utc)
    alt: list[x509.GeneralName] = [x509.DNSName(SERVER_NAME), x509.DNSName("localhost"),
                                   x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    issued = []
    for name in names:
        if not renew and (where / f"{name}.crt").exists() and (where / f"{name}.key").exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256()))
        _write(where / f"{name}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        _write(where / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))
        issued.append(name)
    return issued


def identities(config: Config) -> list[str]:
    """Everyone on the bus: the configured services and the fixed identities."""
    return [*config.services, *FIXED]


