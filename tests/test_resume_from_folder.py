"""`--resume --out DIR` alone: the run's saved settings (DIR/run_config.json) are the base the command line
overrides; only the settings given are compared with them, paths after resolving; from another directory by a
relative path, and from a folder that moved, the resumed run ends with the uninterrupted run's weights."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import config
import parallel
import run_folder
from test_train import REPO, kill_mid_phase, main_error, saved_run, untimed

CPU = parallel.Dist(device=torch.device("cpu"))


def saved(out) -> config.Config:
    """The Config saved in out/run_config.json, as resumed (resume on)."""
    return dataclasses.replace(config.Config(**json.loads((out / "run_config.json").read_text())), resume=True)


def test_resume_takes_the_runs_own_settings(tmp_path):
    out = saved_run(tmp_path / "run", "--n1", "8", "--p2-lr", "3e-4", "--seed", "2", "--teacher", "ema:0.5")
    cfg = config.parse_args(["--resume", "--out", str(out)])
    assert cfg == saved(out) and (cfg.n1, cfg.p2_lr, cfg.seed, cfg.preset) == (8, 3e-4, 2, "smoke")
    run_folder.prepare_out(cfg, CPU)
    # what may change on resume, and flags that agree with the run, are taken; the rest is the run's
    cfg = config.parse_args(["--resume", "--out", str(out), "--threads", "1", "--report-to", "none", "--n1", "8",
                             "--preset", "smoke"])
    assert cfg == dataclasses.replace(saved(out), threads=1)
    # the run's own file given back (the way that worked before) still resumes it
    assert config.parse_args(["--config", str(out / "run_config.json"), "--resume"]) == saved(out)


def test_a_changed_setting_is_refused_with_the_command_that_works(tmp_path):
    out = saved_run(tmp_path / "run", "--p2-lr", "3e-4")
    message = main_error(["--resume", "--out", str(out), "--p2-lr", "0.5", "--seed", "1"])
    assert message.startswith("--resume: --p2-lr 0.5 (the run's p2_lr: 0.0003), --seed 1 (the run's seed: 0) would "
                              f"change the run in {out}") and "\n" not in message
    assert f"python train.py --resume --out {out} (" in message
    assert f"python train.py --config {out / 'run_config.json'} --out NEW_DIR --p2-lr 0.5 --seed 1)" in message
    (tmp_path / "tweak.yaml").write_text("n2: 4\n")  # a file's settings are compared too, and named
    message = main_error(["--resume", "--out", str(out), "--config", str(tmp_path / "tweak.yaml")])
    assert message.startswith(f"--resume: n2: 4 in {tmp_path / 'tweak.yaml'} (the run's n2: 8) would change")


def test_from_another_directory_by_a_relative_path(tmp_path, monkeypatch):
    data = tmp_path / "data" / "d.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    monkeypatch.chdir(tmp_path)
    out = saved_run(tmp_path / "run", "--dataset", "data/d.jsonl")  # relative: saved resolved
    assert json.loads((out / "run_config.json").read_text())["dataset"] == str(data)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = config.parse_args(["--resume", "--out", "../run"])
    assert cfg == dataclasses.replace(saved(out), out="../run")
    run_folder.prepare_out(cfg, CPU)
    # paths compare resolved: the same file by another relative path is the same setting; another file is not
    assert config.parse_args(["--resume", "--out", "../run", "--dataset", "../data/d.jsonl"]) == cfg
    shutil.copy(data, tmp_path / "elsewhere" / "d.jsonl")
    assert "--dataset d.jsonl" in main_error(["--resume", "--out", "../run", "--dataset", "d.jsonl"])


def test_a_moved_folder_and_the_old_name(tmp_path):
    out = saved_run(tmp_path / "run", "--n1", "8")
    moved = tmp_path / "moved" / "here"
    moved.parent.mkdir()
    out.rename(moved)
    cfg = config.parse_args(["--resume", "--out", str(moved)])
    assert cfg == dataclasses.replace(saved(moved), out=str(moved)) and cfg.n1 == 8
    (moved / "run_config.json").rename(moved / "config.json")  # a run from before the rename
    assert config.parse_args(["--resume", "--out", str(moved)]) == cfg


def test_nothing_to_resume(tmp_path):
    assert main_error(["--resume", "--out", str(tmp_path / "none")]).startswith("--resume: no checkpoint")
    out = saved_run(tmp_path / "run")
    (out / "run_config.json").unlink()
    assert f"{out} holds a checkpoint but no run_config.json" in main_error(["--resume", "--out", str(out)])


# ------------------------------------------------------------------------------ bit for bit, end to end

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--preset", "smoke", "--out", str(out)], cwd=REPO,
                          env=dict(os.environ, PYTHONHASHSEED="0"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("how", ["from another directory", "moved"])
def test_resumed_from_the_folder_alone_ends_with_the_uninterrupted_weights(reference, tmp_path, how):
    out = tmp_path / "run"
    kill_mid_phase(["--preset", "smoke", "--out", str(out)], out, "p2", 2)
    cwd, target = tmp_path / "elsewhere", "../run"
    cwd.mkdir()
    if how == "moved":
        (tmp_path / "new").mkdir()
        out = out.rename(tmp_path / "new" / "place")
        cwd, target = REPO, str(out)
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "--resume", "--out", target], cwd=cwd,
                          env=dict(os.environ, PYTHONHASHSEED="0"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming {target} at stage p2" in proc.stdout + proc.stderr
    a, b = load_file(reference / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("metrics.jsonl", "samples.jsonl"):
        assert untimed((reference / name).read_text()) == untimed((out / name).read_text()), name
