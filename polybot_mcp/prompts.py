"""MCP prompts from Markdown files: one file per prompt, so adding a prompt is adding a file.

A prompt file is TOML front matter between two ``+++`` lines, then the Markdown body::

    +++
    name = "explain_rejection"          # lowercase letters, digits, _; unique in the folder
    description = "Why risk refused a signal, and the smallest change that would pass"

    [[arguments]]
    name = "signal_id"
    description = "The refused signal's id"
    required = true                     # a required argument has no default

    [[arguments]]
    name = "depth"
    description = "How much to explain"
    default = "brief"                   # an optional argument must state its default (a string)
    +++
    Explain why signal {signal_id} was refused, {depth}.

TOML rather than YAML because ``tomllib`` is in the standard library and the config is TOML already.
The front matter is strict: an unknown key, a wrong type, an optional argument without a default, an
argument the body never uses or a ``{placeholder}`` that names no argument is an error naming the file.

In the body, ``{name}`` (a bare identifier in braces) is a placeholder and must name an argument; it is
replaced by the argument's value, once (a value's own braces are left alone). Any other brace text, such as
JSON or ``{self.name}``, stays as written. A blank value counts as not given.

The folder is read when the server is built, so a new file shows from the next start. The shipped prompts are
the repo's ``prompts/``; a wheel carries them as ``polybot_mcp/prompt_files/`` (pyproject's force-include).
"""
from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.mcpserver.prompts.base import PromptArgument, UserMessage
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

FENCE = "+++"
NAME = re.compile(r"[a-z][a-z0-9_]*")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")  # broader than NAME, so {Signal_id} is caught as a typo


def _default_folder() -> Path:
    """The shipped prompts: inside the installed package (a wheel), else the checkout's ``prompts/``."""
    here = Path(__file__).resolve().parent
    packaged = here / "prompt_files"
    return packaged if packaged.is_dir() else here.parent / "prompts"


PROMPTS = _default_folder()


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


class PromptArgumentError(ValueError):
    """Arguments a prompt cannot be filled with."""


class Argument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    description: str
    required: bool = False
    default: str | None = None


class FrontMatter(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    description: str
    arguments: list[Argument] = []


@dataclass(frozen=True)
class Template:
    front: FrontMatter
    body: str
    path: Path


def parse(path: Path) -> Template:
    """One prompt file, checked; a ``PromptFileError`` says what is wrong with it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(path, f"cannot be read: {exc}") from None
    if not lines or lines[0].rstrip() != FENCE:
        raise PromptFileError(path, f"must begin with a {FENCE} line that opens its TOML front matter")
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == FENCE), None)
    if end is None:
        raise PromptFileError(path, f"the front matter opened on line 1 is never closed by a {FENCE} line")
    # A blank line in place of the opening fence keeps tomllib's line numbers those of the file.
    toml = "\n".join([""] + lines[1:end])
    try:
        front = msgspec.convert(tomllib.loads(toml), FrontMatter)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise PromptFileError(path, f"front matter: {exc}") from None
    body = "\n".join(lines[end + 1:]).strip()
    problem = _problem(front, body)
    if problem:
        raise PromptFileError(path, problem)
    return Template(front, body, path)


def _problem(front: FrontMatter, body: str) -> str:
    if not NAME.fullmatch(front.name):
        return f"name {front.name!r} must be lowercase letters, digits and _, starting with a letter"
    if not front.description.strip():
        return "description is empty"
    if not body:
        return "has no body after its front matter"
    names = [a.name for a in front.arguments]
    for arg in front.arguments:
        if not NAME.fullmatch(arg.name):
            return f"argument name {arg.name!r} must be lowercase letters, digits and _, starting with a letter"
        if names.count(arg.name) > 1:
            return f"argument {arg.name!r} is declared twice"
        if not arg.description.strip():
            return f"argument {arg.name!r} has an empty description"
        if arg.required and arg.default is not None:
            return f"argument {arg.name!r} is required, so it takes no default"
        if not arg.required and (arg.default is None or not arg.default.strip()):
            return f"argument {arg.name!r} is optional, so it needs a default (or set required = true)"
    used = set(PLACEHOLDER.findall(body))
    undeclared = sorted(used - set(names))
    if undeclared:
        placeholders = ", ".join("{" + u + "}" for u in undeclared)
        return f"the body uses {placeholders}, which no argument declares (arguments: {', '.join(names) or 'none'})"
    unused = [n for n in names if n not in used]
    if unused:
        return f"argument {unused[0]!r} appears nowhere in the body as {{{unused[0]}}}"
    return ""


def load(folder: Path) -> list[Template]:
    """Every ``*.md`` in ``folder``, in file name order; all are checked before any is used."""
    if not folder.is_dir():
        raise PromptFileError(folder, "no such folder of prompts")
    templates = [parse(path) for path in sorted(folder.glob("*.md"))]
    seen: dict[str, Path] = {}
    for t in templates:
        if t.front.name in seen:
            raise PromptFileError(t.path, f"prompt name {t.front.name!r} is already used by {seen[t.front.name]}")
        seen[t.front.name] = t.path
    return templates


def fill(template: Template, given: Mapping[str, str]) -> str:
    """The body with each placeholder replaced by its argument's value, or its default when not given."""
    front = template.front
    known = {a.name: a for a in front.arguments}
    unknown = sorted(set(given) - set(known))
    if unknown:
        takes = ", ".join(known) or "no arguments"
        raise PromptArgumentError(f"prompt {front.name} has no argument {', '.join(map(repr, unknown))}; "
                                  f"it takes: {takes}")
    values: dict[str, str] = {}
    missing: list[Argument] = []
    for arg in front.arguments:
        value = (given.get(arg.name) or "").strip()
        if not value and arg.required:
            missing.append(arg)
        values[arg.name] = value or (arg.default or "")
    if missing:
        needs = "; ".join(f"{a.name!r} ({a.description})" for a in missing)
        raise PromptArgumentError(f"prompt {front.name} needs the required argument{'s' * (len(missing) > 1)} "
                                  f"{needs}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template.body)


class FilePrompt(Prompt):
    """A prompt from a file. Its arguments are checked here, so a client in either protocol era is told what is
    wrong (the SDK's own check raises a ValueError that the 2026 era reports only as an internal error)."""

    async def render(self, arguments: dict[str, Any] | None, context: Any) -> list[UserMessage]:
        try:
            return [UserMessage(self.fn(arguments or {}))]
        except PromptArgumentError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None


def _listed(arg: Argument) -> PromptArgument:
    shown = arg.description if arg.required else f"{arg.description} (default: {arg.default})"
    return PromptArgument(name=arg.name, description=shown, required=arg.required)


def register_prompts(server: MCPServer, folder: Path) -> list[str]:
    """Register every prompt in ``folder`` on ``server`` and return their names; a bad file registers none."""
    templates = load(folder)
    for t in templates:
        server.add_prompt(FilePrompt(name=t.front.name, description=t.front.description,
                                     arguments=[_listed(a) for a in t.front.arguments],
                                     fn=functools.partial(fill, t)))
    return [t.front.name for t in templates]
