"""The training script on the micro model: both phases end to end, outputs, exact resume after kill -9, bad input
(in-process: train.main), the SRT loss against hand-computed values, the teacher's refresh and precision."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import atomic
import config
import parallel
import run as run_py
import run_folder
import train
import verify

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, env=None, **kw):
    env = dict(env or os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, **kw)


def train_command(args, nproc=1):
    """train.py with args, in one process or under torchrun with nproc processes."""
    if nproc == 1:
        return [sys.executable, str(REPO / "train.py"), *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            str(REPO / "train.py"), *args]


def kill_mid_phase(args, out, phase, steps, nproc=1):
    """Start train.py with args (its own process group: torchrun and its workers too) and kill -9 all of it
    once metrics.jsonl in out has `steps` rows of `phase`; return when no process of the run is left."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    proc = subprocess.Popen(train_command(args, nproc), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    metrics, tag = out / "metrics.jsonl", f'"phase": "{phase}"'
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and sum(tag in line for line in metrics.read_text().splitlines()) >= steps:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    while True:  # torchrun's workers die with their group; wait until they are gone before resuming
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = run_cli(["--preset", "smoke", "--out", str(out)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.slow
def test_smoke_runs_both_phases(smoke_run):
    out, proc = smoke_run
    results = json.loads((out / "results.json").read_text())
    for key in ("method", "task", "model", "base_accuracy", "final_accuracy", "generations", "seconds"):
        assert key in results
    assert set(results["eval"]) == {"eval_base", "eval_srt", "eval_final"}
    cfg = json.loads((out / "run_config.json").read_text())
    # Generations: N1 y_init + 3 revisions each (all y_init revised) + one per Phase 2 prompt.
    assert results["generations"] == cfg["n1"] * (1 + cfg["num_revisions"]) + cfg["p2_steps"] * cfg["p2_batch_size"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    p1 = [r for r in rows if r["phase"] == "p1"]
    p2 = [r for r in rows if r["phase"] == "p2"]
    assert len(p2) == cfg["p2_steps"] and p1
    for r in p2:
        for key in ("loss", "lr", "grad_norm", "reward_mean", "kl_r0", "kl_r1", "response_len", "truncated_share",
                    "tokens_per_s", "sec_generate", "sec_teacher", "sec_student", "peak_mem_mib"):
            assert key in r
        assert math.isfinite(r["loss"]) and r["loss"] >= 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    p2s = [s for s in samples if s["phase"] == "p2"]
    assert p2s and len(p2s[0]["tokens"]) == len(p2s[0]["kl"]) == len(p2s[0]["teacher_top"])
    assert any(s["phase"] == "p1" and "revision" in s for s in samples)
    # The final model reloads with plain transformers.
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(out / "model")
    assert "after Phase 2 (SD-Zero)" in proc.stdout


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(smoke_run, tmp_path):
    ref_out, _ = smoke_run
    out = tmp_path / "run"
    # Kill -9 in the middle of Phase 2, after at least one in-phase checkpoint.
    kill_mid_phase(["--preset", "smoke", "--out", str(out)], out, "p2", 2)
    assert not (out / "model").exists()
    resumed = run_cli(["--preset", "smoke", "--out", str(out), "--resume"], timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr + resumed.stdout
    a, b = load_file(ref_out / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit on CPU
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (ref_out, out))
    assert ra["final_accuracy"] == rb["final_accuracy"] and ra["generations"] == rb["generations"]
    # The logs: truncated to what the checkpoint covered, so no row is repeated or lost (timings aside).
    for name in ("metrics.jsonl", "samples.jsonl"):
        la, lb = (untimed((d / name).read_text()) for d in (ref_out, out))
        assert len(la) == len(lb) and la == lb, name


def untimed(text: str) -> list[dict]:
    """The rows of a jsonl log without the fields that measure time or memory."""
    def keep(k):
        return not (k.startswith("sec") or k in ("tokens_per_s", "peak_mem_mib", "wall_seconds"))
    return [{k: v for k, v in json.loads(line).items() if keep(k)} for line in text.splitlines()]


@pytest.mark.slow
def test_srt_method_stops_after_phase1(tmp_path):
    """--method srt, with the authors' Phase 1 data: 3 first answers per question (--num-init 3,
    run_srt_data.sh), a cap on the kept tuples and their cleaning (prepare_data.py)."""
    proc = run_cli(["--preset", "smoke", "--method", "srt", "--out", str(tmp_path / "srt"), "--n-eval", "4",
                    "--num-init", "3", "--srt-max-tuples", "12", "--srt-clean"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "srt" / "results.json").read_text())
    assert set(results["eval"]) == {"eval_base", "eval_srt"}
    assert results["final_accuracy"] == results["srt_accuracy"]
    cfg = json.loads((tmp_path / "srt" / "run_config.json").read_text())
    n1, rev = cfg["n1"], cfg["num_revisions"]
    assert results["generations_by"] == {"y_init": 3 * n1, "revisions": 3 * n1 * rev}
    assert results["phase1"]["questions"] == n1
    p1 = results["phase1"]
    assert p1["verified"] > 12 and p1["kept"] == 12 - p1["duplicates_dropped"]  # the micro model repeats itself


# ------------------------------------------------------------------------------------------- bad input

def main_error(argv) -> str:
    """train.main(argv) in this process; the one-line message it stops with."""
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    assert isinstance(e.value.code, str), e.value.code  # a message, not a bare exit status
    return e.value.code


def saved_run(out: Path, *flags) -> Path:
    """A run folder as train.py leaves it after a checkpoint: run_config.json, checkpoint/state.pt, results."""
    out.mkdir(parents=True)
    cfg = config.parse_args(["--preset", "smoke", "--out", str(out), *flags])
    (out / "run_config.json").write_text(json.dumps(train.dataclasses.asdict(cfg)))
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / "state.pt").write_bytes(b"not read: the settings are checked first")
    (out / "results.json").write_text('{"final_accuracy": 0.5}')
    return out


def test_out_folder_with_another_run_is_refused(tmp_path):
    out = saved_run(tmp_path / "run")
    message = main_error(["--preset", "smoke", "--out", str(out)])
    assert "--out" in message and "--overwrite-output-dir" in message  # a finished run: nothing to --resume
    assert (out / "results.json").read_text() == '{"final_accuracy": 0.5}'  # nothing already written is lost


def test_resume_without_checkpoint(tmp_path):
    assert "--resume: no checkpoint" in main_error(["--preset", "smoke", "--out", str(tmp_path / "none"), "--resume"])


def test_resume_with_changed_settings_is_refused(tmp_path):
    out = saved_run(tmp_path / "run")
    message = main_error(["--preset", "smoke", "--out", str(out), "--resume", "--p2-lr", "0.5"])
    assert "p2_lr" in message and "0.5" in message
    # how a run runs (threads, the parallel strategy) may change on resume; a newer setting counts as its default
    cfg = json.loads((out / "run_config.json").read_text())
    del cfg["eval_extra_n"]
    (out / "run_config.json").write_text(json.dumps(cfg))
    run_folder.prepare_out(config.parse_args(["--preset", "smoke", "--out", str(out), "--resume", "--threads", "1"]),
                       parallel.Dist(device=torch.device("cpu")))


def test_unknown_model_offline(tmp_path):
    message = main_error(["--preset", "smoke", "--model", "no-such-org/no-such-model", "--out", str(tmp_path / "x")])
    assert "--model no-such-org/no-such-model" in message and "HF_HUB_OFFLINE" in message


def test_missing_model_folder(tmp_path):
    assert "not a model folder" in main_error(["--preset", "smoke", "--model", str(tmp_path / "missing"), "--out",
                                               str(tmp_path / "x")])


def test_dataset_missing_field(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n{"question": "What is 2 + 2?"}\n')
    message = main_error(["--preset", "smoke", "--dataset", str(data), "--out", str(tmp_path / "x")])
    assert "row 2" in message and "'answer'" in message and "--answer-field" in message


def test_zero_kept_revisions_stops(tmp_path):
    # A one-token budget can never hold these 15-digit answers (a lone number is a whole answer, so the task's
    # own small sums could verify): Phase 1 must stop, not train on nothing.
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {k} times 111111111111?", "answer": str(k * 111111111111)})
                            + "\n" for k in range(1000, 1040)))
    assert "Phase 1 kept no revisions" in main_error(["--preset", "smoke", "--dataset", str(data), "--max-new-tokens",
                                                      "1", "--out", str(tmp_path / "x"), "--n-eval", "4"])


def test_bad_flags():
    for argv, flag in ((["--teacher", "sync:0"], "--teacher"), (["--divergence", "kl"], "--divergence"),
                       (["--srt-loss", "all"], "--srt-loss"), (["--eval-samples", "4"], "--eval-samples"),
                       (["--temperature", "0"], "--temperature"), (["--temperature", "-1"], "--temperature"),
                       (["--method", "grpo", "--temperature", "0"], "--temperature"),
                       (["--p1-top-p", "0"], "--p1-top-p"), (["--eval-top-p", "1.5"], "--eval-top-p"),
                       (["--baseline-top-k", "-1"], "--baseline-top-k"), (["--srt-betas", "0.9"], "--srt-betas"),
                       (["--p2-betas", "0.9,1.0"], "--p2-betas"), (["--p2-weight-decay", "-1"], "--p2-weight-decay"),
                       (["--srt-variant", "staged"], "--srt-variant"),
                       (["--srt-variant", "two-stage", "--srt-loss", "gen"], "--srt-loss")):
        with pytest.raises(SystemExit, match=flag):
            config.parse_args(["--preset", "smoke", *argv])
    # B3: greedy stays available where it makes sense, in evaluation
    greedy = config.parse_args(["--preset", "smoke", "--eval-temperature", "0", "--eval-samples", "1"])
    assert greedy.eval_temperature == 0


def test_presets_and_overrides():
    cfg = config.parse_args([])
    assert cfg.preset == "demo" and cfg.model == "smollm2-135m" and cfg.divergence == "reverse"
    assert cfg.topk == 64 and cfg.teacher == "frozen" and cfg.phrase_style == "paper" and cfg.revise_correct
    cfg = config.parse_args(["--preset", "smoke", "--p2-steps", "7", "--no-revise-correct"])
    assert cfg.p2_steps == 7 and not cfg.revise_correct and cfg.n1 == config.PRESETS["smoke"]["n1"]
    cfg = config.parse_args(["--preset", "paper"])
    assert cfg.model == "Qwen/Qwen3-4B-Instruct-2507" and cfg.p2_lr == 5e-6 and cfg.temperature == 0.7
    assert cfg.parallel == "fsdp" and cfg.grad_checkpoint and cfg.precision == "auto"  # bf16 on CUDA


def test_help_lists_every_knob(capsys):
    with pytest.raises(SystemExit):
        config.parse_args(["--help"])
    text = capsys.readouterr().out
    for f in train.dataclasses.fields(config.Config):
        assert "--" + f.name.replace("_", "-") in text


def test_pass_at_k():
    assert train.pass_at_k(4, 0, 1) == 0.0 and train.pass_at_k(4, 4, 2) == 1.0
    assert train.pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert train.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)


class BareRun(run_py.Run):
    """A Run without data or a model: a test sets the attributes the method under test reads."""

    def __init__(self, model=None, **attrs):
        self.adapter = None
        if model is not None:
            self.student = parallel.Weights(model, parallel.Policy(model))
        self.__dict__.update(attrs)


def teacher_run(model, autocast, teacher: str):
    """What make_teacher and update_teacher read of a Run, on one process, and the teacher made."""
    run = BareRun(model, dist=parallel.Dist(device=torch.device("cpu")), autocast=autocast,
                  cfg=config.Config(teacher=teacher))
    run.make_teacher()
    return run


def test_teacher_sync_and_ema():
    model = torch.nn.Linear(2, 2)
    run = teacher_run(model, None, "frozen")
    teacher = run.teacher.model
    assert run.teacher.policy.model is teacher and teacher is not model
    with torch.no_grad():
        model.weight.add_(1.0)
    run.cfg = config.Config(teacher="sync:2")
    train.update_teacher(run, 1)
    assert not torch.equal(teacher.weight, model.weight)
    train.update_teacher(run, 2)
    assert torch.equal(teacher.weight, model.weight)
    run.cfg = config.Config(teacher="ema:0.25")
    before = teacher.weight.clone()
    with torch.no_grad():
        model.weight.add_(4.0)
    train.update_teacher(run, 3)
    assert torch.allclose(teacher.weight, before + 0.25 * 4.0)
    assert not teacher.weight.requires_grad


def test_adamw_settings_per_phase():
    """--srt-betas/--srt-weight-decay reach Phase 1's (and RFT's) AdamW, --p2-* Phase 2's (and GRPO's); the
    authors' values: sft.sh (0.9, 0.95) and 1e-4, distillation_math.yaml (0.9, 0.999) and 0.01."""
    run = BareRun(torch.nn.Linear(2, 2), device=torch.device("cpu"))
    run.cfg = config.parse_args(["--preset", "smoke", "--srt-betas", "0.9,0.95", "--srt-weight-decay", "1e-4",
                                 "--p2-weight-decay", "0.01"])
    opt, _ = run_py.make_optimizer(run, 1e-5, 10, 1, True, "srt")
    assert opt.param_groups[0]["betas"] == (0.9, 0.95) and opt.param_groups[0]["weight_decay"] == 1e-4
    opt, _ = run_py.make_optimizer(run, 1e-5, 10, 1, False, "p2")
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["weight_decay"] == 0.01


def test_bf16_teacher_follows_an_fp32_student():
    """--precision bf16 keeps a frozen or sync teacher in bf16; a sync copy casts the fp32 student's weights."""
    model = torch.nn.Linear(2, 2)

    run = teacher_run(model, torch.bfloat16, "sync:1")
    assert run.teacher.model.weight.dtype == torch.bfloat16 and model.weight.dtype == torch.float32
    with torch.no_grad():
        model.weight.add_(2.0)
    train.update_teacher(run, 1)
    assert torch.equal(run.teacher.model.weight, model.weight.to(torch.bfloat16))


def test_bf16_ema_teacher_tracks_an_fp64_reference_over_many_small_steps():
    """B2: under --precision bf16 the EMA teacher keeps fp32 weights, so 100 steps at R = 0.01 toward a student
    8e-4 away close the gap as exact EMA does (to 2.9e-4). A bf16 teacher rounded every increment (8e-6 on
    weights near 1, where bf16's step is 2^-7) away and stayed 8e-4 behind."""
    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(-3.0)

    run = teacher_run(model, torch.bfloat16, "ema:0.01")
    assert run.teacher.model.weight.dtype == torch.float32  # its own fp32 master; the forward runs under autocast
    ref = [p.detach().double().clone() for p in run.teacher.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(8e-4)
    for step in range(1, 101):
        train.update_teacher(run, step)
        for r, p in zip(ref, model.parameters()):
            r += 0.01 * (p.double() - r)
    gap = (model.weight.double() - run.teacher.model.weight.double()).abs().max().item()
    assert gap == pytest.approx(8e-4 * 0.99 ** 100, rel=1e-3)  # 2.9e-4
    for r, p in zip(ref, run.teacher.model.parameters()):
        assert torch.allclose(p.double(), r, atol=1e-6)


@pytest.mark.slow
def test_activation_checkpointing_and_bf16_runs(tmp_path):
    """--grad-checkpoint recomputes the same math (losses to float order); --precision bf16 runs the same steps
    with bf16 matmuls (losses within a few percent)."""
    def p1_losses(flags):
        out = tmp_path / "-".join(flags or ["plain"]).strip("-")
        proc = run_cli(["--preset", "smoke", "--out", str(out), "--n-eval", "4", "--p2-steps", "2", *flags],
                       timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["phase"] == "p1"], [r for r in rows if r["phase"] == "p2"]
    plain, _ = p1_losses([])
    ckpt, _ = p1_losses(["--grad-checkpoint"])
    bf16, p2 = p1_losses(["--precision", "bf16"])
    assert ckpt == pytest.approx(plain, rel=1e-4)
    assert bf16 == pytest.approx(plain, rel=0.05) and bf16 != plain
    assert len(p2) == 2 and all(math.isfinite(r["loss"]) for r in p2)


@pytest.mark.parametrize("flags", [
    ["--teacher", "sync:1", "--divergence", "mixed", "--topk", "0", "--teacher-max-len", "60"],
    ["--teacher", "ema:0.5", "--divergence", "jsd", "--topk", "8", "--support", "student", "--tail",
     "--teacher-keep-end"],
    ["--srt-loss", "rev", "--divergence", "forward", "--topk", "16", "--tail", "--phrase-style", "olmo",
     "--no-revise-correct"],
    # the authors' sampling: top-p 0.9 and their stop strings in Phase 1; top-k and top-p elsewhere
    ["--temperature", "1.0", "--p1-top-p", "0.9", "--p1-stop", "<|im_end|>,<|endoftext|>,<|im_start|>,Question:",
     "--p2-top-k", "20", "--eval-temperature", "0.7", "--eval-top-p", "0.95", "--p1-top-k", "50"],
])
@pytest.mark.slow
def test_phase2_variants_run(tmp_path, flags):
    out = tmp_path / "v"
    proc = run_cli(["--preset", "smoke", "--out", str(out), "--n-eval", "4", "--p2-steps", "2", "--save-every", "0",
                    *flags], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p2 = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"phase": "p2"' in line]
    assert len(p2) == 2 and all(math.isfinite(r["loss"]) and r["loss"] >= 0 for r in p2)
    if "--teacher-max-len" in flags:
        # smoke prompts + 2 x 24 tokens + phrase exceed 60: y is cut for student and teacher alike
        assert any(r["teacher_cut_share"] > 0 for r in p2)


@pytest.mark.slow
def test_a_sample_without_room_in_the_teacher_cap_carries_no_loss(tmp_path):
    """--teacher-max-len below x + phrase: not one token of y fits twice, so no sample is scored (the authors
    zero its loss) where the old code trained on its first token."""
    out = tmp_path / "v"
    proc = run_cli(["--preset", "smoke", "--method", "p2only", "--out", str(out), "--n-eval", "4", "--p2-steps", "1",
                    "--teacher-max-len", "8"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p2 = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"phase": "p2"' in line]
    assert len(p2) == 1 and p2[0]["teacher_no_room_share"] == 1.0 and p2[0]["teacher_cut_share"] == 1.0
    assert p2[0]["loss"] == 0.0 and p2[0]["grad_norm"] == 0.0


@pytest.mark.skipif(sys.platform != "linux", reason="the atomic folder swap is renameat2(RENAME_EXCHANGE)")
def test_saving_the_model_again_never_leaves_the_run_without_model(tmp_path, micro_model_dir, monkeypatch):
    """The final model folder is swapped in whole: at every delete or rename save_model does, model/ is there
    (the old code deleted model/ before renaming model.tmp into place), and then it holds the new weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = BareRun(AutoModelForCausalLM.from_pretrained(micro_model_dir), tok=AutoTokenizer.from_pretrained(micro_model_dir),
                  out=tmp_path, dist=parallel.Dist(device=torch.device("cpu")))
    run_folder.save_model(run)
    with torch.no_grad():
        for p in run.student.model.parameters():
            p.add_(1.0)
    seen, rmtree, replace = [], run_py.shutil.rmtree, run_py.os.replace
    present = (tmp_path / "model" / "config.json").exists
    monkeypatch.setattr(run_py.shutil, "rmtree", lambda *a, **k: (seen.append(present()), rmtree(*a, **k))[1])
    monkeypatch.setattr(run_py.os, "replace", lambda *a, **k: (seen.append(present()), replace(*a, **k))[1])
    run_folder.save_model(run)
    assert seen and all(seen), seen
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), run.student.model.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no model.tmp or model.old left


def test_text_files_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    """run_config.json and results.json: written to a temporary file, fsynced, renamed, the folder fsynced."""
    events, fsync, replace = [], run_py.os.fsync, run_py.os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), replace(a, b))[1])
    atomic.atomic_write_text(tmp_path / "results.json", '{"a": 1}')
    assert events == ["fsync", "replace", "fsync"] and (tmp_path / "results.json").read_text() == '{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.slow
def test_two_stage_srt_runs_both_stages(tmp_path):
    """--srt-variant two-stage (the authors' sft.sh): a generation stage on wrong-init tuples, then a revision
    stage of --srt-stage2-size tuples in the user-turn layout, each its own optimizer and epochs."""
    out = tmp_path / "two"
    proc = run_cli(["--preset", "smoke", "--out", str(out), "--n-eval", "4", "--p2-steps", "1",
                    "--srt-variant", "two-stage", "--srt-stage2-size", "3"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    p1 = next(r for r in rows if r["phase"] == "p1_sample")
    assert p1["stage2"] == 3 and p1["stage1"] == p1["kept"] and p1["stage1"] + 3 <= p1["verified"]
    stage1, stage2 = [r for r in rows if r["phase"] == "p1"], [r for r in rows if r["phase"] == "p1_rev"]
    cfg = json.loads((out / "run_config.json").read_text())
    assert len(stage1) == -(-p1["stage1"] // cfg["srt_batch_size"]) * cfg["srt_epochs"]
    assert len(stage2) == -(-3 // cfg["srt_batch_size"]) * cfg["srt_epochs"]
    assert rows.index(stage1[-1]) < rows.index(stage2[0])  # stage 2 after stage 1
    assert all(r["l_gen"] == r["l_rev"] for r in stage2)  # the revision stage's loss is y_rev's alone
    assert stage2[0]["step"] == 1  # its own schedule from step 1


# The authors preset's choices that are recipe, not scale: the smoke run below applies them to the micro model.
SCALE = {"model", "dataset", "eval_dataset", "out", "parallel", "grad_checkpoint", "p2_micro_batch", "n1", "n2",
         "n_eval", "max_new_tokens", "srt_batch_size", "p2_batch_size", "p2_steps", "p2_warmup", "teacher_max_len",
         "gen_batch_size", "eval_samples", "eval_temperature", "save_every", "srt_max_tuples", "srt_stage2_size",
         "srt_lr", "p2_lr", "srt_epochs", "fewshot"}


@pytest.mark.slow
def test_the_authors_recipe_runs_in_the_smoke_preset(tmp_path):
    """--preset authors minus its scale, on the micro model: every variant of the authors' code at once."""
    recipe = {k: v for k, v in config.PRESETS["authors"].items() if k not in SCALE}
    assert {"num_init", "p1_top_p", "p1_stop", "srt_clean", "srt_variant", "srt_betas", "srt_weight_decay",
            "p2_weight_decay", "teacher_keep_end", "divergence", "revise_correct", "temperature"} <= set(recipe)
    flags = []
    for k, v in recipe.items():
        flag = "--" + k.replace("_", "-")
        flags += [flag if v else "--no-" + flag[2:]] if isinstance(v, bool) else [flag, str(v)]
    out = tmp_path / "authors"
    proc = run_cli(["--preset", "smoke", "--out", str(out), "--n-eval", "4", "--p2-steps", "1",
                    "--srt-stage2-size", "2", *flags], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((out / "run_config.json").read_text())
    assert all(cfg[k] == v for k, v in recipe.items())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"p1", "p1_rev", "p2"} <= {r["phase"] for r in rows}
    assert config.parse_args(["--preset", "authors"]).srt_variant == "two-stage"


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    model = torch.nn.Linear(2, 1)

    run = BareRun(model, out=tmp_path, cfg=config.Config())
    run.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda s: 1.0)
    before = model.weight.detach().clone()
    loss = model(torch.tensor([[float("nan"), 1.0]])).sum()
    with pytest.raises(SystemExit, match=r"p2 step 4: the loss is nan .*--p2-lr"):
        run_py.optimizer_step(run, loss, loss.item(), "p2", 4)
    assert torch.equal(model.weight, before)  # no step was taken on a NaN loss


@pytest.mark.slow
def test_code_task_runs_both_phases(tmp_path, monkeypatch, capsys):
    """--task code end to end on the embedded code task: every response goes through the real sandbox. The micro
    model only knows arithmetic, so none of its answers compiles (all real rewards are 0, asserted); to drive
    both phases the test then marks a fixed third of them correct. The verdicts themselves are tested in
    tests/test_sandbox.py; the code demo on SmolLM2 is the real measurement (README)."""
    real, calls = verify.verdicts, []

    def verdicts(responses, answers, task, strict=True, workers=None):
        calls.append((task, [v.correct for v in real(responses, answers, task, strict=strict, workers=workers)],
                      [type(a) for a in answers]))
        return [verify.Verdict(len(y) % 3 == 0, "correct" if len(y) % 3 == 0 else "mismatch") for y in responses]
    monkeypatch.setattr(verify, "verdicts", verdicts)
    out = tmp_path / "run"
    results = train.main(["--task", "code", "--preset", "smoke", "--out", str(out),
                          "--eval-extra", "humaneval", "--eval-extra-n", "3", "--eval-extra-tokens", "8"])
    assert calls and all(task == "code" and not any(v) and set(types) == {dict} for task, v, types in calls)
    assert results["task"] == "code" and set(results["eval"]) == {"eval_base", "eval_srt", "eval_final"}
    assert results["phase1"]["kept"] > 0
    assert results["extra"]["dataset"] == "humaneval" and results["extra"]["n_questions"] == 3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["phase"] == "data" and rows[0]["n1"] == 16 and rows[0]["skipped"] == {}
    assert len([r for r in rows if r["phase"] == "p2"]) == 3
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    # the hidden tests stay out of the logs: only the task's shape is written
    assert all(s["answer"]["kind"] in ("call", "assert") and isinstance(s["answer"]["tests"], int) for s in samples)
    assert "humaneval base" in capsys.readouterr().out


def test_code_presets():
    cfg = config.parse_args(["--task", "code"])
    assert cfg.max_new_tokens == 96 and cfg.eval_extra == "humaneval" and cfg.out == "runs/demo-code"
    cfg = config.parse_args(["--task", "code", "--max-new-tokens", "64"])
    assert cfg.max_new_tokens == 64
    with pytest.raises(SystemExit, match="--task"):
        config.parse_args(["--task", "poetry"])


def test_paper_preset_offline_names_the_dataset(tmp_path, monkeypatch):
    """The paper presets read the Hub; offline and uncached, each says which flag and dataset, fast."""
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    for task, flag, name in (("math", "--eval-dataset", "math-500"), ("code", "--eval-dataset", "livecodebench")):
        message = main_error(["--preset", "paper", "--task", task, "--out", str(tmp_path / task)])
        assert f"{flag} {name}: cannot load" in message and "not in the local cache" in message


def test_eval_extra_offline_names_its_flag(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SystemExit, match="--eval-extra gsm8k: cannot load"):  # when the Run is made, not later
        run_py.Run(config.parse_args(["--preset", "smoke", "--eval-extra", "gsm8k", "--out", str(tmp_path / "x")]))


def test_sdzero_runs_both_phases_in_process(tmp_path):
    """The whole method through train.main, small enough for the fast suite: both phases, every output."""
    out = tmp_path / "run"
    res = train.main(["--preset", "smoke", "--out", str(out), "--n1", "8", "--n-eval", "4", "--p2-steps", "2",
                      "--p2-micro-batch", "2"])
    assert set(res["eval"]) == {"eval_base", "eval_srt", "eval_final"} and res["phase1"]["questions"] == 8
    assert res["generations_by"] == {"y_init": 8, "revisions": 24, "p2": 8}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    p2 = [r for r in rows if r["phase"] == "p2"]
    assert [r["step"] for r in p2] == [1, 2] and all(math.isfinite(r["loss"]) and r["loss"] >= 0 for r in p2)
    assert [r["step"] for r in rows if r["phase"] == "p1"] == list(range(1, len([r for r in rows if r["phase"] == "p1"]) + 1))
    assert set(res["seconds_per_stage"]) >= {"eval_base", "p1_sample", "p1_train", "p2", "eval_final"}
    ckpt = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    assert run_py.RunState(**ckpt["state"]).stage == "done" and "teacher" not in ckpt
    assert (out / "model" / "model.safetensors").is_file() and json.loads((out / "results.json").read_text()) == res


def test_bf16_rollouts_read_a_fresh_bf16_copy(tmp_path):
    """--precision bf16: rollouts sample from a bf16 copy of the fp32 weights, refreshed at every call."""
    cfg = config.parse_args(["--preset", "smoke", "--precision", "bf16", "--out", str(tmp_path / "r")])
    (tmp_path / "r").mkdir()
    run = run_py.Run(cfg)
    sampler = run.sampling_model()
    assert sampler is not run.student.model and sampler.dtype == torch.bfloat16
    with torch.no_grad():
        for p in run.student.model.parameters():
            p.add_(0.5)
    assert run.sampling_model() is sampler  # the same copy, refreshed
    for p_s, p in zip(sampler.parameters(), run.student.model.parameters()):
        assert p.dtype == torch.float32 and torch.equal(p_s, p.to(torch.bfloat16))
    prompts = [run.prompt_ids(ex) for ex in run.data["eval"][:2]]
    ys, rs = run.rollouts(prompts, [1, 2], run.data["eval"][:2], 4, "p2", "t")
    assert len(ys) == 2 and set(rs) <= {0, 1}
    fp32 = run_py.Run(config.parse_args(["--preset", "smoke", "--out", str(tmp_path / "r")]))
    assert fp32.sampling_model() is fp32.student.model  # fp32 runs sample from the model itself


def test_srt_terms_hand_value(micro):
    """Eq. 1 and Eq. 2 from one forward pass (train.srt_terms, what Phase 1 and RFT train on) equal the token
    means of -log pi computed by hand from the model's full logits, with each term's own mask: L_rev over y_rev,
    L_gen over the whole assistant turn, position i predicting token i + 1, padding never scored."""
    model, tok = micro
    batch = [{"input_ids": list(range(20, 34)), "rev_mask": [0] * 10 + [1] * 4, "gen_mask": [0] * 5 + [1] * 9},
             {"input_ids": list(range(20, 29)), "rev_mask": [0] * 7 + [1] * 2, "gen_mask": [0] * 5 + [1] * 4}]
    l_rev, l_gen = train.srt_terms(model, batch, tok.pad_token_id)
    nll = {"rev_mask": [], "gen_mask": []}
    with torch.no_grad():
        for ex in batch:
            ids = torch.tensor([ex["input_ids"]])
            logp = model(ids).logits[0].double().log_softmax(-1)  # [S, V]
            for name in nll:
                nll[name] += [-logp[i - 1, ex["input_ids"][i]].item() for i, m in enumerate(ex[name]) if m]
    assert len(nll["rev_mask"]) == 6 and len(nll["gen_mask"]) == 13
    assert l_rev.item() == pytest.approx(sum(nll["rev_mask"]) / 6, rel=1e-5)
    assert l_gen.item() == pytest.approx(sum(nll["gen_mask"]) / 13, rel=1e-5)
    assert l_gen.item() != pytest.approx(l_rev.item(), rel=1e-3)  # the masks differ, so do the terms


def test_epoch_cursor_is_one_seeded_order():
    """The one data order of every stage: a fresh seeded permutation per pass, a step's rows a function of
    (seed, tag, step) only; SFT keeps a pass's short last batch, Phase 2 drops it; GRPO's window runs on."""
    cursor = run_py.EpochCursor(7, "p2_order", 10)
    orders = [cursor.order(e) for e in range(3)]
    assert all(sorted(o) == list(range(10)) for o in orders) and orders[0] != orders[1]
    again = run_py.EpochCursor(7, "p2_order", 10)
    assert again.order(2) == orders[2] and run_py.EpochCursor(8, "p2_order", 10).order(0) != orders[0]
    assert cursor.take(8, 4) == orders[0][8:] + orders[1][:2]  # a window into the next pass
    assert [cursor.batch(s, 4, drop_last=False) for s in range(4)] == [
        (0, orders[0][:4]), (0, orders[0][4:8]), (0, orders[0][8:]), (1, orders[1][:4])]
    assert [cursor.batch(s, 4, drop_last=True) for s in range(3)] == [
        (0, orders[0][:4]), (0, orders[0][4:8]), (1, orders[1][:4])]
    assert cursor.batch(1, 16, drop_last=True) == (1, orders[1])  # a pass smaller than a batch is one batch


def test_run_state_round_trips_through_a_checkpoint_dict():
    state = run_py.RunState(stage="p2", step=3, generations=12, generations_by={"p2": 12}, grpo_cursor=5)
    assert run_py.RunState(**vars(state)) == state
    assert run_py.RunState(**{"stage": "p2", "step": 1}).srt_data is None  # an older checkpoint's fields suffice
