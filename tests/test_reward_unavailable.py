"""A reward that cannot be computed is never a 0, and samples.jsonl says why each r is what it is.

  * the batch contract (verify.verdicts / verify.rewards) raises RewardUnavailable, one line that names the
    cause, when the verifier failed on any response (sandbox_error, verifier_error); check_math and check_code
    still return such verdicts without raising;
  * a training run stops on the first such batch, on every stage, after a metrics.jsonl row that counts the
    reasons of that batch; a code run whose sandbox cannot start stops before the model loads;
  * every samples.jsonl row carries the verdict's reason and extracted answer (never a code task's tests).
Each failed on 74c6a81.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import train
import verify
from verifiers import sandbox

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--preset", "smoke"]


def test_the_batch_contract_raises_where_check_math_returns(monkeypatch):
    real = verify.check_math
    monkeypatch.setattr(verify, "check_math", lambda y, a: verify.Verdict(False, "verifier_error") if y == "broken"
                        else real(y, a))
    monkeypatch.setattr(verify.sympy_worker, "last_failure", lambda: "the sympy worker exited with code 1: boom")
    assert verify.check_math("broken", "1").reason == "verifier_error"
    assert verify.rewards(["\\boxed{1}", "\\boxed{2}"], ["1", "1"], "math") == [1, 0]
    with pytest.raises(verify.RewardUnavailable) as e:
        verify.rewards(["\\boxed{1}", "broken", "\\boxed{2}"], ["1", "1", "1"], "math")
    assert "1 of 3 responses" in str(e.value) and "boom" in str(e.value) and "\n" not in str(e.value)
    assert [v.reason for v in e.value.verdicts] == ["correct", "verifier_error", "mismatch"]
    assert len(verify.verdicts(["broken"], ["1"], "math", strict=False)) == 1  # the caller counts them itself


def test_a_code_batch_whose_sandbox_cannot_start_raises_with_the_cause(monkeypatch):
    monkeypatch.setattr(sandbox, "sandbox_problem", lambda isolation=None: "the code sandbox cannot start: X. Do Y")
    monkeypatch.setattr(sandbox, "check_code_batch", lambda ys, tasks, workers=None: [verify.Verdict(False, "sandbox_error")] * len(ys))
    with pytest.raises(verify.RewardUnavailable, match="code reward cannot be computed for 2 of 2 responses: the "
                                                       "code sandbox cannot start: X. Do Y"):
        verify.rewards(["print(1)", "print(2)"], [{}, {}], "code")
    assert verify.probe("code") == "the code sandbox cannot start: X. Do Y"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("stage", ["eval_base", "p1", "p2"])
def test_a_run_stops_at_the_first_batch_without_rewards_and_counts_them(tmp_path, monkeypatch, stage):
    """The math worker dies (verifier_error) in the base evaluation, Phase 1 or Phase 2: the run stops with one
    line, and metrics.jsonl holds a row counting that batch's reasons."""
    real, calls = verify.check_math, []

    def check_math(y, a):
        calls.append(stage)
        v = real(y, a)
        return verify.Verdict(False, "verifier_error") if failing() and len(calls) % 5 == 0 else v

    monkeypatch.setattr(verify, "check_math", check_math)
    monkeypatch.setattr(verify.sympy_worker, "last_failure", lambda: "the sympy worker died twice (killed by signal 9)")
    out = tmp_path / "run"
    seen = {"stage": None}
    real_rollouts = train.Run.rollout_verdicts

    def rollout_verdicts(self, prompts, seeds, examples, max_new_tokens, kind, desc):
        seen["stage"] = {"eval": "eval_base", "p1": "p1", "p2": "p2"}.get(kind)
        return real_rollouts(self, prompts, seeds, examples, max_new_tokens, kind, desc)

    def failing():
        return seen["stage"] == stage
    monkeypatch.setattr(train.Run, "rollout_verdicts", rollout_verdicts)
    with pytest.raises(SystemExit) as e:
        train.main([*SMOKE, "--out", str(out)])
    message = str(e.value.code)
    assert message.startswith("the math reward cannot be computed for ") and "died twice" in message
    assert "\n" not in message and "Stopped at" in message
    row = [r for r in _rows(out / "metrics.jsonl") if r["phase"] == "reward_unavailable"]
    assert len(row) == 1 and row[0]["reasons"]["verifier_error"] >= 1
    assert sum(row[0]["reasons"].values()) == int(message.split(" of ")[1].split()[0])
    assert not (out / "results.json").exists()


