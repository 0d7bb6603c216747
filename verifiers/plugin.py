"""--reward SPEC: a user's callable replaces the task's verifier, for training and evaluation alike.

SPEC is `pkg.module:function` (imported as `python -m` would: the working directory first on sys.path) or
`path/to/file.py:function` (relative to the working directory or absolute; its folder goes on sys.path, as for
a script). The contract: `function(response: str, example: tasks.Example) -> bool | Verdict`; True/1 is
Verdict(True, "correct"), False/0 is Verdict(False, "mismatch"); a Verdict's `correct` must be a bool, its
`reason` a str, its `extracted` and `detail` a str or None. Each call has `timeout_s` (--reward-timeout).
A reward that raises, hangs, returns anything else or kills its process is a RewardError (a SystemExit: one
line naming the spec, the row of the batch, the response and what went wrong), never a silent r = 0.

`load(spec)` imports the callable in this process first, so a bad spec fails at start-up. `Reward.verdicts`
runs the calls in worker processes, started on first use and reused; each imports the spec itself, gets the
examples pickled, in chunks, and answers row by row. A call's budget is kept twice: SIGALRM in the worker
(ITIMER_REAL interrupts a pure-Python loop or sleep), and a deadline in the parent, GRACE_S later, at which
the workers' process groups are killed (C code that never returns to Python ignores the signal).

Nothing a reward starts outlives its verdict: a worker gets SIGKILL when the thread that started it ends
(PR_SET_PDEATHSIG: a trainer killed by the OOM killer or a scheduler takes its workers with it, even one inside
a C call that holds the GIL, where no watching thread could run), and a CPU limit that a call within its budget
never reaches, as the backstop (verifiers/lifetime.py, `_cpu_backstop`).

Hand-written, because the standard library has no per-call budget that ends in a kill: the pools of
concurrent.futures and multiprocessing cannot stop one hung call (a result's timeout only stops the wait), and
their "spawn"/"forkserver" workers re-import the parent's __main__ (train.py, hence torch) in every worker; a
pool that can kill (pebble) would be a new dependency for what is a hundred lines here. So the workers are
fresh interpreters (`python -c`, as verifiers/sympy_worker.py's is; never a fork of the trainer), each in its
own session, killed with everything they started at close(), on any error, and at exit (weakref.finalize).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections import deque

from verifiers.lifetime import die_with_parent
from verifiers.verdict import Verdict

GRACE_S = 3.0  # the parent's deadline for one row: timeout_s after the worker's last answer, plus this
CPU_MARGIN_S = 10  # RLIMIT_CPU above what a call may use within its wall-clock budget on every core
STARTUP_S = 60.0  # a worker must have imported the spec by then
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder that holds `verifiers`
_WORKER = f"import sys; sys.path.insert(0, {_ROOT!r}); from verifiers.plugin import _worker_main; _worker_main()"
_ALLOWED = "bool, 0 or 1, or a verifiers.verdict.Verdict (correct: bool, reason: str, extracted/detail: str | None)"


class RewardError(SystemExit):
    """What a reward did wrong; a SystemExit, so that train.py ends with this one line."""


class _SpecError(Exception):
    pass


class _Timeout(BaseException):  # BaseException: the user's `except Exception` does not swallow it
    pass


def _import(kind: str, target: str, name: str):
    """The callable a spec names; _SpecError says why there is none."""
    try:
        if kind == "file":
            mod_spec = importlib.util.spec_from_file_location("_reward_" + os.path.basename(target)[:-3], target)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[mod_spec.name] = module  # dataclasses and pickle look the module up there
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ModuleNotFoundError as e:
        if kind == "module" and e.name and (target == e.name or target.startswith(e.name + ".")):
            raise _SpecError(f"no module named {e.name!r} (looked in {os.getcwd()} and sys.path)") from None
        raise _SpecError(f"importing {target} raised ModuleNotFoundError: {e}") from None
    except BaseException as e:  # noqa: BLE001 -- a SystemExit at import time is the spec's problem too
        raise _SpecError(f"importing {target} raised {type(e).__name__}: {e}") from None
    fn = module
    for part in name.split("."):
        if not hasattr(fn, part):
            raise _SpecError(f"{target} has no attribute {name!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise _SpecError(f"{target}:{name} is a {type(fn).__name__}, not callable")
    return fn


def load(spec: str, timeout_s: float = 10.0, workers: int | None = None) -> Reward:
    """The Reward that SPEC names, validated here; SystemExit("--reward SPEC: ...") when it names none."""
    target, colon, name = spec.rpartition(":")
    if not colon or not target or not name:
        raise SystemExit(f"--reward {spec}: expected module:function or path/to/file.py:function")
    if not timeout_s > 0:
        raise SystemExit(f"--reward-timeout {timeout_s}: must be > 0")
    cwd, kind = os.getcwd(), "module"
    if target.endswith(".py") or "/" in target or os.sep in target:
        kind, target = "file", os.path.abspath(target)
        if not os.path.isfile(target):
            raise SystemExit(f"--reward {spec}: no such file {target}")
    first = os.path.dirname(target) if kind == "file" else cwd
    path = [first] + [p for p in sys.path if p != first] + ([_ROOT] if _ROOT not in sys.path else [])
    saved = sys.path[:]
    sys.path[:] = path
    try:
        fn = _import(kind, target, name)
    except _SpecError as e:
        raise SystemExit(f"--reward {spec}: {e}") from None
    finally:
        sys.path[:] = saved
    try:
        inspect.signature(fn).bind("response", None)
    except TypeError:
        raise SystemExit(f"--reward {spec}: {name}{inspect.signature(fn)} cannot be called as "
                         f"{name}(response, example)") from None
    except ValueError:
        pass  # a builtin without a signature: its first call tells
    n = workers or min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    return Reward(spec, (kind, target, name), timeout_s, n, path, cwd)


def _frame(obj) -> bytes:
    data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    return struct.pack(">Q", len(data)) + data


def _kill(procs: list, owner: int) -> None:
    """Kill the workers' process groups and reap them (only from the process that started them)."""
    while procs and os.getpid() == owner:
        proc = procs.pop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its group: what the reward started too (not reaped yet: no reuse)
        proc.wait()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        proc.stdout.close()


