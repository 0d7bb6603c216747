"""model/README.md: the Hugging Face model card every saved model gets, its front matter read back by yaml."""
import json

import yaml

import config
import model_card
import train


def card_parts(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_a_run_writes_a_card_with_its_results_config_and_commit(tmp_path):
    out = tmp_path / "run"
    res = train.main(["--preset", "smoke", "--out", str(out), "--p2-steps", "1", "--n-eval", "4", "--threads", "1"])
    meta, body = card_parts((out / "model" / "README.md").read_text())
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["tags"] == ["sd-zero", "self-distillation", "sdzero", "math"]
    assert "base_model" not in meta  # a local folder is no Hub id
    assert "datasets" not in meta  # the embedded arithmetic is on no Hub
    ev = res["eval"]
    for stage, label in (("eval_base", "base"), ("eval_srt", "after Phase 1 (SRT)"), ("eval_final", "after Phase 2 (SD-Zero)")):
        e = ev[stage]
        assert f"| {label} | {e['avg@k']:.3f} | {e['pass@k']:.3f} | {e['response_len']:.1f} |" in body
    saved = json.loads((out / "run_config.json").read_text())
    config_block = body.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(config_block) == saved  # the card's config is the run's, which --config reruns
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