@pytest.mark.slow
def test_a_code_run_whose_sandbox_cannot_start_stops_before_the_model_loads(tmp_path):
    """Root in a user namespace that maps only uid 0 (rootless containers, Singularity --fakeroot): the sandbox
    cannot switch uids. The run stops at start with the probe's one line, before any model loads, exit 1."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or not unshare or subprocess.run([unshare, "-r", "true"]).returncode != 0:
        pytest.skip("needs root and unshare -r")
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SDZERO_SANDBOX_SAME_USER": ""}
    proc = subprocess.run([unshare, "-r", sys.executable, str(REPO / "train.py"), "--task", "code", *SMOKE,
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("the code sandbox cannot start: this process is root in a user namespace")
    assert "SDZERO_SANDBOX_SAME_USER=1" in last
    assert not (out / "metrics.jsonl").exists() or "eval" not in (out / "metrics.jsonl").read_text()


def test_samples_carry_the_verdicts_reason_and_extracted_answer(tmp_path):
    out = tmp_path / "run"
    train.main([*SMOKE, "--out", str(out)])
    samples = _rows(out / "samples.jsonl")
    assert {s["phase"] for s in samples} == {"eval", "p1", "p2"}
    for s in samples:
        assert s["reason"] in verify.REASONS and s["r"] == int(s["reason"] == "correct")
        assert s["extracted"] == verify.check_math(s["y_init"] if s["phase"] == "p1" else s["y"], s["answer"]).extracted
        if s["phase"] == "p1":
            assert s["revision_reason"] in verify.REASONS and s["revision_r"] == int(s["revision_reason"] == "correct")
            assert s["revision_extracted"] == verify.check_math(s["revision"], s["answer"]).extracted
    assert any(s["extracted"] is not None for s in samples)


@pytest.mark.slow
def test_code_samples_carry_the_program_never_the_tests(tmp_path, sandbox_works):
    out = tmp_path / "run"
    train.main(["--task", "code", *SMOKE, "--method", "base", "--out", str(out)])
    samples = _rows(out / "samples.jsonl")
    assert samples and all(s["reason"] in verify.CODE_REASONS for s in samples)
    assert all(s["extracted"] == sandbox.extract_program(s["y"]) or s["reason"] == "no_answer" for s in samples)
    assert all("detail" not in s and isinstance(s["answer"]["tests"], int) for s in samples)


def test_the_batch_contract_refuses_what_it_cannot_grade(sandbox_works):
    """A task name it does not know, lists of different lengths, a malformed code task: an error, never a 0. A code
    task given as a JSON string, as data files hold it, is graded."""
    with pytest.raises(ValueError, match="task 'Code': expected 'math' or 'code'"):
        verify.rewards(["print(1)"], [{}], "Code")
    with pytest.raises(ValueError, match="2 responses but 1 answers"):
        verify.rewards(["\\boxed{5}", "\\boxed{6}"], ["5"], "math")
    stdio = '{"kind": "stdio", "tests": [{"input": "2\\n", "output": "4\\n"}]}'
    assert verify.rewards(["```python\nprint(int(input()) * 2)\n```"], [stdio], "code") == [1]
    with pytest.raises(verify.RewardUnavailable, match=r"malformed: 'tests' is a str, not a list\. The task schema"):
        verify.rewards(["print(1)"], [{"kind": "stdio", "tests": "2 4"}], "code")
    assert verify.check_code("print(1)", {"tests": [{"input": "", "output": "1"}]}).detail == \
        "The task is malformed: kind None, not stdio, call or assert."
