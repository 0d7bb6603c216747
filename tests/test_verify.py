"""Tests for verify.check_math / extract_answer: right and wrong answers, and inputs that try to break it.

Verdicts only: no test asserts wall-clock time (these machines are noisy), but every pathological input
here is refused before sympy, so the whole file runs in seconds.
"""
import os
import signal
import subprocess
import sys
import threading

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import verify  # noqa: E402
from verify import Verdict, check_math, extract_answer  # noqa: E402


def reason(response, gold):
    v = check_math(response, gold)
    assert isinstance(v, Verdict)
    assert v.reason in verify.REASONS
    assert v.correct == (v.reason == "correct")
    return v.reason


# ---------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "response, expected",
    [
        (r"First \boxed{3}, then \boxed{5}.", "5"),  # last box wins
        (r"\boxed{5} and later \boxed{}", "5"),  # empty box ignored
        (r"\boxed{ } so \fbox{7}", "7"),
        (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}"),  # nested braces
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not close the box
        (r"$\boxed 5$", "5"),
        ("So the final answer is 42.", "42"),
        ("The answer is $\\frac{3}{4}$.", r"\frac{3}{4}"),
        ("Answer: 3.5\nmore text", "3.5"),
        ("answer: -7", "-7"),
        ("**Final Answer:** **12**", "12"),
        ("The answer is 4. Wait, the answer is 5.", "5"),  # last marker wins
        (r"The final answer is 27. The final answer is $\boxed{}$.", "27"),  # empty-box marker skipped
        (r"\boxed{3} then the answer is 4.", "3"),  # a box beats any marker
        (r"<think>\boxed{3}</think> The answer is 4.", "4"),  # only text after </think>
        (r"<think>a</think>b</think>\boxed{9}", "9"),
        (r"\boxed{8} and then \boxed{\frac{1}{2}", "8"),  # unbalanced last box is not a box
    ],
)
def test_extract(response, expected):
    assert extract_answer(response) == expected


@pytest.mark.parametrize(
    "response",
    [
        "",
        "12 + 15 = 27",  # no last-number-anywhere fallback
        r"The result is \boxed{}.",
        r"\boxed{ } and the final answer is $\boxed{}$.",
        r"\boxed{\frac{1}{2}",
        "The answer is\n27",
        r"<think>The answer is 4.</think> I am not sure.",
        None,
        12,
    ],
)
def test_no_answer(response):
    assert extract_answer(response) is None
    assert reason(response, "27") == "no_answer"


# ---------------------------------------------------------------------------------------------- realistic outputs


def test_smollm2_style_empty_box_then_marker():
    response = (
        "To find 12 + 15, we add them. 12 + 15 = 27. "
        "So, the final answer is $\\boxed{}$... the final answer is 27."
    )
    v = check_math(response, "27")
    assert v == Verdict(True, "correct", "27")
    wrong = response.replace("is 27.", "is 26.")
    assert check_math(wrong, "27") == Verdict(False, "mismatch", "26")


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("We have 3 apples and buy 4 more, so 7 apples. The answer is 7 apples.", "7", "correct"),
        ("12 * 3 = 36\nAnswer: 36", "36", "correct"),
        ("12 * 3 = 36\nAnswer: 35", "36", "mismatch"),
        ("So the final answer is 12 + 15 = 27.", "27", "correct"),
        ("So the final answer is 12 + 15 = 28.", "27", "mismatch"),
        ("The answer is twenty-seven.", "27", "mismatch"),
        ("The total is $\\boxed{27}$ dollars.", "27", "correct"),
        ("I think it is 27.", "27", "no_answer"),
    ],
)
def test_realistic(response, gold, expected):
    assert reason(response, gold) == expected


