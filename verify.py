"""Rewards: the binary verdict r that every other part of SD-Zero trusts.

`check_math(response, gold) -> Verdict` decides whether a model's final answer equals the gold answer.
It never raises, and returns within HARD_TIME_LIMIT_S from any thread. `Verdict.reason` says why:
`correct`; `no_answer` (nothing to extract); `mismatch`; `parse_error` (cannot be read as mathematics);
`timeout` (the budget ran out, or the input was refused because evaluating it would exceed the budget,
e.g. `10^{10^{10}}`, or an answer longer than MAX_ANSWER_CHARS); `verifier_error` (no verdict: the sympy
worker exited before it was ready, was not ready within its STARTUP_S, or died twice on one request;
`sympy_worker.last_failure()` says why, `sympy_worker.probe()` asks before a run).

What it checks, in order:
  1. Extraction (verifiers/math_extract.py): only the last MAX_TAIL_CHARS characters after the last
     `</think>` (a `<think>` opened after it and never closed means no answer), inside the last
     `<answer>...</answer>` if any. The LAST brace-matched non-empty `\\boxed{}`/`\\fbox{}`, with the boxes
     stated together with it: joined by separators (`\\quad \\text{and} \\quad`, commas, `\\( \\)`, `\\[ \\]`;
     also by short prose when the gold has several values) they form one list; joined by an alternative
     ("or", "maybe", "possibly", "alternatively", `(or ...)`) a hedge. Without a box: the last answer marker
     ("final answer is X", "the (correct) answer is X", "Answer: X", a `Final Answer` heading, "#### X"), whose
     sentence gives the math after its last copula (`The largest $n$ is 34.` -> 34), else its last number;
     or a response that is nothing but math (`$\\frac13$`, `-5`). There is deliberately no "last number
     anywhere" fallback: it would reward any number that happens to appear in the working. The gold is read
     as the final answer it states (`gold_answer`: after GSM8K's `####`, its box, its answer marker).
  2. Hedges never score: every value the response states must equal the gold. A box and a later answer
     marker with another value are two statements (unless the work between them derives the marker's
     value: the box was a step); a box taken back by a statement about its own value ("but that is wrong",
     "scratch that", "I made a mistake", the reviser's r = 0 phrase) does not count, while a remark about
     another value, option or slip ("6 would be incorrect", "Options A and D are wrong") keeps it; a
     later value stated as a correction or an alternative ("Actually, it's 7", "or maybe 6") is a second
     statement.
     Only a gold with that many values takes the alternatives of a hedge, as one list (`x = 1 \\text{ or }
     x = -1` for gold `\\pm 1`). A list of candidates never scores: a list only matches a list.
  3. Normalisation (verifiers/math_compare.py, as are 4-6; linear string work): delimiters, `\\left/\\right`,
     spacing, `\\dfrac`/`\\cfrac`/`\\frac13`/`\\sqrt2`, `\\$`, units in `\\text{}` or as trailing words, degrees,
     thousands separators in every spelling (`1,000`, `1{,}000`, `14 {, }916`, `11,\\! 111`, `1\\,000`, thin
     spaces; `32, 349` is a pair), ASCII `>=`/`<=`/`!=`, unicode (`\u00bd`, `3\u00bd`, `\u2212`, `\u00b2`), a
     leading phrase (`\\text{The area is } 6`), `x \\in`, `(x, y) =`, `\\emptyset`, multiple-choice letters.
  4. Structure: tuples and intervals compare in order with their brackets (`(1, 2]` is not `(1, 2)`); one
     variable's inequality states an interval (`x \\ge 2` is `[2, \\infty)`); sets and bare lists (MATH's
     "enter all solutions", golds separated by `,`, `;` or "or") in any order, each element used once;
     unions of intervals in any order; `a \\pm b` is {a+b, a-b}; a chain is its two relations.
  5. Scalars: a label compares by its value (`x = 3`, `AB=4`, `|AB|=1`, `f(x)=1`, `V_1:V_2=11:21`, `3 = x`);
     `12 + 15 = 27` as `27`. Percent: `v%` on one side matches `v` or `v/100` on the other (`25` never matches
     `0.25`). Bases: digit strings in the same base (`1011_2` is `1011_{2}` and `1011`, not `11` or
     `1011_3`). Words compare case- and space-insensitively.
  6. Exact numbers: integers of up to MAX_SCALAR_CHARS digits, decimals, fractions, mixed numbers, repeating
     decimals, scientific notation, integer powers (`10^{309}`) compare as `fractions.Fraction`, in this
     process without sympy: about 0.1 ms. The decimal policy, one for every gold: a decimal matches a value
     it gives to DECIMAL_REL_TOL (about double precision), rational or not (`0.0833333333333333` is 1/12 and
     `0.7071067811865476` is sqrt(2)/2; `0.333333` and `1.41421356` are not).
  7. Everything else goes to sympy, in a worker process (verifiers/sympy_worker.py): size guards refuse
     towers, huge powers, factorials, binomials and long inputs; latex2sympy2_extended (math-verify's parser,
     what TRL, verl and open-r1 grade with) reads both sides, decimals made exact first; then exact,
     symbolic and numeric comparison (that file's docstring says how). The library reads the LaTeX; the
     policy above (what counts as the answer, hedges, exact numbers, guards, the budget) is ours, because no
     grader we measured holds it (bench/verify.py: math-verify scores hedges and `1/2004! = 1/2006!` and has
     no time bound in-process).

Each limit named here is defined in the file that enforces it.

Time: the parent's work is linear in the response (the tail cap, whitespace collapsed first, no pattern
that backtracks over a run); sympy runs only in a worker process, started lazily and reused, and the parent
never imports sympy. A request has a soft limit in the worker (`SYMPY_TIME_LIMIT_S`: it answers `timeout`
and lives on); the whole call has a wall-clock limit in the parent (`HARD_TIME_LIMIT_S`, a worker's start
and the wait while it serves another thread included): past it the worker's process group is killed.

What it does not do:
  * Decide what the guards refuse: `10^{10^{10}}` against `10^{10000000000}` is `timeout`, not `correct`.
    Sums, products, integrals and limits are refused.
  * Read unmarked prose: `Therefore $x \\ge 5$ is the solution.` (no box, marker or bare answer) is `no_answer`.
  * Convert units (`5 \\text{ km}` equals `5`, and so does `5 \\text{ m}`) or formats other than intervals:
    a column vector does not match a tuple, degrees do not match radians.
  * Give plain text to `sympy.sympify` (it calls `eval`): everything goes through the LaTeX parser.

`check_code(response, task) -> Verdict` is the code reward: the program in the response run against the
task's tests in the sandbox of verifiers/sandbox.py, whose docstring states the task schema, the reasons
(CODE_REASONS) and what the sandbox protects. `task_problem(task)` is its validator (why a dataset row
cannot be graded); `rewards` is what the trainer calls, for a batch of either kind.
"""
from __future__ import annotations

