"""The paper's baselines: rejection fine-tuning (RFT) and GRPO with the DAPO choices, their math and loops.

`--method rft` and `--method grpo` share everything else with SD-Zero: the run (run.py: sampler, verifier,
training loop, checkpoints), the held-out evaluation and the generation budget (the paper's App. C.2; the README,
"The paper, equation by equation"). RFT's fine-tuning is Phase 1's SFT loop (train.rft_train).

RFT (Yuan et al. 2023): k samples per question, keep the verified-correct ones (distinct ones by default,
as in the RFT paper), supervised fine-tuning on them.

GRPO (Shao et al. 2024) as the paper ran it, the DAPO variant (Yu et al. 2025). For a group of n samples
of one question with rewards r_1..r_n the advantage of every token of sample i is
    A_i = r_i - mean(r)            (divided by std(r) unless --no-grpo-std, the Dr. GRPO choice),
and the loss over the tokens t of the samples is the clipped policy gradient
    L = -mean_t min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A),   rho_t = pi(y_t) / pi_old(y_t),
with DAPO's four changes each a flag: clip-higher (eps_high > eps_low), token-level normalisation (the mean
runs over all tokens of the batch, not per sequence first), dynamic sampling (groups whose rewards are all
equal carry no signal and are replaced by fresh groups) and overlong reward shaping (a linear penalty in
the last `buffer` tokens before the cap). The KL penalty to the initial model that GRPO had and DAPO
dropped is --grpo-kl (0 = off, DAPO).
"""
from __future__ import annotations

import random
import time

import torch

import parallel
import sdzero
from run import (EpochCursor, Run, derive_seed, fmt, loggable, mean, optimizer_step, peak_memory_mib, train_loop,
                 verdict_fields)

NORMS = ("token", "sequence")  # --grpo-norm: a mean over the batch's tokens (DAPO) or over its samples (GRPO)


def group_advantages(rewards: torch.Tensor, scale_by_std: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """A = r - mean(group), optionally / (std(group) + eps). rewards [G, n] -> advantages [G, n].

    std is the unbiased sample std (torch's default, as in TRL's GRPO); a group whose rewards are all equal
    gets A = 0 either way.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [groups, samples], got shape {tuple(rewards.shape)}")
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # [G, n]
    if not scale_by_std or rewards.shape[1] < 2:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def informative_groups(rewards: torch.Tensor) -> torch.Tensor:
    """DAPO dynamic sampling: True for groups whose rewards are not all equal. rewards [G, n] -> [G] bool."""
    return (rewards != rewards[:, :1]).any(dim=1)


def overlong_penalty(length: int, max_len: int, buffer: int) -> float:
    """DAPO's soft overlong punishment: 0 up to max_len - buffer, then falling linearly to -1 at max_len.

    Added to the binary reward; buffer = 0 turns it off.
    """
    if buffer <= 0:
        return 0.0
    if buffer > max_len:
        raise ValueError(f"overlong buffer {buffer} exceeds the length cap {max_len}")
    start = max_len - buffer
    return 0.0 if length <= start else max(-1.0, (start - length) / buffer)


def group_rewards(correct: list[int], lengths: list[int], max_len: int, buffer: int) -> tuple[torch.Tensor, bool]:
    """One group's shaped rewards r_i + overlong_penalty(len_i) [n], and whether dynamic sampling keeps it.

    DAPO filters on accuracy (0 < #correct < n), not on the shaped reward: an all-right group whose lengths
    differ would otherwise be kept, and train on the length penalty alone.
    """
    shaped = torch.tensor([float(r) + overlong_penalty(n, max_len, buffer) for r, n in zip(correct, lengths)])
    return shaped, bool(informative_groups(torch.tensor(correct, dtype=torch.float)[None])[0])


def clipped_pg_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip_low: float = 0.2, clip_high: float = 0.28, norm: str = "token",
                    logp_ref: torch.Tensor | None = None, kl_coef: float = 0.0) -> tuple[torch.Tensor, dict]:
    """The clipped policy-gradient loss over the response tokens of a batch of samples.

    logp, logp_old, logp_ref: [B, T] log-probabilities of the sampled tokens under the policy being
    trained, the policy that sampled them (no gradient) and the reference model (no gradient);
    advantages [B] (one per sample, shared by its tokens); mask [B, T] marks real response tokens.
    norm: "token" (DAPO) averages over every token of the batch, so long samples weigh more;
    "sequence" (the original GRPO) averages within each sample first.
    Returns (loss, stats) with the share of tokens where the clip is active.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be token or sequence, got {norm!r}")
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - logp_old)  # [B, T]
    adv = advantages[:, None].to(logp.dtype)  # [B, 1]
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)  # [B, T]
    kl = None
    if kl_coef > 0:
        if logp_ref is None:
            raise ValueError("kl_coef > 0 needs logp_ref")
        # k3 estimator of KL(pi || pi_ref) (Schulman 2020), as GRPO uses: exp(d) - d - 1 with d = ref - pi.
        d = logp_ref - logp
        kl = torch.exp(d) - d - 1  # [B, T]
        per_token = per_token + kl_coef * kl
    if norm == "token":
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    else:
        per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B]
        loss = per_seq.mean()
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        stats = {"clip_share": float(((unclipped != clipped).to(mask.dtype) * mask).sum() / n),
                 "ratio_mean": float((ratio * mask).sum() / n)}
        if kl is not None:
            stats["kl_ref"] = float((kl * mask).sum() / n)
    return loss, stats


