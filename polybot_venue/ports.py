"""What the mesh reads of the local venue without loading it: where it listens by default, its default seed, and the
key of the ready-made account a mesh trading at it signs with when no key is set."""
import hashlib

HOST = "127.0.0.1"
PORTS = {"gamma_port": 8790, "clob_port": 8791, "ws_port": 8792}
SEED = 7


def ready_made_key(seed: int) -> str:
    """The ready-made account's private key, derived from the venue's seed (a test key, public by design)."""
    return "0x" + hashlib.sha256(f"polybot-local-venue:test-account:{seed}".encode()).hexdigest()
