"""The run's settings: Config (every flag, with the paper's value where it differs), the presets, the command
line, and the checks that turn a bad flag into one clear line.

Every flag is a Config field (`--p2-lr` is `p2_lr`); a preset sets defaults, a --config FILE (YAML or JSON, a
run's own run_config.json too) overrides them, and flags on the command line override both.
Choice lists come from the modules that own them (distill.DIVERGENCES, revise.CONTROL_PHRASES, ...), so a
new divergence or phrase style is one edit in its own module.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import baselines
import distill
import parallel
import revise
import sdzero
import teacher_context
import tracking
from run import METHOD_STAGES, parse_betas, parse_teacher
from run_folder import OLD_RUN_CONFIG, RUN_CONFIG, launcher

REPO = Path(__file__).resolve().parent

def knob(default, help: str):
    return field(default=default, metadata={"help": help})


def field_type(f: dataclasses.Field) -> type:
    """A Config field's type (the annotations are strings under `from __future__ import annotations`)."""
    return {"bool": bool, "int": int, "float": float, "str": str}.get(f.type, f.type)


@dataclass
class Config:
    # what to run
    task: str = knob("math", "task: math (final answer in \\boxed{}, sympy) | code (one Python block, sandboxed tests)")
    preset: str = knob("demo", "demo (embedded SmolLM2, CPU) | smoke (micro model, seconds) | paper (Qwen3-4B, GPUs) "
                       "| authors (the paper's scale, the authors' code's recipe)")
    method: str = knob("sdzero", "sdzero (Phase 1 + 2) | srt (stop after Phase 1) | p2only (Phase 2 from the base "
                       "model, no SRT; paper Table 12) | opsd | sdpo (Phase 2 from the base model with the teacher "
                       "context answer | feedback; teacher_context.py) | rft | grpo (the paper's baselines, "
                       "baselines.py) | base (evaluate only)")
    budget: int = knob(0, "training generations to spend (initial answers, revisions, rollouts): sizes Phase 2 "
                       "(sdzero), the Phase 1 questions (srt), the questions (rft) or the rollout steps (grpo) so "
                       "methods compare at equal generations; 0 = each method's own flags")
    model: str = knob("smollm2-135m", "Hugging Face id, local folder, or the embedded alias smollm2-135m")
    dataset: str = knob("embedded", "embedded | a named dataset (openr1-math, math-500, aime24, aime25, gsm8k, "
                        "codeforces-cots, codeforces, humaneval, mbpp, livecodebench; README) | a Hub id "
                        "owner/name[:config][@split] with --question-field/--answer-field (math) | a local "
                        ".jsonl/.parquet")
    eval_dataset: str = knob("", "held-out questions from this dataset (same forms as --dataset); default: "
                             "--dataset's own test split, else carved from its rows")
    reward: str = knob("", "your own verifier in place of the task's, for training and evaluation: "
                       "module:function or path/to/file.py:function, called as f(response, example) -> bool | "
                       "Verdict in worker processes (verifiers/plugin.py, examples/README.md)")
    reward_timeout: float = knob(10.0, "--reward: seconds per call; a call past it, one that raises or one that "
                                 "returns anything else stops the run with one line naming the function and row")
    question_field: str = knob("question", "question field of a --dataset file or Hub id")
    answer_field: str = knob("answer", "final-answer field (math) or code-task field (code) of a --dataset file")
    out: str = knob("runs/demo", "run folder: config, metrics, samples, checkpoint, results, final model")
    seed: int = knob(0, "seeds sampling, shuffling and initialisation")
    data_seed: int = knob(0, "seeds the N1/N2/held-out split (fixed across --seed so seeds share a test set)")
    n1: int = knob(128, "Phase 1 questions (paper: 10K)")
    n2: int = knob(240, "Phase 2 questions (paper: 9K)")
    n_eval: int = knob(256, "held-out questions")
    math_max_operand: int = knob(30, "embedded math: operands in 1..N")
    math_ops: str = knob("+", "embedded math: operators, a subset of '+-*'")
    enable_thinking: bool = knob(False, "pass enable_thinking=True to chat templates that take it (Qwen3); off, "
                                 "they get False. Self-distillation with a privileged teacher can hurt thinking "
                                 "models (README)")
    fewshot: bool = knob(True, "worked example turns before each question, one showing a revision (tasks.FEWSHOT)")
    # sampling (README: The paper, equation by equation; Phase 1 step 1 and Phase 2)
    max_new_tokens: int = knob(48, "new tokens per sample (paper: 16K)")
    temperature: float = knob(0.7, "sampling temperature for training rollouts (paper 0.7; authors' code 1.0)")
    p1_top_p: float = knob(1.0, "Phase 1 top-p, y_init and revisions (paper: none; authors' "
                           "self_critique_pipeline.py: 0.9)")
    p1_top_k: int = knob(0, "Phase 1 top-k (0 = off)")
    p1_stop: str = knob("", "Phase 1 stop strings, comma-separated: the stop is cut and the end of turn put in its "
                        "place (authors' self_critique_pipeline.py: <|im_end|>,<|endoftext|>,<|im_start|>,Question:)")
    p2_top_p: float = knob(1.0, "Phase 2 samples' top-p (paper: none; authors' distillation_math.yaml: 1.0)")
    p2_top_k: int = knob(0, "Phase 2 top-k (0 = off)")
    baseline_top_p: float = knob(1.0, "RFT and GRPO rollouts' top-p")
    baseline_top_k: int = knob(0, "RFT and GRPO top-k (0 = off)")
    eval_top_p: float = knob(1.0, "held-out sampling top-p")
    eval_top_k: int = knob(0, "held-out top-k (0 = off)")
    gen_batch_size: int = knob(64, "prompts per generation batch (memory bound); under vllm, rows decoded at once")
    rollout_engine: str = knob("own", "what samples every rollout: own (sdzero.generate) | vllm (one vllm.LLM per "
                               "process beside training, the student's weights synced in after each update; an "
                               "optional install, README: vLLM rollouts)")
    vllm_gpu_memory: float = knob(0.3, "vllm on a GPU: its share of GPU memory (gpu_memory_utilization)")
    vllm_sleep: bool = knob(False, "vllm on a GPU: sleep between rollouts, weights and KV cache released")
    num_init: int = knob(1, "y_init sampled per Phase 1 question (paper: 1; authors' run_srt_data.sh: 3)")
    num_revisions: int = knob(3, "revisions sampled per y_init in Phase 1 (paper: 3)")
    revise_correct: bool = knob(True, "also revise correct y_init with the r=1 phrase (paper: yes; authors' code: no)")
    phrase_style: str = knob("paper", "control phrases: paper | qwen | olmo (README, The paper, equation by equation)")
    # Phase 1: SRT (paper: AdamW, lr 5e-6, cosine, 5% warmup, 2-3 epochs)
    srt_loss: str = knob("both", "L_SRT terms: both (Eq. 1 + Eq. 2) | gen (Eq. 2) | rev (Eq. 1); paper Table 11")
    srt_variant: str = knob("joint", "joint (paper: L_rev + L_gen in one training) | two-stage (authors' sft.sh: "
                            "SFT on the whole turn of wrong-init tuples, then SFT on y_rev with x + y_init + P_r "
                            "in the user turn, --srt-epochs each)")
    srt_stage2_size: int = knob(1000, "two-stage: tuples of the revision stage, correct-init ones first (authors' "
                                "prepare_data.py: 1000); the generation stage takes the other wrong-init tuples")
    srt_max_tuples: int = knob(0, "keep at most the first N verified tuples (0: all; authors' run_srt_data.sh: 6000)")
    srt_clean: bool = knob(False, "clean the kept tuples as the authors' prepare_data.py does: repeating tails "
                           "trimmed, sycophantic openings of y_rev stripped, duplicate (x, y_init, y_rev) dropped")
    srt_lr: float = knob(3e-5, "Phase 1 learning rate (paper 5e-6)")
    srt_epochs: int = knob(2, "Phase 1 epochs (paper 2-3)")
    srt_batch_size: int = knob(8, "kept tuples per Phase 1 step")
    srt_warmup: float = knob(0.05, "Phase 1 warmup as a share of its optimizer steps, in [0, 1] (0.05 = the "
                             "first 5%), then cosine (paper ~5%); --p2-warmup and --grpo-warmup count steps")
    # Phase 2: on-policy self-distillation
    p2_lr: float = knob(5e-6, "Phase 2 learning rate (paper 5e-6)")
    p2_steps: int = knob(30, "Phase 2 optimizer steps")
    p2_batch_size: int = knob(8, "prompts per Phase 2 step, one sample each (authors' code: 128)")
    p2_warmup: int = knob(0, "Phase 2 warmup in optimizer steps, then constant lr (authors' code: 20)")
    p2_micro_batch: int = knob(0, "Phase 2 rows per forward/backward on each process, sorted by length so "
                               "micro-batches pad little; gradients accumulate (0 = all rows at once)")
    teacher_context: str = knob("revise", "what the Phase 2 teacher sees beside y: revise (SD-Zero: y' + P_r) | "
                                "answer (OPSD: the gold answer or a reference solution; = --method opsd) | feedback "
                                "(SDPO: the verifier's feedback on y; = --method sdpo); teacher_context.py")
    teacher: str = knob("frozen", "frozen (paper default) | sync:N (copy student->teacher every N steps) | ema:R")
    divergence: str = knob("reverse", "reverse KL(S||T) (paper Eq. 4) | forward | mixed (authors' code) | jsd")
    topk: int = knob(64, "support: the top-k tokens, renormalised (paper: 64); 0 = full vocabulary")
    support: str = knob("teacher", "whose top-k: teacher (paper) | student")
    tail: bool = knob(False, "add a tail bucket with the remaining mass instead of renormalising")
    beta: float = knob(0.5, "mixing weight of --divergence mixed and jsd, refused with the others (TRL's --beta, "
                       "GRPO's KL coefficient, is --grpo-kl here)")
    teacher_keep_end: bool = knob(False, "the teacher's first copy of y keeps its end-of-turn token (authors' "
                                  "code) instead of y' without it (paper; README, The paper, equation by equation)")
    teacher_max_len: int = knob(4096, "teacher context cap; longer y is truncated for student and teacher alike")
    loss_chunk: int = knob(256, "response positions per chunk of the memory-bounded Phase 2 loss")
    # baselines (baselines.py). RFT fine-tunes with the Phase 1 settings (--srt-lr, --srt-epochs,
    # --srt-batch-size, --srt-warmup); both draw questions from N1 then N2.
    rft_samples: int = knob(4, "RFT: samples per question (the paper's baselines: 4)")
    rft_dedup: bool = knob(True, "RFT: keep distinct correct samples only (the RFT paper)")
    grpo_group: int = knob(4, "GRPO: samples per question, the group size n (the paper's baselines: 4)")
    grpo_batch: int = knob(16, "GRPO: questions per rollout step")
    grpo_steps: int = knob(11, "GRPO: rollout steps when --budget is 0")
    grpo_minibatches: int = knob(2, "GRPO: optimizer steps per rollout step (later ones are off-policy, clipped)")
    grpo_lr: float = knob(1e-5, "GRPO learning rate (DAPO: 1e-6 at 32B)")
    grpo_warmup: int = knob(0, "GRPO warmup in optimizer steps, then constant lr")
    grpo_std: bool = knob(True, "GRPO: divide the advantage by the group's std (--no-grpo-std: Dr. GRPO)")
    grpo_norm: str = knob("token", "GRPO loss normalisation: token (DAPO) | sequence (GRPO)")
    grpo_clip_low: float = knob(0.2, "GRPO: lower clip, rho >= 1 - this")
    grpo_clip_high: float = knob(0.28, "GRPO: upper clip, rho <= 1 + this (DAPO clip-higher; GRPO: 0.2)")
    grpo_dynamic: bool = knob(True, "GRPO: DAPO dynamic sampling, replace groups whose rewards are all equal")
    grpo_max_rounds: int = knob(3, "GRPO dynamic sampling: generation rounds per step at most")
    grpo_overlong: int = knob(0, "GRPO: DAPO overlong penalty over the last N tokens before the cap (0 = off)")
    grpo_kl: float = knob(0.0, "GRPO: KL(pi || initial model) coefficient (GRPO 0.04; DAPO 0 = off)")
    # LoRA (peft; lora.py): every training stage trains an adapter, merged into the weights at the stage's end
    lora_rank: int = knob(0, "LoRA rank r (0 = full fine-tuning); a frozen Phase 2 teacher is then the model "
                          "with its adapter switched off, no copy")
    lora_alpha: float = knob(0.0, "LoRA alpha, the adapter's scale alpha / r (0 = 2 r)")
    lora_targets: str = knob("all-linear", "LoRA target modules: all-linear (every linear layer but the LM head) | "
                             "comma-separated module names, e.g. q_proj,k_proj,v_proj,o_proj")
    # optimisation (both phases)
    srt_weight_decay: float = knob(0.0, "AdamW weight decay in Phase 1 and RFT (paper: none given; authors' sft.sh: "
                                   "1e-4)")
    srt_betas: str = knob("0.9,0.999", "AdamW betas in Phase 1 and RFT (torch's default; authors' sft.sh: 0.9,0.95)")
    p2_weight_decay: float = knob(0.0, "AdamW weight decay in Phase 2 and GRPO (authors' distillation_math.yaml: 0.01)")
    p2_betas: str = knob("0.9,0.999", "AdamW betas in Phase 2 and GRPO (authors' distillation_math.yaml: 0.9,0.999)")
    grad_clip: float = knob(1.0, "gradient-norm clip (authors' code: 1.0)")
    # evaluation
    eval_samples: int = knob(1, "samples per held-out question: avg@k and pass@k use k = this")
    eval_temperature: float = knob(0.0, "held-out sampling temperature (0 = greedy, needs --eval-samples 1)")
    eval_every: int = knob(0, "also evaluate the held-out set every N optimizer steps of each training stage "
                           "(Phase 1, Phase 2, RFT, GRPO), logged to metrics.jsonl as eval rows with that stage and "
                           "step: learning curves; the same seeds at every point (0 = between stages only)")
    eval_revise: bool = knob(False, "at each evaluation also revise every held-out answer (greedy, P_r by its "
                             "reward): the reviser's correction rate (r=0 -> right) and keep rate (r=1 -> right)")
    eval_extra: str = knob("", "also evaluate this dataset before training and at the end, reported apart "
                           "(the code presets: humaneval, unless --dataset names other data; \"\" = off)")
    eval_extra_n: int = knob(0, "questions of --eval-extra (0 = all)")
    eval_extra_tokens: int = knob(0, "new tokens per --eval-extra answer (0 = --max-new-tokens)")
    # bookkeeping
    save_every: int = knob(0, "checkpoint every N optimizer steps inside a phase (0: only between stages)")
    resume: bool = knob(False, "continue the run in --out from its checkpoint")
    overwrite_output_dir: bool = knob(False, "start over in an --out that holds a run: its files (run_config.json, logs, checkpoint/, results.json, model/, adapter/) are deleted once the data and the model have loaded, other files stay (TRL's --overwrite_output_dir; a run that stopped before its first checkpoint is taken over without it)")
    keep_checkpoint: bool = knob(True, "keep checkpoint/ when the run ends (--no-keep-checkpoint deletes it once results.json and model/ are written: the finished run can no longer be resumed)")
    log_samples: int = knob(2, "samples per step written to samples.jsonl")
    report_to: str = knob("none", "where metrics.jsonl's rows also go: none | any comma-separated of wandb, "
                          "tensorboard (event files in --out/tensorboard), trackio; each needs its package "
                          "(pip install wandb / tensorboard / trackio); tracking.py")
    project: str = knob("sdzero", "the wandb / Trackio project of --report-to")
    threads: int = knob(0, "torch CPU threads (0 = all cores)")
    precision: str = knob("auto", "auto (bf16 on CUDA, else fp32) | bf16 (fp32 weights and optimizer, bf16 autocast "
                          "for sampling and losses, the teacher stored in bf16, an EMA teacher in fp32) | fp32")
    grad_checkpoint: bool = knob(False, "activation checkpointing in the decoder layers (long answers: memory for "
                                 "recomputation)")
    parallel: str = knob("auto", "under torchrun: auto (= ddp) | ddp (a full model per GPU) | fsdp (FSDP2: "
                         "parameters, gradients and optimizer state sharded across GPUs); parallel.py")


