"""The paper's table in miniature: base, SRT, SD-Zero, its siblings OPSD and SDPO, RFT and GRPO on the embedded
math task with the demo model, several seeds, every trained method at the same generation budget (--budget).

    python bench/paper_table.py                        # 7 methods x 3 seeds, ~4 h on a 2-core CPU
    python bench/paper_table.py --methods sdzero rft --seeds 0 -- --p2-lr 1e-5   # extra train.py flags after --
    python bench/paper_table.py --methods opsd sdpo --keep-rows results/table.json  # add rows to a table
    python bench/paper_table.py --eval-every 5         # the figure draws learning curves (train.py --eval-every)

Each run is `train.py --task math --method M --seed S --budget B` in <runs>/<M>-s<S>; finished runs are reused
(only when their command was the same) and interrupted ones resumed. Writes results/table.json, table.md and
table.png (held-out accuracy against training generations) and prints one JSON line.
The paper's numbers (Qwen3-4B-Instruct-2507, 8-benchmark average, as the README quotes them) are printed beside ours:
they are a different model and benchmark, so compare orderings and gains, not levels (OPSD and SDPO are not
in the SD-Zero paper). --keep-rows keeps an earlier table's rows of the methods not run now, with their
commits, so a table can grow by a method without rerunning the others.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common  # bench/ is sys.path[0] when a bench script runs (tests put it on sys.path)

REPO = common.REPO
METHODS = ["base", "srt", "sdzero", "opsd", "sdpo", "rft", "grpo"]
LABEL = {"base": "base", "srt": "SRT (Phase 1 only)", "sdzero": "SD-Zero", "opsd": "OPSD (teacher sees the answer)",
         "sdpo": "SDPO-style (teacher sees the feedback)", "rft": "RFT", "grpo": "GRPO"}
PAPER = {"base": 49.8, "rft": 54.3, "grpo": 53.1, "srt": 57.6, "sdzero": 60.3}  # Qwen3-4B, 8-benchmark avg@8


def mean_se(xs: list[float]) -> tuple[float, float | None]:
    return statistics.mean(xs), (statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else None)


def run_one(method: str, seed: int, args, extra: list[str], name: str | None = None) -> Path:
    """train.py for one (method, seed) in <runs>/<name or method>-s<seed> (see common.run_train); the folder
    once finished."""
    out = Path(args.runs) / f"{name or method}-s{seed}"
    flags = ["--task", "math", "--method", method, "--seed", str(seed), "--threads", str(args.threads), *extra]
    if method != "base":
        flags += ["--budget", str(args.budget)]
    if method == "sdzero":  # the reviser before, after Phase 1 and after Phase 2 (diagnostics)
        flags += ["--eval-revise"]
    if method != "base" and getattr(args, "eval_every", 0):  # learning curves for the figure (paper_table)
        flags += ["--eval-every", str(args.eval_every)]
    return common.run_train(out, flags, log=out.with_name(out.name + ".log"))


def diagnostics(out: Path, results: dict) -> dict:
    """Why the gap is what it is: Phase 1 statistics, the reviser on held-out answers before and after
    training, KL on r=0 vs r=1 samples and response length early and late in Phase 2."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    diag = {"phase1": results.get("phase1"), "baseline": results.get("baseline"),
            "response_len": {k: v["response_len"] for k, v in results["eval"].items()},
            "revise": {k: v["revise"] for k, v in results["eval"].items() if "revise" in v}}
    p2 = [r for r in rows if r["phase"] == "p2"]
    if p2:
        def avg(rs, key):
            vals = [r[key] for r in rs if r.get(key) is not None]
            return sum(vals) / len(vals) if vals else None
        head, tail = p2[:5], p2[-5:]
        diag["phase2"] = {f"{key}_{part}": avg(rs, key) for key in ("kl_r0", "kl_r1", "response_len", "reward_mean")
                          for part, rs in (("first5", head), ("last5", tail))}
    grpo = [r for r in rows if r["phase"] == "grpo"]
    if grpo:
        diag["grpo"] = {"steps": len(grpo), "updates": sum(r["loss"] is not None for r in grpo),
                        "reward_first": grpo[0]["reward_mean"], "reward_last": grpo[-1]["reward_mean"],
                        "groups_kept_mean": statistics.mean(r["groups_kept"] for r in grpo)}
    return diag


