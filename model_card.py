"""model/README.md: the Hugging Face model card written with every saved model.

The Hub reads a model card's YAML front matter (base_model, library_name, pipeline_tag, tags, datasets)
to link the model to its base and its data; the body says what produced it: the method, the run's
held-out results, the prompt and decoding those results were measured with (the chat messages, worked turns
and instruction of tasks.prompt_messages; train.evaluate's sampling settings), the command that reproduces
the run from a checkout (run_config.json beside the card: run_folder.reproduce_config), the commit, and the
citation. Built from the run's results.json and config, nothing measured here.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

import revise
import run_folder
import sdzero
import tasks
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


# What stands for the question in the card's prompt (a code task's statement: its instruction follows it).
QUESTION = "<question>"


def prompt_example(cfg: dict) -> list[dict]:
    """The chat messages every held-out question is asked as (Run.prompt_messages), QUESTION in its place; a
    code task's is a function task's."""
    question = QUESTION if cfg["task"] == "math" else tasks.code_question(QUESTION, "call")
    return tasks.prompt_messages(question, cfg["fewshot"], revise.CONTROL_PHRASES[cfg["phrase_style"]][0],
                                 task=cfg["task"])


def decoding(cfg: dict, max_new_tokens: int) -> str:
    """train.evaluate's sampling settings (Run.rollout_verdicts' "eval" stage) in words."""
    sampling = ("greedy (temperature 0: the most likely token at each step)" if not cfg["eval_temperature"] else
                f"sampled at temperature {cfg['eval_temperature']}, top-p {cfg['eval_top_p']}, top-k "
                f"{cfg['eval_top_k'] or 'off'}")
    return f"{sampling}; at most {max_new_tokens} new tokens, ending at the end-of-turn token"


def prompt_section(cfg: dict) -> str:
    """## Prompt and decoding: what the card's scores depend on beside the weights."""
    k = cfg["eval_samples"]
    if cfg["fewshot"]:
        shots = (f"a system turn and two worked exchanges (`--fewshot`; tasks.FEWSHOT"
                 f"{'' if cfg['task'] == 'math' else '_CODE'}), the second a wrong answer revised after the control "
                 f"phrase of `--phrase-style {cfg['phrase_style']}`")
    else:
        shots = "the question alone, no worked turns (`--no-fewshot`)"
    if cfg["task"] == "math":
        ask = f"`{QUESTION}` is the question, then the instruction tasks.MATH_INSTRUCTION"
        score = ("the response's final stated answer (its last `\\boxed{}`, else an answer marker; "
                 "verify.check_math) against the gold answer")
    else:
        ask = (f"`{QUESTION}` is the task's statement, then the instruction of a function task, "
               f"tasks.CODE_INSTRUCTION; a program on standard input/output gets tasks.STDIO_INSTRUCTION and "
               f"tasks.FEWSHOT_STDIO's worked turns instead")
        score = "the last fenced Python block of the response, run against the task's hidden tests in the sandbox"
    if cfg["reward"]:
        score = f"the run's own verifier `--reward {cfg['reward']}`"
    extra = (f" `--eval-extra {cfg['eval_extra']}` is asked and scored the same way, "
             f"{decoding(cfg, cfg['eval_extra_tokens'] or cfg['max_new_tokens'])}." if cfg["eval_extra"] else "")
    return f"""## Prompt and decoding

The scores above were measured with this prompt and decoding; another prompt or other sampling settings give
other numbers.

Prompt: {shots}. Each held-out question is asked as these chat messages, where {ask}:

```json
{json.dumps(prompt_example(cfg), indent=2)}
```

through the model's chat template, saved with the tokenizer:
`tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking={cfg['enable_thinking']})`.

Decoding: {decoding(cfg, cfg['max_new_tokens'])}.

Scoring: {k} sample(s) per question; avg@{k} is the share of correct samples, pass@{k} the unbiased estimate of
Chen et al. (2021). A sample is correct by {score}.{extra}"""


def reproduce_section(cfg: dict, results: dict) -> str:
    """## Reproduce: the command that runs the run again from a checkout, and the config it reads."""
    # absolute: the card is read, and its commands run, from anywhere (the run's own --out may be relative)
    out, commit, world = Path(cfg["out"]).absolute(), results.get("commit"), results.get("world_size", 1)
    if commit:
        where = f"at commit `{commit.removesuffix('-dirty')}` (`git checkout {commit.removesuffix('-dirty')}`)"
        if commit.endswith("-dirty"):
            where += "; the run's tree had uncommitted changes, which the checkout lacks"
    else:
        where = "(the run's commit is unknown: run_folder.git_commit found no git checkout)"
    launch = f"torchrun --nproc_per_node {world}" if world > 1 else "python"
    processes = (f" The run had {world} processes (above as on one machine); batch sizes are global, so another "
                 f"count trains the same run up to float rounding." if world > 1 else "")
    return f"""## Reproduce

From the root of a checkout of the SD-Zero reference implementation {where}:

```bash
{launch} train.py --config {shlex.quote(str(out / "model" / run_folder.RUN_CONFIG))} \\
    --out {shlex.quote(str(out) + "-reproduce")}
```

`{run_folder.RUN_CONFIG}` beside this card is the run's resolved config (below; paths inside the checkout
relative to its root); `--out` names a new folder, since a run never writes into one that holds files. On
CPU the run is deterministic and ends with the same results; on a GPU its kernels may differ in the last
bits.{processes}

<details><summary>config</summary>

```json
{json.dumps(run_folder.reproduce_config(cfg), indent=2)}
```

</details>"""


def model_card(cfg: dict, results: dict) -> str:
    """The card's text for a run's resolved config and results (results.json's dict)."""
    meta = front_matter(cfg)
    base = meta.get("base_model", cfg["model"])
    n = results["eval"]["eval_base"]["n_questions"]
    held_out = cfg["eval_dataset"] or f"held out from {cfg['dataset']}"
    extra = results.get("extra")
    extra_line = (f"\nOn {extra['dataset']} ({extra['n_questions']} questions): {extra['base_accuracy']:.3f} before, "
                  f"{extra['final_accuracy']:.3f} after.\n" if extra else "")
    folder = Path(cfg["out"]).absolute() / "model"
    adapter = f" with a LoRA adapter (rank {cfg['lora_rank']}) merged into the weights" if cfg["lora_rank"] else ""
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {Path(cfg['out']).name}

`{base}` trained with {METHODS[cfg['method']]}{adapter}, on the {cfg['task']} task, by the SD-Zero reference
implementation (arXiv:2604.12002) at commit `{results.get('commit') or 'unknown'}`.

## Results

Held-out: {n} questions ({held_out}), {results['eval']['eval_base']['k']} sample(s) each at temperature \
{cfg['eval_temperature']}{' (greedy)' if not cfg['eval_temperature'] else ''}, asked and decoded as "Prompt and \
decoding" below says; {results['generations']} training generations.

{results_table(results)}
{extra_line}
These are the run's own numbers (results.json beside this folder); they are not a benchmark of the model.

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{folder}")
tokenizer = AutoTokenizer.from_pretrained("{folder}")
```

{prompt_section(cfg)}

{reproduce_section(cfg, results)}

## Citation

```bibtex
{CITATION}
```
"""
