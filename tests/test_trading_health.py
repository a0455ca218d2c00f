"""Trading health with every service a real process: a scanner restarted while the venue is down must announce
its markets fresh once the venue is back, and `polybot status` says why trading is unhealthy until then."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
from mcp.client.client import Client

from polybot_mcp.server import build
from services.config import load

from .conftest import child_env, wait_for
from .trading_harness import Trading
from .venue_harness import Venue

SEED = 83
MARKETS = 8
RECOVERY_S = 30  # the venue back, every market fresh again and trading healthy within this


def status(mesh: Trading) -> tuple[int, dict]:
    """`polybot status --json`: its exit code and what it printed."""
    result = subprocess.run([sys.executable, "-m", "services", "--config", str(mesh.config_file), "status", "--json"],
                            env=child_env(), capture_output=True, text=True, timeout=30)
    return result.returncode, json.loads(result.stdout)


def trading(mesh: Trading) -> dict:
    return status(mesh)[1]["trading"]


def mesh_status(mesh: Trading) -> dict:
    """What an agent is told by the MCP tool ``mesh_status``."""
    async def session():
        async with Client(build(load(mesh.config_file, {"HOME": str(mesh.root)}))) as client:
            return await client.call_tool("mesh_status", {})
    return anyio.run(session).structured_content


def revive(venue: Venue) -> None:
    """The venue again, on the same ports, seed and state folder, as after an outage."""
    venue.proc = subprocess.Popen(venue.proc.args, env=child_env(POLYBOT_STATE_DIR=str(venue.state)),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(venue._ready, what="the venue to serve again")


def stale(mesh: Trading, name: str) -> int:
    detail = mesh.detail(name)
    return int(detail["stale"]) if "stale" in detail else -1


def test_a_scanner_restarted_while_the_venue_is_down_announces_its_markets_fresh_and_status_says_meanwhile(
        tmp_path: Path) -> None:
    root = Path(os.path.realpath(tmp_path))
    venue = Venue(root / "venue", SEED, 100, "--still", "--markets", str(MARKETS))
    venue.state = root / "venue"
    mesh = Trading(root, venue, {
        "scanner": "ping_s = 0.5, stale_after_s = 2, reconnect_initial_s = 0.2, reconnect_max_s = 1",
        "executor": "heartbeat_s = 0.5", "risk": "", "strategies": ""})
    try:
        mesh.start("scanner", "executor")
        mesh.wait_ready("scanner", "executor")
        mesh.start("risk", "strategies")
        mesh.wait_ready("risk", "strategies")
        healthy = wait_for(lambda: (t := trading(mesh))["healthy"] and t, what="trading to be healthy")
        markets = healthy["markets"]
        assert markets > 0 and healthy["stale"] == 0 and healthy["executor_ready"] and healthy["executor_connected"]

        venue.proc.terminate()
        venue.proc.wait(20)
        wait_for(lambda: stale(mesh, "risk") == int(mesh.detail("risk")["markets"]) > 0,
                 what="risk to hear every market stale")
        mesh.stop("scanner")
        mesh.start("scanner")
        wait_for(lambda: mesh.detail("scanner"), what="the new scanner to answer")
        code, out = status(mesh)
        # No supervisor here, so the exit code says a service is down (3) before it could say unhealthy (4).
        assert code == 3 and out["trading"]["healthy"] is False
        assert any("markets stale" in r and "STALE_BOOK" in r for r in out["trading"]["reasons"]), out["trading"]
        told = mesh_status(mesh)["trading"]
        assert told["healthy"] is False and told["stale_at_risk"] > 0
        assert any("STALE_BOOK" in r for r in told["reasons"])

        revive(venue)
        wait_for(lambda: stale(mesh, "risk") == 0 and stale(mesh, "strategies") == 0 and stale(mesh, "scanner") == 0,
                 what="risk and strategies to hear every market fresh from the new scanner", timeout=RECOVERY_S)
        wait_for(lambda: trading(mesh)["healthy"], what="trading to be healthy again", timeout=RECOVERY_S)
        told = mesh_status(mesh)["trading"]
        assert told["healthy"] and told["reasons"] == [] and told["markets"] == markets and told["stale"] == 0
    finally:
        mesh.close()
        venue.stop()
