"""The command line as a user meets it: --help in groups with the defaults of the preset and task given, one
line with a suggestion for a misspelled flag, --print-config read back by --config, a setting given twice
refused, --beta only where the divergence uses it, warmups in their units, the code presets' HumanEval only
with their own data, --method base without training sizes."""
import dataclasses
import json

import pytest

import config
import train
from test_train import main_error


def parse_error(argv) -> str:
    """config.parse_args(argv)'s one-line message."""
    with pytest.raises(SystemExit) as e:
        config.parse_args(argv)
    assert isinstance(e.value.code, str) and "\n" not in e.value.code, e.value.code
    return e.value.code


def help_text(capsys, *flags) -> str:
    with pytest.raises(SystemExit) as e:
        config.parse_args([*flags, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def own_data(tmp_path, n=4):
    path = tmp_path / "own.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {a} + 1?", "answer": str(a + 1)}) + "\n"
                            for a in range(n)))
    return path


# ------------------------------------------------------------------------------------------------- --help

def test_help_is_grouped_with_choices(capsys):
    text = help_text(capsys)
    heads = [line for line in text.splitlines() if line.endswith(":") and line[:-1] in config.HELP_GROUPS]
    assert [h.split(":")[0] for h in heads] == ["run and scale", "data", "Phase 1", "Phase 2 and teachers",
                                                 "baselines", "evaluation", "LoRA"], heads
    at = {h.split(":")[0]: text.index("\n" + h + "\n") for h in heads}

    def section(flag):  # the group whose heading is the last one above the flag
        pos = text.index("\n  " + flag + " ")
        return max((h for h in at if at[h] < pos), key=at.get)
    assert section("--p2-lr") == "Phase 2 and teachers" and section("--srt-warmup") == "Phase 1"
    assert section("--grpo-kl") == "baselines" and section("--eval-extra") == "evaluation"
    assert section("--lora-rank") == "LoRA" and section("--dataset") == "data" and section("--method") == "run and scale"
    assert "--divergence {reverse,forward,mixed,jsd}" in text and "--preset {demo,smoke,paper,authors}" in text
    # every setting is listed once, in one group
    listed = " ".join(config.HELP_GROUPS.values()).split()
    assert len(listed) == len(set(listed)) and set(listed) <= {f.name for f in dataclasses.fields(config.Config)}


def test_help_shows_the_defaults_of_the_preset_and_task_given(capsys):
    plain = help_text(capsys).split("\n  --max-new-tokens", 1)[1].split("\n  --", 1)[0]
    assert "(default: 48)" in " ".join(plain.split())
    text = " ".join(help_text(capsys, "--preset", "smoke", "--task", "code").split())
    assert "(default: 32, from --preset smoke --task code; otherwise 48)" in text
    assert "(default: 3, from --preset smoke; otherwise 30)" in text  # --p2-steps


def test_a_misspelled_flag_is_one_line_with_a_suggestion():
    assert parse_error(["--p2lr", "1e-4"]) == \
        "--p2lr: no such flag; did you mean --p2-lr? (python train.py --help lists them)"
    assert parse_error(["--eval_extra_m", "3"]).startswith("--eval_extra_m: no such flag; did you mean --eval-extra-n?")
    assert parse_error(["--n1", "many"]).startswith("--n1: invalid int value: 'many'")
    assert parse_error(["--p2-l", "1"]).startswith("--p2-l: no such flag")  # no silent prefix matching


# --------------------------------------------------------------------------------------------- --print-config

@pytest.mark.parametrize("flags", [
    ["--preset", "smoke", "--p2_lr", "3e-4", "--no-fewshot", "--teacher", "sync:2"],
    ["--preset", "authors", "--task", "code"],
    ["--method", "opsd", "--learning_rate", "1e-5", "--p1-stop", "a,b: c", "--math-ops", "+-"],
])
def test_print_config_reads_back_to_the_same_config(tmp_path, capsys, flags):
    with pytest.raises(SystemExit) as e:
        config.parse_args([*flags, "--print-config"])
    assert e.value.code == 0
    printed = capsys.readouterr().out
    (tmp_path / "printed.yaml").write_text(printed)
    assert config.parse_args(["--config", str(tmp_path / "printed.yaml")]) == config.parse_args(flags)
    if flags[:2] == ["--preset", "smoke"]:  # each value's source
        assert "n1: 16  # --preset smoke" in printed and "p2_lr: 0.0003  # --p2_lr 3e-4" in printed
        assert "seed: 0\n" in printed  # a default: no source


# -------------------------------------------------------------------------------------------- given twice

@pytest.mark.parametrize("argv, said", [
    (["--seed", "1", "--seed", "2"], "--seed 1 and --seed 2"),  # the same flag: scripts append overrides
    (["--p2_lr", "1e-4", "--p2-lr", "2e-4"], "--p2_lr 1e-4 and --p2-lr 2e-4"),
    (["--output_dir", "a", "--out", "b"], "--output_dir a and --out b"),  # a TRL alias beside its flag
    (["--fewshot", "--no-fewshot"], "--fewshot and --no-fewshot"),
    (["--learning_rate", "1e-4", "--learning_rate=2e-4"], "--learning_rate 1e-4 and --learning_rate 2e-4"),
])
def test_a_setting_given_twice_on_the_command_line_is_refused(argv, said):
    assert parse_error(argv).startswith(f"{said}: one setting given twice on the command line; give it once")


