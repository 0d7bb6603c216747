"""Sandboxed code verifier: the binary reward r for code tasks.

`check_code(response, task) -> Verdict` runs the program in the response (the LAST fenced code block, the
whole text when there is none) against a code task and says whether it passed every test. It never raises
and always returns within its time budget. `check_code_batch(responses, tasks)` checks many candidates on
a pool sized to the cores, with a verdict cache, fail-fast and a global time budget. `sandbox_info()` says
which protections this machine gives.

Task schema (what tasks.py produces; anything else is reason `bad_task`):
  {"kind": "stdio", "tests": [{"input": str, "output": str}, ...], "float_tol": 1e-6?}
  {"kind": "call", "entry_point": str, "tests": [{"args": [...], "kwargs"?: {...}, "expected": ...}, ...], "float_tol"?}
  {"kind": "assert", "entry_point": str, "tests": ["assert f(1) == 2", ...], "float_tol"?}

Reasons (CODE_REASONS): `correct`; `no_answer` (empty program); `mismatch` (wrong output, wrong value or a
failed assert); `parse_error` (the PROGRAM does not compile, or is longer than MAX_PROGRAM_CHARS); `bad_task`
(the TASK is malformed: unknown kind, no tests, a test of the wrong shape, an assert that does not parse);
`timeout` (a per-test or per-candidate wall-clock limit, the CPU rlimit, or the batch budget);
`runtime_error` (an exception, a non-zero exit, a kill by a limit other than time, or results missing);
`sandbox_error` (the sandbox itself could not be set up: never the candidate's doing, logged).

How a candidate runs. The parent writes a spec (program, test inputs, limits, a random nonce, and the
harness source) to an unnamed temporary file and starts `python -I -S -B -X utf8 -c BOOT` in a new session,
with a scrubbed environment, stdin from a file, stdout/stderr/results going to unnamed files (so an orphan
that keeps them open can never stall the parent: it waits for the process, not for EOF), cwd a private
0700 directory. The harness (the `_child_*` functions below, executed in a private globals dict with its
own copy of the builtins) then, in process O, still as root:
  1. sets no_new_privs and unshares a mount, network and PID namespace (a user namespace too when not root;
     each one only where the OS allows it). In the mount namespace it makes / private, mounts an empty
     read-only tmpfs over the parent's repository, cwd, home, /root, /home and sys.prefix, and fresh
     size-limited tmpfs over /tmp, /var/tmp, /dev/shm and the work directory;
  2. forks C, PID 1 of the new PID namespace (it remounts /proc, and gets SIGKILL if O dies), which forks
     D and reaps; when D exits, C exits and the kernel kills everything left in the namespace. Without a
     PID namespace O is a child subreaper that kills and reaps D's leftovers itself;
  3. D sets rlimits (RLIMIT_AS, CPU, FSIZE, NOFILE, NPROC, CORE=0), drops to an unprivileged uid with
     setgroups/setresgid/setresuid (checks that setuid(0) now fails), clears its dumpable flag, writes a
     `setup` line, and runs the candidate. The parent gets the verdict from the results file and always
     kills what is left: every process of the sandbox uid, then O's process group.
Each worker slot has its own uid (UID_BASE + slot, not in /etc/passwd, locked with flock across
processes), so killing "every process of that uid" only ever hits this slot's sandbox, and RLIMIT_NPROC
counts only its processes.

Results channel and nonce. stdio tasks: the candidate is the __main__ program; stdin is the test input; the
parent compares stdout (CRLF -> LF, trailing spaces and trailing blank lines ignored, line-by-line tokens
compared exactly, a relative+absolute tolerance only where the expected token looks like a float) and
requires exit status 0. Expected outputs never leave the parent. call tasks: the child gets the program
and the argument lists only, calls the entry point on each, and writes each return value as plain JSON
(tuples become lists; dicts, sets and bytes are tagged; any other type, e.g. an object whose __eq__ is
always true, becomes a marker that never equals). The parent compares: a tolerance only where the expected
value is a float, bool is not int, tuples equal lists. assert tasks: `assert f(<literals>) == <literal>`
(also `is True/False/None`, bare `assert f(...)` and `assert not f(...)`) is parsed by the parent with
`ast` and run exactly like a call test, so its expected value never enters the child either. Any other
assert (loops, helper variables, a whole HumanEval `check` function) runs in the child with pristine
builtins and `entry_point` bound to a wrapper that turns every return value into a fresh plain value
(a non-plain one raises), and the child reports per-test completion lines `NONCE INDEX STATUS PAYLOAD`.
The parent accepts a test only on a line carrying that run's nonce, with lines in the exact order
setup, load, 0, 1, ..., done, and a zero exit status: exiting early (sys.exit(0), os._exit(0), atexit)
or writing fake lines never passes. The nonce is never on the command line, in the environment or in a
file the candidate can open (the spec file is unnamed and its fd is closed before the candidate runs); it
lives only in the harness's local variables and default arguments, and only an f-string of exact strs
(nothing the candidate could patch) ever touches it. A forked copy of the harness never reports (it checks its pid). Lines come back to an
O_APPEND file. An audit hook (it cannot be removed) blocks the usual ways to reach the harness's frames or
memory: sys._getframe (so inspect.stack too), sys._current_frames, traceback.tb_frame, gi_frame/cr_frame/
ag_frame, sys.settrace/setprofile, gc.get_objects/get_referrers/get_referents, new code objects, every
ctypes call, opening a file named `mem`, and adding audit hooks. This is best effort: the parsed path does
not depend on the nonce at all, the raw-assert path does.

What is protected (as root on Linux, which is where training runs): the candidate runs as a uid of its
own, so it cannot read the parent's files that are not world-readable (/root is 0700), cannot signal or
ptrace the parent or other users' processes, cannot write outside its work directory and world-writable
places; with the mount namespace it cannot see the repository, home, /root, /home or the venv at all,
and its /tmp, /var/tmp, /dev/shm and work directory are private size-limited tmpfs; with the network
namespace it has no network at all (no loopback reach to the host's services); with the PID namespace it
sees only its own processes and nothing it starts outlives it. Memory (address space), CPU time, file
size, open files, process count and wall time are bounded; no core dumps; setuid binaries are inert.

What is NOT protected: there is no seccomp filter, so every syscall the kernel allows an unprivileged
user is available (kernel bugs are in scope); world-readable files outside the hidden paths (/etc, /usr,
/opt, /work/shared here) are readable; CPU and cache side channels, and the machine's load, are shared;
without a mount namespace the candidate can fill the disk through its work directory and /tmp (each file
is capped by RLIMIT_FSIZE, not their number; its leftovers in /tmp, /var/tmp and /dev/shm are deleted by
uid after the run) and can read world-readable files in the repository. Raw asserts run in the same
interpreter as the candidate: it can monkeypatch stdlib modules the test code imports (math, random,
...), redefine helper functions the test uses that come from the prompt, and a determined program can
still recover the nonce (e.g. through /proc/self/mem opened relative to a directory fd, or crafted
bytecode via marshal); only parsed asserts and call/stdio tests are robust to that. The audit hook also
refuses those operations to honest programs (sys._getframe raises ValueError, which namedtuple, enum, typing
and logging expect; traceback printing fails). The child's interpreter is sys.executable when the sandbox
uid can run it, else the system's python3 (here /root/.pyenv is 0700): it may be another Python version
than the trainer's, and a program using newer syntax then fails with `parse_error`. Not root: no uid
drop (the candidate can read and signal everything the user can, unless a user+PID namespace is
available), and RLIMIT_NPROC counts all the user's processes (we add the current count).
"""
from __future__ import annotations

