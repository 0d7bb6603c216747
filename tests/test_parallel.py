"""torchrun on CPU (gloo, 2 processes): DDP and FSDP2 train the same model as one process, rank 0 alone writes,
and a run stopped by kill -9 resumes on another world size. The micro model, the smoke preset."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import config
import parallel
import train
from test_train import kill_mid_phase, train_command

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0", OMP_NUM_THREADS="1")


def run(args, nproc=1):
    proc = subprocess.run(train_command(args, nproc), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def rows(out):
    """metrics.jsonl; a step logged again after a resume (killed between its row and its checkpoint)
    counts once, as its last row."""
    last = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        last[(r["phase"], r.get("step"), r.get("stage"))] = r
    return list(last.values())


def assert_same_training(a, b, rtol=1e-4):
    """Two runs of one config: the same steps, losses and gradient norms up to float summation order, the
    same held-out accuracies, the same final weights to 1e-4."""
    ra = [r for r in rows(a) if r["phase"] in ("p1", "p2", "rft", "grpo", "eval")]
    rb = [r for r in rows(b) if r["phase"] in ("p1", "p2", "rft", "grpo", "eval")]
    assert [(r["phase"], r.get("step"), r.get("stage")) for r in ra] == \
        [(r["phase"], r.get("step"), r.get("stage")) for r in rb]
    for x, y in zip(ra, rb):
        if x["phase"] == "eval":
            assert x["avg@k"] == y["avg@k"] and x["response_len"] == y["response_len"], (x, y)
            continue
        for key in ("loss", "grad_norm", "kl_r0", "kl_r1", "reward_mean", "response_len"):
            if x.get(key) is not None:
                assert y[key] == pytest.approx(x[key], rel=rtol, abs=1e-7), (key, x, y)
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert set(wa) == set(wb)
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-4


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The smoke run in one process: what every world size must reproduce."""
    out = tmp_path_factory.mktemp("single") / "run"
    run(["--preset", "smoke", "--out", str(out)])
    return out


@pytest.mark.slow
def test_torchrun_smoke_ddp_matches_one_process(single, tmp_path):
    # The command, verbatim: `torchrun --standalone --nproc_per_node 2 train.py --preset smoke`.
    out = tmp_path / "ddp"
    run(["--preset", "smoke", "--out", str(out)], nproc=2)
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["parallel"] == "ddp"
    lines = [(o / "metrics.jsonl").read_text().count("\n") for o in (out, single)]
    assert lines[0] == lines[1]  # rank 0 alone writes metrics (no duplicated rows)
    assert_same_training(single, out)


@pytest.mark.slow
def test_torchrun_fsdp2_matches_one_process(single, tmp_path):
    out = tmp_path / "fsdp"
    run(["--preset", "smoke", "--parallel", "fsdp", "--out", str(out)], nproc=2)
    assert json.loads((out / "results.json").read_text())["parallel"] == "fsdp"
    assert_same_training(single, out)


