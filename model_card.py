"""model/README.md: the Hugging Face model card written with every saved model.

The Hub reads a model card's YAML front matter (base_model, library_name, pipeline_tag, tags, datasets)
to link the model to its base and its data; the body says what produced it: the method, the run's
held-out results, the resolved config that reproduces it (`python train.py --config run_config.json`),
the commit, and the citation. Built from the run's results.json and config, nothing measured here.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

import run_folder
import sdzero
from data.load import split_hub_id
from data.registry import REGISTRY

# The Hub model each embedded alias was converted from (sdzero.EMBEDDED: a quantised GGUF of it).
EMBEDDED_BASE = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
assert set(EMBEDDED_BASE) == set(sdzero.EMBEDDED)
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")

METHODS = {
    "sdzero": "SD-Zero (self-revision training, then on-policy self-distillation from the reviser)",
    "srt": "SD-Zero's Phase 1 only (self-revision training)",
    "p2only": "SD-Zero's Phase 2 only (self-distillation from the base model prompted to revise)",
    "opsd": "OPSD-style self-distillation (the teacher sees the reference answer)",
    "sdpo": "SDPO-style self-distillation (the teacher sees the verifier's feedback)",
    "rft": "rejection-sampling fine-tuning (RFT), the paper's baseline",
    "grpo": "GRPO, the paper's baseline",
    "base": "no training (the base model, evaluated)",
}

CITATION = """@article{he2026sdzero,
  title   = {Self-Distillation Zero: Self-Revision Turns Binary Rewards Into Dense Supervision},
  author  = {He and Kaur and Bhaskar and Yang and Liu and Ri and Fowl and Panigrahi and Chen and Arora},
  journal = {arXiv preprint arXiv:2604.12002},
  year    = {2026}
}"""


def hub_model(model: str) -> str | None:
    """The Hub id of --model: an embedded alias's source, an owner/name that is not a local folder, else None."""
    if model in EMBEDDED_BASE:
        return EMBEDDED_BASE[model]
    return model if HUB_ID.fullmatch(model) and not Path(model).exists() else None


def hub_dataset(dataset: str) -> str | None:
    """The Hub id of --dataset: a named one's, an owner/name[:config][@split], else None (embedded, local)."""
    if dataset in REGISTRY:
        return REGISTRY[dataset].hub_id
    parts = split_hub_id(dataset)
    return parts[0] if parts and not Path(dataset).exists() else None


def front_matter(cfg: dict) -> dict:
    meta = {"library_name": "transformers", "pipeline_tag": "text-generation",
            "tags": ["sd-zero", "self-distillation", cfg["method"], cfg["task"]]}
    base = hub_model(cfg["model"])
    if base:
        meta["base_model"] = base
    datasets = [d for d in dict.fromkeys(hub_dataset(x) for x in (cfg["dataset"], cfg["eval_dataset"]) if x) if d]
    if datasets:
        meta["datasets"] = datasets
    return meta


def results_table(results: dict) -> str:
    ev = results["eval"]
    k = ev["eval_base"]["k"]
    lines = [f"| model | avg@{k} | pass@{k} | response length (tokens) |", "|---|---|---|---|"]
    for stage, label, _ in run_folder.stage_labels(results["method"]):  # the rows train.py prints
        if stage in ev:
            e = ev[stage]
            lines.append(f"| {label} | {e['avg@k']:.3f} | {e['pass@k']:.3f} | {e['response_len']:.1f} |")
    return "\n".join(lines)


def model_card(cfg: dict, results: dict) -> str:
    """The card's text for a run's resolved config and results (results.json's dict)."""
    meta = front_matter(cfg)
    base = meta.get("base_model", cfg["model"])
    n = results["eval"]["eval_base"]["n_questions"]
    held_out = cfg["eval_dataset"] or f"held out from {cfg['dataset']}"
    extra = results.get("extra")
    extra_line = (f"\nOn {extra['dataset']} ({extra['n_questions']} questions): {extra['base_accuracy']:.3f} before, "
                  f"{extra['final_accuracy']:.3f} after.\n" if extra else "")
    folder = Path(cfg["out"]) / "model"
    adapter = f" with a LoRA adapter (rank {cfg['lora_rank']}) merged into the weights" if cfg["lora_rank"] else ""
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {Path(cfg['out']).name}

`{base}` trained with {METHODS[cfg['method']]}{adapter}, on the {cfg['task']} task, by the SD-Zero reference
implementation (arXiv:2604.12002) at commit `{results.get('commit') or 'unknown'}`.

## Results

Held-out: {n} questions ({held_out}), {results['eval']['eval_base']['k']} sample(s) each at temperature
{cfg['eval_temperature']}{' (greedy)' if not cfg['eval_temperature'] else ''}; {results['generations']} training \
generations.

{results_table(results)}
{extra_line}
These are the run's own numbers (results.json beside this folder); they are not a benchmark of the model.

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{folder}")
tokenizer = AutoTokenizer.from_pretrained("{folder}")
```

## Reproduce

The resolved config below is the run's run_config.json: `python train.py --config run_config.json` runs it again.

<details><summary>config</summary>

```json
{json.dumps(cfg, indent=2)}
```

</details>

## Citation

```bibtex
{CITATION}
```
"""
