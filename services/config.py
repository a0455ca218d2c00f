"""Configuration: one TOML file, every default in code, ``POLYBOT_*`` overrides, secrets from the environment only.

Environment overrides name a key path with ``__`` between levels:
``POLYBOT_STATE_DIR=/srv/polybot``, ``POLYBOT_BUS__TRANSPORT=tcp``,
``POLYBOT_SERVICES__SCANNER__ENABLED=false``. Values are read as TOML values
when they parse as one (numbers, booleans, arrays), else as plain strings.

A ``[services.NAME]`` table adjusts the default service of that name (its options merge key by key) or, for
any other name, adds a service, which then needs ``kind``; ``enabled = false`` turns a service off.

Each agent-authored strategy the operator approved and has not stopped (``<state_dir>/strategies``, see
services/strategies/store.py) is one more service, ``strategy_NAME``: a strategies host running only that version,
with the options of ``[services.strategies]`` otherwise. The names ``strategy_*`` are kept for them.
"""
from __future__ import annotations

import difflib
import importlib
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec
from msgspec import Struct

from polybot_venue import ports

CONFIG_ENV = "POLYBOT_CONFIG"
SUPERVISOR_ENV = "POLYBOT_SUPERVISOR_PID"  # set by the supervisor on its children
SecretName = Literal["private_key", "api_key", "api_secret", "api_passphrase", "mcp_token"]
SECRET_NAMES: tuple[str, ...] = get_args(SecretName)
TRADING_SECRETS = ("private_key", "api_key", "api_secret", "api_passphrase")
EXECUTOR_KIND = "services.executor:Executor"
RISK_KIND = "services.risk:Risk"
STRATEGIES_KIND = "services.strategies.host:Strategies"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
RESERVED_ENV = {CONFIG_ENV, SUPERVISOR_ENV} | {f"POLYBOT_{n.upper()}" for n in SECRET_NAMES}

SOCKET_NAMES = ("prices", "events", "signals", "orders", "executions", "decisions")
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
STRATEGY_SERVICE_PREFIX = "strategy_"  # the services of approved agent-authored strategies (strategies/store.py)
UNIX_PATH_MAX = 107  # sockaddr_un.sun_path, less the terminating NUL


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the fix."""


class _Section(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class BusConfig(_Section):
    # ipc: one machine. tcp: plaintext, loopback only unless allow_plaintext. tls: tcp with mutual certificates
    # (services/tls.py; `polybot certs` makes them), for a mesh across machines.
    transport: Literal["ipc", "tcp", "tls"] = "ipc"
    host: str = "127.0.0.1"  # tcp and tls: where the stable side binds and the others dial
    base_port: int = 7700  # tcp and tls: prices .. decisions at +0..+5, supervisor +9, services +10..
    addresses: dict[str, str] = {}  # per-socket override, e.g. prices = "tls+tcp://10.0.0.5:7700"
    tls_dir: str = ""  # tls: the CA's and each identity's certificates and keys; "" for <state_dir>/tls
    allow_plaintext: bool = False  # let plain tcp leave the machine (anyone who reaches a port is then trusted)
    recv_timeout_ms: int = 1000
    send_timeout_ms: int = 1000
    buffer: int = 8192  # messages queued per socket (NNG's maximum); holds ~2 s of a 30k/s burst
    heartbeat_s: float = 1.0
    linger_ms: int = 250  # on stop, time given to queued outbound frames before sockets close
    # The largest frame the bus carries: a bigger one is refused where it is sent and skipped where it arrives, and
    # counted (``oversized``) at both ends. Past twice this NNG cuts the connection before anything is read.
    max_frame_bytes: int = 64 * 1024 * 1024


class SupervisorConfig(_Section):
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_reset_s: float = 30.0  # a service that stayed up this long starts its backoff afresh
    ready_timeout_s: float = 30.0
    stop_timeout_s: float = 10.0


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file_max_mb: int = 10
    file_backups: int = 5


class MetricsConfig(_Section):
    """Prometheus metrics: each service serves ``/metrics`` on its own port."""

    enabled: bool = True
    host: str = "127.0.0.1"  # where the endpoints listen; "0.0.0.0" in a container
    base_port: int = 9400  # the supervisor at base_port, services at base_port + 1 + their place in [services]; 0: any free port


class TracingConfig(_Section):
    """OpenTelemetry tracing (needs the ``otel`` extra): each hop of a trade is a span under the message's trace."""

    enabled: bool = False
    exporter: Literal["otlp", "console"] = "otlp"
    endpoint: str = "http://127.0.0.1:4318/v1/traces"  # OTLP over HTTP (protobuf)
    sample_ratio: float = 1.0  # of traces, decided by the trace id so every hop of one trade agrees


