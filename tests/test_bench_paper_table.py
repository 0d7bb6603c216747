"""The bench scripts that drive train.py: bench/paper_table.py, ablations.py, revise_probe.py and demo_seeds.py.

Fast tests put a stand-in for train.py (FAKE_TRAIN: a results.json and metrics.jsonl of train.py's layout, made
up from the flags) in common.TRAIN and call each script's main: the flags each run gets, the reuse and refusal
of run folders, the tables and the results files' keys (those of the committed results/*.json). The slow tests
run the real train.py on the micro model (seconds a run, minutes a test)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO / "bench"))  # appended: top-level modules come first
import ablations  # noqa: E402
import common  # noqa: E402
import demo_seeds  # noqa: E402
import paper_table  # noqa: E402
import revise_probe  # noqa: E402

ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
SMOKE = ["--preset", "smoke", "--n-eval", "4", "--grpo-batch", "4"]

FAKE_TRAIN = r"""
import json, sys
from pathlib import Path
argv = sys.argv[1:]
def flag(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default
out, method, seed = Path(flag("--out")), flag("--method", "sdzero"), int(flag("--seed"))
out.mkdir(parents=True)
budget = int(flag("--budget", 0))
srt = method in ("srt", "sdzero")
ev = {"avg@k": 0.5, "n_questions": 4, "response_len": 9.0}
if "--eval-revise" in argv:
    ev["revise"] = {"r0_corrected": 0.5, "n_r0": 2, "r1_kept": 1.0, "n_r1": 2, "accuracy_after_revision": 0.75}
evals = {"eval_base": ev}
final = {"base": 0.5, "srt": 0.6, "sdzero": 0.7, "rft": 0.55, "grpo": 0.52, "p2only": 0.58, "opsd": 0.62,
         "sdpo": 0.64}[method] + 0.01 * seed
if srt:
    evals["eval_srt"] = dict(ev, **{"avg@k": 0.6})
if method != "base":
    evals["eval_final"] = dict(ev, **{"avg@k": final})
rows = [{"phase": "p2", "kl_r0": 0.2, "kl_r1": 0.1, "response_len": 9.0, "reward_mean": 0.5}] * 6 \
    if method in ("sdzero", "p2only", "opsd", "sdpo") else []
rows += [{"phase": "grpo", "loss": 0.1, "reward_mean": 0.5, "groups_kept": 2}] * 3 if method == "grpo" else []
if "--eval-every" in argv and method == "sdzero":  # a learning-curve point inside each phase
    rows.append({"phase": "eval", "stage": "p1", "step": 2, "generations": budget * 3 // 4, "avg@k": 0.45})
    rows.append({"phase": "eval", "stage": "p2", "step": 2, "generations": budget - 10, "avg@k": 0.65})
(out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
(out / "results.json").write_text(json.dumps({
    "model": "micro", "base_accuracy": 0.5, "srt_accuracy": 0.6 if srt else None, "final_accuracy": final,
    "generations": budget, "generations_by": {"y_init": budget // 4, "revisions": budget // 2} if srt else {},
    "seconds": 1.0, "commit": "abc1234", "eval": evals, "phase1": None, "baseline": None}))
"""


@pytest.fixture
def fake_train(monkeypatch):
    monkeypatch.setattr(common, "TRAIN", [sys.executable, "-c", FAKE_TRAIN])


def flags_of(run: Path) -> list[str]:
    return json.loads(common.marker_path(run).read_text())


def committed_keys(name: str) -> tuple[set, set]:
    """The top-level and row keys of a committed results file: what the script writes."""
    table = json.loads((REPO / "results" / name).read_text())
    return set(table), set(table["rows"][0])


def test_paper_table_runs_reuses_and_refuses(tmp_path, fake_train):
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ["--seeds", "0", "1", "--budget", "80", "--jobs", "2", "--threads", "1", "--runs", str(runs),
            "--results", str(results), "--", "--preset", "smoke"]
    table = paper_table.main(args)
    assert {(r["method"], r["seed"]) for r in table["rows"]} == {(m, s) for m in paper_table.METHODS for s in (0, 1)}
    assert flags_of(runs / "base-s0") == ["--task", "math", "--method", "base", "--seed", "0", "--threads", "1",
                                          "--preset", "smoke"]
    assert flags_of(runs / "sdzero-s1") == ["--task", "math", "--method", "sdzero", "--seed", "1", "--threads", "1",
                                            "--preset", "smoke", "--budget", "80", "--eval-revise"]
    assert (runs / "grpo-s1.log").exists()
    saved = json.loads((results / "table.json").read_text())
    assert (set(saved), set(saved["rows"][0])) == committed_keys("table.json")
    assert saved["budget_within_10pct"] and saved["summary"]["sdzero"]["gain_points"] == pytest.approx(20.5)
    sd = next(r for r in saved["rows"] if r["method"] == "sdzero")
    assert sd["curve"] == [[0, 0.5], [60, 0.6], [80, 0.7]] and "kl_r0_first5" in sd["diagnostics"]["phase2"]
    assert "| SD-Zero | 2 | 0.705 ± 0.005 | +20.5 ± 0.5 | 80 | 1 | 60.3 |" in (results / "table.md").read_text()
    assert (results / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mtime = (runs / "rft-s0" / "results.json").stat().st_mtime_ns
    paper_table.main(["--methods", "rft", "--seeds", "0", *args[3:]])  # reused, not rerun
    assert (runs / "rft-s0" / "results.json").stat().st_mtime_ns == mtime
    with pytest.raises(SystemExit, match=f"{runs / 'rft-s0'}: holds a run of another command"):
        paper_table.main(["--methods", "rft", "--seeds", "0", "--budget", "60", "--threads", "1", "--runs", str(runs),
                          "--results", str(results)])


def test_paper_table_draws_learning_curves_with_eval_every(tmp_path, fake_train):
    """--eval-every N reaches every trained run, and its points join the curve in the order they were made:
    Phase 1's (at Phase 1's generations, like the SRT evaluation after them) before the SRT evaluation."""
    runs, results = tmp_path / "runs", tmp_path / "results"
    table = paper_table.main(["--methods", "base", "sdzero", "--seeds", "0", "--budget", "80", "--threads", "1",
                              "--eval-every", "2", "--runs", str(runs), "--results", str(results)])
    assert flags_of(runs / "sdzero-s0")[-2:] == ["--eval-every", "2"]
    assert "--eval-every" not in flags_of(runs / "base-s0")  # nothing to train, nothing to curve
    sd = next(r for r in table["rows"] if r["method"] == "sdzero")
    assert sd["curve"] == [(0, 0.5), (60, 0.45), (60, 0.6), (70, 0.65), (80, 0.7)]
    assert (results / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paper_table_keeps_an_earlier_tables_rows(tmp_path, fake_train):
    """--keep-rows: the new methods' runs join an earlier table's other rows (their commits kept); a table of
    another budget is refused."""
    runs, results = tmp_path / "runs", tmp_path / "results"
    common_args = ["--seeds", "0", "--budget", "80", "--threads", "1", "--runs", str(runs), "--results", str(results)]
    paper_table.main(["--methods", "base", "rft", *common_args])
    first = json.loads((results / "table.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps(first))
    table = paper_table.main(["--methods", "opsd", "sdpo", "rft", "--keep-rows", str(tmp_path / "old.json"),
                              *common_args])
    assert [r["method"] for r in table["rows"]] == ["base", "opsd", "sdpo", "rft"]
    assert table["rows"][0] == first["rows"][0]  # kept as it was
    md = (results / "table.md").read_text()
    assert "| OPSD (teacher sees the answer) | 1 | 0.620 | +12.0 | 80 | 1 | - |" in md
    assert "| SDPO-style (teacher sees the feedback) | 1 | 0.640 |" in md
    with pytest.raises(SystemExit, match=r"--keep-rows .*budget \(80 there, 60 here\)"):
        paper_table.main(["--methods", "opsd", "--keep-rows", str(tmp_path / "old.json"), *common_args[:2],
                          "--budget", "60", *common_args[4:]])


def test_ablations_change_one_flag_against_the_tables_run(tmp_path, fake_train):
    runs, results = tmp_path / "runs", tmp_path / "results"
    table = ablations.main(["--only", "srt-gen", "p2only", "--budget", "80", "--threads", "1", "--runs", str(runs),
                            "--results", str(results)])
    assert [r["ablation"] for r in table["rows"]] == ["reference", "srt-gen", "p2only"]
    assert flags_of(runs / "sdzero-s0") == ["--task", "math", "--method", "sdzero", "--seed", "0", "--threads", "1",
                                            "--budget", "80", "--eval-revise"]  # the table's own SD-Zero run
    assert flags_of(runs / "ablation-srt-gen-s0") == ["--task", "math", "--method", "sdzero", "--seed", "0",
                                                      "--threads", "1", "--srt-loss", "gen", "--budget", "80",
                                                      "--eval-revise"]
    assert flags_of(runs / "ablation-p2only-s0") == ["--task", "math", "--method", "p2only", "--seed", "0",
                                                     "--threads", "1", "--budget", "80"]
    saved = json.loads((results / "ablations.json").read_text())
    assert (set(saved), set(saved["rows"][0])) == committed_keys("ablations.json")
    assert "| Table 12: Phase 2 without SRT | `--method p2only` | - | 0.580 | -12.0 |" in \
        (results / "ablations.md").read_text()


def test_revise_probe_runs_reuses_and_refuses(tmp_path, fake_train):
    runs, results = tmp_path / "runs", tmp_path / "results"
    report = revise_probe.main(["--tasks", "9:+", "9:+-", "--runs", str(runs), "--results", str(results)])
    assert [(r["max_operand"], r["ops"]) for r in report["rows"]] == [(9, "+"), (9, "+-")]
    assert flags_of(runs / "probe-op9-pd") == ["--task", "math", "--method", "base", "--eval-revise", "--seed", "0",
                                              "--threads", "1", "--math-max-operand", "9", "--math-ops=+-"]
    saved = json.loads((results / "revise_probe.json").read_text())
    assert (set(saved), set(saved["rows"][0])) == committed_keys("revise_probe.json")
    assert "| 1-9, `+-` | 0.500 | 0.500 (2 wrong) | 1.000 (2 right) | 0.750 |" in \
        (results / "revise_probe.md").read_text()
    mtime = (runs / "probe-op9-p" / "results.json").stat().st_mtime_ns
    revise_probe.main(["--tasks", "9:+", "--runs", str(runs), "--results", str(results)])
    assert (runs / "probe-op9-p" / "results.json").stat().st_mtime_ns == mtime
    with pytest.raises(SystemExit, match="another command"):
        revise_probe.main(["--tasks", "9:+", "--seed", "1", "--runs", str(runs), "--results", str(results)])


def test_demo_seeds_writes_mean_and_standard_error(tmp_path, fake_train):
    out = tmp_path / "demo_seeds.json"
    result = demo_seeds.main(["--seeds", "0", "1", "--runs", str(tmp_path / "runs"), "--out", str(out)])
    assert flags_of(tmp_path / "runs" / "seed1") == ["--task", "math", "--seed", "1"]
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert (set(saved), set(saved["rows"][0])) == committed_keys("demo_seeds.json")
    assert saved["summary"]["gain_points"]["mean"] == pytest.approx(20.5)
    assert saved["summary"]["gain_points"]["se"] == pytest.approx(0.5)


@pytest.mark.slow
def test_paper_table_on_the_micro_model(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "paper_table.py"), "--seeds", "0", "1",
                           "--budget", "80", "--jobs", "2", "--runs", str(tmp_path / "runs"),
                           "--results", str(tmp_path / "results"), "--", *SMOKE],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((tmp_path / "results" / "table.json").read_text())
    methods = ("base", "srt", "sdzero", "opsd", "sdpo", "rft", "grpo")
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
    assert "| SD-Zero | 2 |" in md and "| GRPO | 2 |" in md and "| OPSD (teacher sees the answer) | 2 |" in md
    assert all(r["generations_by"] == {"p2": 80} for r in table["rows"] if r["method"] in ("opsd", "sdpo"))
    assert (tmp_path / "results" / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A second call reuses every finished run; a changed command is refused, not silently mixed in.
    again = subprocess.run([sys.executable, str(REPO / "bench" / "paper_table.py"), "--seeds", "0", "--methods", "rft",
                            "--budget", "60", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "r2"),
                            "--", "--preset", "smoke", "--n-eval", "4"],
                           cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "another command" in again.stderr


@pytest.mark.slow
def test_ablations_on_the_micro_model(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "ablations.py"), "--only", "srt-gen", "p2only",
                           "--budget", "80", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
                           "--", *SMOKE], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((tmp_path / "results" / "ablations.json").read_text())
    assert [r["ablation"] for r in table["rows"]] == ["reference", "srt-gen", "p2only"]
    config = json.loads((tmp_path / "runs" / "ablation-srt-gen-s0" / "run_config.json").read_text())
    assert config["srt_loss"] == "gen" and config["method"] == "sdzero" and config["budget"] == 80
    config = json.loads((tmp_path / "runs" / "ablation-p2only-s0" / "run_config.json").read_text())
    assert config["method"] == "p2only"
    # The reference is the table's own SD-Zero run (same folder name and command).
    assert (tmp_path / "runs" / "sdzero-s0" / "results.json").exists()
    p2only = table["rows"][2]
    assert p2only["srt_accuracy"] is None and p2only["generations"] == 80
    assert "| Table 12: Phase 2 without SRT |" in (tmp_path / "results" / "ablations.md").read_text()


@pytest.mark.slow
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
    (tmp_path / "runs" / "probe-op8-p.cmd.json").write_text(json.dumps(["--task", "math", "--method", "sdzero"]))
    bad = probe("8:+")
    assert bad.returncode != 0 and "another command" in bad.stderr
