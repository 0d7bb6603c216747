"""--eval-every N: held-out evaluation inside every training stage, logged to metrics.jsonl as eval rows with
the stage and step; it changes nothing of the training, and a run that stops mid-curve resumes to the same log."""
import json

import pytest
import torch
from safetensors.torch import load_file

import train
from test_train import untimed

SMOKE = ["--preset", "smoke", "--n-eval", "8", "--threads", "1"]


def rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def curve(out, stage):
    return [r for r in rows(out) if r["phase"] == "eval" and r["stage"] == stage]


def training(out):
    """The run's log without its --eval-every rows: what must not depend on the flag."""
    return [r for r in untimed((out / "metrics.jsonl").read_text())
            if not (r["phase"] == "eval" and "step" in r)]


def same_weights(a, b):
    wa, wb = (load_file(d / "model" / "model.safetensors") for d in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("flags, stages, timed", [
    (["--p2-steps", "5"], {"p1": (None, 2), "p2": (5, 2)}, {"p1_train_eval", "p2_eval"}),
    (["--method", "grpo", "--grpo-steps", "3", "--grpo-minibatches", "1", "--grpo-batch", "4"], {"grpo": (3, 2)},
     {"grpo_eval"}),
    (["--method", "rft"], {"rft": (None, 2)}, {"rft_train_eval"}),
], ids=["sdzero", "grpo", "rft"])
def test_curve_rows_and_training_unchanged(tmp_path, flags, stages, timed):
    """Every 2 optimizer steps, not after the last (the stage's own evaluation follows it)."""
    plain, curved = tmp_path / "plain", tmp_path / "curved"
    train.main([*SMOKE, *flags, "--out", str(plain)])
    res = train.main([*SMOKE, *flags, "--out", str(curved), "--eval-every", "2"])
    assert training(plain) == training(curved)  # the same steps, losses, rewards and stage evaluations
    assert same_weights(plain, curved)
    for stage, (total, every) in stages.items():
        total = total or sum(r["phase"] == stage for r in rows(curved))
        points = curve(curved, stage)
        assert [r["step"] for r in points] == list(range(every, total, every)), stage
        for r in points:
            assert 0 <= r["avg@k"] <= 1 and r["n_questions"] == 8 and r["k"] == 1
    assert timed <= set(res["seconds_per_stage"])  # the curve's time, apart from the steps'
    # evaluation generations never count against the budget
    assert res["generations"] == json.loads((plain / "results.json").read_text())["generations"]


def test_the_curve_point_equals_a_stage_evaluation_of_the_same_weights(tmp_path):
    """A curve point at Phase 2 step N scores the weights after N steps: with --p2-steps N + 1 and eval every N,
    the point at N equals (greedy) eval_final of a run stopped at N steps."""
    long_run, short_run = tmp_path / "long", tmp_path / "short"
    train.main([*SMOKE, "--p2-steps", "3", "--eval-every", "2", "--out", str(long_run)])
    train.main([*SMOKE, "--p2-steps", "2", "--out", str(short_run)])
    point = [r for r in curve(long_run, "p2") if r["step"] == 2]
    final = [r for r in rows(short_run) if r["phase"] == "eval" and r["stage"] == "eval_final"]
    assert len(point) == len(final) == 1
    for key in ("avg@k", "pass@k", "response_len", "truncated_share"):
        assert point[0][key] == final[0][key], key


def test_resume_mid_curve_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """Stopped inside a curve evaluation (after the step's row, before its checkpoint): the resumed run
    logs each step and each curve point once, and ends with the uninterrupted run's weights."""
    flags = [*SMOKE, "--p2-steps", "4", "--eval-every", "1", "--save-every", "1"]
    ref, out = tmp_path / "ref", tmp_path / "run"
    train.main([*flags, "--out", str(ref)])
    real, calls = train.evaluate, []

    def crashing(run, name, step=None):
        if step is not None and name == "p2":
            calls.append(step)
            if step == 2:
                raise SystemExit("stopped")
        return real(run, name, step)
    monkeypatch.setattr(train, "evaluate", crashing)
    with pytest.raises(SystemExit, match="stopped"):
        train.main([*flags, "--out", str(out)])
    monkeypatch.setattr(train, "evaluate", real)
    train.main([*flags, "--out", str(out), "--resume"])
    assert untimed((ref / "metrics.jsonl").read_text()) == untimed((out / "metrics.jsonl").read_text())
    assert same_weights(ref, out)


def test_eval_every_must_not_be_negative():
    with pytest.raises(SystemExit, match="--eval-every"):
        train.config.parse_args(["--eval-every", "-1"])