PRESETS = {
    "demo": {},
    "smoke": dict(model=str(REPO / "tests" / "fixtures" / "micro"), out="runs/smoke", n1=16, n2=8, n_eval=16,
                  fewshot=False,
                  math_max_operand=9, max_new_tokens=24, gen_batch_size=32, srt_epochs=1, srt_batch_size=4,
                  srt_lr=1e-3, p2_steps=3, p2_batch_size=4, p2_lr=1e-4, loss_chunk=7, save_every=1,
                  teacher_max_len=128),
    # Qwen3-4B-Instruct-2507 on 8 GPUs (the paper's hyperparameters, README); needs the Hub. Under torchrun, FSDP2,
    # activation checkpointing and one answer per Phase 2 forward: 4B fp32 weights + AdamW are 64 GB before the
    # activations of 16K-token answers (these memory settings are reasoned, not measured: no GPU yet).
    "paper": dict(model="Qwen/Qwen3-4B-Instruct-2507", dataset="openr1-math", eval_dataset="math-500", out="runs/paper",
                  fewshot=False, parallel="fsdp", grad_checkpoint=True, p2_micro_batch=1,
                  n1=10000, n2=9000, n_eval=500, max_new_tokens=16384, temperature=0.7, srt_lr=5e-6,
                  srt_epochs=2, srt_batch_size=64, p2_lr=5e-6, p2_steps=400, p2_batch_size=128, p2_warmup=20,
                  teacher_max_len=40960, gen_batch_size=256, eval_samples=8, eval_temperature=0.7, save_every=50,
                  vllm_gpu_memory=0.5, vllm_sleep=True),  # under --rollout-engine vllm: README, vLLM rollouts
}
# The authors' recipe (princeton-pli/Self-Distillation-Zero) at the paper's scale, where it differs from the
# paper: Phase 1 from run_srt_data.sh, self_critique_pipeline.py, prepare_data.py and sft.sh (4 GPUs x 1 row);
# Phase 2 from distill.sh and distillation_math.yaml. The README's deviations table lists each choice.
PRESETS["authors"] = dict(
    PRESETS["paper"], out="runs/authors", phrase_style="qwen", revise_correct=False, temperature=1.0,
    num_init=3, p1_top_p=0.9, p1_stop="<|im_end|>,<|endoftext|>,<|im_start|>,Question:",
    srt_max_tuples=6000, srt_clean=True, srt_variant="two-stage", srt_stage2_size=1000,
    srt_epochs=3, srt_batch_size=4, srt_lr=5e-6, srt_betas="0.9,0.95", srt_weight_decay=1e-4,
    divergence="mixed", beta=0.5, topk=64, teacher_keep_end=True, teacher_max_len=32768,
    p2_lr=5e-6, p2_batch_size=128, p2_warmup=20, p2_steps=1000, p2_weight_decay=0.01, p2_betas="0.9,0.999",
    grad_clip=1.0)


