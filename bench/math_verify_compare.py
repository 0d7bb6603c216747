"""Run Hugging Face's math-verify on a case set, each case under a hard time limit.

    from bench.math_verify_compare import run_math_verify, load_cases
    verdicts = run_math_verify(load_cases(), timeout_s=10.0)   # list of True / False / None

math-verify 0.9.0 is in requirements.txt (verify.py uses only its parser, latex2sympy2_extended). It runs in
a worker subprocess, started once and reused: a case that runs past `timeout_s` gets None and the worker
is killed and restarted, so one hang cannot stop the measurement. The library's own signal timeouts
(5 s for parsing and for verifying, its defaults) stay on: this is math-verify as shipped.

How it is called, per math-verify's README: gold = `parse("$" + gold + "$")` (a bare gold string is not
extracted without delimiters; a gold that holds `\\boxed{}` is parsed as it is; if the `$...$` form yields
nothing, the bare string is tried), answer = `parse(response)`, verdict = `verify(gold, answer)`.

`python bench/math_verify_compare.py [cases.jsonl]` prints the agreement with the expected verdicts of
math-verify and of `verify.check_math`, and the per-check time of each, as one JSON line.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "bench" / "math_cases.jsonl"
START_TIMEOUT_S = 120.0  # importing math-verify (sympy, antlr) takes a few seconds on a busy machine

_WORKER = r"""
import json, os, sys, time
replies = os.fdopen(os.dup(1), "w")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the library's prints must not corrupt the replies
from math_verify import parse, verify

def parse_gold(gold):
    if "\\boxed" in gold or "\\fbox" in gold:
        return parse(gold)
    return parse("$" + gold + "$") or parse(gold)

replies.write("ready\n"); replies.flush()
for line in sys.stdin:
    case = json.loads(line)
    start = time.perf_counter()
    try:
        verdict = bool(verify(parse_gold(str(case["gold"])), parse(str(case["response"]))))
    except Exception:
        verdict = None
    replies.write(json.dumps({"verdict": verdict, "seconds": time.perf_counter() - start}) + "\n")
    replies.flush()
"""


def load_cases(path: str | Path = CASES) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class _MathVerifyWorker:
    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed whole on a timeout
            text=True,
        )
        if self._read_line(START_TIMEOUT_S) != "ready":
            self.kill()
            raise RuntimeError("math-verify worker did not start (is math-verify installed?)")

    def _read_line(self, timeout_s: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self.proc.stdout.readline()  # a reply is one short line, written at once
        return line.strip() if line else None

    def check(self, case: dict, timeout_s: float) -> tuple[bool | None, float]:
        self.proc.stdin.write(json.dumps({"response": case["response"], "gold": case["gold"]}) + "\n")
        self.proc.stdin.flush()
        line = self._read_line(timeout_s)
        if line is None:
            raise TimeoutError
        reply = json.loads(line)
        return reply["verdict"], reply["seconds"]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def run_math_verify_timed(cases: list[dict], timeout_s: float = 10.0) -> list[tuple[bool | None, float]]:
    """(verdict, seconds) per case; verdict None on a timeout (seconds = timeout_s) or an error."""
    results, worker = [], None
    try:
        for case in cases:
            worker = worker or _MathVerifyWorker()
            start = time.perf_counter()
            try:
                results.append(worker.check(case, timeout_s))
            except (TimeoutError, BrokenPipeError, json.JSONDecodeError):
                worker.kill()
                worker = None
                results.append((None, time.perf_counter() - start))
    finally:
        if worker is not None:
            worker.kill()
    return results


def run_math_verify(cases: list[dict], timeout_s: float = 10.0) -> list[bool | None]:
    """math-verify's verdict per case: True / False, or None on a timeout or an error."""
    return [verdict for verdict, _ in run_math_verify_timed(cases, timeout_s)]


def _summary(name: str, cases: list[dict], results: list[tuple[bool | None, float]]) -> dict:
    seconds = sorted(s for _, s in results)
    return {
        f"{name}_agree": sum(v is not None and v == c["expected"] for c, (v, _) in zip(cases, results)),
        f"{name}_none": sum(v is None for v, _ in results),
        f"{name}_median_ms": round(1000 * seconds[len(seconds) // 2], 2),
        f"{name}_mean_ms": round(1000 * sum(seconds) / len(seconds), 2),
        f"{name}_max_ms": round(1000 * seconds[-1], 1),
    }


def main() -> None:
    sys.path.insert(0, str(ROOT))
    import verify

    cases = load_cases(sys.argv[1] if len(sys.argv) > 1 else CASES)
    ours = []
    for case in cases:
        start = time.perf_counter()
        ours.append((verify.check_math(case["response"], case["gold"]).correct, time.perf_counter() - start))
    theirs = run_math_verify_timed(cases)
    print(json.dumps({"cases": len(cases), **_summary("ours", cases, ours), **_summary("math_verify", cases, theirs)}))


if __name__ == "__main__":
    main()
