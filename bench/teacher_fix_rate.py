"""Does the Phase 2 teacher know the right answer where the student's is wrong? From the runs' samples.jsonl.

    python bench/teacher_fix_rate.py runs/table/opsd-s0 runs/table/opsd-s1 ... runs/table/sdpo-s2

For every logged Phase 2 sample of the embedded arithmetic task whose answer is wrong (r = 0), at the first
digit of the result after "a + b = " that differs from the gold answer: how often the teacher's most likely
token (samples.jsonl's teacher_top) is the gold digit, and how often it is the student's wrong digit. A
teacher that steers the student to the answer prefers the gold digit; one that only repeats the student
prefers its digit. Groups the folders by method (results.json) and prints one JSON line per method.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def first_wrong_digit(sample: dict) -> tuple[str, str, str] | None:
    """(gold digit, sampled digit, teacher's top token) at the first wrong digit after "= ", or None."""
    toks, top, gold = sample["tokens"], sample["teacher_top"], str(sample["answer"])
    start = next((i + 2 for i in range(len(toks) - 2) if toks[i] == "Ġ=" and toks[i + 1] == "Ġ"), None)
    if start is None:
        return None
    digits = []
    for t in toks[start:]:
        if not t.isdigit():
            break
        digits.append(t)
    for d, (a, b) in enumerate(zip(digits, gold)):
        if a != b:
            return (b, a, top[start + d]) if start + d < len(top) else None
    return None


def fix_rates(runs: list[Path]) -> dict:
    by_method: dict = {}
    for run in runs:
        method = json.loads((run / "results.json").read_text())["method"]
        counts = by_method.setdefault(method, {"runs": 0, "wrong_samples": 0, "teacher_gold": 0, "teacher_same": 0})
        counts["runs"] += 1
        for line in (run / "samples.jsonl").read_text().splitlines():
            sample = json.loads(line)
            if sample.get("phase") != "p2" or sample.get("r") != 0:
                continue
            found = first_wrong_digit(sample)
            if found:
                gold, sampled, top = found
                counts["wrong_samples"] += 1
                counts["teacher_gold"] += top == gold
                counts["teacher_same"] += top == sampled
    for counts in by_method.values():
        n = max(1, counts["wrong_samples"])
        counts["share_gold"], counts["share_same"] = counts["teacher_gold"] / n, counts["teacher_same"] / n
    return by_method


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    rates = fix_rates(p.parse_args(argv).runs)
    for method, counts in rates.items():
        print(json.dumps({"method": method, **counts}))
    return rates


if __name__ == "__main__":
    main()