# Defaults a preset takes for one task (applied after the preset, before explicit flags). Code answers are
# longer than arithmetic ones; HumanEval is reported beside the held-out procedural problems (where a
# 135M model can learn), at 256 tokens because its functions are longer.
TASK_PRESETS = {
    ("demo", "code"): dict(out="runs/demo-code", max_new_tokens=96, n_eval=128, eval_extra="humaneval",
                           eval_extra_tokens=256),
    ("smoke", "code"): dict(out="runs/smoke-code", max_new_tokens=32, teacher_max_len=256),
    # The paper's code run: Codeforces-CoTs problems (15K in the paper), held out on LiveCodeBench, HumanEval apart.
    ("paper", "code"): dict(out="runs/paper-code", dataset="codeforces-cots", eval_dataset="livecodebench",
                            eval_extra="humaneval"),
    ("authors", "code"): dict(out="runs/authors-code", dataset="codeforces-cots", eval_dataset="livecodebench",
                              eval_extra="humaneval"),
}


# The TRL names users type, where they mean what ours mean (TRL's GRPOConfig / SFTConfig / ModelConfig):
# each is read as our flag. --learning_rate is special: the default of every learning rate not given.
TRL_ALIASES = {"model_name_or_path": "model", "output_dir": "out", "max_completion_length": "max_new_tokens",
               "num_generations": "grpo_group"}
