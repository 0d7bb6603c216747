"""SD-Zero: Self-Distillation Zero (arXiv:2604.12002), the training script and the paper companion.

    python train.py --task math                 # the demo: embedded SmolLM2-135M, embedded arithmetic, CPU
    python train.py --task math --preset smoke  # a micro random-shaped model, seconds (what tests drive)
    python train.py --task code                 # the code demo: embedded function-writing problems + HumanEval

The algorithm, step by step (sdzero-spec.md), and where each step lives:
  0. Data: question/answer pairs (x, a) split into disjoint N1, N2 and held-out sets .... tasks.load_task
     Reward r(y, a) in {0, 1}: the final answer (math) or the program's tests (code) ....... verify.rewards
  1. Phase 1, self-revision training (SRT) ..................................................... phase1_sample, phase1_train
     1a. one y_init ~ pi(.|x) per x in N1, r = r(y_init, a) ...................................... sdzero.generate
     1b. 3 revisions per y_init from chat(x) + y_init + "\\n\\n" + P_r + "\\n\\n" ................... revise.reviser_context_ids
     1c. keep revisions that verify: D_rev = {(x, y_init, P_r, y_rev)} ........................... phase1_sample
     1d. train on L_SRT = L_rev (Eq. 1) + L_gen (Eq. 2), one optimizer ........................... srt_loss
  2. Phase 2, on-policy self-distillation (student from SRT, teacher = frozen SRT copy) ......... phase2_train
     2a. the student samples ONE y per x in N2; r = r(y, a); P_r by r ........................... phase2_step
     2b. teacher input chat(x) + y' + ids(phrase) + y, token ids only ........................... revise.teacher_input_ids
     2c. Eq. 4: mean over response tokens of KL(pi_S(.|x, y<t) || pi_T(.|x, y, P_r, y<t)),
         reverse KL over the teacher's top-64, teacher a stop-gradient target ................... distill.chunked_distill_loss
     2d. optional teacher refresh: --teacher sync:N (hard copy) or ema:R ......................... update_teacher
  3. Held-out evaluation before Phase 1, after Phase 1 and after Phase 2: avg@k, pass@k ........ evaluate
  Baselines in the same loop, sampler, verifier, evaluation and --budget (generations) accounting:
     --method rft (k samples per question, SFT on the verified-correct ones) ....... rft_sample, rft_train
     --method grpo (groups of n, clipped policy gradient, DAPO choices as flags) .... grpo_train
     --method srt (Phase 1 only), p2only (Phase 2 without SRT, Table 12), base (evaluation only)
  Scale: `torchrun --nproc_per_node N train.py ...` shards every step's rollouts and losses across N
  processes with DDP or FSDP2 (--parallel; parallel.py); batch sizes stay global, so N does not change the run.

Deliberate deviations from the paper (each a flag where it matters):
  - Scale: the demo uses a 135M model, two-operand arithmetic, 48 new tokens and ~300 training
    questions instead of Qwen3-4B, OpenR1-Math and 16K tokens; the `paper` preset holds the paper's values.
  - Learning rates: the demo uses --srt-lr 3e-5 and --p2-lr 5e-6 (paper 5e-6 for both); a 135M model on a
    few hundred examples needs a larger SRT step to learn the revision format at all.
  - Eq. 1 and Eq. 2 score the same token sequence with different loss masks; both come from one forward
    pass (revise.SRTExample). The value of L_rev + L_gen is the paper's.
  - Phase 2 learning-rate schedule: warmup then constant (the authors' code); Phase 1 uses cosine (paper).
  - The authors' code variants are flags: --phrase-style qwen|olmo, --no-revise-correct, --divergence mixed,
    --temperature 1.0, --num-init 3, --p1-top-p 0.9, --p1-stop, --srt-betas/--p2-betas and the weight
    decays, --teacher-keep-end, --srt-max-tuples/--srt-clean, --srt-variant two-stage; --preset authors
    sets them all (README, "Deviations").
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import baselines
import distill
import parallel
import revise
import sdzero
import tasks
import verify

REPO = Path(__file__).resolve().parent


def knob(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    # what to run
    task: str = knob("math", "task: math (final answer in \\boxed{}, sympy) | code (one Python block, sandboxed tests)")
    preset: str = knob("demo", "demo (embedded SmolLM2, CPU) | smoke (micro model, seconds) | paper (Qwen3-4B, GPUs) "
                       "| authors (the paper's scale, the authors' code's recipe)")
    method: str = knob("sdzero", "sdzero (Phase 1 + 2) | srt (stop after Phase 1) | p2only (Phase 2 from the base "
                       "model, no SRT; paper Table 12) | rft | grpo (the paper's baselines, baselines.py) | base "
                       "(evaluate only)")
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
    fewshot: bool = knob(True, "worked example turns before each question, one showing a revision (tasks.FEWSHOT)")
    # sampling (sdzero-spec.md, Phase 1 step 1 and Phase 2)
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
    gen_batch_size: int = knob(64, "prompts per generation batch (memory bound)")
    num_init: int = knob(1, "y_init sampled per Phase 1 question (paper: 1; authors' run_srt_data.sh: 3)")
    num_revisions: int = knob(3, "revisions sampled per y_init in Phase 1 (paper: 3)")
    revise_correct: bool = knob(True, "also revise correct y_init with the r=1 phrase (paper: yes; authors' code: no)")
    phrase_style: str = knob("paper", "control phrases: paper | qwen | olmo (sdzero-spec.md)")
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
    srt_warmup: float = knob(0.05, "Phase 1 warmup share of steps, then cosine (paper ~5%)")
    # Phase 2: on-policy self-distillation
    p2_lr: float = knob(5e-6, "Phase 2 learning rate (paper 5e-6)")
    p2_steps: int = knob(30, "Phase 2 optimizer steps")
    p2_batch_size: int = knob(8, "prompts per Phase 2 step, one sample each (authors' code: 128)")
    p2_warmup: int = knob(0, "Phase 2 warmup steps, then constant lr (authors' code: 20)")
    p2_micro_batch: int = knob(0, "Phase 2 rows per forward/backward on each process, sorted by length so "
                               "micro-batches pad little; gradients accumulate (0 = all rows at once)")
    teacher: str = knob("frozen", "frozen (paper default) | sync:N (copy student->teacher every N steps) | ema:R")
    divergence: str = knob("reverse", "reverse KL(S||T) (paper Eq. 4) | forward | mixed (authors' code) | jsd")
    topk: int = knob(64, "support: the top-k tokens, renormalised (paper: 64); 0 = full vocabulary")
    support: str = knob("teacher", "whose top-k: teacher (paper) | student")
    tail: bool = knob(False, "add a tail bucket with the remaining mass instead of renormalising")
    beta: float = knob(0.5, "mixing weight of --divergence mixed and jsd")
    teacher_keep_end: bool = knob(False, "the teacher's first copy of y keeps its end-of-turn token (authors' "
                                  "code) instead of y' without it (paper, sdzero-spec.md Phase 2 step 3)")
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
    grpo_warmup: int = knob(0, "GRPO warmup optimizer steps, then constant lr")
    grpo_std: bool = knob(True, "GRPO: divide the advantage by the group's std (--no-grpo-std: Dr. GRPO)")
    grpo_norm: str = knob("token", "GRPO loss normalisation: token (DAPO) | sequence (GRPO)")
    grpo_clip_low: float = knob(0.2, "GRPO: lower clip, rho >= 1 - this")
    grpo_clip_high: float = knob(0.28, "GRPO: upper clip, rho <= 1 + this (DAPO clip-higher; GRPO: 0.2)")
    grpo_dynamic: bool = knob(True, "GRPO: DAPO dynamic sampling, replace groups whose rewards are all equal")
    grpo_max_rounds: int = knob(3, "GRPO dynamic sampling: generation rounds per step at most")
    grpo_overlong: int = knob(0, "GRPO: DAPO overlong penalty over the last N tokens before the cap (0 = off)")
    grpo_kl: float = knob(0.0, "GRPO: KL(pi || initial model) coefficient (GRPO 0.04; DAPO 0 = off)")
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
    eval_revise: bool = knob(False, "at each evaluation also revise every held-out answer (greedy, P_r by its "
                             "reward): the reviser's correction rate (r=0 -> right) and keep rate (r=1 -> right)")
    eval_extra: str = knob("", "also evaluate this dataset before training and at the end, reported apart "
                           "(code demo: humaneval)")
    eval_extra_n: int = knob(0, "questions of --eval-extra (0 = all)")
    eval_extra_tokens: int = knob(0, "new tokens per --eval-extra answer (0 = --max-new-tokens)")
    # bookkeeping
    save_every: int = knob(0, "checkpoint every N optimizer steps inside a phase (0: only between stages)")
    resume: bool = knob(False, "continue the run in --out from its checkpoint")
    log_samples: int = knob(2, "samples per step written to samples.jsonl")
    wandb: str = knob("", "log to this Weights & Biases project (needs `pip install wandb`)")
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
    # Qwen3-4B-Instruct-2507 on 8 GPUs (sdzero-spec.md hyperparameters); needs the Hub. Under torchrun, FSDP2,
    # activation checkpointing and one answer per Phase 2 forward: 4B fp32 weights + AdamW are 64 GB before the
    # activations of 16K-token answers (these memory settings are reasoned, not measured: no GPU yet).
    "paper": dict(model="Qwen/Qwen3-4B-Instruct-2507", dataset="openr1-math", eval_dataset="math-500", out="runs/paper",
                  fewshot=False, parallel="fsdp", grad_checkpoint=True, p2_micro_batch=1,
                  n1=10000, n2=9000, n_eval=500, max_new_tokens=16384, temperature=0.7, srt_lr=5e-6,
                  srt_epochs=2, srt_batch_size=64, p2_lr=5e-6, p2_steps=400, p2_batch_size=128, p2_warmup=20,
                  teacher_max_len=40960, gen_batch_size=256, eval_samples=8, eval_temperature=0.7, save_every=50),
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


def parse_args(argv=None) -> Config:
    p = argparse.ArgumentParser(description="SD-Zero: self-revision turns binary rewards into dense supervision. "
                                "Presets set defaults; explicit flags override them.")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{f.metadata['help']} (default: {f.default})".replace("%", "%%"))
        else:
            typ = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            choices = list(PRESETS) if f.name == "preset" else None
            p.add_argument(flag, type=typ, default=argparse.SUPPRESS, choices=choices,
                           help=f"{f.metadata['help']} (default: {f.default})".replace("%", "%%"))
    given = vars(p.parse_args(argv))
    preset = given.get("preset", "demo")
    values = dict(PRESETS[preset])
    values.update(TASK_PRESETS.get((preset, given.get("task", "math")), {}))
    values.update(given)  # explicit flags override the preset
    cfg = Config(**values)
    check_config(cfg)
    return cfg


def check_config(cfg: Config) -> None:
    def bad(flag, why):
        raise SystemExit(f"{flag}: {why}")
    if cfg.task not in ("math", "code"):
        bad("--task", f"{cfg.task!r} is not one of math, code")
    if cfg.method not in METHOD_STAGES:
        bad("--method", f"{cfg.method!r} is not one of {', '.join(METHOD_STAGES)}")
    if cfg.precision not in ("auto", "bf16", "fp32"):
        bad("--precision", f"{cfg.precision!r} is not one of auto, bf16, fp32")
    if cfg.parallel not in ("auto", "ddp", "fsdp"):
        bad("--parallel", f"{cfg.parallel!r} is not one of auto, ddp, fsdp")
    if cfg.grpo_norm not in ("token", "sequence"):
        bad("--grpo-norm", f"{cfg.grpo_norm!r} is not one of token, sequence")
    for name in ("rft_samples", "grpo_group", "grpo_batch", "grpo_steps", "grpo_minibatches", "grpo_max_rounds"):
        if getattr(cfg, name) < 1:
            bad("--" + name.replace("_", "-"), "must be at least 1")
    if cfg.method == "grpo" and cfg.grpo_group < 2:
        bad("--grpo-group", "a group needs at least 2 samples for r - mean(r) to be anything but 0")
    if not (0 <= cfg.grpo_clip_low < 1 and cfg.grpo_clip_high >= 0):
        bad("--grpo-clip-low" if not 0 <= cfg.grpo_clip_low < 1 else "--grpo-clip-high",
            "clip ranges are 0 <= low < 1 and high >= 0")
    if not 0 <= cfg.grpo_overlong <= cfg.max_new_tokens:
        bad("--grpo-overlong", f"must lie in 0..--max-new-tokens ({cfg.max_new_tokens})")
    check_budget(cfg)
    if cfg.srt_loss not in ("both", "gen", "rev"):
        bad("--srt-loss", f"{cfg.srt_loss!r} is not one of both, gen, rev")
    if cfg.divergence not in ("reverse", "forward", "mixed", "jsd"):
        bad("--divergence", f"{cfg.divergence!r} is not one of reverse, forward, mixed, jsd")
    if cfg.support not in ("teacher", "student"):
        bad("--support", f"{cfg.support!r} is not one of teacher, student")
    if cfg.phrase_style not in revise.CONTROL_PHRASES:
        bad("--phrase-style", f"{cfg.phrase_style!r} is not one of {', '.join(revise.CONTROL_PHRASES)}")
    parse_teacher(cfg.teacher)
    if not cfg.temperature > 0:  # GRPO divides logits by it; Phase 1's revisions of one y_init would be copies
        bad("--temperature", f"{cfg.temperature} is not > 0: training rollouts are sampled (greedy decoding is "
            "for evaluation: --eval-temperature 0)")
    if cfg.srt_variant not in ("joint", "two-stage"):
        bad("--srt-variant", f"{cfg.srt_variant!r} is not one of joint, two-stage")
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
    if cfg.p2_micro_batch < 0:
        bad("--p2-micro-batch", "must be 0 (all rows at once) or more")
    for name in ("n1", "n2", "n_eval", "max_new_tokens", "gen_batch_size", "srt_batch_size", "p2_batch_size",
                 "loss_chunk", "eval_samples"):
        if getattr(cfg, name) < 1:
            bad("--" + name.replace("_", "-"), "must be at least 1")
    if cfg.eval_extra_n < 0 or cfg.eval_extra_tokens < 0:
        bad("--eval-extra-n" if cfg.eval_extra_n < 0 else "--eval-extra-tokens", "must be 0 (all / default) or more")
    if cfg.topk < 0:
        bad("--topk", "must be 0 (full vocabulary) or positive")
    if not 0 <= cfg.beta <= 1:
        bad("--beta", "must lie in [0, 1]")


def check_budget(cfg: Config) -> None:
    """--budget must at least pay for the smallest unit of work of the method; say what that unit costs."""
    if cfg.budget < 0:
        raise SystemExit("--budget: must be 0 (no budget) or a number of generations")
    if not cfg.budget or cfg.method == "base":
        return
    per_question = cfg.num_init * (1 + cfg.num_revisions)  # the y_init and their revisions
    need = {"p2only": (cfg.p2_batch_size, f"one Phase 2 step (--p2-batch-size {cfg.p2_batch_size})"),
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


def parse_teacher(spec: str) -> tuple[str, float]:
    kind, _, arg = spec.partition(":")
    try:
        if kind == "frozen" and not arg:
            return "frozen", 0.0
        if kind == "sync" and int(arg) >= 1:
            return "sync", int(arg)
        if kind == "ema" and 0 < float(arg) <= 1:
            return "ema", float(arg)
    except ValueError:
        pass
    raise SystemExit(f"--teacher {spec!r}: expected frozen, sync:N (N >= 1 steps) or ema:R (0 < R <= 1)")


# ---------------------------------------------------------------------------------------------- utilities

def derive_seed(*keys) -> int:
    """A 63-bit seed from (run seed, stage, step, index): rollouts do not depend on batching or resumes."""
    return int.from_bytes(hashlib.sha256(repr(keys).encode()).digest()[:8], "little") >> 1


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj, path: Path) -> None:
    """Write to a temporary file, fsync, rename: a crash leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """The same for a text file (config.json, results.json): a reader sees the old file or the whole new one."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_path(path: Path) -> None:
    """fsync one file (or folder) by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (POSIX; a no-op where directories cannot be opened, as on Windows)."""
    try:
        fsync_path(path)
    except OSError:
        pass


def atomic_replace_dir(tmp: Path, dst: Path) -> None:
    """Put the finished folder tmp at dst with no moment where dst is missing: on Linux one renameat2 swaps
    the two (RENAME_EXCHANGE) and the old one is deleted after; elsewhere the old one is renamed aside first
    (a short window). Files are fsynced before the swap, so a crash leaves the old folder or the new one."""
    for f in tmp.rglob("*"):
        if f.is_file():
            fsync_path(f)
    if not dst.exists():
        os.replace(tmp, dst)
    elif not _rename_exchange(tmp, dst):
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(tmp, dst)
        tmp = old
    fsync_dir(dst.parent)
    shutil.rmtree(tmp, ignore_errors=True)  # after an exchange tmp holds the old folder


def _rename_exchange(a: Path, b: Path) -> bool:
    """renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE); False where the OS or libc lacks it."""
    if sys.platform != "linux":
        return False
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def split_stops(tok, spec: str) -> tuple[set[int], list[str] | None]:
    """--p1-stop "a,b,...": the ids of those that are special tokens (matched as tokens: decoding drops them
    from the text) and the rest as text stop strings."""
    added = tok.get_added_vocab()
    stops = [x for x in spec.split(",") if x]
    return {added[x] for x in stops if x in added}, [x for x in stops if x not in added] or None


def loggable(answer):
    """What samples.jsonl shows of a gold answer: the string (math), or a code task without its hidden tests."""
    if isinstance(answer, dict):
        return {"kind": answer.get("kind"), "entry_point": answer.get("entry_point"),
                "tests": len(answer.get("tests") or ())}
    return answer


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


class RunLog:
    """metrics.jsonl (one object per step), samples.jsonl, optional wandb, one printed line per step.
    Under torchrun only rank 0 logs (main=False: every call is a no-op)."""

    def __init__(self, cfg: Config, out: Path, main: bool = True):
        self.main = main
        self.wandb = None
        if not main:
            return
        self.metrics = open(out / "metrics.jsonl", "a")
        self.samples = open(out / "samples.jsonl", "a")
        if cfg.wandb:
            try:
                import wandb
            except ImportError:
                raise SystemExit("--wandb: the wandb package is not installed (`pip install wandb`)") from None
            self.wandb = wandb.init(project=cfg.wandb, config=dataclasses.asdict(cfg), name=out.name)

    def step(self, row: dict, line: str | None = None) -> None:
        if not self.main:
            return
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        if self.wandb is not None:
            self.wandb.log({f"{row['phase']}/{k}": v for k, v in row.items() if isinstance(v, (int, float))})
        if line:
            tqdm.write(line)

    def sample(self, row: dict) -> None:
        if not self.main:
            return
        self.samples.write(json.dumps(row) + "\n")
        self.samples.flush()

    def sizes(self) -> dict | None:
        """Bytes written so far, stored in each checkpoint, so a resume can drop what came after it."""
        return {"metrics": self.metrics.tell(), "samples": self.samples.tell()} if self.main else None

    def truncate(self, sizes: dict | None) -> None:
        """Back to what the checkpoint covers: a resumed run's logs then equal an uninterrupted run's (the
        files are in append mode, so the next row goes at the new end)."""
        if self.main and sizes:
            for f, n in ((self.metrics, sizes["metrics"]), (self.samples, sizes["samples"])):
                f.flush()
                os.truncate(f.name, n)
                f.seek(0, os.SEEK_END)  # tell() must see the new end


# ---------------------------------------------------------------------------------------------- evaluation

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate(run: "Run", name: str) -> dict:
    """avg@k and pass@k on the held-out questions, k = --eval-samples; --eval-extra at the first and last
    evaluation, reported under "extra"."""
    cfg = run.cfg
    result = evaluate_rows(run, name, run.data["eval"], cfg.max_new_tokens, "")
    if cfg.eval_extra and name in ("eval_base", final_stage(cfg.method)):
        result["extra"] = evaluate_rows(run, name, run.extra_eval_rows(), cfg.eval_extra_tokens or cfg.max_new_tokens,
                                        cfg.eval_extra)
    return result


def evaluate_rows(run: "Run", name: str, rows: list, max_new_tokens: int, label: str) -> dict:
    cfg = run.cfg
    k = cfg.eval_samples
    prompts = [run.prompt_ids(ex) for ex in rows for _ in range(k)]
    seeds = [derive_seed(cfg.seed, "eval", name, label, i) if label else derive_seed(cfg.seed, "eval", name, i)
             for i in range(len(prompts))]
    t0 = time.time()
    rollouts, correct = run.rollouts(prompts, seeds, [rows[i // k].answer for i in range(len(prompts))],
                                     max_new_tokens, "eval", f"eval {name} {label}".rstrip())
    per_q = [sum(correct[j * k:(j + 1) * k]) for j in range(len(rows))]
    result = {
        "avg@k": sum(correct) / len(correct), "pass@k": sum(pass_at_k(k, c, k) for c in per_q) / len(rows),
        "k": k, "n_questions": len(rows),
        "response_len": sum(len(r.response_ids) for r in rollouts) / len(rollouts),
        "truncated_share": sum(r.truncated for r in rollouts) / len(rollouts),
        "seconds": time.time() - t0,
    }
    if label:
        result["dataset"] = label
    elif cfg.eval_revise:
        result["revise"] = evaluate_reviser(run, name, rows, rollouts, correct, max_new_tokens)
    run.log.step({"phase": "eval", "stage": name, **result},
                 f"[eval {name}{' ' + label if label else ''}] avg@{k} {result['avg@k']:.3f}  "
                 f"pass@{k} {result['pass@k']:.3f}  len {result['response_len']:.1f}  ({result['seconds']:.0f}s)")
    for i in range(min(cfg.log_samples, len(rollouts))):
        run.log.sample({"phase": "eval", "stage": name, **({"dataset": label} if label else {}),
                        "question": rows[i // k].question, "answer": loggable(rows[i // k].answer),
                        "y": rollouts[i].text, "r": correct[i]})
    return result


def evaluate_reviser(run: "Run", name: str, rows: list, rollouts: list, correct: list[int],
                     max_new_tokens: int) -> dict:
    """The reviser on the held-out answers: chat(x) + y + P_r, greedy. How often it turns a wrong answer
    right (what Phase 1 must teach and Phase 2 distils) and keeps a right one right."""
    cfg, k = run.cfg, run.cfg.eval_samples
    contexts = [revise.reviser_context_ids(run.tok, y.prompt_ids, y.response_ids, r, cfg.phrase_style, run.end_ids)
                for y, r in zip(rollouts, correct)]
    _, fixed = run.rollouts(contexts, [derive_seed(cfg.seed, "eval_revise", name, i) for i in range(len(contexts))],
                            [rows[i // k].answer for i in range(len(contexts))], max_new_tokens, "eval",
                            f"eval {name} reviser")
    n0, n1 = correct.count(0), correct.count(1)
    return {"n_r0": n0, "n_r1": n1,
            "r0_corrected": sum(f for f, r in zip(fixed, correct) if r == 0) / n0 if n0 else None,
            "r1_kept": sum(f for f, r in zip(fixed, correct) if r == 1) / n1 if n1 else None,
            "accuracy_after_revision": sum(fixed) / len(fixed)}


# ---------------------------------------------------------------------------------------------- the run

class Run:
    """Everything one training run holds: config, data, model, logs and the resumable state.

    Under torchrun every rank holds a Run; `dist` says which rank it is. `model` is the bare Hugging Face
    model (sampling uses it), `policy` the same model wrapped for training (parallel.wrap: plain, DDP or
    FSDP2); every loss runs through `policy(fn, ...)`.
    """

    def __init__(self, cfg: Config, d: parallel.Dist | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dist = d or parallel.Dist(device=sdzero.pick_device())
        self.device = self.dist.device
        try:
            self.data = tasks.load_task(cfg.task, cfg.dataset, cfg.n1, cfg.n2, cfg.n_eval, seed=cfg.data_seed,
                                        question_field=cfg.question_field, answer_field=cfg.answer_field,
                                        math_max_operand=cfg.math_max_operand, math_ops=cfg.math_ops,
                                        eval_dataset=cfg.eval_dataset or None)
        except ValueError as e:  # bad data is the user's input: one clear line, no traceback
            raise SystemExit(str(e)) from None
        self._extra_rows = None
        self.model, self.tok = sdzero.load_model(cfg.model, device=self.device)
        self.end_ids = sdzero.end_of_turn_ids(self.tok, self.model)  # what generation stops on, stripped from y'
        # --p1-stop: the special tokens among them stop as ids, the rest as text; either is cut and replaced by
        # the end of turn (the tokenizer's eos when it ends turns).
        special, self.p1_stop_strings = split_stops(self.tok, cfg.p1_stop)
        self.p1_stop_ids = special - set(self.end_ids)
        self.eot_id = self.tok.eos_token_id if self.tok.eos_token_id in self.end_ids else self.end_ids[0]
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast = torch.bfloat16 if bf16 else None
        if cfg.grad_checkpoint:
            sdzero.enable_activation_checkpointing(self.model)
        self.policy = parallel.wrap(self.model, self.dist, autocast=self.autocast)
        self.teacher = self.teacher_policy = None  # Phase 2's teacher, or GRPO's reference model
        self.sampler = None  # the bf16 copy rollouts read (sampling_model)
        self.log = RunLog(cfg, self.out, main=self.dist.main)
        # Skipped rows are counted, never silently given a zero reward: they go to metrics.jsonl.
        skipped, notes = self.data.skipped, self.data.notes
        sizes = {k: len(self.data[k]) for k in ("eval", "n1", "n2")}
        line = (f"[data] held-out {sizes['eval']}, N1 {sizes['n1']}, N2 {sizes['n2']}"
                + (f"; skipped {sum(skipped.values())} rows: {skipped}" if skipped else ""))
        if cfg.resume:  # the row is in metrics.jsonl already, before the checkpoint
            tqdm.write(line)
        else:
            self.log.step({"phase": "data", **sizes, "skipped": skipped, "sources": self.data.sources,
                           "notes": notes}, line)
        for note in notes:
            tqdm.write(f"[data] {note}")
        self._prompt_cache: dict[str, list[int]] = {}
        self.state = {"stage": method_stages(cfg)[0], "step": 0, "results": {}, "generations": 0,
                      "generations_by": {}, "seconds": {}, "srt_data": None, "p1_stats": None}
        self.optimizer = self.scheduler = None

    def prompt_messages(self, ex: tasks.Example) -> list[dict]:
        """chat(x)'s messages: the worked examples (--fewshot), then the question."""
        return tasks.prompt_messages(ex.question, self.cfg.fewshot, revise.CONTROL_PHRASES[self.cfg.phrase_style][0],
                                     task=self.cfg.task)

    def prompt_ids(self, ex: tasks.Example) -> list[int]:
        if ex.question not in self._prompt_cache:
            self._prompt_cache[ex.question] = sdzero.chat_prompt_ids(self.tok, self.prompt_messages(ex))
        return self._prompt_cache[ex.question]

    def rollouts(self, prompts: list[list[int]], seeds: list[int], answers: list, max_new_tokens: int,
                 stage: str, desc: str) -> tuple[list[sdzero.Rollout], list[int]]:
        """Sample one response per prompt and verify it: (rollouts, rewards) in prompt order. Under torchrun
        each rank samples and verifies its share of the prompts and every rank receives all of them; row i
        samples with seeds[i] wherever it runs, so the result does not depend on the world size. stage (p1,
        p2, baseline, eval) picks the sampling settings: --temperature (--eval-temperature), --STAGE-top-p,
        --STAGE-top-k, and for p1 --p1-stop."""
        d, cfg = self.dist, self.cfg
        if stage not in ("p1", "p2", "baseline", "eval"):
            raise ValueError(f"stage must be p1, p2, baseline or eval, got {stage!r}")
        temperature = cfg.eval_temperature if stage == "eval" else cfg.temperature
        p1_stops = stage == "p1" and bool(cfg.p1_stop)
        stop_ids = sorted(set(self.end_ids) | self.p1_stop_ids) if p1_stops else self.end_ids
        stop_strings = self.p1_stop_strings if p1_stops else None
        mine = parallel.my_rows(d, len(prompts))
        with parallel.rollout_mode(self.policy, d), parallel.amp(self.autocast, self.device.type), \
                tqdm(total=len(mine), desc=desc, leave=False, disable=not d.main) as bar:
            ys = sdzero.generate(self.sampling_model(), self.tok, [prompts[i] for i in mine],
                                 max_new_tokens=max_new_tokens, temperature=temperature, seeds=[seeds[i] for i in mine],
                                 top_p=getattr(cfg, f"{stage}_top_p"), top_k=getattr(cfg, f"{stage}_top_k"),
                                 stop_ids=stop_ids, stop_strings=stop_strings, batch_size=cfg.gen_batch_size,
                                 progress=bar,
                                 # FSDP2's hooks stay on the gathered layers: sample without CUDA graphs there
                                 compile=False if d.strategy == "fsdp" else None)
        if p1_stops:  # the stop is cut and the end of turn put in its place
            ys = [sdzero.end_at_stop(self.tok, y, self.p1_stop_ids, stop_strings or [], self.eot_id) for y in ys]
        rs = verify.rewards([y.text for y in ys], [answers[i] for i in mine], cfg.task)
        both = parallel.gather(d, len(prompts), mine, list(zip(ys, rs)))
        return [y for y, _ in both], [r for _, r in both]

    def sampling_model(self):
        """The weights rollouts read. With bf16 (one process or DDP): a bf16 copy, refreshed from the fp32
        weights at every call, since a decode step reads every weight once and autocast would recast the fp32
        weights at every step. Otherwise the model itself (FSDP2 gathers its own weights to sample)."""
        if self.autocast is None or self.dist.strategy == "fsdp":
            return self.model
        if self.sampler is None:
            self.sampler = copy.deepcopy(self.model).to(self.autocast).eval().requires_grad_(False)
        else:
            with torch.no_grad():
                for p_s, p in zip(self.sampler.parameters(), self.model.parameters()):
                    p_s.copy_(p)
        return self.sampler

    def extra_eval_rows(self) -> list[tasks.Example]:
        """The --eval-extra questions, loaded on first use (the same rows at every evaluation)."""
        if self._extra_rows is None:
            cfg = self.cfg
            try:
                data = tasks.load_task(cfg.task, "embedded", 0, 0, cfg.eval_extra_n or -1, seed=cfg.data_seed,
                                       eval_dataset=cfg.eval_extra)
            except ValueError as e:
                # load_task names the flag of its held-out source; here that source is --eval-extra
                raise SystemExit(str(e).replace("--eval-dataset", "--eval-extra", 1)) from None
            self._extra_rows = data["eval"]
        return self._extra_rows

    # checkpoints ---------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Full (unsharded) state keyed by parameter name, written by rank 0: it resumes on any world size.
        Collective under FSDP (every rank gathers its shards), so every rank calls it."""
        d = self.dist
        ckpt = {"state": self.state, "model": parallel.model_state(self.model, d), "rng": rng_state(),
                "config": dataclasses.asdict(self.cfg), "world_size": d.world, "log_sizes": self.log.sizes()}
        if self.optimizer is not None:
            ckpt["optimizer"] = parallel.optimizer_state(self.model, self.optimizer, d)
            ckpt["scheduler"] = self.scheduler.state_dict()
        if self.teacher is not None:
            ckpt["teacher"] = parallel.model_state(self.teacher, d)
        if d.main:
            atomic_torch_save(ckpt, self.out / "checkpoint" / "state.pt")
        d.barrier()  # no rank moves on (or exits) before the checkpoint is on disk

    def load_checkpoint(self) -> dict:
        ckpt = torch.load(self.out / "checkpoint" / "state.pt", map_location="cpu", weights_only=False)
        self.state = ckpt["state"]
        self.log.truncate(ckpt.get("log_sizes"))
        parallel.load_model_state(self.model, ckpt["model"], self.dist)
        set_rng_state(ckpt["rng"])
        if "teacher" in ckpt:
            make_teacher(self)
            parallel.load_model_state(self.teacher, ckpt["teacher"], self.dist)
        return ckpt

    def restore_optimizer(self, ckpt: dict | None) -> None:
        if ckpt is not None and "optimizer" in ckpt:
            parallel.load_optimizer_state(self.model, self.optimizer, ckpt["optimizer"], self.dist)
            self.scheduler.load_state_dict(ckpt["scheduler"])

    def timed(self, stage: str, seconds: float) -> None:
        self.state["seconds"][stage] = self.state["seconds"].get(stage, 0.0) + seconds


def count_generations(run: Run, kind: str, n: int) -> None:
    """Every training sample drawn from the model counts against the budget (held-out evaluation does not):
    y_init and revisions (Phase 1), p2 (Phase 2), rft and grpo (the baselines)."""
    run.state["generations"] += n
    by = run.state["generations_by"]
    by[kind] = by.get(kind, 0) + n


# ---------------------------------------------------------------------------------------------- Phase 1

def training_pool(run: Run) -> list[tasks.Example]:
    """The questions a method that is not split into two phases draws from: N1 then N2."""
    return run.data["n1"] + run.data["n2"]


def phase1_rows(run: Run) -> list[tasks.Example]:
    """N1; with --method srt --budget, as many questions of N1 then N2 as the budget pays for (the SRT-only
    model gets the generations SD-Zero would spend on Phase 2 as more Phase 1 data)."""
    cfg = run.cfg
    if cfg.method == "srt" and cfg.budget:
        pool = training_pool(run)
        return pool[:min(len(pool), cfg.budget // (cfg.num_init * (1 + cfg.num_revisions)))]
    return run.data["n1"]


def phase1_sample(run: Run) -> None:
    """Steps 1a-1c: --num-init y_init per question, verify, 3 revisions each, keep the verified-correct
    revisions. y_init number n answers question n // --num-init; everything below indexes by n."""
    cfg, tok, k = run.cfg, run.tok, run.cfg.num_init
    rows = [ex for ex in phase1_rows(run) for _ in range(k)]
    t0 = time.time()
    prompts = [run.prompt_ids(ex) for ex in rows]
    seeds = [derive_seed(cfg.seed, "p1_init", n // k, *([n % k] if n % k else [])) for n in range(len(rows))]
    y_init, r_init = run.rollouts(prompts, seeds, [ex.answer for ex in rows], cfg.max_new_tokens, "p1",
                                  "phase 1: y_init")
    # Revise every y_init (paper) or only the wrong ones (authors' code, --no-revise-correct).
    todo = [i for i in range(len(rows)) if cfg.revise_correct or r_init[i] == 0]
    contexts, owners = [], []
    for i in todo:
        ctx = revise.reviser_context_ids(tok, prompts[i], y_init[i].response_ids, r_init[i], cfg.phrase_style,
                                         run.end_ids)
        for j in range(cfg.num_revisions):
            contexts.append(ctx)
            owners.append((i, j))
    y_rev, r_rev = run.rollouts(contexts, [derive_seed(cfg.seed, "p1_rev", i, j) for i, j in owners],
                                [rows[i].answer for i, _ in owners], cfg.max_new_tokens, "p1", "phase 1: revisions")
    verified = [(i, y_init[i].response_ids, y.response_ids) for y, r, (i, _) in zip(y_rev, r_rev, owners) if r == 1]
    tuples, curation = curate_tuples(run, rows, verified)
    if cfg.srt_variant == "two-stage":
        kept, run.state["srt_data2"] = two_stage_data(run, rows, prompts, r_init, tuples)
        curation.update(stage1=len(kept), stage2=len(run.state["srt_data2"]))
    else:
        kept = srt_examples(run, prompts, r_init, tuples)
    count_generations(run, "y_init", len(y_init))
    count_generations(run, "revisions", len(y_rev))

    def rate(rs):
        return sum(rs) / len(rs) if rs else None  # None, not NaN: metrics.jsonl stays strict JSON
    stats = {
        "y_init_accuracy": rate(r_init),
        "revision_accuracy_r0": rate([r for r, (i, _) in zip(r_rev, owners) if r_init[i] == 0]),
        "revision_accuracy_r1": rate([r for r, (i, _) in zip(r_rev, owners) if r_init[i] == 1]),
        "questions": len(rows) // k, "kept": len(kept), "kept_share": len(kept) / max(1, len(y_rev)), **curation,
        "kept_corrections": sum(1 for ex in kept if ex["reward"] == 0),
        "y_init_len": sum(len(y.response_ids) for y in y_init) / len(y_init),
        "truncated_share": sum(y.truncated for y in y_init + y_rev) / len(y_init + y_rev),
    }
    run.log.step({"phase": "p1_sample", **stats, "seconds": time.time() - t0},
                 f"[phase 1] y_init acc {fmt(stats['y_init_accuracy'])}  revision acc r=0 "
                 f"{fmt(stats['revision_accuracy_r0'])} r=1 {fmt(stats['revision_accuracy_r1'])}  kept {len(kept)} "
                 f"({stats['kept_corrections']} corrections)")
    for n, (y, r, (i, j)) in enumerate(zip(y_rev, r_rev, owners)):
        if n >= cfg.log_samples * cfg.num_revisions:
            break
        run.log.sample({"phase": "p1", "question": rows[i].question, "answer": loggable(rows[i].answer),
                        "y_init": y_init[i].text, "r": r_init[i], "revision": y.text, "revision_r": r})
    if not kept:
        raise SystemExit(
            f"Phase 1 kept no revisions: none of the {len(y_rev)} revisions of {len(rows) // k} questions verified "
            f"correct (y_init accuracy {stats['y_init_accuracy']:.3f}). SD-Zero never trains on nothing: use an "
            "easier task (--math-max-operand, another --dataset), more questions (--n1), more --num-revisions or a "
            "stronger --model.")
    run.state["srt_data"] = kept
    run.state["p1_stats"] = stats


def curate_tuples(run: Run, rows: list, verified: list[tuple]) -> tuple[list[tuple], dict]:
    """The kept tuples (i, y_init ids, y_rev ids) after the authors' curation, when asked for: the first
    --srt-max-tuples of them in question order (their run_srt_data.sh stops collecting at 6,000; here all of
    --n1 is sampled, then the cap applies), then with --srt-clean their prepare_data.py's cleaning
    (revise.clean_response_ids) and duplicates of (x, y_init, y_rev) dropped."""
    cfg, stats = run.cfg, {"verified": len(verified)}
    tuples = verified[:cfg.srt_max_tuples] if cfg.srt_max_tuples else list(verified)
    if cfg.srt_clean:
        cleaned, seen, changed = [], set(), 0
        for i, init, rev in tuples:
            new_init = revise.clean_response_ids(run.tok, init, False, run.end_ids)
            new_rev = revise.clean_response_ids(run.tok, rev, True, run.end_ids)
            changed += new_init != init or new_rev != rev
            key = (rows[i].question, tuple(new_init), tuple(new_rev))
            if key not in seen:
                seen.add(key)
                cleaned.append((i, new_init, new_rev))
        stats.update(changed_by_cleaning=changed, duplicates_dropped=len(tuples) - len(cleaned))
        tuples = cleaned
    return tuples, stats


def srt_examples(run: Run, prompts: list, r_init: list[int], tuples: list[tuple]) -> list[dict]:
    """The tuples (i, y_init ids, y_rev ids) as joint-layout SRTExample dicts (revise.srt_example)."""
    return [dataclasses.asdict(revise.srt_example(run.tok, prompts[i], init, r_init[i], rev, run.cfg.phrase_style,
                                                  run.end_ids)) for i, init, rev in tuples]


def two_stage_data(run: Run, rows: list, prompts: list, r_init: list[int], tuples: list[tuple]):
    """The authors' split of D_rev (prepare_data.py): the revision stage takes up to --srt-stage2-size
    tuples, correct-init ones first, then wrong-init ones (seeded shuffles); the generation stage takes every
    other wrong-init tuple (a correct-init tuple has no mistake to learn from). Both as SRTExample dicts."""
    cfg, tok = run.cfg, run.tok
    if not tuples:
        return [], []  # phase1_sample says that nothing was kept
    rng = random.Random(derive_seed(cfg.seed, "srt_two_stage"))
    wrong = [t for t in tuples if r_init[t[0]] == 0]
    right = [t for t in tuples if r_init[t[0]] == 1]
    rng.shuffle(wrong)
    rng.shuffle(right)
    n_right = min(len(right), cfg.srt_stage2_size)
    n_wrong = min(len(wrong), cfg.srt_stage2_size - n_right)
    stage2, stage1 = right[:n_right] + wrong[:n_wrong], wrong[n_wrong:]
    rng.shuffle(stage2)
    if not stage1:
        raise SystemExit(f"--srt-variant two-stage: the generation stage is empty ({len(wrong)} wrong-init tuples, "
                         f"{n_wrong} of them taken by the revision stage); lower --srt-stage2-size "
                         f"({cfg.srt_stage2_size}) or raise --n1")
    gen = srt_examples(run, prompts, r_init, stage1)
    rev = [dataclasses.asdict(revise.user_turn_revision_example(tok, run.prompt_messages(rows[i]), init, r_init[i],
                                                                 y_rev, cfg.phrase_style, run.end_ids))
           for i, init, y_rev in stage2]
    return gen, rev


def srt_terms(model, batch: list[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 and Eq. 2 on one forward pass (the two equations score the same token sequence with different
    masks): the token means of -log pi over y_rev (L_rev) and over the whole assistant turn (L_gen)."""
    seqs = [ex["input_ids"] for ex in batch]
    first_target = min(min(i for i, m in enumerate(ex["gen_mask"]) if m) for ex in batch)
    hidden, shared = sdzero.shared_prefix_hidden(model, seqs, pad_id, keep_from=first_target - 1)
    width, device = hidden.shape[1], hidden.device
    # Position shared + j predicts token shared + j + 1: targets and masks for j = 0 .. width - 2.
    targets = torch.full((len(batch), width - 1), pad_id, dtype=torch.long)  # [B, S-1]
    rev_mask = torch.zeros((len(batch), width - 1))  # [B, S-1]
    gen_mask = torch.zeros((len(batch), width - 1))  # [B, S-1]
    for b, ex in enumerate(batch):
        n = len(ex["input_ids"]) - shared - 1
        targets[b, :n] = torch.tensor(ex["input_ids"][shared + 1:])
        rev_mask[b, :n] = torch.tensor(ex["rev_mask"][shared + 1:], dtype=torch.float)
        gen_mask[b, :n] = torch.tensor(ex["gen_mask"][shared + 1:], dtype=torch.float)
    targets, rev_mask, gen_mask = targets.to(device), rev_mask.to(device), gen_mask.to(device)
    # The LM head runs only where some loss is taken (the assistant turn), not over the prompt.
    sel = gen_mask.bool() | rev_mask.bool()  # [B, S-1]
    W = model.get_output_embeddings().weight
    logits = hidden[:, :-1][sel].float() @ W.float().T  # [N, V]
    nll = F.cross_entropy(logits, targets[sel], reduction="none")  # [N]
    # Eq. 1: L_rev = -log pi(y_rev | x, y_init, P_r), token mean over y_rev.
    # Eq. 2: L_gen = -log pi(y_init, P_r, y_rev | x), token mean over the whole assistant turn.
    return distill.masked_mean(nll, rev_mask[sel]), distill.masked_mean(nll, gen_mask[sel])


def srt_loss(run: Run, batch: list[dict], terms: str) -> tuple[torch.Tensor, float, dict]:
    """L_SRT = L_rev + L_gen; terms picks both, gen or rev (--srt-loss). RFT examples mark the response in
    both masks and train on gen. Returns (the loss to differentiate, its value, parts). Under torchrun each
    rank scores its share of the batch and the token means are over the whole batch (parallel.Shares)."""
    mine = [batch[i] for i in parallel.my_rows(run.dist, len(batch))]
    # Tokens each term averages over: the mask bits past position 0 (position 0 is never a target).
    counts = [float(sum(sum(ex[m][1:]) for ex in mine)) for m in ("rev_mask", "gen_mask")]
    shares = parallel.Shares(run.dist, counts)
    l_rev, l_gen = run.policy(srt_terms, mine or batch[:1], run.tok.pad_token_id)  # no rows: weight 0
    loss = sum(shares.factor(i) * term for i, (name, term) in enumerate((("rev", l_rev), ("gen", l_gen)))
               if terms in ("both", name))
    rev, gen = shares.mean([l_rev.item(), l_gen.item()])
    value = {"both": rev + gen, "gen": gen, "rev": rev}[terms]
    return loss, value, {"l_rev": rev, "l_gen": gen, "tokens": int(sum(len(ex["input_ids"]) for ex in batch))}


def parse_betas(spec: str) -> tuple[float, float]:
    """--srt-betas / --p2-betas "b1,b2" -> (b1, b2), each in [0, 1)."""
    try:
        b1, b2 = (float(x) for x in spec.split(","))
    except ValueError:
        raise ValueError(f"{spec!r} is not two numbers b1,b2") from None
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"{spec!r}: betas lie in [0, 1)")
    return b1, b2


def make_optimizer(run: Run, lr: float, total_steps: int, warmup_steps: int, cosine: bool, group: str):
    """AdamW with the settings of `group`: "srt" (Phase 1, RFT) or "p2" (Phase 2, GRPO)."""
    params = [p for p in run.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=getattr(run.cfg, f"{group}_weight_decay"),
                            betas=parse_betas(getattr(run.cfg, f"{group}_betas")), fused=run.device.type == "cuda")

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if not cosine:
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def optimizer_step(run: Run, loss: torch.Tensor | None, value: float, phase: str, step: int) -> float:
    """Backward, clip, step. `value` is the batch's loss (the same on every rank), `loss` this rank's part
    to differentiate (None: the gradients are already there, accumulated over micro-batches)."""
    if not math.isfinite(value):
        flag = {"p1": "--srt-lr", "p1_rev": "--srt-lr", "rft": "--srt-lr", "p2": "--p2-lr", "grpo": "--grpo-lr"}[phase]
        raise SystemExit(f"{phase} step {step}: the loss is {value} (not finite) at lr "
                         f"{run.scheduler.get_last_lr()[0]:.2e}; lower {flag}. "
                         f"The last checkpoint in {run.out / 'checkpoint'} is intact.")
    if loss is not None:
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(),
                                               run.cfg.grad_clip if run.cfg.grad_clip > 0 else float("inf"))
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return parallel.grad_norm_value(grad_norm)


def phase1_train(run: Run, resume_ckpt: dict | None) -> None:
    """Step 1d: SRT on the kept tuples, AdamW with warmup + cosine (two-stage: its generation stage)."""
    if run.cfg.srt_variant == "two-stage":
        sft_train(run, resume_ckpt, run.state["srt_data"], "gen", "p1", "phase 1: SRT stage 1 (generation)")
    else:
        sft_train(run, resume_ckpt, run.state["srt_data"], run.cfg.srt_loss, "p1", "phase 1: SRT")


def phase1_train_revision(run: Run, resume_ckpt: dict | None) -> None:
    """Two-stage SRT's second stage: revision SFT from the first stage's weights, a fresh optimizer."""
    sft_train(run, resume_ckpt, run.state["srt_data2"], "rev", "p1_rev", "phase 1: SRT stage 2 (revision)")


def sft_train(run: Run, resume_ckpt: dict | None, data: list[dict], terms: str, phase: str, desc: str) -> None:
    """Supervised steps over examples with rev/gen masks: SRT (Phase 1) and RFT share this loop, optimizer
    and schedule (--srt-lr, --srt-epochs, --srt-batch-size, --srt-warmup)."""
    cfg = run.cfg
    steps_per_epoch = math.ceil(len(data) / cfg.srt_batch_size)
    total = steps_per_epoch * cfg.srt_epochs
    run.optimizer, run.scheduler = make_optimizer(run, cfg.srt_lr, total, round(cfg.srt_warmup * total), True, "srt")
    run.restore_optimizer(resume_ckpt)
    run.model.train()
    order_tag = "srt_order" if phase == "p1" else f"{phase}_order"
    with tqdm(total=total, initial=run.state["step"], desc=desc, leave=False) as bar:
        while run.state["step"] < total:
            step = run.state["step"]
            epoch, b = divmod(step, steps_per_epoch)
            order = list(range(len(data)))
            random.Random(derive_seed(cfg.seed, order_tag, epoch)).shuffle(order)
            batch = [data[i] for i in order[b * cfg.srt_batch_size:(b + 1) * cfg.srt_batch_size]]
            t0 = time.time()
            lr = run.scheduler.get_last_lr()[0]
            loss, value, parts = srt_loss(run, batch, terms)
            grad_norm = optimizer_step(run, loss, value, phase, step)
            dt = time.time() - t0
            run.state["step"] = step + 1
            run.timed(f"{phase}_train", dt)
            row = {"phase": phase, "step": step + 1, "epoch": epoch, "loss": value, **parts, "lr": lr,
                   "grad_norm": grad_norm, "tokens_per_s": parts["tokens"] / dt, "seconds": dt,
                   "peak_mem_mib": peak_memory_mib(run.device)}
            detail = f"(rev {parts['l_rev']:.3f} gen {parts['l_gen']:.3f}) " if phase == "p1" else ""
            run.log.step(row, f"[{desc}] step {step + 1}/{total} loss {row['loss']:.4f} {detail}lr {lr:.2e} "
                              f"|g| {grad_norm:.2f}")
            bar.update(1)
            if cfg.save_every and run.state["step"] % cfg.save_every == 0 and run.state["step"] < total:
                run.save_checkpoint()
    run.optimizer = run.scheduler = None


# ---------------------------------------------------------------------------------------------- Phase 2

def make_teacher(run: Run) -> None:
    """run.teacher: a frozen copy of the current model (Phase 2's teacher, GRPO's reference), and
    run.teacher_policy to call it through. Under FSDP2 the copy is built from the config, sharded like the
    student, and filled from the student's shards (no gathering of the student's weights)."""
    dtype = run.autocast or next(run.model.parameters()).dtype  # bf16 runs keep the teacher in bf16
    if parse_teacher(run.cfg.teacher)[0] == "ema":
        # ...except an EMA teacher: a bf16 lerp_ rounds away every increment below half a bf16 step (2^-9 of
        # the weight), so it stays in fp32 and runs under autocast like the student.
        dtype = next(run.model.parameters()).dtype
    if run.dist.strategy == "fsdp":
        from transformers import AutoModelForCausalLM
        with torch.device(run.device):
            teacher = AutoModelForCausalLM.from_config(run.model.config, dtype=dtype)
        policy = parallel.wrap(teacher, run.dist, train=False, autocast=run.autocast)
    else:
        teacher = copy.deepcopy(run.model).to(dtype)
        policy = parallel.Policy(teacher, run.autocast)
    teacher.eval()
    teacher.requires_grad_(False)
    run.teacher, run.teacher_policy = teacher, policy
    if run.dist.strategy == "fsdp":
        copy_weights(run, 1.0)


@torch.no_grad()
def copy_weights(run: Run, weight: float) -> None:
    """teacher <- teacher + weight (student - teacher), parameter by parameter (shard by shard under FSDP2)."""
    if run.dist.strategy == "fsdp":
        parallel.reshard(run.policy)
        parallel.reshard(run.teacher_policy)
    for p_t, p_s in zip(run.teacher.parameters(), run.model.parameters()):
        p_t.copy_(p_s) if weight == 1.0 else p_t.lerp_(p_s.detach().to(p_t.dtype), weight)


def update_teacher(run: Run, step: int) -> None:
    """Iterative self-evolution: sync:N copies the student every N steps; ema:R moves R of the way each step."""
    kind, arg = parse_teacher(run.cfg.teacher)
    if kind == "sync" and step % int(arg) == 0:
        copy_weights(run, 1.0)
    elif kind == "ema":
        copy_weights(run, arg)


def response_hidden(model, seqs: list[list[int]], starts: list[int], lengths: list[int], pad_id: int):
    """Final hidden states at the positions that predict the response tokens: [B, T, H] and mask [B, T].

    Slicing before the LM head is what keeps the loss memory-bounded: logits exist only for these positions,
    a chunk at a time (distill.chunked_distill_loss).
    """
    hidden, shared = sdzero.shared_prefix_hidden(model, seqs, pad_id, keep_from=min(starts) - 1)  # [B, S, H]
    T = max(lengths)
    pos = torch.zeros((len(starts), T), dtype=torch.long, device=hidden.device)  # [B, T]
    mask = torch.zeros((len(starts), T), device=hidden.device)  # [B, T]
    for b, (s, n) in enumerate(zip(starts, lengths)):
        # The state at position i predicts token i + 1, so y (from position s) is predicted from s - 1 on.
        pos[b, :n] = torch.arange(s - 1 - shared, s - 1 - shared + n, device=hidden.device)
        mask[b, :n] = 1
    return hidden.gather(1, pos[..., None].expand(-1, -1, hidden.shape[-1])), mask  # [B, T, H], [B, T]


def teacher_targets(model, seqs, starts, lengths, pad_id: int, topk: int, chunk: int):
    """The teacher's side of Eq. 4 at the response positions: its top-k log-probs and indices ([B, T, k]
    each; only k x T numbers, never its full logits) when topk > 0, else its full logits [B, T, V]; and the
    mask [B, T]."""
    h_t, mask = response_hidden(model, seqs, starts, lengths, pad_id)  # [B, T, H], [B, T]
    W = model.get_output_embeddings().weight
    if topk:
        return distill.chunked_teacher_topk(h_t, W, mask, topk, chunk=chunk), mask
    return h_t.float() @ W.float().T, mask


def student_divergence(model, seqs, starts, lengths, pad_id: int, target, divergence: str, topk: int,
                       support: str, tail: bool, beta: float, chunk: int):
    """Eq. 4: the token mean of D(pi_S || pi_T) over the response tokens, and the per-token values [B, T].
    target: the teacher's (top-k log-probs, indices) for the memory-bounded loss, or its full logits."""
    h_s, mask = response_hidden(model, seqs, starts, lengths, pad_id)  # [B, T, H]
    W = model.get_output_embeddings().weight
    if isinstance(target, tuple):
        return distill.chunked_distill_loss(h_s, W, *target, mask, chunk=chunk, divergence=divergence, tail=tail,
                                            beta=beta)
    logits_student = h_s.float() @ W.float().T  # [B, T, V]
    per_tok = distill.per_token_divergence(logits_student, target, divergence=divergence, topk=topk or None,
                                           support=support, tail=tail, beta=beta)  # [B, T]
    return distill.masked_mean(per_tok, mask), per_tok.detach()


def phase2_step(run: Run, step: int) -> dict:
    """Steps 2a-2c for one batch of N2 questions."""
    cfg, tok, rows = run.cfg, run.tok, run.data["n2"]
    t0 = time.time()
    # Data cursor: a fresh seeded permutation of N2 each epoch, indexed by step.
    per_epoch = max(1, len(rows) // cfg.p2_batch_size)
    epoch, b = divmod(step, per_epoch)
    order = list(range(len(rows)))
    random.Random(derive_seed(cfg.seed, "p2_order", epoch)).shuffle(order)
    batch = [rows[i] for i in order[b * cfg.p2_batch_size:(b + 1) * cfg.p2_batch_size]]
    prompts = [run.prompt_ids(ex) for ex in batch]
    # 2a. One on-policy sample per question.
    ys, rs = run.rollouts(prompts, [derive_seed(cfg.seed, "p2", step, i) for i in range(len(batch))],
                          [ex.answer for ex in batch], cfg.max_new_tokens, "p2", "phase 2: samples")
    count_generations(run, "p2", len(ys))
    t_gen = time.time() - t0
    # 2b. Teacher inputs; y is cut for both sides when x + 2|y| + |phrase| exceeds the teacher's cap. A sample
    # whose x + phrase leaves no room for one token of y twice carries no loss (as in the authors' code).
    student_seqs, teacher_seqs, starts_s, starts_t, lengths, cut, no_room = [], [], [], [], [], 0, set()
    n_phrase_of = {r: len(revise.phrase_ids(tok, r, cfg.phrase_style)) for r in (0, 1)}
    for i, (p, y, r) in enumerate(zip(prompts, ys, rs)):
        y_ids = y.response_ids
        n_phrase = n_phrase_of[r]
        keep = revise.teacher_y_length(len(p), len(y_ids), n_phrase, cfg.teacher_max_len)
        if keep < len(y_ids):
            cut += 1
            if keep == 0:
                no_room.add(i)  # one token stays so the shapes hold; it is never scored
            y_ids = y_ids[:max(1, keep)]
        t_ids, t_start = revise.teacher_input_ids(tok, p, y_ids, r, cfg.phrase_style, run.end_ids,
                                                  cfg.teacher_keep_end)
        student_seqs.append(p + y_ids)
        teacher_seqs.append(t_ids)
        starts_s.append(len(p))
        starts_t.append(t_start)
        lengths.append(len(y_ids))
    pad = tok.pad_token_id
    use_topk = cfg.topk > 0 and cfg.support == "teacher"  # the memory-bounded path (the paper's setting)
    # Under torchrun each rank scores its share of the batch. Its rows are sorted by length and cut into
    # micro-batches of --p2-micro-batch rows (length bucketing: little padding, bounded activations); every
    # rank runs the same number of them (FSDP2 gathers weights per forward), empty ones with weight 0.
    mine = parallel.my_rows(run.dist, len(ys))
    scored = [i for i in mine if i not in no_room]
    ordered = sorted(scored, key=lambda i: lengths[i]) if cfg.p2_micro_batch else scored
    micro = micro_batches(ordered, len(ys), run.dist.world, cfg.p2_micro_batch)
    shares = parallel.Shares(run.dist, [float(sum(lengths[i] for i in scored))])  # token mean over the batch
    run.model.train()
    t_teacher = t_student = 0.0
    loss_sum, kl_of, top_of = 0.0, {}, {}
    for k, ix in enumerate(micro):
        rows_ = ix or [0]  # an empty micro-batch runs row 0 with weight 0

        def pick(values):
            return [values[i] for i in rows_]
        t1 = time.time()
        # FSDP2 gathers the teacher's shards into tensors it reuses: those must not be inference tensors.
        with torch.no_grad() if run.dist.strategy == "fsdp" else torch.inference_mode():
            target, _ = run.teacher_policy(teacher_targets, pick(teacher_seqs), pick(starts_t), pick(lengths), pad,
                                           cfg.topk if use_topk else 0, cfg.loss_chunk)
        if not use_topk:
            target = target.clone()  # full logits leave inference mode: per_token_divergence works on them
        t_teacher += time.time() - t1
        # 2c. Eq. 4 on the student's own tokens; gradients add up over the micro-batches, synced on the last.
        t2 = time.time()
        with parallel.grad_sync(run.policy, run.dist, k == len(micro) - 1):
            loss, kl_tok = run.policy(student_divergence, pick(student_seqs), pick(starts_s), pick(lengths), pad,
                                      target, cfg.divergence, cfg.topk, cfg.support, cfg.tail, cfg.beta, cfg.loss_chunk)
            n_k = float(sum(lengths[i] for i in ix))
            (loss * shares.scale(n_k)).backward()
        t_student += time.time() - t2
        loss_sum += loss.item() * n_k
        teacher_argmax = target[1][..., 0] if use_topk else target.argmax(-1)  # [b, T]: the reviser's choice
        for b, i in enumerate(ix):
            kl_of[i] = kl_tok[b, :lengths[i]].tolist()
            top_of[i] = teacher_argmax[b, :lengths[i]].tolist()
    value = parallel.all_sum(run.dist, [loss_sum])[0] / max(1.0, shares.total[0])
    lr = run.scheduler.get_last_lr()[0]
    t2 = time.time()
    grad_norm = optimizer_step(run, None, value, "p2", step)
    t_student += time.time() - t2
    kl_seq = parallel.gather(run.dist, len(ys), mine, [sum(kl_of[i]) / len(kl_of[i]) if kl_of.get(i) else 0.0
                                                       for i in mine])

    def mean_where(values, want):
        sel = [v for v, r in zip(values, rs) if r == want]
        return sum(sel) / len(sel) if sel else None
    n_tok = sum(lengths)
    dt = time.time() - t0
    row = {"phase": "p2", "step": step + 1, "loss": value, "lr": lr, "grad_norm": grad_norm,
           "reward_mean": sum(rs) / len(rs), "kl_r0": mean_where(kl_seq, 0), "kl_r1": mean_where(kl_seq, 1),
           "response_len": n_tok / len(ys), "truncated_share": sum(y.truncated for y in ys) / len(ys),
           "teacher_cut_share": cut / len(ys), "teacher_no_room_share": len(no_room) / len(ys),
           "tokens_per_s": n_tok / dt, "sec_generate": t_gen,
           "sec_teacher": t_teacher, "sec_student": t_student, "peak_mem_mib": peak_memory_mib(run.device)}
    # Per token: the KL and the teacher's most likely token, what the reviser would have written (localize.py).
    for i in mine[:cfg.log_samples]:  # this rank's rows (rank 0 logs)
        run.log.sample({"phase": "p2", "step": step + 1, "question": batch[i].question,
                        "answer": loggable(batch[i].answer), "y": ys[i].text, "r": rs[i],
                        "tokens": tok.convert_ids_to_tokens(student_seqs[i][starts_s[i]:]),
                        "kl": [round(v, 5) for v in kl_of.get(i, [])],
                        "teacher_top": tok.convert_ids_to_tokens(top_of.get(i, []))})
    return row


def micro_batches(rows: list[int], n: int, world: int, size: int) -> list[list[int]]:
    """rows (this rank's, in order) cut into micro-batches of `size` (0: one micro-batch). Every rank gets as
    many as the rank with the most rows, ceil(ceil(n / world) / size); the surplus ones are empty."""
    per_rank = math.ceil(n / world)  # rows of the busiest rank
    size = size or max(1, per_rank)
    return [rows[j * size:(j + 1) * size] for j in range(max(1, math.ceil(per_rank / size)))]


def phase2_steps(run: Run) -> int:
    """--p2-steps, or with --budget as many steps as the generations left after Phase 1 pay for."""
    cfg = run.cfg
    if not cfg.budget:
        return cfg.p2_steps
    phase1 = run.state["generations"] - run.state["generations_by"].get("p2", 0)
    steps = (cfg.budget - phase1) // cfg.p2_batch_size
    if steps < 1:
        raise SystemExit(f"--budget {cfg.budget}: Phase 1 used {phase1} generations, which leaves less than one "
                         f"Phase 2 step (--p2-batch-size {cfg.p2_batch_size}); raise --budget or lower --n1")
    return steps


def phase2_train(run: Run, resume_ckpt: dict | None) -> None:
    cfg = run.cfg
    total = phase2_steps(run)
    if run.teacher is None:
        make_teacher(run)  # the SRT model, frozen unless --teacher says otherwise
    run.optimizer, run.scheduler = make_optimizer(run, cfg.p2_lr, total, cfg.p2_warmup, False, "p2")
    run.restore_optimizer(resume_ckpt)
    with tqdm(total=total, initial=run.state["step"], desc="phase 2: distill", leave=False) as bar:
        while run.state["step"] < total:
            step = run.state["step"]
            row = phase2_step(run, step)
            run.state["step"] = step + 1
            update_teacher(run, step + 1)
            run.timed("p2", row["sec_generate"] + row["sec_teacher"] + row["sec_student"])
            run.log.step(row, f"[phase 2] step {step + 1}/{total} loss {row['loss']:.4f} reward "
                              f"{row['reward_mean']:.2f} KL r=0 {fmt(row['kl_r0'])} r=1 {fmt(row['kl_r1'])} "
                              f"len {row['response_len']:.1f} lr {row['lr']:.2e} |g| {row['grad_norm']:.2f}")
            bar.update(1)
            if cfg.save_every and run.state["step"] % cfg.save_every == 0 and run.state["step"] < total:
                run.save_checkpoint()
    run.optimizer = run.scheduler = None
    run.teacher = run.teacher_policy = None


# ---------------------------------------------------------------------------------------------- baselines

def rft_sample(run: Run) -> None:
    """RFT data: --rft-samples answers per question of N1 then N2 (as many questions as --budget pays for),
    keep the verified-correct ones (distinct ones with --rft-dedup)."""
    cfg = run.cfg
    pool = training_pool(run)
    rows = pool[:min(len(pool), cfg.budget // cfg.rft_samples)] if cfg.budget else pool
    k, t0 = cfg.rft_samples, time.time()
    prompts = [run.prompt_ids(ex) for ex in rows]
    ys, rs = run.rollouts([p for p in prompts for _ in range(k)],
                          [derive_seed(cfg.seed, "rft", i, j) for i in range(len(rows)) for j in range(k)],
                          [ex.answer for ex in rows for _ in range(k)], cfg.max_new_tokens, "baseline",
                          "rft: samples")
    count_generations(run, "rft", len(ys))
    data, solved = [], 0
    for i, p in enumerate(prompts):
        group = ys[i * k:(i + 1) * k]
        keep = baselines.distinct_correct([y.response_ids for y in group], rs[i * k:(i + 1) * k], cfg.rft_dedup)
        solved += bool(keep)
        for j in keep:
            y = group[j].response_ids
            mask = [0] * len(p) + [1] * len(y)  # the loss runs over the answer given the question
            data.append({"input_ids": p + y, "rev_mask": mask, "gen_mask": mask, "reward": 1})
    stats = {"questions": len(rows), "sample_accuracy": sum(rs) / len(rs), "solved_share": solved / len(rows),
             "kept": len(data), "correct": sum(rs), "response_len": sum(len(y.response_ids) for y in ys) / len(ys),
             "truncated_share": sum(y.truncated for y in ys) / len(ys)}
    run.log.step({"phase": "rft_sample", **stats, "seconds": time.time() - t0},
                 f"[rft] {len(rows)} questions x {k}: sample acc {stats['sample_accuracy']:.3f}, solved "
                 f"{stats['solved_share']:.3f}, kept {len(data)} {'distinct ' if cfg.rft_dedup else ''}correct answers")
    for n in range(min(cfg.log_samples, len(ys))):
        run.log.sample({"phase": "rft", "question": rows[n // k].question, "answer": loggable(rows[n // k].answer),
                        "y": ys[n].text, "r": rs[n]})
    if not data:
        raise SystemExit(f"RFT kept nothing: none of the {len(ys)} samples of {len(rows)} questions verified "
                         "correct; use an easier task, more --rft-samples or a stronger --model.")
    run.state["rft_data"] = data
    run.state["method_stats"] = stats


def rft_train(run: Run, resume_ckpt: dict | None) -> None:
    sft_train(run, resume_ckpt, run.state["rft_data"], "gen", "rft", "rft: SFT")


def response_logp(model, seqs, starts, lengths, pad_id: int, temperature: float, chunk: int):
    """log pi(y_t | x, y_<t) of the response tokens at the sampling temperature: [B, T] and mask [B, T].

    The LM head runs over `chunk` positions at a time and is recomputed in backward (checkpoint), so no
    [B, T, V] tensor exists: at long responses and large vocabularies that tensor, not the model, is what
    runs out of memory.
    """
    h, mask = response_hidden(model, seqs, starts, lengths, pad_id)  # [B, T, H], [B, T]
    targets = torch.zeros(mask.shape, dtype=torch.long, device=h.device)  # [B, T]
    for b, (s, n) in enumerate(zip(starts, lengths)):
        targets[b, :n] = torch.tensor(seqs[b][s:s + n], device=h.device)
    sel = mask.bool()
    hs, ts = h[sel], targets[sel]  # [M, H], [M]
    W = model.get_output_embeddings().weight

    def logp_of(h_c, t_c):
        logits = (h_c.float() @ W.float().T) / temperature  # [chunk, V]
        return logits.log_softmax(-1).gather(-1, t_c[:, None]).squeeze(-1)  # [chunk]

    parts = []
    for i in range(0, hs.shape[0], chunk):
        if torch.is_grad_enabled():
            parts.append(torch.utils.checkpoint.checkpoint(logp_of, hs[i:i + chunk], ts[i:i + chunk],
                                                           use_reentrant=False))
        else:
            parts.append(logp_of(hs[i:i + chunk], ts[i:i + chunk]))
    out = torch.zeros(mask.shape, dtype=torch.float32, device=h.device)
    out = out.masked_scatter(sel, torch.cat(parts)) if parts else out
    return out, mask


def pool_indices(run: Run, start: int, count: int) -> list[int]:
    """Questions `start .. start + count` of an endless stream over N1 + N2, reshuffled each pass (seeded)."""
    n = len(training_pool(run))
    out = []
    for c in range(start, start + count):
        epoch, pos = divmod(c, n)
        order = list(range(n))
        random.Random(derive_seed(run.cfg.seed, "grpo_order", epoch)).shuffle(order)
        out.append(order[pos])
    return out


def grpo_step(run: Run, step: int) -> dict | None:
    """One GRPO rollout step: groups of --grpo-group samples for --grpo-batch questions (refilled with fresh
    questions while groups carry no signal, --grpo-dynamic), then --grpo-minibatches clipped updates."""
    cfg, tok, pool = run.cfg, run.tok, training_pool(run)
    n, t0 = cfg.grpo_group, time.time()
    groups, generated, binary = [], 0, []  # groups: (question, rollouts, shaped rewards)
    for rnd in range(cfg.grpo_max_rounds if cfg.grpo_dynamic else 1):
        need = cfg.grpo_batch - len(groups)
        if need <= 0:
            break
        if cfg.budget:  # never spend past the budget; a refill round shrinks to what is left
            need = min(need, (cfg.budget - run.state["generations"]) // n)
            if need <= 0:
                break
        qs = pool_indices(run, run.state["grpo_cursor"], need)
        run.state["grpo_cursor"] += need
        prompts = [run.prompt_ids(pool[q]) for q in qs for _ in range(n)]
        ys, rs = run.rollouts(prompts, [derive_seed(cfg.seed, "grpo", step, rnd, i) for i in range(len(prompts))],
                              [pool[q].answer for q in qs for _ in range(n)], cfg.max_new_tokens, "baseline",
                              "grpo: rollouts")
        count_generations(run, "grpo", len(ys))
        generated += len(ys)
        binary += rs
        for g, q in enumerate(qs):
            group = ys[g * n:(g + 1) * n]
            shaped, informative = baselines.group_rewards(rs[g * n:(g + 1) * n], [len(y.response_ids) for y in group],
                                                          cfg.max_new_tokens, cfg.grpo_overlong)
            if not cfg.grpo_dynamic or informative:
                groups.append((q, group, shaped))
    t_gen = time.time() - t0
    stats = {"phase": "grpo", "step": step + 1, "generated": generated, "groups_kept": len(groups),
             "reward_mean": sum(binary) / max(1, len(binary)), "generations": run.state["generations"],
             "sec_generate": t_gen}
    if not groups:  # every group was all-right or all-wrong: nothing to learn from this step
        return {**stats, "loss": None, "seconds": time.time() - t0}
    adv = baselines.group_advantages(torch.stack([g[2] for g in groups]), cfg.grpo_std).flatten()  # [G * n]
    samples = [(run.prompt_ids(pool[q]), y) for q, ys_, _ in groups for y in ys_]
    seqs = [p + y.response_ids for p, y in samples]
    starts = [len(p) for p, _ in samples]
    lengths = [len(y.response_ids) for _, y in samples]
    pad = tok.pad_token_id
    order = list(range(len(samples)))
    random.Random(derive_seed(cfg.seed, "grpo_mb", step)).shuffle(order)
    minibatches = [order[i::cfg.grpo_minibatches] for i in range(cfg.grpo_minibatches)]
    # Under torchrun each rank takes its share of every minibatch (a rank without any: weight 0).
    minibatches = [[ix[j] for j in parallel.my_rows(run.dist, len(ix))] for ix in minibatches if ix]

    def pick(ix):
        ix = ix or [0]
        return [seqs[i] for i in ix], [starts[i] for i in ix], [lengths[i] for i in ix]
    # pi_old: the policy that sampled, before any update of this step; pi_ref: the initial model (--grpo-kl).
    with torch.no_grad():
        run.model.eval()
        old = [run.policy(response_logp, *pick(ix), pad, cfg.temperature, cfg.loss_chunk)[0] for ix in minibatches]
        ref = ([run.teacher_policy(response_logp, *pick(ix), pad, cfg.temperature, cfg.loss_chunk)[0]
                for ix in minibatches] if cfg.grpo_kl > 0 else [None] * len(minibatches))
    run.model.train()
    losses, norms, parts = [], [], []
    lr = run.scheduler.get_last_lr()[0]
    for ix, logp_old, logp_ref in zip(minibatches, old, ref):
        logp, mask = run.policy(response_logp, *pick(ix), pad, cfg.temperature, cfg.loss_chunk)
        loss, part = baselines.clipped_pg_loss(logp, logp_old, adv[ix or [0]], mask, cfg.grpo_clip_low,
                                               cfg.grpo_clip_high, cfg.grpo_norm, logp_ref, cfg.grpo_kl)
        # The loss is a mean over the minibatch's tokens (token norm) or samples (sequence norm); the clip share
        # and the KL are token means.
        n_tok, n_seq = float(sum(lengths[i] for i in ix)), float(len(ix))
        shares = parallel.Shares(run.dist, [n_tok, n_seq, n_tok, n_tok])
        by_tok, by_seq, clip, kl = shares.mean([loss.item(), loss.item(), part["clip_share"], part.get("kl_ref", 0.0)])
        norm = 0 if cfg.grpo_norm == "token" else 1
        norms.append(optimizer_step(run, loss * shares.factor(norm), (by_tok, by_seq)[norm], "grpo", step))
        losses.append((by_tok, by_seq)[norm])
        parts.append({"clip_share": clip, "kl_ref": kl})

    def mean(xs):
        return sum(xs) / len(xs)
    return {**stats, "loss": mean(losses), "lr": lr, "grad_norm": mean(norms),
            "clip_share": mean([p["clip_share"] for p in parts]),
            **({"kl_ref": mean([p["kl_ref"] for p in parts])} if cfg.grpo_kl > 0 else {}),
            "adv_abs_mean": float(adv.abs().mean()), "response_len": mean(lengths),
            "seconds": time.time() - t0, "peak_mem_mib": peak_memory_mib(run.device)}


def grpo_steps_left(run: Run) -> bool:
    cfg = run.cfg
    if cfg.budget:  # until a full rollout step no longer fits the budget
        return run.state["generations"] + cfg.grpo_group * cfg.grpo_batch <= cfg.budget
    return run.state["step"] < cfg.grpo_steps


def grpo_train(run: Run, resume_ckpt: dict | None) -> None:
    cfg = run.cfg
    run.state.setdefault("grpo_cursor", 0)
    if cfg.grpo_kl > 0 and run.teacher is None:
        make_teacher(run)  # the reference model of the KL term: the initial policy
    run.optimizer, run.scheduler = make_optimizer(run, cfg.grpo_lr, 0, cfg.grpo_warmup, False, "p2")
    run.restore_optimizer(resume_ckpt)
    while grpo_steps_left(run):
        step = run.state["step"]
        row = grpo_step(run, step)
        run.state["step"] = step + 1
        run.timed("grpo", row["seconds"])
        run.log.step(row, f"[grpo] step {step + 1} reward {row['reward_mean']:.2f} groups {row['groups_kept']}/"
                          f"{cfg.grpo_batch} loss {fmt(row['loss'])} generations {row['generations']}"
                          + (f" clip {row['clip_share']:.3f} |g| {row['grad_norm']:.2f}" if row["loss"] is not None
                             else " (no informative group: no update)"))
        if cfg.save_every and run.state["step"] % cfg.save_every == 0 and grpo_steps_left(run):
            run.save_checkpoint()
    run.optimizer = run.scheduler = None
    run.teacher = run.teacher_policy = None


# ---------------------------------------------------------------------------------------------- driver

# The stages of each method, in order; a checkpoint names the next stage to run.
METHOD_STAGES = {
    "sdzero": ["eval_base", "p1_sample", "p1_train", "eval_srt", "p2", "eval_final", "done"],
    "srt": ["eval_base", "p1_sample", "p1_train", "eval_srt", "done"],
    "rft": ["eval_base", "rft_sample", "rft_train", "eval_final", "done"],
    "grpo": ["eval_base", "grpo", "eval_final", "done"],
    "p2only": ["eval_base", "p2", "eval_final", "done"],  # teacher = the base model prompted with P_r
    "base": ["eval_base", "done"],
}
TRAINING_STAGES = {"p1_train": phase1_train, "p1_train_rev": phase1_train_revision, "p2": phase2_train,
                   "rft_train": rft_train, "grpo": grpo_train}


def method_stages(cfg: Config) -> list[str]:
    """METHOD_STAGES[--method], with two-stage SRT's revision stage after Phase 1's first."""
    stages = list(METHOD_STAGES[cfg.method])
    if cfg.srt_variant == "two-stage" and "p1_train" in stages:
        stages.insert(stages.index("p1_train") + 1, "p1_train_rev")
    return stages


def final_stage(method: str) -> str:
    """The evaluation that gives a method's final_accuracy."""
    return METHOD_STAGES[method][-2]


# Settings a resumed run may change: how it runs, not what it computes (a run resumes on another world size).
RESUME_MAY_CHANGE = ("resume", "threads", "parallel")


def prepare_out(cfg: Config, d: parallel.Dist) -> None:
    """Check --out (every rank reads, so every rank stops on a bad one), then rank 0 creates it."""
    out = Path(cfg.out)
    ckpt = out / "checkpoint" / "state.pt"
    if cfg.resume:
        if not ckpt.exists():
            raise SystemExit(f"--resume: no checkpoint at {ckpt}; start without --resume")
        saved = json.loads((out / "config.json").read_text())
        defaults = dataclasses.asdict(Config())  # a setting newer than the run counts as its default
        differ = {k: (saved.get(k), v) for k, v in dataclasses.asdict(cfg).items()
                  if k not in RESUME_MAY_CHANGE and saved.get(k, defaults[k]) != v}
        if differ:
            raise SystemExit(f"--resume: these settings differ from the run in {out}: "
                             + ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in differ.items()))
        return
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"--out {out}: the folder already holds files (another run?); pass --resume to continue "
                         "that run or choose a new --out. Nothing was changed.")
    d.barrier()  # every rank has looked before rank 0 writes
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    d.barrier()


def git_commit() -> str | None:
    """The commit of this code (with -dirty for local changes), so a result names what produced it."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) or None


def write_results(run: Run, t_start: float, commit: str | None) -> dict:
    cfg, res = run.cfg, run.state["results"]
    last = final_stage(cfg.method)
    results = {
        "method": cfg.method, "task": cfg.task, "model": cfg.model, "seed": cfg.seed,
        "base_accuracy": res["eval_base"]["avg@k"],
        "srt_accuracy": res["eval_srt"]["avg@k"] if "eval_srt" in res else None,
        "final_accuracy": res[last]["avg@k"], "eval": res, "phase1": run.state["p1_stats"],
        "baseline": run.state.get("method_stats"),
        "budget": cfg.budget or None, "generations": run.state["generations"],
        "generations_by": run.state["generations_by"], "seconds": sum(run.state["seconds"].values()),
        "seconds_per_stage": run.state["seconds"], "wall_seconds_this_process": time.time() - t_start,
        "commit": commit, "torch": torch.__version__, "device": str(run.device), "world_size": run.dist.world,
        "parallel": run.dist.strategy,
        "data": {"sources": run.data.sources, "skipped": run.data.skipped},
    }
    if "extra" in res["eval_base"] and "extra" in res[last]:
        results["extra"] = {"dataset": cfg.eval_extra, "base_accuracy": res["eval_base"]["extra"]["avg@k"],
                            "final_accuracy": res[last]["extra"]["avg@k"],
                            "n_questions": res["eval_base"]["extra"]["n_questions"]}
    atomic_write_text(run.out / "results.json", json.dumps(results, indent=2))
    return results


def print_table(results: dict) -> None:
    ev = results["eval"]
    k = ev["eval_base"]["k"]
    final = {"sdzero": "after Phase 2 (SD-Zero)", "rft": "after RFT", "grpo": "after GRPO",
             "p2only": "after Phase 2, no SRT"}.get(results["method"])
    stages = (("eval_base", "base", "base"), ("eval_srt", "after Phase 1 (SRT)", "SRT"),
              ("eval_final", final, results["method"]))
    print(f"\n{'model':<24}{'avg@' + str(k):>10}{'pass@' + str(k):>10}{'length':>9}")
    for name, label, _ in stages:
        if name in ev:
            e = ev[name]
            print(f"{label:<24}{e['avg@k']:>10.3f}{e['pass@k']:>10.3f}{e['response_len']:>9.1f}")
    for name, _, short in stages:
        if "extra" in ev.get(name, {}):
            e = ev[name]["extra"]
            print(f"{(e['dataset'] + ' ' + short)[:24]:<24}{e['avg@k']:>10.3f}{e['pass@k']:>10.3f}"
                  f"{e['response_len']:>9.1f}   ({e['n_questions']} questions)")
    by = ", ".join(f"{kind} {n}" for kind, n in results["generations_by"].items())
    print(f"\n{results['generations']} training generations{' (' + by + ')' if by else ''}"
          f"{', budget ' + str(results['budget']) if results['budget'] else ''}, {results['seconds']:.0f} s; "
          f"held-out: {ev['eval_base']['n_questions']} questions")


def save_model(run: Run) -> None:
    """The final model as a Hugging Face folder, written atomically by rank 0 (full weights under FSDP2)."""
    state = parallel.model_state(run.model, run.dist)  # collective under FSDP
    if not run.dist.main:
        return
    model = run.model
    if run.dist.strategy == "fsdp":  # a plain copy to save: the sharded model's parameters are DTensors
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_config(run.model.config, dtype=next(iter(state.values())).dtype)
        model.load_state_dict(state)
        model.generation_config = run.model.generation_config
    model_dir, tmp = run.out / "model", run.out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    run.tok.save_pretrained(tmp)
    atomic_replace_dir(tmp, model_dir)


def main(argv=None) -> dict:
    t_start = time.time()
    commit = git_commit()  # at start: the code that runs, even if the tree changes during the run
    cfg = parse_args(argv)
    d = parallel.init(cfg.parallel, sdzero.pick_device())
    try:
        return train(cfg, d, t_start, commit)
    finally:
        parallel.shutdown(d)


def train(cfg: Config, d: parallel.Dist, t_start: float, commit: str | None) -> dict:
    prepare_out(cfg, d)
    run = Run(cfg, d)
    resume_ckpt = run.load_checkpoint() if cfg.resume else None
    if cfg.resume and d.main:
        tqdm.write(f"resuming {cfg.out} at stage {run.state['stage']}, step {run.state['step']}"
                   + (f" on {d.world} processes (saved on {resume_ckpt.get('world_size', 1)})" if d.world > 1 else ""))
    order = method_stages(cfg)
    while run.state["stage"] != "done":
        stage = run.state["stage"]
        t0 = time.time()
        if stage.startswith("eval_"):
            run.state["results"][stage] = evaluate(run, stage)
        elif stage == "p1_sample":
            phase1_sample(run)
        elif stage == "rft_sample":
            rft_sample(run)
        else:
            TRAINING_STAGES[stage](run, resume_ckpt)
        resume_ckpt = None
        if stage not in TRAINING_STAGES:  # the training loops time their own steps
            run.timed(stage, time.time() - t0)
        run.state["stage"] = order[order.index(stage) + 1]
        run.state["step"] = 0
        run.save_checkpoint()
    save_model(run)
    if not d.main:
        return {}
    results = write_results(run, t_start, commit)
    print_table(results)
    return results


if __name__ == "__main__":
    main()