def curve(results: dict, out: Path | None = None) -> list[tuple[int, float]]:
    """(training generations, held-out accuracy) at each evaluation of a run, in the order they were made:
    the evaluations between stages and, when the run had --eval-every, the learning curve's points inside the
    stages (metrics.jsonl's eval rows with a step; Phase 1's before the evaluation after it). A stage that
    trains on samples drawn before it (SRT, RFT) adds points at one number of generations."""
    ev, by = results["eval"], results["generations_by"]
    inside = {"p1": [], "later": []}
    if out is not None and (out / "metrics.jsonl").exists():
        for line in (out / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r["phase"] == "eval" and "step" in r:
                inside["p1" if r["stage"] in ("p1", "p1_rev") else "later"].append((r["generations"], r["avg@k"]))
    points = [(0, ev["eval_base"]["avg@k"]), *inside["p1"]]
    if "eval_srt" in ev:
        points.append((by.get("y_init", 0) + by.get("revisions", 0), ev["eval_srt"]["avg@k"]))
    points += inside["later"]
    if "eval_final" in ev:
        points.append((results["generations"], ev["eval_final"]["avg@k"]))
    return points


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        final, se = mean_se([r["final_accuracy"] for r in rs])
        gain, gain_se = mean_se([r["final_accuracy"] - r["base_accuracy"] for r in rs])
        summary[method] = {"seeds": len(rs), "final_mean": final, "final_se": se,
                           "base_mean": statistics.mean(r["base_accuracy"] for r in rs),
                           "gain_points": 100 * gain, "gain_points_se": None if gain_se is None else 100 * gain_se,
                           "generations_mean": statistics.mean(r["generations"] for r in rs),
                           "seconds_mean": statistics.mean(r["seconds"] for r in rs)}
    return summary


def markdown(table: dict) -> str:
    lines = [f"Held-out accuracy (greedy, {table['n_eval']} embedded arithmetic questions), SmolLM2-135M-Instruct, "
             f"budget {table['budget']} training generations, seeds {table['seeds']}; runs at commit "
             f"{', '.join(table['run_commits'])}, table written at {table['commit']}; {table['machine']}, "
             f"{table['jobs']} runs at a time with {table['threads']} torch thread(s) each. "
             "`python bench/paper_table.py`"
             + (f" with train.py flags `{' '.join(table['extra_args'])}`." if table["extra_args"] else "."), "",
             "| method | seeds | held-out accuracy (mean ± s.e.) | gain over base (points) | generations | "
             "seconds | paper (Qwen3-4B, 8-bench avg) |", "|---|---|---|---|---|---|---|"]
    for method, s in table["summary"].items():
        se = "" if s["final_se"] is None else f" ± {s['final_se']:.3f}"
        gse = "" if s["gain_points_se"] is None else f" ± {s['gain_points_se']:.1f}"
        lines.append(f"| {LABEL[method]} | {s['seeds']} | {s['final_mean']:.3f}{se} | {s['gain_points']:+.1f}{gse} | "
                     f"{s['generations_mean']:.0f} | {s['seconds_mean']:.0f} | {PAPER.get(method, '-')} |")
    return "\n".join(lines) + "\n"


def plot(table: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    for method in METHODS:
        rs = [r for r in table["rows"] if r["method"] == method]
        if not rs:
            continue
        n_points = min(len(r["curve"]) for r in rs)
        xs = [statistics.mean(r["curve"][i][0] for r in rs) for i in range(n_points)]
        ys = [mean_se([r["curve"][i][1] for r in rs]) for i in range(n_points)]
        ax.errorbar(xs, [m for m, _ in ys], yerr=[se or 0 for _, se in ys], marker="o", capsize=3,
                    label=LABEL[method], linestyle="-" if len(xs) > 1 else "none")
    ax.set_xlabel("training generations (initial answers, revisions, rollouts)")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title(f"SmolLM2-135M, embedded arithmetic, budget {table['budget']}, {len(table['seeds'])} seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def kept_rows(path: Path, args) -> list[dict]:
    """The rows of an earlier table whose methods are not run now; refused unless its budget, seeds and extra
    flags are this table's (rows at another budget do not compare)."""
    old = json.loads(path.read_text())
    same = {"budget": args.budget, "seeds": args.seeds, "extra_args": args.extra}
    differ = {k: (old.get(k), v) for k, v in same.items() if old.get(k) != v}
    if differ:
        raise SystemExit(f"--keep-rows {path}: its table differs from this one in " + ", ".join(
            f"{k} ({a!r} there, {b!r} here)" for k, (a, b) in differ.items()))
    return [r for r in old["rows"] if r["method"] not in args.methods]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=752, help="training generations per run (the demo SD-Zero's)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (0: cores / jobs)")
    p.add_argument("--runs", default="runs/table", help="parent folder of the run folders")
    p.add_argument("--results", default=str(REPO / "results"), help="where table.json, .md and .png go")
    p.add_argument("--prefix", default="table", help="file name stem of the outputs")
    p.add_argument("--keep-rows", default="", help="an earlier table.json: its rows of methods not in --methods "
                   "stay in the table (same budget and seeds required)")
    p.add_argument("--eval-every", type=int, default=0, help="train.py --eval-every for every trained run: the "
                   "figure then draws each method's learning curve, not only its evaluations between stages")
    p.add_argument("extra", nargs="*", help="train.py flags for every run (after --)")
    args = p.parse_args(argv)
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    kept = kept_rows(Path(args.keep_rows), args) if args.keep_rows else []  # checked before any run starts
    code = common.commit()
    t0 = time.time()
    # Longest first, so the pool does not end on one long run.
    order = sorted(((m, s) for s in args.seeds for m in args.methods),
                   key=lambda ms: (["sdzero", "opsd", "sdpo", "grpo", "srt", "rft", "base"].index(ms[0]), ms[1]))
    with ThreadPoolExecutor(args.jobs) as pool:
        outs = dict(zip(order, pool.map(lambda ms: run_one(*ms, args, args.extra), order)))
    rows = []
    for (method, seed), out in sorted(outs.items(), key=lambda kv: (METHODS.index(kv[0][0]), kv[0][1])):
        r = json.loads((out / "results.json").read_text())
        rows.append({"method": method, "seed": seed, "base_accuracy": r["base_accuracy"],
                     "final_accuracy": r["final_accuracy"], "generations": r["generations"],
                     "seconds": r["seconds"], "srt_accuracy": r["srt_accuracy"],
                     "generations_by": r["generations_by"], "commit": r["commit"], "curve": curve(r, out),
                     "diagnostics": diagnostics(out, r)})
    if kept:
        rows = sorted(kept + rows, key=lambda r: (METHODS.index(r["method"]), r["seed"]))
    budget_ok = all(abs(r["generations"] - args.budget) <= 0.1 * args.budget for r in rows if r["method"] != "base")
    ev = json.loads((outs[order[0]] / "results.json").read_text())["eval"]["eval_base"]
    table = {"rows": rows, "summary": summarise(rows), "budget": args.budget, "budget_within_10pct": budget_ok,
             "seeds": args.seeds, "n_eval": ev["n_questions"], "extra_args": args.extra, "commit": code,
             "run_commits": sorted({r["commit"] or "?" for r in rows}), "machine": common.machine(),
             "python": platform.python_version(), "jobs": args.jobs, "threads": args.threads,
             "wall_seconds": round(time.time() - t0, 1), "paper": PAPER}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.prefix}.json").write_text(json.dumps(table, indent=2))
    (results / f"{args.prefix}.md").write_text(markdown(table))
    plot(table, results / f"{args.prefix}.png")
    line = {m: {"final": round(s["final_mean"], 4), "gain_points": round(s["gain_points"], 1)}
            for m, s in table["summary"].items()}
    print(json.dumps({"summary": line, "budget_within_10pct": budget_ok, "commit": code}))
    return table


if __name__ == "__main__":
    main()
