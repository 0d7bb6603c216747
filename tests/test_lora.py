"""LoRA (--lora-rank; lora.py): the frozen teacher is the merged SRT model exactly with no copy, every stage
trains only its adapter and merges it, model/ and adapter/ load with transformers and peft (adapter/ on the
weights its config names, base/ for sdzero's Phase 2, with our card), an EMA teacher averages the adapted
weights, resume is bit exact and torchrun DDP trains what one process trains. The micro model, the smoke
preset."""
import copy
import json

import pytest
import torch
from safetensors.torch import load_file

import config
import run as run_py
import train
from test_model_card import card_parts
from test_parallel import assert_same_training
from test_parallel import run as run_train
from test_train import kill_mid_phase, run_cli, untimed

LORA = ["--lora-rank", "4", "--lora-alpha", "16"]


def _tensors(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    if hasattr(x, "__dataclass_fields__"):
        return [t for v in vars(x).values() for t in _tensors(v)]
    return []


def test_frozen_teacher_is_the_merged_srt_model_exactly_with_the_adapter_off(tmp_path, monkeypatch):
    """SD-Zero with LoRA: the snapshot of the weights when Phase 1's adapter is merged (the SRT model) gives,
    as a plain model without peft, exactly the teacher targets Phase 2 computed at its last step, when the
    student's adapter had trained; the teacher is the student's own weights (no copy), and only the adapter
    trains in Phase 2 (the frozen weights end as they started, plus the merged adapter)."""
    snapshots, targets, teachers = {}, [], []
    merge = run_py.Run.merge_adapter

    def spy_merge(self):
        merge(self)
        snapshots[self.state.stage] = copy.deepcopy(self.student.model.state_dict())
    real_target = train.teacher_target

    def spy_target(run, seqs, starts, lengths, loss_fn):
        out = real_target(run, seqs, starts, lengths, loss_fn)
        targets.append((seqs, starts, lengths, loss_fn, [t.clone() for t in _tensors(out)]))
        teachers.append((run.teacher.model is run.student.model,
                         sum(p.requires_grad for p in run.student.model.parameters()),
                         sum(1 for n, _ in run.student.model.named_parameters() if "lora_" in n)))
        return out
    monkeypatch.setattr(run_py.Run, "merge_adapter", spy_merge)
    monkeypatch.setattr(train, "teacher_target", spy_target)
    out = tmp_path / "run"
    res = train.main(["--preset", "smoke", *LORA, "--out", str(out), "--n1", "8", "--n-eval", "4", "--p2-steps", "2"])
    assert set(snapshots) == {"p1_train", "p2"} and set(res["eval"]) == {"eval_base", "eval_srt", "eval_final"}
    assert all(shared and n_grad == n_lora > 0 for shared, n_grad, n_lora in teachers)  # no copy; the adapter trains

    from transformers import AutoModelForCausalLM
    srt = AutoModelForCausalLM.from_pretrained(config.PRESETS["smoke"]["model"])
    assert set(snapshots["p1_train"]) == set(srt.state_dict())  # merged: a plain model's keys, no lora_ left
    srt.load_state_dict(snapshots["p1_train"])
    srt.eval()
    seqs, starts, lengths, loss_fn, saved = targets[-1]  # step 2: the adapter has taken a step
    with torch.inference_mode():
        plain = _tensors(train.eq4_teacher(srt, seqs, starts, lengths, 0, loss_fn))
    assert len(plain) == len(saved) and all(torch.equal(a, b) for a, b in zip(plain, saved))
    srt.load_state_dict(snapshots["p2"])  # the student after Phase 2, its adapter on (merged): not the teacher
    with torch.inference_mode():
        student = _tensors(train.eq4_teacher(srt, seqs, starts, lengths, 0, loss_fn))
    assert not all(torch.equal(a, b) for a, b in zip(student, saved))
    final = load_file(out / "model" / "model.safetensors")
    assert any(not torch.equal(final[k], snapshots["p1_train"][k]) for k in final)  # Phase 2's adapter, merged


def test_model_and_adapter_folders_load_with_transformers_and_peft(tmp_path):
    """model/ is a plain model (no peft needed); adapter/ on the base --model, merged, is model/ (OPSD: one
    stage, so the adapter's base is --model)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    out = tmp_path / "run"
    train.main(["--preset", "smoke", "--method", "opsd", *LORA, "--out", str(out), "--budget", "8", "--n-eval", "4"])
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    assert not any("lora" in k for k in merged.state_dict())
    base = AutoModelForCausalLM.from_pretrained(config.PRESETS["smoke"]["model"])
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 16
    rebuilt = PeftModel.from_pretrained(base, out / "adapter").merge_and_unload()
    a, b = rebuilt.state_dict(), merged.state_dict()
    assert set(a) == set(b) and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert any(not torch.equal(a[k], AutoModelForCausalLM.from_pretrained(config.PRESETS["smoke"]["model"])
                               .state_dict()[k]) for k in a)  # it trained


@pytest.mark.parametrize("method, flags", [("sdzero", ["--n1", "8", "--p2-steps", "1"]), ("opsd", ["--budget", "8"])])
def test_adapter_applies_to_the_weights_its_config_names_and_has_our_card(tmp_path, monkeypatch, method, flags):
    """peft's PeftModel.from_pretrained on the weights adapter_config.json names, merged, is model/. sdzero's
    Phase 2 adapter trained on the SRT model, which no name loads: it is saved in adapter/base/ (the weights
    when Phase 1's adapter merged, exactly) and named there; one-stage OPSD's names --model. adapter/README.md
    is our card, not peft's empty template."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    merged_at = {}
    merge = run_py.Run.merge_adapter

    def spy_merge(self):
        merge(self)
        merged_at[self.state.stage] = copy.deepcopy(self.student.model.state_dict())
    monkeypatch.setattr(run_py.Run, "merge_adapter", spy_merge)
    out = tmp_path / "run"
    train.main(["--preset", "smoke", "--method", method, *LORA, "--out", str(out), "--n-eval", "4", *flags])
    base = json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = config.PRESETS["smoke"]["model"]
    assert base == (str(out / "adapter" / "base") if method == "sdzero" else model)
    if method == "sdzero":  # the SRT model, saved as it was when Phase 1's adapter merged
        saved = load_file(out / "adapter" / "base" / "model.safetensors")
        assert saved and all(torch.equal(saved[k], merged_at["p1_train"][k]) for k in saved)
    rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "adapter").merge_and_unload()
    a, b = rebuilt.state_dict(), AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert set(a) == set(b) and max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    meta, body = card_parts((out / "adapter" / "README.md").read_text())
    assert meta["library_name"] == "peft" and meta["tags"] == ["lora", "sd-zero", method, "math"]
    assert "base_model" not in meta  # a local folder is no Hub id
    assert "More Information Needed" not in body and "Rank 4, alpha 16.0" in body
    assert f'from_pretrained("{base}")' in body and f'PeftModel.from_pretrained(base, "{out / "adapter"}")' in body
    assert ("`base/` in this folder (the SRT model)" in body) == (method == "sdzero")
    # Run.trained_before's reading of the stage names: every stage but eval_*, *_sample and done trains
    stages = {s for v in run_py.METHOD_STAGES.values() for s in v} | {"p1_train_rev"}
    assert {s for s in stages if not s.startswith("eval_") and not s.endswith("_sample")} - {"done"} == \
        set(train.TRAINING_STAGES)


def adapted(model) -> dict[str, torch.Tensor]:
    """The weights a model computes with, by plain names: W + (alpha / r) B A for a layer that holds LoRA
    factors (computed here, not by peft), the parameter itself otherwise."""
    params = dict(model.named_parameters())
    out = {}
    for name, p in params.items():
        if "lora_" in name:
            continue
        if ".base_layer." in name:
            stem = name.split(".base_layer.")[0]
            p = p + 16 / 4 * params[f"{stem}.lora_B.default.weight"] @ params[f"{stem}.lora_A.default.weight"]
        out[name.replace(".base_layer", "")] = p.detach().clone()
    return out


def test_ema_teacher_under_lora_averages_the_adapted_weights(tmp_path, monkeypatch):
    """--teacher ema:R with --lora-rank: after each Phase 2 step the teacher's weights are teacher + R (student's
    W + (alpha / r) B A - teacher), to float rounding, not an average of A and B apart (whose product is not that
    average: at lr 1e-2 it misses the target by far more than rounding)."""
    rate, seen = 0.5, []
    real = run_py.Run.copy_weights

    def spy(self, weight):
        before, student = adapted(self.teacher.model), adapted(self.student.model)
        real(self, weight)
        seen.append((weight, before, student, adapted(self.teacher.model)))
    monkeypatch.setattr(run_py.Run, "copy_weights", spy)
    out = tmp_path / "run"
    train.main(["--preset", "smoke", "--method", "p2only", *LORA, "--teacher", f"ema:{rate}", "--p2-lr", "1e-2",
                "--p2-steps", "2", "--n-eval", "4", "--out", str(out)])
    assert [w for w, *_ in seen] == [rate] * 2
    for _, before, student, after in seen:
        assert before.keys() == student.keys() == after.keys()
        moved = max((student[k] - before[k]).abs().max().item() for k in before)
        err = max((after[k] - (before[k] + rate * (student[k] - before[k]))).abs().max().item() for k in before)
        assert err < 1e-6 < moved, (err, moved)


def test_lora_flags_are_checked():
    with pytest.raises(SystemExit, match="--lora-rank: LoRA runs on one process or under DDP"):
        config.parse_args(["--lora-rank", "4", "--parallel", "fsdp"])
    with pytest.raises(SystemExit, match="--lora-rank: must be 0"):
        config.parse_args(["--lora-rank", "-1"])
    import lora
    cfg = config.parse_args(["--lora-rank", "8", "--lora-targets", "q_proj,v_proj"])
    lc = lora.lora_config(cfg)
    assert (lc.r, lc.lora_alpha, set(lc.target_modules)) == (8, 16, {"q_proj", "v_proj"})


def test_unknown_lora_target_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="--lora-targets nope_proj"):
        train.main(["--preset", "smoke", "--method", "rft", *LORA, "--lora-targets", "nope_proj", "--out",
                    str(tmp_path / "run"), "--n-eval", "4", "--budget", "16"])