class Reward:
    """A loaded --reward: `verdicts(responses, examples)`, then `close()` (also done at exit)."""

    def __init__(self, spec: str, target: tuple, timeout_s: float, workers: int, sys_path: list, cwd: str):
        self.spec, self.target, self.timeout_s, self.workers = spec, target, timeout_s, workers
        self._path, self._cwd, self._owner = sys_path, cwd, os.getpid()
        self._procs: list[subprocess.Popen] = []
        self._starter: threading.Thread | None = None  # the thread whose end kills the workers (lifetime.py)
        self._questions: list = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _kill, self._procs, self._owner)

    def close(self) -> None:
        _kill(self._procs, self._owner)

    def _error(self, i: int, response: str, what: str) -> RewardError:
        self.close()
        shown = response[:80] + ("..." if len(response) > 80 else "")
        question, row = self._questions[i] if i < len(self._questions) else (None, None)
        asked = f"question {question[:60] + ('...' if len(question) > 60 else '')!r}, " if isinstance(question, str) else ""
        where = f"dataset row {row}, " if isinstance(row, int) else ""  # a local file's line, a Hub split's index
        return RewardError(f"--reward {self.spec}: row {i} of the batch ({where}{asked}response {shown!r}): {what}")

    def _start(self) -> None:
        init = _frame({"target": self.target, "sys_path": self._path, "parent": os.getpid(),
                       "timeout_s": self.timeout_s, "grace_s": GRACE_S})
        self._starter = threading.current_thread()
        for _ in range(self.workers):
            proc = subprocess.Popen([sys.executable, "-c", _WORKER], cwd=self._cwd, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, start_new_session=True)
            proc.buf, proc.rows, proc.since = bytearray(), deque(), 0.0
            self._procs.append(proc)
            proc.stdin.write(init)
            proc.stdin.flush()
        deadline = time.monotonic() + STARTUP_S
        for proc in self._procs:
            try:
                while not (got := self._read(proc)):
                    if not select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                        got = [("fail", f"it was not ready within {STARTUP_S:g} s")]
            except EOFError:
                got = [("fail", f"it exited with code {proc.wait()} while starting")]
            if got[0][0] != "ready":
                self.close()
                raise RewardError(f"--reward {self.spec}: a worker process could not import it: {got[0][1]}")

    def _read(self, proc) -> list:
        """The frames the worker has sent so far; EOFError when it is gone."""
        if select.select([proc.stdout], [], [], 0)[0]:
            chunk = os.read(proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise EOFError
            proc.buf += chunk
        frames = []
        while len(proc.buf) >= 8 and len(proc.buf) >= 8 + (size := struct.unpack(">Q", proc.buf[:8])[0]):
            frames.append(pickle.loads(bytes(proc.buf[8:8 + size])))
            del proc.buf[:8 + size]
        return frames

    def verdicts(self, responses: list[str], examples: list) -> list[Verdict]:
        """The user's verdict on each (response, example), in order; RewardError when there is none."""
        if len(responses) != len(examples):
            raise ValueError(f"{len(responses)} responses but {len(examples)} examples")
        with self._lock:
            self._questions = [(getattr(ex, "question", None), getattr(ex, "meta", {}).get("row"))  # what an
                               for ex in examples]  # error names
            if os.getpid() != self._owner:  # a forked child: the workers are its parent's
                self._procs, self._owner = [], os.getpid()
                self._finalizer = weakref.finalize(self, _kill, self._procs, self._owner)
            blobs = []
            for i, ex in enumerate(examples):
                try:
                    blobs.append(pickle.dumps(ex, pickle.HIGHEST_PROTOCOL))
                except Exception as e:  # noqa: BLE001
                    raise self._error(i, responses[i], "the example cannot be sent to the worker processes "
                                      f"(pickling it raised {type(e).__name__}: {e})") from None
            try:
                return self._run(responses, blobs) if responses else []
            except BaseException:
                self.close()  # rows still in flight must not answer the next call
                raise

    def _run(self, responses: list[str], blobs: list[bytes]) -> list[Verdict]:
        # The workers die with the thread that started them (PR_SET_PDEATHSIG follows the forking thread, not
        # the process): a call from another thread starts its own, so that no thread's end can kill them while
        # they answer; the trainer calls from its main thread only, so it starts them once.
        if (not self._procs or self._starter is not threading.current_thread()
                or any(p.poll() is not None for p in self._procs)):  # or a worker died while idle
            self.close()
            self._start()
        n = len(responses)
        size = max(1, min(64, math.ceil(n / (4 * len(self._procs)))))
        todo, out = deque(range(0, n, size)), [None] * n
        while todo or any(p.rows for p in self._procs):
            for proc in self._procs:
                if not proc.rows and todo:
                    rows = range(start := todo.popleft(), min(start + size, n))
                    proc.stdin.write(_frame([(i, responses[i], blobs[i]) for i in rows]))
                    proc.stdin.flush()
                    proc.rows, proc.since = deque(rows), time.monotonic()
            busy = [p for p in self._procs if p.rows]
            wait = min(p.since for p in busy) + self.timeout_s + GRACE_S - time.monotonic()
            select.select([p.stdout for p in busy], [], [], max(0.0, wait))
            for proc in busy:
                try:
                    frames = self._read(proc)
                except EOFError:
                    raise self._error(proc.rows[0], responses[proc.rows[0]], f"its worker process died (exit code "
                                      f"{proc.wait()}) while {self.target[2]} ran") from None
                for i, kind, value in frames:
                    proc.rows.popleft()
                    proc.since = time.monotonic()
                    if kind != "ok":
                        raise self._error(i, responses[i], value)
                    out[i] = value
                if proc.rows and time.monotonic() > proc.since + self.timeout_s + GRACE_S:
                    i = proc.rows[0]
                    raise self._error(i, responses[i], f"no verdict within {self.timeout_s:g} s (--reward-timeout); "
                                      "the call ignored the time-limit signal: its worker was killed")
        return out


# ------------------------------------------------------------------------------------ the worker process

def _worker_main() -> None:
    proto = os.fdopen(os.dup(1), "wb")  # the replies; the user's prints go to stderr, not into them
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def read():
        head = sys.stdin.buffer.read(8)
        return pickle.loads(sys.stdin.buffer.read(struct.unpack(">Q", head)[0])) if len(head) == 8 else None

    def send(obj) -> None:
        proto.write(_frame(obj))
        proto.flush()

    init = read()
    die_with_parent(init["parent"])
    sys.path[:] = init["sys_path"]
    try:
        fn = _import(*init["target"])
    except _SpecError as e:
        return send(("fail", str(e)))
    signal.signal(signal.SIGALRM, _on_alarm)
    send(("ready",))
    while (batch := read()) is not None:  # EOF: the parent closed the pipe
        for i, response, blob in batch:
            _cpu_backstop(init["timeout_s"] + init["grace_s"])
            send((i, *_call(fn, init["target"][2], response, blob, init["timeout_s"])))


def _on_alarm(signum, frame):
    raise _Timeout()


def _cpu_backstop(budget_s: float) -> None:
    """RLIMIT_CPU at the CPU used so far plus what a call can use in `budget_s` seconds of wall clock with a
    thread on every core, and a margin: only a worker orphaned in C work (its death signal missed) reaches it,
    and SIGXCPU ends it."""
    import resource

    used = resource.getrusage(resource.RUSAGE_SELF)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    soft = math.ceil(used.ru_utime + used.ru_stime + budget_s * cores) + CPU_MARGIN_S
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _call(fn, name: str, response: str, blob: bytes, timeout_s: float) -> tuple:
    """("ok", Verdict) or ("error", what went wrong) for one row."""
    try:
        example = pickle.loads(blob)
    except Exception as e:  # noqa: BLE001
        return "error", f"the worker process cannot unpickle the example ({type(e).__name__}: {e})"
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            value = fn(response, example)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return "error", f"no verdict within {timeout_s:g} s (--reward-timeout)"
    except BaseException as e:  # noqa: BLE001 -- sys.exit() in a reward is a raise too
        last = traceback.extract_tb(e.__traceback__)[-1]
        return "error", f"{name} raised {type(e).__name__}: {e} (at {last.filename}:{last.lineno})"
    if type(value) is bool or (type(value) is int and value in (0, 1)):
        return "ok", Verdict(bool(value), "correct" if value else "mismatch")
    if (isinstance(value, Verdict) and type(value.correct) is bool and isinstance(value.reason, str)
            and all(x is None or isinstance(x, str) for x in (value.extracted, value.detail))):
        return "ok", Verdict(value.correct, value.reason, value.extracted, value.detail)
    try:
        shown = repr(value)[:120]
    except Exception:  # noqa: BLE001
        shown = "an object whose repr() raises"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    return "error", f"{name} returned {shown} ({kind}); allowed: {_ALLOWED}"
