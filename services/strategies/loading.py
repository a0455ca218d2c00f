"""Finding a strategy class, wherever it is written: shipped, a file, a module, or an installed entry point.

A strategy is named by a spec (``class`` in a strategies host's options, ``--strategy`` of a backtest):

- ``arbitrage``: a shipped strategy (``REGISTRY``), else an installed entry point of the group
  ``polybot.strategies`` of that name (``[project.entry-points."polybot.strategies"] mine = "pkg.mod:Mine"``);
- ``~/strategies/mean_revert.py:MeanRevert``: a class in a Python file (``~`` expanded; relative to ``base``);
- ``package.module:Class``: a class in an importable module.

``contract`` says what a class lacks to be a strategy (the API in ``polybot_strategy``), ``make`` builds one with
its parameters checked, and ``sha256`` is the hash a file's approval is recorded under.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import msgspec

import polybot_strategy

from . import REGISTRY

ENTRY_POINTS = "polybot.strategies"
NAME = re.compile(r"^[a-z][a-z0-9_]{0,23}$")  # a strategy's name: its source is strategy:NAME


class StrategyError(Exception):
    """A strategy that cannot be found, loaded or built; the message says what is wrong and where."""


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def changed(path: str | Path, approved: str) -> str:
    """Why the file at ``path`` is not the version approved (sha256 ``approved``); "" when it is."""
    try:
        have = sha256(path)
    except OSError as exc:
        return f"cannot read the approved file {path}: {exc.strerror}"
    if have != approved:
        return (f"not the version approved: {path} changed after approval (sha256 {have[:12]}, approved "
                f"{approved[:12]}); approve it again (polybot strategy approve) to run it")
    return ""


def load(spec: str, base: Path | None = None) -> type:
    """The class a spec names; StrategyError when there is none."""
    spec = spec.strip()
    if ":" not in spec:
        if spec in REGISTRY:
            return REGISTRY[spec]
        found = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINTS) if ep.name == spec]
        if not found:
            known = sorted(REGISTRY) + sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINTS))
            raise StrategyError(f"unknown strategy {spec!r}: the known ones are {', '.join(known)}; name a file "
                                f"(path/to/file.py:Class) or a module (package.module:Class) for another")
        try:
            return found[0].load()
        except Exception as exc:
            raise StrategyError(f"strategy {spec!r} (entry point {found[0].value}): {type(exc).__name__}: {exc}") \
                from None
    where, _, attr = spec.rpartition(":")
    if where.endswith(".py") or "/" in where:
        path = Path(where).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        module = load_file(path)
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise StrategyError(f"strategy {spec!r}: cannot import {where}: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        classes = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and hasattr(v, "on_message"))
        raise StrategyError(f"strategy {spec!r}: {where} has no {attr!r}"
                            + (f"; its strategy classes are {', '.join(classes)}" if classes else ""))
    return cls


def load_file(path: Path) -> Any:
    """A Python file loaded as a module of its own (named after its hash, so two versions never share one)."""
    try:
        code = path.read_bytes()
    except OSError as exc:
        raise StrategyError(f"cannot read the strategy file {path}: {exc.strerror}") from None
    name = f"polybot_user_strategy_{hashlib.sha256(code).hexdigest()[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StrategyError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise StrategyError(f"{path}, line {exc.lineno}: {exc.msg}") from None
    except MemoryError:  # a limit the caller enforces, not a fault of the code's
        sys.modules.pop(name, None)
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise StrategyError(f"{path}: loading it raised {type(exc).__name__}: {exc}{_line(exc, path)}") from None
    return module


def _line(exc: BaseException, path: Path) -> str:
    """`` (line N)``: the deepest line of ``path`` in the exception's traceback."""
    tb, line = exc.__traceback__, 0
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def contract(cls: Any) -> list[str]:
    """What ``cls`` lacks to be a strategy; [] when it is one."""
    if not inspect.isclass(cls):
        return [f"{cls!r} is not a class"]
    problems = []
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("`name` must be a class attribute: lower-case letters, digits and _ (at most 24), "
                        "starting with a letter; its signals go out as strategy:NAME")
    params = getattr(cls, "Params", None)
    if not (inspect.isclass(params) and issubclass(params, msgspec.Struct)):
        problems.append("`Params` must be a msgspec.Struct class (subclass polybot_strategy.Params) of its "
                        "parameters, each with a default")
    else:
        try:
            params()
        except TypeError as exc:
            problems.append(f"`Params()` must build with defaults alone: {exc}")
    if not callable(getattr(cls, "on_message", None)) or getattr(cls, "on_message") is polybot_strategy.Strategy.on_message:
        problems.append("`on_message(self, msg)` must be defined: it returns a list of Signal and Cancel")
    api = getattr(cls, "api", polybot_strategy.API_VERSION)
    if api != polybot_strategy.API_VERSION:
        problems.append(f"written for strategy API {api!r}; this polybot serves API {polybot_strategy.API_VERSION}")
    try:
        inspect.signature(cls).bind(None)
    except (TypeError, ValueError):
        problems.append("`__init__` must take the parameters as its one argument: __init__(self, params)")
    return problems


def source_of(strategy: Any) -> str:
    """What a strategy's signals and cancels go out as, whatever it wrote in them: the name it runs under."""
    return getattr(strategy, "source", "") or f"strategy:{strategy.name}"


def make(cls: type, params: dict[str, Any] | None = None, run_as: str = "") -> Any:
    """A strategy built with its parameters (text values, as from a command line, are converted); ``run_as``: the
    name it runs under, its source then ``strategy:run_as``."""
    if problems := contract(cls):
        raise StrategyError(f"{getattr(cls, '__name__', cls)} is not a strategy: " + "; ".join(problems))
    try:
        built = msgspec.convert(params or {}, cls.Params, strict=False)
    except msgspec.ValidationError as exc:
        known = ", ".join(cls.Params.__struct_fields__) or "none"
        raise StrategyError(f"strategy {cls.name}: {exc} (its parameters: {known})") from None
    try:
        strategy = cls(built)
    except Exception as exc:
        raise StrategyError(f"strategy {cls.name}: building it raised {type(exc).__name__}: {exc}") from None
    if run_as:
        strategy.name = run_as
        strategy.source = f"strategy:{run_as}"
    return strategy
