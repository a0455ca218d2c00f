"""The bus across machines: NNG's TLS transport (``tls+tcp://``) with mutual certificates.

``polybot certs`` (services/certs.py) makes a small CA and one certificate per identity: each configured service, the supervisor, the
operator's CLI (``operator``) and the MCP server (``mcp``); the certificate's common name is the identity. Every
socket then demands a certificate from that CA of its peer, and a bound socket whose role allows only some peers
refuses everything any other sends (``admission``): ``orders`` takes only risk, ``signals`` only strategies hosts and the
MCP server. A process says who it is once (``identify``), and every socket it opens uses that identity's
certificate. Keys are created 0600 in ``bus.tls_dir`` (default ``<state_dir>/tls``), the CA's key beside them so more
identities can be added later; copy to each machine only its own key, the CA's certificate and its own certificate.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pynng

from .config import RISK_KIND, STRATEGIES_KIND, Config

SERVER_NAME = "polybot-bus"  # every certificate names it, so a dialler checks the binder is one of the mesh's
FIXED = ("supervisor", "operator", "mcp")  # identities besides the configured services
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
    """Who may send on a bound socket: None for any certificate of the mesh. A service the config names but does not
    start here (``enabled = false``: it runs on another machine) is still one of the mesh's identities."""
    kinds = {name: svc.kind for name, svc in config.services.items()}
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


def admission(config: Config, socket: str, sock: pynng.Socket,
              refused: list[str]) -> Callable[[pynng.Pipe, object], str] | None:
    """Why a message that came on a pipe of the bound ``socket`` is not let in ("": it is), or None when every
    certificate of the mesh may send there.

    A peer whose certificate the socket's role does not allow is named in ``refused`` as it connects, and
    everything it sends is refused and counted. Its connection is left open: NNG (1.11) can crash a PUSH peer whose
    pipe is closed as it starts, so closing it would turn a misconfigured strategies host into a crash loop. On
    ``signals`` a peer also speaks only for its own kind of source (a strategies host's certificate for
    ``strategy:*``, the MCP server's for ``mcp:*``), so no peer can claim another's budget or orders."""
    allowed = allowed_peers(config, socket)
    if allowed is None:
        return None
    sock.add_pre_pipe_connect_cb(lambda pipe: None if peer_of(pipe) in allowed
                                 else refused.append(peer_of(pipe) or "(no name)"))
    prefixes = {name: "strategy:" for name, svc in config.services.items() if svc.kind == STRATEGIES_KIND}
    prefixes["mcp"] = "mcp:"

    def admit(pipe: pynng.Pipe, msg: object) -> str:
        peer = peer_of(pipe)
        if peer not in allowed:
            return (f"{type(msg).__name__} from {peer or 'a peer without a name'}, whose certificate may not send on "
                    f"{socket} (only {', '.join(sorted(allowed)) or 'none'} may)")
        if socket != "signals":
            return ""
        source, prefix = getattr(msg, "source", ""), prefixes.get(peer, "")
        if prefix and source.startswith(prefix):
            return ""
        return (f"{type(msg).__name__} from {peer} claims the source {source!r}; its certificate speaks only for "
                f"{prefix + '*' if prefix else 'no source'}")
    return admit
