"""The demo (`python train.py --task math`, no other flag) over several seeds: mean and standard error.

    python bench/demo_seeds.py --seeds 0 1 2            # ~12 min a seed on a 2-core CPU

Each seed's run is in <runs>/seed<S>: reused when finished with the same flags, resumed when interrupted
(common.run_train); train.py's progress shows on the terminal. Writes results/demo_seeds.json and prints a
JSON last line. Extra arguments after `--` go to train.py.
"""
import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import common  # bench/ is sys.path[0] when a bench script runs (tests put it on sys.path)

REPO = common.REPO


def mean_se(xs):
    return statistics.mean(xs), (statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan"))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", default="runs/demo-seeds", help="parent folder of the per-seed run folders")
    p.add_argument("--out", default=str(REPO / "results" / "demo_seeds.json"))
    p.add_argument("extra", nargs="*", help="arguments passed to train.py (after --)")
    args = p.parse_args(argv)
    rows = []
    for seed in args.seeds:
        out = Path(args.runs) / f"seed{seed}"
        t0 = time.time()
        common.run_train(out, ["--task", "math", "--seed", str(seed), *args.extra])
        wall = time.time() - t0
        r = json.loads((out / "results.json").read_text())
        rows.append({"seed": seed, "base_accuracy": r["base_accuracy"], "srt_accuracy": r["srt_accuracy"],
                     "final_accuracy": r["final_accuracy"], "generations": r["generations"],
                     "train_seconds": r["seconds"], "wall_seconds": round(wall, 1),
                     "n_eval": r["eval"]["eval_base"]["n_questions"], "phase1": r["phase1"]})
    summary = {}
    for key in ("base_accuracy", "srt_accuracy", "final_accuracy", "wall_seconds"):
        m, se = mean_se([r[key] for r in rows])
        summary[key] = {"mean": m, "se": se}
    gains = [r["final_accuracy"] - r["base_accuracy"] for r in rows]
    m, se = mean_se(gains)
    summary["gain_points"] = {"mean": 100 * m, "se": 100 * se}
    result = {"rows": rows, "summary": summary, "extra_args": args.extra, "commit": common.commit(),
              "machine": common.machine(), "python": platform.python_version()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({"gain_points": summary["gain_points"], "final": summary["final_accuracy"],
                      "base": summary["base_accuracy"], "commit": result["commit"]}))
    return result


if __name__ == "__main__":
    main()
