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

What lands in the run folder: model/ the merged weights (AutoModelForCausalLM loads them, no peft needed);
adapter/ the last stage's adapter (peft's PeftModel.from_pretrained loads it on the weights that stage started
from: --model for one-stage methods, the SRT model, i.e. Phase 1's merged weights, for sdzero).

FSDP2 is refused with LoRA (config.check_config): the reason to shard is weights that do not fit one GPU,
and with an adapter the frozen base is what must fit; sharding it would also need FSDP2 units that mix
frozen and trainable parameters, which nothing here tests. DDP wraps the adapted model (only the adapter has
gradients, so only the adapter is all-reduced).
"""
from __future__ import annotations

import torch


def lora_config(cfg):
    from peft import LoraConfig  # imported only when --lora-rank asks for it
    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [t for t in cfg.lora_targets.split(",") if t]
    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank, target_modules=targets,
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")


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


def save(peft_model, path) -> None:
    peft_model.save_pretrained(path)
