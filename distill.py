"""Phase 2 losses: per-token divergences between the student and the teacher, and their reductions.

Notation: p_S = pi_student(. | x, y_<t), the distribution that is trained; p_T = pi_T(. | x, y, P_r, y_<t),
the reviser's distribution, a stop-gradient target. KL(p || q) = sum_v p(v) (log p(v) - log q(v)): the
FIRST argument is the distribution the expectation is taken under. Divergences are named by that order,
because a swapped KL is the classic silent bug of this field:

    reverse  KL(p_S || p_T)                       the paper's Eq. 4 and the default: mode-seeking,
                                                  the student is penalised where it puts mass the
                                                  teacher does not
    forward  KL(p_T || p_S)                       mass-covering
    mixed    beta KL(p_T || p_S) + (1 - beta) KL(p_S || p_T)
                                                  the authors' code default (beta = 0.5)
    jsd      beta KL(p_T || m) + (1 - beta) KL(p_S || m),  m = beta p_T + (1 - beta) p_S
                                                  generalised Jensen-Shannon; bounded, symmetric at 0.5

Support: the full vocabulary, or k tokens (topk=k) chosen by the teacher's logits (the paper: teacher
top-64) or by the student's. Over k tokens either both distributions are renormalised over them (the
paper), or (tail=True) each keeps its full-vocabulary probabilities on the k tokens plus a (k+1)-th
bucket holding its remaining mass 1 - sum p_topk; a coarsening of the full distributions, so the
tail KL never exceeds the full KL (up to the floor below). top-k with k >= V is the full vocabulary.

Numerics: all math is in log space and in fp32 at least (bf16 logits are upcast before log_softmax;
fp64 stays fp64). 0 log 0 = 0, so -inf logits are exact zeros of probability: a token with -inf in
both models (a padded vocabulary row) contributes nothing, and so does a -inf in the first argument
of a KL. A token where the first argument has mass and the second has none makes that KL truly
infinite, and it is returned as inf; jsd is always finite. In tail mode each tail log-mass is floored
at log(eps_fp32) ~ -15.9 in both distributions: 1 - sum p_topk is rounding noise below that in fp32,
and a teacher tail that rounds to 0 under a nonzero student tail would otherwise make the KL infinite.

No gradient reaches the teacher: its logits are detached inside every function here, and support
indices are chosen without gradient.

The trainer never keeps the teacher's full logits: `chunked_teacher_topk` runs the teacher's LM head a
chunk of positions at a time and `teacher_topk` reduces each chunk to k log-probs and indices;
`per_token_divergence_topk` takes that form. `chunked_distill_loss` starts from the student's hidden
states: renormalised over the teacher's top-k (the paper), the loss depends only on the student's k
logits h . W[idx] per position, so it never computes a vocabulary row at all (O(T k H) work, one [V, H]
gradient buffer); with the tail bucket it needs each row's full logsumexp, and computes logits chunk by
chunk, recomputing them in its backward: O(chunk x V) live instead of O(T x V).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DIVERGENCES = ("reverse", "forward", "mixed", "jsd")
SUPPORTS = ("teacher", "student")
# Below this log-mass, 1 - sum(p_topk) cannot be told from 0 in fp32 (see the top docstring).
TAIL_LOG_FLOOR = math.log(torch.finfo(torch.float32).eps)
NEG_INF = float("-inf")
# teacher_topk works on blocks of rows of about this many logits (1 GiB of fp32 temporaries at most)
_TOPK_BLOCK_ELEMENTS = 2**26


def _check(divergence: str, beta: float, support: str = "teacher") -> None:
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """At least fp32: bf16/fp16 logits are upcast, fp64 (used by the tests) is kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _clamp_k(k: int, vocab: int) -> int:
    if k < 1:
        raise ValueError(f"topk must be >= 1, got {k}")
    return min(int(k), vocab)  # top-64 of a 32-token vocabulary is the whole vocabulary


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim, from log-probs, with 0 log 0 = 0."""
    p = logp.exp()                                                      # [..., K]
    # Mask the difference, not the product: where p = 0, log p - log q may be -inf - -inf = nan,
    # and masking only the product would let that nan into the gradient.
    diff = torch.where(p > 0, logp - logq, 0.0)                         # [..., K]
    return (p * diff).sum(-1)                                           # [...]


def _divergence(logp_student: torch.Tensor, logp_teacher: torch.Tensor, divergence: str,
                beta: float) -> torch.Tensor:
    """The named divergence between two log-prob tensors over the same support [..., K] -> [...]."""
    if divergence == "reverse" or (divergence == "mixed" and beta == 0.0):
        # Eq. 4: KL( pi_student(.|x, y_<t) || pi_T(.|x, y, P_r, y_<t) ), student first, teacher a fixed target
        return _kl(logp_student, logp_teacher)
    if divergence == "forward" or (divergence == "mixed" and beta == 1.0):
        return _kl(logp_teacher, logp_student)
    if divergence == "mixed":
        return beta * _kl(logp_teacher, logp_student) + (1.0 - beta) * _kl(logp_student, logp_teacher)
    if beta in (0.0, 1.0):  # m equals one of the two distributions and the JSD is exactly 0
        return _kl(logp_student, logp_student)
    # Where both have zero mass, log m would be log(0 + 0) and its gradient nan; those tokens
    # contribute nothing to either KL, so any finite stand-in is exact.
    both_zero = (logp_teacher == NEG_INF) & (logp_student == NEG_INF)   # [..., K]
    a = torch.where(both_zero, 0.0, logp_teacher + math.log(beta))      # [..., K]
    b = torch.where(both_zero, 0.0, logp_student + math.log1p(-beta))   # [..., K]
    log_m = torch.logaddexp(a, b)                                       # [..., K] log(beta p_T + (1-beta) p_S)
    return beta * _kl(logp_teacher, log_m) + (1.0 - beta) * _kl(logp_student, log_m)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _support_logprobs(logits: torch.Tensor, idx: torch.Tensor, tail: bool) -> torch.Tensor:
    """One model's log-probs over the k support tokens idx: renormalised over them [..., k], or
    its full-vocabulary log-probs there plus the tail bucket log(1 - sum p_topk) [..., k+1]."""
    picked = logits.gather(-1, idx)                                     # [..., k]
    if not tail:
        return picked.log_softmax(-1)                                   # [..., k]
    lse = logits.logsumexp(-1, keepdim=True)                            # [..., 1]
    # The tail from the logits of the complement, not from 1 - sum p_topk, which in fp32 is
    # rounding noise once the tail is near epsilon.
    rest = logits.scatter(-1, idx, NEG_INF)                             # [..., V]
    has_rest = (rest > NEG_INF).any(-1, keepdim=True)                   # [..., 1]
    # logsumexp over an all -inf row has a nan gradient; give it finite input and mask the output.
    rest = torch.where(has_rest, rest, 0.0)                             # [..., V]
    log_tail = torch.where(has_rest, rest.logsumexp(-1, keepdim=True), NEG_INF) - lse  # [..., 1]
    return torch.cat([picked - lse, log_tail.clamp(min=TAIL_LOG_FLOOR)], -1)           # [..., k+1]


def _acc_dtype(device: torch.device) -> torch.dtype:
    """The widest float the device has, for the few sums that need it (MPS has no fp64)."""
    return torch.float32 if device.type == "mps" else torch.float64


@torch.no_grad()
def teacher_topk(teacher_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce the teacher to its k most likely tokens per position: (full-vocabulary log-probs of
    those tokens [..., k] in fp32 (fp64 for fp64 input), their indices [..., k]), sorted descending.
    k is clamped to the vocabulary size. Rows are processed a bounded block at a time, so the
    temporaries stay near 1 GiB whatever the number of positions."""
    vocab = teacher_logits.shape[-1]
    k = _clamp_k(k, vocab)
    flat = teacher_logits.detach().reshape(-1, vocab)                   # [N, V]
    rows = max(1, _TOPK_BLOCK_ELEMENTS // vocab)
    logps, idxs = [], []
    for start in range(0, max(flat.shape[0], 1), rows):
        logits = _upcast(flat[start:start + rows])                      # [n, V]
        top, idx = logits.topk(k, dim=-1)                               # [n, k], [n, k]
        lse = logits.logsumexp(-1, keepdim=True)                        # [n, 1]
        # lse is only good to an ulp of its magnitude (2e-6 at 20 nats). That shift cancels when
        # renormalising over the top-k but would swamp a small tail 1 - sum p_topk, so refine it
        # once with a wide sum: top - lse is exact for the top tokens, the correction is tiny.
        correction = (logits - lse).exp().sum(-1, keepdim=True, dtype=_acc_dtype(logits.device)).log()  # [n, 1]
        logps.append((top - lse) - correction.to(top.dtype))            # [n, k]
        idxs.append(idx)
    shape = teacher_logits.shape[:-1] + (k,)
    return torch.cat(logps).view(shape), torch.cat(idxs).view(shape)    # [..., k], [..., k]


@torch.no_grad()
def chunked_teacher_topk(hidden: torch.Tensor, lm_head_weight: torch.Tensor, mask: torch.Tensor, k: int, *,
                         chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's side of the memory-bounded loss: its top-k from hidden states, never its full logits.

    hidden [B, T, H] at the response positions, lm_head_weight [V, H], mask [B, T]. The LM head runs over
    `chunk` valid positions at a time and only `teacher_topk`'s output survives each chunk, so at most
    O(chunk x V) teacher logits are ever live. Returns (log-probs [B, T, k] fp32, indices [B, T, k]);
    entries at masked positions are 0 and never read by `chunked_distill_loss`.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    valid = mask.bool().expand(hidden.shape[:-1])                       # [B, T]
    h, weight = hidden.detach()[valid].float(), lm_head_weight.detach().float()  # [M, H], [V, H]
    k = _clamp_k(k, weight.shape[0])
    logp = torch.zeros((*valid.shape, k), device=hidden.device)         # [B, T, k]
    idx = torch.zeros((*valid.shape, k), dtype=torch.long, device=hidden.device)  # [B, T, k]
    if h.shape[0]:
        parts = [teacher_topk(h[s:s + chunk] @ weight.T, k) for s in range(0, h.shape[0], chunk)]
        logp[valid] = torch.cat([lp for lp, _ in parts])
        idx[valid] = torch.cat([ix for _, ix in parts])
    return logp, idx


def per_token_divergence_topk(student_logits: torch.Tensor, teacher_topk_logp: torch.Tensor,
                              teacher_topk_idx: torch.Tensor, *, divergence: str = "reverse",
                              tail: bool = False, beta: float = 0.5) -> torch.Tensor:
    """Per-token divergence over the teacher's top-k support, from `teacher_topk`'s output.

    student_logits [..., V]; teacher_topk_logp [..., k] full-vocabulary log-probs; teacher_topk_idx
    [..., k]. Returns [...] (fp32 at least), no reduction. Identical to
    per_token_divergence(student_logits, teacher_logits, topk=k, support="teacher", tail=tail).
    """
    _check(divergence, beta)
    logits_S = _upcast(student_logits)                                  # [..., V]
    logp_topk = _upcast(teacher_topk_logp.detach())                     # [..., k]
    idx = teacher_topk_idx.long()                                       # [..., k]
    vocab, k = logits_S.shape[-1], idx.shape[-1]
    if not tail:
        return _renormalised_divergence(logits_S.gather(-1, idx), logp_topk, divergence, beta)
    logp_student = _support_logprobs(logits_S, idx, tail)               # [..., k+1]
    log_kept = logp_topk.logsumexp(-1, keepdim=True)                    # [..., 1] log sum_topk p_T
    if k >= vocab:  # the tail is structurally empty; rounding must not invent mass there
        log_tail = torch.full_like(log_kept, NEG_INF)                   # [..., 1]
    else:
        # 1 - sum p_topk, summed wide: the tail may be far smaller than fp32's resolution near 1,
        # and rounding may land the sum a hair above 1
        log_kept_wide = logp_topk.to(_acc_dtype(logp_topk.device)).logsumexp(-1, keepdim=True)  # [..., 1]
        log_tail = _log1mexp(log_kept_wide.clamp(max=0.0)).to(log_kept.dtype)                   # [..., 1]
    logp_teacher = torch.cat([logp_topk, log_tail.clamp(min=TAIL_LOG_FLOOR)], -1)      # [..., k+1]
    return _divergence(logp_student, logp_teacher, divergence, beta)


def _renormalised_divergence(picked_student_logits: torch.Tensor, teacher_topk_logp: torch.Tensor,
                             divergence: str, beta: float) -> torch.Tensor:
    """The paper's top-k divergence from the student's logits AT the k support tokens only [..., k]:
    both distributions renormalised over the support, so nothing else of the vocabulary matters."""
    logp_student = _upcast(picked_student_logits).log_softmax(-1)       # [..., k]
    logp_topk = _upcast(teacher_topk_logp.detach())                     # [..., k]
    logp_teacher = logp_topk - logp_topk.logsumexp(-1, keepdim=True)    # [..., k]
    return _divergence(logp_student, logp_teacher, divergence, beta)


def per_token_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                         divergence: str = "reverse", topk: int | None = None, support: str = "teacher",
                         tail: bool = False, beta: float = 0.5) -> torch.Tensor:
    """Per-token divergence between student and teacher logits [..., V] -> [...], no reduction.

    divergence: reverse = KL(p_S||p_T) (Eq. 4), forward = KL(p_T||p_S), mixed = beta*forward +
    (1-beta)*reverse, jsd = beta*KL(p_T||m) + (1-beta)*KL(p_S||m) with m = beta*p_T + (1-beta)*p_S.
    topk=k keeps the k indices of the `support` model's logits ("teacher" or "student") and
    renormalises both distributions over them; tail=True keeps full-vocabulary probabilities there
    and adds a (k+1)-th bucket with each model's remaining mass instead (no effect without topk: the
    tail of the full vocabulary is empty). The teacher is detached: no gradient reaches it.
    """
    _check(divergence, beta, support)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"shape mismatch: student {tuple(student_logits.shape)} "
                         f"vs teacher {tuple(teacher_logits.shape)}")
    logits_S = _upcast(student_logits)                                  # [..., V]
    logits_T = _upcast(teacher_logits.detach())                         # [..., V]
    if topk is None:
        return _divergence(logits_S.log_softmax(-1), logits_T.log_softmax(-1), divergence, beta)
    if support == "teacher":
        # The same code path the trainer takes, so both forms agree bit for bit.
        logp_topk, idx = teacher_topk(logits_T, topk)                   # [..., k], [..., k]
        return per_token_divergence_topk(logits_S, logp_topk, idx, divergence=divergence,
                                         tail=tail, beta=beta)
    with torch.no_grad():
        idx = logits_S.topk(_clamp_k(topk, logits_S.shape[-1]), dim=-1).indices  # [..., k]
    return _divergence(_support_logprobs(logits_S, idx, tail), _support_logprobs(logits_T, idx, tail),
                       divergence, beta)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` over the entries where `mask` (bool or 0/1, broadcastable) is set: the paper's
    normalisation, a mean over all valid response tokens in the batch. Masked entries may hold
    anything (even nan/inf): they reach neither the value nor the gradient. An empty mask gives 0,
    still attached to the graph."""
    mask = mask.bool()
    values = _upcast(values)
    total = torch.where(mask, values, 0.0).sum()                        # []
    count = mask.expand(values.shape).sum().clamp(min=1)                # []
    return total / count


class _ChunkedTopkDivergence(torch.autograd.Function):
    """Per-token top-k divergence of logits h @ W^T, never holding more than `chunk` rows of logits.

    Forward computes each chunk's logits and divergence without keeping anything but h and W. Backward
    recomputes a chunk's logits, takes the divergence's gradient with respect to them, and accumulates
    grad_W += g^T h_c into ONE [V, H] buffer (and writes grad_h = g W for the chunk): no per-chunk [V, H]
    gradient is ever materialised beside the accumulated one, which is what autograd with activation
    checkpointing would do.
    """

    @staticmethod
    def forward(ctx, h, weight, logp_topk, idx, chunk, divergence, tail, beta):
        out = h.new_empty(h.shape[0], dtype=torch.promote_types(h.dtype, torch.float32))  # [M]
        for s in range(0, h.shape[0], chunk):
            out[s:s + chunk] = per_token_divergence_topk(h[s:s + chunk] @ weight.T, logp_topk[s:s + chunk],
                                                         idx[s:s + chunk], divergence=divergence, tail=tail,
                                                         beta=beta)  # [n]
        ctx.save_for_backward(h, weight, logp_topk, idx)
        ctx.options = (chunk, divergence, tail, beta)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, logp_topk, idx = ctx.saved_tensors
        chunk, divergence, tail, beta = ctx.options
        grad_h = torch.zeros_like(h) if ctx.needs_input_grad[0] else None  # [M, H]
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None  # [V, H]
        for s in range(0, h.shape[0], chunk):
            h_c = h[s:s + chunk]  # [n, H]
            with torch.enable_grad():
                logits = (h_c @ weight.T).detach().requires_grad_(True)  # [n, V]
                d = per_token_divergence_topk(logits, logp_topk[s:s + chunk], idx[s:s + chunk],
                                              divergence=divergence, tail=tail, beta=beta)  # [n]
                (g,) = torch.autograd.grad(d, logits, grad_out[s:s + chunk])  # [n, V]
            g = g.to(h.dtype)
            if grad_h is not None:
                grad_h[s:s + chunk] = g @ weight  # [n, H]
            if grad_w is not None:
                grad_w.addmm_(g.T, h_c)  # [V, H], accumulated in place
        return grad_h, grad_w, None, None, None, None, None, None


class _SupportTopkDivergence(torch.autograd.Function):
    """The renormalised top-k divergence (tail=False, the paper's) of logits h @ W^T, from the support only.

    Renormalised over the teacher's k tokens, the loss depends on the student's logits at those k
    tokens and nowhere else, so neither pass needs a [n, V] logits row: the k logits of a row are
    h . W[idx] (O(k H) instead of O(V H)), the gradient with respect to them is [n, k], and the LM
    head's gradient is scattered into its k rows per position (index_add_ into ONE [V, H] buffer).
    The values equal the full-logits path up to float summation order.
    """

    @staticmethod
    def forward(ctx, h, weight, logp_topk, idx, rows, divergence, beta):
        out = h.new_empty(h.shape[0], dtype=torch.promote_types(h.dtype, torch.float32))  # [M]
        for s in range(0, h.shape[0], rows):
            picked = torch.bmm(weight[idx[s:s + rows]], h[s:s + rows, :, None])[..., 0]   # [n, k]
            out[s:s + rows] = _renormalised_divergence(picked, logp_topk[s:s + rows], divergence, beta)
        ctx.save_for_backward(h, weight, logp_topk, idx)
        ctx.options = (rows, divergence, beta)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, weight, logp_topk, idx = ctx.saved_tensors
        rows, divergence, beta = ctx.options
        grad_h = torch.zeros_like(h) if ctx.needs_input_grad[0] else None   # [M, H]
        grad_w = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None  # [V, H]
        for s in range(0, h.shape[0], rows):
            h_c, idx_c = h[s:s + rows], idx[s:s + rows]                   # [n, H], [n, k]
            w_sel = weight[idx_c]                                         # [n, k, H]
            with torch.enable_grad():
                picked = torch.bmm(w_sel, h_c[:, :, None])[..., 0].detach().requires_grad_(True)  # [n, k]
                d = _renormalised_divergence(picked, logp_topk[s:s + rows], divergence, beta)  # [n]
                (g,) = torch.autograd.grad(d, picked, grad_out[s:s + rows])   # [n, k]
            g = g.to(h.dtype)
            if grad_h is not None:
                grad_h[s:s + rows] = torch.bmm(g[:, None, :], w_sel)[:, 0]   # [n, H]
            if grad_w is not None:
                grad_w.index_add_(0, idx_c.reshape(-1), (g[..., None] * h_c[:, None, :]).reshape(-1, h.shape[1]))
        return grad_h, grad_w, None, None, None, None, None


# Rows per block of the support-only path: its temporaries are [rows, k, H], kept near 32 MiB in fp32.
_SUPPORT_BLOCK_ELEMENTS = 2**23


def chunked_distill_loss(hidden: torch.Tensor, lm_head_weight: torch.Tensor, teacher_topk_logp: torch.Tensor,
                         teacher_topk_idx: torch.Tensor, mask: torch.Tensor, *, chunk: int = 256,
                         divergence: str = "reverse", tail: bool = False,
                         beta: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory-bounded Phase 2 loss (Eq. 4 with the paper's token-mean normalisation).

    hidden [B, T, H]: the student's final hidden states at the response positions only;
    lm_head_weight [V, H]; teacher_topk_logp, teacher_topk_idx [B, T, k] from `teacher_topk`;
    mask [B, T] marks valid response tokens. Student logits hidden @ W^T are computed `chunk`
    valid positions at a time and recomputed in the backward (`_ChunkedTopkDivergence`), which
    accumulates the LM head's gradient into one buffer, so only O(chunk x V) logits and one [V, H]
    gradient are ever live. Without the tail (the paper's renormalised top-k) only the k support logits
    of each position are computed (`_SupportTopkDivergence`). Masked positions are skipped entirely (their
    teacher entries may be garbage). Returns (loss: sum of per-token divergence over valid tokens
    / number of valid tokens, a 0-dim fp32 tensor; per-token divergence [B, T], detached, 0 at
    masked positions). Same values and gradients as
    masked_mean(per_token_divergence_topk(hidden @ W^T, logp, idx), mask).
    """
    _check(divergence, beta)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    shape, k = hidden.shape[:-1], teacher_topk_idx.shape[-1]
    keep = mask.bool().expand(shape).reshape(-1)                        # [N]
    h = hidden.reshape(-1, hidden.shape[-1])[keep]                      # [M, H]
    logp_topk = teacher_topk_logp.detach().reshape(-1, k)[keep]         # [M, k]
    idx = teacher_topk_idx.reshape(-1, k)[keep]                         # [M, k]
    n_valid = h.shape[0]
    out_dtype = torch.promote_types(hidden.dtype, torch.float32)
    if n_valid == 0:  # an empty mask: a 0 loss that is still on the graph
        loss = ((h.sum() + lm_head_weight.sum()) * 0.0).to(out_dtype)
        return loss, hidden.new_zeros(shape, dtype=out_dtype)
    if tail:  # the tail bucket needs each row's full-vocabulary logsumexp: logits a chunk at a time
        per_token_valid = _ChunkedTopkDivergence.apply(h, lm_head_weight, logp_topk, idx, chunk, divergence,
                                                       tail, beta)     # [M]
    else:  # renormalised over the support: only the k logits per row are ever computed
        rows = max(1, min(chunk, _SUPPORT_BLOCK_ELEMENTS // (k * h.shape[1])))
        per_token_valid = _SupportTopkDivergence.apply(h, lm_head_weight, logp_topk, idx.long(), rows, divergence,
                                                       beta)           # [M]
    loss = per_token_valid.sum() / n_valid                              # []
    per_token = per_token_valid.new_zeros(keep.shape[0])                # [N]
    per_token[keep] = per_token_valid.detach()
    return loss, per_token.view(shape)                                  # [], [B, T]


@dataclass(frozen=True)
class DistillLoss:
    """Eq. 4's settings, built once from the config (--divergence, --topk, --support, --tail, --beta,
    --loss-chunk), and the loss itself: `teacher_target` gives the teacher's side from its hidden states,
    calling the object gives (token-mean loss, per-token values [B, T]) from the student's.

    topk None is the full vocabulary. With the teacher's top-k (the paper) the target is (log-probs, indices)
    [B, T, k] and the student's side is `chunked_distill_loss` (memory-bounded); otherwise the target is the
    teacher's full logits [B, T, V] and the student's side `per_token_divergence` on full logits.
    """
    divergence: str = "reverse"
    topk: int | None = 64
    support: str = "teacher"
    tail: bool = False
    beta: float = 0.5
    chunk: int = 256

    def __post_init__(self):
        _check(self.divergence, self.beta, self.support)
        if self.topk is not None and self.topk < 1:
            raise ValueError(f"topk must be >= 1 or None (full vocabulary), got {self.topk}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")

    @property
    def bounded(self) -> bool:
        """The memory-bounded path: the teacher's top-k travel as k log-probs and indices per token."""
        return self.topk is not None and self.support == "teacher"

    def teacher_target(self, hidden: torch.Tensor, lm_head_weight: torch.Tensor, mask: torch.Tensor):
        """The teacher's hidden states [B, T, H] at the response positions -> its side of the loss."""
        if self.bounded:
            return chunked_teacher_topk(hidden, lm_head_weight, mask, self.topk, chunk=self.chunk)
        return hidden.float() @ lm_head_weight.float().T                # [B, T, V]

    def teacher_argmax(self, target) -> torch.Tensor:
        """The teacher's most likely token at each position [B, T]: what the reviser would have written."""
        return target[1][..., 0] if self.bounded else target.argmax(-1)

    def __call__(self, hidden: torch.Tensor, lm_head_weight: torch.Tensor, target,
                 mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 4 from the student's hidden states [B, T, H]: the mean of D(p_S || p_T) over the response tokens
        (mask [B, T]) and the per-token values [B, T], detached."""
        if self.bounded:
            return chunked_distill_loss(hidden, lm_head_weight, *target, mask, chunk=self.chunk,
                                        divergence=self.divergence, tail=self.tail, beta=self.beta)
        logits_student = hidden.float() @ lm_head_weight.float().T      # [B, T, V]
        per_tok = per_token_divergence(logits_student, target, divergence=self.divergence, topk=self.topk,
                                       support=self.support, tail=self.tail, beta=self.beta)  # [B, T]
        return masked_mean(per_tok, mask), per_tok.detach()