import ast
import builtins
import collections
import concurrent.futures
import fcntl
import hmac
import inspect
import json
import logging
import math
import os
import re
import resource
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

from verify import Verdict

log = logging.getLogger(__name__)

CODE_REASONS = ("correct", "no_answer", "mismatch", "parse_error", "timeout", "runtime_error", "bad_task",
                "sandbox_error")
UID_BASE = int(os.environ.get("SDZERO_SANDBOX_UID_BASE", "61000"))  # Debian's 60000-64999 block: no login users
UID_COUNT = 64  # one uid per concurrently running sandbox
MAX_PROGRAM_CHARS = 100_000
CACHE_SIZE = 4096
DEFAULT_FLOAT_TOL = 1e-6
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # world-writable: private tmpfs in the mount namespace
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Limits:
    time_limit_s: float = 2.0  # wall clock per test, and for the program's top-level code
    candidate_time_s: float = 30.0  # cap on one candidate's wall clock, all its tests together
    memory_mb: int = 512  # RLIMIT_AS of the candidate process (python -I -S with the harness peaks at ~16 MiB)
    output_bytes: int = 8 << 20  # RLIMIT_FSIZE: caps stdout, stderr and the results file each
    processes: int = 64  # RLIMIT_NPROC: processes + threads of the sandbox uid
    open_files: int = 64  # RLIMIT_NOFILE
    scratch_mb: int = 32  # size of each private tmpfs (work dir, /tmp, /var/tmp, /dev/shm)
    startup_slack_s: float = 2.0  # added to the parent's hard deadline: interpreter start, isolation setup


@dataclass(frozen=True)
class Isolation:
    drop_privileges: bool | None = None  # None: drop when running as root
    uid_base: int = UID_BASE  # sandbox uids are uid_base .. uid_base + uid_count - 1
    uid_count: int = UID_COUNT
    python: str | None = None  # child interpreter; None: $SDZERO_SANDBOX_PYTHON or the first one the uid can run
    namespaces: bool = True  # mount/network/PID namespaces where the OS allows them
    hide: tuple[str, ...] = ()  # more directories to hide in the mount namespace


# ----------------------------------------------------------------------------------------------------------
# Programs and tasks (parent side)


_FENCE_RE = re.compile(r"^[ \t]*```", re.MULTILINE)


def extract_program(response: str) -> str:
    """The last fenced code block (an unclosed final fence runs to the end), else the whole text."""
    fences = [m.start() for m in _FENCE_RE.finditer(response)]
    if not fences:
        return response
    blocks = [(fences[i], fences[i + 1] if i + 1 < len(fences) else len(response)) for i in range(0, len(fences), 2)]
    start, end = blocks[-1]
    body_start = response.find("\n", start)  # skip the info string (```python)
    return "" if body_start < 0 or body_start >= end else response[body_start + 1:end]


class _BadTask(Exception):
    pass


@dataclass(frozen=True)
class _Test:
    child: dict  # what the child gets: {"args": json} / {"args_literal": src, "kwargs_literal": src} / {"code": src}
    expect: tuple | None  # parent side: ("eq", encoded value) or ("truthy", bool); None: passes if it completes


@dataclass(frozen=True)
class _Plan:
    kind: str  # "stdio" or "tests"
    tests: tuple
    entry_point: str | None
    float_tol: float


def _plan(task) -> _Plan:
    """Validate a task and split it into what the child may see and what only the parent knows."""
    if not isinstance(task, dict):
        raise _BadTask("task is not a dict")
    kind, tests = task.get("kind"), task.get("tests")
    if not isinstance(tests, (list, tuple)) or not tests:
        raise _BadTask("no tests")
    tol = task.get("float_tol", DEFAULT_FLOAT_TOL)
    if type(tol) not in (int, float) or not tol >= 0:
        raise _BadTask("float_tol")
    if kind == "stdio":
        for t in tests:
            if not isinstance(t, dict) or not isinstance(t.get("input", ""), str) or not isinstance(t.get("output"), str):
                raise _BadTask("stdio test")
        return _Plan("stdio", tuple((t.get("input", ""), t["output"]) for t in tests), None, float(tol))
    entry_point = task.get("entry_point")
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise _BadTask("entry_point")
    if kind == "call":
        return _Plan("tests", tuple(_call_test(t) for t in tests), entry_point, float(tol))
    if kind == "assert":
        return _Plan("tests", tuple(_assert_test(t, entry_point) for t in tests), entry_point, float(tol))
    raise _BadTask(f"kind {kind!r}")


def _call_test(t) -> _Test:
    if not isinstance(t, dict) or not isinstance(t.get("args"), (list, tuple)) or "expected" not in t:
        raise _BadTask("call test")
    kwargs = t.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise _BadTask("call kwargs")
    expected = _encode(t["expected"])
    if _has_marker(expected):
        raise _BadTask("expected value is not plain")
    try:
        child = {"args": json.dumps(list(t["args"])), "kwargs": json.dumps(kwargs)}
    except (TypeError, ValueError):
        raise _BadTask("args are not JSON") from None
    return _Test(child, ("eq", expected))