# ---------------------------------------------------------------------------------------------- exact numbers


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("27", "27"),
        ("27.0", "27"),
        ("1,000", "1000"),
        ("1{,}000", "1000"),
        ("1,\\!000", "1000"),
        ("1,000,000.5", "1000000.5"),
        ("-5", "-5"),
        ("- 5", "-5"),
        ("\\$5", "5"),
        ("\\$5.00", "5"),
        ("25\\%", "25"),
        ("90^\\circ", "90"),
        ("5 \\text{ cm}", "5"),
        ("\\text{5}", "5"),
        ("1/3", "\\frac{1}{3}"),
        ("\\frac13", "1/3"),
        ("\\dfrac{3}{4}", "0.75"),
        ("\\tfrac{3}{4}", ".75"),
        ("-\\frac{1}{2}", "-0.5"),
        ("\\frac{-1}{2}", "-1/2"),
        ("4 4/9", "\\frac{40}{9}"),
        ("2\\frac{1}{2}", "5/2"),
        ("1.5 \\times 10^3", "1500"),
        ("2.5e-4", "0.00025"),
        ("x = 3", "3"),
        ("k=27", "27"),
        ("{27}", "27"),
    ],
)
def test_numbers_correct(answer, gold):
    assert reason(f"\\boxed{{{answer}}}", gold) == "correct"


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("26", "27"),
        ("-27", "27"),
        ("0.333", "\\frac{1}{3}"),  # exact: a rounded decimal is not 1/3
        ("0.3333333333", "1/3"),
        ("1.000", "1000"),
        ("32, 349", "32349"),  # a tuple, not a thousands separator
        ("100000000000000000001", "100000000000000000000"),  # floats would equate these
        ("1/0", "1"),
    ],
)
def test_numbers_wrong(answer, gold):
    assert not check_math(f"\\boxed{{{answer}}}", gold).correct


def test_integer_fast_path_does_not_import_sympy():
    code = (
        "import sys, verify\n"
        "assert verify.check_math('so \\\\boxed{1,000}', '1000').correct\n"
        "assert verify.check_math('the final answer is 26.', '27').reason == 'mismatch'\n"
        "assert verify.check_math('\\\\boxed{\\\\frac{3}{4}}', '0.75').correct\n"
        "assert 'sympy' not in sys.modules\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


def test_gold_forms():
    assert reason("\\boxed{27}", 27) == "correct"
    assert reason("\\boxed{27}", "The answer is $\\boxed{27}$.") == "correct"
    assert reason("\\boxed{27}", "") == "parse_error"
    assert reason("\\boxed{27}", None) == "parse_error"


# ---------------------------------------------------------------------------------------------- sympy path


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("\\frac{1}{3}", "1/3"),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
        ("x=3", "3"),
        ("2x+1", "1+2x"),
        ("x(x+1)", "x^2+x"),
        ("x^2-1", "(x-1)(x+1)"),
        ("3\\sqrt{2}", "\\sqrt{18}"),
        ("2\\pi", "\\pi \\cdot 2"),
        ("e^{i\\pi}", "-1"),
        ("\\left(\\frac{1}{2}\\right)^2", "\\frac14"),
        ("0.7071067811865476", "\\frac{\\sqrt{2}}{2}"),  # numeric check, relative tolerance 1e-9
        ("y = 2x + 1", "y = 1 + 2x"),
        ("x \\geq 5", "5 \\le x"),
        ("(1, 2)", "(1,2)"),
        ("\\{2, 1\\}", "\\{1, 2\\}"),
        ("\\left(\\frac{1}{2}, \\sqrt{4}\\right)", "(0.5, 2)"),
        ("2^{2023}", "2^{2023}"),
        ("\\frac{1}{2004!}", "\\frac{2005 \\cdot 2006}{2006!}"),
    ],
)
def test_sympy_correct(answer, gold):
    assert reason(f"\\boxed{{{answer}}}", gold) == "correct"


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("2x+2", "1+2x"),
        ("\\sqrt{2}", "1.41421356"),  # outside the relative tolerance
        ("\\frac{1}{2004!}", "\\frac{1}{2006!}"),  # tiny but different: no float underflow to 0 == 0
        ("\\pi", "3.14159"),
        ("x \\le 5", "x < 5"),
        ("(1, 2]", "(1, 2)"),  # interval ends matter
        ("(1, 2, 3)", "(1, 2)"),
        ("1, 2, 3, 4, 5", "3"),  # a list of candidates never scores
        ("\\{1, 2\\}", "(1, 2)"),
        ("y = 2x", "x = 2y"),
    ],
)
def test_sympy_wrong(answer, gold):
    assert not check_math(f"\\boxed{{{answer}}}", gold).correct


