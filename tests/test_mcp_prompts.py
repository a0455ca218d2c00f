"""Prompts from prompts/*.md through a real MCP client, in memory, in both protocol eras."""
from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest
from mcp.client.client import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from polybot_mcp.prompts import PLACEHOLDER, PROMPTS, PromptFileError, load, register_prompts
from polybot_mcp.server import build
from services.config import load as load_config

MODES = pytest.mark.parametrize("mode", ["legacy", "auto"])  # the initialize handshake, and the 2026 discover era
SHIPPED = {"find_mispriced_markets", "review_positions", "explain_rejection", "daily_report", "draft_strategy"}
TOOLS = {"search_markets", "get_market", "get_order_book", "preview_signal", "propose_signal", "get_signal",
         "list_open_orders", "cancel_orders", "get_risk", "get_positions", "get_fills", "get_pnl", "mesh_status",
         "scan_opportunities", "close_position", "list_signals", "list_recordings", "run_backtest", "check_strategy",
         "backtest_strategy", "propose_strategy", "list_strategies", "get_strategy"}

GREETING = """+++
name = "greet"
description = "Greets a market"

[[arguments]]
name = "market"
description = "Condition id"
required = true

[[arguments]]
name = "tone"
description = "How to greet"
default = "warmly"
+++
Greet {market} {tone}. JSON stays: {"side": "BUY"}.
"""


def server_for(folder: Path) -> tuple[MCPServer, list[str]]:
    server = MCPServer("t")
    return server, register_prompts(server, folder)


def listed(server: MCPServer, mode: str):
    async def session():
        async with Client(server, mode=mode) as client:
            return {p.name: p for p in (await client.list_prompts()).prompts}
    return anyio.run(session)


def got(server: MCPServer, mode: str, name: str, arguments: dict[str, str]):
    async def session():
        async with Client(server, mode=mode) as client:
            return await client.get_prompt(name, arguments)
    return anyio.run(session)


def refused(server: MCPServer, mode: str, name: str, arguments: dict[str, str]) -> MCPError:
    """The error the server answers with (caught inside the session, which would wrap it in a group)."""
    async def session():
        async with Client(server, mode=mode) as client:
            try:
                await client.get_prompt(name, arguments)
            except MCPError as exc:
                return exc
        raise AssertionError(f"prompt {name} was given with {arguments}")
    return anyio.run(session)


@MODES
def test_every_shipped_prompt_is_listed_with_its_arguments_and_their_defaults(mode: str) -> None:
    server, names = server_for(PROMPTS)
    prompts = listed(server, mode)
    assert set(names) == set(prompts) == SHIPPED
    for template in load(PROMPTS):
        prompt = prompts[template.front.name]
        assert prompt.description == template.front.description
        assert [(a.name, a.required) for a in prompt.arguments] == [
            (a.name, a.required) for a in template.front.arguments]
        for arg, spec in zip(prompt.arguments, template.front.arguments):
            if not spec.required:
                assert arg.description == f"{spec.description} (default: {spec.default})"
        assert any(f"`{tool}`" in template.body for tool in TOOLS), template.path  # each drives the tools
    assert [(a.name, a.required) for a in prompts["explain_rejection"].arguments] == [("signal_id", True)]
    assert ("idea", True) in [(a.name, a.required) for a in prompts["draft_strategy"].arguments]


# What a prompt may call a tool: a backticked name that begins with a verb of the server's tools, or with a verb an
# agent would look for a tool of (approve_strategy, start_strategy, set_budget...).
ASKED_VERBS = {"approve", "start", "stop", "set", "create", "delete", "update", "enable", "disable", "place"}
# A denial: "there is no backtest tool", "no backtest tool in this server", "`run_backtest` is not available".
DENIED = re.compile(r"\b(?:there is no|there's no|no)\s+([\w-]+(?:[ -][\w-]+)?)\s+tool|`(\w+)`\s+(?:is not|isn't)\s+"
                    r"(?:yet\s+)?(?:a tool|available|served)", re.I)


def served_tools(tmp_path: Path) -> set[str]:
    # tcp: ipc socket paths under a pytest tmp_path can be too long; the tools connect only when called anyway.
    server = build(load_config(None, {"HOME": str(tmp_path), "POLYBOT_BUS__TRANSPORT": "tcp"}))

    async def session():
        async with Client(server, mode="auto") as client:
            return {t.name for t in (await client.list_tools()).tools}
    return anyio.run(session)


def named_tools(body: str, tools: set[str]) -> set[str]:
    """The tools a prompt's text names: backticked names that begin with a tool's verb."""
    verbs = {name.split("_")[0] for name in tools} | ASKED_VERBS
    return {name for name in re.findall(r"`([a-z]+_[a-z_]+)`", body) if name.split("_")[0] in verbs}


