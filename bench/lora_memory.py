"""What LoRA saves on CPU: peak RSS of Phase 2 steps with full fine-tuning vs with --lora-rank.

    python bench/lora_memory.py                     # SmolLM2-135M, r = 16, 2 Phase 2 steps of 8 answers each
    python bench/lora_memory.py --rank 64 --steps 3

Each mode is one `train.py --method p2only --p2-steps S --n-eval 1` in its own process, so its peak RSS (the
p2 rows' peak_mem_mib: getrusage ru_maxrss, the process's high-water mark, model loading and the one held-out
question included) is its own. Full fine-tuning holds the student, its gradients, AdamW's two moments and a
frozen teacher copy; LoRA holds the model once (the frozen teacher is the adapter switched off) and gradients
and moments of the adapter only. Writes results/lora_memory.json and prints, last, a JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import common  # bench/ is sys.path[0] when a bench script runs (tests put it on sys.path)

REPO = common.REPO


def measure(mode: str, args, work: Path) -> dict:
    out = work / mode
    flags = ["--method", "p2only", "--model", args.model, "--p2-steps", str(args.steps), "--n-eval", "1",
             "--p2-batch-size", str(args.batch), "--threads", str(args.threads), "--out", str(out), *args.extra]
    if mode == "lora":
        flags += ["--lora-rank", str(args.rank)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([*common.TRAIN, *flags], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{mode}: train.py failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    p2 = [r for r in rows if r["phase"] == "p2"]
    return {"peak_mib_by_step": [r["peak_mem_mib"] for r in p2], "peak_mib": max(r["peak_mem_mib"] for r in p2),
            "loss_by_step": [r["loss"] for r in p2], "flags": flags}


def parameter_counts(args) -> dict:
    """Trainable parameters in each mode (the adapter's, by peft on the same model)."""
    sys.path.insert(0, str(REPO))
    import config
    import lora
    import sdzero
    model, _ = sdzero.load_model(args.model)
    total = sum(p.numel() for p in model.parameters())
    cfg = config.parse_args(["--model", args.model, "--lora-rank", str(args.rank)])
    lora.attach(model, cfg, 0)
    return {"full": total, "lora": sum(p.numel() for p in model.parameters() if p.requires_grad), "model": total}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="--p2-batch-size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=str(REPO / "results" / "lora_memory.json"))
    p.add_argument("extra", nargs="*", help="more train.py flags for both runs (after --)")
    args = p.parse_args(argv)
    code = common.commit()
    with tempfile.TemporaryDirectory() as tmp:
        modes = {mode: measure(mode, args, Path(tmp)) for mode in ("full", "lora")}
    counts = parameter_counts(args)
    for mode in modes:
        modes[mode]["trainable_parameters"] = counts[mode]
    saved = modes["full"]["peak_mib"] - modes["lora"]["peak_mib"]
    table = {"model": args.model, "rank": args.rank, "steps": args.steps, "p2_batch_size": args.batch,
             "threads": args.threads, "extra_args": args.extra, "parameters": counts["model"], **modes,
             "saved_mib": saved, "ratio": modes["lora"]["peak_mib"] / modes["full"]["peak_mib"],
             "commit": code, "machine": common.machine()}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(table, indent=2))
    print(f"{'mode':<8}{'peak RSS (MiB)':>16}{'trainable':>14}")
    for mode in ("full", "lora"):
        print(f"{mode:<8}{modes[mode]['peak_mib']:>16.0f}{modes[mode]['trainable_parameters']:>14,}")
    print(json.dumps({"full_peak_mib": round(modes["full"]["peak_mib"]),
                      "lora_peak_mib": round(modes["lora"]["peak_mib"]), "saved_mib": round(saved),
                      "ratio": round(table["ratio"], 3), "commit": code}))
    return table


if __name__ == "__main__":
    main()