LEARNING_RATES = ("srt_lr", "p2_lr", "grpo_lr")
DEFAULTS = dataclasses.asdict(Config())
# Settings a resumed run may change: how it runs and what it keeps, not what it computes; and --out, since a run
# folder may move.
RESUME_MAY_CHANGE = ("resume", "out", "threads", "parallel", "report_to", "project", "keep_checkpoint",
                     "overwrite_output_dir", "vllm_gpu_memory", "vllm_sleep")
BETA_DIVERGENCES = ("mixed", "jsd")  # the divergences --beta weighs (distill.py)
LIST_FLAGS = "python train.py --help lists them"
# --help's groups in order, each with its flags; a setting named in none (a newer knob) is listed in the first.
HELP_GROUPS = {
    "run and scale": "preset method model budget out seed resume max_new_tokens temperature gen_batch_size grad_clip "
                     "save_every log_samples precision grad_checkpoint parallel threads report_to project "
                     "rollout_engine vllm_gpu_memory vllm_sleep",
    "data": "task dataset eval_dataset question_field answer_field n1 n2 n_eval data_seed math_max_operand math_ops "
            "reward reward_timeout fewshot enable_thinking",
    "Phase 1: self-revision training (SRT)": "num_init num_revisions revise_correct phrase_style p1_top_p p1_top_k "
        "p1_stop srt_loss srt_variant srt_stage2_size srt_max_tuples srt_clean srt_lr srt_epochs srt_batch_size "
        "srt_warmup srt_weight_decay srt_betas",
    "Phase 2 and teachers: self-distillation": "p2_lr p2_steps p2_batch_size p2_warmup p2_micro_batch p2_top_p "
        "p2_top_k p2_weight_decay p2_betas teacher_context teacher divergence beta topk support tail teacher_keep_end "
        "teacher_max_len loss_chunk",
    "baselines: RFT and GRPO": "rft_samples rft_dedup grpo_group grpo_batch grpo_steps grpo_minibatches grpo_lr "
        "grpo_warmup grpo_std grpo_norm grpo_clip_low grpo_clip_high grpo_dynamic grpo_max_rounds grpo_overlong "
        "grpo_kl baseline_top_p baseline_top_k",
    "evaluation": "eval_samples eval_temperature eval_top_p eval_top_k eval_every eval_revise eval_extra eval_extra_n "
                  "eval_extra_tokens",
    "LoRA": "lora_rank lora_alpha lora_targets",
}


