"""`polybot doctor` against a real local venue process: it passes on a good set-up and names the fix for each
broken one; `polybot up` live on Polymarket refuses to start while it fails, unless told to. The venue plays
Polymarket: the config says venue = "polymarket" and points its four addresses at the local venue."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from services import doctor
from services.config import AccountConfig, Config, Secrets, load
from services.runtime import StartupError
from services.venues.polymarket import wallets
from services.venues.polymarket.funder import wallet_for
from polybot_venue.server import ready_made_account

from .conftest import child_env, only, wait_for
from .venue_harness import Venue

SEED = 29
ANALYTICS_ONLY = only("[services.analytics]\n")  # a mesh just big enough for the supervisor to start
WALLETS = {"eoa": lambda owner: owner, "proxy": wallets.proxy_wallet, "safe": wallets.safe_wallet,
           "deposit": wallets.deposit_wallet}


@pytest.fixture(scope="module")
def venue(tmp_path_factory) -> Iterator[Venue]:
    venue = Venue(Path(os.path.realpath(tmp_path_factory.mktemp("doctor"))) / "s", SEED)
    yield venue
    venue.stop()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test: bound here, never listened on, so nothing else
    can listen on it either (port 0: the kernel's choice is free, and held it cannot be taken)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def config_text(state: Path, venue: Venue, extra: str = "", market_ws: str = "", clob: str = "") -> str:
    return (f'state_dir = "{state}"\nvenue = "polymarket"\nmode = "live"\n'
            f'[polymarket]\nclob_url = "{clob or venue.clob}"\ngamma_url = "{venue.gamma}"\n'
            f'market_ws_url = "{market_ws or venue.market_ws}"\nuser_ws_url = "{market_ws or venue.user_ws}"\n'
            f"{extra}")


def polymarket(tmp_path: Path, venue: Venue, extra: str = "", **urls: str) -> Config:
    """A config that trades live "on Polymarket", which is the local venue."""
    path = tmp_path / "polybot.toml"
    path.write_text(config_text(tmp_path / "state", venue, extra, **urls))
    return load(path, environ={})


def account(venue: Venue, wallet: str = "eoa", collateral: int = 10_000, approve: bool = True) -> tuple[str, str]:
    """A new owner key and its wallet of this kind, holding ``collateral`` pUSD, every exchange approved or none."""
    key = Account.create().key.hex()
    funder = WALLETS[wallet](Account.from_key(key).address)
    if collateral:
        venue.admin("fund", address=funder, collateral=collateral)
    if approve:
        venue.admin("approve", address=funder, exchange="all", unlimited=True)
    return key, funder


def examine(config: Config, key: str | None, **secrets: str) -> doctor.Report:
    environ = {f"POLYBOT_{k.upper()}": v for k, v in secrets.items()}
    if key:
        environ["POLYBOT_PRIVATE_KEY"] = key
    return doctor.run(config, Secrets(environ))


def failed(report: doctor.Report) -> dict[str, doctor.Check]:
    return {c.name: c for c in report.failures}


def statuses(report: doctor.Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


# ------------------------------------------------------------ the wallets it derives

def test_each_wallet_of_an_owner_is_the_address_polymarket_client_derives_for_it() -> None:
    owner = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # the vectors of tests/test_venue_wallets.py
    assert wallets.proxy_wallet(owner) == "0x365f0CA36Ae1f641E02fE3B7743673da42A13A70"
    assert wallets.safe_wallet(owner) == "0xd93B25cb943D14d0d34FBaF01Fc93a0f8b5F6E47"
    assert wallets.deposit_wallet(owner) == "0xBc0fF067b7740Eff76C1ca93c875Ba6B890d6B50"
    assert wallets.legacy_deposit_wallet(owner) == "0xdf8b9E8f9AB23f261F6e1B171B7454ae6E46Ba76"
    real = "0x14f30BA5B7e09789FE63a90ad8C0AC8e6eD90cD7"  # py-clob-client-v2 issue #64: its wallets on Polygon
    assert wallets.legacy_deposit_wallet(real) == "0xc3b18537e951175B063EA8CA755896a6705a88C6"
    assert wallets.deposit_wallet(real) == "0xbF810238e71C544b2677cA6Ea287D9735D3533f5"


def test_amoy_has_no_proxy_wallet_and_no_known_deposit_wallet_beacon() -> None:
    owner = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    for derive in (wallets.proxy_wallet, wallets.deposit_wallet):
        with pytest.raises(ValueError, match="chain 80002 has no"):
            derive(owner, 80002)
    assert wallets.safe_wallet(owner, 80002) == wallets.safe_wallet(owner)


# ------------------------------------------------------------ a good set-up

@pytest.mark.parametrize("wallet", ["eoa", "proxy", "safe", "deposit"])
def test_a_funded_approved_account_of_each_wallet_kind_passes_every_check(
        tmp_path: Path, venue: Venue, wallet: str) -> None:
    key, funder = account(venue, wallet)
    report = examine(polymarket(tmp_path, venue, f'[account]\nwallet = "{wallet}"\n'), key)
    assert report.ok and set(statuses(report).values()) == {"ok"}, doctor.format_report(report)
    assert [c.name for c in report.checks] == ["key", "addresses", "funder", "venue", "clock", "credentials",
                                               "closed-only", "balance", "allowances", "heartbeat",
                                               "market channel", "user channel", "risk limits"]
    lines = {c.name: c.detail for c in report.checks}
    assert funder in lines["balance"] and "10000 pUSD" in lines["balance"]
    assert doctor.format_report(report).endswith("all 13 checks pass")


def test_the_local_venues_ready_made_account_passes_when_no_key_is_set(tmp_path: Path, venue: Venue) -> None:
    path = tmp_path / "polybot.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\n[local_venue]\nstart = false\n'
                    f"options = {{ gamma_port = {venue.gamma_port}, clob_port = {venue.clob_port}, "
                    f"ws_port = {venue.ws_port}, seed = {SEED} }}\n")
    report = examine(load(path, environ={}), None)
    assert report.ok and set(statuses(report).values()) == {"ok"}, doctor.format_report(report)
    assert ready_made_account(SEED).address in report.checks[0].detail


def test_given_api_credentials_that_work_are_used_and_no_secret_is_shown(tmp_path: Path, venue: Venue) -> None:
    key, _ = account(venue)
    client = venue.client(key, funded=False)
    creds = client.creds
    report = examine(polymarket(tmp_path, venue), key, api_key=creds.api_key, api_secret=creds.api_secret,
                     api_passphrase=creds.api_passphrase)
    assert report.ok, doctor.format_report(report)
    assert "given API credentials work" in {c.name: c.detail for c in report.checks}["credentials"]
    shown = doctor.format_report(report) + json.dumps([c.detail + c.fix for c in report.checks])
    for secret in (key, key.removeprefix("0x"), creds.api_key, creds.api_secret, creds.api_passphrase):
        assert secret not in shown


# ------------------------------------------------------------ broken set-ups, each with its fix

def test_a_funder_that_is_no_wallet_of_the_key_fails_and_names_the_keys_own_wallet(tmp_path: Path,
                                                                                    venue: Venue) -> None:
    key, proxy = account(venue, "proxy")
    stranger = Account.create().address
    report = examine(polymarket(tmp_path, venue, f'[account]\nwallet = "proxy"\nfunder = "{stranger}"\n'), key)
    assert set(failed(report)) == {"funder"}, doctor.format_report(report)
    check = failed(report)["funder"]
    assert stranger in check.detail and f'account.funder = "{proxy}"' in check.fix
    assert statuses(report)["balance"] == "skip"


def test_a_funder_of_another_wallet_kind_fails_and_names_the_kind_it_is(tmp_path: Path, venue: Venue) -> None:
    key, proxy = account(venue, "proxy")
    report = examine(polymarket(tmp_path, venue, f'[account]\nwallet = "safe"\nfunder = "{proxy}"\n'), key)
    assert set(failed(report)) == {"funder"}, doctor.format_report(report)
    check = failed(report)["funder"]
    safe = wallets.safe_wallet(Account.from_key(key).address)
    assert check.detail.startswith(f'account.wallet: "safe", but account.funder {proxy} is the proxy wallet')
    assert check.fix.startswith(f'set account.wallet = "proxy", or set account.funder = "{safe}"')


# Where the executor takes a wallet the doctor must too, and where it refuses one the doctor fails saying the same.
FUNDER_CASES = {
    "a configured legacy deposit wallet": (137, "deposit", wallets.legacy_deposit_wallet, "ok",
                                           "the key's legacy deposit wallet"),
    "a deposit wallet on Amoy, not given": (80002, "deposit", None, "fail", "account.funder: chain 80002's deposit"),
    "a deposit wallet on Amoy, given": (80002, "deposit", lambda owner: Account.create().address, "ok",
                                        "not checked: chain 80002's current deposit wallets cannot be derived"),
    "a proxy wallet on Amoy": (80002, "proxy", None, "fail", "account.wallet: chain 80002 has no proxy wallet"),
}


@pytest.mark.parametrize("case", list(FUNDER_CASES))
def test_the_funder_check_takes_and_refuses_what_the_executor_takes_and_refuses(tmp_path: Path, venue: Venue,
                                                                                 case: str) -> None:
    chain, wallet, funder_of, status, said = FUNDER_CASES[case]
    key = Account.create().key.hex()
    owner = Account.from_key(key).address
    funder = funder_of(owner) if funder_of else ""
    account = AccountConfig(wallet=wallet, funder=funder)
    extra = f'chain_id = {chain}\n[account]\nwallet = "{wallet}"\nfunder = "{funder}"\n'
    check = next(c for c in examine(polymarket(tmp_path, venue, extra), key).checks if c.name == "funder")
    assert check.status == status and said in check.detail, check
    if status == "ok":
        assert check.detail.endswith(wallet_for(account, owner, chain).describe())
    else:
        with pytest.raises(StartupError) as refused:
            wallet_for(account, owner, chain)
        assert str(refused.value) == f"{check.detail}: {check.fix}"


def test_the_wrong_wallet_kind_fails_on_an_empty_balance_and_names_the_kind_that_holds_the_money(
        tmp_path: Path, venue: Venue) -> None:
    key, proxy = account(venue, "proxy")
    report = examine(polymarket(tmp_path, venue, '[account]\nwallet = "safe"\n'), key)
    assert set(failed(report)) == {"balance"}, doctor.format_report(report)
    check = failed(report)["balance"]
    assert f"the proxy wallet {proxy} holds 10000" in check.detail
    assert check.fix.startswith('set account.wallet = "proxy"')


def test_an_empty_wallet_fails_and_says_to_deposit(tmp_path: Path, venue: Venue) -> None:
    key, funder = account(venue, "deposit", collateral=0, approve=False)
    report = examine(polymarket(tmp_path, venue, '[account]\nwallet = "deposit"\n'), key)
    assert set(failed(report)) == {"balance"}, doctor.format_report(report)
    assert failed(report)["balance"].fix.startswith(f"deposit pUSD into {funder}")


def test_no_allowance_fails_and_names_each_exchange_to_approve(tmp_path: Path, venue: Venue) -> None:
    key, funder = account(venue, approve=False)
    venue.admin("approve", address=funder, exchange="0xE111180000d2663C0091e4f400237545B87B996B", amount=10_000,
                conditional=True)
    report = examine(polymarket(tmp_path, venue), key)
    assert set(failed(report)) == {"allowances"}, doctor.format_report(report)
    check = failed(report)["allowances"]
    assert check.detail == (f"{funder}: neg-risk exchange V2, exchange V3 may not spend its pUSD (buys are refused); "
                            "neg-risk exchange V2, exchange V3 may not move its outcome tokens (sells are refused)")
    assert "approve" in check.fix and "setApprovalForAll" in check.fix


def test_an_account_in_closed_only_mode_fails(tmp_path: Path, venue: Venue) -> None:
    key, _ = account(venue)
    owner = Account.from_key(key).address
    venue.admin("closed-only", address=owner)
    report = examine(polymarket(tmp_path, venue), key)
    assert set(failed(report)) == {"closed-only"}, doctor.format_report(report)
    assert owner in failed(report)["closed-only"].detail and "Polymarket support" in failed(report)["closed-only"].fix


def test_a_clock_a_minute_off_the_venues_fails_and_says_to_turn_on_ntp(tmp_path: Path, venue: Venue) -> None:
    key, _ = account(venue)
    venue.admin("clock", offset_ms=60_000)
    try:
        report = examine(polymarket(tmp_path, venue), key)
    finally:
        venue.admin("clock", offset_ms=0)
    assert set(failed(report)) == {"clock"}, doctor.format_report(report)
    check = failed(report)["clock"]
    assert "clock is 60 s behind the venue's" in check.detail and "NTP" in check.fix


def test_unreachable_channels_fail_and_name_the_settings_to_check(tmp_path: Path, venue: Venue,
                                                                  closed_port: int) -> None:
    key, _ = account(venue)
    nowhere = f"ws://127.0.0.1:{closed_port}/ws/market"
    report = examine(polymarket(tmp_path, venue, market_ws=nowhere), key)
    assert set(failed(report)) == {"market channel", "user channel"}, doctor.format_report(report)
    assert "polymarket.market_ws_url" in failed(report)["market channel"].fix
    assert "polymarket.user_ws_url" in failed(report)["user channel"].fix
    assert "cannot connect" in failed(report)["market channel"].detail


def test_no_key_fails_and_says_to_set_it_and_the_public_checks_still_run(tmp_path: Path, venue: Venue) -> None:
    report = examine(polymarket(tmp_path, venue), None)
    assert set(failed(report)) == {"key"}, doctor.format_report(report)
    assert "POLYBOT_PRIVATE_KEY" in failed(report)["key"].fix
    assert {n for n, s in statuses(report).items() if s == "ok"} == {"venue", "clock", "market channel"}
    assert len(report.checks) == 13 and not report.ok


def test_limits_above_the_balance_fail_and_say_how_low_to_set_them(tmp_path: Path, venue: Venue) -> None:
    key, funder = account(venue, collateral=1_000)
    report = examine(polymarket(tmp_path, venue, "[services.risk.options.agent]\nmax_daily_notional = 1500\n"), key)
    assert set(failed(report)) == {"risk limits"}, doctor.format_report(report)
    check = failed(report)["risk limits"]
    assert check.detail.startswith("limits.max_gross_exposure 5000, agent.max_daily_notional 1500: more than the "
                                   f"1000 pUSD {funder} can spend")
    assert check.fix.startswith("lower each (under [services.risk.options]) to at most 1000")


def test_given_api_credentials_the_venue_refuses_fail(tmp_path: Path, venue: Venue) -> None:
    key, _ = account(venue)
    report = examine(polymarket(tmp_path, venue), key, api_key="not-a-key", api_secret="c2VjcmV0",
                     api_passphrase="nope")
    assert set(failed(report)) == {"credentials"}, doctor.format_report(report)
    assert "unset POLYBOT_API_KEY" in failed(report)["credentials"].fix
    assert "not-a-key" not in doctor.format_report(report)


def test_a_venue_that_does_not_answer_fails_and_the_checks_that_need_it_are_skipped(
        tmp_path: Path, venue: Venue, closed_port: int) -> None:
    key, _ = account(venue, collateral=0, approve=False)
    report = examine(polymarket(tmp_path, venue, clob=f"http://127.0.0.1:{closed_port}"), key)
    assert set(failed(report)) == {"venue"}, doctor.format_report(report)
    assert "polymarket.clob_url" in failed(report)["venue"].fix
    assert statuses(report)["credentials"] == "skip" and statuses(report)["market channel"] == "skip"


def test_the_heartbeat_is_not_sent_while_the_account_has_open_orders(tmp_path: Path, venue: Venue) -> None:
    from py_clob_client_v2.clob_types import OrderArgsV2

    key, _ = account(venue)
    client = venue.client(key, funded=False)
    yes = json.loads(venue.market()["clobTokenIds"])[0]
    client.create_and_post_order(OrderArgsV2(token_id=yes, price=0.02, size=10, side="BUY"))
    report = examine(polymarket(tmp_path, venue), key)
    assert report.ok and statuses(report)["heartbeat"] == "skip", doctor.format_report(report)
    assert "the account has 1 open order," in {c.name: c.detail for c in report.checks}["heartbeat"]


# ------------------------------------------------------------ the command line

def cli(config: Path, *args: str, key: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    env = child_env(**({"POLYBOT_PRIVATE_KEY": key} if key else {}))
    return subprocess.run([sys.executable, "-m", "services", "--config", str(config), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_polybot_doctor_prints_json_for_machines_and_exits_1_when_a_check_fails(tmp_path: Path,
                                                                                venue: Venue) -> None:
    key, _ = account(venue)
    path = tmp_path / "polybot.toml"
    path.write_text(config_text(tmp_path / "state", venue))
    good = cli(path, "doctor", "--json", key=key)
    assert good.returncode == 0, good.stdout + good.stderr
    answer = json.loads(good.stdout)
    assert answer["ok"] is True and answer["venue"] == venue.clob and [c["status"] for c in answer["checks"]] == ["ok"] * 13
    bad = cli(path, "doctor", key="")
    assert bad.returncode == 1 and bad.stdout.rstrip().endswith("1 of 13 checks failed")
    assert "✗ key" in bad.stdout and "fix: export POLYBOT_PRIVATE_KEY" in bad.stdout


def mesh_config(state_dir: Path, venue: Venue) -> Path:
    """Live "on Polymarket" (the local venue), with only analytics."""
    path = state_dir.parent / "polybot.toml"
    path.write_text(config_text(state_dir, venue, ANALYTICS_ONLY))
    return path


def supervisor_running(config: Path) -> bool:
    status = cli(config, "status", "--json", timeout=30)
    rows = {row["name"]: row for row in json.loads(status.stdout)["services"]} if status.stdout.startswith("{") else {}
    return rows.get("supervisor", {}).get("state") == "running"


def start_up(config: Path, *args: str, key: str = "") -> subprocess.Popen:
    env = child_env(**({"POLYBOT_PRIVATE_KEY": key} if key else {}))
    return subprocess.Popen([sys.executable, "-m", "services", "--config", str(config), "up", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(up: subprocess.Popen) -> str:
    up.send_signal(signal.SIGINT)
    out, _ = up.communicate(timeout=60)
    return out


def test_polybot_up_live_on_polymarket_refuses_while_doctor_fails_and_starts_with_skip_doctor(
        state_dir: Path, venue: Venue) -> None:
    config = mesh_config(state_dir, venue)
    refused = cli(config, "up")
    assert refused.returncode == 1
    assert "✗ key" in refused.stderr and "start anyway with `polybot up --skip-doctor`" in refused.stderr
    assert not supervisor_running(config)
    up = start_up(config, "--skip-doctor")
    try:
        wait_for(lambda: supervisor_running(config), timeout=60, what="the supervisor to start")
    finally:
        out = stop(up)
    assert "doctor" not in out


def test_polybot_up_live_on_polymarket_runs_doctor_and_starts_when_it_passes(state_dir: Path, venue: Venue) -> None:
    key, _ = account(venue)
    config = mesh_config(state_dir, venue)
    up = start_up(config, key=key)
    try:
        wait_for(lambda: supervisor_running(config), timeout=60, what="the supervisor to start")
    finally:
        out = stop(up)
    assert "polybot: doctor: all 12 checks pass (1 skipped)" in out  # risk limits: this mesh runs no risk


def test_polybot_up_against_the_local_venue_runs_doctor_only_when_asked(state_dir: Path, venue: Venue,
                                                                        closed_port: int) -> None:
    path = state_dir.parent / "polybot.toml"
    path.write_text(f'state_dir = "{state_dir}"\n[local_venue]\nstart = false\n'
                    f"options = {{ gamma_port = {venue.gamma_port}, clob_port = {venue.clob_port}, "
                    f"ws_port = {closed_port}, seed = {SEED} }}\n{ANALYTICS_ONLY}")
    asked = cli(path, "up", "--doctor")
    assert asked.returncode == 1 and "✗ market channel" in asked.stderr
    assert "[local_venue] options" in asked.stderr
    embedded = state_dir.parent / "embedded.toml"
    embedded.write_text(f'state_dir = "{state_dir}"\n{ANALYTICS_ONLY}')
    refused = cli(embedded, "up", "--doctor")
    assert refused.returncode == 2 and "[local_venue] start = false" in refused.stderr
    up = start_up(path)  # unasked, against the local venue: no doctor, though a channel is unreachable
    try:
        wait_for(lambda: supervisor_running(path), timeout=60, what="the supervisor to start")
    finally:
        out = stop(up)
    assert "doctor" not in out


def test_venue_admin_knobs_refuse_bad_input(venue: Venue) -> None:
    bad = httpx.post(f"{venue.clob}/_admin/closed-only", json={"address": "0x12", "closed_only": True})
    assert bad.status_code == 400 and "address" in bad.json()["error"]
    bad = httpx.post(f"{venue.clob}/_admin/closed-only", json={"address": Account.create().address,
                                                                "closed_only": "yes"})
    assert bad.status_code == 400 and "true or false" in bad.json()["error"]
