"""The paper's baselines, as pure functions: rejection fine-tuning (RFT) and GRPO with the DAPO choices.

The loops that call these live in train.py (`--method rft`, `--method grpo`) and share everything else with
SD-Zero: the sampler, the verifier, the held-out evaluation and the generation budget (sdzero-spec.md,
"Baselines the paper compares against"; paper App. C.2).

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

import torch


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
    if norm not in ("token", "sequence"):
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
