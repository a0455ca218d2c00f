"""The trading health rules on their own: status rows as the services give them, judged."""
from __future__ import annotations

import msgspec
import pytest

from services import messages as m
from services.health import ROLES, SIGNAL_WINDOW_S, format_health, judge, trading_configured

KINDS = {"scanner": ROLES["scanner"], "risk": ROLES["risk"], "executor": ROLES["executor"],
         "strategies": ROLES["strategies"], "analytics": "services.analytics:Analytics"}
GOOD = {
    "scanner": {"markets": "30", "stale": "0"},
    "risk": {"synced": "True", "reconciled": "True", "executor_connected": "True", "markets": "30", "stale": "0",
             "last_accepted_s": "2.0", "last_rejected_s": "1.0", "last_refusal": "PRICE_DEVIATION"},
    "executor": {"ready": "True", "venue_conditions": "none"},
    "strategies": {"synced": "True", "markets": "30", "stale": "0"},
    "analytics": {},
}


def rows(**changes: dict[str, str]) -> list[m.ServiceState]:
    """Every service running with healthy details, but for ``changes`` (a service's detail keys, or its state)."""
    out = [m.ServiceState(name="supervisor", state="running")]
    for name, detail in GOOD.items():
        change = dict(changes.get(name, {}))
        state = change.pop("state", "running")
        halt = change.pop("halt_reason", "")
        out.append(m.ServiceState(name=name, state=state, halt_reason=halt, detail={**detail, **change}))
    return out


def test_a_mesh_whose_services_all_say_they_can_trade_is_healthy() -> None:
    health = judge(rows(), KINDS)
    assert health.healthy and health.reasons == []
    assert (health.markets, health.stale, health.executor_ready, health.executor_connected) == (30, 0, True, True)
    assert health.signals.last_accepted_s == 2.0 and health.signals.last_refusal == "PRICE_DEVIATION"
    assert format_health(health).startswith("TRADING  healthy: 30 markets")


@pytest.mark.parametrize(("changes", "reason"), [
    ({"risk": {"stale": "30"}}, "risk: 30 of 30 markets stale (signals on them are refused as STALE_BOOK)"),
    ({"scanner": {"stale": "4"}}, "scanner: 4 of 30 markets stale"),
    ({"scanner": {"markets": "0"}}, "scanner has no markets yet"),
    ({"strategies": {"stale": "2"}}, "strategies: 2 of 30 markets stale (no signals for them)"),
    ({"strategies": {"synced": "False"}}, "strategies has not synced from the scanner yet"),
    ({"risk": {"executor_connected": "False"}}, "risk: no executor connected"),
    ({"risk": {"reconciled": "False"}}, "risk not ready: synced from the scanner True, reconciled with the executor "
                                        "False"),
    ({"executor": {"ready": "False"}}, "executor is not ready"),
    ({"executor": {"venue_conditions": "RESTARTING,POST_ONLY_WINDOW"}}, "the venue: RESTARTING, POST_ONLY_WINDOW"),
    ({"executor": {"state": "down"}}, "executor is down"),
    ({"strategies": {"state": "halted", "halt_reason": "drill"}}, "strategies is halted: drill"),
    ({"risk": {"last_accepted_s": "", "last_rejected_s": "3.5", "last_refusal": "STALE_BOOK"}},
     f"risk: every signal of the last {SIGNAL_WINDOW_S:.0f} s was refused (the last as STALE_BOOK)"),
    ({"risk": {"last_accepted_s": str(SIGNAL_WINDOW_S + 1), "last_rejected_s": "0.5", "last_refusal": "LIMIT"}},
     "risk: every signal of the last"),
])
def test_each_rule_that_fails_is_a_reason_and_makes_trading_unhealthy(changes: dict, reason: str) -> None:
    health = judge(rows(**changes), KINDS)
    assert not health.healthy
    assert len(health.reasons) == 1 and health.reasons[0].startswith(reason), health.reasons
    assert reason.split(" (")[0] in format_health(health)


@pytest.mark.parametrize("risk", [
    {"last_accepted_s": "", "last_rejected_s": ""},  # no signal since risk started: a quiet market
    {"last_accepted_s": "", "last_rejected_s": str(SIGNAL_WINDOW_S + 5)},  # refusals, but long ago
    {"last_accepted_s": "50", "last_rejected_s": "0.1"},  # refusals among acceptances
])
def test_no_signals_or_refusals_among_acceptances_are_not_a_fault(risk: dict) -> None:
    assert judge(rows(risk=risk), KINDS).healthy


def test_a_trading_mesh_without_an_executor_cannot_be_healthy_and_other_meshes_are_not_judged() -> None:
    kinds = {k: v for k, v in KINDS.items() if k != "executor"}
    health = judge([r for r in rows() if r.name != "executor"], kinds)
    assert health.reasons == ["no executor in the config: nothing trades without one"]
    agents_only = {k: v for k, v in KINDS.items() if k != "strategies"}  # agents trade through MCP, no strategies
    assert judge([r for r in rows() if r.name != "strategies"], agents_only).healthy
    assert trading_configured(kinds) and not trading_configured({"tally": "tests.mesh_services:Tally"})


def test_unreadable_figures_count_as_none_and_a_service_that_does_not_answer_is_down() -> None:
    health = judge(rows(scanner={"markets": "many"}), KINDS)
    assert health.reasons == ["scanner has no markets yet (Gamma not reached, or still loading)"]
    missing = judge([r for r in rows() if r.name != "risk"], KINDS)
    assert missing.reasons == ["risk is down"]


def test_health_encodes_for_status_json() -> None:
    health = judge(rows(risk={"stale": "3"}), KINDS)
    decoded = msgspec.json.decode(msgspec.json.encode({"trading": health}))["trading"]
    assert decoded["healthy"] is False and decoded["stale_at_risk"] == 3 and decoded["signals"]["last_accepted_s"] == 2