class ContainmentConfig(_Section):
    """The limits agent code runs under when it is checked or backtested (services/strategies/sandbox.py)."""

    cpu_s: int = 20  # CPU seconds (RLIMIT_CPU)
    memory_mb: int = 768  # address space (RLIMIT_AS)
    files: int = 64  # open files (RLIMIT_NOFILE)
    file_mb: int = 16  # the largest file it may write (RLIMIT_FSIZE)
    wall_s: float = 60.0  # wall-clock deadline, enforced by the parent killing the child's process group
    answer_mb: int = 64  # the largest answer read back from the child


class McpConfig(_Section):
    """The MCP server (polybot-mcp)."""

    # Which tools it serves: "trading" all of them; "no_trading" all but those that send orders or cancels;
    # "read_only" only those that change nothing (no backtest reports written either).
    tools: Literal["trading", "no_trading", "read_only"] = "trading"
    containment: ContainmentConfig = ContainmentConfig()  # [mcp.containment]: agent code's limits


class ServiceConfig(_Section):
    kind: str  # "package.module:Class"
    enabled: bool = True
    control: str = ""  # control address override
    metrics_port: int | None = None  # override of the port derived from metrics.base_port; 0: any free port
    options: dict[str, Any] = {}  # validated by the service class's own Options
    # The secrets (of SECRET_NAMES) the supervisor passes it in its environment; None: the executor gets the trading
    # secrets (the key and the API credentials), every other service none.
    secrets: list[SecretName] | None = None


LOCAL_VENUE_HOST = ports.HOST
LOCAL_VENUE_PORTS = ports.PORTS


class PolymarketConfig(_Section):
    """Where the real venue lives; with venue = "local" these are derived from the local venue instead."""

    gamma_url: str = "https://gamma-api.polymarket.com"
    clob_url: str = "https://clob.polymarket.com"
    market_ws_url: str = "wss://ws-subscriptions-clob.polymarket.com/ws/market"
    user_ws_url: str = "wss://ws-subscriptions-clob.polymarket.com/ws/user"
    relayer_url: str = "https://relayer-v2.polymarket.com"  # asked whether a deposit wallet exists
    chain_id: int = 137


class AccountConfig(_Section):
    """The account live orders are signed for. The key (POLYBOT_PRIVATE_KEY) is always the owner's EOA; ``wallet``
    says what holds the money and makes the orders, as Polymarket's signature types do: "eoa" (0, the key's own
    address), "proxy" (1, Polymarket's proxy wallet of the key), "safe" (2, its Gnosis Safe) or "deposit" (3, its
    deposit wallet, ERC-1271: what new API users are told to use). ``funder`` is that wallet's address; empty:
    derived from the key as Polymarket's clients derive it (for "deposit", the beacon form new wallets have)."""

    wallet: Literal["eoa", "proxy", "safe", "deposit"] = "eoa"
    funder: str = ""


WALLET_SIGNATURE_TYPES = {"eoa": 0, "proxy": 1, "safe": 2, "deposit": 3}


class LocalVenueConfig(_Section):
    start: bool = True  # `polybot up` starts the local venue first when venue = "local"
    # The host the other services reach it at (a container's name, when it binds options.host = "0.0.0.0");
    # default: options.host.
    address: str = ""
    options: dict[str, Any] = {}  # its knobs (see `polybot venue --help`), checked by the venue itself


LOCAL_VENUE_KIND = "services.venues.local:Venue"
LOCAL_VENUE_NAME = "venue"


