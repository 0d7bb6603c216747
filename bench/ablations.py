"""The paper's ablations, one flag each, one seed each, at the table's budget: SD-Zero with one setting
changed, against the SD-Zero run of bench/paper_table.py with the same seed.

    python bench/ablations.py                          # every ablation below, seed 0 (~15 min each, 2-core CPU)
    python bench/ablations.py --only srt-gen p2only    # some of them

Runs go to <runs>/ablation-<name>-s<seed> (reused when finished with the same command, resumed when
interrupted); writes results/ablations.json and ablations.md and prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common  # bench/ is sys.path[0] when a bench script runs (tests put it on sys.path)
import paper_table

# name: (what the paper reports, train.py flags). Each changes one thing from the SD-Zero default.
ABLATIONS = {
    "srt-gen": ("Table 11: L_gen alone", ["--srt-loss", "gen"]),
    "srt-rev": ("Table 11: L_rev alone", ["--srt-loss", "rev"]),
    "p2only": ("Table 12: Phase 2 without SRT", ["--method", "p2only"]),
    "teacher-sync": ("Fig. 5: teacher synced to the student every 10 steps", ["--teacher", "sync:10"]),
    "mixed": ("divergence: 0.5 forward + 0.5 reverse (authors' code)", ["--divergence", "mixed"]),
    "full-vocab": ("support: full vocabulary instead of the teacher's top-64", ["--topk", "0"]),
    "olmo-phrases": ("control phrases of the authors' code (olmo)", ["--phrase-style", "olmo"]),
    # knobs the paper points to (not ablations of its method)
    "p2-lr": ("knob: Phase 2 learning rate 2e-5 (default 5e-6)", ["--p2-lr", "2e-5"]),
    "temperature": ("knob: sampling temperature 1.0 (authors' code; default 0.7)", ["--temperature", "1.0"]),
}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=int, default=752)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--runs", default="runs/table", help="the folder of bench/paper_table.py's runs (the reference)")
    p.add_argument("--results", default=str(common.REPO / "results"))
    p.add_argument("extra", nargs="*", help="train.py flags for every run (after --)")
    args = p.parse_args(argv)
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    t0 = time.time()

    def one(name):
        if name == "reference":  # the very command bench/paper_table.py runs for SD-Zero
            return paper_table.run_one("sdzero", args.seed, args, args.extra)
        flags = ABLATIONS[name][1]
        method = flags[flags.index("--method") + 1] if "--method" in flags else "sdzero"
        rest = [f for i, f in enumerate(flags) if f != "--method" and (i == 0 or flags[i - 1] != "--method")]
        return paper_table.run_one(method, args.seed, args, [*rest, *args.extra], name=f"ablation-{name}")

    names = ["reference", *args.only]
    with ThreadPoolExecutor(args.jobs) as pool:
        outs = dict(zip(names, pool.map(one, names)))
    rows = []
    for name, out in outs.items():
        r = json.loads((out / "results.json").read_text())
        rows.append({"ablation": name, "what": ABLATIONS[name][0] if name in ABLATIONS else "SD-Zero as in the table",
                     "flags": ABLATIONS[name][1] if name in ABLATIONS else [], "seed": args.seed,
                     "base_accuracy": r["base_accuracy"], "srt_accuracy": r["srt_accuracy"],
                     "final_accuracy": r["final_accuracy"], "generations": r["generations"], "seconds": r["seconds"],
                     "commit": r["commit"], "diagnostics": paper_table.diagnostics(out, r)})
    table = {"rows": rows, "seed": args.seed, "budget": args.budget, "commit": common.commit(),
             "machine": common.machine(), "wall_seconds": round(time.time() - t0, 1)}
    ref = rows[0]["final_accuracy"]
    runs = ", ".join(sorted({row["commit"] or "?" for row in rows}))
    lines = [f"One seed ({args.seed}), budget {args.budget}, held-out accuracy (greedy); runs at commit {runs}, table "
             f"written at {table['commit']}; {table['machine']}. `python bench/ablations.py`.", "",
             "| ablation | flags | after Phase 1 | final | vs SD-Zero (points) |", "|---|---|---|---|---|"]
    for row in rows:
        srt = "-" if row["srt_accuracy"] is None else f"{row['srt_accuracy']:.3f}"
        lines.append(f"| {row['what']} | `{' '.join(row['flags'])}` | {srt} | {row['final_accuracy']:.3f} | "
                     f"{100 * (row['final_accuracy'] - ref):+.1f} |")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "ablations.json").write_text(json.dumps(table, indent=2))
    (results / "ablations.md").write_text("\n".join(lines) + "\n")
    print(json.dumps({row["ablation"]: round(row["final_accuracy"], 4) for row in rows}))
    return table


if __name__ == "__main__":
    main()