@pytest.mark.parametrize(
    "answer",
    ["5 \\text{ or } 7", "5 or 7", "5 \\text{or} 7", "either 5 or 7", "5 \\lor 7", "5 \\vee 7"],
)
def test_hedges_never_score(answer):
    assert reason(f"\\boxed{{{answer}}}", "5") == "mismatch"
    assert reason(f"So the final answer is {answer}.", "7") == "mismatch"


def test_text_answers():
    assert reason("\\boxed{\\text{(B)}}", "B") == "correct"
    assert reason("\\boxed{\\text{Yes}}", "yes") == "correct"
    assert reason("\\boxed{on}", "no") == "mismatch"  # not the product o*n == n*o


# ---------------------------------------------------------------------------------------------- pathological


@pytest.mark.parametrize(
    "response",
    [
        "\\boxed{10^{10^{10}}}",
        "\\boxed{9^{9^{9^{9}}}}",
        "\\boxed{(10^6)!}",
        "\\boxed{(1000!)^{10000}}",
        "\\boxed{5!!!!}",
        "\\boxed{2^{100000}}",
        "\\boxed{(2^{1000})^{1000}}",
        "\\boxed{\\sum_{i=1}^{10^{9}} i}",
        "\\boxed{\\binom{10^{6}}{500000}}",
        "\\boxed{" + "9" * 10_000 + "}",
        "\\boxed{" + "x+" * 5_000 + "1}",
        "\\boxed{a" + "(b" * 40 + ")" * 40 + "}",
        "\\boxed{" + "a" * 150 + "}",
        "\\boxed{" + "{" * 3000 + "2" + "}" * 3000 + "}",
        "\\boxed{" * 5000,
        "}" * 5000 + "\\boxed{2}" + "{" * 5000,
        "the answer is " + "1+" * 5000 + "1",
        "\\boxed{\\frac{1}{0}}",
        "\\boxed{0^{-1}}",
        "\\boxed{\\sqrt{-1}}",
        "\\boxed{\\infty}",
        "\\boxed{\\\\\\\\}",
        "\\boxed{^^^}",
        "\\boxed{x^}",
        "\\boxed{\\frac{}{}}",
        "\\boxed{\\begin{pmatrix} 1 & 2 \\end{pmatrix}}",
        "\\boxed{\x00\x01\ufffd}",
        "\\boxed{__import__('os').system('echo pwned')}",
        "\\boxed{" + "<" * 100 + "}",
        "</think>" * 1000,
        "Answer:" * 2000,
    ],
)
def test_pathological_inputs_return_a_verdict(response):
    v = check_math(response, "1")
    assert isinstance(v, Verdict) and v.reason in verify.REASONS
    assert not v.correct


@pytest.mark.parametrize("gold", ["10^{10^{10}}", "(10^6)!", "{" * 500, None, 3.5, object(), b"27", ["27"]])
def test_pathological_gold(gold):
    v = check_math("\\boxed{27}", gold)
    assert isinstance(v, Verdict) and not v.correct


@pytest.mark.parametrize("response", [b"\\boxed{1}", ["\\boxed{1}"], object(), 1.0])
def test_non_string_response(response):
    assert check_math(response, "1") == Verdict(False, "no_answer", None)


def test_long_responses_extract():
    filler = "Let me think about this. " * 2000
    assert reason(filler + "So the final answer is 27.", "27") == "correct"
    assert reason(filler + "\\boxed{27}" + filler, "27") == "correct"


# ---------------------------------------------------------------------------------------------- timer


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
def test_timeout_verdict_and_timer_restored(monkeypatch):
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None):
        pytest.skip("SIGALRM is in use by the test runner")
    check_math("\\boxed{x}", "x+0")  # imports sympy outside the tiny budget below
    monkeypatch.setattr(verify, "SYMPY_TIME_LIMIT_S", 1e-6)
    assert reason("\\boxed{x^2 + 2x + 1}", "(x+1)^2") == "timeout"
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    monkeypatch.setattr(verify, "SYMPY_TIME_LIMIT_S", 2.0)
    assert reason("\\boxed{x^2 + 2x + 1}", "(x+1)^2") == "correct"


def test_works_off_the_main_thread():
    out = []
    t = threading.Thread(target=lambda: out.append(check_math("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}")))
    t.start()
    t.join()
    assert out and out[0].correct