def denied_tools(body: str, tools: set[str]) -> list[str]:
    """The denials in a prompt's text that deny a tool the server has: by its name, or by a word of its name
    ("no backtest tool" while backtest_strategy exists)."""
    words = {word for name in tools for word in name.split("_")}
    out = []
    for match in DENIED.finditer(body):
        named, quoted = match.group(1), match.group(2)
        if quoted in tools or (named and set(re.split(r"[ _-]", named.lower())) & words):
            out.append(match.group(0))
    return out


def test_every_tool_the_prompts_name_is_a_tool_of_the_server_and_none_is_denied(tmp_path: Path) -> None:
    tools = served_tools(tmp_path)
    for template in load(PROMPTS):
        named = named_tools(template.body, tools)
        assert named <= tools, (template.path, named - tools)
        assert not denied_tools(template.body, tools), (template.path, denied_tools(template.body, tools))
    everywhere = {tool for t in load(PROMPTS) for tool in named_tools(t.body, tools)}
    assert TOOLS <= everywhere, TOOLS - everywhere  # the prompts drive the path an agent trades and authors by


def test_the_prompt_check_catches_a_removed_tool_and_a_denied_one(tmp_path: Path) -> None:
    tools = served_tools(tmp_path)
    assert named_tools("then `cancel_order` each one", tools) - tools == {"cancel_order"}
    assert named_tools("then `approve_strategy` it", tools) - tools == {"approve_strategy"}
    assert named_tools("read `min_size` and `fee_rate`", tools) == set()  # fields, not tools
    assert denied_tools("There is no backtest tool in this server yet", tools)
    assert denied_tools("`check_strategy` is not available here", tools)
    assert not denied_tools("No tool can approve, start or stop a strategy or set its budget.", tools)
    assert not denied_tools("there is no approval tool", tools)  # true: approving is the operator's


@MODES
def test_getting_a_prompt_fills_the_arguments_given_and_the_defaults_of_the_rest(mode: str) -> None:
    server, _ = server_for(PROMPTS)
    result = got(server, mode, "find_mispriced_markets", {"topic": "bitcoin", "budget": "30"})
    assert len(result.messages) == 1 and result.messages[0].role == "user"
    text = result.messages[0].content.text
    assert "- Topic: bitcoin\n" in text and "- Budget: 30 USDC" in text
    assert "- Minimum edge: 0.01 USDC per share" in text  # min_edge's default
    assert "before proposing: yes" in text  # confirm's default
    assert PLACEHOLDER.search(text) is None

    text = got(server, mode, "explain_rejection", {"signal_id": "ddc027e3399a10"}).messages[0].content.text
    assert "signal `ddc027e3399a10` was refused" in text and "`get_signal` for `ddc027e3399a10`" in text


@MODES
def test_a_missing_required_argument_is_refused_naming_it(mode: str) -> None:
    server, _ = server_for(PROMPTS)
    for arguments in ({}, {"signal_id": "  "}):  # a blank value counts as not given
        error = refused(server, mode, "explain_rejection", arguments)
        assert error.code == INVALID_PARAMS
        assert error.message == ("prompt explain_rejection needs the required argument 'signal_id' "
                                 "(The refused signal's id, as propose_signal or get_signal gave it)")
    error = refused(server, mode, "draft_strategy", {"markets": "nba"})
    assert error.code == INVALID_PARAMS and "needs the required argument 'idea'" in error.message


@MODES
def test_an_argument_the_prompt_does_not_take_is_refused_naming_those_it_does(mode: str) -> None:
    server, _ = server_for(PROMPTS)
    error = refused(server, mode, "review_positions", {"markt": "0xabc"})
    assert error.code == INVALID_PARAMS
    assert error.message == ("prompt review_positions has no argument 'markt'; "
                                    "it takes: market, loss_alert, hours_to_end")