# Started in this order (after the local venue), stopped in reverse: analytics records before anything is produced
# and after it ends; the executor takes orders before risk sends any; strategies come last, once risk decides.
DEFAULT_SERVICES = {
    "analytics": ServiceConfig(kind="services.analytics:Analytics"),
    "scanner": ServiceConfig(kind="services.scanner:Scanner"),
    "executor": ServiceConfig(kind="services.executor:Executor"),
    "risk": ServiceConfig(kind="services.risk:Risk"),
    "strategies": ServiceConfig(kind="services.strategies.host:Strategies"),
}


class Config(_Section):
    state_dir: str = ""  # default: $XDG_STATE_HOME/polybot, else ~/.local/state/polybot
    venue: Literal["local", "polymarket"] = "local"
    # "live" signs and submits orders; "paper" fills them against the live book. Unset: live against the local
    # venue, paper against Polymarket (live there must be chosen explicitly, and needs POLYBOT_PRIVATE_KEY).
    mode: Literal["", "paper", "live"] = ""
    local_venue: LocalVenueConfig = LocalVenueConfig()
    polymarket: PolymarketConfig = PolymarketConfig()
    account: AccountConfig = AccountConfig()
    bus: BusConfig = BusConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    mcp: McpConfig = McpConfig()
    # Started by `polybot up` in this order: the local venue, DEFAULT_SERVICES, then the services the config adds.
    # A [services.NAME] table adjusts a default or adds a service (see _convert); enabled = false turns one off.
    services: dict[str, ServiceConfig] = msgspec.field(default_factory=lambda: dict(DEFAULT_SERVICES))

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def enabled_services(self) -> list[str]:
        return [name for name, svc in self.services.items() if svc.enabled]

    @property
    def watched_services(self) -> list[str]:
        """The services whose state is the mesh's: those started here, and those this machine's config names as
        running elsewhere (``enabled = false`` with a ``control`` address to ask them at)."""
        return [name for name, svc in self.services.items() if svc.enabled or svc.control]


class Secrets:
    """Secrets, read from the environment only; never printed, logged or stored."""

    __slots__ = SECRET_NAMES

    def __init__(self, environ: Mapping[str, str]) -> None:
        for name in SECRET_NAMES:
            setattr(self, name, environ.get(f"POLYBOT_{name.upper()}") or None)

    def values(self) -> list[str]:
        return [v for n in SECRET_NAMES if (v := getattr(self, n))]

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={'***' if getattr(self, n) else None}" for n in SECRET_NAMES)
        return f"Secrets({shown})"


def service_secrets(service: ServiceConfig) -> tuple[str, ...]:
    """The secrets a service may see: only the executor signs orders and holds the API key."""
    if service.secrets is not None:
        return tuple(service.secrets)
    return TRADING_SECRETS if service.kind == EXECUTOR_KIND else ()


def service_environment(environ: Mapping[str, str], service: ServiceConfig) -> dict[str, str]:
    """A service's environment: the supervisor's, less every secret the service does not use."""
    dropped = {f"POLYBOT_{n.upper()}" for n in SECRET_NAMES} - {f"POLYBOT_{n.upper()}" for n in service_secrets(service)}
    return {k: v for k, v in environ.items() if k not in dropped}


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ["HOME"]) if environ.get("HOME") else Path.home()


