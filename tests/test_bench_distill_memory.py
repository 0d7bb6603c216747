"""Smoke test for bench/distill_memory.py at a tiny shape: the JSON last line, agreement of the
naive and chunked losses and gradients, positive peaks. No assertion on which peak is smaller (at
this size both are dominated by the interpreter) and none on timing."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_distill_memory_bench_tiny():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "distill_memory.py"),
                           "--T", "64", "--V", "512", "--H", "32", "--k", "8", "--chunk", "16"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"naive_peak_mib", "chunked_peak_mib", "naive_loss_delta_mib",
                           "chunked_loss_delta_mib", "max_abs_diff"}
    assert result["max_abs_diff"] < 1e-4  # NaN fails this too
    assert result["naive_peak_mib"] > 0
    assert result["chunked_peak_mib"] > 0
