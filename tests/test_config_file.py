"""--config FILE: YAML or JSON settings under the command line and over the presets; a run's own
run_config.json, passed back, runs it again (the round trip); the old config.json name still resumes."""
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

import config
import parallel
import run_folder
import train
from test_train import untimed


def parse(tmp_path, text, *flags, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return config.parse_args(["--config", str(path), *flags])


def error(tmp_path, text, *flags, name="cfg.yaml") -> str:
    with pytest.raises(SystemExit) as e:
        parse(tmp_path, text, *flags, name=name)
    assert isinstance(e.value.code, str), e.value.code
    return e.value.code


def test_file_values_override_the_preset_and_flags_override_the_file(tmp_path):
    text = "preset: smoke\np2_lr: 1.0e-3\np2-steps: 7\nfewshot: true\nteacher: ema:0.5\n"
    cfg = parse(tmp_path, text)
    smoke = config.PRESETS["smoke"]
    assert (cfg.preset, cfg.p2_lr, cfg.p2_steps, cfg.fewshot, cfg.teacher) == ("smoke", 1e-3, 7, True, "ema:0.5")
    assert cfg.n1 == smoke["n1"] and cfg.srt_lr == smoke["srt_lr"]  # what the file leaves, the preset sets
    cfg = parse(tmp_path, text, "--p2-steps", "2", "--no-fewshot", "--preset", "demo")
    assert (cfg.p2_steps, cfg.fewshot, cfg.preset, cfg.p2_lr) == (2, False, "demo", 1e-3)
    assert cfg.n1 == config.Config().n1  # the command line's preset wins, the file's values still apply


def test_yaml_numbers_that_pyyaml_reads_as_strings(tmp_path):
    """PyYAML (YAML 1.1) reads 5e-6 as the string '5e-6'; a float setting takes it as the number it means."""
    cfg = parse(tmp_path, "p2_lr: 5e-6\nsrt_lr: '3e-5'\nn1: 12\ntemperature: 1\n")
    assert (cfg.p2_lr, cfg.srt_lr, cfg.n1, cfg.temperature) == (5e-6, 3e-5, 12, 1.0)
    assert isinstance(cfg.temperature, float)


def test_trl_names_and_learning_rate_in_a_file(tmp_path):
    cfg = parse(tmp_path, "model_name_or_path: some/model\noutput_dir: runs/x\nlearning_rate: 2.0e-4\n"
                "grpo_lr: 1.0e-6\nnum_generations: 8\n")
    assert (cfg.model, cfg.out, cfg.grpo_group) == ("some/model", "runs/x", 8)
    assert (cfg.srt_lr, cfg.p2_lr, cfg.grpo_lr) == (2e-4, 2e-4, 1e-6)  # the file's lr: its lrs not set apart
    cfg = parse(tmp_path, "learning_rate: 2.0e-4\n", "--p2-lr", "1e-5")
    assert (cfg.srt_lr, cfg.p2_lr) == (2e-4, 1e-5)
    cfg = parse(tmp_path, "p2_lr: 1.0e-5\n", "--learning_rate", "3e-4")
    assert cfg.p2_lr == 3e-4  # the command line's --learning_rate over the file's value


def test_method_and_teacher_context_from_a_file(tmp_path):
    assert parse(tmp_path, "method: opsd\n").teacher_context == "answer"
    assert parse(tmp_path, "teacher_context: feedback\n").method == "sdpo"
    assert "--teacher-context" in error(tmp_path, "method: opsd\nteacher_context: feedback\n")


@pytest.mark.parametrize("text, name, expected", [
    ("p2_l: 1.0\n", "cfg.yaml", "unknown setting 'p2_l' (did you mean p2_lr?)"),
    ("zzzz: 1\n", "cfg.yaml", "unknown setting 'zzzz'; `python train.py --help` lists them"),
    ("n1: 1.5\n", "cfg.yaml", "n1 = 1.5 is not an integer"),
    ("n1: true\n", "cfg.yaml", "n1 = True is not an integer"),
    ("p2_lr: fast\n", "cfg.yaml", "p2_lr = 'fast' is not a number"),
    ("p2_lr: .nan\n", "cfg.yaml", "p2_lr = nan is not a number"),
    ("fewshot: 1\n", "cfg.yaml", "fewshot = 1 is not true or false"),
    ("model: 123\n", "cfg.yaml", "model = 123 is not a string (quote it)"),
    ("- a\n- b\n", "cfg.yaml", "must hold a mapping of settings to values, not a list"),
    ("p2_lr: [1\n", "cfg.yaml", "not readable as YAML"),
    ('{"p2_lr": }', "cfg.json", "not readable as JSON"),
])
def test_bad_files_are_one_line_naming_the_file_and_setting(tmp_path, text, name, expected):
    message = error(tmp_path, text, name=name)
    assert message.startswith(f"--config {tmp_path / name}: ") and expected in message, message


def test_choices_and_ranges_are_checked_as_for_flags(tmp_path):
    assert error(tmp_path, "divergence: sideways\n").startswith("--divergence: 'sideways' is not one of")
    assert error(tmp_path, "n1: 0\n") == "--n1: must be at least 1"
    assert error(tmp_path, "preset: nope\n").startswith("--preset: 'nope' is not one of")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        config.parse_args(["--config", str(tmp_path / "none.yaml")])
    assert parse(tmp_path, "") == config.Config()
    assert parse(tmp_path, "# nothing\n") == config.Config()


def test_a_saved_config_parses_back_to_itself(tmp_path):
    """Every field of a resolved config, written as run_config.json, parses back to the same Config, whatever
    the preset and flags were (so the saved file is a complete description of the run)."""
    for flags in (["--preset", "smoke", "--p2_lr", "3e-4", "--no-fewshot", "--teacher", "sync:2"],
                  ["--preset", "authors", "--task", "code"], ["--method", "opsd", "--learning_rate", "1e-5"]):
        cfg = config.parse_args(flags)
        path = tmp_path / "run_config.json"
        path.write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
        assert config.parse_args(["--config", str(path)]) == cfg, flags


def test_round_trip_reproduces_the_run(tmp_path):
    """A run, then `--config A/run_config.json --out B`: the same resolved config (but --out), the same
    metrics and samples (timings aside) and the same final weights, bit for bit on CPU."""
    a, b = tmp_path / "a", tmp_path / "b"
    train.main(["--preset", "smoke", "--out", str(a), "--seed", "3", "--p2_lr", "3e-4", "--p2-steps", "2",
                "--n-eval", "8", "--teacher", "ema:0.5", "--threads", "1"])
    train.main(["--config", str(a / "run_config.json"), "--out", str(b)])
    ca, cb = (json.loads((d / "run_config.json").read_text()) for d in (a, b))
    assert cb.pop("out") == str(b) and ca.pop("out") == str(a) and ca == cb
    for name in ("metrics.jsonl", "samples.jsonl"):
        assert untimed((a / name).read_text()) == untimed((b / name).read_text()), name
    wa, wb = (load_file(d / "model" / "model.safetensors") for d in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not (a / "config.json").exists()  # the run's config is not named like a model's


def test_a_run_saved_under_the_old_name_resumes(tmp_path):
    """Runs from before the rename keep their config in config.json: --resume reads it, and still refuses a
    changed setting."""
    out = tmp_path / "old"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "state.pt").write_bytes(b"not read here")
    cfg = config.parse_args(["--preset", "smoke", "--out", str(out), "--resume"])
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    d = parallel.Dist(device=torch.device("cpu"))
    run_folder.prepare_out(cfg, d)
    assert config.parse_args(["--resume", "--out", str(out)]) == cfg  # its settings are the base
    with pytest.raises(SystemExit, match="p2_lr"):  # refused as the command line is read
        config.parse_args(["--preset", "smoke", "--out", str(out), "--resume", "--p2-lr", "0.5"])