@pytest.mark.slow
def test_lora_resume_after_kill_matches_uninterrupted(tmp_path):
    """Killed mid Phase 2 (the adapter's weights and optimizer state in the checkpoint), resumed: bit for bit
    the uninterrupted run, logs included."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    args = ["--preset", "smoke", *LORA, "--teacher", "ema:0.5"]
    proc = run_cli([*args, "--out", str(ref)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kill_mid_phase([*args, "--out", str(out)], out, "p2", 2)
    resumed = run_cli([*args, "--out", str(out), "--resume"], timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load_file(ref / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (ref, out))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("metrics.jsonl", "samples.jsonl"):
        assert untimed((ref / name).read_text()) == untimed((out / name).read_text()), name


@pytest.mark.slow
def test_lora_under_torchrun_ddp_matches_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_train(["--preset", "smoke", *LORA, "--out", str(one)])
    run_train(["--preset", "smoke", *LORA, "--out", str(two)], nproc=2)
    assert json.loads((two / "results.json").read_text())["world_size"] == 2
    assert_same_training(one, two)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [
    ["--method", "rft", "--budget", "32"],
    ["--method", "grpo", "--grpo-kl", "0.04", "--grpo-steps", "2", "--grpo-batch", "4"],  # reference: adapter off
    ["--srt-variant", "two-stage", "--srt-stage2-size", "4"],  # two Phase 1 stages, an adapter each
    ["--teacher", "sync:1"],  # a teacher copy, adapter included, refreshed every step
    ["--method", "sdpo", "--budget", "8"],
], ids=["rft", "grpo-kl", "two-stage", "sync-teacher", "sdpo"])
def test_every_method_trains_with_lora(tmp_path, flags):
    out = tmp_path / "run"
    res = train.main(["--preset", "smoke", *LORA, "--n-eval", "4", "--out", str(out), *flags])
    assert res["final_accuracy"] is not None and (out / "adapter" / "adapter_model.safetensors").is_file()
    weights = load_file(out / "model" / "model.safetensors")
    assert weights and not any("lora" in k for k in weights)  # merged
    ckpt = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    assert ckpt["lora"] is False and not any("lora" in k for k in ckpt["model"])  # between stages: merged


def test_unknown_lora_targets_stop_before_anything_is_written(tmp_path, capsys):
    """A target the model lacks is found when the model loads, not after the base evaluation and Phase 1's
    sampling (a folder with a checkpoint that no rerun fixes): one line listing the model's linear layers."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train.main(["--preset", "smoke", "--lora-rank", "4", "--lora-targets", "foo_proj,q_proj", "--out", str(out)])
    msg = str(e.value)
    assert msg.startswith("--lora-targets foo_proj,q_proj: foo_proj is no linear layer") and "\n" not in msg
    assert "q_proj" in msg.split("its linear layers:")[1] and "all-linear" in msg
    assert not out.exists()
