"""Verdict.detail: what the code verifier says went wrong on the first failing test (SDPO's environment feedback).

Each kind of failure has its exact text here; a few sandbox runs of well under a second each, one short
timeout. The fixtures and skips are those of tests/test_sandbox.py.
"""
from __future__ import annotations

import logging

import pytest
from conftest import require_sandbox

from verifiers import sandbox, sandbox_child, sandbox_feedback, sandbox_runner
from verifiers.sandbox import Limits, check_code
from verifiers.verdict import Verdict

FAST = Limits(time_limit_s=1.0, startup_slack_s=3.0)
SHORT = Limits(time_limit_s=0.2, startup_slack_s=1.0)  # a hanging test costs about 1.2 s


@pytest.fixture(scope="module")
def info():
    return require_sandbox(sandbox.sandbox_info())


@pytest.fixture(autouse=True)
def fresh(caplog):
    """No cached verdict from another test, and never a traceback logged by the parent."""
    sandbox.clear_cache()
    caplog.set_level(logging.WARNING, logger="verifiers")
    yield
    assert [r.getMessage() for r in caplog.records if r.name.startswith("verifiers.sandbox") and r.exc_info] == []


def _detail(info, program, task, limits=FAST, reason=None):
    verdict = check_code(program, task, limits=limits)
    if reason is not None:
        assert verdict.reason == reason, verdict
    assert verdict.detail is None or len(verdict.detail) <= sandbox_feedback.DETAIL_CHARS
    return verdict.detail


def stdio(*pairs):
    return {"kind": "stdio", "tests": [{"input": i, "output": o} for i, o in pairs]}


def call(entry_point, *cases):
    return {"kind": "call", "entry_point": entry_point,
            "tests": [{"args": list(args), "expected": expected} for args, expected in cases]}


def asserts(entry_point, *tests):
    return {"kind": "assert", "entry_point": entry_point, "tests": list(tests)}


ADD = stdio(("1 2\n", "3\n"), ("10 -4\n", "6\n"))


# ----------------------------------------------------------------------------------------------------------
# stdio


def test_stdio_mismatch_shows_input_expected_and_actual(info):
    program = "a, b = map(int, input().split())\nprint(a + b if a < 5 else a - b)\n"
    assert _detail(info, program, ADD, reason="mismatch") == (
        "Test 2 failed.\nInput:\n10 -4\nExpected output:\n6\nActual output:\n14")


def test_stdio_runtime_error_shows_exit_status_and_the_traceback_s_last_line(info):
    program = "a, b = map(int, input().split())\nif a > 5:\n    raise ValueError(f'too big: {a}')\nprint(a + b)\n"
    assert _detail(info, program, ADD, reason="runtime_error") == (
        "Test 2: the program exited with status 1.\nError: ValueError: too big: 10\nInput:\n10 -4")
    assert _detail(info, "import sys\nsys.exit(4)\n", stdio(("", "1\n")), reason="runtime_error") == (
        "Test 1: the program exited with status 4.\nInput:\n(empty)")  # nothing on stderr: no Error line


def test_stdio_timeout(info):
    program = "input()\nwhile True:\n    pass\n"
    assert _detail(info, program, stdio(("5\n", "5\n")), limits=SHORT, reason="timeout") == (
        "Test 1: the program ran out of time.\nInput:\n5")


def test_long_values_are_cut_and_control_characters_escaped(info):
    detail = _detail(info, "print('x' * 10000)\n", stdio(("", "y\n")), reason="mismatch")
    assert detail == ("Test 1 failed.\nInput:\n(empty)\nExpected output:\ny\nActual output:\n"
                      + "x" * 300 + " ... (9700 more characters)")
    detail = _detail(info, "print('a\\x1b[2Jb\\rc\\x00d\\te')\n", stdio(("", "y\n")), reason="mismatch")
    assert detail.endswith("Actual output:\na\\x1b[2Jb\\rc\\x00d\te")
    assert "\x1b" not in detail and "\r" not in detail and "\x00" not in detail


def test_the_whole_detail_is_capped():
    detail = sandbox_feedback.detail(lambda: "a" * 5000)
    keep = detail.index(" ")
    assert len(detail) == sandbox_feedback.DETAIL_CHARS
    assert detail == "a" * keep + f" ... ({5000 - keep} more characters)"
    assert sandbox_feedback.detail(lambda: "short") == "short"
    assert sandbox_feedback.detail(lambda: 1 / 0) is None  # a detail that cannot be made is None, never a traceback
    escaped = sandbox_feedback.shown("\x1b" * 1000)  # escaping counts against the cap too
    assert escaped == "\\x1b" * 75 + " ... (925 more characters)"


