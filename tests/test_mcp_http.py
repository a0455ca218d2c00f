"""polybot-mcp over streamable HTTP, as a real process: loopback only, and nothing without the bearer token."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from polybot_mcp.http import is_loopback

from .conftest import Mesh, child_env, wait_for
from .test_supervisor import PAIR
from .conftest import free_port

TOKEN = "pb-test-token-7f3c9a1e5d2b8c4f6a0e"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


class Server:
    """`python -m polybot_mcp --http` on a free loopback port, its output kept in a file."""

    def __init__(self, config: Path, *args: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.output = config.parent / f"mcp-{self.port}.log"
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "polybot_mcp", "--http", "--port", str(self.port), "--config", str(config),
                 *args], env=child_env(**env), stdout=out, stderr=subprocess.STDOUT)

    def answering(self) -> bool:
        assert self.proc.poll() is None, f"the server exited: {self.log()}"
        try:
            httpx.get(self.url, trust_env=False, timeout=2)
        except httpx.TransportError:
            return False
        return True

    def log(self) -> str:
        return self.output.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def config() -> Iterator[Path]:
    # Not tmp_path: ipc socket paths must stay under 107 bytes. The mesh need not run for mesh_status.
    root = Path(tempfile.mkdtemp(prefix="pb-", dir="/tmp"))
    yield Mesh(root / "state", PAIR).config
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(config: Path) -> Iterator[Server]:
    server = Server(config, POLYBOT_MCP_TOKEN=TOKEN)
    try:
        wait_for(server.answering, what="the HTTP server to answer")
        yield server
    finally:
        server.stop()


def post(server: Server, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.url, json=INITIALIZE, headers={**MCP_HEADERS, **headers}, trust_env=False, timeout=5)


def refused(argv: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polybot_mcp", *argv], env=child_env(**env),
                          capture_output=True, text=True, timeout=30)


def test_a_request_without_the_token_gets_401_with_a_bearer_challenge_and_what_to_do(server: Server) -> None:
    reply = post(server, {})
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer ")
    assert "invalid_token" not in reply.headers["www-authenticate"]
    body = reply.json()
    assert "POLYBOT_MCP_TOKEN" in body["message"] and "Authorization: Bearer" in body["message"]
    # every path is behind the gate, not only the MCP endpoint
    assert httpx.get(server.url.replace("/mcp", "/"), trust_env=False, timeout=5).status_code == 401


@pytest.mark.parametrize("authorization", [
    "Bearer wrong-token-of-some-length",
    f"Bearer {TOKEN[:-1]}",  # a prefix of the real one
    f"Bearer {TOKEN}x",  # the real one and more
    f"Basic {TOKEN}",  # the right secret under another scheme
    "Bearer",
])
def test_a_wrong_token_gets_401_and_no_session(server: Server, authorization: str) -> None:
    reply = post(server, {"Authorization": authorization})
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer ")
    assert "mcp-session-id" not in reply.headers
    assert reply.json()["error"] == "invalid_token"


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # the initialize handshake, and the 2026 discover era
def test_an_mcp_client_with_the_token_lists_tools_and_calls_mesh_status(server: Server, mode: str) -> None:
    async def session():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False,
                                      timeout=httpx2.Timeout(10, read=60)) as http:
            async with Client(streamable_http_client(server.url, http_client=http), mode=mode) as client:
                tools = {t.name for t in (await client.list_tools()).tools}
                return tools, await client.call_tool("mesh_status", {})

    tools, result = anyio.run(session)
    assert {"mesh_status", "search_markets", "propose_signal"} <= tools
    assert result.is_error is False
    assert result.structured_content["all_up"] is False
    assert {s["name"]: s["state"] for s in result.structured_content["services"]} == {
        "supervisor": "down", "tally": "down", "ticker": "down"}


def test_the_token_and_wrong_guesses_never_appear_in_the_server_output(server: Server) -> None:
    post(server, {"Authorization": "Bearer a-guess-that-must-not-be-logged"})
    assert post(server, {"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    log = server.log()
    assert "401" in log and "200" in log  # the access log saw both requests
    assert TOKEN not in log and "a-guess-that-must-not-be-logged" not in log


def test_without_a_token_in_the_environment_the_http_server_refuses_to_start(config: Path) -> None:
    done = refused(["--http", "--port", str(free_port()), "--config", str(config)])
    assert done.returncode != 0
    assert "POLYBOT_MCP_TOKEN" in done.stderr and done.stdout == ""
    weak = "short-token"
    done = refused(["--http", "--port", str(free_port()), "--config", str(config)], POLYBOT_MCP_TOKEN=weak)
    assert done.returncode != 0 and "shorter than" in done.stderr
    assert weak not in done.stderr + done.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "example.com"])
def test_a_non_loopback_host_is_refused_without_allow_remote(config: Path, host: str) -> None:
    done = refused(["--http", "--host", host, "--port", str(free_port()), "--config", str(config)],
                   POLYBOT_MCP_TOKEN=TOKEN)
    assert done.returncode != 0
    assert "--allow-remote" in done.stderr and "loopback" in done.stderr
    assert TOKEN not in done.stderr + done.stdout


def test_allow_remote_still_needs_the_token(config: Path) -> None:
    done = refused(["--http", "--host", "0.0.0.0", "--allow-remote", "--port", str(free_port()),
                    "--config", str(config)])
    assert done.returncode != 0 and "POLYBOT_MCP_TOKEN" in done.stderr


def test_host_and_port_without_http_are_a_usage_error(config: Path) -> None:
    done = refused(["--port", "9999", "--config", str(config)])
    assert done.returncode == 2 and "--http" in done.stderr


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("example.com", False),
])
def test_which_hosts_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("query", [f"token={TOKEN}", "access_token=a-guess-in-the-url-0123456789",
                                   f"x=1&Token={TOKEN}"])
def test_a_token_in_the_url_is_refused_and_never_logged(server: Server, query: str) -> None:
    # With the right header too: the token in the URL is exposed whatever else the request carries.
    reply = httpx.post(f"{server.url}?{query}", json=INITIALIZE, trust_env=False, timeout=5,
                       headers={**MCP_HEADERS, "Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 400 and "mcp-session-id" not in reply.headers
    assert "Authorization: Bearer" in reply.json()["message"]
    secret = query.rpartition("=")[2]
    wait_for(lambda: "400" in server.log(), what="the access log line")
    assert secret not in server.log()


def test_the_access_log_leaves_out_every_query_string(server: Server) -> None:
    httpx.get(f"{server.url}?note=not-for-the-log-4711", trust_env=False, timeout=5)
    wait_for(lambda: "[query not logged]" in server.log(), what="the access log line")
    assert "not-for-the-log-4711" not in server.log()


def session_id(reply: httpx.Response) -> str:
    assert reply.status_code == 200, reply.text
    return reply.headers["mcp-session-id"]


def test_sessions_are_capped_and_idle_ones_are_closed(config: Path) -> None:
    capped = Server(config, "--max-sessions", "2", "--session-idle-s", "1", POLYBOT_MCP_TOKEN=TOKEN)
    try:
        wait_for(capped.answering, what="the HTTP server to answer")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        first = session_id(post(capped, auth))
        session_id(post(capped, auth))
        assert post(capped, auth).status_code == 503  # a third while two are open
        # Nothing touches the open sessions while waiting (a request would keep one alive): new ones are refused
        # until the idle two are closed.
        wait_for(lambda: post(capped, auth).status_code == 200, timeout=20, every=0.2, what="room for a new session")
        again = httpx.post(capped.url, json={"jsonrpc": "2.0", "id": 2, "method": "ping"}, trust_env=False,
                           timeout=5, headers={**MCP_HEADERS, **auth, "mcp-session-id": first,
                                               "mcp-protocol-version": "2025-06-18"})
        assert again.status_code == 404  # the idle session is gone
    finally:
        capped.stop()
    assert "at most 2 sessions, closed after 1 s idle" in capped.log()


def tokens_file(folder: Path, text: str, mode: int = 0o600) -> Path:
    path = folder / "agents.tokens"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("text", "mode", "says"), [
    (f"alpha {TOKEN}\n", 0o644, "chmod 600"),
    (f"alpha {TOKEN}\nbeta {TOKEN}\n", 0o600, "already alpha's"),
    ("alpha short-secret\n", 0o600, "shorter than"),
    (f"Alpha Bad {TOKEN}\n", 0o600, "'NAME TOKEN'"),
    (f"al/pha {TOKEN}\n", 0o600, "must be 1 to 40 characters"),
])
def test_a_tokens_file_that_is_unsafe_or_malformed_is_refused_without_showing_a_token(
        config: Path, tmp_path: Path, text: str, mode: int, says: str) -> None:
    path = tokens_file(tmp_path, text, mode)
    done = refused(["--http", "--port", str(free_port()), "--config", str(config), "--tokens-file", str(path)])
    assert done.returncode == 2 and says in done.stderr
    assert TOKEN not in done.stderr + done.stdout and "short-secret" not in done.stderr + done.stdout
