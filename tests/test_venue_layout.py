"""The local venue is an application of its own: importing it (every module) loads nothing of the trading mesh,
and it serves on its own with `python -m polybot_venue`."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import httpx

import polybot_venue

from .conftest import ROOT, child_env, wait_for
from .conftest import free_port


def test_importing_every_venue_module_loads_no_module_of_the_mesh() -> None:
    names = [f"polybot_venue.{m.name}" for m in pkgutil.iter_modules(polybot_venue.__path__)]
    assert {"polybot_venue.server", "polybot_venue.engine", "polybot_venue.app"} <= set(names)
    script = ("import importlib, sys\n"
              f"for name in {names!r}: importlib.import_module(name)\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('services', 'polybot_mcp')))")
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout


def test_python_m_polybot_venue_serves_gamma_and_the_clob_on_its_own(tmp_path) -> None:
    gamma, clob, ws = free_port(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "polybot_venue", "--seed", "5", "--still", "--gamma-port",
                             str(gamma), "--clob-port", str(clob), "--ws-port", str(ws)],
                            cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def serving() -> bool:
            assert proc.poll() is None, proc.stdout.read()
            try:
                return httpx.get(f"http://127.0.0.1:{clob}/ok").status_code == 200
            except httpx.TransportError:
                return False
        wait_for(serving, what="the venue to serve")
        markets = httpx.get(f"http://127.0.0.1:{gamma}/markets", params={"limit": 5}).json()
        assert len(markets) == 5 and all(m["conditionId"].startswith("0x") for m in markets)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"gamma  http://127.0.0.1:{gamma}" in out and "private key 0x" in out