# ----------------------------------------------------------------------------------------------------------
# call and assert tasks


def test_call_mismatch_shows_the_call_expected_and_got(info):
    assert _detail(info, "def f(a, b):\n    return a * b\n", call("f", ([2, 2], 4), ([1, 2], 3)),
                   reason="mismatch") == "Test 2 failed.\nCall: f(1, 2)\nExpected: 3\nGot: 2"
    task = {"kind": "call", "entry_point": "f",
            "tests": [{"args": [[1, "a"]], "kwargs": {"k": None}, "expected": {"a": (1, 2), "s": {3}}}]}
    assert _detail(info, "def f(x, k=0):\n    return {'a': [1, 2], 'b': b'\\x00'}\n", task, reason="mismatch") == (
        "Test 1 failed.\nCall: f([1, 'a'], k=None)\nExpected: {'a': [1, 2], 's': {3}}\n"
        "Got: {'a': [1, 2], 'b': b'\\x00'}")


def test_call_raising_shows_the_exception_and_its_message(info):
    program = "def f(a, b):\n    raise ValueError('bad input ' + str(a))\n"
    assert _detail(info, program, call("f", ([1, 2], 3)), reason="runtime_error") == (
        "Test 1: f(1, 2) raised ValueError: bad input 1")
    program = "class Oops(Exception):\n    pass\ndef f(a):\n    raise Oops('custom')\n"  # not a builtin: its name
    assert _detail(info, program, call("f", ([1], 1)), reason="runtime_error") == "Test 1: f(1) raised Oops: custom"
    program = "def f(a):\n    raise ValueError('y' * 1000)\n"  # the sandbox cuts a message to 200 characters
    assert _detail(info, program, call("f", ([1], 1)), reason="runtime_error") == (
        "Test 1: f(1) raised ValueError: " + "y" * 200)


def test_call_timeout(info):
    program = "def f(a):\n    while True:\n        pass\n"
    detail = _detail(info, program, call("f", ([1], 1)), limits=SHORT, reason="timeout")
    assert detail == "Test 1: f(1) ran out of time."


def test_parsed_asserts_show_the_call_as_written(info):
    task = asserts("f", "assert f(1) == 1", "assert f(0)")
    assert _detail(info, "def f(x):\n    return x\n", task, reason="mismatch") == (
        "Test 2 failed.\nCall: f(0)\nExpected: a true value\nGot: 0")
    assert _detail(info, "def f(x):\n    return x\n", asserts("f", "assert not f(1)"), reason="mismatch") == (
        "Test 1 failed.\nCall: f(1)\nExpected: a false value\nGot: 1")
    assert _detail(info, "def f(x, k=0):\n    return x\n", asserts("f", "assert f((1, 2), k='a') == [2]"),
                   reason="mismatch") == "Test 1 failed.\nCall: f((1, 2), k='a')\nExpected: [2]\nGot: [1, 2]"


def test_raw_asserts_show_their_source_or_the_failing_line(info):
    loop = "for i in range(3):\n    assert f(i) == i + 1"
    assert _detail(info, "def f(x):\n    return x\n", asserts("f", loop), reason="mismatch") == (
        f"Test 1 failed at line 2:\n{loop}")
    assert _detail(info, "def f(x):\n    return 1 / x\n", asserts("f", loop), reason="runtime_error") == (
        f"Test 1 raised ZeroDivisionError: division by zero at line 2:\n{loop}")
    one_line = "assert abs(f(1) - 2) < 1e-6"
    assert _detail(info, "def f(x):\n    return x\n", asserts("f", one_line), reason="mismatch") == (
        f"Test 1 failed:\n{one_line}")
    check = ("METADATA = {'author': 'x'}\n\n\ndef check(candidate):\n"
             + "".join(f"    assert candidate({i}) == {i}, 'case {i}: a long enough explanation'\n" for i in range(8))
             + "    assert candidate(100) == 101\n\ncheck(f)\n")  # over 300 characters: the line, not the source
    assert _detail(info, "def f(x):\n    return x\n", asserts("f", check), reason="mismatch") == (
        "Test 1 failed at line 13:\nassert candidate(100) == 101")


def test_raw_assert_timeout(info):
    assert _detail(info, "def f(x):\n    return x\n", asserts("f", "while f(1): pass"), limits=SHORT,
                   reason="timeout") == "Test 1 ran out of time:\nwhile f(1): pass"


# ----------------------------------------------------------------------------------------------------------
# Programs that fail before any test


