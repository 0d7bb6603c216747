"""RFT, GRPO, base and the generation budget end to end on the micro model (in-process fast runs; the
rest as the command line, slow); GRPO resume after kill -9; the chunked response log-probabilities against
full logits."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import baselines
import config
import train
from test_train import kill_mid_phase

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")


def run_cli(args, **kw):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, **kw)


def smoke(tmp_path, name, *flags):
    out = tmp_path / name
    proc = run_cli(["--preset", "smoke", "--n-eval", "4", "--out", str(out), *flags], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), out, proc


def metrics(out, phase):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["phase"] == phase]


@pytest.mark.slow
def test_rft_spends_the_budget_on_k_samples_per_question(tmp_path):
    # smoke: N1 16 + N2 8 = 24 questions; budget 60 at 4 samples each pays for 15 of them.
    res, out, proc = smoke(tmp_path, "rft", "--method", "rft", "--budget", "60")
    assert set(res["eval"]) == {"eval_base", "eval_final"} and res["srt_accuracy"] is None
    assert res["generations"] == 60 and res["generations_by"] == {"rft": 60} and res["budget"] == 60
    stats = res["baseline"]
    assert stats["questions"] == 15 and 0 <= stats["kept"] <= stats["correct"] <= 60
    sft = metrics(out, "rft")
    assert len(sft) == -(-stats["kept"] // 4)  # one epoch (smoke), --srt-batch-size 4
    assert "after RFT" in proc.stdout


@pytest.mark.slow
def test_rft_without_budget_uses_every_training_question(tmp_path):
    res, _, _ = smoke(tmp_path, "rft", "--method", "rft", "--rft-samples", "2", "--no-rft-dedup")
    assert res["baseline"]["questions"] == 24 and res["generations"] == 48
    assert res["baseline"]["kept"] == res["baseline"]["correct"]  # no dedup: every correct sample is kept


@pytest.mark.slow
def test_grpo_stays_within_budget_and_logs_its_steps(tmp_path):
    res, out, proc = smoke(tmp_path, "grpo", "--method", "grpo", "--budget", "100", "--grpo-batch", "4",
                           "--grpo-group", "4", "--grpo-lr", "1e-3")
    assert res["generations"] <= 100 and res["generations_by"] == {"grpo": res["generations"]}
    assert res["generations"] > 100 - 16  # stops only when a full step (16) no longer fits
    rows = metrics(out, "grpo")
    assert rows and sum(r["generated"] for r in rows) == res["generations"]
    for r in rows:
        assert r["groups_kept"] <= 4 and 0 <= r["reward_mean"] <= 1
        if r["loss"] is not None:
            assert 0 <= r["clip_share"] <= 1 and r["grad_norm"] >= 0
    assert set(res["eval"]) == {"eval_base", "eval_final"} and "after GRPO" in proc.stdout


@pytest.mark.slow
def test_grpo_without_dynamic_sampling_runs_exact_steps(tmp_path):
    res, out, _ = smoke(tmp_path, "grpo", "--method", "grpo", "--grpo-steps", "2", "--grpo-batch", "3",
                        "--grpo-group", "2", "--no-grpo-dynamic", "--grpo-kl", "0.1", "--grpo-norm", "sequence",
                        "--grpo-overlong", "4")
    rows = metrics(out, "grpo")
    assert len(rows) == 2 and res["generations"] == 12
    assert all(r["groups_kept"] == 3 for r in rows)  # without dynamic sampling every group is used
    assert all("kl_ref" in r for r in rows if r["loss"] is not None)


@pytest.mark.slow
def test_budget_sizes_srt_and_sdzero(tmp_path):
    # srt: 72 // (1 + 3) = 18 questions (N1 16 + 2 of N2), 72 generations.
    res, _, _ = smoke(tmp_path, "srt", "--method", "srt", "--budget", "72")
    assert res["phase1"]["questions"] == 18 and res["generations"] == 72
    # sdzero: Phase 1 = 16 * 4 = 64, the remaining 16 pay for 16 // 4 = 4 Phase 2 steps (not --p2-steps 3).
    res, out, _ = smoke(tmp_path, "sdzero", "--budget", "80", "--p2-steps", "3")
    assert res["generations_by"] == {"y_init": 16, "revisions": 48, "p2": 16} and len(metrics(out, "p2")) == 4


@pytest.mark.slow
def test_base_only_evaluates(tmp_path):
    res, out, _ = smoke(tmp_path, "base", "--method", "base")
    assert set(res["eval"]) == {"eval_base"} and res["generations"] == 0
    assert res["final_accuracy"] == res["base_accuracy"]


@pytest.mark.parametrize("argv, message", [
    (["--method", "rft", "--budget", "3"], "one question's --rft-samples"),
    (["--method", "grpo", "--budget", "10"], "one rollout step"),
    (["--method", "srt", "--budget", "3"], "one Phase 1 question"),
    (["--budget", "66"], "Phase 1 (--n1 x --num-init x (1 + --num-revisions) = 64) and one Phase 2 step"),
    (["--budget", "-1"], "--budget"),
    (["--method", "ppo"], "--method"),
    (["--method", "grpo", "--grpo-group", "1"], "--grpo-group"),
    (["--grpo-norm", "batch"], "--grpo-norm"),
    (["--grpo-clip-low", "1.5"], "--grpo-clip-low"),
    (["--grpo-overlong", "100"], "--grpo-overlong"),
])
def test_bad_baseline_flags(argv, message):
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        config.parse_args(["--preset", "smoke", *argv])


@pytest.mark.slow
def test_grpo_resume_after_kill_matches_uninterrupted(tmp_path):
    flags = ["--preset", "smoke", "--method", "grpo", "--grpo-steps", "4", "--grpo-batch", "4", "--grpo-lr", "1e-3",
             "--n-eval", "4"]
    ref = tmp_path / "ref"
    assert run_cli([*flags, "--out", str(ref)], timeout=600).returncode == 0
    out = tmp_path / "run"
    kill_mid_phase([*flags, "--out", str(out)], out, "grpo", 2)
    resumed = run_cli([*flags, "--out", str(out), "--resume"], timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_file(ref / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (ref, out))
    assert ra["generations"] == rb["generations"] and ra["final_accuracy"] == rb["final_accuracy"]


def test_response_logp_matches_full_logits(micro):
    model, tok = micro
    torch.manual_seed(0)
    seqs = [list(range(5, 17)), list(range(7, 15)), list(range(3, 20))]
    starts, lengths = [6, 3, 10], [6, 5, 7]
    temperature = 0.7
    model.train()
    logp, mask = baselines.response_logp(model, seqs, starts, lengths, tok.pad_token_id, temperature, chunk=4)
    weights = torch.randn(logp.shape)
    (logp * weights * mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    # Reference: one sequence at a time, full logits, no chunking.
    ref_rows = []
    for b, s in enumerate(seqs):
        logits = model(torch.tensor([s])).logits[0].float() / temperature  # [S, V]
        lp = logits.log_softmax(-1)[starts[b] - 1:starts[b] - 1 + lengths[b]]
        ref_rows.append(lp.gather(-1, torch.tensor(s[starts[b]:starts[b] + lengths[b]])[:, None]).squeeze(-1))
    assert mask.sum(1).tolist() == lengths
    for b, row in enumerate(ref_rows):
        assert torch.allclose(logp[b, :lengths[b]], row, atol=1e-5)
        assert torch.equal(logp[b, lengths[b]:], torch.zeros(logp.shape[1] - lengths[b]))
    sum((row * weights[b, :len(row)]).sum() for b, row in enumerate(ref_rows)).backward()
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[n], p.grad, atol=1e-4), n


@pytest.mark.slow
def test_p2only_distils_from_the_base_model(tmp_path):
    # Paper Table 12: Phase 2 without SRT; --budget 12 pays for 12 // 4 = 3 steps.
    res, out, proc = smoke(tmp_path, "p2only", "--method", "p2only", "--budget", "12", "--p2-steps", "9")
    assert res["generations_by"] == {"p2": 12} and len(metrics(out, "p2")) == 3
    assert set(res["eval"]) == {"eval_base", "eval_final"} and res["phase1"] is None
    assert "after Phase 2, no SRT" in proc.stdout


@pytest.mark.parametrize("flags", [
    ["--method", "rft", "--budget", "24", "--rft-samples", "2"],
    ["--method", "grpo", "--grpo-steps", "2", "--grpo-batch", "2", "--grpo-group", "2", "--grpo-kl", "0.1",
     "--save-every", "1"],
    ["--method", "p2only", "--p2-steps", "1"],
], ids=["rft", "grpo", "p2only"])
def test_baselines_run_in_process(tmp_path, flags):
    """Each baseline's loop end to end through train.main, small enough for the fast suite."""
    res = train.main(["--preset", "smoke", "--n-eval", "4", "--out", str(tmp_path / "r"), *flags])
    method = flags[1]
    assert set(res["eval"]) == {"eval_base", "eval_final"} and res["method"] == method
    assert set(res["generations_by"]) == {"rft": {"rft"}, "grpo": {"grpo"}, "p2only": {"p2"}}[method]
    rows = metrics(tmp_path / "r", {"rft": "rft", "grpo": "grpo", "p2only": "p2"}[method])
    assert rows and all(r["loss"] is None or r["loss"] == r["loss"] for r in rows)  # logged, never NaN
    if method == "rft":
        assert res["generations"] == 24 and res["baseline"]["questions"] == 12
    if method == "grpo":
        assert [r["step"] for r in rows] == [1, 2] and res["generations"] >= 8
