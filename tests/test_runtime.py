"""The service runtime in its own process: graceful stop, errors in handlers, config checked at start."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from services import messages as m
from services.bus import Bus
from services.config import ensure_state_dir, load

from .conftest import child_env, wait_for
from .samples import samples


def _config_file(state: Path, services: str) -> Path:
    state.parent.mkdir(parents=True, exist_ok=True)
    path = state.parent / "polybot.toml"
    path.write_text(f'state_dir = "{state}"\n{services}')
    return path


def _log(state: Path, name: str) -> list[dict]:
    path = state / "logs" / f"{name}.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _run(config: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "services", "--config", str(config), "run", name],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_stops_gracefully_after_handling_the_backlog_it_already_holds(state_dir: Path) -> None:
    config_path = _config_file(state_dir, '[services.tally]\nkind = "tests.mesh_services:Tally"\n'
                                          "options = { handle_ms = 20 }\n")
    service = _run(config_path, "tally")
    wait_for(lambda: any(e["msg"] == "started" for e in _log(state_dir, "tally")), what="tally to start")
    config = load(config_path, {"HOME": str(state_dir)})
    ensure_state_dir(config)
    bus = Bus(config)
    push = bus.outbound("signals")
    sent = 40  # 0.8 s of work
    for _ in range(sent):
        assert push.send(samples()[m.Signal])
    wait_for(lambda: any(e["msg"] == "first message" for e in _log(state_dir, "tally")), what="handling to begin")
    service.send_signal(signal.SIGTERM)  # most of the backlog is still waiting
    assert service.wait(30) == 0, service.stderr.read()
    stopped = next(e for e in _log(state_dir, "tally") if e["msg"] == "stopped")
    assert stopped["handled"] == sent
    bus.close()


def test_an_unknown_option_stops_the_service_at_start_naming_the_key(state_dir: Path) -> None:
    config_path = _config_file(state_dir, '[services.tally]\nkind = "tests.mesh_services:Tally"\n'
                                          "options = { handle_msec = 5 }\n")
    service = _run(config_path, "tally")
    _, err = service.communicate(timeout=30)
    assert service.returncode == 2
    assert "services.tally.options.handle_msec: unknown key" in err


def test_a_service_that_cannot_bind_its_socket_says_which_and_exits(state_dir: Path) -> None:
    config_path = _config_file(state_dir, '[services.a]\nkind = "tests.mesh_services:Ticker"\n'
                                          '[services.b]\nkind = "tests.mesh_services:Ticker"\n')
    first = _run(config_path, "a")
    wait_for(lambda: any(e["msg"] == "started" for e in _log(state_dir, "a")), what="the first ticker to start")
    second = _run(config_path, "b")
    _, err = second.communicate(timeout=30)
    assert second.returncode == 2
    assert "prices" in err and "already binds" in err
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0


def test_a_secret_that_reaches_a_log_message_is_blanked_in_the_file_and_on_stderr(state_dir: Path) -> None:
    import io

    from services import logs
    from services.config import load_secrets

    config = load(None, {"POLYBOT_STATE_DIR": str(state_dir), "HOME": str(state_dir)})
    ensure_state_dir(config)
    secret = "0x4c0883a69102937d6231471b5dbb6204fe512961708279f2e3e8a5d4b8e3e0b1"
    stream = io.StringIO()
    log = logs.setup(config, "leaky", load_secrets({"POLYBOT_PRIVATE_KEY": secret}), stream=stream)
    try:
        raise ValueError(f"bad key {secret}")
    except ValueError:
        log.exception("signing failed with %s", secret, extra={"key": secret})
    for handler in log.handlers:
        handler.flush()
    written = (state_dir / "logs" / "leaky.log").read_text()
    assert "signing failed" in written and "signing failed" in stream.getvalue()
    assert secret not in written and secret not in stream.getvalue()
    assert "***" in json.loads(written.splitlines()[0])["key"]


def test_a_service_whose_own_work_fails_exits_1_with_the_error_so_its_supervisor_restarts_it(state_dir: Path) -> None:
    config_path = _config_file(state_dir, '[services.failing]\nkind = "tests.mesh_services:Failing"\n')
    service = _run(config_path, "failing")
    _, err = service.communicate(timeout=30)
    assert service.returncode == 1
    assert "service run() failed: RuntimeError: the feed is gone; stopping" in err
