"""The child side of ``sandbox``: run an agent's strategy code in this process, shut in, and answer in JSON.

    python -I -m services.strategies.contained   (the job as JSON on stdin, the answer on the fd it names)

In order, before the agent's code is imported: resource limits; everything this process will need imported
(nothing is loaded from outside the allowed folders later); a network namespace of its own (``unshare``, with a
user namespace when that is allowed); Landlock (files: read only the Python install, our packages, the work folder
and the recording; write only the work folder; no TCP; no signals or abstract sockets outside); a seccomp filter
(no socket, connect, exec, fork, ptrace, setrlimit, unshare); and a Python audit hook refusing the same and more
with a reason. The first thing refused ends the run with that reason. Which kernel parts took effect is in the
answer's ``isolation``.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import resource
import signal
import struct
import sys
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

import polybot_strategy
import services
from services import messages as m
from services.backtest import engine
from services.backtest.result import BacktestResult
from services.recording import read as read_recording
from services.risk.limits import RiskOptions
from services.strategies import loading

CODE_FILE = "strategy.py"
MAX_PROBLEMS = 20


class Refused(PermissionError):
    """What the audit hook raises: the agent's code tried something a contained strategy may not do."""


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    message: str
    line: int | None = None  # in the agent's code
    source: str = ""  # that line's text
    at: str = ""  # the message of the sample it was answering first (e.g. "BookSnapshot #12")
    times: int = 1  # how many times it happened


class CheckFigures(msgspec.Struct, frozen=True, kw_only=True):
    class_name: str
    name: str
    params: dict[str, str]
    messages: int
    signals: int
    cancels: int
    fills: int


class Answer(msgspec.Struct, kw_only=True):
    isolation: list[str] = []  # the kernel parts that took effect
    stopped: str = ""  # why the run was stopped (a limit, or something refused); "" when it was not
    problems: list[Problem] = []  # what is wrong with the code (a check's findings, or why it could not run)
    check: CheckFigures | None = None
    result: BacktestResult | None = None


ANSWER = Answer()
ANSWER_FD = [-1]  # the pipe the answer goes to (the job's answer_fd)
RESERVE: list[bytearray] = []  # freed on MemoryError, so the answer can still be written


def answer_and_exit(code: int = 0) -> None:
    data = memoryview(msgspec.json.encode(ANSWER))
    while data:
        data = data[os.write(ANSWER_FD[0], data):]
    os.close(ANSWER_FD[0])
    os._exit(code)


# ---------------------------------------------------------------- kernel limits


