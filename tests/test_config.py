"""Configuration: file + POLYBOT_* overrides, errors naming the key, secrets only from the environment."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services import config as c
from services.risk.limits import RiskOptions
from services.runtime import check_services, resolve

DEFAULTS = list(c.DEFAULT_SERVICES)
SUFFIX = "/sock/control-supervisor.ipc"  # the longest ipc address when no service is configured


@pytest.fixture
def env(tmp_path: Path, state_dir: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_STATE_HOME": str(state_dir)}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "polybot.toml"
    path.write_text(text)
    return path


def fails(path: Path | None, environ: dict[str, str]) -> str:
    with pytest.raises(c.ConfigError) as err:
        c.load(path, environ)
    return str(err.value)


@pytest.mark.parametrize("text, key", [
    ('[bus]\ntransprt = "tcp"\n', "bus.transprt"),
    ('[services.ticker]\nkind = "a:B"\nenabld = true\n', "services.ticker.enabld"),
    ('[services.ticker]\nkind = "a:B"\nenabled = "yes"\n', "services.ticker.enabled"),
])
def test_bad_key_in_file_fails_naming_the_file_and_its_dotted_path(tmp_path, env, text, key):
    path = write(tmp_path, text)
    assert f"{path}: {key}:" in fails(path, env)


def test_unknown_environment_override_fails_naming_the_variable_and_key(tmp_path, env):
    message = fails(write(tmp_path, ""), {**env, "POLYBOT_BUS__NOPE": "1"})
    assert "environment POLYBOT_BUS__NOPE" in message and "bus.nope" in message


def test_environment_type_error_names_the_variable(tmp_path, env):
    message = fails(write(tmp_path, ""), {**env, "POLYBOT_BUS__BASE_PORT": "abc"})
    assert "environment POLYBOT_BUS__BASE_PORT" in message and "bus.base_port" in message


def test_environment_overrides_win_over_the_file_and_are_typed(tmp_path, env, state_dir):
    path = write(tmp_path, 'state_dir = "/tmp/from-file"\n[bus]\nheartbeat_s = 2.0\nbase_port = 7000\n'
                           '[services.ticker]\nkind = "a:B"\nenabled = true\n')
    config = c.load(path, {**env, "POLYBOT_BUS__HEARTBEAT_S": "0.5", "POLYBOT_STATE_DIR": str(state_dir),
                           "POLYBOT_BUS__BASE_PORT": "9000", "POLYBOT_SERVICES__TICKER__ENABLED": "false",
                           "POLYBOT_LOCAL_VENUE__START": "false"})
    assert config.bus.heartbeat_s == 0.5
    assert config.state_dir == str(state_dir)
    assert config.bus.base_port == 9000 and type(config.bus.base_port) is int
    assert config.services["ticker"].enabled is False and "ticker" not in config.enabled_services


def test_ensure_state_dir_creates_the_state_sock_and_logs_folders_private(env, state_dir):
    root = c.ensure_state_dir(c.load(None, {**env, "POLYBOT_STATE_DIR": str(state_dir)}))
    assert root == state_dir
    for folder in (root, root / "sock", root / "logs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


@pytest.mark.parametrize("mode", [0o1777, 0o755, 0o710])
def test_an_existing_state_dir_others_can_enter_is_refused_not_changed(env, state_dir, mode):
    state_dir.mkdir(parents=True)
    state_dir.chmod(mode)
    with pytest.raises(c.ConfigError, match=rf"state_dir: {state_dir} has mode {mode:04o} .* must be yours and 0700"):
        c.ensure_state_dir(c.load(None, {**env, "POLYBOT_STATE_DIR": str(state_dir)}))
    assert stat.S_IMODE(state_dir.stat().st_mode) == mode and not (state_dir / "sock").exists()


@pytest.mark.parametrize("text", ['private_key = "0xabc"\n',
                                  '[services.x]\nkind = "a:B"\n[services.x.options]\nprivate_key = "0xabc"\n'])
def test_secret_in_file_is_refused_pointing_at_its_environment_variable(tmp_path, env, text):
    message = fails(write(tmp_path, text), env)
    assert "private_key is a secret" in message and "POLYBOT_PRIVATE_KEY" in message and "0xabc" not in message


def test_secrets_load_from_the_environment_and_their_repr_hides_the_values():
    secrets = c.load_secrets({"POLYBOT_PRIVATE_KEY": "0xdeadbeef", "POLYBOT_API_KEY": "k-123"})
    assert (secrets.private_key, secrets.api_key, secrets.mcp_token) == ("0xdeadbeef", "k-123", None)
    assert sorted(secrets.values()) == ["0xdeadbeef", "k-123"]
    shown = repr(secrets)
    assert "0xdeadbeef" not in shown and "k-123" not in shown and "private_key=***" in shown


def test_relative_state_dir_is_refused(tmp_path, env):
    assert "must be an absolute path" in fails(write(tmp_path, 'state_dir = "relative/state"\n'), env)


def test_state_dir_too_long_for_ipc_paths_is_refused_suggesting_tcp(env):
    fits = "/" + "a" * (c.UNIX_PATH_MAX - len(SUFFIX) - 1)
    assert len(c.control_address(c.load(None, {**env, "POLYBOT_STATE_DIR": fits}), "supervisor")) == 6 + 107
    message = fails(None, {**env, "POLYBOT_STATE_DIR": fits + "a"})
    assert "too long for ipc" in message and 'bus.transport = "tcp"' in message
    assert c.load(None, {**env, "POLYBOT_STATE_DIR": fits + "a", "POLYBOT_BUS__TRANSPORT": "tcp"})


def test_tcp_addresses_bind_to_loopback_by_default_and_are_all_distinct(tmp_path, env):
    path = write(tmp_path, '[bus]\ntransport = "tcp"\n[services.a]\nkind = "a:B"\n[services.b]\nkind = "a:B"\n')
    config = c.load(path, env)
    sockets = [c.socket_address(config, name) for name in c.SOCKET_NAMES]
    controls = [c.control_address(config, name) for name in ("supervisor", "a", "b")]
    assert c.socket_address(config, "prices").startswith("tcp://127.0.0.1:")
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in sockets + controls)
    assert len(set(sockets + controls)) == len(sockets + controls)


def test_missing_config_file_named_explicitly_fails(tmp_path, env):
    assert "no such config file" in fails(tmp_path / "absent.toml", env)
    assert "no such config file" in fails(None, {**env, "POLYBOT_CONFIG": str(tmp_path / "absent.toml")})


def test_no_file_at_the_default_location_gives_the_defaults(env, state_dir):
    config = c.load(None, env)
    assert config.state_dir == str(state_dir / "polybot")
    assert (config.bus, config.supervisor, config.log, config.venue) == (
        c.BusConfig(), c.SupervisorConfig(), c.LogConfig(), "local")
    assert list(config.services) == ["venue", "analytics", "scanner", "executor", "risk", "strategies"]
    assert config.services["venue"] == c.ServiceConfig(kind=c.LOCAL_VENUE_KIND)
    assert c.trading_mode(config) == "live"  # against the local venue; against Polymarket paper unless chosen


def test_service_options_unknown_to_the_service_fail_naming_the_options_key(tmp_path, env):
    config = c.load(write(tmp_path, '[services.ticker]\nkind = "tests.mesh_services:Ticker"\n'
                                    '[services.ticker.options]\ninterval_ms = 5\nintervl = 7\n'), env)
    with pytest.raises(c.ConfigError, match=r"services\.ticker\.options\.intervl"):
        resolve(config, "ticker")


# ---------------------------------------------------------------- known product bugs (see the report)

def test_secret_inside_an_array_of_tables_is_refused(tmp_path, env):
    text = '[services.x]\nkind = "a:B"\n[[services.x.options.accounts]]\nprivate_key = "0xabc"\n'
    assert "POLYBOT_PRIVATE_KEY" in fails(write(tmp_path, text), env)


def test_ipc_path_limit_counts_bytes_not_characters(env):
    assert "too long for ipc" in fails(None, {**env, "POLYBOT_STATE_DIR": "/tmp/" + "é" * 60})


def test_home_in_the_given_environ_locates_the_default_config(tmp_path):
    assert c.default_config_path({"HOME": str(tmp_path)}) == tmp_path / ".config" / "polybot" / "polybot.toml"


def test_the_local_venue_is_the_first_service_by_default_and_can_be_left_out(tmp_path, env):
    path = write(tmp_path, '[services.ticker]\nkind = "a:B"\n[local_venue.options]\nseed = 3\n')
    config = c.load(path, env)
    assert list(config.services) == ["venue", *DEFAULTS, "ticker"]
    assert config.services["venue"].kind == c.LOCAL_VENUE_KIND and config.services["venue"].options == {"seed": 3}
    assert list(c.load(path, {**env, "POLYBOT_LOCAL_VENUE__START": "false"}).services) == [*DEFAULTS, "ticker"]
    assert list(c.load(path, {**env, "POLYBOT_VENUE": "polymarket"}).services) == [*DEFAULTS, "ticker"]


# ---------------------------------------------------------------- service tables add to and adjust the defaults

def test_risk_options_alone_adjust_the_default_risk_service_and_keep_every_default(tmp_path, env):
    config = c.load(write(tmp_path, "[services.risk.options]\nclient_approval = false\n"), env)
    assert list(config.services) == ["venue", *DEFAULTS] and config.enabled_services == list(config.services)
    assert config.services["risk"].kind == c.DEFAULT_SERVICES["risk"].kind
    assert resolve(config, "risk")[1].client_approval is False


def test_setting_one_option_leaves_the_other_options_at_their_defaults(tmp_path, env):
    path = write(tmp_path, "[services.risk.options.limits]\nmax_order_notional = 10\n")
    options = resolve(c.load(path, env), "risk")[1]
    assert options.limits.max_order_notional == 10
    assert options.limits.max_open_orders == RiskOptions().limits.max_open_orders
    assert (options.agent, options.client_approval) == (RiskOptions().agent, RiskOptions().client_approval)
    # An environment override of another option in the same table merges in beside the file's, key by key.
    both = resolve(c.load(path, {**env, "POLYBOT_SERVICES__RISK__OPTIONS__LIMITS__MAX_OPEN_ORDERS": "5"}), "risk")[1]
    assert (both.limits.max_order_notional, both.limits.max_open_orders) == (10, 5)
    assert both.limits.max_gross_exposure == RiskOptions().limits.max_gross_exposure


def test_an_audit_table_with_its_kind_adds_audit_after_the_defaults_and_keeps_them(tmp_path, env):
    path = write(tmp_path, '[services.audit]\nkind = "services.audit:Audit"\n[services.scanner.options]\nping_s = 3\n')
    config = c.load(path, env)
    assert list(config.services) == ["venue", *DEFAULTS, "audit"]  # the defaults' order, then what the file adds
    assert config.enabled_services == list(config.services)
    assert config.services["audit"] == c.ServiceConfig(kind="services.audit:Audit")


def test_enabled_false_turns_one_default_service_off_and_keeps_the_rest(tmp_path, env):
    config = c.load(write(tmp_path, "[services.strategies]\nenabled = false\n"), env)
    assert config.enabled_services == ["venue", "analytics", "scanner", "executor", "risk"]
    assert list(config.services)[-1] == "strategies"  # still listed, so no other service's ports move
    by_env = c.load(None, {**env, "POLYBOT_SERVICES__SCANNER__ENABLED": "false"})
    assert "scanner" not in by_env.enabled_services and len(by_env.enabled_services) == len(DEFAULTS)


def test_a_new_service_without_kind_is_refused_saying_it_needs_one(tmp_path, env):
    path = write(tmp_path, "[services.rsik.options]\nclient_approval = false\n")
    message = fails(path, env)
    assert f"{path}: services.rsik: missing kind; did you mean [services.risk]?" in message
    assert "not a default service (venue, analytics, scanner, executor, risk, strategies)" in message
    assert 'needs kind = "package.module:Class"' in message
    message = fails(None, {**env, "POLYBOT_SERVICES__AUDIT__ENABLED": "true"})
    assert message.startswith("environment POLYBOT_SERVICES__AUDIT__ENABLED: services.audit: missing kind")


@pytest.mark.parametrize("text, error", [
    ("[local_venue.options]\ngaps_per_s = 1.0\n",
     "local_venue.options.gaps_per_s: unknown key; gaps_per_s belongs under [local_venue.options.life]"),
    ('[local_venue]\nhost = "0.0.0.0"\n', "local_venue.host: unknown key; host belongs under [local_venue.options]"),
    ("[services.risk]\nclient_approval = false\n",
     "services.risk.client_approval: unknown key; client_approval belongs under [services.risk.options]"),
    ("[services.risk.options]\nenabled = false\n",
     "services.risk.options.enabled: unknown key; enabled belongs under [services.risk]"),
    ('[bus]\nlevel = "DEBUG"\n', "bus.level: unknown key; level belongs under [log]"),
])
def test_a_misplaced_known_key_is_refused_naming_where_it_belongs(tmp_path, env, text, error):
    with pytest.raises(c.ConfigError) as err:  # as the file is read, or as `polybot up` checks each service's options
        config = c.load(write(tmp_path, text), env)
        for name in config.enabled_services:
            resolve(config, name)
    assert error in str(err.value)


def test_the_local_venues_knobs_under_its_service_table_are_refused_pointing_at_local_venue_options(tmp_path, env):
    message = fails(write(tmp_path, "[services.venue.options]\nseed = 3\n"), env)
    assert "services.venue.options: the local venue's knobs go under [local_venue.options]" in message
    # The rest of its table adjusts it like any default: here its control address, beside its kind and knobs.
    path = write(tmp_path, '[services.venue]\ncontrol = "tls+tcp://venue:7710"\n[local_venue.options]\nseed = 3\n')
    venue = c.load(path, env).services["venue"]
    assert venue == c.ServiceConfig(kind=c.LOCAL_VENUE_KIND, control="tls+tcp://venue:7710", options={"seed": 3})


def test_up_refuses_an_added_service_that_binds_what_an_enabled_default_binds(tmp_path, env):
    added = '[services.guard]\nkind = "services.risk:Risk"\n'
    with pytest.raises(c.ConfigError, match=r"services\.guard: binds decisions as services\.risk does, and only one "
                                            r"can; set \[services\.risk\] enabled = false to run guard in its place"):
        check_services(c.load(write(tmp_path, added), env))
    check_services(c.load(write(tmp_path, added + "[services.risk]\nenabled = false\n"), env))


def test_service_of_kind_is_the_default_until_it_is_turned_off_and_then_the_one_the_config_adds(tmp_path, env):
    risk = c.DEFAULT_SERVICES["risk"].kind
    added = f'[services.guard]\nkind = "{risk}"\n'
    assert c.service_of_kind(c.load(write(tmp_path, added), env), risk, "risk") == "risk"
    off = c.load(write(tmp_path, added + "[services.risk]\nenabled = false\n"), env)
    assert c.service_of_kind(off, risk, "risk") == "guard"


def test_only_the_executor_is_given_the_trading_secrets_unless_a_service_names_its_own() -> None:
    from services.config import EXECUTOR_KIND, TRADING_SECRETS, ServiceConfig, service_environment, service_secrets

    environ = {"HOME": "/h", "POLYBOT_PRIVATE_KEY": "k", "POLYBOT_API_KEY": "a", "POLYBOT_MCP_TOKEN": "t"}
    executor, scanner = ServiceConfig(kind=EXECUTOR_KIND), ServiceConfig(kind="services.scanner:Scanner")
    assert service_secrets(executor) == TRADING_SECRETS and service_secrets(scanner) == ()
    assert service_environment(environ, executor) == {"HOME": "/h", "POLYBOT_PRIVATE_KEY": "k", "POLYBOT_API_KEY": "a"}
    assert service_environment(environ, scanner) == {"HOME": "/h"}
    named = ServiceConfig(kind="services.scanner:Scanner", secrets=["mcp_token"])
    assert service_environment(environ, named) == {"HOME": "/h", "POLYBOT_MCP_TOKEN": "t"}
