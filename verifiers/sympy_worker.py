"""What only sympy decides, in a worker process under a hard time limit, and the parent's side of that worker.

The trainer's process never imports sympy: a parse or a simplify can run unbounded in C, which only a kill
stops, and the trainer has torch threads, so the worker is a fresh interpreter (`python -c`, never a bare
fork). Three parts:
  * `ask(a, b, deadline)`, in the parent: a normalised pair that the in-process comparison could not decide
    goes to the one worker, started on first use and reused; its reason, or `timeout` at the deadline, when
    the worker's process group is killed and reaped (this stops what signals cannot: long big-integer work in
    C). A worker still starting at the deadline is kept for the next call. One worker serves every thread, one
    request at a time behind a lock that a thread waits for only until its own deadline: the trainer checks
    its responses one after another (verify.rewards), so nothing would use a second one. A worker that cannot
    serve is `verifier_error`, never a silent 0: it exited before it was ready (a broken install), was not
    ready within STARTUP_S, or died twice on one request; `last_failure()` says why in one line, from the
    worker's stderr (kept in a file). `probe()` asks once, for the trainer to call before the model loads.
  * `_worker_main`, the worker: one JSON request per line on stdin, one JSON reply per line out; a soft limit
    per request (SYMPY_TIME_LIMIT_S, SIGALRM: it answers `timeout` and lives on), a CPU backstop, an address
    space of WORKER_MEMORY_BYTES, and SIGKILL when its parent goes (verifiers/lifetime.py).
  * `_sympy_compare`, in the worker: latex2sympy2_extended (math-verify's parser; ANTLR, a few ms per
    expression) reads both sides, decimals made exact first, after the size guards (math_compare._guard);
    then exact rational comparison, `simplify(a - b) == 0`, else numerically at 30 digits (REL_TOL);
    variables at three arbitrary points; matrices element-wise; equations match up to a non-zero factor,
    inequalities a positive one. Parses are cached. Plain text never reaches `sympy.sympify` (it calls `eval`).
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time

from verifiers.lifetime import die_with_parent
from verifiers.math_compare import DECIMAL_REL_TOL, MAX_PARTS, MAX_SYMPY_CHARS, _close, _compare, _guard, _Refused

SYMPY_TIME_LIMIT_S = 2.0  # soft limit per request, inside the worker: it answers `timeout` and lives on
WORKER_MEMORY_BYTES = 2 << 30  # RLIMIT_AS of the worker
WORKER_CPU_BACKSTOP_S = 30  # RLIMIT_CPU margin per request: kills a worker orphaned in C big-integer work
STARTUP_S = 60.0  # a worker not ready by then (over however many calls) is a verifier_error
MAX_REQUEST_CHARS = 2 * MAX_PARTS * MAX_SYMPY_CHARS  # the most that is sent to the worker
REL_TOL = 1e-9  # numeric check of expressions sympy cannot simplify to equal (no decimals on either side)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the folder that holds the `verifiers` package
_PROBE = ("x (x+1)", "x^2 + x")  # equal only to sympy: the worker's self-check at start, and probe()'s question


# ----------------------------------------------------------------------------------------------------------
# Sympy (imported and run only inside the worker process)


class _Timeout(BaseException):  # BaseException: sympy's own `except Exception` must not swallow it
    pass


def _paren_groups(s: str) -> str:
    """Plain-text `sqrt(x)` -> `\\sqrt{x}`, `2^(1/4)` -> `2^{(1/4)}`: latex2sympy reads neither (s*q*r*t(x))."""
    while True:
        m = re.search(r"(?<![\\A-Za-z])sqrt\s*\(|\^\s*\(", s)
        if not m:
            return s
        depth, j = 1, m.end()
        while j < len(s) and depth:
            depth += {"(": 1, ")": -1}.get(s[j], 0)
            j += 1
        if depth:
            raise _Refused("parse_error", "unbalanced (")
        inner = s[m.end() : j - 1]
        s = s[: m.start()] + ("^{(" + inner + ")}" if m.group(0)[0] == "^" else "\\sqrt{" + inner + "}") + s[j:]


def _to_latex_for_sympy(s: str) -> str:
    """What latex2sympy would read otherwise than a grader means: `**`, `sqrt(2)`, `2.5e-4`, and decimals
    (made exact fractions: a decimal is the number it writes, never a float)."""
    s = _paren_groups(s.replace("**", "^")).replace("{smallmatrix}", "{matrix}").replace("{Bmatrix}", "{pmatrix}")
    s = re.sub(r"(?<![A-Za-z\d.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![A-Za-z\d])", r"\1 \\times 10^{\2}", s)

    def exact_decimal(m: re.Match) -> str:
        whole, frac = m.group(1), m.group(2)
        return f"(\\frac{{{int(whole + frac)}}}{{1{'0' * len(frac)}}})"  # parenthesised: `4.5\pi` is a product

    return re.sub(r"(?<![\d.])(\d*)\.(\d+)", exact_decimal, s)


def _to_sympy(s: str):
    _guard(s)
    latex = _to_latex_for_sympy(s)
    _guard(latex)
    return _parse(latex)


@functools.lru_cache(maxsize=4096)
def _parse(latex: str):
    """sympy expression for `latex`, evaluated (`2^{100}` becomes an Integer, so exact comparison applies).
    Cached: during training every sample of a question repeats its gold, and many repeat an answer."""
    import sympy
    from latex2sympy2_extended.latex2sympy2 import ConversionConfig, latex2sympy

    expr = latex2sympy(latex, normalization_config=None, conversion_config=ConversionConfig(lowercase_symbols=False))
    if isinstance(expr, sympy.MatrixBase):
        expr = sympy.ImmutableMatrix(expr)
    if not isinstance(expr, sympy.Basic):
        raise TypeError(f"not an expression: {type(expr).__name__}")
    expr = expr.doit()
    subs = {sym: sympy.I for sym in expr.free_symbols if getattr(sym, "name", None) == "i"}
    return expr.xreplace(subs) if subs else expr


def _numeric_value(expr, subs=None):
    """A sympy Float/complex at 30 digits (arbitrary exponent range: 1/2004! does not underflow)."""
    import sympy

    try:
        value = expr.evalf(30, subs=subs)
    except Exception:  # noqa: BLE001 -- any failure to evaluate means "no numeric value"
        return None
    if not value.is_number or value.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
        return None
    return value


def _expr_equal(a, b, decimal: bool = False) -> bool:
    """Equal as values. With a `decimal` on a side, numbers agree to DECIMAL_REL_TOL, rational or not."""
    import sympy

    if isinstance(a, sympy.MatrixBase) or isinstance(b, sympy.MatrixBase):  # same shape, element by element
        return getattr(a, "shape", 0) == getattr(b, "shape", 1) and all(_expr_equal(x, y, decimal) for x, y in zip(a, b))
    if isinstance(a, sympy.Rel) or isinstance(b, sympy.Rel):
        return _relation_equal(a, b)
    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return a == b
    if a.has(sympy.zoo, sympy.nan) or b.has(sympy.zoo, sympy.nan):
        return False  # `1:00` and `12:00` both read 1/0: undefined is equal to nothing
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return decimal and _close(a, b, DECIMAL_REL_TOL)  # else 1/2004! is not 1/2006!, however close
    diff = a - b
    if diff == 0 or sympy.simplify(diff) == 0:
        return True
    tol = DECIMAL_REL_TOL if decimal else REL_TOL
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        va, vb = _numeric_value(a), _numeric_value(b)
        return va is not None and vb is not None and _close(va, vb, tol)
    for point in (0.5377, 1.8339, -2.2588):  # numeric check at a few arbitrary points
        subs = {sym: sympy.Rational(str(point)) + sympy.Rational(31, 100) * k for k, sym in enumerate(symbols)}
        va, vb = _numeric_value(a, subs), _numeric_value(b, subs)
        if va is None or vb is None or not _close(va, vb, tol):
            return False
    return True


def _constant_ratio(da, db, positive: bool) -> bool:
    """True if da == c * db for a number c != 0 (c > 0 when `positive`)."""
    import sympy

    if db == 0:
        return da == 0
    ratio = sympy.simplify(da / db)
    if ratio.free_symbols or not ratio.is_number or ratio.has(sympy.nan, sympy.zoo):
        return False
    return bool(ratio > 0) if positive else bool(ratio != 0)


def _relation_equal(a, b) -> bool:
    """Equations equal up to a non-zero factor; inequalities up to a positive one, `>` flipped to `<`."""
    import sympy

    if not (isinstance(a, sympy.Rel) and isinstance(b, sympy.Rel)):
        return False
    if isinstance(a, (sympy.Gt, sympy.Ge)):
        a = a.reversed
    if isinstance(b, (sympy.Gt, sympy.Ge)):
        b = b.reversed
    if type(a) is not type(b):
        return False
    da, db = a.lhs - a.rhs, b.lhs - b.rhs
    return _constant_ratio(da, db, positive=not isinstance(a, (sympy.Eq, sympy.Ne)))


def _sympy_compare(a: str, b: str, decimal: bool) -> str:
    try:
        eb = _to_sympy(b)
        ea = _to_sympy(a)
    except _Refused:
        raise
    except Exception:  # noqa: BLE001 -- the parser raises many types; all mean "cannot read this"
        return "parse_error"
    return "correct" if _expr_equal(ea, eb, decimal) else "mismatch"


# ----------------------------------------------------------------------------------------------------------
# The worker process, and its parent side


def _worker_main(parent: int) -> None:
    """Body of a worker process: one JSON request per line on stdin, one JSON reply per line out.
    Started by `_Worker` as `python -c "from verifiers.sympy_worker import _worker_main; _worker_main(PARENT)"`."""
    import resource

    die_with_parent(parent)  # first: a parent killed during the imports below takes this worker too
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # a library's stray print must not corrupt the protocol
    try:
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ValueError, OSError):
        pass  # a lower limit already in force, or one this OS does not support
    # Import sympy and the parser now, not per request, outside _sympy_compare's `except`: a broken install (a
    # module missing, an ANTLR runtime of another version) ends the worker with its traceback on stderr, which
    # the parent reports (verifier_error), instead of answering parse_error to every request.
    if not _expr_equal(_to_sympy(_PROBE[0]), _to_sympy(_PROBE[1])):
        sys.exit(f"sympy finds {_PROBE[0]} and {_PROBE[1]} unequal: this sympy cannot grade")
    replies.write(b'{"ready": true}\n')
    replies.flush()
    for line in iter(sys.stdin.buffer.readline, b""):  # EOF: the parent closed the pipe or died
        reason = _serve(line)
        replies.write(json.dumps({"reason": reason}).encode() + b"\n")
        replies.flush()
        if reason == "memory":
            os._exit(1)  # memory may be fragmented or caches half built: let the parent start a new one


def _serve(line: bytes) -> str:
    """One request in the worker: the soft time limit (SIGALRM) and a CPU backstop around `_compare`."""
    import resource

    try:
        request = json.loads(line)
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime) + WORKER_CPU_BACKSTOP_S
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))  # SIGXCPU ends us if orphaned in C work

        def on_alarm(signum, frame):
            raise _Timeout()

        signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, float(request["limit"]))
        try:
            return _compare(request["a"], request["b"], _sympy_compare)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return "timeout"
    except _Refused as refused:
        return refused.reason
    except MemoryError:
        return "memory"
    except Exception:  # noqa: BLE001 -- one bad request must not end the worker
        return "parse_error"


class _Worker:
    """Parent side of one worker process. Used by one thread at a time (under `_LOCK`)."""

    def __init__(self):
        self.stderr = tempfile.TemporaryFile()  # its traceback, for a failure's cause (a pipe unread could fill)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", f"from verifiers.sympy_worker import _worker_main; _worker_main({os.getpid()})"],
                cwd=_ROOT,  # `python -c` puts the working directory first on sys.path: there it finds `verifiers`
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                start_new_session=True,  # its own process group, to kill it whole; Ctrl-C goes to us only
            )
        except BaseException:
            self.stderr.close()
            raise
        # Its death signal comes when this thread ends (PR_SET_PDEATHSIG follows the thread that forked it).
        self.thread = threading.current_thread()
        self.since = time.monotonic()
        self._buffer = b""
        self.ready = False

    def _read_line(self, deadline: float) -> bytes | None:
        """One line from the worker, None at the deadline; EOFError if the worker died."""
        fd = self.proc.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP)
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("worker exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def start(self, deadline: float) -> bool:
        """True once the worker is ready; False if it is still starting at the deadline (it keeps starting)."""
        if not self.ready:
            self.ready = self._read_line(deadline) is not None
        return self.ready

    def ask(self, a: str, b: str, deadline: float) -> str | None:
        """The worker's reason for (a, b); None if it missed the deadline."""
        soft = min(SYMPY_TIME_LIMIT_S, max(0.05, deadline - time.monotonic() - 0.25))  # answer before the kill
        request = json.dumps({"a": a, "b": b, "limit": soft}).encode() + b"\n"
        self.proc.stdin.write(request)  # small: the pipe buffer takes it without blocking
        self.proc.stdin.flush()
        line = self._read_line(deadline)
        return None if line is None else json.loads(line)["reason"]

    def last_line(self) -> str:
        """The last line the worker wrote to stderr (a traceback's names the exception), "" if none."""
        fd = self.stderr.fileno()
        size = os.fstat(fd).st_size
        tail = os.pread(fd, 4096, max(0, size - 4096))  # pread: the worker shares the file's offset
        lines = tail.decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""

    def failure(self, when: str) -> str:
        """How the worker ended, `when`, and its last line on stderr: `exited with code 1 before it was ready:
        ModuleNotFoundError: ...`. Called once its stdout is closed, when it is ending anyway."""
        last = self.last_line()
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:  # its pipe broke, yet it runs
            self.kill()
            code = self.proc.returncode
        try:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        except ValueError:
            how = f"was killed by signal {-code}"
        return f"{how} {when}" + (f": {last}" if last else "")

    def kill(self) -> None:
        """Kill the worker's process group and reap it: nothing survives a timeout."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                pipe.close()
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------------------
# The one worker, shared by every thread of the parent


_LOCK = threading.Lock()  # held for a whole request: the worker answers one at a time
_worker: _Worker | None = None  # started on first use; replaced when it dies or is killed
_last_failure: str | None = None  # the cause of the last verifier_error


def ask(a: str, b: str, deadline: float) -> str:
    """The worker's reason for normalised (a, b) by `deadline`: `timeout` when it runs out (the worker is then
    killed), also while another thread's request holds the worker past it; `verifier_error` when the worker
    cannot serve (last_failure() says why)."""
    global _last_failure
    if len(a) + len(b) > MAX_REQUEST_CHARS:
        return "timeout"  # elements the parent has not looked at yet may be huge
    lock = _LOCK
    if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        return "timeout"
    try:
        reason, cause = _ask_once(a, b, deadline)
        if reason == "died":  # killed from outside (the OOM killer), or with the thread that started it: once more
            reason, cause = _ask_once(a, b, deadline)
            if reason == "died":
                reason, cause = "verifier_error", ("the sympy worker died twice on one request; the second time it "
                                                   + cause)
        if reason == "verifier_error":
            _last_failure = cause
        return reason
    finally:
        lock.release()


def _ask_once(a: str, b: str, deadline: float) -> tuple[str, str | None]:
    """(reason, cause): the worker's reason; `timeout` (the deadline passed: the worker is killed, unless it is
    still starting); `died` (killed while serving: worth one more try), or `verifier_error`, with why."""
    global _worker
    if _worker is not None and (_worker.proc.poll() is not None or not _worker.thread.is_alive()):
        _worker.kill()  # it died idle (the OOM killer), or is dying: the thread that started it has ended
        _worker = None
    if _worker is None:
        try:
            _worker = _Worker()  # started by this thread, which lives until this request is answered
        except OSError as e:
            return "verifier_error", f"the sympy worker could not be started: {e}"
    worker, reason, cause = _worker, None, None
    try:
        if not worker.start(deadline):
            if time.monotonic() - worker.since < STARTUP_S:
                return "timeout", None  # it keeps starting, for the next call
            reason, cause = "verifier_error", (f"the sympy worker was not ready within {STARTUP_S:g} s"
                                               + (f": {last}" if (last := worker.last_line()) else ""))
        else:
            reason = worker.ask(a, b, deadline)
    except (EOFError, OSError, ValueError):
        cause = worker.failure("while it served a request" if worker.ready else "before it was ready")
        reason = "died"  # killed (from outside, or with the thread that started it): worth one more try
        if not worker.ready and worker.proc.returncode >= 0:  # it exited by itself while starting: it would again
            reason, cause = "verifier_error", f"the sympy worker {cause}"
    if reason in (None, "memory", "died", "verifier_error"):  # missed the deadline, out of memory, or dead
        worker.kill()
        _worker = None
    return ("timeout" if reason in (None, "memory") else reason), cause


def probe(timeout_s: float = 60.0) -> str | None:
    """None when the worker (started now if need be) answers a comparison that only sympy decides as `correct`;
    else why not, in one line. For the trainer to call before the model loads: a broken install stops the run
    there, instead of every answer that needs sympy scoring 0."""
    reason = ask(*_PROBE, time.monotonic() + timeout_s)
    if reason == "correct":
        return None
    if reason == "verifier_error":
        return _last_failure
    return f"the sympy worker's verdict on {_PROBE[0]} = {_PROBE[1]} within {timeout_s:g} s was {reason}, not correct"


def last_failure() -> str | None:
    """The one-line cause of the last `verifier_error` of this process (None if there was none): for the message
    that stops a run on one."""
    return _last_failure


def _kill_at_exit() -> None:
    """At exit: kill the worker. One busy with another thread's request is left to its death signal, which comes
    when this process ends."""
    global _worker
    if not _LOCK.acquire(blocking=False):
        return
    try:
        if _worker is not None:
            _worker.kill()
            _worker = None
    finally:
        _LOCK.release()


def _worker_pid() -> int | None:
    """Pid of the worker if one is started (for tests)."""
    worker = _worker
    return None if worker is None else worker.proc.pid


def _forget_after_fork() -> None:
    global _LOCK, _worker
    _LOCK, _worker = threading.Lock(), None  # a forked child must not share our worker (or a lock held at fork time)


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_kill_at_exit)
