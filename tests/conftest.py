from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from services.config import DEFAULT_SERVICES

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


# Ports for the servers tests start are taken below the kernel's ephemeral range, one after another from a place
# of this process's own, so that no outgoing connection and no server on port 0 (a metrics endpoint) can take a port
# between our choosing it and the server binding it: a port picked by binding port 0 was taken that way in a CI run.
_PORTS = range(20_000, min(_ephemeral_low(), 32_768))
_next_port = _PORTS.start + os.getpid() * 37 % len(_PORTS)


def free_port() -> int:
    """A loopback port nothing listens on now, outside the ephemeral range (see _PORTS)."""
    global _next_port
    for _ in range(len(_PORTS)):
        port, _next_port = _next_port, _PORTS.start + (_next_port + 1 - _PORTS.start) % len(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError(f"no free loopback port in {_PORTS.start}..{_PORTS.stop - 1}")


def free_ports(n: int) -> list[int]:
    return [free_port() for _ in range(n)]


def wait_for(condition: Callable[[], T], timeout: float = 20.0, what: str = "condition", every: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def risk_takes_signals(detail: dict[str, str]) -> bool:
    """Risk's status says a signal sent now can trade: it has the executor's account and an executor takes orders."""
    return detail.get("reconciled") == "True" and detail.get("executor_connected") == "True"


def only(services: str) -> str:
    """These ``[services.NAME]`` tables, and every default service they do not name turned off: a mesh of just these.

    (A config's service tables add to the defaults; the local venue is left to ``[local_venue] start``.)"""
    named = set(re.findall(r"^\[services\.([a-z0-9_]+)", services, re.M))
    return services + "".join(f"[services.{n}]\nenabled = false\n" for n in DEFAULT_SERVICES if n not in named)


def child_env(**extra: str) -> dict[str, str]:
    """The environment for processes the tests start: our packages importable, no proxies, no stray overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYBOT_")}
    # Metrics on any free port (each service's status says which): meshes of several tests may overlap.
    env.update(PYTHONPATH=str(ROOT), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               PYTHONUNBUFFERED="1", POLYBOT_METRICS__BASE_PORT="0", **extra)
    return env


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not tmp_path: ipc socket paths must stay under 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp"))
    yield path / "state"
    shutil.rmtree(path, ignore_errors=True)


class Mesh:
    """A config file in a fresh state directory, and the `polybot` CLI pointed at it."""

    def __init__(self, state: Path, services: str = "", supervisor: str = "", venue: str = "false") -> None:
        self.state = state
        self.config = state.parent / "polybot.toml"
        self.config.write_text(f'state_dir = "{state}"\n[bus]\nheartbeat_s = 0.2\n[local_venue]\nstart = {venue}\n'
                               f"[supervisor]\nbackoff_initial_s = 0.2\nbackoff_max_s = 2.0\n{supervisor}\n{services}")
        self.up: subprocess.Popen | None = None

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        # With the fault handler on, a CLI that crashes in native code says where on stderr.
        return subprocess.run([sys.executable, "-m", "services", "--config", str(self.config), *args],
                              env=child_env(PYTHONFAULTHANDLER="1"), capture_output=True, text=True, timeout=timeout)

    def start(self, **env: str) -> subprocess.Popen:
        log = open(self.state.parent / "up.log", "w")
        self.up = subprocess.Popen([sys.executable, "-m", "services", "--config", str(self.config), "up"],
                                   env=child_env(**env), stdout=log, stderr=subprocess.STDOUT)
        return self.up

    def status(self) -> dict[str, dict]:
        result = self.cli("status", "--json")
        if result.returncode < 0:
            # The CLI died by a signal: seen twice in loaded CI runs as SIGSEGV with nothing printed, never
            # reproduced alone. Say so where the run's summary shows it, with what the fault handler printed, and
            # ask once more: the services it asks were not at fault.
            warnings.warn(f"`polybot status --json` died by signal {-result.returncode}; asked again. "
                          f"stderr: {result.stderr[-3000:]}")
            result = self.cli("status", "--json")
        try:
            rows = json.loads(result.stdout)["services"]
        except ValueError:
            raise ValueError(f"`polybot status --json` printed no JSON (exit {result.returncode}): "
                             f"{result.stdout[-500:]!r} {result.stderr[-1500:]}") from None
        return {row["name"]: row for row in rows}

    def stop(self) -> None:
        if self.up is not None and self.up.poll() is None:
            self.up.send_signal(signal.SIGINT)
            try:
                self.up.wait(30)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait(5)

    def log(self) -> str:
        path = self.state.parent / "up.log"
        return path.read_text() if path.exists() else ""

    def failure_report(self) -> list[tuple[str, str]]:
        sections = [log_tail(f"polybot up log of {self.state}", self.log())]
        if self.up is not None and self.up.poll() is None:
            try:
                rows = self.status()
            except (subprocess.TimeoutExpired, ValueError) as e:
                rows = {"error": {"detail": repr(e)}}
            sections.append(("polybot status: state and detail of each service", "\n".join(
                f"{name}: {row.get('state')} {row.get('detail')}" for name, row in rows.items())))
        return sections


LOG_LINES = 80


def log_tail(title: str, text: str) -> tuple[str, str]:
    """A report section: the last lines of a log."""
    lines = text.splitlines()
    return f"{title} (last {LOG_LINES} of {len(lines)} lines)", "\n".join(lines[-LOG_LINES:])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test's report ends with what its meshes' services logged and said, so a CI failure can be read.

    A mesh is anything the test made or took as a fixture with a ``failure_report()`` of report sections."""
    report = yield
    if report.failed:
        for mesh in [*getattr(item, "meshes", ()), *getattr(item, "funcargs", {}).values()]:
            if hasattr(mesh, "failure_report"):
                report.sections += mesh.failure_report()
    return report


@pytest.fixture
def mesh_factory(request: pytest.FixtureRequest, state_dir: Path) -> Iterator[Callable[..., Mesh]]:
    made: list[Mesh] = []
    request.node.meshes = made

    def make(services: str = "", supervisor: str = "", venue: str = "false") -> Mesh:
        state_dir.parent.mkdir(parents=True, exist_ok=True)
        mesh = Mesh(state_dir, services, supervisor, venue)
        made.append(mesh)
        return mesh

    yield make
    for mesh in made:
        mesh.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    return True


def pytest_unconfigure(config) -> None:
    """Close every NNG socket a test left open while the interpreter is whole. Left to the garbage collector at
    exit, NNG can tear a socket down under one of its own reader threads and abort the run after every test passed
    (`nni_aio_fini`, `pthread_mutex_lock: Invalid argument`, exit 134; seen twice in loaded runs)."""
    import gc

    import pynng
    for obj in gc.get_objects():
        if issubclass(type(obj), pynng.Socket):  # not isinstance: it raises on a dead weak proxy
            try:
                obj.close()
            except Exception:  # already closed, or closing under its own teardown: nothing left to protect
                pass