def our_spelling(argv: list[str]) -> tuple[list[str], str | None, dict[str, str]]:
    """argv with snake_case spellings of our flags (--p2_lr, --no_fewshot) and the TRL aliases in our
    kebab-case names; the value of --learning_rate (or None), taken out; each setting's flag and value as typed.
    A setting given twice (the same flag, both spellings, an alias beside its flag, --x and --no-x, --config
    twice) stops here: argparse would keep the last, silently, as in a script's base flags plus an override."""
    fields = {f.name: f for f in dataclasses.fields(Config)}
    out, lr, where, i = [], None, {}, 0
    while i < len(argv):
        arg, i = argv[i], i + 1
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        snake = name.replace("-", "_")
        negated = snake.startswith("no_") and snake[3:] in fields and field_type(fields[snake[3:]]) is bool
        setting = TRL_ALIASES.get(snake, snake[3:] if negated else snake)
        if setting not in fields and setting not in ("config", "learning_rate"):
            out.append(arg)
            continue
        takes_value = setting in ("config", "learning_rate") or field_type(fields[setting]) is not bool
        consumed = takes_value and not eq and i < len(argv)
        if consumed:  # the flag's value: passed on as it is, never read as a flag
            value, i = argv[i], i + 1
        if setting == "learning_rate" and not (eq or consumed):
            raise SystemExit("--learning_rate: expected a value")
        said = f"--{name} {value}".rstrip()
        if setting in where:
            raise SystemExit(f"{where[setting]} and {said}: one setting given twice on the command line; give it "
                             "once (the command line overrides a --config FILE, never itself)")
        where[setting] = said
        if setting == "learning_rate":
            lr = value
            continue
        flag = "--" + ("no-" if negated else "") + setting.replace("_", "-")
        out += [flag + eq + value] if eq else [flag, value] if consumed else [flag]
    return out, lr, where


class _Twice(Exception):
    """A key given twice in one --config file, which PyYAML and json would silently resolve to the last."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in lines:
                    raise _Twice(f"{key_node.value} is given twice (lines {lines[key_node.value]} and "
                                 f"{key_node.start_mark.line + 1})")
                lines[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def _unique_pairs(pairs: list[tuple]) -> dict:
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise _Twice(f"{twice} is given twice")
    return dict(pairs)


def read_config_file(path: str, flag: str = "--config") -> tuple[dict, dict]:
    """--config FILE (YAML, or JSON such as a run's own run_config.json): a mapping of settings to values,
    as Config field names (snake_case or kebab-case), the TRL aliases, or learning_rate. Values are checked
    against each field's type here; the choices and ranges later, by check_config. Returns the values and where
    each was given (its key and value, in the file); a setting given twice, under one key or two, is refused."""
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"{flag} {path}: no such file")
    try:
        text = p.read_text(encoding="utf-8")
        obj = (json.loads(text, object_pairs_hook=_unique_pairs) if p.suffix == ".json"
               else yaml.load(text, Loader=_UniqueKeyLoader))
    except _Twice as e:
        raise SystemExit(f"{flag} {path}: {e}; keep one") from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        kind = "JSON" if p.suffix == ".json" else "YAML"
        raise SystemExit(f"{flag} {path}: not readable as {kind} ({str(e).splitlines()[0]})") from None
    if obj is None:
        return {}, {}
    if not isinstance(obj, dict):
        raise SystemExit(f"{flag} {path}: must hold a mapping of settings to values, not a {type(obj).__name__}")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    names = sorted(fields) + list(TRL_ALIASES) + ["learning_rate"]
    values, where, keys = {}, {}, {}
    for key, value in obj.items():
        name = str(key).lstrip("-").replace("-", "_")
        name = TRL_ALIASES.get(name, name)
        if name in values:
            raise SystemExit(f"{flag} {path}: {keys[name]} and {key} both set {name}; keep one")
        if name == "learning_rate":
            values[name] = _typed(path, key, float, value)
        elif name in fields:
            values[name] = _typed(path, key, field_type(fields[name]), value)
        else:
            near = difflib.get_close_matches(name, names, n=1)
            raise SystemExit(f"{flag} {path}: unknown setting {key!r}"
                             + (f" (did you mean {near[0]}?)" if near else "; `python train.py --help` lists them"))
        where[name], keys[name] = f"{key}: {value} in {path}", key
    return values, where


def _typed(path: str, key, typ: type, value):
    """value as typ, or one clear line: YAML reads `5e-6` as a string (it wants `5.0e-6`), so numbers may be
    strings; a bool is never a number, and a string field takes only a string."""
    if typ is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if typ is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = isinstance(value, typ) and not (typ in (int, float) and isinstance(value, bool))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok or (typ is float and not math.isfinite(value)):
        what = {int: "an integer", float: "a number", bool: "true or false", str: "a string (quote it)"}[typ]
        raise SystemExit(f"--config {path}: {key} = {value!r} is not {what}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage dump
        raise SystemExit(f"{message.removeprefix('argument ')} ({LIST_FLAGS})")


def make_parser(defaults: dict, origin: dict) -> argparse.ArgumentParser:
    """The command line, its flags in HELP_GROUPS; --help shows `defaults`, each marked with where it came from
    (origin: a preset, a task, a --config file, a saved run) when that differs from Config's own."""
    def shown(v):
        return '""' if v == "" else v
    p = _Parser(prog="python train.py", allow_abbrev=False, add_help=False,
                usage="%(prog)s [--task T] [--preset P] [--method M] [--config FILE] [--print-config] [--FLAG ...]",
                description="SD-Zero: self-revision turns binary rewards into dense supervision. Settings: a "
                "preset (with its --task defaults; under --resume --out DIR, that run's), then a --config FILE, then "
                "the flags, each given once. The defaults shown are those of the --preset, --task and --config given. "
                "Every flag also takes its snake_case spelling (--p2_lr), and TRL's names are read as ours: "
                + ", ".join(f"--{a} (--{b.replace('_', '-')})" for a, b in TRL_ALIASES.items())
                + ", --learning_rate (the default of --srt-lr, --p2-lr and --grpo-lr).")
    fields = {f.name: f for f in dataclasses.fields(Config)}
    listed = " ".join(HELP_GROUPS.values()).split()
    for n, (title, names) in enumerate(HELP_GROUPS.items()):
        group = p.add_argument_group(title)
        if n == 0:
            group.add_argument("-h", "--help", action="store_true", default=argparse.SUPPRESS,
                               help="this list, with the defaults of the --preset, --task and --config given")
            group.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                               help="YAML or JSON file of settings (flag names as keys, e.g. p2_lr: 1.0e-5), such as "
                               "a run's own run_config.json: it reproduces that run")
            group.add_argument("--print-config", action="store_true", default=argparse.SUPPRESS,
                               help="print the resolved settings as YAML that --config reads back, and exit")
        for name in names.split() + ([f for f in fields if f not in listed] if n == 0 else []):
            f, value = fields[name], defaults[name]
            changed = name in origin and value != DEFAULTS[name]
            mark = f", from {origin[name]}; otherwise {shown(DEFAULTS[name])}" if changed else ""
            text = f"{f.metadata['help']} (default: {shown(value)}{mark})".replace("%", "%%")
            choices = PRESETS if name == "preset" else CHOICES.get(name)
            kind = (dict(action=argparse.BooleanOptionalAction) if field_type(f) is bool else
                    dict(type=field_type(f), metavar="{" + ",".join(choices) + "}" if choices else None))
            group.add_argument("--" + name.replace("_", "-"), default=argparse.SUPPRESS, help=text, **kind)
    return p


