"""The supervisor and CLI with real processes: restart on death, reconnection, status, halt, restart, down."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from .conftest import Mesh, free_port, only, pid_alive, wait_for

PAIR = only("""
[services.tally]
kind = "tests.mesh_services:Tally"
[services.ticker]
kind = "tests.mesh_services:Ticker"
options = { interval_ms = 10 }
""")


def _running(mesh: Mesh, *names: str) -> dict[str, dict] | None:
    status = mesh.status()
    return status if all(status.get(n, {}).get("state") == "running" for n in names) else None


def _trades_seen(mesh: Mesh) -> int:
    tally = mesh.status().get("tally", {})
    return int(tally.get("detail", {}).get("prices.LastTrade", 0)) if tally.get("state") == "running" else -1


def test_a_killed_service_is_restarted_and_its_peers_reconnect_by_themselves(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    mesh.start()
    first = wait_for(lambda: _running(mesh, "supervisor", "tally", "ticker"), what="the mesh to come up")
    wait_for(lambda: _trades_seen(mesh) > 0, what="tally to receive the ticker's trades")

    # The publisher dies: the supervisor restarts it and the subscriber gets its trades again without help.
    os.kill(first["ticker"]["pid"], signal.SIGKILL)
    after = wait_for(lambda: (s := _running(mesh, "ticker")) and s["ticker"]["pid"] != first["ticker"]["pid"]
                     and s["ticker"]["restarts"] == 1 and s, what="ticker to be restarted once")
    assert after["tally"]["pid"] == first["tally"]["pid"]
    seen = _trades_seen(mesh)
    wait_for(lambda: _trades_seen(mesh) > seen, what="tally to receive from the new ticker")

    # The subscriber dies: the new one dials the still-running publisher and receives again.
    os.kill(first["tally"]["pid"], signal.SIGKILL)
    wait_for(lambda: (s := _running(mesh, "tally")) and s["tally"]["pid"] != first["tally"]["pid"],
             what="tally to be restarted")
    wait_for(lambda: _trades_seen(mesh) > 0, what="the new tally to receive trades")
    assert mesh.status()["ticker"]["pid"] == after["ticker"]["pid"]


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode()
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def test_a_service_is_given_only_the_secrets_it_uses(mesh_factory) -> None:
    # By default only the executor gets the key and API credentials; a service's `secrets` names what it gets.
    mesh: Mesh = mesh_factory(PAIR + '[services.signer]\nkind = "tests.mesh_services:Idle"\nsecrets = ["private_key"]\n')
    key, secret = "0x" + "11" * 32, "c2VjcmV0LW5vdC1mb3ItdGhlLXRpY2tlcg=="
    mesh.start(POLYBOT_PRIVATE_KEY=key, POLYBOT_API_SECRET=secret)
    status = wait_for(lambda: _running(mesh, "supervisor", "tally", "ticker", "signer"), what="the mesh to come up")
    for name in ("tally", "ticker"):
        leaked = {"POLYBOT_PRIVATE_KEY", "POLYBOT_API_SECRET"} & _environ(status[name]["pid"]).keys()
        assert not leaked, f"{name} was given {sorted(leaked)}"
    signer = _environ(status["signer"]["pid"])
    assert signer["POLYBOT_PRIVATE_KEY"] == key and "POLYBOT_API_SECRET" not in signer
    assert _environ(status["supervisor"]["pid"])["POLYBOT_API_SECRET"] == secret  # it had them to hand on


def test_status_reports_a_service_that_keeps_dying_as_down_and_backs_off(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR + '[services.doomed]\nkind = "tests.mesh_services:Crasher"\n')
    mesh.start()
    wait_for(lambda: _running(mesh, "tally", "ticker"), what="the healthy services to come up")
    doomed = wait_for(lambda: (d := mesh.status()["doomed"])["restarts"] >= 3 and d["state"] == "down" and d,
                      what="doomed to be retried and shown down")
    assert doomed["pid"] == 0

    def table_says_down():  # it flips to "starting" at each retry, so look until it shows down
        result = mesh.cli("status")
        row = next(line for line in result.stdout.splitlines() if line.startswith("doomed"))
        return result.returncode == 3 and row.split()[1] == "down"

    wait_for(table_says_down, what="`polybot status` to show doomed down")
    # Backoff: the delays double (0.2, 0.4, 0.8 ...), so restarts grow slowly, not once per poll.
    log = mesh.log()
    assert "doomed exited with 3" in log and "restarting in 0.4s" in log and "restarting in 0.8s" in log


def test_status_without_a_supervisor_reports_every_service_down(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    result = mesh.cli("status", "--json")
    assert result.returncode == 3
    assert {row["name"]: row["state"] for row in json.loads(result.stdout)["services"]} == {
        "supervisor": "down", "tally": "down", "ticker": "down"}


def test_a_halted_service_answers_status_as_halted_and_stays_halted_across_a_restart(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    mesh.start()
    wait_for(lambda: _running(mesh, "tally", "ticker"), what="the mesh to come up")
    result = mesh.cli("halt", "ticker", "--reason", "drill")
    assert result.returncode == 0, result.stderr
    ticker = mesh.status()["ticker"]
    assert (ticker["state"], ticker["halt_reason"]) == ("halted", "drill")
    ticks = int(ticker["detail"]["ticks"])
    assert int(mesh.status()["ticker"]["detail"]["ticks"]) <= ticks + 1  # a halted ticker stops producing

    old_pid = ticker["pid"]
    assert mesh.cli("restart", "ticker").returncode == 0
    ticker = wait_for(lambda: (t := mesh.status()["ticker"])["pid"] not in (0, old_pid)
                      and t["state"] in ("running", "halted") and t, what="ticker to come back and answer")
    assert (ticker["state"], ticker["halt_reason"]) == ("halted", "drill")

    assert mesh.cli("resume", "ticker").returncode == 0
    assert mesh.status()["ticker"]["state"] == "running"
    wait_for(lambda: int(mesh.status()["ticker"]["detail"]["ticks"]) > 0, what="ticker to tick again")


def test_restart_replaces_one_service_and_leaves_the_others_running(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    mesh.start()
    before = wait_for(lambda: _running(mesh, "tally", "ticker"), what="the mesh to come up")
    result = mesh.cli("restart", "tally")
    assert result.returncode == 0, result.stderr
    after = wait_for(lambda: (s := _running(mesh, "tally")) and s["tally"]["pid"] != before["tally"]["pid"] and s,
                     what="tally to be replaced")
    assert after["ticker"]["pid"] == before["ticker"]["pid"]
    assert not pid_alive(before["tally"]["pid"])
    assert mesh.cli("restart", "nosuch").returncode == 1


def test_down_stops_the_supervisor_and_every_service(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    up = mesh.start()
    status = wait_for(lambda: _running(mesh, "tally", "ticker"), what="the mesh to come up")
    result = mesh.cli("down")
    assert result.returncode == 0, result.stderr
    assert up.wait(30) == 0
    for name in ("tally", "ticker"):
        wait_for(lambda: not pid_alive(status[name]["pid"]), what=f"{name} to exit")
    assert "stopped tally exit=0" in mesh.log() and "stopped ticker exit=0" in mesh.log()


def test_ctrl_c_stops_producers_before_consumers_and_exits_cleanly(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    up = mesh.start()
    status = wait_for(lambda: _running(mesh, "tally", "ticker"), what="the mesh to come up")
    up.send_signal(signal.SIGINT)
    assert up.wait(30) == 0
    log = mesh.log()
    assert log.index("stopped ticker") < log.index("stopped tally")  # reverse of the config order
    assert not pid_alive(status["tally"]["pid"]) and not pid_alive(status["ticker"]["pid"])


def test_a_second_supervisor_on_the_same_state_dir_refuses_to_start(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    mesh.start()
    wait_for(lambda: _running(mesh, "supervisor"), what="the first supervisor")
    second = mesh.cli("up", timeout=30)
    assert second.returncode == 2
    assert "already runs" in second.stderr


def test_a_service_whose_supervisor_is_killed_stops_instead_of_living_on(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    up = mesh.start()
    status = wait_for(lambda: _running(mesh, "tally", "ticker"), what="the mesh to come up")
    up.kill()
    up.wait(10)
    for name in ("tally", "ticker"):
        wait_for(lambda: not pid_alive(status[name]["pid"]), what=f"orphaned {name} to stop")


def test_service_logs_are_json_lines_in_the_state_dir(mesh_factory) -> None:
    mesh: Mesh = mesh_factory(PAIR)
    mesh.start()
    wait_for(lambda: _running(mesh, "tally", "ticker"), what="the mesh to come up")
    path: Path = mesh.state / "logs" / "ticker.log"
    first = json.loads(path.read_text().splitlines()[0])
    assert (first["service"], first["msg"], first["level"]) == ("ticker", "started", "INFO")
    assert first["publishes"] == "prices"


def test_up_starts_the_local_venue_first_by_default_and_it_serves(mesh_factory) -> None:
    import httpx

    gamma, clob, ws = free_port(), free_port(), free_port()
    mesh: Mesh = mesh_factory(PAIR, venue=f"true\noptions = {{ gamma_port = {gamma}, clob_port = {clob}, "
                                           f"ws_port = {ws}, markets = 4, events = 1, v2_markets = 1, "
                                           f"v2_events = 0 }}")
    mesh.start()
    status = wait_for(lambda: _running(mesh, "venue", "tally", "ticker"), what="the venue and services to run")
    assert list(status) == ["supervisor", "venue", "tally", "ticker"]
    assert status["venue"]["detail"]["markets"] == "9"  # 4 binary + 1 event of 4 outcomes + 1 of protocol v2
    assert httpx.get(f"http://127.0.0.1:{clob}/ok").text == "OK"
    assert len(httpx.get(f"http://127.0.0.1:{gamma}/markets").json()) == 9