FRONT = '+++\nname = "bad"\ndescription = "d"\n'
BAD_FILES = {
    "no front matter": ("Just a body {x}\n", "must begin with a +++ line"),
    "front matter never closed": (FRONT + "body\n", "opened on line 1 is never closed by a +++ line"),
    "TOML syntax": (FRONT + "arguments = [\n+++\nbody\n", "front matter: "),
    "TOML error line is the file's": ('+++\nname = "bad"\ndescription "d"\n+++\nbody\n', "(at line 3, column 13)"),
    "unknown key": (FRONT + 'title = "T"\n+++\nbody\n', "unknown field `title`"),
    "wrong type": ('+++\nname = "bad"\ndescription = 3\n+++\nbody\n', "Expected `str`, got `int` - at `$.description`"),
    "missing description": ('+++\nname = "bad"\n+++\nbody\n', "missing required field `description`"),
    "bad name": ('+++\nname = "Bad Name"\ndescription = "d"\n+++\nbody\n', "name 'Bad Name' must be lowercase"),
    "empty body": (FRONT + "+++\n\n", "has no body after its front matter"),
    "optional without default": (
        FRONT + '[[arguments]]\nname = "x"\ndescription = "d"\n+++\nbody {x}\n',
        "argument 'x' is optional, so it needs a default (or set required = true)"),
    "required with default": (
        FRONT + '[[arguments]]\nname = "x"\ndescription = "d"\nrequired = true\ndefault = "1"\n+++\nbody {x}\n',
        "argument 'x' is required, so it takes no default"),
    "placeholder naming no argument": (
        FRONT + '[[arguments]]\nname = "x"\ndescription = "d"\nrequired = true\n+++\n{x} and {y}\n',
        "the body uses {y}, which no argument declares (arguments: x)"),
    "argument never used": (
        FRONT + '[[arguments]]\nname = "x"\ndescription = "d"\nrequired = true\n+++\nno placeholder\n',
        "argument 'x' appears nowhere in the body as {x}"),
    "argument declared twice": (
        FRONT + '[[arguments]]\nname = "x"\ndescription = "d"\nrequired = true\n'
                '[[arguments]]\nname = "x"\ndescription = "e"\nrequired = true\n+++\n{x}\n',
        "argument 'x' is declared twice"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_prompt_file_is_refused_naming_the_file_and_the_problem_and_registers_nothing(
        tmp_path: Path, case: str) -> None:
    text, problem = BAD_FILES[case]
    (tmp_path / "a_good.md").write_text(GREETING)
    bad = tmp_path / "bad.md"
    bad.write_text(text)
    server = MCPServer("t")
    with pytest.raises(PromptFileError) as caught:
        register_prompts(server, tmp_path)
    assert str(caught.value).startswith(f"{bad}: ")
    assert problem in str(caught.value)
    assert anyio.run(server.list_prompts) == []  # the good file was not registered either


def test_a_file_that_is_not_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.md"
    bad.write_bytes(FRONT.encode() + "+++\nprix \xe9lev\xe9\n".encode("latin-1"))
    with pytest.raises(PromptFileError, match=f"^{re.escape(str(bad))}: cannot be read: 'utf-8' codec"):
        register_prompts(MCPServer("t"), tmp_path)


def test_two_files_with_one_prompt_name_are_refused_naming_both(tmp_path: Path) -> None:
    (tmp_path / "greet.md").write_text(GREETING)
    (tmp_path / "greet_copy.md").write_text(GREETING)
    with pytest.raises(PromptFileError) as caught:
        register_prompts(MCPServer("t"), tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'greet_copy.md'}: prompt name 'greet' is already used by "
                                 f"{tmp_path / 'greet.md'}")


def test_a_missing_folder_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match=f"^{re.escape(str(tmp_path / 'nowhere'))}: no such folder of prompts$"):
        register_prompts(MCPServer("t"), tmp_path / "nowhere")


@MODES
def test_adding_a_file_to_the_folder_adds_a_prompt(tmp_path: Path, mode: str) -> None:
    (tmp_path / "greet.md").write_text(GREETING)
    (tmp_path / "notes.txt").write_text("not a prompt: only *.md files are")
    server, names = server_for(tmp_path)
    assert names == ["greet"] and set(listed(server, mode)) == {"greet"}

    farewell = GREETING.replace('"greet"', '"farewell"').replace("Greet ", "Bid farewell to ")
    (tmp_path / "farewell.md").write_text(farewell)
    server, names = server_for(tmp_path)
    assert names == ["farewell", "greet"] and set(listed(server, mode)) == {"farewell", "greet"}
    text = got(server, mode, "farewell", {"market": "0x{tone}"}).messages[0].content.text
    # Filled once: a value's own braces are not a placeholder; JSON in the body stays as written.
    assert text == 'Bid farewell to 0x{tone} warmly. JSON stays: {"side": "BUY"}.'


def test_the_server_polybot_mcp_builds_offers_every_shipped_prompt(tmp_path) -> None:
    from polybot_mcp.server import build
    from services.config import load

    async def names():
        async with Client(build(load(None, {"HOME": str(tmp_path), "POLYBOT_STATE_DIR": str(tmp_path / "s")}))) as c:
            return {p.name for p in (await c.list_prompts()).prompts}
    assert anyio.run(names) == {"find_mispriced_markets", "review_positions", "explain_rejection", "daily_report",
                                "draft_strategy"}