def refuse_unknown(rest: list[str]) -> None:
    """What argparse did not take: one line naming it, with the nearest flag."""
    flag = next((a.partition("=")[0] for a in rest if a.startswith("-")), None)
    if flag is None:
        raise SystemExit(f"{rest[0]}: not a flag, and no flag takes it as its value ({LIST_FLAGS})")
    fields = dataclasses.fields(Config)
    names = (["--" + f.name.replace("_", "-") for f in fields] + ["--config", "--print-config", "--help"]
             + ["--no-" + f.name.replace("_", "-") for f in fields if field_type(f) is bool])
    near = (difflib.get_close_matches("--" + flag.lstrip("-").replace("_", "-"), names, n=1)
            or difflib.get_close_matches(flag, ["--" + a for a in (*TRL_ALIASES, "learning_rate")], n=1))
    raise SystemExit(f"{flag}: no such flag" + (f"; did you mean {near[0]}?" if near else "") + f" ({LIST_FLAGS})")


def preset_base(explicit: dict) -> tuple[dict, dict]:
    """Every setting before the file and the flags: Config's defaults, the preset's, the preset's for the task;
    and where each of the latter came from."""
    preset, task = explicit.get("preset", "demo"), explicit.get("task", "math")
    if preset not in PRESETS:
        raise SystemExit(f"--preset: {preset!r} is not one of {', '.join(PRESETS)}")
    values, origin = dict(DEFAULTS), {}
    for source, settings in ((f"--preset {preset}", PRESETS[preset]),
                             (f"--preset {preset} --task {task}", TASK_PRESETS.get((preset, task), {}))):
        values.update(settings)
        origin.update(dict.fromkeys(settings, source))
    # A preset's extra evaluation (the code demo's 164 HumanEval problems, minutes each pass on a CPU) goes with
    # the preset's own data: with other data it is off unless asked for.
    if "eval_extra" in origin and explicit.get("dataset", values["dataset"]) != values["dataset"]:
        values["eval_extra"] = DEFAULTS["eval_extra"]
    return values, origin


def absolute(name: str, value):
    """A path setting naming a local file or folder, as an absolute path: run_config.json then names the same
    files from any directory (--resume from elsewhere), and two spellings of one path compare equal. Aliases,
    registry names and Hub ids are left alone, as their loaders read them first (sdzero, data, plugin)."""
    if name == "model" and value and value not in sdzero.EMBEDDED and Path(value).is_dir():
        return os.path.abspath(value)
    if name in ("dataset", "eval_dataset", "eval_extra") and Path(value).suffix in (".jsonl", ".parquet") \
            and Path(value).is_file():
        return os.path.abspath(value)
    target, colon, function = value.rpartition(":") if name == "reward" else ("", "", "")
    if (target.endswith(".py") or "/" in target) and os.path.isfile(target):
        return os.path.abspath(target) + colon + function
    return value


def resume_base(explicit: dict, where: dict) -> tuple[dict, dict] | None:
    """--resume: the settings the run in --out started with (its run_config.json; config.json before the
    rename) in the preset's place. A setting given explicitly must agree with them unless it may change on
    resume (paths agree when they name the same file). None when --out holds no run (prepare_out says so)."""
    out = explicit.get("out") or preset_base(explicit)[0]["out"]
    path = next((Path(out) / n for n in (RUN_CONFIG, OLD_RUN_CONFIG) if (Path(out) / n).is_file()), None)
    if path is None:
        return None
    saved = read_config_file(str(path), "--resume")[0]
    # A setting newer than the run counts as its default; --overwrite-output-dir started the run, and says
    # nothing about continuing it.
    base = {**DEFAULTS, **{k: v for k, v in saved.items() if k != "overwrite_output_dir"}, "out": out}
    differ = [n for n, v in explicit.items()
              if n not in RESUME_MAY_CHANGE and absolute(n, v) != absolute(n, base[n])]
    if differ:
        changes = ", ".join(f"{where[n]} (the run's {n}: {base[n]})" for n in differ)
        flags = "".join(dict.fromkeys(" " + where[n] for n in differ if where[n].startswith("--")))
        raise SystemExit(f"--resume: {changes} would change the run in {out}, which resumes with the settings it "
                         f"started with: {' '.join(launcher())} --resume --out {out} (a new run with the change: "
                         f"{' '.join(launcher())} --config {path} --out NEW_DIR{flags})")
    return base, dict.fromkeys(saved, f"the run in {out}")


def check_given(cfg: Config, explicit: dict, where: dict) -> None:
    """What only the settings given (not a preset's or a saved run's) can show: --beta where the divergence
    does not use it, TRL's KL coefficient by its TRL name. A --config file may hold the default, as every
    run_config.json does."""
    if ("beta" in explicit and cfg.divergence not in BETA_DIVERGENCES
            and (where["beta"].startswith("--") or cfg.beta != DEFAULTS["beta"])):
        raise SystemExit(f"{where['beta']}: --divergence {cfg.divergence} does not use it (it weighs "
                         f"--divergence {' and '.join(BETA_DIVERGENCES)}). TRL's --beta, GRPO's KL coefficient, "
                         f"is --grpo-kl here: {' '.join(launcher())} --method grpo --grpo-kl {cfg.beta}")


