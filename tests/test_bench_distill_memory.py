"""bench/distill_memory.py at a tiny shape: the naive and the chunked Phase 2 loss agree (loss and gradients) on
the bench's own inputs, in this process (fast); the CLI (slow: one subprocess per mode) ends in its JSON line with
positive peaks. No assertion on which peak is smaller (at this size both are dominated by the interpreter) and
none on timing."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "bench"))  # appended: top-level modules come first
import distill_memory  # noqa: E402

TINY = ["--T", "64", "--V", "512", "--H", "32", "--k", "8", "--chunk", "16"]


def test_naive_and_chunked_steps_agree():
    args = argparse.Namespace(T=64, V=512, H=32, k=8, chunk=16, seed=0, logit_std=3.0)
    results = {}
    for name, step in (("naive", distill_memory.naive_step), ("chunked", distill_memory.chunked_step)):
        hidden, weight, hidden_t, weight_t, mask = distill_memory.make_inputs(args)
        loss = step(hidden, weight, hidden_t, weight_t, mask, args)
        results[name] = {"loss": loss.detach(), "grad_hidden": hidden.grad, "grad_weight": weight.grad}
    assert results["naive"]["grad_weight"].abs().sum() > 0
    assert distill_memory.compare(results["naive"], results["chunked"]) < 1e-4  # NaN fails this too


@pytest.mark.slow
def test_distill_memory_bench_tiny():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "distill_memory.py"), *TINY],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"naive_peak_mib", "chunked_peak_mib", "naive_loss_delta_mib",
                           "chunked_loss_delta_mib", "max_abs_diff"}
    assert result["max_abs_diff"] < 1e-4  # NaN fails this too
    assert result["naive_peak_mib"] > 0
    assert result["chunked_peak_mib"] > 0
