"""bench/gpu.py: the arithmetic its comparisons rest on (the bandwidth roofline, the useful FLOPs of a Phase 2
step), from given numbers; and --dry-run (slow): every part of the GPU benchmark (plain, transformers'
static-cache and our static generation, the naive and our Phase 2 step, with activation checkpointing) on a
tiny Qwen3 shape on CPU, ending in its JSON line. Measured times are checked to be reported, never compared:
the roofline comparison is the benchmark's output, not a test."""
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "bench"))  # appended: top-level modules come first
import gpu  # noqa: E402


def test_roofline_from_given_numbers():
    # 3 GB of weights and 1 GB of KV cache read a step at 4 TB/s: 1,000 steps/s at most.
    within = gpu.roofline(weight_bytes=3e9, kv_bytes=1e9, bandwidth=4e12, steps_per_s=600.0)
    assert within == {"copy_bandwidth_gb_s": 4000.0, "bytes_per_step": 4e9, "roofline_steps_per_s": 1000.0,
                      "ours_share_of_roofline": 0.6, "ours_within_roofline": True}
    assert gpu.roofline_line(dict(within, ours_steps_per_s=600.0)) == (
        "  roofline: ours 600.0 decode steps/s, 60% of the 1000.0 that 4000.0 GB/s allows at 4 GB read a step")
    above = gpu.roofline(weight_bytes=3e9, kv_bytes=1e9, bandwidth=4e12, steps_per_s=1500.0)
    assert above["ours_share_of_roofline"] == 1.5 and not above["ours_within_roofline"]
    assert "(above it" in gpu.roofline_line(dict(above, ours_steps_per_s=1500.0))


def test_useful_flops_of_a_phase2_step():
    cfg = SimpleNamespace(num_attention_heads=2, head_dim=4, num_hidden_layers=3, hidden_size=8, vocab_size=10)
    n, B, P, T, phrase = 100, 2, 3, 2, 1
    S_s, S_t = P + T, P + 2 * T + phrase  # the student reads x + y, the teacher x + y + phrase + y

    def attention(S):  # QK^T and AV over a causal square, forward, every layer
        return 2 * S * S * (2 * 4) * 3

    head = 2 * 8 * 10 * T  # the LM head at the response positions only
    student = 3 * (2 * n * S_s + attention(S_s) + head)  # forward and backward
    teacher = 2 * n * S_t + attention(S_t) + head  # forward
    assert gpu.useful_flops(cfg, n, B, P, T, phrase) == B * (student + teacher) == 25104


@pytest.mark.slow
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
    assert isinstance(gen["ours_within_roofline"], bool)
    assert "  roofline: ours " in proc.stdout  # the comparison is printed, whichever way it falls
    p2 = report["phase2"]["tiny"]
    for variant in ("naive", "ours", "ours+ckpt"):
        assert "error" not in p2[variant], p2[variant]
        assert p2[variant]["step_s_median"] > 0 and p2[variant]["tflops"] > 0
        assert p2[variant]["mfu"] is None  # no peak on CPU: no made-up MFU
    work = [p2[v]["tflops"] * p2[v]["step_s_median"] for v in ("naive", "ours", "ours+ckpt")]
    assert max(work) - min(work) <= 1e-9 * max(work)  # the same useful FLOPs count for every variant
