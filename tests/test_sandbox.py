"""The sandboxed code verifier: verdicts for each task kind, comparison rules, and adversarial programs.

Every adversarial program must get a non-correct verdict, return well within its budget, and leave no
process behind (checked by scanning /proc for the harness's command-line marker and the sandbox uids), and
no check may log an error (a traceback in the parent is a bug, whatever the candidate did). On Linux a
sandbox that cannot start fails these tests (conftest.require_sandbox); protections that need root or a
namespace are skipped, with the reason, where this machine lacks them.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import random
import socket
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import require_sandbox

import tasks
from verifiers import sandbox, sandbox_runner
from verifiers.sandbox import CODE_REASONS, Isolation, Limits, check_code, check_code_batch

FAST = Limits(time_limit_s=1.0, startup_slack_s=3.0)  # adversarial runs: short limits, generous slack


@pytest.fixture(scope="module")
def info():
    return require_sandbox(sandbox.sandbox_info())


@pytest.fixture(autouse=True)
def no_error_logged(caplog):
    """Whatever the candidate does, the parent never logs a traceback (log.exception: an error in the trainer)."""
    caplog.set_level(logging.WARNING, logger="verifiers")
    yield
    assert [r.getMessage() for r in caplog.records if r.name.startswith("verifiers.sandbox") and r.exc_info] == []


@pytest.mark.slow  # a fresh Isolation: a new scan of / and a probe
def test_a_sandbox_that_cannot_start_fails_on_linux_and_skips_elsewhere():
    broken = sandbox.sandbox_info(Isolation(python="/nonexistent/python3", namespaces=False))
    assert broken["working"] is False
    with pytest.raises(pytest.fail.Exception):
        require_sandbox(broken, platform="linux")
    with pytest.raises(pytest.skip.Exception):
        require_sandbox(broken, platform="darwin")
    assert require_sandbox({"working": True}, platform="linux") == {"working": True}


def _sandbox_processes(info) -> list[str]:
    """Live processes running the harness (its bootstrap names `sdzero_harness`) or owned by a sandbox uid."""
    uids = {str(u) for u in info["uids"]}
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("State", "").strip().startswith("Z"):
            continue
        if b"sdzero_harness" in cmdline or uids & set(fields.get("Uid", "").split()):
            found.append(f"{pid} {cmdline[:80]!r} uid={fields.get('Uid', '').split()}")
    return found


def _checked(info, response, task, limits=FAST, isolation=None, **kwargs):
    """check_code, then the invariants every check keeps: a known reason and nothing left alive (the time budget
    is the code's deadline kill, seen as the reason `timeout` in the tests of hanging programs; no wall clock
    is asserted here)."""
    verdict = check_code(response, task, limits=limits, isolation=isolation, **kwargs)
    assert verdict.reason in CODE_REASONS
    assert _sandbox_processes(info) == []
    return verdict


def stdio(*pairs, **extra):
    return {"kind": "stdio", "tests": [{"input": i, "output": o} for i, o in pairs], **extra}


def call(entry_point, *cases, **extra):
    return {"kind": "call", "entry_point": entry_point,
            "tests": [{"args": list(args), "expected": expected} for args, expected in cases], **extra}


def asserts(entry_point, *tests):
    return {"kind": "assert", "entry_point": entry_point, "tests": list(tests)}


ADD = stdio(("1 2\n", "3\n"), ("10 -4\n", "6\n"))
ADD_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"


# ----------------------------------------------------------------------------------------------------------
# Pure functions: no sandbox


def test_extract_program_takes_the_last_fenced_block():
    assert sandbox.extract_program("text\n```python\nx = 1\n```\nmore\n```\ny = 2\n```\nbye") == "y = 2\n"
    assert sandbox.extract_program("print(1)\n") == "print(1)\n"
    assert sandbox.extract_program("```python\nprint(1)\n") == "print(1)\n"  # unclosed final fence
    assert sandbox.extract_program("```python\n```") == ""


def test_stdio_comparison_rules():
    assert sandbox.stdio_equal("3\r\n4  \r\n\r\n\n", "3\n4")  # CRLF, trailing spaces and blank lines
    assert sandbox.stdio_equal("1   2\n", "1 2\n")  # tokens, not spacing
    assert not sandbox.stdio_equal("1 2\n", "1\n2\n")  # line structure counts
    assert sandbox.stdio_equal("0.3333333\n", "0.333333333\n")  # float-looking expected token: tolerance
    assert sandbox.stdio_equal("1e-3\n", "0.001\n")
    assert not sandbox.stdio_equal("0.34\n", "0.333333333\n")
    assert not sandbox.stdio_equal("3\n", "3.0000001e0x\n")
    assert sandbox.stdio_equal("10\n", "10.0\n")  # a float-looking expected token accepts an integer
    assert not sandbox.stdio_equal("3\n", "4\n")
    assert not sandbox.stdio_equal("03\n", "3\n")  # integer tokens compare exactly
    assert not sandbox.stdio_equal("yes\n", "YES\n")


def test_value_comparison_rules():
    enc, same = sandbox._encode, sandbox._same
    assert same(enc(0.30000000000000004), enc(0.3), 1e-6)
    assert not same(enc(0.31), enc(0.3), 1e-6)
    assert same(enc((1, 2)), enc([1, 2]), 1e-6)  # tuples are lists
    assert not same(enc(True), enc(1), 1e-6) and not same(enc(1), enc(True), 1e-6)  # bool is not int
    assert not same(enc(1.0), enc(True), 1e-6)
    assert same(enc(2.0), enc(2), 1e-6)  # as in Python, 2.0 == 2
    assert not same(enc(2), enc("2"), 1e-6)
    assert same(enc({1: "a", (2, 3): [0.5]}), enc({(2, 3): [0.5000000001], 1: "a"}), 1e-6)
    assert not same(enc({1: "a"}), enc({"1": "a"}), 1e-6)
    assert same(enc({3, 1}), enc({1, 3}), 1e-6) and not same(enc([1, 3]), enc({1, 3}), 1e-6)

    class AlwaysEqual:
        def __eq__(self, other):
            return True

    assert not same(enc(AlwaysEqual()), enc(1), 1e-6)
    assert not same(enc([AlwaysEqual()]), enc([1]), 1e-6)


def test_parent_parses_literal_asserts_and_keeps_the_rest_raw():
    parsed = sandbox._assert_test("assert f([1, 2], k=(3,)) == {'a': 1.5}, 'msg'", "f")
    assert parsed.expect == ("eq", {"__dict__": [["a", 1.5]]})
    assert parsed.child == {"args_literal": "([1, 2], )", "kwargs_literal": "{'k': (3,)}"}
    assert sandbox._assert_test("assert 2 == f(1)", "f").expect == ("eq", 2)
    assert sandbox._assert_test("assert f(1) is True", "f").expect == ("eq", True)
    assert sandbox._assert_test("assert not f(1)", "f").expect == ("truthy", False)
    for raw in ("assert abs(f(1) - 2) < 1e-6", "assert f(x) == 1", "assert g(1) == 1", "x = 1\nassert f(x) == 1",
                "assert f(1) == [i for i in range(3)]", "assert f(*[1]) == 1"):
        assert sandbox._assert_test(raw, "f").expect is None, raw


def test_call_task_spec_never_carries_expected_values(monkeypatch):
    """What the child gets for call and parsed-assert tests: arguments, never the expected values."""
    sent = []
    monkeypatch.setattr(sandbox, "run_sandbox", lambda spec, job, *a: sent.append(json.dumps([spec, job])) or
                        sandbox_runner.Run(None, [], b"", b"", True, None))
    monkeypatch.setattr(sandbox, "setup_for", lambda isolation: None)
    monkeypatch.setattr(sandbox, "sandbox_problem", lambda isolation: None)
    monkeypatch.setattr(sandbox, "sandbox_slot", lambda setup, deadline: contextlib.nullcontext(
        sandbox_runner.Slot("unused", -1, None, None)))
    sandbox.clear_cache()
    check_code("def f(x):\n    return x\n", call("f", ([1], "SECRET_EXPECTED_1")))
    check_code("def f(x):\n    return x\n", asserts("f", "assert f(1) == 'SECRET_EXPECTED_2'"))
    assert len(sent) == 2 and not any("SECRET_EXPECTED" in s for s in sent)


@pytest.mark.parametrize("response, task", [
    (None, None), ("print(1)", None), ("print(1)", []), ("print(1)", {}), ("print(1)", {"kind": "weird", "tests": [1]}),
    ("print(1)", {"kind": "stdio"}), ("print(1)", {"kind": "stdio", "tests": []}),
    ("print(1)", {"kind": "stdio", "tests": "abc"}), ("print(1)", {"kind": "stdio", "tests": [{"input": "1"}]}),
    ("print(1)", {"kind": "stdio", "tests": [{"input": 1, "output": "1"}]}),
    ("print(1)", {"kind": "stdio", "tests": [{"input": "", "output": "1"}], "float_tol": -1}),
    ("print(1)", {"kind": "stdio", "tests": [{"input": "", "output": "1"}], "float_tol": float("nan")}),
    ("print(1)", {"kind": "call", "tests": [{"args": [], "expected": 1}]}),
    ("print(1)", {"kind": "call", "entry_point": "not an identifier", "tests": [{"args": [], "expected": 1}]}),
    ("print(1)", {"kind": "call", "entry_point": "f", "tests": [{"args": 5, "expected": 1}]}),
    ("print(1)", {"kind": "call", "entry_point": "f", "tests": [{"args": []}]}),
    ("print(1)", {"kind": "call", "entry_point": "f", "tests": [{"args": [object()], "expected": 1}]}),
    ("print(1)", {"kind": "call", "entry_point": "f", "tests": [{"args": [], "expected": object()}]}),
    ("print(1)", {"kind": "assert", "entry_point": "f", "tests": ["assert f(("]}),
    ("print(1)", {"kind": "assert", "entry_point": "f", "tests": [None]}),
    (b"print(1)", ADD), (12, ADD), (["print(1)"], ADD), ("", ADD), ("```python\n```", ADD), ("   \n", ADD),
    ("def f(:\n", ADD), ("return 1\n", ADD), ("x = 1\x00\n", ADD), ("x = '\ud800'\n", ADD),
    ("x = 1\n" * 50_000, ADD), ("(" * 5000 + ")" * 5000, ADD),
])
def test_garbage_inputs_never_raise(response, task):
    verdict = check_code(response, task)
    assert not verdict.correct and verdict.reason in CODE_REASONS
    assert verdict.reason in ("bad_task", "no_answer", "parse_error")  # decided without starting a sandbox


def test_garbage_reasons():
    assert check_code("print(1)", {"kind": "weird", "tests": [1]}).reason == "bad_task"
    assert check_code("", ADD).reason == "no_answer"
    syntax = check_code("```python\ndef f(:\n```", ADD)
    assert syntax.reason == "parse_error" and syntax.extracted == "def f(:\n"


# ----------------------------------------------------------------------------------------------------------
# Verdicts for honest programs


def test_sandbox_info(info):
    assert info["python"] and "netns" in info and "uid" in info
    if os.geteuid() == 0:
        assert info["drop_privileges"] and info["uid"] in info["uids"] and info["uid"] != 0


def test_stdio_correct_wrong_crlf_and_exit_status(info):
    assert _checked(info, f"```python\n{ADD_PROGRAM}```", ADD).reason == "correct"
    assert _checked(info, "a, b = map(int, input().split())\nprint(a - b)\n", ADD).reason == "mismatch"
    crlf = "import sys\nsys.stdout.write('3  \\r\\n\\r\\n')\n"
    assert _checked(info, crlf, stdio(("", "3"))).reason == "correct"
    late_crash = "print(3)\nraise SystemExit(2)\n"  # right output, then a non-zero exit
    assert _checked(info, late_crash, stdio(("", "3\n"))).reason == "runtime_error"
    assert _checked(info, "print(1 / 3)\n", stdio(("", "0.333333333\n"))).reason == "correct"
    assert _checked(info, "print(0.34)\n", stdio(("", "0.333333333\n"))).reason == "mismatch"
    assert _checked(info, "print(1/0)\n", stdio(("", "1\n"))).reason == "runtime_error"


def test_call_tasks(info):
    double = "def f(x):\n    return x * 2\n"
    assert _checked(info, double, call("f", ([1], 2), (["ab"], "abab"), ([[1]], [1, 1]))).reason == "correct"
    assert _checked(info, double, call("f", ([1], 2), ([2], 5))).reason == "mismatch"
    assert _checked(info, "def f(x):\n    return 0.1 + 0.2\n", call("f", ([0], 0.3))).reason == "correct"
    assert _checked(info, "def f(x):\n    return 0.31\n", call("f", ([0], 0.3))).reason == "mismatch"
    assert _checked(info, "def f(x):\n    return (x, [x])\n", call("f", ([1], [1, [1]]))).reason == "correct"
    assert _checked(info, "def f(x):\n    return True\n", call("f", ([1], 1))).reason == "mismatch"
    assert _checked(info, "def f(x):\n    return 1\n", call("f", ([1], True))).reason == "mismatch"
    assert _checked(info, "def f(x):\n    return {'a': [x]}\n", call("f", ([2], {"a": [2]}))).reason == "correct"
    kw = {"kind": "call", "entry_point": "f", "tests": [{"args": [1], "kwargs": {"k": 3}, "expected": 4}]}
    assert _checked(info, "def f(x, k=0):\n    return x + k\n", kw).reason == "correct"
    assert _checked(info, "def f(x):\n    return [][1]\n", call("f", ([1], 1))).reason == "runtime_error"
    assert _checked(info, "def g(x):\n    return x\n", call("f", ([1], 1))).reason == "runtime_error"
    assert _checked(info, "def f(x):\n    while True:\n        pass\n", call("f", ([1], 1))).reason == "timeout"


def test_assert_tasks_parsed_and_raw(info):
    program = "def f(x, k=0):\n    return (x + k, x > 0)\n"
    parsed = asserts("f", "assert f(1) == (1, True)", "assert f(1, k=2) == [3, True]", "assert f(1)",
                     "assert f(-1)[1] is False")
    assert _checked(info, program, parsed).reason == "correct"
    assert _checked(info, program, asserts("f", "assert f(1) == (2, True)")).reason == "mismatch"
    raw = asserts("f", "for i in range(1, 4):\n    assert f(i)[0] == i", "assert abs(f(0.5)[0] - 0.5) < 1e-9")
    assert _checked(info, program, raw).reason == "correct"
    assert _checked(info, program, asserts("f", "for i in range(3):\n    assert f(i)[0] == i + 1")).reason == "mismatch"
    assert _checked(info, program, asserts("f", "assert f(None)")).reason == "runtime_error"
    assert _checked(info, "def f(x):\n    return {1: 'a'}\n", asserts("f", "assert f(0) == {1: 'a'}")).reason == "correct"


def test_helper_shadowing_a_builtin_does_not_change_raw_tests(info):
    program = "def abs(x):\n    return 0\n\ndef f(x):\n    return 5\n"
    assert _checked(info, program, asserts("f", "assert abs(f(1) - 1) < 1e-6")).reason == "mismatch"


def test_fail_fast_and_cache(info, monkeypatch):
    sandbox.clear_cache()
    slow_wrong = "import time\ndef f(x):\n    if x == 0:\n        return -1\n    time.sleep(0.2)\n    return x\n"
    task = call("f", *[([i], i) for i in range(5)])
    assert _checked(info, slow_wrong, task).reason == "mismatch"
    assert _checked(info, slow_wrong, task, fail_fast=False).reason == "mismatch"  # cached: same verdict
    runs = []
    real_run = sandbox.run_sandbox
    monkeypatch.setattr(sandbox, "run_sandbox", lambda *a: runs.append(1) or real_run(*a))
    assert _checked(info, slow_wrong, task).reason == "mismatch" and runs == []
    stdio_task = stdio(("1 2\n", "4\n"), ("1 1\n", "2\n"))
    assert _checked(info, ADD_PROGRAM, stdio_task).reason == "mismatch" and len(runs) == 1  # stopped at test 1


def test_batch(info):
    sandbox.clear_cache()
    responses = [ADD_PROGRAM, "print(0)", ADD_PROGRAM, None, "def f(x):\n    return x\n"]
    tasks = [ADD, ADD, ADD, ADD, call("f", ([1], 1))]
    verdicts = check_code_batch(responses, tasks, workers=2, limits=FAST)
    assert [v.reason for v in verdicts] == ["correct", "mismatch", "correct", "no_answer", "correct"]
    sandbox.clear_cache()
    spent = check_code_batch(responses, tasks, budget_s=0.0)
    assert [v.reason for v in spent] == ["timeout", "timeout", "timeout", "no_answer", "timeout"]
    with pytest.raises(ValueError):
        check_code_batch(["x"], [])
    assert _sandbox_processes(info) == []


# ----------------------------------------------------------------------------------------------------------
# Adversarial programs: never correct, never hang, nothing left alive

def _p(source: str) -> str:
    return textwrap.dedent(source).lstrip("\n")


ADVERSARIAL = {  # name: (program, task, acceptable reasons)
    "infinite loop": (_p("""
        def f(x):
            while True:
                pass
        """), "call", {"timeout"}),
    "sleep": (_p("""
        import time
        def f(x):
            time.sleep(100)
        """), "call", {"timeout"}),
    "busy top level": ("while True:\n    pass\n", "call", {"timeout"}),
    "memory creep": (_p("""
        def f(x):
            a = []
            while True:
                a.append(bytearray(1 << 20))
        """), "call", {"runtime_error"}),
    "catches the timeout": (_p("""
        def f(x):
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    pass
        """), "call", {"timeout"}),
    "output flood": ("while True:\n    print('x' * 10000)\n", "stdio", {"runtime_error", "timeout"}),
    "forked orphan holds stdout": (_p("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            time.sleep(60)
        """), "stdio", {"mismatch"}),
    "double-forked daemon": (_p("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        print(3)
        """), "stdio_right", set()),
    "thread keeps it alive": (_p("""
        import threading, time
        print(3)
        threading.Thread(target=time.sleep, args=(60,)).start()
        """), "stdio_right", {"timeout"}),
    "thread in a call task": (_p("""
        import threading, time
        threading.Thread(target=time.sleep, args=(60,)).start()
        def f(x):
            return -1
        """), "call", {"mismatch"}),
    "sys.exit(0) at top level": ("import sys\nsys.exit(0)\ndef f(x):\n    return 2\n", "call", {"runtime_error"}),
    "os._exit(0) at top level": ("import os\nos._exit(0)\n", "call", {"runtime_error"}),
    "sys.exit(0) in the function": ("import sys\ndef f(x):\n    sys.exit(0)\n", "call", {"runtime_error"}),
    "os._exit(0) in the function": ("import os\ndef f(x):\n    os._exit(0)\n", "assert_raw", {"runtime_error"}),
    "atexit": (_p("""
        import atexit, os
        atexit.register(lambda: print('all tests passed'))
        def f(x):
            os._exit(0)
        """), "call", {"runtime_error"}),
    "sys.exit(0) before printing": ("import sys\nsys.exit(0)\nprint(3)\n", "stdio_right", {"mismatch"}),
    "always-equal object": (_p("""
        class A:
            __eq__ = lambda s, o: True
            __ne__ = lambda s, o: False
            __hash__ = lambda s: 0
        def f(x):
            return A()
        """), "call", {"runtime_error"}),  # the entry point returns plain data or nothing counts
    "always-equal in a parsed assert": (_p("""
        class A:
            __eq__ = lambda s, o: True
        def f(x):
            return A()
        """), "assert_parsed", {"runtime_error"}),
    "always-equal in a raw assert": (_p("""
        class A:
            __eq__ = lambda s, o: True
            __lt__ = lambda s, o: True
            __sub__ = lambda s, o: 0
        def f(x):
            return A()
        """), "assert_raw", {"runtime_error"}),
    "int subclass always equal": (_p("""
        class I(int):
            __eq__ = lambda s, o: True
        def f(x):
            return I(7)
        """), "call", {"runtime_error"}),
    "forged results without the nonce": (_p("""
        import os
        def f(x):
            for fd in range(3, 30):
                for line in ("0" * 32 + " 0 ok null", "0" * 32 + " done ok null", "x 0 ok null"):
                    try:
                        os.write(fd, (line + "\\n").encode())
                    except OSError:
                        pass
            os._exit(0)
        """), "assert_raw", {"runtime_error"}),
    "forked copy would pass": ("import os\ndef f(x):\n    return x + 1 if os.fork() == 0 else -1\n", "assert_raw",
                               {"mismatch"}),
    "forked copy would pass a call": ("import os\ndef f(x):\n    return x + 1 if os.fork() == 0 else -1\n", "call",
                                      {"mismatch"}),
    "bounded fork loop": (_p("""
        import os, time
        n = 0
        for i in range(300):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                time.sleep(60)
                os._exit(0)
            n += 1
        print(n)
        """), "stdio_300", {"mismatch"}),
}

TASKS = {
    "call": call("f", ([1], 2), ([2], 3)),
    "assert_parsed": asserts("f", "assert f(1) == 2"),
    "assert_raw": asserts("f", "for i in range(2):\n    assert f(i) == i + 1", "assert f(5) == 6"),
    "stdio": stdio(("", "3\n")),
    "stdio_right": stdio(("", "3\n")),
    "stdio_300": stdio(("", "300\n")),
}


SLOW_ADVERSARIAL = {"sleep", "busy top level", "catches the timeout", "thread keeps it alive"}  # each waits out a
# limit; "infinite loop" keeps the timeout-and-kill path in the fast set


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_ADVERSARIAL else n
                                  for n in ADVERSARIAL])
def test_adversarial_program(info, name):
    program, kind, reasons = ADVERSARIAL[name]
    limits = Limits(time_limit_s=1.0, startup_slack_s=3.0, memory_mb=128, output_bytes=1 << 20)
    verdict = _checked(info, program, TASKS[kind], limits=limits)
    if name == "double-forked daemon":  # a correct answer; the point is that the daemon does not survive it
        assert verdict.reason == "correct"
        return
    assert not verdict.correct and verdict.reason in reasons, verdict


STEAL_NONCE = r'''
import os, sys

def _hex32(v):
    return isinstance(v, str) and len(v) == 32 and all(c in "0123456789abcdef" for c in v)

def steal():
    found = set()
    def frames(fr):
        while fr is not None:
            found.update(v for v in list(fr.f_locals.values()) if _hex32(v))
            fr = fr.f_back
    for attempt in (lambda: frames(sys._getframe(1)),
                    lambda: [frames(i.frame) for i in __import__("inspect").stack()],
                    lambda: frames(sys.exc_info()[2].tb_frame) if sys.exc_info()[2] else None,
                    lambda: [found.update(v for v in o.values() if _hex32(v))
                             for o in __import__("gc").get_objects() if type(o) is dict]):
        try:
            attempt()
        except Exception:
            pass
    try:
        raise RuntimeError
    except RuntimeError as e:
        try:
            frames(e.__traceback__.tb_frame)
        except Exception:
            pass
    return found

def f(x):
    for nonce in steal() or {"0" * 32}:
        lines = "".join(f"{nonce} {i} ok null\n" for i in range(3)) + f"{nonce} done ok null\n"
        os.write(int(sys.argv[2]), lines.encode())
    os._exit(0)
'''


def test_nonce_cannot_be_stolen_from_frames_or_gc(info):
    # All raw asserts (a parsed one would be compared in the parent, forged line or not). With the audit hook
    # disabled this very program steals the nonce and gets `correct`.
    task = asserts("f", "for i in range(2):\n    assert f(i) == -1", "x = 0\nassert f(x) == -2", "x = 0\nassert f(x) == -3")
    assert _checked(info, STEAL_NONCE, task).reason == "runtime_error"


SCAN_OWN_MEMORY = r"""
import ctypes, os

def f(x):
    # Introspection is not blocked (there is nothing to hide in this process): re-enable dumpable, read every
    # readable mapping of /proc/self/mem and collect what follows each "SECRET_EXPECTED_".
    ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)
    marker, found = b"SECRET_" + b"EXPECTED_", set()
    with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if perms[0] != "r" or "[v" in line:
                continue
            lo, hi = (int(v, 16) for v in span.split("-"))
            try:
                mem.seek(lo)
                chunk = mem.read(hi - lo)
            except (OSError, ValueError, OverflowError):
                continue
            i = chunk.find(marker)
            while i >= 0:
                found.add(chunk[i:i + 24].decode("ascii", "replace"))
                i = chunk.find(marker, i + 1)
    return sorted(found)
"""


def test_the_candidates_memory_holds_nothing_of_the_tests(info):
    """The raw test's source (with its expected value) is read by the tester after the candidate's process forked:
    a scan of the candidate's whole memory finds its own marker but never the test's."""
    test = ("found = f(0)\n"
            "assert found, 'the scan sees its own marker'\n"
            "assert not any(s.startswith('SECRET_EXPECTED_91XYZ') for s in found), found\n")
    limits = Limits(time_limit_s=10.0, startup_slack_s=5.0)
    assert _checked(info, SCAN_OWN_MEMORY, asserts("f", test), limits=limits).reason == "correct"
    control = "assert any(s.startswith('SECRET_EXPECTED_ARG') for s in f('SECRET_' + 'EXPECTED_ARG'))\n"
    assert _checked(info, SCAN_OWN_MEMORY, asserts("f", control), limits=limits).reason == "correct"  # what it is sent


def test_expected_values_are_not_in_the_child(info):
    program = r'''
import os
def f(x):
    for root in (".", "/tmp"):
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    if "SECRET_EXPECTED" in open(os.path.join(dirpath, name), errors="replace").read():
                        return "SECRET_EXPECTED_42"
                except OSError:
                    pass
    return "not found"
'''
    assert _checked(info, program, call("f", ([1], "SECRET_EXPECTED_42"))).reason == "mismatch"
    assert _checked(info, program, asserts("f", "assert f(1) == 'SECRET_EXPECTED_42'")).reason == "mismatch"


def _needs_drop(info):
    if not info["drop_privileges"]:
        pytest.skip("not running as root: the candidate keeps the parent's uid")


def test_cannot_read_the_parents_files(info):
    _needs_drop(info)
    here = str(Path(sandbox.__file__).resolve())
    reader = "import os, sys\ntry:\n    {}\n    print('read')\nexcept OSError:\n    print('denied')\n"
    task = stdio(("", "read\n"))
    assert _checked(info, reader.format("os.listdir('/root')"), task).reason == "mismatch"
    assert _checked(info, reader.format("open('/etc/shadow').read()"), task).reason == "mismatch"
    own = reader.format("open('x', 'w').write('1'); open('x').read()")  # control: the work dir is usable
    assert _checked(info, own, task).reason == "correct"
    if str(Path(here).parents[1]) not in info.get("hidden", []):  # the repository, verifiers/ and all
        pytest.skip(f"no mount namespace hides the repository here ({info}); world-readable files stay readable")
    assert _checked(info, reader.format(f"open({here!r}).read()"), task).reason == "mismatch"


def test_cannot_write_outside_the_work_dir(info):
    _needs_drop(info)
    marker = uuid.uuid4().hex
    repo_file = Path(sandbox.__file__).resolve().parents[1] / f"pwned_{marker}"
    tmp_file = Path("/tmp") / f"pwned_{marker}"
    writer = (f"import os\nok = 0\nfor p in ({str(repo_file)!r}, {str(tmp_file)!r}, '/root/pwned_{marker}'):\n"
              "    try:\n        open(p, 'w').write('x')\n        ok += 1\n    except OSError:\n        pass\n"
              "print('repo' if os.path.exists(" + repr(str(repo_file)) + ") else ok)\n")
    verdict = _checked(info, writer, stdio(("", "repo\n")))
    assert verdict.reason == "mismatch"
    assert not repo_file.exists() and not tmp_file.exists() and not Path(f"/root/pwned_{marker}").exists()


def test_without_mount_namespace_tmp_leftovers_are_removed(info):
    _needs_drop(info)
    marker = uuid.uuid4().hex
    isolation = Isolation(namespaces=False)
    program = f"open('/tmp/sdzero_left_{marker}', 'w').write('x')\nprint(3)\n"
    assert _checked(info, program, stdio(("", "3\n")), isolation=isolation).reason == "correct"
    assert not Path(f"/tmp/sdzero_left_{marker}").exists()


def test_no_loopback_reach(info):
    if not info.get("netns"):
        pytest.skip("no network namespace here (unshare not permitted): loopback reach is not blocked")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        program = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=0.5)\n"
                   "    print('connected')\nexcept OSError:\n    print('refused')\n")
        assert _checked(info, program, stdio(("", "connected\n"))).reason == "mismatch"
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


def test_cannot_kill_the_parent_or_init(info):
    _needs_drop(info)
    program = ("import os, signal\nok = 0\nfor pid in (os.getppid(), 1, -1):\n    try:\n"
               "        os.kill(pid, signal.SIGKILL)\n        ok += 1\n    except OSError:\n        pass\n"
               "print(ok)\n")
    assert _checked(info, program, stdio(("", "3\n"))).reason == "mismatch"
    assert _checked(info, "import os\nos.killpg(0, 9)\n", stdio(("", "3\n"))).reason == "runtime_error"


def test_fallback_without_namespaces_or_privilege_drop(info):
    """The degraded path (not root, no namespaces) still gives verdicts and kills an orphan daemon."""
    isolation = Isolation(drop_privileges=False, namespaces=False)
    assert _checked(info, ADD_PROGRAM, ADD, isolation=isolation).reason == "correct"
    assert _checked(info, "print(0)\n", ADD, isolation=isolation).reason == "mismatch"
    assert _checked(info, "def f(x):\n    return x\n", call("f", ([1], 1)), isolation=isolation).reason == "correct"
    daemon = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n"
              "    os._exit(0)\nprint(3)\n")
    assert _checked(info, daemon, stdio(("", "3\n")), isolation=isolation).reason == "correct"


# ----------------------------------------------------------------------------------------------------------
# HumanEval


def _humaneval():
    try:
        return tasks.humaneval_tasks()
    except ValueError as e:
        pytest.skip(str(e))


@pytest.mark.slow  # 164 problems x 2
def test_humaneval_canonical_solutions_pass_and_wrong_ones_fail(info):
    rows = _humaneval()
    assert len(rows) == 164
    sandbox.clear_cache()
    verdicts = check_code_batch([r["prompt"] + r["canonical_solution"] for r in rows], [r["task"] for r in rows])
    failed = [(r["task_id"], v.reason) for r, v in zip(rows, verdicts) if not v.correct]
    assert failed == []
    wrong = [r for r in rows if r["task_id"] in ("HumanEval/0", "HumanEval/2", "HumanEval/32", "HumanEval/38",
                                                  "HumanEval/53", "HumanEval/151")]
    bodies = ["    return None\n", "    return 0\n", "    return []\n"]
    responses = [r["prompt"] + body for r in wrong for body in bodies]
    verdicts = check_code_batch(responses, [r["task"] for r in wrong for _ in bodies])
    assert [v.reason for v in verdicts if v.correct] == []
    assert _sandbox_processes(info) == []


def _humaneval_row(task_id: str) -> dict:
    return {r["task_id"]: r for r in _humaneval()}[task_id]


# ----------------------------------------------------------------------------------------------------------
# The results channel: the candidate can neither read nor forge it, and nothing it can read depends on the task

HANDLES = r"""
import os, re

def _handles():
    paths = [f"/proc/self/fd/{fd}" for fd in os.listdir("/proc/self/fd")]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                paths += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
            except OSError:
                pass
    return paths
"""

FORGE = HANDLES + r"""

def forge(indexes):
    # Read the setup line back (an older harness handed it over read-write, nonce included), then write every
    # line a passing run has, with that nonce and without, to every fd it has or can reopen, and exit 0.
    nonces = {b""}
    for fd in range(1024):
        try:
            nonces.update(m + b" " for m in re.findall(rb"(?m)^([0-9a-f]{32}) setup ok", os.pread(fd, 1 << 20, 0)))
        except OSError:
            pass
    lines = b"".join(n + i + b" ok null\n" for n in nonces for i in indexes)
    for fd in range(1024):
        try:
            os.write(fd, lines)
        except OSError:
            pass
    for path in _handles():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK)
            os.write(fd, lines)
            os.close(fd)
        except OSError:
            pass
    os._exit(0)
