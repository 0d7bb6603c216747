"""The demo (`python train.py --task math`, no other flag) over several seeds: mean and standard error.

    python bench/demo_seeds.py --seeds 0 1 2            # ~12 min a seed on a 2-core CPU
Writes results/demo_seeds.json and prints a JSON last line. Extra arguments after `--` go to train.py.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commit() -> str:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return sha + ("-dirty" if dirty else "")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or "?") if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"{platform.machine()}, {model}, {os.cpu_count()} cores"


def mean_se(xs):
    return statistics.mean(xs), (statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", default="runs/demo-seeds", help="parent folder of the per-seed run folders")
    p.add_argument("--out", default=str(REPO / "results" / "demo_seeds.json"))
    p.add_argument("extra", nargs="*", help="arguments passed to train.py (after --)")
    args = p.parse_args()
    rows = []
    for seed in args.seeds:
        out = Path(args.runs) / f"seed{seed}"
        t0 = time.time()
        cmd = [sys.executable, str(REPO / "train.py"), "--task", "math", "--seed", str(seed), "--out", str(out),
               *args.extra]
        if (out / "results.json").exists():
            pass  # finished earlier: reuse
        elif (out / "checkpoint").exists():
            subprocess.run(cmd + ["--resume"], check=True)
        else:
            subprocess.run(cmd, check=True)
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
    result = {"rows": rows, "summary": summary, "extra_args": args.extra, "commit": commit(),
              "machine": machine(),
              "python": platform.python_version()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({"gain_points": summary["gain_points"], "final": summary["final_accuracy"],
                      "base": summary["base_accuracy"], "commit": result["commit"]}))


if __name__ == "__main__":
    main()