import math
import time
from fractions import Fraction

from verifiers import sandbox, sympy_worker
from verifiers.math_compare import MAX_ANSWER_CHARS, _HEDGE_RE, _as_sequence, _compare, _NeedSympy, _normalize, _Refused
from verifiers.math_extract import _MARKER_RE, _final_answers, extract_answer
from verifiers.sandbox import check_code, task_problem
from verifiers.verdict import CODE_REASONS, REASONS, UNAVAILABLE, Verdict

__all__ = ["CODE_REASONS", "HARD_TIME_LIMIT_S", "REASONS", "RewardUnavailable", "UNAVAILABLE", "Verdict", "check_code",
           "check_math", "extract_answer", "gold_answer", "probe", "rewards", "task_problem", "unavailable",
           "verdicts"]

HARD_TIME_LIMIT_S = 4.5  # wall-clock limit of one check_math call, a worker's start and wait included: then `timeout`


def gold_answer(gold) -> str | None:
    """The final answer a gold states, as check_math reads it: a number as its text; after GSM8K's `####` (the
    text after the last one, thousands commas removed, as data/'s gsm8k mapping reads it); a solution's last
    box; the answer of an answer marker (`Answer: 43`, `The answer is 56.`); else the gold itself. None when
    it states none (not a string or a number)."""
    if isinstance(gold, (int, Fraction)) and not isinstance(gold, bool):
        return str(gold)
    if isinstance(gold, float) and math.isfinite(gold):
        return repr(gold)
    if not isinstance(gold, str):
        return None
    if "####" in gold:
        return gold.split("####")[-1].strip().replace(",", "")
    if "\\boxed" in gold or "\\fbox" in gold or _MARKER_RE.search(gold):
        return extract_answer(gold) or gold
    return gold


def _gold_values(gold: str) -> str:
    """The normalised gold; a gold list written with `or` (`x = 1 \\text{ or } x = -1`) as a comma list."""
    return _HEDGE_RE.sub(",", _normalize(gold))


def _decide(a: str, b: str, deadline: float) -> str:
    if not a:
        return "no_answer"
    try:
        return _compare(a, b, None)
    except _NeedSympy:
        return sympy_worker.ask(a, b, deadline)