def distinct_correct(samples: list[list[int]], rewards: list[int], dedup: bool = True) -> list[int]:
    """RFT's data: indices of the verified-correct samples of one question, distinct token sequences only
    when dedup (the first of each)."""
    seen, keep = set(), []
    for i, (ids, r) in enumerate(zip(samples, rewards)):
        if r != 1:
            continue
        key = tuple(ids)
        if dedup and key in seen:
            continue
        seen.add(key)
        keep.append(i)
    return keep


# ---------------------------------------------------------------------------------------------- RFT

def rft_sample(run: Run) -> None:
    """RFT data: --rft-samples answers per question of N1 then N2 (as many questions as --budget pays for),
    keep the verified-correct ones (distinct ones with --rft-dedup)."""
    cfg = run.cfg
    pool = run.training_pool()
    rows = pool[:min(len(pool), cfg.budget // cfg.rft_samples)] if cfg.budget else pool
    k, t0 = cfg.rft_samples, time.time()
    prompts = [run.prompt_ids(ex) for ex in rows]
    ys, verdicts = run.rollout_verdicts([p for p in prompts for _ in range(k)],
                                        [derive_seed(cfg.seed, "rft", i, j) for i in range(len(rows)) for j in range(k)],
                                        [ex for ex in rows for _ in range(k)], cfg.max_new_tokens, "baseline",
                                        "rft: samples")
    rs = [int(v.correct) for v in verdicts]
    run.count_generations("rft", len(ys))
    data, solved = [], 0
    for i, p in enumerate(prompts):
        group = ys[i * k:(i + 1) * k]
        keep = distinct_correct([y.response_ids for y in group], rs[i * k:(i + 1) * k], cfg.rft_dedup)
        solved += bool(keep)
        for j in keep:
            y = group[j].response_ids
            mask = [0] * len(p) + [1] * len(y)  # the loss runs over the answer given the question
            data.append({"input_ids": p + y, "rev_mask": mask, "gen_mask": mask, "reward": 1})
    stats = {"questions": len(rows), "sample_accuracy": mean(rs), "solved_share": solved / len(rows),
             "kept": len(data), "correct": sum(rs), "response_len": mean(len(y.response_ids) for y in ys),
             "truncated_share": mean(y.truncated for y in ys)}
    run.log.step({"phase": "rft_sample", **stats, "seconds": time.time() - t0},
                 f"[rft] {len(rows)} questions x {k}: sample acc {stats['sample_accuracy']:.3f}, solved "
                 f"{stats['solved_share']:.3f}, kept {len(data)} {'distinct ' if cfg.rft_dedup else ''}correct answers")
    for n in range(min(cfg.log_samples, len(ys))):
        run.log.sample({"phase": "rft", "question": rows[n // k].question, "answer": loggable(rows[n // k].answer),
                        "y": ys[n].text, "r": rs[n], **verdict_fields(verdicts[n])})
    if not data:
        raise SystemExit(f"RFT kept nothing: none of the {len(ys)} samples of {len(rows)} questions verified "
                         "correct; use an easier task, more --rft-samples or a stronger --model.")
    run.state.rft_data, run.state.method_stats = data, stats


# ---------------------------------------------------------------------------------------------- GRPO

def response_logp(model, seqs, starts, lengths, pad_id: int, temperature: float, chunk: int):
    """log pi(y_t | x, y_<t) of the response tokens at the sampling temperature: [B, T] and mask [B, T].

    The LM head runs over `chunk` positions at a time and is recomputed in backward (checkpoint), so no
    [B, T, V] tensor exists: at long responses and large vocabularies that tensor, not the model, is what
    runs out of memory.
    """
    h, mask = sdzero.response_hidden(model, seqs, starts, lengths, pad_id)  # [B, T, H], [B, T]
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


def grpo_step(run: Run, step: int, cursor: EpochCursor) -> dict:
    """One GRPO rollout step: groups of --grpo-group samples for --grpo-batch questions (refilled with fresh
    questions while groups carry no signal, --grpo-dynamic), then --grpo-minibatches clipped updates."""
    cfg, tok, pool = run.cfg, run.tok, run.training_pool()
    n, t0 = cfg.grpo_group, time.time()
    groups, generated, binary = [], 0, []  # groups: (question, rollouts, shaped rewards)
    for rnd in range(cfg.grpo_max_rounds if cfg.grpo_dynamic else 1):
        need = cfg.grpo_batch - len(groups)
        if need <= 0:
            break
        if cfg.budget:  # never spend past the budget; a refill round shrinks to what is left
            need = min(need, (cfg.budget - run.state.generations) // n)
            if need <= 0:
                break
        qs = cursor.take(run.state.grpo_cursor, need)
        run.state.grpo_cursor += need
        prompts = [run.prompt_ids(pool[q]) for q in qs for _ in range(n)]
        ys, rs = run.rollouts(prompts, [derive_seed(cfg.seed, "grpo", step, rnd, i) for i in range(len(prompts))],
                              [pool[q] for q in qs for _ in range(n)], cfg.max_new_tokens, "baseline",
                              "grpo: rollouts")
        run.count_generations("grpo", len(ys))
        generated += len(ys)
        binary += rs
        for g, q in enumerate(qs):
            group = ys[g * n:(g + 1) * n]
            shaped, informative = group_rewards(rs[g * n:(g + 1) * n], [len(y.response_ids) for y in group],
                                                          cfg.max_new_tokens, cfg.grpo_overlong)
            if not cfg.grpo_dynamic or informative:
                groups.append((q, group, shaped))
    t_gen = time.time() - t0
    stats = {"phase": "grpo", "step": step + 1, "generated": generated, "groups_kept": len(groups),
             "reward_mean": sum(binary) / max(1, len(binary)), "generations": run.state.generations,
             "sec_generate": t_gen}
    if not groups:  # every group was all-right or all-wrong: nothing to learn from this step
        return {**stats, "loss": None, "seconds": time.time() - t0}
    adv = group_advantages(torch.stack([g[2] for g in groups]), cfg.grpo_std).flatten()  # [G * n]
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
        run.student.model.eval()
        old = [run.student.policy(response_logp, *pick(ix), pad, cfg.temperature, cfg.loss_chunk)[0]
               for ix in minibatches]
        ref = ([run.teacher.policy(response_logp, *pick(ix), pad, cfg.temperature, cfg.loss_chunk)[0]
                for ix in minibatches] if cfg.grpo_kl > 0 else [None] * len(minibatches))
    run.student.model.train()
    losses, norms, parts = [], [], []
    lr = run.scheduler.get_last_lr()[0]
    for ix, logp_old, logp_ref in zip(minibatches, old, ref):
        logp, mask = run.student.policy(response_logp, *pick(ix), pad, cfg.temperature, cfg.loss_chunk)
        loss, part = clipped_pg_loss(logp, logp_old, adv[ix or [0]], mask, cfg.grpo_clip_low,
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
    return {**stats, "loss": mean(losses), "lr": lr, "grad_norm": mean(norms),
            "clip_share": mean([p["clip_share"] for p in parts]),
            **({"kl_ref": mean([p["kl_ref"] for p in parts])} if cfg.grpo_kl > 0 else {}),
            "adv_abs_mean": float(adv.abs().mean()), "response_len": mean(lengths),
            "seconds": time.time() - t0, "peak_mem_mib": peak_memory_mib(run.device)}


def grpo_steps_left(run: Run) -> bool:
    cfg = run.cfg
    if cfg.budget:  # until a full rollout step no longer fits the budget
        return run.state.generations + cfg.grpo_group * cfg.grpo_batch <= cfg.budget
    return run.state.step < cfg.grpo_steps


def grpo_train(run: Run, resume_ckpt: dict | None) -> None:
    """GRPO's rollout steps (--grpo-steps, or while --budget pays for one more), warmup then constant lr."""
    cfg = run.cfg
    if cfg.grpo_kl > 0 and run.teacher is None:
        run.make_teacher()  # the reference model of the KL term: the initial policy
    cursor = EpochCursor(cfg.seed, "grpo_order", len(run.training_pool()))

    def step(i: int) -> tuple[dict, str]:
        row = grpo_step(run, i, cursor)
        return row, (f"[grpo] step {i + 1} reward {row['reward_mean']:.2f} groups {row['groups_kept']}/"
                     f"{cfg.grpo_batch} loss {fmt(row['loss'])} generations {row['generations']}"
                     + (f" clip {row['clip_share']:.3f} |g| {row['grad_norm']:.2f}" if row["loss"] is not None
                        else " (no informative group: no update)"))
    train_loop(run, resume_ckpt, step, stage="grpo", desc="grpo", lr=cfg.grpo_lr, total=0, warmup=cfg.grpo_warmup,
               cosine=False, group="p2", more=lambda: grpo_steps_left(run))
    run.teacher = None
