"""LoRA (--lora-rank, --lora-alpha, --lora-targets), through peft: each training stage trains a fresh
low-rank adapter on frozen weights and merges it into them at the stage's end.

    SD-Zero      Phase 1 trains an adapter, merged: the SRT model. Phase 2 trains a fresh adapter on it, and
                 the frozen teacher (--teacher frozen) is that same model with the adapter switched off: the
                 SRT model exactly, at no memory (no copy). sync:N / ema:R teachers keep their own copy.
    the others   OPSD / SDPO / p2only: the teacher is the base model, the adapter off. RFT, GRPO: one adapter
                 (GRPO's reference for --grpo-kl is the adapter off: the initial policy).

peft injects its LoRA layers into the Hugging Face model in place, so the model every other module holds
(run.student.model) stays the one object; the PeftModel wrapper is kept only to switch the adapter off, merge
and save it. The adapter's initial weights are seeded by (--seed, stage), so a resumed stage rebuilds the
same structure before its checkpoint is loaded (checkpoints then hold base and adapter weights by name).

A sync:N or ema:R teacher under LoRA is a plain model holding the adapted weights W + (alpha / r) B A
(merged_copy), and an EMA moves it toward the student's (adapted_weights): averaging A and B apart would give
a teacher whose B A is not the average of the student's (the product of averages is not the average of
products; off by about 2% of the teacher's movement at lr 1e-2, tests/test_lora.py).

What lands in the run folder: model/ the merged weights (AutoModelForCausalLM loads them, no peft needed);
adapter/ the last stage's adapter with our card (adapter_card), whose adapter_config.json names the weights
that stage started from: --model when no stage trained before it, else base/ beside it (save_base), those
weights saved, since no name loads them (for sdzero the SRT model: Phase 1's merged weights). peft's
PeftModel.from_pretrained on them, merged, gives model/ to float rounding (tests/test_lora.py).

FSDP2 is refused with LoRA (config.check_config): the reason to shard is weights that do not fit one GPU,
and with an adapter the frozen base is what must fit; sharding it would also need FSDP2 units that mix
frozen and trainable parameters, which nothing here tests. DDP wraps the adapted model (only the adapter has
gradients, so only the adapter is all-reduced).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml

# adapter/base/: the weights the adapter trains on, when no name loads them (the SRT model)
BASE = "base"
# What each training stage is, for the adapter's card
STAGES = {"p1_train": "Phase 1 (self-revision training)",
          "p1_train_rev": "Phase 1's revision stage (two-stage SRT)",
          "p2": "Phase 2 (on-policy self-distillation)", "rft_train": "RFT's fine-tuning", "grpo": "GRPO"}


def lora_config(cfg):
    from peft import LoraConfig  # imported only when --lora-rank asks for it
    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [t for t in cfg.lora_targets.split(",") if t]
    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank, target_modules=targets,
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")


def check_targets(model: torch.nn.Module, cfg) -> None:
    """--lora-targets against the model, when it loads (not at the first training stage): each name must end
    some linear layer's name, or one line lists the names it has."""
    if not cfg.lora_rank or cfg.lora_targets == "all-linear":
        return
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in cfg.lora_targets.split(",") if t and t not in linear]
    if missing:
        raise SystemExit(f"--lora-targets {cfg.lora_targets}: {', '.join(missing)} is no linear layer of --model "
                         f"{cfg.model}; its linear layers: {', '.join(sorted(linear))} (or all-linear)")


def attach(model: torch.nn.Module, cfg, seed: int):
    """Inject a fresh adapter into `model` (in place; only the adapter then requires gradients) and return the
    PeftModel that switches, merges and saves it. Its initial weights come from `seed`, not the global RNG."""
    try:
        from peft import get_peft_model
    except ImportError:
        raise SystemExit("--lora-rank: the peft package is not installed (`pip install peft`)") from None
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            peft_model = get_peft_model(model, lora_config(cfg))
        except ValueError as e:  # peft's message names the targets it could not find
            raise SystemExit(f"--lora-targets {cfg.lora_targets}: {e}") from None
    return peft_model


def merge(peft_model) -> torch.nn.Module:
    """W + (alpha / r) B A into each adapted layer, the LoRA layers replaced by plain ones: the same model
    object, every parameter trainable again."""
    model = peft_model.merge_and_unload()
    model.requires_grad_(True)
    return model