def config_text(cfg: Config, sources: dict) -> str:
    """--print-config: every setting, as YAML that --config reads back to this Config, each commented with
    its source where it has one (a flag, a file, a preset, a saved run)."""
    lines = ["# python train.py --config THIS_FILE runs these settings"]
    for name, value in dataclasses.asdict(cfg).items():
        line = yaml.safe_dump({name: value}, width=math.inf, allow_unicode=True).rstrip("\n")
        lines.append(line + (f"  # {sources[name]}" if name in sources else ""))
    return "\n".join(lines)


def parse_args(argv=None) -> Config:
    """The Config of a command line: a preset with its task's defaults (with --resume: the run's own settings),
    then a --config FILE, then the flags; --help and --print-config show the result and exit."""
    argv, learning_rate, where = our_spelling(list(sys.argv[1:] if argv is None else argv))
    parsed, rest = make_parser(DEFAULTS, {}).parse_known_args(argv)
    if rest:
        refuse_unknown(rest)
    given = vars(parsed)
    show_help, show_config = given.pop("help", False), given.pop("print_config", False)
    path = given.pop("config", None)
    file_values, file_where = read_config_file(path) if path else ({}, {})
    if learning_rate is not None:  # TRL's --learning_rate: every learning rate not set explicitly
        try:
            given["learning_rate"] = float(learning_rate)
        except ValueError:
            raise SystemExit(f"--learning_rate: {learning_rate!r} is not a number") from None
    # learning_rate, on the command line or in the file: the default of each learning rate the same source
    # does not set; then the command line overrides the file.
    for source, places in ((given, where), (file_values, file_where)):
        lr = source.pop("learning_rate", None)
        for name in LEARNING_RATES if lr is not None else ():
            if name not in source:
                source[name], places[name] = lr, places["learning_rate"]
    explicit, where = {**file_values, **given}, {**file_where, **where}
    base, origin = (resume_base(explicit, where) if explicit.get("resume") else None) or preset_base(explicit)
    if show_help:
        make_parser(base, origin).print_help()
        raise SystemExit(0)
    values = {**base, **explicit}  # explicit settings override the preset (or the saved run)
    # --method opsd / sdpo are Phase 2 from the base model with their teacher context, and that context with
    # --method sdzero or p2only is that method: one name per run in results.json.
    method, context = values["method"], values["teacher_context"]
    if method in teacher_context.METHOD_CONTEXT and "teacher_context" not in explicit:
        values["teacher_context"] = teacher_context.METHOD_CONTEXT[method]
    elif method in ("sdzero", "p2only") and context != "revise":
        values["method"] = teacher_context.CONTEXT_METHOD.get(context, method)
    cfg = Config(**{name: absolute(name, value) for name, value in values.items()})
    check_given(cfg, explicit, where)
    check_config(cfg)
    if show_config:
        print(config_text(cfg, {**{n: o for n, o in origin.items() if base[n] != DEFAULTS[n]},
                                **dict.fromkeys(file_values, f"--config {path}"), **{n: where[n] for n in given}}))
        raise SystemExit(0)
    if cfg.eval_extra and os.environ.get("RANK", "0") == "0":  # what it costs, and how to turn it off; once
        size = (f"{cfg.eval_extra_n} questions" if cfg.eval_extra_n else
                "all 164 problems" if cfg.eval_extra == "humaneval" else "all its questions")
        print(f"[eval-extra] {cfg.eval_extra}: {size}, {cfg.eval_samples} answer(s) each of up to "
              f"{cfg.eval_extra_tokens or cfg.max_new_tokens} new tokens, evaluated before and after training and "
              f"reported apart (time on top of the run's); --eval-extra \"\" turns it off, --eval-extra-n N takes N",
              flush=True)
    return cfg


# Flags that take one of a list of values, and the module that owns each list.
CHOICES = {
    "task": ("math", "code"), "method": tuple(METHOD_STAGES), "precision": ("auto", "bf16", "fp32"),
    "parallel": parallel.STRATEGIES, "grpo_norm": baselines.NORMS, "srt_loss": ("both", "gen", "rev"),
    "divergence": distill.DIVERGENCES, "support": distill.SUPPORTS, "phrase_style": tuple(revise.CONTROL_PHRASES),
    "srt_variant": ("joint", "two-stage"), "teacher_context": teacher_context.TEACHER_CONTEXTS,
    "rollout_engine": ("own", "vllm")}
# Counts that must be at least 1.
POSITIVE = ("rft_samples", "grpo_group", "grpo_batch", "grpo_steps", "grpo_minibatches", "grpo_max_rounds", "n1",
            "n2", "n_eval", "max_new_tokens", "gen_batch_size", "srt_batch_size", "p2_batch_size", "loss_chunk",
            "eval_samples")


