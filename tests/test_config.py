"""Configuration: file + POLYBOT_* overrides, errors naming the key, secrets only from the environment."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from services import config as c
from services.runtime import resolve

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
    assert config.services["ticker"].enabled is False and config.enabled_services == []


def test_ensure_state_dir_creates_the_state_sock_and_logs_folders_private(env, state_dir):
    root = c.ensure_state_dir(c.load(None, {**env, "POLYBOT_STATE_DIR": str(state_dir)}))
    assert root == state_dir
    for folder in (root, root / "sock", root / "logs"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_ensure_state_dir_tightens_an_existing_open_state_dir(env, state_dir):
    state_dir.mkdir(parents=True)
    state_dir.chmod(0o755)
    c.ensure_state_dir(c.load(None, {**env, "POLYBOT_STATE_DIR": str(state_dir)}))
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700


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
    assert list(config.services) == ["venue", "ticker"]
    assert config.services["venue"].kind == c.LOCAL_VENUE_KIND and config.services["venue"].options == {"seed": 3}
    assert list(c.load(path, {**env, "POLYBOT_LOCAL_VENUE__START": "false"}).services) == ["ticker"]
    assert list(c.load(path, {**env, "POLYBOT_VENUE": "polymarket"}).services) == ["ticker"]
