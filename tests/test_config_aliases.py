"""The spellings users of TRL type: every flag in snake_case, TRL's names for the same settings, and
--learning_rate as the default of every learning rate; --help shows our names."""
import dataclasses

import pytest

import config


def test_snake_case_spelling_of_every_flag_is_ours():
    for f in dataclasses.fields(config.Config):
        if "_" not in f.name:
            continue
        snake, kebab = "--" + f.name, "--" + f.name.replace("_", "-")
        assert config.our_spelling([snake, "v"])[0] == [kebab, "v"]
        assert config.our_spelling([snake + "=v"])[0] == [kebab + "=v"]
    assert config.our_spelling(["--no_fewshot", "--no_rft_dedup"])[0] == ["--no-fewshot", "--no-rft-dedup"]
    cfg = config.parse_args(["--p2_lr", "1e-6", "--no_fewshot", "--teacher_context", "answer", "--eval_samples=1"])
    assert (cfg.p2_lr, cfg.fewshot, cfg.method) == (1e-6, False, "opsd")
    # values are left alone, even when they look like names
    assert config.our_spelling(["--question-field", "my_field", "--p1-stop", "a_b"])[0] == \
        ["--question-field", "my_field", "--p1-stop", "a_b"]


def test_trl_names_mean_ours():
    cfg = config.parse_args(["--model_name_or_path", "org/model", "--output_dir=/tmp/x", "--max_completion_length",
                             "64", "--num_generations", "8"])
    assert (cfg.model, cfg.out, cfg.max_new_tokens, cfg.grpo_group) == ("org/model", "/tmp/x", 64, 8)


def test_learning_rate_is_the_default_of_every_learning_rate():
    cfg = config.parse_args(["--preset", "smoke", "--learning_rate", "2e-5"])  # over the preset's rates
    assert (cfg.srt_lr, cfg.p2_lr, cfg.grpo_lr) == (2e-5, 2e-5, 2e-5)
    for argv in (["--learning_rate=2e-5", "--p2-lr", "1e-6"], ["--p2-lr", "1e-6", "--learning_rate", "2e-5"]):
        cfg = config.parse_args(argv)  # an explicit rate wins, wherever it stands
        assert (cfg.srt_lr, cfg.p2_lr, cfg.grpo_lr) == (2e-5, 1e-6, 2e-5)
    with pytest.raises(SystemExit, match="--learning_rate: 'fast' is not a number"):
        config.parse_args(["--learning_rate", "fast"])
    with pytest.raises(SystemExit, match="--learning_rate: expected a value"):
        config.parse_args(["--learning_rate"])


def test_help_shows_our_names(capsys):
    with pytest.raises(SystemExit):
        config.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--p2-lr" in text and "--p2_lr P2_LR" not in text and "--model_name_or_path (--model)" in text
