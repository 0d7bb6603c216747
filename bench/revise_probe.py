"""Task difficulty against the base model's reviser: is there an embedded arithmetic task on which the small
model's first attempts can be fixed by revision (the knob the paper points to)? No training: one held-out
evaluation per task with `--eval-revise`, giving the first-answer accuracy and how often the reviser,
given its own answer and the control phrase chosen by its reward, turns a wrong answer right (r0_corrected)
and keeps a right one right (r1_kept).

    python bench/revise_probe.py                                  # the tasks below, ~5 min each (2-core CPU)
    python bench/revise_probe.py --tasks 30:+ 30:+-

Each run is `train.py --task math --method base --eval-revise --math-max-operand N --math-ops OPS` in
<runs>/probe-op<N>-<ops> (+-* spelled pdm); finished runs with the same flags are reused and interrupted
ones resumed (common.run_train). Writes results/revise_probe.json and .md; prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import common  # bench/ is sys.path[0] when a bench script runs (tests put it on sys.path)

REPO = common.REPO
TASKS = ["30:+", "30:+-", "20:+-*", "99:+"]  # (operands 1..N, operators); 30:+ is the demo's task


def probe(task: str, args) -> dict:
    max_operand, ops = task.split(":")
    out = Path(args.runs) / f"probe-op{max_operand}-{ops.translate(str.maketrans('+-*', 'pdm'))}"
    flags = ["--task", "math", "--method", "base", "--eval-revise", "--seed", str(args.seed), "--threads",
             str(args.threads), "--math-max-operand", max_operand, f"--math-ops={ops}", *args.extra]
    common.run_train(out, flags, log=out.with_name(out.name + ".log"))
    r = json.loads((out / "results.json").read_text())
    ev = r["eval"]["eval_base"]
    return {"task": task, "max_operand": int(max_operand), "ops": ops, "model": r["model"],
            "n_questions": ev["n_questions"], "accuracy": ev["avg@k"],
            "response_len": ev["response_len"], **ev["revise"], "commit": r["commit"], "run": str(out)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=TASKS, help="N:OPS, operands 1..N and operators from +-*")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", default="runs/probe")
    p.add_argument("--results", default=str(REPO / "results"))
    p.add_argument("extra", nargs="*", help="train.py flags for every run (after --)")
    args = p.parse_args(argv)
    rows = [probe(t, args) for t in args.tasks]
    report = {"rows": rows, "commit": common.commit(), "machine": common.machine(),
              "run_commits": sorted({r["commit"] or "?" for r in rows})}
    lines = [f"The base model ({rows[0]['model']}) on {rows[0]['n_questions']} held-out questions per task, greedy; "
             f"its reviser on its own answers. Runs at commit {', '.join(report['run_commits'])}, written at "
             f"{report['commit']}; {report['machine']}. `python bench/revise_probe.py`.", "",
             "| task (operands, operators) | first answers right | reviser: wrong -> right | reviser: right kept | "
             "accuracy after one revision |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| 1-{r['max_operand']}, `{r['ops']}` | {r['accuracy']:.3f} | {r['r0_corrected']:.3f} "
                     f"({r['n_r0']} wrong) | {r['r1_kept']:.3f} ({r['n_r1']} right) | "
                     f"{r['accuracy_after_revision']:.3f} |")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "revise_probe.json").write_text(json.dumps(report, indent=2))
    (results / "revise_probe.md").write_text("\n".join(lines) + "\n")
    print(json.dumps({r["task"]: {"accuracy": round(r["accuracy"], 3), "r0_corrected": round(r["r0_corrected"], 3)}
                      for r in rows}))
    return report


if __name__ == "__main__":
    main()