def _assert_test(src, entry_point: str) -> _Test:
    if not isinstance(src, str):
        raise _BadTask("assert test is not a string")
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise _BadTask("assert test does not parse") from None
    parsed = _parse_assert(tree, entry_point)
    return parsed if parsed is not None else _Test({"code": src}, None)


def _parse_assert(tree: ast.Module, entry_point: str) -> _Test | None:
    """`assert f(<literals>) == <literal>` and friends as a call test; None for any other form."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    test = tree.body[0].test
    if isinstance(test, ast.Call):  # assert f(x)
        call, expect = test, ("truthy", True)
    elif isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and isinstance(test.operand, ast.Call):
        call, expect = test.operand, ("truthy", False)
    elif isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Eq, ast.Is)):
        left, right = test.left, test.comparators[0]
        call, other = (left, right) if _is_entry_call(left, entry_point) else (right, left)
        try:
            value = ast.literal_eval(other)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
        if isinstance(test.ops[0], ast.Is) and not any(value is v for v in (True, False, None)):
            return None
        expected = _encode(value)
        if _has_marker(expected):
            return None
        expect = ("eq", expected)
    else:
        return None
    if not _is_entry_call(call, entry_point):
        return None
    return _literal_call(call, expect)


def _is_entry_call(node, entry_point: str) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point


def _literal_call(call: ast.Call, expect: tuple) -> _Test | None:
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None
    for node in [*call.args, *(k.value for k in call.keywords)]:
        try:
            ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    args = "(" + "".join(ast.unparse(a) + ", " for a in call.args) + ")"
    kwargs = "{" + ", ".join(f"{k.arg!r}: {ast.unparse(k.value)}" for k in call.keywords) + "}"
    return _Test({"args_literal": args, "kwargs_literal": kwargs}, expect)


# ----------------------------------------------------------------------------------------------------------
# Values: one encoding for what the child returns and what the parent expects


def _encode(value, depth=0):
    """A JSON-able copy of a plain value: tuples -> lists; dicts, sets, bytes tagged; anything else a marker.

    Runs in the child too (its source is shipped): exact type checks, so no candidate method ever runs.
    """
    t = type(value)
    if value is None or t is bool or t is int or t is str:
        return value
    if t is float:
        return value
    if depth > 100:
        return {"__unplain__": "too deep"}
    if t is list or t is tuple:
        return [_encode(v, depth + 1) for v in value]
    if t is dict:
        return {"__dict__": [[_encode(k, depth + 1), _encode(v, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"__set__": [_encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"__bytes__": value.hex()}
    return {"__unplain__": t.__name__}


def _has_marker(enc) -> bool:
    if isinstance(enc, list):
        return any(_has_marker(v) for v in enc)
    if isinstance(enc, dict):
        return "__unplain__" in enc or any(_has_marker(v) for v in enc.values())
    return False


def _canon(enc) -> str:
    return json.dumps(enc, sort_keys=True)


def _same(got, want, tol: float) -> bool:
    """Encoded values equal: tolerance only where `want` is a float; bool is not int; markers never equal."""
    if type(want) is float:
        if type(got) is not float and type(got) is not int:
            return False
        if math.isnan(want):
            return math.isnan(got)
        return math.isclose(got, want, rel_tol=tol, abs_tol=tol)
    if type(want) is int:
        return (type(got) is int or type(got) is float) and got == want  # Python: 2.0 == 2
    if want is None or type(want) is bool or type(want) is str:
        return type(got) is type(want) and got == want
    if type(want) is list:
        return type(got) is list and len(got) == len(want) and all(_same(g, w, tol) for g, w in zip(got, want))
    if type(want) is not dict or type(got) is not dict or _has_marker(got) or _has_marker(want):
        return False
    if "__dict__" in want:
        if "__dict__" not in got:
            return False
        g = {_canon(k): v for k, v in got["__dict__"]}
        w = {_canon(k): v for k, v in want["__dict__"]}
        return g.keys() == w.keys() and all(_same(g[k], w[k], tol) for k in w)
    if "__set__" in want:
        return "__set__" in got and {_canon(v) for v in got["__set__"]} == {_canon(v) for v in want["__set__"]}
    return got == want  # __bytes__


def _truthy(enc) -> bool | None:
    """Python truthiness of an encoded value (None for a marker: neither true nor false)."""
    if isinstance(enc, dict):
        if "__unplain__" in enc:
            return None
        return bool(next(iter(enc.values())))
    return bool(enc)


_FLOAT_TOKEN_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _stdio_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _token_equal(got: str, want: str, tol: float) -> bool:
    if got == want:
        return True
    looks_float = ("." in want or "e" in want or "E" in want) and _FLOAT_TOKEN_RE.fullmatch(want)
    if not looks_float or not _FLOAT_TOKEN_RE.fullmatch(got):
        return False
    return math.isclose(float(got), float(want), rel_tol=tol, abs_tol=tol)


def stdio_equal(got: str, want: str, float_tol: float = DEFAULT_FLOAT_TOL) -> bool:
    """Line by line, token by token; CRLF, trailing spaces and trailing blank lines ignored."""
    g, w = _stdio_lines(got), _stdio_lines(want)
    return len(g) == len(w) and all(
        len(gt) == len(wt) and all(_token_equal(a, b, float_tol) for a, b in zip(gt, wt))
        for gt, wt in ((gl.split(), wl.split()) for gl, wl in zip(g, w)))


# ----------------------------------------------------------------------------------------------------------
# Where and as whom the child runs (parent side)


@dataclass(frozen=True)
class _Setup:
    python: str
    uid_base: int | None  # None: no privilege drop
    uid_count: int
    namespaces: bool
    hide: tuple[str, ...]


_SETUPS: dict = {}
_SETUP_INFO: dict = {}
_SETUP_LOCK = threading.Lock()


def _python_candidates(isolation: Isolation) -> list[str]:
    if isolation.python:
        return [isolation.python]
    found = [os.environ.get("SDZERO_SANDBOX_PYTHON"), sys.executable, os.path.realpath(sys.executable),
             getattr(sys, "_base_executable", None)]
    for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
        found.append(shutil.which(name, path=CHILD_PATH))
    return list(dict.fromkeys(p for p in found if p))


def _hidden_paths(isolation: Isolation) -> tuple[str, ...]:
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [here, os.getcwd(), os.path.expanduser("~"), "/root", "/home", sys.prefix, *isolation.hide]
    return tuple(dict.fromkeys(os.path.realpath(p) for p in paths if p and os.path.realpath(p) != "/"))


_PROBE_PROGRAM = "import collections, fractions, heapq, itertools, math, re\nprint(sum(range(4)))\n"


def _probe(setup: _Setup) -> dict | None:
    """Run a trivial program in this setup; the child's own report of its isolation, or None if it fails."""
    run = _run({"mode": "stdio", "program": _PROBE_PROGRAM}, b"", Limits(time_limit_s=10.0), setup,
               time.monotonic() + 30.0)
    ok = run.setup is not None and run.returncode == 0 and run.stdout.strip() == b"6"
    if not ok:
        log.debug("sandbox probe failed for %s: rc=%s stderr=%s", setup, run.returncode, run.stderr[-2000:])
    return run.setup if ok else None


