"""Where the local venue listens by default (light: the mesh's config reads these without loading the venue)."""
HOST = "127.0.0.1"
PORTS = {"gamma_port": 8790, "clob_port": 8791, "ws_port": 8792}