def check_math(response: str, gold: str) -> Verdict:
    """Verdict on whether `response`'s final answer equals `gold`. Never raises; returns within HARD_TIME_LIMIT_S,
    from any thread."""
    deadline, extracted = time.monotonic() + HARD_TIME_LIMIT_S, None
    try:
        stated = (gold_answer(gold) or "").strip() or None
        if stated is not None and len(stated) > MAX_ANSWER_CHARS:
            raise _Refused("timeout", "gold too long")
        b = _gold_values(stated) if stated else ""
        gold_list = _as_sequence(b) if b else None
        many = gold_list is not None and gold_list[0] in ("list", "\\{\\}")  # several values, all to be given
        statements = _final_answers(response, len(gold_list[1]) if many or gold_list and gold_list[0] == "()" else 1)
        if statements is None:
            return Verdict(False, "no_answer", None)
        extracted = " \\text{ or } ".join(statements)
        if not b:
            return Verdict(False, "parse_error", extracted)
        if len(extracted) > MAX_ANSWER_CHARS:
            return Verdict(False, "timeout", extracted)
        # Every value the response states must equal the gold: a hedge (`2 or 3`) scores only when the gold
        # itself has that many values, and then the alternatives of one statement form one list.
        reason = "correct"
        for statement in statements:
            alternatives = [x.strip() for x in _HEDGE_RE.split(_normalize(statement))]
            for a in [", ".join(alternatives)] if many else alternatives:
                reason = _decide(a, b, deadline) if reason == "correct" else reason
        return Verdict(reason == "correct", reason, extracted)
    except _Refused as refused:
        return Verdict(False, refused.reason, extracted)
    except Exception:  # noqa: BLE001 -- the contract: never raise, whatever the input
        return Verdict(False, "parse_error", extracted)


class RewardUnavailable(RuntimeError):
    """No reward exists for some responses of a batch: the verifier itself failed on them (a reason in
    UNAVAILABLE). A 0 would be a silent lie, so the batch contract raises. str() is one line: how many, why,
    and what to do; `verdicts` holds the whole batch's verdicts, so that a caller can count them."""

    def __init__(self, message: str, batch: list[Verdict]):
        super().__init__(message)
        self.verdicts = batch


def unavailable(batch: list[Verdict], task: str) -> str | None:
    """One line on the verdicts of `batch` that are no verdict (None when there are none): how many, the cause
    and what to do. A malformed code task (bad_task) gives none either: it is the dataset's to fix."""
    failed = [v for v in batch if v.reason in UNAVAILABLE or v.reason == "bad_task"]
    if not failed:
        return None
    bad = next((v for v in failed if v.reason == "bad_task"), None)
    if bad is not None:
        cause = f"{bad.detail} The task schema is in verifiers/sandbox.py's docstring and the README (Local files)"
    elif task == "code":
        cause = sandbox.sandbox_problem() or ("the sandbox failed to start a candidate twice in a row "
                                              f"({failed[0].detail or 'no report'}); see the log above")
    else:
        cause = (sympy_worker.last_failure() or "its sympy worker could not answer") + \
            "; check that `pip install -r requirements.txt` installed sympy and latex2sympy2_extended"
    return f"the {task} reward cannot be computed for {len(failed)} of {len(batch)} responses: {cause}"


def verdicts(responses: list[str], answers: list, task: str, *, strict: bool = True,
             workers: int | None = None) -> list[Verdict]:
    """The verdict on each response: math answers through check_math; code tasks (dicts) through the sandbox,
    all candidates of the batch at once on a pool sized to the cores. RewardUnavailable when the verifier failed
    on any of them (check_math and check_code return such verdicts; a batch, which a trainer turns into rewards,
    never does), unless strict=False (the caller checks `unavailable` itself: run.Run, after gathering ranks).
    workers: the code pool's threads (default: the usable cores; a trainer under torchrun gives each rank its
    share, as the machine's sandbox slots are shared)."""
    if task not in ("math", "code"):
        raise ValueError(f"task {task!r}: expected 'math' or 'code'")
    if len(responses) != len(answers):
        raise ValueError(f"{len(responses)} responses but {len(answers)} answers")
    if task == "code":
        batch = list(sandbox.check_code_batch(responses, answers, workers=workers))
    else:
        batch = [check_math(y, a) for y, a in zip(responses, answers)]
    problem = unavailable(batch, task) if strict else None
    if problem:
        raise RewardUnavailable(problem, batch)
    return batch


def rewards(responses: list[str], answers: list, task: str) -> list[int]:
    """r(y, a) in {0, 1} for each response (verdicts' correct); RewardUnavailable where there is none."""
    return [int(v.correct) for v in verdicts(responses, answers, task)]


def probe(task: str) -> str | None:
    """Why the task's verifier cannot run on this machine (one line, with what to do), or None when it can: the
    sandbox's setup probe (code), the sympy worker's start and first answer (math). A trainer asks before its
    model loads."""
    if task == "code":
        return sandbox.sandbox_problem()
    problem = sympy_worker.probe()
    return None if problem is None else (f"the math reward cannot run: {problem}; check that `pip install -r "
                                         "requirements.txt` installed sympy and latex2sympy2_extended")