def _setup(isolation: Isolation) -> _Setup:
    """Pick the interpreter and uid policy once per Isolation: the first combination whose probe passes."""
    with _SETUP_LOCK:
        if isolation in _SETUPS:
            return _SETUPS[isolation]
        drop = isolation.drop_privileges if isolation.drop_privileges is not None else os.geteuid() == 0
        if drop and os.geteuid() != 0:
            log.warning("sandbox: cannot drop privileges when not root; running candidates as uid %d", os.geteuid())
            drop = False
        hide = _hidden_paths(isolation)
        tries = [(py, isolation.uid_base if drop else None) for py in _python_candidates(isolation)]
        if drop:  # degrade rather than fail closed: a reward that is always 0 would silently stall training
            tries += [(py, None) for py in _python_candidates(isolation)]
        chosen, info = None, None
        for python, uid_base in tries:
            candidate = _Setup(python, uid_base, isolation.uid_count, isolation.namespaces, hide)
            info = _probe(candidate)
            if info is not None:
                chosen = candidate
                break
        if chosen is None:
            log.error("sandbox: no working child interpreter (tried %s); every code check will fail", tries)
            chosen, info = _Setup(tries[0][0], tries[0][1], isolation.uid_count, isolation.namespaces, hide), {}
        elif drop and chosen.uid_base is None:
            log.warning("sandbox: no interpreter the sandbox uid can run; candidates run WITHOUT a privilege drop")
        _SETUPS[isolation], _SETUP_INFO[isolation] = chosen, info
        return chosen


def sandbox_info(isolation: Isolation | None = None) -> dict:
    """What this machine gives: interpreter, uids, and the namespaces the child really got (from a probe)."""
    isolation = isolation or Isolation()
    setup = _setup(isolation)
    info = dict(_SETUP_INFO.get(isolation) or {})
    info.update(python=setup.python, drop_privileges=setup.uid_base is not None,
                uids=list(range(setup.uid_base, setup.uid_base + setup.uid_count)) if setup.uid_base is not None else [],
                working=bool(_SETUP_INFO.get(isolation)))
    return info


class _UidSlots:
    """Hands out sandbox uids, one per running sandbox, exclusive across threads (a set) and processes (flock)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self._swept: set[int] = set()

    def _lock_dir(self) -> str | None:
        path = os.path.join(tempfile.gettempdir(), f"sdzero-sandbox-uids-{os.geteuid()}")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            st = os.lstat(path)
        except OSError:
            return None
        # Someone else's directory (or a symlink) would let them hold or fake our locks.
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        return path

    def acquire(self, base: int, count: int) -> tuple[int, int | None]:
        lock_dir = self._lock_dir()
        while True:
            with self._lock:
                for uid in range(base, base + count):
                    if uid in self._busy:
                        continue
                    fd = self._flock(lock_dir, uid)
                    if fd is False:
                        continue
                    self._busy.add(uid)
                    if uid not in self._swept:  # leftovers of a crashed earlier run hold this uid's NPROC
                        self._swept.add(uid)
                        _kill_uid(uid)
                    return uid, fd
            time.sleep(0.01)

    @staticmethod
    def _flock(lock_dir, uid):
        if lock_dir is None:
            return None
        try:
            fd = os.open(os.path.join(lock_dir, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False  # another process's sandbox holds it
        return fd

    def release(self, uid: int, fd: int | None) -> None:
        if fd is not None:
            os.close(fd)
        with self._lock:
            self._busy.discard(uid)


_SLOTS = _UidSlots()


def _proc_status(pid: str) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return {}


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real, effective, saved or fs uid is `uid`."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        st = _proc_status(pid)
        if str(uid) in st.get("Uid", "").split() and not st.get("State", "").strip().startswith("Z"):
            pids.append(int(pid))
    return pids


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of a sandbox uid, repeatedly, until none is left (a fork loop races the scan)."""
    for _ in range(200):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)
    log.warning("sandbox: processes of uid %d survive SIGKILL", uid)


def _clean_scratch(uid: int) -> None:
    """Without a mount namespace the candidate's files in /tmp etc. are real: delete the ones it owns."""
    for d in SCRATCH_DIRS:
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------------------
# Running one sandbox (parent side)


@dataclass
class _Run:
    returncode: int | None
    lines: list  # (index, status, payload) of the result lines that carry this run's nonce, in order
    stdout: bytes
    stderr: bytes
    timed_out: bool  # the parent's hard deadline passed
    setup: dict | None  # the child's `setup` report; None: the sandbox never got to run the candidate

    def signal(self) -> int | None:
        """The signal that ended the candidate, if any (the harness exits 128 + signal for a killed child)."""
        rc = self.returncode
        if rc is None:
            return None
        if rc < 0:
            return -rc
        return rc - 128 if 128 < rc < 128 + 65 else None


_BOOT = """import builtins, json, os, sys
def _boot():
    with os.fdopen(int(sys.argv[1]), "rb") as f:
        spec = json.loads(f.read())
    g = {"__name__": "sdzero_harness", "__builtins__": dict(builtins.__dict__)}
    exec(spec.pop("harness"), g)
    g["_child_main"](spec, int(sys.argv[2]))
_boot()
"""


def _harness_source() -> str:
    global _HARNESS
    if _HARNESS is None:
        parts = ["import builtins, json, os, resource, signal, sys\n"]
        parts += [inspect.getsource(f) for f in _CHILD_FUNCTIONS]
        _HARNESS = "\n\n".join(parts)
    return _HARNESS


