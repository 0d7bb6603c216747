"""bench/paper_table.py and bench/ablations.py end to end on the micro model (seconds a run)."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
SMOKE = ["--preset", "smoke", "--n-eval", "4", "--grpo-batch", "4"]


def test_paper_table_on_the_micro_model(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "paper_table.py"), "--seeds", "0", "1",
                           "--budget", "80", "--jobs", "2", "--runs", str(tmp_path / "runs"),
                           "--results", str(tmp_path / "results"), "--", *SMOKE],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((tmp_path / "results" / "table.json").read_text())
    methods = ("base", "srt", "sdzero", "rft", "grpo")
    assert {(r["method"], r["seed"]) for r in table["rows"]} == {(m, s) for m in methods for s in (0, 1)}
    for r in table["rows"]:
        for key in ("method", "seed", "base_accuracy", "final_accuracy", "generations", "seconds"):
            assert key in r
        assert r["generations"] == 0 if r["method"] == "base" else 72 <= r["generations"] <= 80
    assert table["budget_within_10pct"] and table["commit"]
    sd = next(r for r in table["rows"] if r["method"] == "sdzero")
    assert "eval_srt" in sd["diagnostics"]["revise"] and "kl_r0_first5" in sd["diagnostics"]["phase2"]
    assert [x for x, _ in sd["curve"]] == [0, 64, 80]
    md = (tmp_path / "results" / "table.md").read_text()
    assert "| SD-Zero | 2 |" in md and "| GRPO | 2 |" in md
    assert (tmp_path / "results" / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second call reuses every finished run; a changed command is refused, not silently mixed in.
    again = subprocess.run([sys.executable, str(REPO / "bench" / "paper_table.py"), "--seeds", "0", "--methods", "rft",
                            "--budget", "60", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "r2"),
                            "--", "--preset", "smoke", "--n-eval", "4"],
                           cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "another command" in again.stderr


def test_ablations_on_the_micro_model(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "ablations.py"), "--only", "srt-gen", "p2only",
                           "--budget", "80", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
                           "--", *SMOKE], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((tmp_path / "results" / "ablations.json").read_text())
    assert [r["ablation"] for r in table["rows"]] == ["reference", "srt-gen", "p2only"]
    config = json.loads((tmp_path / "runs" / "ablation-srt-gen-s0" / "config.json").read_text())
    assert config["srt_loss"] == "gen" and config["method"] == "sdzero" and config["budget"] == 80
    config = json.loads((tmp_path / "runs" / "ablation-p2only-s0" / "config.json").read_text())
    assert config["method"] == "p2only"
    # The reference is the table's own SD-Zero run (same folder name and command).
    assert (tmp_path / "runs" / "sdzero-s0" / "results.json").exists()
    p2only = table["rows"][2]
    assert p2only["srt_accuracy"] is None and p2only["generations"] == 80
    assert "| Table 12: Phase 2 without SRT |" in (tmp_path / "results" / "ablations.md").read_text()


def test_revise_probe_on_the_micro_model(tmp_path):
    """bench/revise_probe.py: one base evaluation with --eval-revise per task; a finished run is reused, one
    with other settings in its folder is refused."""
    def probe(*tasks):
        return subprocess.run([sys.executable, str(REPO / "bench" / "revise_probe.py"), "--tasks", *tasks,
                               "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--",
                               "--preset", "smoke"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    proc = probe("9:+", "9:+-")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "revise_probe.json").read_text())
    assert [(r["max_operand"], r["ops"]) for r in report["rows"]] == [(9, "+"), (9, "+-")]
    for r in report["rows"]:
        assert 0 <= r["accuracy"] <= 1 and r["n_r0"] + r["n_r1"] == 16
        assert r["r0_corrected"] is None or 0 <= r["r0_corrected"] <= 1
    assert "| 1-9, `+-` |" in (tmp_path / "results" / "revise_probe.md").read_text()
    mtime = (tmp_path / "runs" / "probe-op9-p" / "results.json").stat().st_mtime
    assert probe("9:+").returncode == 0  # reused, not rerun
    assert (tmp_path / "runs" / "probe-op9-p" / "results.json").stat().st_mtime == mtime
    (tmp_path / "runs" / "probe-op8-p").mkdir()
    (tmp_path / "runs" / "probe-op8-p" / "results.json").write_text("{}")
    (tmp_path / "runs" / "probe-op8-p" / "config.json").write_text(json.dumps(
        {"math_max_operand": 8, "math_ops": "+", "seed": 0, "method": "sdzero", "eval_revise": True}))
    bad = probe("8:+")
    assert bad.returncode != 0 and "other settings" in bad.stderr