def set_limits(limits: dict[str, int]) -> None:
    cpu = limits["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at the soft limit, SIGKILL at the hard one
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["files"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def own_network() -> str:
    """A network namespace with only a loopback that is down: no address anywhere can be reached."""
    for flags, said in ((CLONE_NEWUSER | CLONE_NEWNET, "network namespace (user namespace)"),
                        (CLONE_NEWNET, "network namespace")):
        if LIBC.unshare(flags) == 0:
            return said
    return ""


# Landlock (linux/landlock.h): the rights on files and folders, TCP, and scopes.
LL_EXECUTE, LL_WRITE, LL_READ, LL_READ_DIR = 1, 2, 4, 8
LL_FILE_RIGHTS = LL_EXECUTE | LL_WRITE | LL_READ | (1 << 14) | (1 << 15)  # + truncate, ioctl_dev
LL_ABI_FS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
SYS_LANDLOCK = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(read: list[str], write: list[str]) -> str:
    """Files: read (and run) only under ``read``, anything under ``write``; no TCP bind or connect (ABI 4); no
    signals to, or abstract sockets of, processes outside (ABI 6). "" when the kernel has no Landlock."""
    numbers = SYS_LANDLOCK.get(platform.machine())
    if numbers is None:
        return ""
    create, add, restrict = numbers
    abi = LIBC.syscall(create, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        return ""
    fs = LL_ABI_FS[min(abi, 5)]
    attr = struct.pack("QQQ", fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = LIBC.syscall(create, ctypes.c_char_p(attr[:size]), size, 0)
    if ruleset < 0:
        return ""
    for paths, rights in ((read, LL_EXECUTE | LL_READ | LL_READ_DIR), (write, fs)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a folder that is not there needs no rule
            allowed = rights & fs if os.path.isdir(path) else rights & fs & LL_FILE_RIGHTS
            rule = _PathBeneath(allowed, fd)
            LIBC.syscall(add, ruleset, 1, ctypes.byref(rule), 0)  # LANDLOCK_RULE_PATH_BENEATH
            os.close(fd)
    if LIBC.syscall(restrict, ruleset, 0) != 0:
        return ""
    os.close(ruleset)
    return f"Landlock ABI {abi}"


# seccomp (x86_64): the system calls refused, each with EPERM.
SYSCALLS_REFUSED = {"socket": 41, "connect": 42, "execve": 59, "execveat": 322, "fork": 57, "vfork": 58,
                    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "setrlimit": 160,
                    "prlimit64": 302, "unshare": 272, "setns": 308, "mount": 165, "bpf": 321}
CLONE, CLONE3, CLONE_THREAD = 56, 435, 0x10000
AUDIT_ARCH_X86_64 = 0xC000003E


def seccomp() -> str:
    """Refuse new sockets, connections, programs and processes (threads stay), ptrace, and raising limits."""
    if platform.machine() != "x86_64":
        return ""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill, eperm = 0x7FFF0000, 0x80000000, 0x00050000 | errno.EPERM
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, AUDIT_ARCH_X86_64), (ret, 0, 0, kill), (ld, 0, 0, 0),
            (jge, 0, 1, 0x40000000), (ret, 0, 0, eperm)]  # x32 calls
    for number in SYSCALLS_REFUSED.values():
        prog += [(jeq, 0, 1, number), (ret, 0, 0, eperm)]
    prog += [(jeq, 0, 1, CLONE3), (ret, 0, 0, 0x00050000 | errno.ENOSYS)]  # glibc falls back to clone
    prog += [(jeq, 0, 3, CLONE), (ld, 0, 0, 16), (jset, 1, 0, CLONE_THREAD), (ret, 0, 0, eperm)]
    prog += [(ret, 0, 0, allow)]
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buffer = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(buffer))
    if LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0) != 0:
        return ""
    return "seccomp"


# ---------------------------------------------------------------- the audit hook


def under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def audit_hook(read: list[str], write: list[str]) -> Any:
    refused_events = {
        "socket.__new__": "open a network socket", "socket.connect": "connect a socket",
        "socket.bind": "bind a socket", "socket.getaddrinfo": "look up a host name",
        "socket.gethostbyname": "look up a host name", "subprocess.Popen": "start a process",
        "os.system": "start a process", "os.posix_spawn": "start a process", "os.spawn": "start a process",
        "os.exec": "start a process", "os.fork": "start a process", "os.forkpty": "start a process",
        "os.kill": "send a signal", "os.killpg": "send a signal", "resource.setrlimit": "change its limits",
        "resource.prlimit": "change its limits", "sys.remote_exec": "attach to a process",
        "os.chmod": "change file modes", "os.chown": "change file owners", "mmap.__new__": "map memory from a file",
        "pty.spawn": "start a process", "urllib.Request": "open a URL", "http.client.connect": "connect to a host",
    }
    touching = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.truncate",
                "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
    listing = {"os.listdir", "os.scandir", "glob.glob"}

    def refuse(what: str) -> None:
        ANSWER.stopped = f"contained: it tried to {what}, which agent code may not do"
        answer_and_exit()

    def hook(event: str, args: tuple) -> None:
        if event in refused_events:
            refuse(f"{refused_events[event]} ({event}{_args(args)})")
        elif event.startswith("ctypes.") or event.startswith("_ctypes"):
            refuse(f"call native code through ctypes ({event})")
        elif event == "open":
            path, mode, flags = (list(args) + [None, None])[:3]
            if isinstance(path, int):
                return
            name = os.path.realpath(os.fsdecode(path))
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
            if writes and not under(name, write):
                refuse(f"write {name} (outside its work folder)")
            if not writes and not under(name, read + write):
                refuse(f"read {name} (outside its work folder and the Python install)")
        elif event in touching or event in listing:
            for path in args:
                if isinstance(path, (str, bytes, os.PathLike)):
                    name = os.path.realpath(os.fsdecode(path))
                    if not under(name, write if event in touching else read + write):
                        refuse(f"{'change' if event in touching else 'list'} {name} (outside its work folder)")
    return hook


def _args(args: tuple) -> str:
    shown = ", ".join(repr(a)[:60] for a in args[:3])
    return f": {shown}" if shown else ""


# ---------------------------------------------------------------- the jobs


def agent_line(exc: BaseException, path: str) -> tuple[int | None, str]:
    """The deepest line of the agent's file in an exception's traceback, and its text."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == path:
            line = frame.lineno
    if line is None:
        return None, ""
    lines = Path(path).read_text().splitlines()
    return line, lines[line - 1].strip() if 0 < line <= len(lines) else ""


def strategy_class(path: str, class_name: str) -> type:
    """The class named, or the one strategy class the file defines."""
    module = loading.load_file(Path(path))
    if class_name:
        return loading.load(f"{path}:{class_name}")
    own = [v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__
           and callable(getattr(v, "on_message", None))]
    if len(own) != 1:
        names = ", ".join(sorted(c.__name__ for c in own))
        raise loading.StrategyError(
            f"the code defines {len(own)} classes with on_message ({names or 'none'}); "
            + ("define one, a subclass of polybot_strategy.Strategy" if not own else "say which with class_name"))
    return own[0]


class Checked:
    """The strategy's on_message, with what it raises and what it returns checked against the API."""

    def __init__(self, strategy: Any, path: str) -> None:
        self.strategy = strategy
        self.inner = strategy.on_message
        self.path = path
        self.markets: dict[str, m.MarketNew] = {}  # token -> its market
        self.problems: list[Problem] = []
        self.seen: Counter[str] = Counter()
        self.outputs: Counter[str] = Counter()

    def __call__(self, msg: m.Message) -> list[m.Message]:
        kind = type(msg).__name__
        self.seen[kind] += 1
        at = f"{kind} #{self.seen[kind]}"
        if isinstance(msg, m.MarketNew):
            self.markets.update({o.token_id: msg for o in msg.outcomes})
        try:
            out = self.inner(msg)
        except MemoryError:
            raise
        except Exception as exc:
            line, text = agent_line(exc, self.path)
            self.add(Problem(message=f"on_message raised {type(exc).__name__}: {exc}", line=line, source=text,
                             at=at))
            return []
        if not isinstance(out, list):
            self.add(Problem(message=f"on_message returned {type(out).__name__}, not a list of Signal and Cancel "
                                     "(return [] when there is nothing to do)", at=at))
            return []
        kept = []
        for item in out:
            if isinstance(item, m.Signal):
                problem = self.signal_problem(item)
            elif isinstance(item, m.Cancel):
                problem = ""
            else:
                problem = (f"on_message returned a {type(item).__name__} ({repr(item)[:80]}); it may return only "
                           "Signal and Cancel (polybot_strategy.signal and .cancel build them)")
            if problem:
                self.add(Problem(message=problem, at=at))
            else:
                self.outputs[type(item).__name__] += 1
                kept.append(item)
        return kept

    def signal_problem(self, signal: m.Signal) -> str:
        if not signal.legs:
            return "a Signal with no legs"
        for i, leg in enumerate(signal.legs):
            market = self.markets.get(leg.token_id)
            if market is None:
                return f"leg {i}: token {leg.token_id!r} is in no market the strategy was told of (MarketNew)"
            if leg.side not in ("BUY", "SELL"):
                return f"leg {i}: side {leg.side!r} must be BUY or SELL"
            if leg.market and leg.market != market.market:
                return f"leg {i}: token {leg.token_id} is of market {market.market}, not {leg.market}"
            if why := polybot_strategy.why_not(market, leg.limit_price, leg.size):
                return f"leg {i}: {why} (polybot_strategy.round_price and round_size round to the rules)"
        return ""

    def add(self, problem: Problem) -> None:
        for i, known in enumerate(self.problems):
            if (known.message, known.line) == (problem.message, problem.line):
                self.problems[i] = msgspec.structs.replace(known, times=known.times + 1)
                return
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


def check(cls: type, params: dict[str, Any], path: str, sample: str) -> None:
    replay = engine.Replay(cls, params)
    checked = Checked(replay.strategy, path)
    replay.strategy.on_message = checked
    result = replay.run(read_recording(sample), sample)
    ANSWER.problems = checked.problems
    ANSWER.result = result  # the sample's backtest: a proposal without a recording keeps it
    ANSWER.check = CheckFigures(class_name=cls.__name__, name=cls.name, params=replay.params,
                                messages=result.messages, signals=len(result.signals), cancels=result.cancels,
                                fills=len(result.fills))


def load_problem(exc: loading.StrategyError, path: str) -> Problem:
    """A StrategyError from loading the agent's file, with its line where it names one."""
    text = str(exc).replace(f"{path}, ", "").replace(f"{path}: ", "")
    line = None
    if text.startswith("line "):
        number, _, text = text[5:].partition(": ")
        line = int(number) if number.isdigit() else None
    elif "(line " in text:
        number = text.rsplit("(line ", 1)[1].rstrip(")")
        line = int(number) if number.isdigit() else None
    lines = Path(path).read_text().splitlines()
    source = lines[line - 1].strip() if line and 0 < line <= len(lines) else ""
    return Problem(message=text, line=line, source=source)


def run(job: dict[str, Any]) -> None:
    work = os.getcwd()
    path = os.path.join(work, CODE_FILE)
    packages = [str(Path(p.__file__).resolve().parent) for p in (services, polybot_strategy)]
    python = sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    read = python + packages + [os.path.realpath(p) for p in job.get("read", [])] + ["/dev/null", "/dev/urandom"]
    isolation = [x for x in (own_network(),) if x]
    if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        isolation += [x for x in (landlock(read + ["/usr/lib", "/lib", "/lib64"], [work]), seccomp()) if x]
    ANSWER.isolation = isolation
    RESERVE.append(bytearray(16 << 20))
    if job.get("audit", True):
        sys.addaudithook(audit_hook(read, [work]))
    try:
        if job.get("code"):
            cls = strategy_class(path, job.get("class_name", ""))
        else:
            cls = loading.load(job["spec"])
        if problems := loading.contract(cls):
            ANSWER.problems = [Problem(message=p) for p in problems]
            return
        if job["action"] == "check":
            check(cls, job.get("params", {}), path, job["recording"])
        else:
            risk = msgspec.convert(job["risk"], RiskOptions) if "risk" in job else None
            ANSWER.result = engine.backtest(job["recording"], cls, job.get("params", {}), risk=risk)
    except loading.StrategyError as exc:
        ANSWER.problems = [load_problem(exc, path)]
    except engine.BacktestError as exc:
        ANSWER.problems = [Problem(message=str(exc))]
    except MemoryError:
        RESERVE.clear()
        ANSWER.stopped = "contained: it ran out of memory (the memory limit)"
    except RecursionError as exc:
        line, text = agent_line(exc, path)
        ANSWER.problems = [Problem(message="it recursed without end (RecursionError)", line=line, source=text)]
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            ANSWER.stopped = "contained: it wrote a file past the file size limit"
            return
        line, text = agent_line(exc, path)
        ANSWER.problems = [Problem(message=f"{type(exc).__name__}: {exc}", line=line, source=text)]


def main() -> None:
    job = json.loads(sys.stdin.read())
    ANSWER_FD[0] = job["answer_fd"]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file over the limit fails its write (EFBIG) instead
    set_limits(job["limits"])
    try:
        run(job)
    except MemoryError:
        RESERVE.clear()
        ANSWER.stopped = "contained: it ran out of memory (the memory limit)"
    answer_and_exit()


if __name__ == "__main__":
    main()