def adapter_off(peft_model):
    """A context in which the adapted model computes exactly its frozen base weights."""
    return peft_model.disable_adapter()


class AdapterOff(torch.nn.Module):
    """A policy (parallel.Policy's call convention: policy(fn, ...) runs fn(model, ...)) that runs with the
    adapter switched off: the frozen teacher or reference under LoRA, sharing the student's weights."""

    def __init__(self, peft_model, policy: torch.nn.Module):
        super().__init__()
        self.peft_model, self.policy = peft_model, policy

    def forward(self, fn, *args, **kwargs):
        with adapter_off(self.peft_model):
            return self.policy(fn, *args, **kwargs)


def adapted_weights(peft_model) -> Iterator[tuple[str, torch.Tensor]]:
    """The weights the adapted model computes with, by the names a merged model gives them: W + (alpha / r) B A
    for each adapted layer (peft's get_delta_weight, what merging adds to W), every other parameter as it is.
    One layer's sum at a time."""
    from peft.tuners.lora import LoraLayer
    model, name = peft_model.get_base_model(), peft_model.active_adapter
    adapted = {f"{n}.base_layer.weight": m for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    for n, p in model.named_parameters():
        if "lora_" not in n:
            yield n.replace(".base_layer", ""), (p + adapted[n].get_delta_weight(name) if n in adapted else p)


def merged_copy(peft_model) -> torch.nn.Module:
    """A plain model (no LoRA layers) of the adapted weights, the model itself untouched."""
    return copy.deepcopy(peft_model).merge_and_unload()


def base_state(peft_model) -> dict[str, torch.Tensor]:
    """The frozen weights the adapter trains on, by a plain model's names (peft keeps W as base_layer)."""
    return {k.replace(".base_layer", ""): v for k, v in peft_model.get_base_model().state_dict().items()
            if "lora_" not in k}


def save_base(peft_model, path: Path, tok) -> None:
    """The frozen weights as a Hugging Face folder (AutoModelForCausalLM loads it), with the tokenizer."""
    peft_model.get_base_model().save_pretrained(path, state_dict=base_state(peft_model))
    tok.save_pretrained(path)


def save(peft_model, path: Path, base: str, card: str) -> None:
    """peft's adapter files, adapter_config.json naming `base` (what PeftModel.from_pretrained applies it
    to), and our card as README.md in place of peft's empty template."""
    peft_model.peft_config[peft_model.active_adapter].base_model_name_or_path = base
    # No run resizes the vocabulary, so the base's embeddings are the base's: without this, peft looks for
    # base/config.json (not yet where it names it) or asks the Hub whether the vocabulary changed.
    peft_model.save_pretrained(path, save_embedding_layers=False)
    (Path(path) / "README.md").write_text(card, encoding="utf-8")


def adapter_card(cfg, stage: str, earlier: list[str], base: str, folder: Path) -> str:
    """adapter/README.md: what trained the adapter, the weights it applies to, and how to load it on them."""
    if earlier:
        srt = " (the SRT model)" if stage == "p2" and "p1_train" in earlier else ""
        applies = (f"`{BASE}/` in this folder{srt}: `--model {cfg.model}` after "
                   f"{', '.join(STAGES[s] for s in earlier)}, each stage's adapter merged. No name loads those "
                   f"weights, so they are saved here; adapter_config.json names them by the path they were written "
                   f"to, `{base}` (a copy of this folder elsewhere: load its own `{BASE}/`).")
    else:
        applies = (f"`--model {cfg.model}`{f' (loaded from `{base}`)' if base != cfg.model else ''}: no stage "
                   f"trained before this one. adapter_config.json names it.")
    meta = {"library_name": "peft", "tags": ["lora", "sd-zero", cfg.method, cfg.task]}
    if not earlier and not Path(base).exists():  # a Hub id
        meta["base_model"] = base
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# The LoRA adapter of {folder.parent.name}

Rank {cfg.lora_rank}, alpha {cfg.lora_alpha or 2 * cfg.lora_rank}, on `{cfg.lora_targets}`: the adapter trained in
{STAGES[stage]} of this `--method {cfg.method}` run, by the SD-Zero reference implementation
(arXiv:2604.12002). `{folder.parent / 'model'}` holds the model it ends in, merged, and that model's card: the
results, the prompt they were measured with, and the command that reproduces the run.

## What it applies to

{applies}

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{folder}").merge_and_unload()  # model/'s weights, to float rounding
```
"""