_HARNESS = None


def _child_env(workdir: str) -> dict[str, str]:
    return {"PATH": CHILD_PATH, "HOME": workdir, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _waitid_exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _wait_exit(pid: int, deadline: float) -> bool:
    """Wait until the process exits, without reaping it (its pid, our pgid, stays ours); False at the deadline."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while not _waitid_exited(pid):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pidfd is not None:
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(min(remaining, 0.005))
        return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _terminate(proc: subprocess.Popen, uid: int | None, exited: bool) -> None:
    """Kill whatever is left of a sandbox, whatever happened, and reap the harness."""
    if not exited:
        if uid is not None:
            _kill_uid(uid)  # the candidate and all its descendants; the harness then exits by itself
        try:
            os.kill(proc.pid, signal.SIGTERM)  # the harness kills its child (PID-namespace init) and exits
        except OSError:
            pass
        _wait_exit(proc.pid, time.monotonic() + 2.0)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the harness is not reaped yet, so this pgid cannot be reused
    except OSError:
        pass
    proc.wait()
    if uid is not None:
        _kill_uid(uid)  # stragglers that left the process group


def _read_capped(f, cap: int) -> bytes:
    f.seek(0)
    return f.read(cap)


def _parse_results(data: bytes, nonce: str) -> list:
    lines = []
    for raw in data.split(b"\n"):
        parts = raw.decode("utf-8", "replace").split(" ", 3)
        if len(parts) == 4 and hmac.compare_digest(parts[0], nonce):
            lines.append(tuple(parts[1:]))
    return lines


def _run(spec: dict, stdin: bytes, limits: Limits, setup: _Setup, deadline: float) -> _Run:
    """Run the harness once in a fresh sandbox; returns when it has exited and everything it started is dead."""
    uid, lock_fd = _SLOTS.acquire(setup.uid_base, setup.uid_count) if setup.uid_base is not None else (None, None)
    workdir = tempfile.mkdtemp(prefix="sdzero-sbx-")
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
        nonce = secrets.token_hex(16)
        n_timed = len(spec.get("tests", ())) + 1
        spec = dict(spec, nonce=nonce, harness=_harness_source(), time_limit=limits.time_limit_s, isolate={
            "uid": uid, "namespaces": setup.namespaces, "hide": list(setup.hide), "scratch": list(SCRATCH_DIRS),
            "scratch_mb": limits.scratch_mb, "workdir": workdir, "memory_mb": limits.memory_mb,
            "output_bytes": limits.output_bytes, "processes": limits.processes, "open_files": limits.open_files,
            "cpu_s": math.ceil(min(limits.candidate_time_s, limits.time_limit_s * n_timed)) + 1})
        with tempfile.TemporaryFile() as spec_f, tempfile.TemporaryFile() as results_f, \
                tempfile.TemporaryFile() as in_f, tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
            spec_f.write(json.dumps(spec).encode())
            spec_f.seek(0)
            in_f.write(stdin)
            in_f.seek(0)
            fcntl.fcntl(results_f.fileno(), fcntl.F_SETFL, fcntl.fcntl(results_f.fileno(), fcntl.F_GETFL) | os.O_APPEND)
            argv = [setup.python, "-I", "-S", "-B", "-X", "utf8", "-c", _BOOT, str(spec_f.fileno()), str(results_f.fileno())]
            try:
                proc = subprocess.Popen(argv, stdin=in_f, stdout=out_f, stderr=err_f, cwd=workdir, env=_child_env(workdir),
                                        pass_fds=(spec_f.fileno(), results_f.fileno()), start_new_session=True)
            except OSError as e:
                return _Run(None, [], b"", str(e).encode(), False, None)
            exited = _wait_exit(proc.pid, deadline)
            _terminate(proc, uid, exited)
            lines = _parse_results(_read_capped(results_f, limits.output_bytes), nonce)
            stdout, stderr = _read_capped(out_f, limits.output_bytes), _read_capped(err_f, 1 << 16)
        setup_info = next((json.loads(p) for i, s, p in lines[:1] if i == "setup" and s == "ok"), None)
        if uid is not None and setup_info is not None and not setup_info.get("mntns"):
            _clean_scratch(uid)
        return _Run(proc.returncode, lines, stdout, stderr, not exited, setup_info)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if uid is not None:
            _SLOTS.release(uid, lock_fd)


# ----------------------------------------------------------------------------------------------------------
# Verdicts


def _stdio_verdict(run: _Run, want: str, tol: float, program: str) -> Verdict:
    if run.setup is None:
        return Verdict(False, "timeout" if run.timed_out else "sandbox_error", program)
    if run.timed_out or run.signal() == signal.SIGXCPU:
        return Verdict(False, "timeout", program)
    if run.returncode != 0:  # also after a correct output: a crash at exit is still a crash
        return Verdict(False, "runtime_error", program)
    ok = stdio_equal(run.stdout.decode("utf-8", "replace"), want, tol)
    return Verdict(ok, "correct" if ok else "mismatch", program)


def _check_stdio(program: str, plan: _Plan, limits: Limits, setup: _Setup, deadline: float, fail_fast: bool) -> Verdict:
    first_failure = None
    end = min(deadline, time.monotonic() + limits.candidate_time_s + limits.startup_slack_s)
    for stdin, want in plan.tests:
        if time.monotonic() >= end:
            return first_failure or Verdict(False, "timeout", program)
        test_deadline = min(end, time.monotonic() + limits.time_limit_s + limits.startup_slack_s)
        run = _run({"mode": "stdio", "program": program}, stdin.encode("utf-8", "replace"), limits, setup, test_deadline)
        verdict = _stdio_verdict(run, want, plan.float_tol, program)
        if not verdict.correct:
            if fail_fast:
                return verdict
            first_failure = first_failure or verdict
    return first_failure or Verdict(True, "correct", program)


def _test_outcome(test: _Test, status: str, payload: str, tol: float) -> str:
    if status == "fail":
        return "mismatch"
    if status in ("error", "timeout"):
        return "runtime_error" if status == "error" else "timeout"
    if status != "ok":
        return "runtime_error"
    if test.expect is None:
        return "correct"
    try:
        got = json.loads(payload)
    except ValueError:
        return "mismatch"
    how, want = test.expect
    ok = _same(got, want, tol) if how == "eq" else _truthy(got) is want
    return "correct" if ok else "mismatch"


def _tests_verdict(run: _Run, plan: _Plan, program: str) -> Verdict:
    if run.setup is None:
        return Verdict(False, "timeout" if run.timed_out else "sandbox_error", program)
    cut_short = "timeout" if run.timed_out or run.signal() == signal.SIGXCPU else "runtime_error"
    order = ["setup", "load", *map(str, range(len(plan.tests))), "done"]
    names = [index for index, _, _ in run.lines]
    if names != order[:len(names)]:  # duplicated or reordered lines: only a forged or forked writer does that
        return Verdict(False, "runtime_error", program)
    by_index = {index: (status, payload) for index, status, payload in run.lines}
    load = by_index.get("load")
    if load is None:
        return Verdict(False, cut_short, program)
    if load[0] != "ok":
        return Verdict(False, {"syntax": "parse_error", "timeout": "timeout"}.get(load[0], "runtime_error"), program)
    for i, test in enumerate(plan.tests):
        if str(i) not in by_index:
            return Verdict(False, cut_short, program)
        outcome = _test_outcome(test, *by_index[str(i)], plan.float_tol)
        if outcome != "correct":
            return Verdict(False, outcome, program)
    if "done" not in by_index or run.returncode != 0:
        return Verdict(False, cut_short, program)
    return Verdict(True, "correct", program)


def _check_tests(program: str, plan: _Plan, limits: Limits, setup: _Setup, deadline: float, fail_fast: bool) -> Verdict:
    spec = {"mode": "tests", "program": program, "entry_point": plan.entry_point, "fail_fast": fail_fast,
            "tests": [t.child for t in plan.tests]}
    budget = min(limits.candidate_time_s, limits.time_limit_s * (len(plan.tests) + 1)) + limits.startup_slack_s
    run = _run(spec, b"", limits, setup, min(deadline, time.monotonic() + budget))
    return _tests_verdict(run, plan, program)


def _program_problem(program: str) -> str | None:
    if not program.strip():
        return "no_answer"
    if len(program) > MAX_PROGRAM_CHARS:
        return "parse_error"
    try:
        compile(program, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, UnicodeError, MemoryError, RecursionError, OverflowError):
        return "parse_error"
    return None


class _LRU:
    def __init__(self, size: int):
        self.size, self._data, self._lock = size, collections.OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_CACHE = _LRU(CACHE_SIZE)
_CACHEABLE = {"correct", "mismatch", "runtime_error", "parse_error", "no_answer", "bad_task"}  # not timeouts: load-dependent


def clear_cache() -> None:
    _CACHE.clear()


def _cache_key(program: str, task, limits: Limits, isolation: Isolation):
    try:
        return program, json.dumps(task, sort_keys=True, allow_nan=True), limits, isolation
    except (TypeError, ValueError, RecursionError):
        return None


def _check(response, task, limits: Limits, isolation: Isolation, fail_fast: bool, deadline: float) -> Verdict:
    try:
        plan = _plan(task)
    except _BadTask as e:
        log.debug("bad code task: %s", e)
        return Verdict(False, "bad_task", None)
    if not isinstance(response, str):
        return Verdict(False, "no_answer", None)
    program = extract_program(response)
    problem = _program_problem(program)
    if problem:
        return Verdict(False, problem, program if problem != "no_answer" else None)
    key = _cache_key(program, task, limits, isolation)
    cached = _CACHE.get(key) if key is not None else None
    if cached is not None:
        return cached
    if time.monotonic() >= deadline:
        return Verdict(False, "timeout", program)
    setup = _setup(isolation)
    check = _check_stdio if plan.kind == "stdio" else _check_tests
    verdict = check(program, plan, limits, setup, deadline, fail_fast)
    if verdict.reason == "sandbox_error":
        log.warning("sandbox: the sandbox failed to start (see sandbox_info())")
    if key is not None and verdict.reason in _CACHEABLE:
        _CACHE.put(key, verdict)
    return verdict


def check_code(response: str, task: dict, *, time_limit_s: float | None = None, candidate_time_s: float | None = None,
               memory_mb: int | None = None, fail_fast: bool = True, limits: Limits | None = None,
               isolation: Isolation | None = None) -> Verdict:
    """Run the program in `response` against `task` in a fresh sandbox. Never raises.

    time_limit_s (per test), candidate_time_s (all tests) and memory_mb override the same fields of `limits`.
    fail_fast stops at the first failing test (the verdict is the same; only the time spent differs).
    """
    try:
        limits = _limits(limits, time_limit_s=time_limit_s, candidate_time_s=candidate_time_s, memory_mb=memory_mb)
        return _check(response, task, limits, isolation or Isolation(), fail_fast, math.inf)
    except Exception:  # the contract: a reward function that raises would kill a training run
        log.exception("sandbox: unexpected error")
        return Verdict(False, "sandbox_error", None)


def _limits(limits: Limits | None, **overrides) -> Limits:
    limits = limits or Limits()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return Limits(**{**asdict(limits), **overrides}) if overrides else limits


def check_code_batch(responses, tasks, *, workers: int | None = None, budget_s: float | None = None,
                     fail_fast: bool = True, time_limit_s: float | None = None, candidate_time_s: float | None = None,
                     memory_mb: int | None = None, limits: Limits | None = None,
                     isolation: Isolation | None = None) -> list[Verdict]:
    """check_code for many (response, task) pairs on a pool of `workers` threads (default: the usable cores),
    each running one sandbox at a time; identical pairs run once, and verdicts are cached across calls.

    When `budget_s` has passed, candidates not yet finished get reason `timeout`. Raises ValueError only when
    the two lists differ in length (a caller's bug, not an input).
    """
    responses, tasks = list(responses), list(tasks)
    if len(responses) != len(tasks):
        raise ValueError(f"{len(responses)} responses but {len(tasks)} tasks")
    limits = _limits(limits, time_limit_s=time_limit_s, candidate_time_s=candidate_time_s, memory_mb=memory_mb)
    isolation = isolation or Isolation()
    deadline = time.monotonic() + budget_s if budget_s is not None else math.inf
    workers = workers or len(os.sched_getaffinity(0))
    groups: dict = {}
    for i, (response, task) in enumerate(zip(responses, tasks)):
        try:
            key = (response, json.dumps(task, sort_keys=True)) if isinstance(response, str) else ("unique", i)
        except (TypeError, ValueError, RecursionError):
            key = ("unique", i)
        groups.setdefault(key, []).append(i)

    def one(i: int) -> Verdict:
        try:
            return _check(responses[i], tasks[i], limits, isolation, fail_fast, deadline)
        except Exception:
            log.exception("sandbox: unexpected error")
            return Verdict(False, "sandbox_error", None)

    try:
        _setup(isolation)  # probe once, before the threads start
    except Exception:
        log.exception("sandbox: setup failed")
    verdicts: list = [None] * len(responses)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        firsts = [indices[0] for indices in groups.values()]
        for indices, verdict in zip(groups.values(), pool.map(one, firsts)):
            for i in indices:
                verdicts[i] = verdict
    return verdicts


# ----------------------------------------------------------------------------------------------------------
# Child side. These functions run inside the sandbox: their source is shipped to the child and executed
# in a private globals dict, with its own copy of the builtins. Stdlib only; no module-level state. After
# the candidate has run, harness code only uses locals, default arguments bound before the candidate ran,
# and its private globals, so patching builtins or modules cannot change what the harness reports.


def _child_main(spec, results_fd):
    """Runs in process O (as root when the parent is root). Returns only in D, the candidate's process."""
    nonce = spec.pop("nonce")
    isolation = _child_isolate(spec["isolate"])
    _child_report(results_fd, nonce, "setup", "ok", json.dumps(isolation))
    if spec["mode"] == "stdio":
        del nonce
        _child_stdio(spec["program"])
    else:
        _child_tests(spec, nonce, results_fd)


def _child_isolate(iso):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries stay inert
    root = os.geteuid() == 0
    got = {"netns": False, "mntns": False, "pidns": False, "userns": False, "hidden": []}
    if iso["namespaces"]:
        got.update(_child_unshare(libc, root))
    if got["mntns"]:
        hidden = _child_mounts(libc, iso)
        got["mntns"], got["hidden"] = hidden is not None, hidden or []
    signal.signal(signal.SIGTERM, lambda *_: (_child_kill_children(), os._exit(143)))  # the parent's stop
    if got["pidns"]:
        c = os.fork()  # C becomes PID 1 of the new PID namespace
        if c:
            os._exit(_child_exit_code(os.waitpid(c, 0)[1]))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: O killed -> C dies -> the namespace dies
        if got["mntns"] and libc.unshare(0x20000) == 0:  # own mount ns, so O keeps the host's /proc
            libc.mount(b"proc", b"/proc", b"proc", 2 | 4 | 8, None)
    else:
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: D's orphans come back to us
    d = os.fork()
    if d:
        status = _child_reap_until(d)
        if not got["pidns"]:
            _child_kill_children()
        os._exit(_child_exit_code(status))
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _child_limit_and_drop(iso, libc, root)
    got["uid"] = os.getuid()
    got["python"] = sys.executable
    return got


def _child_unshare(libc, root):
    newns, newnet, newpid, newuser = 0x20000, 0x40000000, 0x20000000, 0x10000000
    if not root:  # a user namespace gives an unprivileged user its own network and PID namespaces
        ok = libc.unshare(newuser | newnet | newpid) == 0
        return {"userns": ok, "netns": ok, "pidns": ok}
    if libc.unshare(newns | newnet | newpid) == 0:
        return {"mntns": True, "netns": True, "pidns": True}
    return {name: libc.unshare(flag) == 0 for name, flag in (("mntns", newns), ("netns", newnet), ("pidns", newpid))}


def _child_within(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def _child_mounts(libc, iso):
    """Hide the parent's files and give the candidate private scratch space: the hidden paths, None if / could
    not be made private (then nothing is mounted)."""
    rdonly, nosuid, nodev, noexec, rec, private = 1, 2, 4, 8, 16384, 1 << 18
    if libc.mount(b"none", b"/", None, rec | private, None) != 0:
        return None  # without a private /, our mounts would propagate to the host
    workdir, uid, mb = iso["workdir"], iso["uid"], iso["scratch_mb"]
    keep = [os.path.dirname(os.__file__), os.path.realpath(sys.executable), sys.base_prefix, sys.exec_prefix]
    hidden = []
    for path in iso["hide"]:
        if (os.path.isdir(path) and not any(_child_within(k, path) for k in keep + [workdir])
                and libc.mount(b"tmpfs", path.encode(), b"tmpfs", rdonly | nosuid | nodev | noexec, b"size=4k,mode=000") == 0):
            hidden.append(path)
    for path in iso["scratch"]:
        if os.path.isdir(path) and not any(_child_within(k, path) for k in keep):
            libc.mount(b"tmpfs", path.encode(), b"tmpfs", nosuid | nodev, f"size={mb}m,mode=1777".encode())
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    if libc.mount(b"tmpfs", workdir.encode(), b"tmpfs", nosuid | nodev, f"size={mb}m,mode=700{owner}".encode()) == 0:
        os.chdir(workdir)
    return hidden


def _child_exit_code(status):
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _child_reap_until(pid):
    """Reap children (orphans adopted meanwhile too) until `pid` exits; its wait status."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        if reaped == pid:
            return status


def _child_kill_children():
    """SIGKILL and reap every child of this process, again and again while orphans keep being adopted."""
    me = str(os.getpid())
    for _ in range(10000):
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        os.kill(int(pid), signal.SIGKILL)
            except (OSError, IndexError, ValueError):
                pass
        try:
            os.waitpid(-1, 0)
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return


def _child_limit_and_drop(iso, libc, root):
    """In D: rlimits, then the uid drop, then prove it cannot be undone."""
    processes = iso["processes"]
    if not root:  # RLIMIT_NPROC counts all processes of the user: leave room for the ones it already has
        processes += sum(1 for p in os.listdir("/proc") if p.isdigit() and os.stat(f"/proc/{p}").st_uid == os.getuid())
    mb = 1 << 20
    for res, soft, hard in ((resource.RLIMIT_AS, iso["memory_mb"] * mb, iso["memory_mb"] * mb),
                            (resource.RLIMIT_CPU, iso["cpu_s"], iso["cpu_s"] + 1),
                            (resource.RLIMIT_FSIZE, iso["output_bytes"], iso["output_bytes"]),
                            (resource.RLIMIT_NOFILE, iso["open_files"], iso["open_files"]),
                            (resource.RLIMIT_CORE, 0, 0),
                            (resource.RLIMIT_NPROC, processes, processes)):
        resource.setrlimit(res, (soft, hard))
    uid = iso["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            os._exit(70)
        if os.getresuid() != (uid, uid, uid) or os.getgroups():
            os._exit(70)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no ptrace or /proc/<pid>/mem from other processes


def _child_report(fd, nonce, index, status, payload="null", _write=os.write):
    # Nothing the candidate could have patched touches the nonce: an f-string of exact strs (never `+`, which
    # would hand the nonce to a str subclass's __radd__), str.encode, and os.write bound before it ran.
    _write(fd, f"{nonce} {index} {status} {payload}\n".encode())


def _child_stdio(program):
    sys.argv = ["candidate.py"]
    code = compile(program, "candidate.py", "exec")
    exec(code, {"__name__": "__main__", "__builtins__": builtins})  # noqa: S102 (running it is the point)


def _child_audit(event, args, _blocked=frozenset((
        "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
        "sys.addaudithook", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__")),
        _frames=frozenset(("tb_frame", "gi_frame", "cr_frame", "ag_frame")), _fspath=os.fspath):
    # ValueError: what stdlib callers of sys._getframe (namedtuple, enum, typing) already catch.
    if event in _blocked or event[:7] == "ctypes.":
        raise ValueError("blocked by the sandbox: " + event)
    if event == "object.__getattr__" and args[1] in _frames:
        raise ValueError("blocked by the sandbox: " + args[1])
    if event == "open" and args[0] is not None and type(args[0]) is not int:
        path = _fspath(args[0])
        name = path.rsplit(b"/" if type(path) is bytes else "/", 1)[-1]
        if name == "mem" or name == b"mem":
            raise ValueError("blocked by the sandbox: open mem")


def _child_tests(spec, nonce, fd, _getpid=os.getpid, _exit=os._exit, _dumps=json.dumps, _loads=json.loads):
    """Run the program, then each test; one nonce-tagged line per step. Never returns."""
    import ast
    literal_eval = ast.literal_eval
    pristine = dict(builtins.__dict__)
    pid = _getpid()
    ep, limit, fail_fast = spec["entry_point"], spec["time_limit"], spec["fail_fast"]
    signal.signal(signal.SIGALRM, signal.default_int_handler)  # a builtin handler: exposes no harness function
    sys.addaudithook(_child_audit)
    ns = {"__name__": "candidate", "__builtins__": builtins}
    code = spec.pop("program")
    status, value = _child_attempt(lambda: exec(compile(code, "candidate.py", "exec"), ns), limit)  # noqa: S102
    if _getpid() != pid:
        _exit(1)
    _child_report(fd, nonce, "load", status, _dumps(value))
    if status != "ok":
        _exit(0)
    for i, test in enumerate(spec["tests"]):
        fn = ns.get(ep)
        if "code" in test:
            test_ns = dict(ns)
            for name in pristine:  # the candidate cannot shadow a builtin the test uses
                test_ns.pop(name, None)
            test_ns["__builtins__"] = dict(pristine)
            if callable(fn):
                test_ns[ep] = _child_checked(fn, pid)
            run = lambda src=test["code"], name=f"<test {i}>", g=test_ns: exec(compile(src, name, "exec"), g)  # noqa: S102
            status, value = _child_attempt(run, limit)
            payload = "null"
        else:
            if "args" in test:
                args, kwargs = _loads(test["args"]), _loads(test["kwargs"])
            else:
                args, kwargs = literal_eval(test["args_literal"]), literal_eval(test["kwargs_literal"])
            status, value = _child_attempt(lambda fn=fn, a=args, k=kwargs: _encode(fn(*a, **k)), limit)
            try:
                payload = _dumps(value)
            except (TypeError, ValueError, RecursionError):
                payload = '{"__unplain__": "unencodable"}'
        if _getpid() != pid:  # a forked copy of the harness never reports
            _exit(1)
        _child_report(fd, nonce, f"{i}", status, payload)
        if status != "ok" and fail_fast:
            _exit(0)
    _child_report(fd, nonce, "done", "ok")
    _exit(0)


def _child_attempt(call, limit, _setitimer=signal.setitimer, _real=signal.ITIMER_REAL):
    """(status, value): ok / fail (AssertionError) / timeout (SIGALRM) / syntax / error (exception type name)."""
    try:
        _setitimer(_real, limit)
        try:
            value = call()
        finally:
            _setitimer(_real, 0)
    except AssertionError:
        return "fail", None
    except KeyboardInterrupt:
        return "timeout", None
    except SyntaxError:
        return "syntax", None
    except BaseException as e:  # noqa: BLE001 (SystemExit too: exiting is not passing)
        return "error", type(e).__name__
    return "ok", value


def _child_checked(fn, pid, _getpid=os.getpid, _exit=os._exit):
    """entry_point as raw test code sees it: every return value becomes a fresh plain value."""
    def candidate(*args, **kwargs):
        value = fn(*args, **kwargs)
        if _getpid() != pid:  # forked inside the candidate: this copy must not learn the test's outcome
            _exit(1)
        return _child_plain(value)
    return candidate


def _child_plain(value, depth=0):
    t = type(value)
    if value is None or t is bool or t is int or t is float or t is complex or t is str or t is bytes:
        return value
    if depth > 100:
        raise TypeError("sandbox: return value nested too deeply")
    if t is list:
        return [_child_plain(v, depth + 1) for v in value]
    if t is tuple:
        return tuple([_child_plain(v, depth + 1) for v in value])
    if t is dict:
        return {_child_plain(k, depth + 1): _child_plain(v, depth + 1) for k, v in value.items()}
    if t is set or t is frozenset:
        return t([_child_plain(v, depth + 1) for v in value])
    raise TypeError("sandbox: the entry point returned a non-plain " + t.__name__)


_CHILD_FUNCTIONS = (_encode, _child_main, _child_isolate, _child_unshare, _child_within, _child_mounts,
                    _child_exit_code, _child_reap_until, _child_kill_children, _child_limit_and_drop,
                    _child_report, _child_stdio, _child_audit, _child_tests, _child_attempt, _child_checked,
                    _child_plain)
