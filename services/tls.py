"""The bus across machines: NNG's TLS transport (``tls+tcp://``) with mutual certificates.

``polybot certs`` makes a small CA and one certificate per identity: each configured service, the supervisor, the
operator's CLI (``operator``) and the MCP server (``mcp``); the certificate's common name is the identity. Every
socket then demands a certificate from that CA of its peer, and a bound socket whose role allows only some peers
closes any other's connection as it comes: ``orders`` takes only risk, ``signals`` only strategies hosts and the
MCP server. A process says who it is once (``identify``), and every socket it opens uses that identity's
certificate. Keys are created 0600 in ``bus.tls_dir`` (default ``<state_dir>/tls``), the CA's key beside them so more
identities can be added later; copy to each machine only its own key, the CA's certificate and its own certificate.
"""
from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

import pynng
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .config import RISK_KIND, STRATEGIES_KIND, Config

SERVER_NAME = "polybot-bus"  # every certificate names it, so a dialler checks the binder is one of the mesh's
FIXED = ("supervisor", "operator", "mcp")  # identities besides the configured services
VALID_DAYS = 825
SCHEME = "tls+tcp://"

_identity = "operator"
_folder = Path()


class TLSError(Exception):
    """Certificates missing or unusable: the message says which and how to make them."""


def identify(name: str, config: Config) -> None:
    """This process's identity on the bus: the certificate its sockets present, from the config's tls folder."""
    global _identity, _folder
    _identity, _folder = name, folder(config)


def identity() -> str:
    return _identity


def folder(config: Config) -> Path:
    return Path(config.bus.tls_dir).expanduser() if config.bus.tls_dir else config.state_path / "tls"


def uses_tls(address: str) -> bool:
    return address.startswith(SCHEME)


# ------------------------------------------------------------ certificates


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


# ------------------------------------------------------------ sockets


@functools.lru_cache(maxsize=8)
def _material(where: str, name: str) -> tuple[str, str, str]:
    base = Path(where)
    try:
        return ((base / "ca.crt").read_text(), (base / f"{name}.crt").read_text(), (base / f"{name}.key").read_text())
    except OSError as exc:
        raise TLSError(f"bus.transport = \"tls\", but {exc.filename} cannot be read ({exc.strerror}): run "
                       f"`polybot certs` (it writes the CA and a certificate for each of the mesh's identities to "
                       f"{base}), or set bus.tls_dir to where they are") from None


def server() -> pynng.TLSConfig:
    ca, cert, key = _material(str(_folder), _identity)
    return pynng.TLSConfig(pynng.TLSConfig.MODE_SERVER, ca_string=ca, own_cert_string=cert, own_key_string=key,
                           auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED)


def client() -> pynng.TLSConfig:
    ca, cert, key = _material(str(_folder), _identity)
    return pynng.TLSConfig(pynng.TLSConfig.MODE_CLIENT, server_name=SERVER_NAME, ca_string=ca, own_cert_string=cert,
                           own_key_string=key, auth_mode=pynng.TLSConfig.AUTH_MODE_REQUIRED)


def allowed_peers(config: Config, socket: str) -> frozenset[str] | None:
    """Who may connect to a bound socket: None for any certificate of the mesh."""
    kinds = {name: svc.kind for name, svc in config.services.items() if svc.enabled}
    if socket == "orders":
        return frozenset(n for n, k in kinds.items() if k == RISK_KIND)
    if socket == "signals":
        return frozenset({*(n for n, k in kinds.items() if k == STRATEGIES_KIND), "mcp"})
    return None


def peer_of(pipe: pynng.Pipe) -> str:
    """The common name on the peer's certificate ("" when there is none to read)."""
    try:
        return pynng.options._getopt_string(pipe, "tls-peer-cn")
    except pynng.NNGException:
        return ""


def source_check(config: Config) -> Callable[[pynng.Pipe, object], str]:
    """On ``signals``: a peer speaks only for its own kind of source (a strategies host's certificate for
    ``strategy:*``, the MCP server's for ``mcp:*``), so no peer can claim another's budget or orders."""
    prefixes = {name: "strategy:" for name, svc in config.services.items()
                if svc.enabled and svc.kind == STRATEGIES_KIND}
    prefixes["mcp"] = "mcp:"

    def admit(pipe: pynng.Pipe, msg: object) -> str:
        source = getattr(msg, "source", "")
        peer = peer_of(pipe)
        prefix = prefixes.get(peer)
        if prefix is not None and source.startswith(prefix):
            return ""
        return (f"{type(msg).__name__} from {peer or 'a peer without a name'} claims the source {source!r}; its "
                f"certificate speaks only for {prefix + '*' if prefix else 'no source'}")
    return admit


def guard(sock: pynng.Socket, allowed: frozenset[str] | None, refused: list[str]) -> None:
    """Close, as it connects, any pipe whose certificate is not one of ``allowed``; ``refused`` collects who."""
    if allowed is None:
        return

    def check(pipe: pynng.Pipe) -> None:
        peer = peer_of(pipe)
        if peer not in allowed:
            refused.append(peer or "(no name)")
            pipe.close()
    sock.add_pre_pipe_connect_cb(check)