@pytest.mark.slow
@pytest.mark.parametrize("strategy,flags", [
    # Batches smaller than or not divisible by the world size: a rank with no rows joins with weight 0;
    # Phase 2 in micro-batches of one row (gradients accumulate unsynced until the last, an empty one included).
    ("ddp", ["--srt-batch-size", "1", "--p2-batch-size", "3", "--p2-micro-batch", "1", "--teacher", "ema:0.5",
             "--topk", "0"]),
    ("fsdp", ["--p2-batch-size", "5", "--p2-micro-batch", "2", "--teacher", "sync:1"]),
    ("fsdp", ["--method", "grpo", "--grpo-steps", "2", "--grpo-batch", "3", "--grpo-minibatches", "3",
              "--grpo-kl", "0.04", "--grpo-norm", "sequence"]),
], ids=["ddp-odd-batches-microbatch-ema-fullvocab", "fsdp-microbatch-sync", "fsdp-grpo"])
def test_torchrun_matches_one_process_other_paths(strategy, flags, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run(["--preset", "smoke", *flags, "--out", str(one)])
    run(["--preset", "smoke", *flags, "--parallel", strategy, "--out", str(two)], nproc=2)
    assert_same_training(one, two)


def test_micro_batches_are_equal_in_number_on_every_rank():
    assert train.micro_batches([0, 2, 4], 5, 2, 2) == [[0, 2], [4]]
    assert train.micro_batches([1, 3], 5, 2, 2) == [[1, 3], []]  # as many as rank 0, the last one empty
    assert train.micro_batches([1], 3, 2, 0) == [[1]]  # 0: all rows at once
    assert train.micro_batches([], 1, 2, 0) == [[]]  # a rank without rows still runs one (weight 0)
    assert train.micro_batches([0, 1, 2], 3, 1, 1) == [[0], [1], [2]]


@pytest.mark.slow
def test_resume_fsdp2_run_in_one_process(single, tmp_path):
    """Killed under torchrun (2 processes, FSDP2) in Phase 2, resumed as a single process."""
    out = tmp_path / "run"
    kill_mid_phase(["--preset", "smoke", "--parallel", "fsdp", "--out", str(out)], out, "p2", 2, nproc=2)
    assert torch.load(out / "checkpoint" / "state.pt", weights_only=False)["world_size"] == 2
    run(["--preset", "smoke", "--out", str(out), "--resume"])
    assert_same_training(single, out)


@pytest.mark.slow
def test_resume_one_process_run_under_torchrun(single, tmp_path):
    """Killed as a single process in Phase 1 (optimizer state mid-schedule), resumed under torchrun DDP."""
    out = tmp_path / "run"
    kill_mid_phase(["--preset", "smoke", "--out", str(out)], out, "p1", 2, nproc=1)
    ckpt = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    assert ckpt["state"]["stage"] == "p1_train" and ckpt["state"]["step"] >= 1 and "optimizer" in ckpt
    proc = run(["--preset", "smoke", "--out", str(out), "--resume"], nproc=2)
    assert "on 2 processes (saved on 1)" in proc.stderr + proc.stdout
    assert_same_training(single, out)


def test_optimizer_state_by_name_round_trip():
    """Checkpoints key the optimizer state by parameter name; loading it back into a plain optimizer
    restores every moment exactly."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    d = parallel.Dist(device=torch.device("cpu"))
    saved = parallel.optimizer_state(model, opt, d)
    assert set(saved["state"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    fresh = torch.optim.AdamW(model.parameters(), lr=1.0)
    parallel.load_optimizer_state(model, fresh, saved, d)
    a, b = opt.state_dict(), fresh.state_dict()
    assert b["param_groups"][0]["lr"] == 1e-2
    for i in a["state"]:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(a["state"][i][k]), torch.as_tensor(b["state"][i][k]))


def test_single_process_helpers_are_identity():
    d = parallel.Dist(device=torch.device("cpu"))
    assert parallel.my_rows(d, 3) == [0, 1, 2]
    assert parallel.gather(d, 3, [0, 1, 2], ["a", "b", "c"]) == ["a", "b", "c"]
    shares = parallel.Shares(d, [5.0, 0.0])
    assert shares.factor(0) == 1.0 and shares.factor(1) == 0.0  # an empty term contributes nothing
    assert shares.mean([0.25, 3.0]) == [0.25, 0.0]
    assert parallel.my_rows(parallel.Dist(rank=1, world=2), 5) == [1, 3]
    assert parallel.my_rows(parallel.Dist(rank=1, world=2), 1) == []


def test_bad_parallel_flag():
    with pytest.raises(SystemExit, match="--parallel: 'zero3' is not one of auto, ddp, fsdp"):
        config.parse_args(["--preset", "smoke", "--parallel", "zero3", "--out", "/nonexistent/x"])


@pytest.mark.slow
def test_phase2_micro_batches_match_one_batch(single, tmp_path):
    """--p2-micro-batch 1 (rows sorted by length, gradients accumulated) trains what one batch trains."""
    out = tmp_path / "micro"
    run(["--preset", "smoke", "--p2-micro-batch", "1", "--out", str(out)])
    assert_same_training(single, out)