def default_config_path(environ: Mapping[str, str]) -> Path:
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or str(_home(environ) / ".config")
    return Path(base) / "polybot" / "polybot.toml"


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the file (if any), apply environment overrides, validate, and fill in derived defaults."""
    environ = os.environ if environ is None else environ
    explicit = path is not None or bool(environ.get(CONFIG_ENV))
    file = Path(path).expanduser() if path is not None else default_config_path(environ)
    raw: dict[str, Any] = {}
    if file.exists():
        try:
            raw = tomllib.loads(file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    elif explicit:
        raise ConfigError(f"{file}: no such config file")
    _reject_secrets(raw, where=str(file))
    overrides = _apply_env(raw, environ)
    try:
        config = _convert(raw)
    except _Invalid as bad:
        culprit = next((var for var, key in overrides.items() if key == bad.path or key.startswith(bad.path + ".")
                        or bad.path.startswith(key + ".")), None)
        raise ConfigError(f"{f'environment {culprit}' if culprit else file}: {bad}") from None
    return _finish(config, environ)


def load_secrets(environ: Mapping[str, str] | None = None) -> Secrets:
    return Secrets(os.environ if environ is None else environ)


def _reject_secrets(raw: Any, where: str, path: str = "") -> None:
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            _reject_secrets(item, where, f"{path[:-1]}[{i}].")
        return
    if not isinstance(raw, dict):
        return
    for key, value in raw.items():
        dotted = f"{path}{key}"
        if key in SECRET_NAMES:
            raise ConfigError(
                f"{where}: {dotted} is a secret and is not read from files; "
                f"set POLYBOT_{key.upper()} in the environment instead"
            )
        _reject_secrets(value, where, f"{dotted}.")


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Write each POLYBOT_* override into ``raw``; return {variable: dotted key}."""
    applied = {}
    for name, text in sorted(environ.items()):
        if not name.startswith("POLYBOT_") or name in RESERVED_ENV:
            continue
        keys = name[len("POLYBOT_"):].lower().split("__")
        if not all(keys):
            raise ConfigError(f"environment {name}: empty key segment (levels are separated by '__')")
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment {name}: {'.'.join(keys)} goes below a value that is not a table")
            node = child
        node[keys[-1]] = _env_value(text)
        applied[name] = ".".join(keys)
    return applied


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