"""


READ_BACK = HANDLES + r'''
def f(*args):
    """[found its own control line, found any other results line] over every handle it has or can (re)open."""
    own = open("own", "w+b")
    own.write(b"setup ok CONTROL\n")
    own.flush()
    paths = _handles()
    seen = []
    for fd in range(1024):
        try:
            seen.append(os.pread(fd, 1 << 20, 0))
        except OSError:
            pass
    for path in paths:
        for flags in (os.O_RDONLY, os.O_RDWR):
            try:
                fd = os.open(path, flags | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                seen.append(os.pread(fd, 1 << 20, 0))
            except OSError:
                pass
            os.close(fd)
    hits = [data for data in seen if b"setup ok" in data]
    return [any(b"CONTROL" in d for d in hits), any(b"CONTROL" not in d for d in hits)]
'''


def test_forged_results_do_not_pass_a_raw_humaneval_task(info):
    """HumanEval/32's check() is not a flat list of asserts, so it runs as one raw test. Reading the setup line
    back for its nonce, then writing every line of a passing run (with and without it) to every fd and every
    /proc/*/fd the candidate can open and calling os._exit(0), at load time or inside the entry point, with a
    wrong find_zero: never correct. (Against the harness before this one, both programs got `correct`.)"""
    row = _humaneval_row("HumanEval/32")
    assert [t for t in row["task"]["tests"] if sandbox._assert_test(t, "find_zero").expect is None]  # raw
    wrong = row["prompt"] + "    return 0.0\n"
    at_load = wrong + FORGE + "\nforge([b'load', b'0', b'done'])\n"
    in_call = wrong + FORGE + "\ndef find_zero(xs):\n    forge([b'0', b'done'])\n"
    for program in (at_load, in_call):
        assert _checked(info, program, row["task"]).reason == "runtime_error"
    assert _checked(info, row["prompt"] + row["canonical_solution"], row["task"]).reason == "correct"


def test_the_results_file_cannot_be_read_back(info):
    """No fd of the candidate's, no reopening through /proc/self/fd or another process's /proc/<pid>/fd, reaches a
    file holding a results line; the same scan does find the candidate's own control file (so it works)."""
    assert _checked(info, READ_BACK, call("f", ([], [True, False]))).reason == "correct"
    raw = asserts("f", "x = 0\nassert f(x) == [True, False]")
    assert _checked(info, READ_BACK, raw).reason == "correct"
    stdio_reader = READ_BACK + "\nprint(*f())\n"
    assert _checked(info, stdio_reader, stdio(("", "True False\n"))).reason == "correct"


def test_the_results_handle_is_write_only():
    with tempfile.TemporaryFile() as f:
        fd = sandbox_runner._write_only(f.fileno())
        mode = fcntl.fcntl(fd, fcntl.F_GETFL)
        assert mode & os.O_ACCMODE == os.O_WRONLY and mode & os.O_APPEND
        os.write(fd, b"x")
        with pytest.raises(OSError):
            os.read(fd, 1)
        os.close(fd)


LIMITS_SEEN = r'''
import resource, signal

def f(*args):
    """What a forger would use to count the tests: the CPU rlimit and every interval timer."""
    return [list(resource.getrlimit(resource.RLIMIT_CPU)),
            [list(signal.getitimer(t)) for t in (signal.ITIMER_REAL, signal.ITIMER_VIRTUAL, signal.ITIMER_PROF)]]
'''


def test_no_limit_or_timer_reveals_the_number_of_tests(info):
    cpu = int(FAST.candidate_time_s) + 1
    seen = [[cpu, cpu + 1], [[0.0, 0.0]] * 3]
    for n in (1, 7):
        task = call("f", *[([i], seen) for i in range(n)])
        assert _checked(info, LIMITS_SEEN, task).reason == "correct", n
        raw = asserts("f", *[f"x = {i}\nassert f(x) == {seen!r}" for i in range(n)])
        assert _checked(info, LIMITS_SEEN, raw).reason == "correct", n
    other = Limits(time_limit_s=3.0, startup_slack_s=3.0)  # nor the per-test time limit
    assert _checked(info, LIMITS_SEEN, call("f", ([0], seen)), limits=other).reason == "correct"


def test_the_candidate_cannot_stop_trace_or_read_the_tester(info):
    """From inside the entry point: SIGSTOP/SIGKILL every other process, ptrace-attach it, open its mem, fd and
    environ. The tester survives (the answer, computed afterwards, is still judged correct) and nothing opens."""
    program = _p(r'''
        import ctypes, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        def f(x):
            opened = 0
            for pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
                for sig in (signal.SIGSTOP, signal.SIGKILL):
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
                opened += libc.ptrace(16, pid, None, None) == 0  # PTRACE_ATTACH
                for name in ("mem", "environ", "fd"):
                    try:
                        os.close(os.open(f"/proc/{pid}/{name}", os.O_RDONLY))
                        opened += name != "fd" or bool(os.listdir(f"/proc/{pid}/fd"))
                    except OSError:
                        pass
            return [x + 1, opened]
        ''')
    assert _checked(info, program, call("f", ([1], [2, 0]), ([2], [3, 0]))).reason == "correct"


# ----------------------------------------------------------------------------------------------------------
# The tests' helpers and modules are the task's, not the candidate's


def test_humaneval_38_a_redefined_prompt_helper_does_not_pass(info):
    """A wrong decode_cyclic (the identity) plus encode_cyclic redefined as the identity: check() encodes with the
    prompt's encode_cyclic (the task's setup), so it fails. Without the setup it would pass: the documented limit."""
    row = _humaneval_row("HumanEval/38")
    assert "setup" in row["task"]
    attack = row["prompt"] + "    return s\n\n\ndef encode_cyclic(s: str):\n    return s\n"
    assert _checked(info, attack, row["task"]).reason == "mismatch"
    assert _checked(info, row["prompt"] + row["canonical_solution"], row["task"]).reason == "correct"
    no_setup = {k: v for k, v in row["task"].items() if k != "setup"}
    assert _checked(info, attack, no_setup).reason == "correct"


PATCH_EVERYTHING = '''
import builtins, copy, math, random, sys, types
math.fabs = lambda x: 0.0
math.pow = lambda x, y: 0.0
builtins.abs = lambda x: 0
random.Random.randint = lambda self, a, b: 1
copy.deepcopy = lambda x, memo=None: x
fake = types.ModuleType("math")
fake.fabs, fake.pow = math.fabs, math.pow
sys.modules["math"] = fake
'''


def test_humaneval_32_patched_modules_do_not_pass(info):
    """find_zero returning 0.0 after patching math.fabs/pow (which check() and the prompt's poly use), abs,
    random and copy, and replacing sys.modules["math"]: the tester's modules are its own, so it fails."""
    row = _humaneval_row("HumanEval/32")
    attack = row["prompt"] + "    return 0.0\n" + PATCH_EVERYTHING
    assert _checked(info, attack, row["task"]).reason == "mismatch"
    # The patches do work where they live: the candidate's own math.fabs is the patched one.
    in_candidate = PATCH_EVERYTHING + "\ndef f(x):\n    return __import__('math').fabs(x)\n"
    assert _checked(info, in_candidate, call("f", ([-3.0], 0.0))).reason == "correct"


def test_a_module_the_test_takes_from_the_program_is_the_testers_own(info):
    """A raw test that uses `math` without importing it (no setup): the name comes from the program, but as the
    tester's own import of that module, so the candidate's patch does not apply."""
    program = "import math\nmath.fabs = lambda x: 0.0\ndef f(x):\n    return x\n"
    assert _checked(info, program, asserts("f", "x = -5.0\nassert math.fabs(f(x)) < 1e-9")).reason == "mismatch"
    assert _checked(info, program, asserts("f", "x = -5.0\nassert math.fabs(f(x)) == 5.0")).reason == "correct"


def test_tests_may_use_the_candidates_classes_but_never_its_comparisons(info):
    """LiveCodeBench's `assert Solution().f(...) == expected` and MBPP's candidate classes as arguments work; a
    candidate object is never compared or tested for truth by its own methods."""
    good = _p('''
        class Solution:
            def add(self, a, b):
                return a + b
        class Pair:
            def __init__(self, a, b):
                self.a, self.b = a, b
        def longest(pairs):
            return max(p.b - p.a for p in pairs)
        ''')
    lcb = asserts("add", "assert Solution().add(1, 2) == 3", "assert Solution().add(a=2, b=2) == 4")
    assert _checked(info, good, lcb).reason == "correct"
    mbpp = asserts("longest", "assert longest([Pair(1, 5), Pair(2, 3)]) == 4", "assert Pair(1, 2).b == 2")
    assert _checked(info, good, mbpp).reason == "correct"
    cheat = _p('''
        class Yes:
            __eq__ = lambda s, o: True
            __ne__ = lambda s, o: False
            __bool__ = lambda s: True
        class Solution:
            def add(self, a, b):
                return Yes()
        ''')
    for test in ("assert Solution().add(1, 2) == 3", "assert not Solution().add(1, 2) != 3", "assert Solution().add(1, 2)"):
        assert _checked(info, cheat, asserts("add", test)).reason == "runtime_error", test


# ----------------------------------------------------------------------------------------------------------
# Nothing persists or lands on the host


def _needs_mntns(info):
    _needs_drop(info)
    if not info.get("mntns"):
        pytest.skip(f"no mount namespace here ({info})")


def _host_dir() -> Path:
    """A directory on the host's disk, outside the hidden paths and the world-writable ones, for a test's files."""
    for base in ("/opt", "/srv", "/var/lib", "/usr/local"):
        if os.path.isdir(base) and os.access(base, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="sdzero-test-", dir=base))
    pytest.skip("no writable host directory outside the hidden and world-writable ones")


def test_every_world_writable_directory_is_private(info):
    """Each world-writable directory the setup scan found (/run/lock too: not in any fixed list) is writable
    inside, and what the candidate writes there is neither on the host after the run nor seen by the next run."""
    _needs_mntns(info)
    dirs = sorted(set(info["world_writable"]) | {"/dev/shm"})
    if os.path.isdir("/run/lock") and os.stat("/run/lock").st_mode & 0o003 == 0o003:
        assert "/run/lock" in dirs and "/run/lock" in info["scratch"]
    assert set(dirs) <= set(info["scratch"])
    marker = f"sdzero_left_{uuid.uuid4().hex}"
    writer = (f"import os\nok = 0\nfor d in {dirs!r}:\n    try:\n        open(os.path.join(d, {marker!r}), 'w').write('x')\n"
              "        ok += 1\n    except OSError as e:\n        print(d, e)\nprint(ok)\n")
    assert _checked(info, writer, stdio(("", f"{len(dirs)}\n"))).reason == "correct"
    assert [d for d in dirs if Path(d, marker).exists()] == []
    reader = f"import os\nprint(sum(os.path.exists(os.path.join(d, {marker!r})) for d in {dirs!r}))\n"
    assert _checked(info, reader, stdio(("", "0\n"))).reason == "correct"


def test_everything_else_on_the_host_is_read_only(info):
    """Every mount is read-only inside; a world-writable directory made after the setup scan is not writable;
    without a mount namespace the same write lands (so the check can fail)."""
    _needs_mntns(info)
    assert info["writable_mounts"] == []
    d = _host_dir()
    try:
        os.chmod(d, 0o1777)
        target = d / "written"
        writer = (f"try:\n    open({str(target)!r}, 'w').write('x')\n    print('written')\n"
                  "except OSError as e:\n    print('refused', e.errno)\n")
        assert _checked(info, writer, stdio(("", "refused 30\n"))).reason == "correct"  # EROFS
        assert not target.exists()
        assert _checked(info, writer, stdio(("", "written\n")), isolation=Isolation(namespaces=False)).reason == "correct"
    finally:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def test_a_minimal_dev_and_no_host_socket(info):
    """/dev holds only the harmless nodes (no GPU, fuse, kvm, kmsg, log socket), and a world-writable unix socket
    of the host that the setup scan found is not connectable; without namespaces it is (the control)."""
    _needs_mntns(info)
    want = ["fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"]
    lister = ("import os\nopen('/dev/null', 'w').write('x')\n"
              "print(sorted(os.listdir('/dev')), len(open('/dev/urandom', 'rb').read(8)))\n")
    assert _checked(info, lister, stdio(("", f"{want} 8\n"))).reason == "correct"
    d = _host_dir()
    server = socket.socket(socket.AF_UNIX)
    try:
        path = str(d / "service.sock")
        server.bind(path)
        server.listen(8)
        server.setblocking(False)
        os.chmod(path, 0o777)
        os.chmod(d, 0o755)
        fresh = Isolation(hide=(f"/nonexistent-{uuid.uuid4().hex}",))  # a new setup: its scan sees the socket
        assert path in sandbox_runner.setup_for(fresh).specials
        client = (f"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({path!r})\n    print('connected')\n"
                  "except OSError:\n    print('refused')\n")
        assert _checked(info, client, stdio(("", "refused\n")), isolation=fresh).reason == "correct"
        with pytest.raises(BlockingIOError):
            server.accept()
        assert _checked(info, client, stdio(("", "connected\n")), isolation=Isolation(namespaces=False)).reason == "correct"
    finally:
        server.close()
        for p in d.iterdir():
            p.unlink()
        d.rmdir()


def _host_shm_keys() -> set[int]:
    with open("/proc/sysvipc/shm") as f:
        return {int(line.split()[0]) for line in list(f)[1:] if line.split()}


def test_a_sysv_shared_memory_segment_does_not_survive(info):
    _needs_drop(info)
    if not info.get("ipcns"):
        pytest.skip("no IPC namespace here")
    key = random.randrange(1 << 20, 1 << 30)
    program = (f"import ctypes\nshmid = ctypes.CDLL(None).shmget({key}, 4096, 0o1000 | 0o666)\n"  # IPC_CREAT
               "print('created' if shmid >= 0 else 'failed')\n")
    assert _checked(info, program, stdio(("", "created\n"))).reason == "correct"
    assert key not in _host_shm_keys()
    # Control: without an IPC namespace the very same segment is left on the host.
    assert _checked(info, program, stdio(("", "created\n")), isolation=Isolation(namespaces=False)).reason == "correct"
    libc = ctypes.CDLL(None)
    try:
        assert key in _host_shm_keys()
    finally:
        shmid = libc.shmget(key, 0, 0)
        if shmid >= 0:
            libc.shmctl(shmid, 0, None)  # IPC_RMID


def test_no_user_namespace_can_be_created_inside(info):
    _needs_mntns(info)
    program = ("import ctypes\nok = ctypes.CDLL(None).unshare(0x10000000) == 0\n"  # CLONE_NEWUSER
               "print('created' if ok else 'refused')\n")
    control = _checked(info, program, stdio(("", "created\n")), isolation=Isolation(namespaces=False))
    if control.reason != "correct":
        pytest.skip("this host refuses user namespaces to the sandbox uid anyway: nothing to show")
    assert info["userns_blocked"]
    assert _checked(info, program, stdio(("", "refused\n"))).reason == "correct"


KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219)}.get(os.uname().machine)  # add_key, keyctl


def _as_uid(uid: int, fn) -> int:
    """fn() in a forked child running as uid; its return value (a small int) as the exit status."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _key_present(uid: int, desc: bytes) -> bool:
    libc = ctypes.CDLL(None)
    return _as_uid(uid, lambda: int(libc.syscall(KEYCTL[1], 10, -4, b"user", desc, 0) > 0)) == 1  # KEYCTL_SEARCH @u


def test_the_uid_keyrings_do_not_carry_state(info):
    """A key the candidate adds to its user keyring (which the kernel keeps after its processes exit, for every
    later process of that uid) is gone after the run and not seen by the next run."""
    _needs_drop(info)
    if KEYCTL is None:
        pytest.skip(f"keyctl syscall numbers unknown on {os.uname().machine}")
    desc = f"sdzero-{uuid.uuid4().hex}".encode()
    add = (f"import ctypes\nk = ctypes.CDLL(None).syscall({KEYCTL[0]}, b'user', {desc!r}, b'state', 5, -4)\n"
           "print('added' if k > 0 else 'failed')\n")
    setup = sandbox_runner.setup_for(Isolation())
    with sandbox_runner.sandbox_slot(setup, time.monotonic() + 60) as slot:
        run = sandbox_runner.run_sandbox({"mode": "stdio", "program": add}, None, b"", FAST, setup, slot,
                                         time.monotonic() + FAST.candidate_time_s)
    assert run.stdout == b"added\n" and run.setup["uid"] in info["uids"]
    assert not _key_present(run.setup["uid"], desc)
    search = (f"import ctypes\nk = ctypes.CDLL(None).syscall({KEYCTL[1]}, 10, -4, b'user', {desc!r}, 0)\n"
              "print('found' if k > 0 else 'none')\n")
    assert _checked(info, search, stdio(("", "none\n"))).reason == "correct"
    # Control: outside the sandbox the kernel does keep such a key from one process of a uid to the next.
    libc, uid = ctypes.CDLL(None), run.setup["uid"]
    assert _as_uid(uid, lambda: int(libc.syscall(KEYCTL[0], b"user", desc, b"state", 5, -4) > 0)) == 1
    try:
        assert _key_present(uid, desc)
    finally:
        _as_uid(uid, lambda: int(libc.syscall(KEYCTL[1], 7, -4) == 0))  # KEYCTL_CLEAR


# ----------------------------------------------------------------------------------------------------------
# Results that cannot be read are the candidate's runtime_error


UNREADABLE = {
    "deeply nested return value": "def f(x):\n    v = []\n    for _ in range(100000):\n        v = [v]\n    return v\n",
    "encoder sends deep JSON": ("import json\njson.dumps = lambda *a, **k: '[' * 200000 + ']' * 200000\n"
                                "def f(x):\n    return x + 1\n"),
    "encoder recurses": ("import json\ndef loop(*a, **k):\n    return loop(*a, **k)\njson.dumps = loop\n"
                         "def f(x):\n    return x + 1\n"),
    "reply over the output limit": ("import json\njson.dumps = lambda *a, **k: '[\"value\", \"' + 'x' * (9 << 20) + '\"]'\n"
                                    "def f(x):\n    return x + 1\n"),
    "reply is not JSON": "import json\njson.dumps = lambda *a, **k: 'ok'\ndef f(x):\n    return x + 1\n",
    "huge int": "def f(x):\n    return 10 ** 5000\n",
}


@pytest.mark.parametrize("name", list(UNREADABLE))
@pytest.mark.parametrize("kind", ["call", "assert_parsed", "assert_raw"])
def test_unreadable_results_are_a_runtime_error(info, name, kind):
    limits = Limits(time_limit_s=5.0, startup_slack_s=5.0)
    verdict = _checked(info, UNREADABLE[name], TASKS[kind], limits=limits)
    assert verdict.reason == "runtime_error", verdict


def test_the_parent_reads_any_results_file_without_raising():
    plan = sandbox._plan(call("f", ([1], 2)))
    for payload in ("[" * 100000 + "]" * 100000, "{" * 5000, "1" * 5000, "NaN", "\udcff", '{"__dict__": 5}'):
        lines = [("setup", "ok", "{}"), ("load", "ok", "null"), ("0", "ok", payload), ("done", "ok", "null")]
        run = sandbox_runner.Run(0, lines, b"", b"", False, {})
        assert sandbox._tests_verdict(run, plan, "p").reason in ("runtime_error", "mismatch"), payload
    assert sandbox_runner._setup_report([("setup", "ok", "[" * 100000)]) is None


def _mq(name: bytes, flags: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    mq_open = getattr(libc, "mq_open", None) or ctypes.CDLL("librt.so.1", use_errno=True).mq_open
    return mq_open(name, flags, 0o666, None)


def test_a_posix_message_queue_does_not_survive(info):
    _needs_drop(info)
    if not info.get("ipcns"):
        pytest.skip("no IPC namespace here")
    name = f"/sdzero-{uuid.uuid4().hex[:12]}".encode()
    program = _p(f'''
        import ctypes
        libc = ctypes.CDLL(None)
        mq_open = getattr(libc, "mq_open", None) or ctypes.CDLL("librt.so.1").mq_open
        print("created" if mq_open({name!r}, 0o100 | 2, 0o666, None) >= 0 else "failed")  # O_CREAT | O_RDWR
        ''')
    assert _checked(info, program, stdio(("", "created\n"))).reason == "correct"
    assert _mq(name, os.O_RDONLY) < 0  # not on the host
    # Control: without an IPC namespace it is left on the host.
    assert _checked(info, program, stdio(("", "created\n")), isolation=Isolation(namespaces=False)).reason == "correct"
    fd = _mq(name, os.O_RDONLY)
    try:
        assert fd >= 0
    finally:
        libc = ctypes.CDLL(None)
        (getattr(libc, "mq_unlink", None) or ctypes.CDLL("librt.so.1").mq_unlink)(name)
        if fd >= 0:
            os.close(fd)
