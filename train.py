"""SD-Zero: Self-Distillation Zero (arXiv:2604.12002), the training script and the paper companion.

    python train.py --task math                 # the demo: embedded SmolLM2-135M, embedded arithmetic, CPU
    python train.py --task math --preset smoke  # a micro random-shaped model, seconds (what tests drive)
    python train.py --task code                 # the code demo: embedded function-writing problems + HumanEval

The algorithm, step by step, and where each step lives (by equation: the README, "The paper, equation by equation"):
  0. Data: question/answer pairs (x, a) split into disjoint N1, N2 and held-out sets ........ data.load_task
     Reward r(y, a) in {0, 1}: the final answer (math) or the program's tests (code) ....... verify.rewards
  1. Phase 1, self-revision training (SRT) ........................................ phase1_sample, phase1_train
     1a. one y_init ~ pi(.|x) per x in N1, r = r(y_init, a) ...................................... sdzero.generate
     1b. 3 revisions per y_init from chat(x) + y_init + "\\n\\n" + P_r + "\\n\\n" ...... revise.reviser_context_ids
     1c. keep revisions that verify: D_rev = {(x, y_init, P_r, y_rev)} ........................... phase1_sample
     1d. train on L_SRT = L_rev (Eq. 1) + L_gen (Eq. 2), one optimizer ........................... srt_loss
  2. Phase 2, on-policy self-distillation (student from SRT, teacher = frozen SRT copy) ......... phase2_train
     2a. the student samples ONE y per x in N2; r = r(y, a); P_r by r ........................... phase2_step
     2b. teacher input chat(x) + y' + ids(phrase) + y, token ids only ............ revise.teacher_input_ids
     2c. Eq. 4: mean over response tokens of KL(pi_S(.|x, y<t) || pi_T(.|x, y, P_r, y<t)),
         reverse KL over the teacher's top-64, teacher a stop-gradient target ....... eq4_student, distill.DistillLoss
     2d. optional teacher refresh: --teacher sync:N (hard copy) or ema:R ......................... update_teacher
     Siblings (--teacher-context; Phase 2 from the base model): OPSD's teacher sees the reference answer
     (--method opsd), SDPO's the verifier's feedback on y (--method sdpo) ........ teacher_context.teacher_input
  3. Held-out evaluation before Phase 1, after Phase 1 and after Phase 2: avg@k, pass@k ........ evaluate
  Baselines in the same loop, sampler, verifier, evaluation and --budget (generations) accounting:
     --method rft (k samples per question, SFT on the verified-correct ones) ....... baselines.rft_sample, rft_train
     --method grpo (groups of n, clipped policy gradient, DAPO choices as flags) .... baselines.grpo_train
     --method srt (Phase 1 only), p2only (Phase 2 without SRT, Table 12), base (evaluation only)
  Scale: `torchrun --nproc_per_node N train.py ...` shards every step's rollouts and losses across N
  processes with DDP or FSDP2 (--parallel; parallel.py); batch sizes stay global, so N does not change the run.
  LoRA (--lora-rank): each training stage trains an adapter, merged at its end; a frozen teacher is the
  adapter switched off (lora.py; Run.attach_adapter / merge_adapter around each training stage in train).
  Off the reading path: every flag and its check (config.py); the resumable run, its one training loop and
  data order, checkpoints and the run folder (run.py); the graders behind verify.rewards (verifiers/).

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

import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

import baselines
import config
import distill
import model_card
import parallel
import revise
import sdzero
import tasks
import teacher_context
import vllm_engine
from run import (EpochCursor, Run, derive_seed, final_stage, fmt, loggable, mean, method_stages, optimizer_step,
                 parse_teacher, peak_memory_mib, train_loop, verdict_fields)
from run_folder import RunFolder, git_commit, prepare_out, print_table, save_model, write_results


# ---------------------------------------------------------------------------------------------- evaluation

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def evaluate(run: Run, name: str, step: int | None = None) -> dict:
    """avg@k and pass@k on the held-out questions, k = --eval-samples; --eval-extra at the first and last
    evaluation, reported under "extra". With a step: --eval-every's point of training stage `name`."""
    cfg = run.cfg
    result = evaluate_rows(run, name, run.data["eval"], cfg.max_new_tokens, "", step)
    if cfg.eval_extra and name in ("eval_base", final_stage(cfg.method)):
        result["extra"] = evaluate_rows(run, name, run.extra_eval_rows(), cfg.eval_extra_tokens or cfg.max_new_tokens,
                                        cfg.eval_extra)
    return result


