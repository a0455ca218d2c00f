"""Agent code, checked and backtested in a child process shut in by the kernel (see ``contained``).

The child gets: an environment of its own (no variable of ours: no POLYBOT_* secret, nothing but what Python
needs), limits on CPU time, memory, open files and file size, a fresh work folder (the code written there, its
cwd), no network, and read access only to the Python install, our packages and what it replays. The parent (the
MCP server) enforces a wall-clock deadline by killing the child's process group, reads its answer (JSON, bounded
in size) from a pipe, and says why a run was stopped: which limit, or what the code tried.
"""
from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from ..config import ContainmentConfig as Limits
from .contained import CODE_FILE, MAX_PROBLEMS, Answer
from .loading import NAME

SAMPLE = dict(seed=17, seconds=60, markets=6, events=1, outcomes=3)  # the short recording a check replays
SHOWN = 500  # characters of a problem's text shown
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


def sample(state_dir: Path) -> Path:
    """The short recording a check replays, made once (deterministic: the same files each time) under the state
    folder, where the contained child may read it and not change it."""
    folder = Path(state_dir) / "cache" / "strategy-sample-{seed}-{seconds}-{markets}".format(**SAMPLE)
    if not folder.is_dir():
        from ..backtest import simulated  # the local venue's code: loaded only to make the sample

        folder.parent.mkdir(parents=True, exist_ok=True)
        made = Path(tempfile.mkdtemp(prefix=".sample-", dir=folder.parent))
        simulated.generate(made / "recording", **SAMPLE)
        try:
            os.rename(made / "recording", folder)
        except OSError:
            if not folder.is_dir():
                raise
            # made meanwhile by another call: the same files
        finally:
            shutil.rmtree(made, ignore_errors=True)
    return folder


class Stopped(Exception):
    """The contained run was stopped (a limit hit, something refused) or failed; the message says which."""


def run(job: dict[str, Any], code: str = "", limits: Limits = Limits(), read: list[str | Path] = (),
        audit: bool = True) -> Answer:
    """Run ``job`` (``contained.run``'s: action check or backtest, class_name, params, recording, spec) with the
    agent's ``code`` in a contained child, which may also read ``read``; its answer. Stopped when a deadline or a
    kernel limit ended it. ``audit=False`` leaves out the audit hook, so that tests can show the kernel's part
    alone."""
    work = Path(tempfile.mkdtemp(prefix="polybot-contained-"))
    try:
        (work / CODE_FILE).write_text(code)
        job = {**job, "code": bool(code), "read": [str(p) for p in read], "audit": audit, "limits": {
            "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_mb << 20, "files": limits.files,
            "file_bytes": limits.file_mb << 20}}
        return _child(job, work, limits)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _child(job: dict[str, Any], work: Path, limits: Limits) -> Answer:
    answer_r, answer_w = os.pipe()
    output = open(work / "output.txt", "wb")
    try:
        child = subprocess.Popen([sys.executable, "-I", "-m", "services.strategies.contained"], cwd=work,
                                 env={**ENV, "HOME": str(work), "TMPDIR": str(work)}, stdin=subprocess.PIPE,
                                 stdout=output, stderr=output, pass_fds=(answer_w,), start_new_session=True,
                                 close_fds=True)
    finally:
        os.close(answer_w)
        output.close()
    deadline = time.monotonic() + limits.wall_s
    cap = limits.answer_mb << 20
    late = Stopped(f"contained: it ran past the wall-clock limit of {limits.wall_s:g} s (an endless loop, or waiting "
                   "on something that never comes) and was killed")
    try:
        with os.fdopen(answer_r, "rb") as answers:
            try:  # the job is small: the code waits in the work folder
                child.stdin.write(json.dumps({**job, "answer_fd": answer_w}).encode())
                child.stdin.close()
            except BrokenPipeError:
                pass
            try:
                data = _read_answer(answers, deadline, cap + 1)
            except TimeoutError:
                raise late from None
        if len(data) > cap:
            raise Stopped(f"contained: its answer was over {limits.answer_mb} MB; backtest a shorter recording")
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            raise late from None
    finally:
        _kill(child)
    code = child.returncode
    if code == -signal.SIGXCPU:
        raise Stopped(f"contained: it used up its {limits.cpu_s} s of CPU time (an endless loop?) and was killed")
    if code == -signal.SIGKILL:
        raise Stopped(f"contained: the kernel killed it (past its {limits.cpu_s} s of CPU time, or out of memory)")
    if not data:
        tail = (work / "output.txt").read_bytes()[-1500:].decode(errors="replace")
        if "MemoryError" in tail:
            raise Stopped(f"contained: it ran out of memory (the limit is {limits.memory_mb} MB)")
        raise Stopped(f"the contained process ended ({_ended(code)}) without an answer: {tail.strip()[-600:]}")
    try:
        answer = msgspec.json.decode(data, type=Answer)
    except msgspec.DecodeError as exc:
        raise Stopped(f"the contained process answered with something unreadable ({exc})") from None
    # The answer is the agent code's process's word: held to what the tools can show.
    answer.problems = [msgspec.structs.replace(p, message=p.message[:SHOWN], source=p.source[:SHOWN], at=p.at[:80])
                       for p in answer.problems[:MAX_PROBLEMS]]
    answer.stopped = answer.stopped[:SHOWN]
    if answer.result is not None and not NAME.match(answer.result.strategy):
        raise Stopped(f"the contained process named its strategy {answer.result.strategy[:40]!r}, not a strategy "
                      "name")
    if answer.stopped.startswith("contained: it ran out of memory"):
        answer.stopped = f"contained: it ran out of memory (the limit is {limits.memory_mb} MB)"
    if answer.stopped.endswith("file size limit"):
        answer.stopped += f" of {limits.file_mb} MB"
    return answer


def _read_answer(answers: Any, deadline: float, cap: int) -> bytes:
    """What the child writes on its answer pipe until it closes it, or ``cap`` bytes; TimeoutError at the
    deadline."""
    chunks, size = [], 0
    with selectors.DefaultSelector() as sel:
        sel.register(answers, selectors.EVENT_READ)
        while size < cap:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not sel.select(left):
                continue
            chunk = os.read(answers.fileno(), min(1 << 20, cap - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    return b"".join(chunks)


def _kill(child: subprocess.Popen) -> None:
    """The child and anything it started (its process group)."""
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()


def _ended(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