def test_load_time_exception(info):
    program = "print(undefined_name)\ndef f(x):\n    return x\n"
    assert _detail(info, program, call("f", ([1], 1)), reason="runtime_error") == (
        "The program raised NameError: name 'undefined_name' is not defined when it was run.")
    program = "class E(Exception):\n    def __str__(self):\n        raise RuntimeError\nraise E()\n"
    detail = _detail(info, program, call("f", ([1], 1)), reason="runtime_error")
    assert detail == "The program raised E when it was run."  # its __str__ raised: the name alone


def test_load_timeout(info):
    assert _detail(info, "while True:\n    pass\n", call("f", ([1], 1)), limits=SHORT, reason="timeout") == (
        "The program ran out of time when it was run.")


def test_parse_errors():
    assert check_code("print(1))\n", ADD).detail == "The program does not compile: unmatched ')' (line 1)."
    assert check_code("x = 1\n" * 20_000, ADD).detail == "The program is longer than 100000 characters."
    plan = sandbox._plan(call("f", ([1], 1)))  # the sandbox's interpreter refusing it (an older Python)
    lines = [("setup", "ok", "{}"), ("load", "syntax", '"SyntaxError: x"')]
    verdict = sandbox._tests_verdict(sandbox_runner.Run(0, lines, b"", b"", False, {}), plan, "p")
    assert (verdict.reason, verdict.detail) == ("parse_error", "The program does not compile.")


# ----------------------------------------------------------------------------------------------------------
# No detail, and what carries it


def test_no_detail_where_nothing_failed_or_the_program_is_not_to_blame(info):
    assert check_code("a, b = map(int, input().split())\nprint(a + b)\n", ADD, limits=FAST).detail is None
    assert check_code("def f(x):\n    return x\n", call("f", ([1], 1)), limits=FAST).detail is None
    assert check_code("", ADD).detail is None  # no_answer
    assert check_code("print(1)", {"kind": "weird"}).detail == (  # bad_task: what is wrong with the task
        "The task is malformed: kind 'weird', not stdio, call or assert.")
    assert sandbox.check_code_batch(["print(2)"], [ADD], limits=FAST, budget_s=0)[0].detail is None  # batch budget
    hang = "while True:\n    pass\n"  # cut by the batch's budget before its own limit
    cut = sandbox.check_code_batch([hang], [ADD], limits=Limits(time_limit_s=5.0), budget_s=0.5)[0]
    assert (cut.reason, cut.detail) == ("timeout", None)
    cut = sandbox.check_code_batch([hang], [call("f", ([1], 1))], limits=Limits(time_limit_s=5.0), budget_s=0.5)[0]
    assert (cut.reason, cut.detail) == ("timeout", None)  # the kill ends the candidate first: not its runtime_error
    # ...and not cached: the same slow but right program, given the time, is correct
    slow = "import time\ntime.sleep(1.5)\ndef f(x):\n    return x\n"
    sandbox.clear_cache()
    assert sandbox.check_code_batch([slow], [call("f", ([1], 1))], limits=Limits(time_limit_s=5.0),
                                    budget_s=0.5)[0].reason == "timeout"
    assert sandbox.check_code_batch([slow], [call("f", ([1], 1))], limits=Limits(time_limit_s=5.0))[0].correct
    assert Verdict(False, "mismatch", "p", "Test 1 failed.") == Verdict(False, "mismatch", "p")  # not compared


def test_the_parent_quotes_what_the_sandbox_reports_as_text_only():
    plan = sandbox._plan(call("f", ([1], 1)))
    for payload, shown in (('"Evil: \\u001b[2J"', "Evil: \\x1b[2J"), ("[1, 2]", "an exception"), ("{", "an exception"),
                           ('"' + "z" * 400 + '"', "z" * 300 + " ... (100 more characters)")):
        lines = [("setup", "ok", "{}"), ("load", "ok", "null"), ("0", "error", payload)]
        verdict = sandbox._tests_verdict(sandbox_runner.Run(0, lines, b"", b"", False, {}), plan, "p")
        assert (verdict.reason, verdict.detail) == ("runtime_error", f"Test 1: f(1) raised {shown}")


def test_the_sandbox_s_exception_text():
    text = sandbox_child._child_error_text
    assert text(ValueError("m")) == "ValueError: m" and text(ValueError()) == "ValueError"
    assert text(KeyError("k" * 500)) == "KeyError: '" + "k" * 199

    class Bad(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert text(Bad()) == "Bad"
    assert text(sandbox_child._child_exception("Oops", "m")) == "Oops: m"
    assert text(sandbox_child._child_exception("ValueError", "m")) == "ValueError: m"
    assert isinstance(sandbox_child._child_exception("KeyboardInterrupt", ""), RuntimeError)
