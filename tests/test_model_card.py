"""model/README.md: the Hugging Face model card every saved model gets, its front matter read back by yaml; the
prompt and decoding it states are the run's; its reproduce command, run as written from a copy of the checkout,
ends in the same results."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

import config
import model_card
import run as run_py
import sdzero
import train
from test_train import REPO, untimed


def card_parts(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_a_run_writes_a_card_with_its_results_config_and_commit(tmp_path):
    out = tmp_path / "run"
    args = ["--preset", "smoke", "--out", str(out), "--p2-steps", "1", "--n-eval", "4", "--threads", "1"]
    res = train.main(args)
    meta, body = card_parts((out / "model" / "README.md").read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["tags"] == ["sd-zero", "self-distillation", "sdzero", "math"]
    assert "base_model" not in meta  # a local folder is no Hub id
    assert "datasets" not in meta  # the embedded arithmetic is on no Hub
    ev = res["eval"]
    for stage, label in (("eval_base", "base"), ("eval_srt", "after Phase 1 (SRT)"), ("eval_final", "after Phase 2 (SD-Zero)")):
        e = ev[stage]
        assert f"| {label} | {e['avg@k']:.3f} | {e['pass@k']:.3f} | {e['response_len']:.1f} |" in body
    beside = json.loads((out / "model" / "run_config.json").read_text())
    config_block = card_section(body, "Reproduce").split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(config_block) == beside  # the card shows the config beside it, which --config reruns
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["model"] == str(REPO / "tests" / "fixtures" / "micro")  # the smoke preset's: inside the checkout
    assert beside == {**saved, "model": "tests/fixtures/micro"}  # ... read from the root of any checkout
    train.main([*args, "--resume"])  # a finished run resumed: nothing left to train, model/ written again
    assert json.loads((out / "model" / "run_config.json").read_text()) == beside  # resume off, as it was
    assert f"`{res['commit']}`" in body and "arXiv:2604.12002" in body and "@article{he2026sdzero" in body
    assert f'from_pretrained("{out / "model"}")' in body


def test_front_matter_names_the_hub_base_model_and_datasets(tmp_path):
    cfg = vars(config.parse_args(["--preset", "paper"]))
    meta = model_card.front_matter(cfg)
    assert meta["base_model"] == "Qwen/Qwen3-4B-Instruct-2507"
    assert meta["datasets"] == ["open-r1/OpenR1-Math-220k", "HuggingFaceH4/MATH-500"]
    cfg = vars(config.parse_args(["--method", "grpo", "--dataset", "owner/set:cfg@train", "--task", "code"]))
    meta = model_card.front_matter(cfg)
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded alias's source
    assert meta["datasets"] == ["owner/set"] and meta["tags"][2:] == ["grpo", "code"]
    folder = tmp_path / "org" / "name"
    folder.mkdir(parents=True)
    assert model_card.hub_model(str(folder)) is None
    assert model_card.hub_model("org/name") == "org/name"


def test_every_method_has_a_description():
    assert set(model_card.METHODS) == set(config.CHOICES["method"])


def card_section(body: str, title: str) -> str:
    return body.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("flags, sampling", [
    ([], "Decoding: greedy (temperature 0"),
    (["--fewshot", "--eval-temperature", "0.7", "--eval-samples", "2", "--eval-top-k", "5", "--max-new-tokens", "9"],
     "Decoding: sampled at temperature 0.7, top-p 1.0, top-k 5; at most 9 new tokens"),
], ids=["smoke", "fewshot-sampled"])
def test_the_card_states_the_prompt_and_decoding_the_run_evaluated_with(tmp_path, monkeypatch, flags, sampling):
    """The card's messages, with a held-out question in place of <question>, through the saved tokenizer's chat
    template, are token for token the prompt the run evaluated that question with; the decoding line names the
    run's temperature, top-k, new tokens and k. --fewshot adds the worked turns and the control phrase."""
    asked = {}
    real = run_py.Run.prompt_ids

    def spy(self, ex):
        ids = real(self, ex)
        if self.state.stage.startswith("eval_"):  # the held-out questions
            asked[ex.question] = ids
        return ids
    monkeypatch.setattr(run_py.Run, "prompt_ids", spy)
    out = tmp_path / "run"
    res = train.main(["--preset", "smoke", "--method", "p2only", "--p2-steps", "1", "--n-eval", "4", "--out", str(out),
                      "--threads", "1", *flags])
    _, body = card_parts((out / "model" / "README.md").read_text())
    section = card_section(body, "Prompt and decoding")
    messages = json.loads(section.split("```json\n", 1)[1].split("\n```", 1)[0])
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert len(asked) == res["eval"]["eval_base"]["n_questions"] == 4
    for question, ids in asked.items():
        filled = [{**m, "content": m["content"].replace(model_card.QUESTION, question)} for m in messages]
        assert sdzero.chat_prompt_ids(tok, filled) == ids
    fewshot = "--fewshot" in flags
    assert len(messages) == (6 if fewshot else 1)
    assert ("Wait, this response is not correct, let me start over." in section) == fewshot  # --phrase-style paper
    assert "Put the final answer in \\boxed{}." in messages[-1]["content"]
    assert sampling in section and "enable_thinking=False" in section
    k = 2 if "--eval-samples" in flags else 1
    assert f"{k} sample(s) per question; avg@{k}" in section
    assert f"at most {9 if fewshot else 24} new tokens" in section


@pytest.mark.slow
def test_the_cards_reproduce_command_run_as_written_ends_in_the_same_results(tmp_path):
    """The card's command, run by bash from the root of a copy of the checkout (its tracked files, as a fresh
    clone has them, at another path), finishes and ends where the run ended: the same held-out results,
    generations and final weights."""
    out = tmp_path / "run"
    train.main(["--preset", "smoke", "--out", str(out), "--p2-steps", "2", "--n-eval", "8", "--threads", "1"])
    _, body = card_parts((out / "model" / "README.md").read_text())
    command = card_section(body, "Reproduce").split("```bash\n", 1)[1].split("\n```", 1)[0]
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = tmp_path / "run-reproduce"
    model = json.loads((again / "run_config.json").read_text())["model"]
    assert (checkout / model).resolve() == (checkout / "tests" / "fixtures" / "micro").resolve()  # the copy's
    a, b = (json.loads((d / "results.json").read_text()) for d in (out, again))
    for r in (a, b):
        for e in r["eval"].values():
            e.pop("seconds")
    same = ("eval", "generations_by", "final_accuracy")
    assert [a[k] for k in same] == [b[k] for k in same]
    x, y = (load_file(d / "model" / "model.safetensors") for d in (out, again))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert untimed((out / "metrics.jsonl").read_text()) == untimed((again / "metrics.jsonl").read_text())


def test_the_cards_commands_name_absolute_paths(tmp_path, monkeypatch):
    """A run started with a relative --out: the card's reproduce command and its `from_pretrained` name the
    folder absolutely, so they work from the checkout's root or anywhere else."""
    monkeypatch.chdir(tmp_path)
    cfg = dict(dataclasses.asdict(config.Config()), out="rel_run")
    text = model_card.reproduce_section(cfg, {"commit": "abc1234", "eval": {}})
    assert f"--config {tmp_path / 'rel_run' / 'model' / 'run_config.json'}" in text
    assert f"--out {tmp_path / 'rel_run'}-reproduce" in text
