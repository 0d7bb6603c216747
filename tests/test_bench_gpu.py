"""bench/gpu.py --dry-run: every part of the GPU benchmark (plain, transformers' static-cache and our static
generation, the naive and our Phase 2 step, with activation checkpointing) on a tiny Qwen3 shape on CPU,
ending in its JSON line."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_dry_run():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["dry_run"] and report["card"] == "cpu" and report["peak_bf16_tflops"] is None
    gen = report["generation"]["tiny"]
    assert "error" not in gen, gen
    assert "hf_static_error" not in gen, gen["hf_static_error"]
    for key in ("plain_steps_per_s", "hf_static_steps_per_s", "ours_steps_per_s", "roofline_steps_per_s", "speedup",
                "speedup_vs_hf_static", "copy_bandwidth_gb_s"):
        assert gen[key] > 0, key
    # the roofline is what the hardware allows: measured decoding cannot exceed it
    assert gen["ours_steps_per_s"] < gen["roofline_steps_per_s"]
    p2 = report["phase2"]["tiny"]
    for variant in ("naive", "ours", "ours+ckpt"):
        assert "error" not in p2[variant], p2[variant]
        assert p2[variant]["step_s_median"] > 0 and p2[variant]["tflops"] > 0
        assert p2[variant]["mfu"] is None  # no peak on CPU: no made-up MFU
    work = [p2[v]["tflops"] * p2[v]["step_s_median"] for v in ("naive", "ours", "ours+ckpt")]
    assert max(work) - min(work) <= 1e-9 * max(work)  # the same useful FLOPs count for every variant