class _Invalid(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?$")
_AT = re.compile(r"(?P<msg>.*?)(?: - at `\$(?P<at>[^`]*)`)?$")

Sections = Callable[[], Iterable[tuple[str, Any]]]  # (dotted path, the Struct type there), asked for on an error


def convert_section(raw: Any, kind: type, prefix: str, elsewhere: Sections = lambda: ()) -> Any:
    """msgspec.convert, with errors naming the dotted key path below ``prefix``.

    An unknown key that one of the ``elsewhere`` sections knows is reported with where it belongs."""
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if m := _UNKNOWN.match(text):
            path = ".".join(p for p in (prefix, (m["at"] or "").lstrip("."), m["key"]) if p)
            raise _Invalid(path, "unknown key" + _belongs(path, elsewhere())) from None
        m = _AT.match(text)
        path = ".".join(p for p in (prefix, (m["at"] or "").lstrip(".")) if p)
        raise _Invalid(path, m["msg"]) from None


def _belongs(path: str, sections: Iterable[tuple[str, Any]]) -> str:
    """"; KEY belongs under [SECTION]" for the sections that have the key, nearest to where it was found; else ""."""
    *where, key = path.split(".")
    homes = {home for prefix, kind in sections for home in _homes(kind, prefix, key)}
    if not homes:
        return ""

    def shared(home: str) -> int:  # leading path segments in common with where the key was found
        same = 0
        for a, b in zip(home.split("."), where):
            if a != b:
                break
            same += 1
        return same

    nearest = max(map(shared, homes))
    named = [f"[{h}]" if h else "the top level" for h in sorted(homes) if shared(h) == nearest]
    return f"; {key} belongs under {' or '.join(named)}"


def _homes(kind: Any, prefix: str, key: str) -> list[str]:
    """The dotted paths of the sections, in ``kind`` and the Structs below it, that have the field ``key``."""
    if not (isinstance(kind, type) and issubclass(kind, Struct)):
        return []
    found = [prefix] if key in kind.__struct_fields__ else []
    for field in msgspec.structs.fields(kind):
        found += _homes(field.type, f"{prefix}.{field.name}" if prefix else field.name, key)
    return found


def _options_type(kind: str) -> Any:
    """The Options of a service kind, only to say where a misplaced key belongs: None when it cannot be imported."""
    try:
        module, _, attr = kind.partition(":")
        return getattr(importlib.import_module(module), attr).Options
    except Exception:  # a broken or absent kind is reported where the service is loaded, not in a hint
        return None


def _elsewhere(config_kinds: Mapping[str, str]) -> Sections:
    """Every section a key may belong to: the config's own, the local venue's knobs, the given services' options."""
    def sections() -> Iterable[tuple[str, Any]]:
        yield "", Config
        yield "services.NAME", ServiceConfig
        yield "local_venue.options", _options_type(LOCAL_VENUE_KIND)
        for name, kind in config_kinds.items():
            yield f"services.{name}", ServiceConfig
            yield f"services.{name}.options", _options_type(kind)
    return sections


def embeds_local_venue(config: Config) -> bool:
    """Whether the local venue is one of the default services (the first), its knobs in [local_venue.options]."""
    return config.venue == "local" and config.local_venue.start


def _defaults(config: Config) -> dict[str, ServiceConfig]:
    venue = ServiceConfig(kind=LOCAL_VENUE_KIND, options=config.local_venue.options)
    return {LOCAL_VENUE_NAME: venue, **DEFAULT_SERVICES} if embeds_local_venue(config) else dict(DEFAULT_SERVICES)


def _convert(raw: dict[str, Any]) -> Config:
    """The config: the default services, each adjusted by its [services.NAME] table, then the services it adds."""
    tables = raw.pop("services", {})
    config = convert_section(raw, Config, "", _elsewhere({}))
    if not isinstance(tables, dict):
        raise _Invalid("services", "must be a table of [services.NAME] tables")
    services = _defaults(config)
    for name, table in tables.items():
        services[name] = _service(config, name, table, services)
    return msgspec.structs.replace(config, services=services)


def _service(config: Config, name: str, table: Any, services: dict[str, ServiceConfig]) -> ServiceConfig:
    path = f"services.{name}"
    if not isinstance(table, dict):
        raise _Invalid(path, f"must be a table: [{path}]")
    default = services.get(name)
    if default is None:
        if "kind" not in table:
            raise _Invalid(path, _needs_kind(config, name))
        return convert_section(table, ServiceConfig, path, _elsewhere({name: table["kind"]}))
    if name == LOCAL_VENUE_NAME and embeds_local_venue(config) and "options" in table:
        raise _Invalid(f"{path}.options", "the local venue's knobs go under [local_venue.options], where the other "
                                          "services read its ports and seed too")
    adjusted = {**msgspec.structs.asdict(default), **table, "options": _merged(default.options, table.get("options", {}))}
    return convert_section(adjusted, ServiceConfig, path, _elsewhere({name: adjusted.get("kind", default.kind)}))


def _merged(base: Any, over: Any) -> Any:
    """``over`` on top of ``base``, tables merged key by key; any other value replaces."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    return {**base, **{k: _merged(base[k], v) if k in base else v for k, v in over.items()}}


def _needs_kind(config: Config, name: str) -> str:
    defaults = list(_defaults(config))
    close = difflib.get_close_matches(name, defaults, n=1)
    hint = f"did you mean [services.{close[0]}]? " if close else ""
    venue = ("; the local venue is a default service only with venue = \"local\" and [local_venue] start = true"
             if name == LOCAL_VENUE_NAME else "")
    return (f"missing kind; {hint}{name} is not a default service ({', '.join(defaults)}), so its table adds a "
            f"service and needs kind = \"package.module:Class\", as \"services.audit:Audit\"{venue}")


def service_options(config: Config, name: str, options_type: type) -> Any:
    """A service's options as its ``options_type``, or ConfigError naming the key where the config sets it."""
    where = "local_venue.options" if name == LOCAL_VENUE_NAME and embeds_local_venue(config) else f"services.{name}.options"
    elsewhere = _elsewhere({name: config.services[name].kind})
    try:
        return convert_section(config.services[name].options, options_type, where,
                               lambda: [(where, options_type), *elsewhere()])
    except _Invalid as bad:
        raise ConfigError(str(bad)) from None


def _finish(config: Config, environ: Mapping[str, str]) -> Config:
    for name in config.services:
        if not SERVICE_NAME.match(name):
            raise ConfigError(f"services.{name}: a service name is lower-case letters, digits and '_' (at most 40)")
        if name.startswith(STRATEGY_SERVICE_PREFIX):
            raise ConfigError(f"services.{name}: names starting with {STRATEGY_SERVICE_PREFIX} are kept for the "
                              "strategies the operator approves (`polybot strategy approve`); choose another name")
        if name == "supervisor":
            raise ConfigError("services.supervisor: the name is taken by the supervisor itself")
    for name in config.bus.addresses:
        if name not in SOCKET_NAMES:
            raise ConfigError(f"bus.addresses.{name}: unknown socket; the sockets are {', '.join(SOCKET_NAMES)}")
    if not 1 <= config.bus.buffer <= 8192:
        raise ConfigError("bus.buffer: must be between 1 and 8192 (NNG's maximum)")
    if not 4096 <= config.bus.max_frame_bytes <= 1 << 30:
        raise ConfigError("bus.max_frame_bytes: must be between 4096 and 1073741824 (1 GiB)")
    _check_plaintext(config)
    funder = config.account.funder
    if funder and not re.fullmatch(r"0x[0-9a-fA-F]{40}", funder):
        raise ConfigError(f"account.funder: {funder!r} is not an address (0x and 40 hex digits); leave it empty to "
                          "derive the wallet from the key")
    if funder and config.account.wallet == "eoa":
        raise ConfigError('account.funder: an "eoa" account trades from the key\'s own address; set account.wallet '
                          'to "proxy", "safe" or "deposit" for a wallet, or remove funder')
    state_dir = config.state_dir or _default_state_dir(environ)
    state = Path(state_dir).expanduser()
    if not state.is_absolute():
        raise ConfigError(f"state_dir: {state_dir!r} must be an absolute path (nothing is kept relative to the working directory)")
    config = msgspec.structs.replace(config, state_dir=str(state))
    config = _with_strategies(config)
    if config.bus.transport == "ipc":
        longest = max([socket_address(config, s) for s in SOCKET_NAMES]
                      + [control_address(config, n) for n in ("supervisor", *config.services)], key=len)
        if len(os.fsencode(longest[len("ipc://"):])) > UNIX_PATH_MAX:
            raise ConfigError(
                f"state_dir: {state} is too long for ipc socket paths ({longest} exceeds {UNIX_PATH_MAX} bytes); "
                "choose a shorter state_dir or bus.transport = \"tcp\""
            )
    return config


def _with_strategies(config: Config) -> Config:
    """The config with a service for each approved, running agent-authored strategy, after those it names."""
    if not (config.state_path / "strategies").is_dir():
        return config
    from .strategies.store import Store, StoreError  # only where strategies are kept

    store = Store(config.state_path)
    host = config.services.get("strategies")
    base = {k: v for k, v in (host.options if host and host.kind == STRATEGIES_KIND else {}).items()
            if k not in ("strategies", "shard", "shards")}
    added = {}
    for name in store.names():
        try:
            entry = store.get(name)
        except StoreError:  # a record that cannot be read runs nothing; `polybot strategy list` says why
            continue
        if entry.state == "approved":
            added[STRATEGY_SERVICE_PREFIX + name] = ServiceConfig(kind=STRATEGIES_KIND, options={**base,
                                                                                        **store.service_table(entry)})
    return msgspec.structs.replace(config, services={**config.services, **added}) if added else config


def _check_plaintext(config: Config) -> None:
    """Plain tcp stays on this machine: across machines anything that reaches the executor's orders port would
    trade without risk. bus.transport = "tls" locks it; allow_plaintext says the network is trusted instead."""
    if config.bus.allow_plaintext:
        return
    given = [("bus.host", f"tcp://{config.bus.host}:0")] if config.bus.transport == "tcp" else []
    given += [(f"bus.addresses.{k}", v) for k, v in config.bus.addresses.items()]
    given += [(f"services.{n}.control", s.control) for n, s in config.services.items() if s.control]
    for key, address in given:
        if address.startswith("tcp://"):
            host = address[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
            if host not in LOOPBACK_HOSTS:
                raise ConfigError(f"{key}: plain tcp to {host} would leave this machine unauthenticated; set "
                                  'bus.transport = "tls" (run `polybot certs`) and use tls+tcp:// addresses, or set '
                                  "bus.allow_plaintext = true if the network between the machines is trusted")


def _default_state_dir(environ: Mapping[str, str]) -> str:
    base = environ.get("XDG_STATE_HOME") or str(_home(environ) / ".local" / "state")
    return str(Path(base) / "polybot")


def trading_mode(config: Config) -> Literal["paper", "live"]:
    """The mode orders are handled in: the configured one, else live on the local venue and paper on Polymarket."""
    if config.mode:
        return config.mode
    return "live" if config.venue == "local" else "paper"


def service_of_kind(config: Config, kind: str, default: str) -> str:
    """The first service of this kind, started here or run elsewhere (``watched_services``), in the config's order:
    a default before one the config adds (a config may turn a default off and add its own under another name);
    else ``default``."""
    return next((n for n in config.watched_services if config.services[n].kind == kind), default)


def venue_urls(config: Config) -> PolymarketConfig:
    """The venue the mesh talks to: Polymarket's hosts, or the local venue's addresses."""
    if config.venue != "local":
        return config.polymarket
    options = config.local_venue.options
    host = config.local_venue.address or options.get("host", LOCAL_VENUE_HOST)
    port = {k: options.get(k, v) for k, v in LOCAL_VENUE_PORTS.items()}
    clob = f"http://{host}:{port['clob_port']}"
    return PolymarketConfig(gamma_url=f"http://{host}:{port['gamma_port']}", clob_url=clob,
                            market_ws_url=f"ws://{host}:{port['ws_port']}/ws/market",
                            user_ws_url=f"ws://{host}:{port['ws_port']}/ws/user",
                            relayer_url=clob,  # the local venue serves its relayer on the CLOB's port
                            chain_id=options.get("chain_id", 137))


def ensure_state_dir(config: Config) -> Path:
    """Create the state directory and its folders, mode 0700, and return it. One that exists must already be this
    user's alone: a folder others can enter (a shared /tmp-like 1777 one) is refused, not silently changed, since
    what was put there before is not ours to trust."""
    root = config.state_path
    for folder in (root, root / "sock", root / "logs"):
        try:
            folder.mkdir(mode=0o700, parents=True)
            folder.chmod(0o700)  # whatever the umask
        except FileExistsError:  # there before us, or made by a service starting beside us
            pass
        info = folder.stat()
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid != os.getuid() or mode & 0o077:
            raise ConfigError(f"state_dir: {folder} has mode {mode:04o} and belongs to uid {info.st_uid}; it must be "
                              f"yours and 0700: choose another state_dir, or `chmod 700 {folder}` if it holds nothing "
                              "of anyone else's")
    return root


def local_venue_key(config: Config) -> tuple[int, str]:
    """The local venue's seed and the key of its ready-made account, which a mesh trading there without
    POLYBOT_PRIVATE_KEY signs with."""
    seed = int(config.local_venue.options.get("seed", ports.SEED))
    return seed, ports.ready_made_key(seed)


def _tcp_scheme(config: Config) -> str:
    return "tls+tcp" if config.bus.transport == "tls" else "tcp"


def socket_address(config: Config, name: str) -> str:
    if name in config.bus.addresses:
        return config.bus.addresses[name]
    if config.bus.transport != "ipc":
        return f"{_tcp_scheme(config)}://{config.bus.host}:{config.bus.base_port + SOCKET_NAMES.index(name)}"
    return f"ipc://{config.state_dir}/sock/{name}.ipc"


def metrics_port(config: Config, service: str) -> int:
    """The port of a service's metrics endpoint (0: any free port, reported in its status)."""
    svc = config.services.get(service)
    if svc is not None and svc.metrics_port is not None:
        return svc.metrics_port
    if config.metrics.base_port == 0:
        return 0
    if service == "supervisor":
        return config.metrics.base_port
    if service not in config.services:  # run on its own (polybot record, polybot venue): any free port
        return 0
    return config.metrics.base_port + 1 + list(config.services).index(service)


def control_address(config: Config, service: str) -> str:
    svc = config.services.get(service)
    if svc is not None and svc.control:
        return svc.control
    if config.bus.transport != "ipc":
        if service == "supervisor":
            return f"{_tcp_scheme(config)}://{config.bus.host}:{config.bus.base_port + 9}"
        return (f"{_tcp_scheme(config)}://{config.bus.host}:"
                f"{config.bus.base_port + 10 + list(config.services).index(service)}")
    return f"ipc://{config.state_dir}/sock/control-{service}.ipc"