@pytest.mark.parametrize("text, name, said", [
    ("p2_lr: 1.0e-4\nseed: 1\np2_lr: 2.0e-4\n", "a.yaml", "p2_lr is given twice (lines 1 and 3)"),
    ("p2_lr: 1.0e-4\np2-lr: 2.0e-4\n", "a.yaml", "p2_lr and p2-lr both set p2_lr"),
    ("output_dir: a\nout: b\n", "a.yaml", "output_dir and out both set out"),
    ('{"seed": 1, "seed": 2}', "a.json", "seed is given twice"),
])
def test_a_setting_given_twice_in_a_file_is_refused(tmp_path, text, name, said):
    (tmp_path / name).write_text(text)
    assert parse_error(["--config", str(tmp_path / name)]) == f"--config {tmp_path / name}: {said}; keep one"


def test_config_given_twice_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("seed: 1\n")
    message = parse_error(["--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "a.yaml")])
    assert message.startswith(f"--config {tmp_path / 'a.yaml'} and --config {tmp_path / 'a.yaml'}: one setting")


# ---------------------------------------------------------------------------------------------- --beta

def test_beta_only_where_the_divergence_uses_it(tmp_path):
    for argv in (["--beta", "0.04"], ["--method", "grpo", "--beta", "0.04"], ["--divergence", "forward", "--beta", "0.5"]):
        message = parse_error(argv)
        assert message.startswith(f"--beta {argv[-1]}: --divergence ") and "does not use it" in message
        assert f"--grpo-kl here: python train.py --method grpo --grpo-kl {float(argv[-1])}" in message
    assert config.parse_args(["--divergence", "jsd", "--beta", "0.3"]).beta == 0.3
    (tmp_path / "trl.yaml").write_text("beta: 0.04\n")
    assert parse_error(["--config", str(tmp_path / "trl.yaml")]).startswith(f"beta: 0.04 in {tmp_path / 'trl.yaml'}:")
    # a run's own run_config.json holds the default beta under every divergence: it still reads back
    saved = tmp_path / "run_config.json"
    saved.write_text(json.dumps(dataclasses.asdict(config.parse_args([]))))
    assert config.parse_args(["--config", str(saved)]) == config.parse_args([])


# ---------------------------------------------------------------------------------------------- warmups

def test_warmups_in_their_units():
    message = parse_error(["--srt-warmup", "20"])
    assert message.startswith("--srt-warmup: 20.0 is not a share of Phase 1's optimizer steps in [0, 1]")
    assert "--p2-warmup and --grpo-warmup count steps" in message
    assert parse_error(["--p2-warmup", "-1"]).startswith("--p2-warmup:")
    assert parse_error(["--grpo-warmup", "-2"]).startswith("--grpo-warmup:")
    assert config.parse_args(["--srt-warmup", "1", "--p2-warmup", "20"]).srt_warmup == 1.0
    demo = config.parse_args([])
    assert (demo.srt_warmup, demo.p2_warmup, demo.grpo_warmup) == (0.05, 0, 0)  # the demo's meaning unchanged


# ------------------------------------------------------------------------------------- --eval-extra humaneval

def test_the_code_presets_humaneval_goes_with_their_own_data(tmp_path, capsys):
    assert config.parse_args(["--task", "code"]).eval_extra == "humaneval"
    note = capsys.readouterr().out
    assert note.startswith("[eval-extra] humaneval: all 164 problems") and '--eval-extra "" turns it off' in note
    data = str(own_data(tmp_path))
    assert config.parse_args(["--task", "code", "--dataset", data]).eval_extra == ""
    assert config.parse_args(["--preset", "paper", "--task", "code", "--dataset", "mbpp"]).eval_extra == ""
    assert "[eval-extra]" not in capsys.readouterr().out
    assert config.parse_args(["--preset", "paper", "--task", "code"]).eval_extra == "humaneval"  # its own data
    asked = config.parse_args(["--task", "code", "--dataset", data, "--eval-extra", "humaneval", "--eval-extra-n", "5"])
    assert asked.eval_extra == "humaneval" and "[eval-extra] humaneval: 5 questions" in capsys.readouterr().out
    assert config.parse_args(["--task", "code", "--eval-extra", ""]).eval_extra == ""


# ------------------------------------------------------------------------------------------- --method base

def test_method_base_needs_no_training_sizes(tmp_path):
    """Four questions, all held out: evaluation alone draws no N1 or N2 (--n1 and --n2 keep the preset's 16
    and 8, more than the file holds)."""
    data = own_data(tmp_path)
    res = train.main(["--preset", "smoke", "--method", "base", "--dataset", str(data), "--n-eval", "4",
                      "--out", str(tmp_path / "base")])
    assert set(res["eval"]) == {"eval_base"} and res["eval"]["eval_base"]["n_questions"] == 4
    assert res["generations"] == 0
    assert "--n1 + --n2" in main_error(["--preset", "smoke", "--dataset", str(data), "--n-eval", "4",
                                        "--out", str(tmp_path / "train")])  # a method that trains still needs them