def evaluate_rows(run: Run, name: str, rows: list, max_new_tokens: int, label: str, step: int | None = None) -> dict:
    cfg = run.cfg
    k = cfg.eval_samples
    prompts = [run.prompt_ids(ex) for ex in rows for _ in range(k)]
    seeds = [derive_seed(cfg.seed, "eval", name, label, i) if label else derive_seed(cfg.seed, "eval", name, i)
             for i in range(len(prompts))]
    t0 = time.time()
    rollouts, verdicts = run.rollout_verdicts(prompts, seeds, [rows[i // k] for i in range(len(prompts))],
                                              max_new_tokens, "eval", f"eval {name} {label}".rstrip())
    correct = [int(v.correct) for v in verdicts]
    per_q = [sum(correct[j * k:(j + 1) * k]) for j in range(len(rows))]
    result = {
        "avg@k": mean(correct), "pass@k": mean(pass_at_k(k, c, k) for c in per_q),
        "k": k, "n_questions": len(rows),
        "response_len": mean(len(r.response_ids) for r in rollouts),
        "truncated_share": mean(r.truncated for r in rollouts),
        "seconds": time.time() - t0,
    }
    if label:
        result["dataset"] = label
    elif cfg.eval_revise:
        result["revise"] = evaluate_reviser(run, name, rows, rollouts, correct, max_new_tokens)
    at = {**({} if step is None else {"step": step}), "generations": run.state.generations}  # a curve's x values
    run.log.step({"phase": "eval", "stage": name, **at, **result},
                 f"[eval {name}{' ' + label if label else ''}{f' step {step}' if step else ''}] avg@{k} {result['avg@k']:.3f}  "
                 f"pass@{k} {result['pass@k']:.3f}  len {result['response_len']:.1f}  ({result['seconds']:.0f}s)")
    for i in range(min(cfg.log_samples, len(rollouts))):
        run.log.sample({"phase": "eval", "stage": name, **at, **({"dataset": label} if label else {}),
                        "question": rows[i // k].question, "answer": loggable(rows[i // k].answer),
                        "y": rollouts[i].text, "r": correct[i], **verdict_fields(verdicts[i])})
    return result


def evaluate_reviser(run: Run, name: str, rows: list, rollouts: list, correct: list[int],
                     max_new_tokens: int) -> dict:
    """The reviser on the held-out answers: chat(x) + y + P_r, greedy. How often it turns a wrong answer
    right (what Phase 1 must teach and Phase 2 distils) and keeps a right one right."""
    cfg, k = run.cfg, run.cfg.eval_samples
    contexts = [revise.reviser_context_ids(run.tok, y.prompt_ids, y.response_ids, r, cfg.phrase_style, run.end_ids)
                for y, r in zip(rollouts, correct)]
    _, fixed = run.rollouts(contexts, [derive_seed(cfg.seed, "eval_revise", name, i) for i in range(len(contexts))],
                            [rows[i // k] for i in range(len(contexts))], max_new_tokens, "eval",
                            f"eval {name} reviser")
    return {"n_r0": correct.count(0), "n_r1": correct.count(1),
            "r0_corrected": mean(f for f, r in zip(fixed, correct) if r == 0),
            "r1_kept": mean(f for f, r in zip(fixed, correct) if r == 1),
            "accuracy_after_revision": mean(fixed)}


# ---------------------------------------------------------------------------------------------- Phase 1

def phase1_rows(run: Run) -> list[tasks.Example]:
    """N1; with --method srt --budget, as many questions of N1 then N2 as the budget pays for (the SRT-only
    model gets the generations SD-Zero would spend on Phase 2 as more Phase 1 data)."""
    cfg = run.cfg
    if cfg.method == "srt" and cfg.budget:
        pool = run.training_pool()
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
    y_init, v_init = run.rollout_verdicts(prompts, seeds, rows, cfg.max_new_tokens, "p1", "phase 1: y_init")
    r_init = [int(v.correct) for v in v_init]
    # Revise every y_init (paper) or only the wrong ones (authors' code, --no-revise-correct).
    todo = [i for i in range(len(rows)) if cfg.revise_correct or r_init[i] == 0]
    contexts, owners = [], []
    for i in todo:
        ctx = revise.reviser_context_ids(tok, prompts[i], y_init[i].response_ids, r_init[i], cfg.phrase_style,
                                         run.end_ids)
        for j in range(cfg.num_revisions):
            contexts.append(ctx)
            owners.append((i, j))
    y_rev, v_rev = run.rollout_verdicts(contexts, [derive_seed(cfg.seed, "p1_rev", i, j) for i, j in owners],
                                        [rows[i] for i, _ in owners], cfg.max_new_tokens, "p1", "phase 1: revisions")
    r_rev = [int(v.correct) for v in v_rev]
    verified = [(i, y_init[i].response_ids, y.response_ids) for y, r, (i, _) in zip(y_rev, r_rev, owners) if r == 1]
    tuples, curation = curate_tuples(run, rows, verified)
    if cfg.srt_variant == "two-stage":
        kept, run.state.srt_data2 = two_stage_data(run, rows, prompts, r_init, tuples)
        curation.update(stage1=len(kept), stage2=len(run.state.srt_data2))
    else:
        kept = srt_examples(run, prompts, r_init, tuples)
    run.count_generations("y_init", len(y_init))
    run.count_generations("revisions", len(y_rev))
    stats = {
        "y_init_accuracy": mean(r_init),
        "revision_accuracy_r0": mean(r for r, (i, _) in zip(r_rev, owners) if r_init[i] == 0),
        "revision_accuracy_r1": mean(r for r, (i, _) in zip(r_rev, owners) if r_init[i] == 1),
        "questions": len(rows) // k, "kept": len(kept), "kept_share": len(kept) / max(1, len(y_rev)), **curation,
        "kept_corrections": sum(1 for ex in kept if ex["reward"] == 0),
        "y_init_len": mean(len(y.response_ids) for y in y_init),
        "truncated_share": mean(y.truncated for y in y_init + y_rev),
    }
    run.log.step({"phase": "p1_sample", **stats, "seconds": time.time() - t0},
                 f"[phase 1] y_init acc {fmt(stats['y_init_accuracy'])}  revision acc r=0 "
                 f"{fmt(stats['revision_accuracy_r0'])} r=1 {fmt(stats['revision_accuracy_r1'])}  kept {len(kept)} "
                 f"({stats['kept_corrections']} corrections)")
    for n, (y, r, v, (i, j)) in enumerate(zip(y_rev, r_rev, v_rev, owners)):
        if n >= cfg.log_samples * cfg.num_revisions:
            break
        run.log.sample({"phase": "p1", "question": rows[i].question, "answer": loggable(rows[i].answer),
                        "y_init": y_init[i].text, "r": r_init[i], **verdict_fields(v_init[i]), "revision": y.text,
                        "revision_r": r, **verdict_fields(v, "revision_")})
    if not kept:
        raise SystemExit(
            f"Phase 1 kept no revisions: none of the {len(y_rev)} revisions of {len(rows) // k} questions verified "
            f"correct (y_init accuracy {stats['y_init_accuracy']:.3f}). SD-Zero never trains on nothing: use an "
            f"easier task ({'--math-max-operand, ' if cfg.task == 'math' else ''}another --dataset), more questions "
            "(--n1), more --num-revisions or a stronger --model; settings that change the run start over with "
            f"--overwrite-output-dir (or another --out).")
    run.state.srt_data, run.state.p1_stats = kept, stats


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
            key = (tuple(run.prompt_ids(rows[i])), tuple(new_init), tuple(new_rev))  # x: its whole prompt
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
                                                                 y_rev, cfg.phrase_style, run.end_ids,
                                                                 cfg.enable_thinking))
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
    l_rev, l_gen = run.student.policy(srt_terms, mine or batch[:1], run.tok.pad_token_id)  # no rows: weight 0
    loss = sum(shares.factor(i) * term for i, (name, term) in enumerate((("rev", l_rev), ("gen", l_gen)))
               if terms in ("both", name))
    rev, gen = shares.mean([l_rev.item(), l_gen.item()])
    value = {"both": rev + gen, "gen": gen, "rev": rev}[terms]
    return loss, value, {"l_rev": rev, "l_gen": gen, "tokens": int(sum(len(ex["input_ids"]) for ex in batch))}

def phase1_train(run: Run, resume_ckpt: dict | None) -> None:
    """Step 1d: SRT on the kept tuples, AdamW with warmup + cosine (two-stage: its generation stage)."""
    if run.cfg.srt_variant == "two-stage":
        sft_train(run, resume_ckpt, run.state.srt_data, "gen", "p1", "phase 1: SRT stage 1 (generation)")
    else:
        sft_train(run, resume_ckpt, run.state.srt_data, run.cfg.srt_loss, "p1", "phase 1: SRT")


def phase1_train_revision(run: Run, resume_ckpt: dict | None) -> None:
    """Two-stage SRT's second stage: revision SFT from the first stage's weights, a fresh optimizer."""
    sft_train(run, resume_ckpt, run.state.srt_data2, "rev", "p1_rev", "phase 1: SRT stage 2 (revision)")


def rft_train(run: Run, resume_ckpt: dict | None) -> None:
    """RFT's fine-tuning: SFT on the verified-correct samples (baselines.rft_sample), L_gen only."""
    sft_train(run, resume_ckpt, run.state.rft_data, "gen", "rft", "rft: SFT")


def sft_train(run: Run, resume_ckpt: dict | None, data: list[dict], terms: str, phase: str, desc: str) -> None:
    """Supervised steps over examples with rev/gen masks: SRT (Phase 1) and RFT share this loop, optimizer
    and schedule (--srt-lr, --srt-epochs, --srt-batch-size, --srt-warmup)."""
    cfg = run.cfg
    total = math.ceil(len(data) / cfg.srt_batch_size) * cfg.srt_epochs
    cursor = EpochCursor(cfg.seed, "srt_order" if phase == "p1" else f"{phase}_order", len(data))

    def step(i: int) -> tuple[dict, str]:
        epoch, rows = cursor.batch(i, cfg.srt_batch_size, drop_last=False)
        t0, lr = time.time(), run.scheduler.get_last_lr()[0]
        loss, value, parts = srt_loss(run, [data[j] for j in rows], terms)
        grad_norm = optimizer_step(run, loss, value, phase, i)
        dt = time.time() - t0
        row = {"phase": phase, "step": i + 1, "epoch": epoch, "loss": value, **parts, "lr": lr,
               "grad_norm": grad_norm, "tokens_per_s": parts["tokens"] / dt, "seconds": dt,
               "peak_mem_mib": peak_memory_mib(run.device)}
        detail = f"(rev {parts['l_rev']:.3f} gen {parts['l_gen']:.3f}) " if phase == "p1" else ""
        return row, f"[{desc}] step {i + 1}/{total} loss {value:.4f} {detail}lr {lr:.2e} |g| {grad_norm:.2f}"
    run.student.model.train()
    train_loop(run, resume_ckpt, step, stage=f"{phase}_train", desc=desc, lr=cfg.srt_lr, total=total,
               warmup=round(cfg.srt_warmup * total), cosine=True, group="srt")


# ---------------------------------------------------------------------------------------------- Phase 2

def phase2_train(run: Run, resume_ckpt: dict | None) -> None:
    """Phase 2: --p2-steps (or what --budget leaves) on-policy steps against the teacher (the SRT model, frozen
    unless --teacher says otherwise), warmup then constant lr."""
    cfg = run.cfg
    total = phase2_steps(run)
    if run.teacher is None:
        run.make_teacher()
    loss_fn = distill.DistillLoss(cfg.divergence, cfg.topk or None, cfg.support, cfg.tail, cfg.beta, cfg.loss_chunk)
    cursor = EpochCursor(cfg.seed, "p2_order", len(run.data["n2"]))

    def step(i: int) -> tuple[dict, str]:
        row = phase2_step(run, i, cursor, loss_fn)
        update_teacher(run, i + 1)
        return row, (f"[phase 2] step {i + 1}/{total} loss {row['loss']:.4f} reward {row['reward_mean']:.2f} KL r=0 "
                     f"{fmt(row['kl_r0'])} r=1 {fmt(row['kl_r1'])} len {row['response_len']:.1f} lr {row['lr']:.2e} "
                     f"|g| {row['grad_norm']:.2f}")
    train_loop(run, resume_ckpt, step, stage="p2", desc="phase 2: distill", lr=cfg.p2_lr, total=total,
               warmup=cfg.p2_warmup, cosine=False, group="p2")
    run.teacher = None


def phase2_step(run: Run, step: int, cursor: EpochCursor, loss_fn: distill.DistillLoss) -> dict:
    """Steps 2a-2c for one batch of N2 questions."""
    cfg, t0 = run.cfg, time.time()
    batch = [run.data["n2"][i] for i in cursor.batch(step, cfg.p2_batch_size, drop_last=True)[1]]
    prompts = [run.prompt_ids(ex) for ex in batch]
    # 2a. One on-policy sample per question, and its verdict.
    ys, verdicts = run.rollout_verdicts(prompts, [derive_seed(cfg.seed, "p2", step, i) for i in range(len(batch))],
                                        batch, cfg.max_new_tokens, "p2", "phase 2: samples")
    rs = [int(v.correct) for v in verdicts]
    run.count_generations("p2", len(ys))
    t_gen = time.time() - t0
    # 2b. The teacher's input chat(x) + y' + P_r + y (or --teacher-context's) beside the student's x + y.
    pairs = Phase2Rows.build(run, batch, prompts, ys, verdicts)
    # Under torchrun each rank scores its share of the batch. Its rows are sorted by length and cut into
    # micro-batches of --p2-micro-batch rows (length bucketing: little padding, bounded activations); every
    # rank runs the same number of them (FSDP2 gathers weights per forward), empty ones with weight 0.
    mine = parallel.my_rows(run.dist, len(ys))
    scored = [i for i in mine if i not in pairs.no_room]
    micro = micro_batches(sorted(scored, key=lambda i: pairs.lengths[i]) if cfg.p2_micro_batch else scored, len(ys),
                          run.dist.world, cfg.p2_micro_batch)
    shares = parallel.Shares(run.dist, [float(sum(pairs.lengths[i] for i in scored))])  # token mean over the batch
    run.student.model.train()
    t_teacher = t_student = loss_sum = 0.0
    kl_of, top_of = {}, {}
    for k, ix in enumerate(micro):
        rows = ix or [0]  # an empty micro-batch runs row 0 with weight 0
        t1 = time.time()
        target = teacher_target(run, *pairs.teacher_side(rows), loss_fn)
        t2 = time.time()
        # 2c. Eq. 4 on the student's own tokens; gradients add up over the micro-batches, synced on the last.
        with parallel.grad_sync(run.student.policy, run.dist, k == len(micro) - 1):
            loss, kl_tok = run.student.policy(eq4_student, *pairs.student_side(rows), run.tok.pad_token_id, target,
                                              loss_fn)
            n_k = float(sum(pairs.lengths[i] for i in ix))
            (loss * shares.scale(n_k)).backward()
        t_teacher, t_student = t_teacher + t2 - t1, t_student + time.time() - t2
        loss_sum += loss.item() * n_k
        teacher_argmax = loss_fn.teacher_argmax(target)  # [b, T]: the reviser's choice
        for b, i in enumerate(ix):
            n = pairs.lengths[i]
            kl_of[i], top_of[i] = kl_tok[b, :n].tolist(), teacher_argmax[b, :n].tolist()
    value = parallel.all_sum(run.dist, [loss_sum])[0] / max(1.0, shares.total[0])
    lr = run.scheduler.get_last_lr()[0]
    t2 = time.time()
    grad_norm = optimizer_step(run, None, value, "p2", step)
    t_student += time.time() - t2
    kl_seq = parallel.gather(run.dist, len(ys), mine, [mean(kl_of[i]) if kl_of.get(i) else 0.0 for i in mine])
    log_phase2_samples(run, step, batch, ys, verdicts, pairs, mine, kl_of, top_of)
    n_tok, dt = sum(pairs.lengths), time.time() - t0
    return {"phase": "p2", "step": step + 1, "loss": value, "lr": lr, "grad_norm": grad_norm,
            "reward_mean": mean(rs), "kl_r0": mean(v for v, r in zip(kl_seq, rs) if r == 0),
            "kl_r1": mean(v for v, r in zip(kl_seq, rs) if r == 1), "response_len": n_tok / len(ys),
            "truncated_share": mean(y.truncated for y in ys), "teacher_cut_share": pairs.cut / len(ys),
            "teacher_no_room_share": len(pairs.no_room) / len(ys), "tokens_per_s": n_tok / dt,
            "sec_generate": t_gen, "sec_teacher": t_teacher, "sec_student": t_student,
            "peak_mem_mib": peak_memory_mib(run.device)}


@dataclass
class Phase2Rows:
    """One Phase 2 batch as token ids: the student's x + y and the teacher's chat(x) + y' + P_r + y (step 2b;
    another context with --teacher-context), where y starts in each, and its length; y is cut for both sides
    when the teacher's input would exceed --teacher-max-len, and a sample whose teacher context leaves no room
    for one token of y carries no loss (no_room; as in the authors' code)."""
    student: list[list[int]]
    teacher: list[list[int]]
    starts_s: list[int]
    starts_t: list[int]
    lengths: list[int]
    cut: int  # samples whose y was cut
    no_room: set[int]  # samples that carry no loss

    @staticmethod
    def build(run: Run, batch: list, prompts: list[list[int]], ys: list, verdicts: list) -> Phase2Rows:
        cfg, context = run.cfg, run.cfg.teacher_context
        rows = Phase2Rows([], [], [], [], [], 0, set())
        for i, (ex, p, y, v) in enumerate(zip(batch, prompts, ys, verdicts)):
            t_ids, t_start, keep = teacher_context.teacher_input(
                context, run.tok, p, run.prompt_messages(ex), y.response_ids, int(v.correct), cfg.teacher_max_len,
                hint_text=teacher_context.hint(context, cfg.task, ex, v), style=cfg.phrase_style,
                end_ids=run.end_ids, keep_end=cfg.teacher_keep_end, enable_thinking=cfg.enable_thinking)
            y_ids = y.response_ids
            if keep < len(y_ids):
                rows.cut += 1
                if keep == 0:
                    rows.no_room.add(i)  # one token stays so the shapes hold; it is never scored
                y_ids = y_ids[:max(1, keep)]
            rows.student.append(p + y_ids)
            rows.teacher.append(t_ids)
            rows.starts_s.append(len(p))
            rows.starts_t.append(t_start)
            rows.lengths.append(len(y_ids))
        return rows

    def student_side(self, ix: list[int]) -> tuple[list, list, list]:
        return [self.student[i] for i in ix], [self.starts_s[i] for i in ix], [self.lengths[i] for i in ix]

    def teacher_side(self, ix: list[int]) -> tuple[list, list, list]:
        return [self.teacher[i] for i in ix], [self.starts_t[i] for i in ix], [self.lengths[i] for i in ix]


def log_phase2_samples(run: Run, step: int, batch: list, ys: list, verdicts: list, pairs: Phase2Rows,
                       mine: list[int], kl_of: dict, top_of: dict) -> None:
    """samples.jsonl: per token, the KL and the teacher's most likely token, what the reviser would write
    (bench/localize.py reads them). This rank's rows; rank 0 logs."""
    tok = run.tok
    for i in mine[:run.cfg.log_samples]:
        run.log.sample({"phase": "p2", "step": step + 1, "question": batch[i].question,
                        "answer": loggable(batch[i].answer), "y": ys[i].text, "r": int(verdicts[i].correct),
                        **verdict_fields(verdicts[i]),
                        "tokens": tok.convert_ids_to_tokens(pairs.student[i][pairs.starts_s[i]:]),
                        "kl": [round(v, 5) for v in kl_of.get(i, [])],
                        "teacher_top": tok.convert_ids_to_tokens(top_of.get(i, []))})


def teacher_target(run: Run, seqs: list[list[int]], starts: list[int], lengths: list[int],
                   loss_fn: distill.DistillLoss):
    """The teacher's side of Eq. 4 for these rows, a stop-gradient target (DistillLoss.teacher_target)."""
    # FSDP2 gathers the teacher's shards into tensors it reuses: those must not be inference tensors.
    with torch.no_grad() if run.dist.strategy == "fsdp" else torch.inference_mode():
        target = run.teacher.policy(eq4_teacher, seqs, starts, lengths, run.tok.pad_token_id, loss_fn)
    return target if loss_fn.bounded else target.clone()  # full logits leave inference mode: autograd reads them


def eq4_teacher(model, seqs, starts, lengths, pad_id: int, loss_fn: distill.DistillLoss):
    """pi_T(. | x, y, P_r, y_<t) at the response positions of the teacher inputs seqs (their y from starts)."""
    h_t, mask = sdzero.response_hidden(model, seqs, starts, lengths, pad_id)  # [B, T, H], [B, T]
    return loss_fn.teacher_target(h_t, model.get_output_embeddings().weight, mask)


def eq4_student(model, seqs, starts, lengths, pad_id: int, target, loss_fn: distill.DistillLoss):
    """Eq. 4: the token mean of D(pi_S(. | x, y_<t) || pi_T) over the response tokens, and the per-token
    values [B, T]."""
    h_s, mask = sdzero.response_hidden(model, seqs, starts, lengths, pad_id)  # [B, T, H], [B, T]
    return loss_fn(h_s, model.get_output_embeddings().weight, target, mask)


def update_teacher(run: Run, step: int) -> None:
    """Iterative self-evolution: sync:N copies the student every N steps; ema:R moves R of the way each step."""
    kind, arg = parse_teacher(run.cfg.teacher)
    if kind == "sync" and step % int(arg) == 0:
        run.copy_weights(1.0)
    elif kind == "ema":
        run.copy_weights(arg)


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
    phase1 = run.state.generations - run.state.generations_by.get("p2", 0)
    steps = (cfg.budget - phase1) // cfg.p2_batch_size
    if steps < 1:
        raise SystemExit(f"--budget {cfg.budget}: Phase 1 used {phase1} generations, which leaves less than one "
                         f"Phase 2 step (--p2-batch-size {cfg.p2_batch_size}); raise --budget or lower --n1")
    return steps


# ---------------------------------------------------------------------------------------------- driver

TRAINING_STAGES = {"p1_train": phase1_train, "p1_train_rev": phase1_train_revision, "p2": phase2_train,
                   "rft_train": rft_train, "grpo": baselines.grpo_train}
SAMPLING_STAGES = {"p1_sample": phase1_sample, "rft_sample": baselines.rft_sample}


def main(argv=None) -> dict:
    t_start = time.time()
    commit = git_commit()  # at start: the code that runs, even if the tree changes during the run
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = config.parse_args(argv)
    folder = RunFolder(cfg, argv)  # --out through the run: its lock, the commands a refusal or a stop names
    with folder.stops_cleanly():  # Ctrl-C, SIGTERM: one line (what is saved, the command that continues)
        d = parallel.init(cfg.parallel, sdzero.pick_device())
        try:
            return train(cfg, d, t_start, commit, folder)
        finally:
            vllm_engine.close_all()  # --rollout-engine vllm: its teardown needs torchrun's process group
            folder.release()
            parallel.shutdown(d)


def train(cfg: config.Config, d: parallel.Dist, t_start: float, commit: str | None, folder: RunFolder) -> dict:
    prepare_out(cfg, d, folder.argv)  # checked, nothing written: a bad model or dataset leaves no folder behind
    run = Run(cfg, d)  # the data (every set, its fields too) and the model
    folder.claim(d, run)  # the lock, a failed start taken over (or --overwrite-output-dir), run_config.json
    run.open_log()
    keeps_weights = cfg.method != "base"  # an evaluation of --model: no copy of it, nothing to resume
    run.evaluator = lambda stage, step: evaluate(run, stage, step)  # --eval-every, inside the training loop
    resume_ckpt = run.load_checkpoint() if cfg.resume else None
    if cfg.resume and d.main:
        tqdm.write(f"resuming {cfg.out} at stage {run.state.stage}, step {run.state.step}"
                   + (f" on {d.world} processes (saved on {resume_ckpt.get('world_size', 1)})" if d.world > 1 else ""))
    order = method_stages(cfg)
    while run.state.stage != "done":
        stage, t0 = run.state.stage, time.time()
        if stage.startswith("eval_"):
            run.state.results[stage] = evaluate(run, stage)
        elif stage in SAMPLING_STAGES:
            SAMPLING_STAGES[stage](run)
        else:
            run.attach_adapter(stage)  # --lora-rank: each training stage trains an adapter, merged at its end
            TRAINING_STAGES[stage](run, resume_ckpt)
            run.merge_adapter()
        resume_ckpt = None
        if stage not in TRAINING_STAGES:  # the training loops time their own steps
            run.timed(stage, time.time() - t0)
        run.state.stage, run.state.step = order[order.index(stage) + 1], 0
        if keeps_weights:
            run.save_checkpoint()
    results = write_results(run, t_start, commit) if d.main else None
    if keeps_weights:
        save_model(run, model_card.model_card(dataclasses.asdict(cfg), results) if d.main else None)
    folder.finish(d)  # --no-keep-checkpoint: the checkpoint goes
    run.close()
    if not d.main:
        return {}
    print_table(results)
    print(folder.last_line())
    return results


if __name__ == "__main__":
    main()