def check_config(cfg: Config) -> None:
    def bad(flag, why):
        raise SystemExit(f"{flag}: {why}")
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            bad("--" + name.replace("_", "-"), f"{getattr(cfg, name)!r} is not one of {', '.join(allowed)}")
    for name in POSITIVE:
        if getattr(cfg, name) < 1:
            bad("--" + name.replace("_", "-"), "must be at least 1")
    if cfg.method == "grpo" and cfg.grpo_group < 2:
        bad("--grpo-group", "a group needs at least 2 samples for r - mean(r) to be anything but 0")
    if not (0 <= cfg.grpo_clip_low < 1 and cfg.grpo_clip_high >= 0):
        bad("--grpo-clip-low" if not 0 <= cfg.grpo_clip_low < 1 else "--grpo-clip-high",
            "clip ranges are 0 <= low < 1 and high >= 0")
    if not 0 <= cfg.grpo_overlong <= cfg.max_new_tokens:
        bad("--grpo-overlong", f"must lie in 0..--max-new-tokens ({cfg.max_new_tokens})")
    want = teacher_context.METHOD_CONTEXT.get(cfg.method, "revise")
    if cfg.teacher_context != want and cfg.method in ("opsd", "sdpo", "sdzero", "p2only"):
        named = teacher_context.CONTEXT_METHOD.get(cfg.teacher_context, "sdzero")
        bad("--teacher-context", f"--method {cfg.method} means --teacher-context {want}; {cfg.teacher_context} is "
            f"--method {named}")
    if cfg.teacher_context != "revise" and cfg.method not in teacher_context.METHOD_CONTEXT:
        bad("--teacher-context", f"--method {cfg.method} has no Phase 2 teacher")
    if cfg.lora_rank < 0 or cfg.lora_alpha < 0:
        bad("--lora-rank" if cfg.lora_rank < 0 else "--lora-alpha", "must be 0 (off / the default) or more")
    if cfg.lora_rank and cfg.parallel == "fsdp":
        bad("--lora-rank", "LoRA runs on one process or under DDP (--parallel ddp); with an adapter the frozen "
            "base weights fit one GPU, which is what FSDP2 exists to avoid (lora.py)")
    check_budget(cfg)
    parse_teacher(cfg.teacher)
    tracking.check_installed(tracking.parse_report_to(cfg.report_to))  # on every rank, before the model loads
    if not cfg.temperature > 0:  # GRPO divides logits by it; Phase 1's revisions of one y_init would be copies
        bad("--temperature", f"{cfg.temperature} is not > 0: training rollouts are sampled (greedy decoding is "
            "for evaluation: --eval-temperature 0)")
    if cfg.srt_variant == "two-stage" and cfg.srt_loss != "both":
        bad("--srt-loss", "chooses the terms of --srt-variant joint; two-stage trains L_gen, then L_rev")
    if cfg.srt_stage2_size < 1:
        bad("--srt-stage2-size", "the revision stage needs at least one tuple")
    if cfg.srt_max_tuples < 0:
        bad("--srt-max-tuples", "0 (no cap) or more")
    if cfg.num_init < 1:
        bad("--num-init", "at least one y_init per question")
    for group in ("srt", "p2"):
        try:
            parse_betas(getattr(cfg, f"{group}_betas"))
        except ValueError as e:
            bad(f"--{group}-betas", str(e))
        if getattr(cfg, f"{group}_weight_decay") < 0:
            bad(f"--{group}-weight-decay", "must be 0 or more")
    for stage in ("p1", "p2", "baseline", "eval"):
        if not 0 < getattr(cfg, f"{stage}_top_p") <= 1:
            bad(f"--{stage}-top-p", "top-p lies in (0, 1] (1 = off)")
        if getattr(cfg, f"{stage}_top_k") < 0:
            bad(f"--{stage}-top-k", "top-k is 0 (off) or more")
    if cfg.eval_temperature <= 0 and cfg.eval_samples != 1:
        bad("--eval-samples", "greedy evaluation (--eval-temperature 0) gives one answer per question; use 1")
    if not cfg.reward_timeout > 0:
        bad("--reward-timeout", "must be > 0 seconds")
    if cfg.eval_every < 0:
        bad("--eval-every", "must be 0 (between stages only) or a number of optimizer steps")
    if cfg.p2_micro_batch < 0:
        bad("--p2-micro-batch", "must be 0 (all rows at once) or more")
    if cfg.eval_extra_n < 0 or cfg.eval_extra_tokens < 0:
        bad("--eval-extra-n" if cfg.eval_extra_n < 0 else "--eval-extra-tokens", "must be 0 (all / default) or more")
    if cfg.topk < 0:
        bad("--topk", "must be 0 (full vocabulary) or positive")
    if not 0 <= cfg.beta <= 1:
        bad("--beta", "must lie in [0, 1]")
    if not 0 < cfg.vllm_gpu_memory <= 1:
        bad("--vllm-gpu-memory", f"{cfg.vllm_gpu_memory} is not a share of GPU memory in (0, 1]")
    if not 0 <= cfg.srt_warmup <= 1:  # a share, as the paper gives it; the other warmups count steps
        bad("--srt-warmup", f"{cfg.srt_warmup} is not a share of Phase 1's optimizer steps in [0, 1] (0.05: the "
            "first 5%); --p2-warmup and --grpo-warmup count steps")
    if cfg.p2_warmup < 0 or cfg.grpo_warmup < 0:
        bad("--p2-warmup" if cfg.p2_warmup < 0 else "--grpo-warmup", "a number of optimizer steps, 0 or more")


def check_budget(cfg: Config) -> None:
    """--budget must at least pay for the smallest unit of work of the method; say what that unit costs."""
    if cfg.budget < 0:
        raise SystemExit("--budget: must be 0 (no budget) or a number of generations")
    if not cfg.budget or cfg.method == "base":
        return
    per_question = cfg.num_init * (1 + cfg.num_revisions)  # the y_init and their revisions
    one_step = (cfg.p2_batch_size, f"one Phase 2 step (--p2-batch-size {cfg.p2_batch_size})")
    need = {"p2only": one_step, "opsd": one_step, "sdpo": one_step,
            "srt": (per_question, f"one Phase 1 question (--num-init x (1 + --num-revisions) = {per_question})"),
            "rft": (cfg.rft_samples, f"one question's --rft-samples ({cfg.rft_samples})"),
            "grpo": (cfg.grpo_group * cfg.grpo_batch,
                     f"one rollout step (--grpo-group x --grpo-batch = {cfg.grpo_group * cfg.grpo_batch})")}
    if cfg.method == "sdzero":
        p1 = cfg.n1 * (per_question if cfg.revise_correct else cfg.num_init)  # else at least the y_init
        what = (f"Phase 1 ({'' if cfg.revise_correct else 'at least '}--n1 x --num-init x (1 + --num-revisions) "
                f"= {p1}) "
                f"and one Phase 2 step (--p2-batch-size {cfg.p2_batch_size})")
        need["sdzero"] = (p1 + cfg.p2_batch_size, what)
    least, what = need[cfg.method]
    if cfg.budget < least:
        raise SystemExit(f"--budget {cfg.budget}: too small for --method {cfg.method}, which needs {least} "
                         f"generations for {what}")
