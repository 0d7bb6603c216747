"""bench/lora_memory.py on the micro model: both modes run train.py in their own process, the results file
has each mode's peak RSS per Phase 2 step and its trainable parameters (the adapter's, under LoRA)."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "bench"))  # appended: top-level modules come first
import lora_memory  # noqa: E402


@pytest.mark.slow
def test_lora_memory_runs_both_modes(tmp_path):
    out = tmp_path / "lora_memory.json"
    table = lora_memory.main(["--model", str(REPO / "tests" / "fixtures" / "micro"), "--rank", "4", "--steps", "2",
                              "--batch", "4", "--threads", "1", "--results", str(out), "--", "--max-new-tokens", "8"])
    assert json.loads(out.read_text()) == table
    for mode in ("full", "lora"):
        assert len(table[mode]["peak_mib_by_step"]) == 2 and table[mode]["peak_mib"] > 0
        assert ("--lora-rank" in table[mode]["flags"]) == (mode == "lora")
    # micro: 2 layers, hidden 64, 2 key-value heads of 16, MLP 128; r = 4 adds r (in + out) per linear layer:
    # q and o 4 (64 + 64), k and v 4 (64 + 32), gate, up and down 4 (64 + 128)
    per_layer = 2 * 4 * (64 + 64) + 2 * 4 * (64 + 32) + 3 * 4 * (64 + 128)
    assert table["lora"]["trainable_parameters"] == 2 * per_layer == 8192 < table["full"]["trainable_parameters"]
    assert table["saved_mib"] == table["full"]["peak_mib"] - table["lora"]["peak_mib"]
