"""Tests for distill.py: hand-computed values and directions, numerics, gradients, chunking."""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from distill import (  # noqa: E402
    DistillLoss,
    chunked_distill_loss,
    chunked_teacher_topk,
    masked_mean,
    per_token_divergence,
    per_token_divergence_topk,
    teacher_topk,
)

ln = math.log
DIVS = ["reverse", "forward", "mixed", "jsd"]
# (topk, support, tail): the full vocabulary and every top-k form
MODES = [(None, "teacher", False), (3, "teacher", False), (3, "teacher", True),
         (3, "student", False), (3, "student", True)]


def logits_of(*probs):
    """Logits whose softmax is `probs`, as a [1, V] float32 tensor."""
    return torch.tensor([probs], dtype=torch.float64).log().float()


def div(s, t, d, **kw):
    return per_token_divergence(s, t, divergence=d, **kw)


def kl(p, q):
    return sum(pi * ln(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def rand_logits(*shape, seed=0, scale=2.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


# --- hand-computed values, and the direction of each KL -----------------------------------------

def test_two_token_values_and_direction():
    s, t = logits_of(0.9, 0.1), logits_of(0.5, 0.5)
    reverse = 0.9 * ln(1.8) + 0.1 * ln(0.2)                   # KL(p_S || p_T)
    forward = 0.5 * ln(0.5 / 0.9) + 0.5 * ln(0.5 / 0.1)       # KL(p_T || p_S)
    m = [0.7, 0.3]                                            # 0.5 p_T + 0.5 p_S
    jsd = 0.5 * (0.5 * ln(0.5 / 0.7) + 0.5 * ln(0.5 / 0.3)) + 0.5 * (0.9 * ln(0.9 / 0.7) + 0.1 * ln(0.1 / 0.3))
    m25 = [0.25 * 0.5 + 0.75 * 0.9, 0.25 * 0.5 + 0.75 * 0.1]  # beta p_T + (1 - beta) p_S, beta = 0.25
    jsd25 = 0.25 * kl([0.5, 0.5], m25) + 0.75 * kl([0.9, 0.1], m25)
    assert jsd == pytest.approx(0.5 * kl([0.5, 0.5], m) + 0.5 * kl([0.9, 0.1], m))
    assert abs(reverse - forward) > 0.05
    assert div(s, t, "reverse").item() == pytest.approx(reverse, abs=1e-6)
    assert div(s, t, "forward").item() == pytest.approx(forward, abs=1e-6)
    assert div(s, t, "mixed").item() == pytest.approx(0.5 * forward + 0.5 * reverse, abs=1e-6)
    assert div(s, t, "mixed", beta=0.25).item() == pytest.approx(0.25 * forward + 0.75 * reverse, abs=1e-6)
    assert div(s, t, "jsd").item() == pytest.approx(jsd, abs=1e-6)
    assert div(s, t, "jsd", beta=0.25).item() == pytest.approx(jsd25, abs=1e-6)
    assert div(s, t, "jsd", beta=0.0).item() == 0.0 and div(s, t, "jsd", beta=1.0).item() == 0.0
    # the paper's default is the reverse KL, student first
    assert per_token_divergence(s, t).item() == pytest.approx(reverse, abs=1e-6)


def test_three_token_values_and_direction():
    pS, pT = [0.7, 0.2, 0.1], [0.2, 0.5, 0.3]
    s, t = logits_of(*pS), logits_of(*pT)
    reverse = 0.7 * ln(0.7 / 0.2) + 0.2 * ln(0.2 / 0.5) + 0.1 * ln(0.1 / 0.3)
    forward = 0.2 * ln(0.2 / 0.7) + 0.5 * ln(0.5 / 0.2) + 0.3 * ln(0.3 / 0.1)
    m = [0.3 * a + 0.7 * b for a, b in zip(pT, pS)]
    jsd30 = 0.3 * kl(pT, m) + 0.7 * kl(pS, m)
    assert abs(reverse - forward) > 0.01  # the directions differ by far more than the 1e-6 tolerance below
    assert div(s, t, "reverse").item() == pytest.approx(reverse, abs=1e-6)
    assert div(s, t, "forward").item() == pytest.approx(forward, abs=1e-6)
    assert div(s, t, "mixed", beta=0.3).item() == pytest.approx(0.3 * forward + 0.7 * reverse, abs=1e-6)
    assert div(s, t, "jsd", beta=0.3).item() == pytest.approx(jsd30, abs=1e-6)
    # swapping the arguments swaps reverse and forward
    assert div(t, s, "reverse").item() == pytest.approx(forward, abs=1e-6)


def test_topk_hand_values():
    pS, pT = [0.7, 0.2, 0.1], [0.2, 0.5, 0.3]
    s, t = logits_of(*pS), logits_of(*pT)
    # teacher support k=2: tokens 1, 2
    rS, rT = [0.2 / 0.3, 0.1 / 0.3], [0.5 / 0.8, 0.3 / 0.8]
    assert div(s, t, "reverse", topk=2).item() == pytest.approx(kl(rS, rT), abs=1e-6)
    assert div(s, t, "forward", topk=2).item() == pytest.approx(kl(rT, rS), abs=1e-6)
    # tail: buckets (token 1, token 2, rest)
    bS, bT = [0.2, 0.1, 0.7], [0.5, 0.3, 0.2]
    assert div(s, t, "reverse", topk=2, tail=True).item() == pytest.approx(kl(bS, bT), abs=1e-6)
    assert div(s, t, "forward", topk=2, tail=True).item() == pytest.approx(kl(bT, bS), abs=1e-6)
    # student support k=2: tokens 0, 1
    rS, rT = [0.7 / 0.9, 0.2 / 0.9], [0.2 / 0.7, 0.5 / 0.7]
    assert div(s, t, "reverse", topk=2, support="student").item() == pytest.approx(kl(rS, rT), abs=1e-6)
    bS, bT = [0.7, 0.2, 0.1], [0.2, 0.5, 0.3]
    assert div(s, t, "reverse", topk=2, support="student", tail=True).item() == pytest.approx(kl(bS, bT), abs=1e-6)
    # top-1 renormalised: both are a point mass on the same token
    assert div(s, t, "reverse", topk=1).item() == pytest.approx(0.0, abs=1e-7)


# --- properties on random logits ---------------------------------------------------------------

@pytest.mark.parametrize("topk,support,tail", MODES)
def test_nonnegative(topk, support, tail):
    s, t = rand_logits(4, 6, 7, seed=1), rand_logits(4, 6, 7, seed=2)
    for d in DIVS:
        out = div(s, t, d, topk=topk, support=support, tail=tail)
        assert out.shape == (4, 6) and out.dtype == torch.float32
        assert (out >= -1e-6).all(), d
    assert div(s, s, "reverse", topk=topk, support=support, tail=tail).abs().max() < 1e-6


def test_jsd_symmetric_at_half():
    s, t = rand_logits(5, 9, seed=3), rand_logits(5, 9, seed=4)
    torch.testing.assert_close(div(s, t, "jsd"), div(t, s, "jsd"), atol=1e-6, rtol=0)
    torch.testing.assert_close(div(s, t, "jsd", beta=0.2), div(t, s, "jsd", beta=0.8), atol=1e-6, rtol=0)
    assert not torch.allclose(div(s, t, "reverse"), div(t, s, "reverse"), atol=1e-3)
    assert (div(s, t, "jsd") <= ln(2) + 1e-6).all()


@pytest.mark.parametrize("support", ["teacher", "student"])
def test_tail_kl_at_most_full_kl(support):
    s, t = rand_logits(6, 10, seed=5), rand_logits(6, 10, seed=6)
    for d in DIVS:
        full = div(s, t, d)
        for k in (1, 3, 9):
            # coarsening never increases a divergence; 1e-5 is fp32 rounding at k = V - 1 (near equality)
            assert (div(s, t, d, topk=k, support=support, tail=True) <= full + 1e-5).all(), (d, k)


@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("support", ["teacher", "student"])
def test_topk_equals_full_when_k_is_vocab(support, tail):
    s, t = rand_logits(3, 4, 8, seed=7), rand_logits(3, 4, 8, seed=8)
    for d in DIVS:
        full = div(s, t, d)
        for k in (8, 50):  # k == V, and k > V (clamped to V)
            torch.testing.assert_close(div(s, t, d, topk=k, support=support, tail=tail), full, atol=1e-5, rtol=0)


def test_student_support_differs_from_teacher_support():
    s, t = rand_logits(6, 10, seed=9), rand_logits(6, 10, seed=10)
    a = div(s, t, "reverse", topk=3, support="student")
    b = div(s, t, "reverse", topk=3, support="teacher")
    assert not torch.allclose(a, b, atol=1e-3)
    # student support == renormalising over the student's top-3 by hand
    idx = s.topk(3, -1).indices
    ref = div(s.gather(-1, idx), t.gather(-1, idx), "reverse")
    torch.testing.assert_close(a, ref, atol=1e-6, rtol=0)


# --- gradients -------------------------------------------------------------------------------

def reference(s, t, d, beta=0.5, topk=None, support="teacher", tail=False):
    """Independent float64 reference in probability space."""
    s, t = s.double(), t.detach().double()
    pS, pT = s.softmax(-1), t.softmax(-1)
    if topk is not None:
        idx = (t if support == "teacher" else s).topk(topk, -1).indices
        qS, qT = pS.gather(-1, idx), pT.gather(-1, idx)
        if tail and topk < s.shape[-1]:
            pS = torch.cat([qS, 1 - qS.sum(-1, keepdim=True)], -1)
            pT = torch.cat([qT, 1 - qT.sum(-1, keepdim=True)], -1)
        else:
            pS, pT = qS / qS.sum(-1, keepdim=True), qT / qT.sum(-1, keepdim=True)

    def KL(p, q):
        return (p * (p / q).log()).sum(-1)

    if d == "reverse":
        return KL(pS, pT)
    if d == "forward":
        return KL(pT, pS)
    if d == "mixed":
        return beta * KL(pT, pS) + (1 - beta) * KL(pS, pT)
    m = beta * pT + (1 - beta) * pS
    return beta * KL(pT, m) + (1 - beta) * KL(pS, m)


@pytest.mark.parametrize("topk,support,tail", MODES)
@pytest.mark.parametrize("d", DIVS)
def test_values_and_grads_match_float64_reference(d, topk, support, tail):
    s0, t = rand_logits(3, 5, 7, seed=11), rand_logits(3, 5, 7, seed=12)
    w = rand_logits(3, 5, seed=13)  # a random cotangent, so every position's gradient counts
    s = s0.clone().requires_grad_(True)
    out = div(s, t, d, beta=0.3, topk=topk, support=support, tail=tail)
    (out * w).sum().backward()
    s64 = s0.double().requires_grad_(True)
    ref = reference(s64, t, d, beta=0.3, topk=topk, support=support, tail=tail)
    (ref * w.double()).sum().backward()
    torch.testing.assert_close(out.double(), ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s.grad.double(), s64.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("topk,support,tail", [(None, "teacher", False), (2, "teacher", True), (2, "student", True)])
def test_gradcheck_float64(topk, support, tail):
    s = rand_logits(2, 5, seed=14, dtype=torch.float64).requires_grad_(True)
    t = rand_logits(2, 5, seed=15, dtype=torch.float64)
    for d in DIVS:
        assert torch.autograd.gradcheck(
            lambda x: div(x, t, d, topk=topk, support=support, tail=tail), (s,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("topk,support,tail", MODES)
def test_no_gradient_reaches_teacher(topk, support, tail):
    s = rand_logits(2, 3, 7, seed=16).requires_grad_(True)
    t = rand_logits(2, 3, 7, seed=17).requires_grad_(True)
    for d in DIVS:
        div(s, t, d, topk=topk, support=support, tail=tail).sum().backward()
        assert t.grad is None
        assert s.grad is not None and torch.isfinite(s.grad).all()
    logp, idx = teacher_topk(t, 3)
    assert not logp.requires_grad
    per_token_divergence_topk(s, logp, idx).sum().backward()
    assert t.grad is None


# --- numerics ---------------------------------------------------------------------------------

def test_extreme_logits_and_inf_entries_are_finite():
    inf = float("inf")
    # last column: a padded vocabulary row, -inf in both models; +-1e4 elsewhere
    s = torch.tensor([[1e4, -1e4, 0.0, 3.0, -inf], [-1e4, 1e4, 1e4, -1e4, -inf], [0.0, 0.0, 0.0, 0.0, -inf]])
    t = torch.tensor([[-1e4, 1e4, 0.0, -3.0, -inf], [1e4, -1e4, 1e4, 5.0, -inf], [1e4, -1e4, 0.0, 0.0, -inf]])
    for topk, support, tail in MODES + [(4, "teacher", True), (5, "teacher", True), (4, "student", True),
                                        (1, "teacher", True), (1, "student", False)]:
        for d in DIVS:
            x = s.clone().requires_grad_(True)
            out = div(x, t, d, topk=topk, support=support, tail=tail)
            out.sum().backward()
            assert torch.isfinite(out).all() and (out >= -1e-4).all(), (d, topk, support, tail)
            assert torch.isfinite(x.grad).all(), (d, topk, support, tail)
    # the reverse KL is large but finite when the two disagree by 2e4 nats
    assert div(s, t, "reverse")[0].item() == pytest.approx(2e4, rel=1e-3)
    # -inf in one model only: finite for every KL whose first argument holds the zero, and for jsd
    a = torch.tensor([[-inf, 1.0, 2.0, 0.5]])
    b = torch.tensor([[0.3, 1.0, -1.0, 0.5]])
    for s_, t_, d in [(a, b, "reverse"), (b, a, "forward"), (a, b, "jsd"), (b, a, "jsd")]:
        x = s_.clone().requires_grad_(True)
        for topk, support, tail in MODES:
            out = div(x, t_, d, topk=topk, support=support, tail=tail)
            out.sum().backward()
            assert torch.isfinite(out).all() and torch.isfinite(x.grad).all(), (d, topk, support, tail)
    # a true infinity is reported, not hidden
    assert div(a, b, "forward").item() == float("inf")


def test_bf16_inputs_give_fp32_outputs():
    s32, t32 = rand_logits(2, 3, 9, seed=18), rand_logits(2, 3, 9, seed=19)
    s, t = s32.bfloat16().requires_grad_(True), t32.bfloat16()
    for topk, support, tail in MODES:
        for d in DIVS:
            out = div(s, t, d, topk=topk, support=support, tail=tail)
            assert out.dtype == torch.float32
            torch.testing.assert_close(out, div(s.float(), t.float(), d, topk=topk, support=support, tail=tail))
    logp, idx = teacher_topk(t, 4)
    assert logp.dtype == torch.float32 and idx.dtype == torch.int64
    out = per_token_divergence_topk(s, logp.bfloat16(), idx)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert s.grad.dtype == torch.bfloat16
    hidden, weight = rand_logits(2, 3, 4, seed=29).bfloat16(), rand_logits(9, 4, seed=30).bfloat16()
    loss, per_token = chunked_distill_loss(hidden, weight.requires_grad_(True), logp, idx, torch.ones(2, 3), chunk=2)
    assert loss.dtype == per_token.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(weight.grad).all()


# --- the teacher's top-k form --------------------------------------------------------------------

def test_teacher_topk():
    t = rand_logits(2, 3, 10, seed=20)
    logp, idx = teacher_topk(t, 4)
    assert logp.shape == idx.shape == (2, 3, 4)
    torch.testing.assert_close(idx, t.topk(4, -1).indices)
    torch.testing.assert_close(logp, t.log_softmax(-1).gather(-1, idx))
    assert (logp[..., :-1] >= logp[..., 1:]).all()
    assert teacher_topk(t, 99)[0].shape[-1] == 10
    with pytest.raises(ValueError):
        teacher_topk(t, 0)


def test_teacher_topk_blocks(monkeypatch):
    import distill
    t = rand_logits(3, 7, 10, seed=26)
    whole = teacher_topk(t, 4)
    monkeypatch.setattr(distill, "_TOPK_BLOCK_ELEMENTS", 25)  # 2 rows per block, 21 rows
    blocked = teacher_topk(t, 4)
    assert torch.equal(whole[0], blocked[0]) and torch.equal(whole[1], blocked[1])
    empty = teacher_topk(torch.zeros(0, 5, 10), 4)
    assert empty[0].shape == empty[1].shape == (0, 5, 4)


def test_tail_of_a_confident_teacher_is_accurate():
    # The teacher's top-4 hold all but ~1e-6 of its mass: 1 - sum p_topk in plain fp32 would be noise.
    t, s = rand_logits(8, 2000, seed=27), rand_logits(8, 2000, seed=28)
    t[:, 0] += 22.0
    s[:, 0] += 8.0
    logp, idx = teacher_topk(t, 4)
    for d in DIVS:
        ours = per_token_divergence_topk(s, logp, idx, divergence=d, tail=True).double()
        ref = reference(s, t, d, topk=4, tail=True)
        torch.testing.assert_close(ours, ref, rtol=5e-5, atol=1e-6)


@pytest.mark.parametrize("tail", [False, True])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_topk_variant_equals_full_logits_variant(k, tail):
    s0, t = rand_logits(2, 4, 10, seed=21), rand_logits(2, 4, 10, seed=22)
    logp, idx = teacher_topk(t, k)
    for d in DIVS:
        s1, s2 = s0.clone().requires_grad_(True), s0.clone().requires_grad_(True)
        a = per_token_divergence_topk(s1, logp, idx, divergence=d, tail=tail, beta=0.3)
        b = div(s2, t, d, topk=k, support="teacher", tail=tail, beta=0.3)
        assert torch.equal(a, b), (d, k, tail)
        a.sum().backward()
        b.sum().backward()
        assert torch.equal(s1.grad, s2.grad)
        # and an independent construction of the same support
        torch.testing.assert_close(a.double(), reference(s0, t, d, beta=0.3, topk=k, tail=tail), atol=1e-5, rtol=1e-5)


# --- reductions ------------------------------------------------------------------------------------

def test_masked_mean_ignores_padding():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = masked_mean(values, mask)
    assert out.item() == pytest.approx(7.0 / 3.0)
    out.backward()
    torch.testing.assert_close(values.grad, mask.float() / 3.0)
    # garbage (even inf/nan) at masked positions changes neither the value nor the gradients
    junk = torch.tensor([[1.0, 2.0, float("inf")], [4.0, float("nan"), -1e30]], requires_grad=True)
    out2 = masked_mean(junk, mask.bool())
    out2.backward()
    assert out2.item() == out.item()
    torch.testing.assert_close(junk.grad, values.grad)
    # empty mask: 0, and backward still works
    empty = masked_mean(values, torch.zeros_like(mask))
    assert empty.item() == 0.0 and empty.requires_grad
    empty.backward()


def test_masked_mean_of_divergence_ignores_padded_positions():
    s, t = rand_logits(2, 5, 6, seed=23), rand_logits(2, 5, 6, seed=24)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    s2 = s.clone()
    s2[mask == 0] = rand_logits(3, 6, seed=25) * 10
    x1, x2 = s.clone().requires_grad_(True), s2.clone().requires_grad_(True)
    l1 = masked_mean(per_token_divergence(x1, t, topk=3), mask)
    l2 = masked_mean(per_token_divergence(x2, t, topk=3), mask)
    l1.backward()
    l2.backward()
    assert l1.item() == l2.item()
    torch.testing.assert_close(x1.grad, x2.grad)
    assert (x1.grad[mask == 0] == 0).all()


# --- the memory-bounded Phase 2 loss -------------------------------------------------------------

B, T, H, V, K = 2, 5, 8, 11, 4


def chunk_inputs(seed):
    hidden = rand_logits(B, T, H, seed=seed, scale=1.0)
    weight = rand_logits(V, H, seed=seed + 1, scale=1.0)
    logp, idx = teacher_topk(rand_logits(B, T, V, seed=seed + 2), K)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    return hidden, weight, logp, idx, mask


def naive_loss(hidden, weight, logp, idx, mask, **kw):
    logits = hidden @ weight.T                                        # [B, T, V]
    per_token = per_token_divergence_topk(logits, logp, idx, **kw)    # [B, T]
    return masked_mean(per_token, mask), per_token


@pytest.mark.parametrize("divergence,tail", [("reverse", False), ("reverse", True), ("mixed", False), ("jsd", True),
                                             ("forward", False), ("jsd", False)])
@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_chunked_equals_naive(chunk, divergence, tail):
    hidden, weight, logp, idx, mask = chunk_inputs(seed=30)
    h1, w1 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    h2, w2 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    kw = dict(divergence=divergence, tail=tail, beta=0.5)
    loss, per_token = chunked_distill_loss(h1, w1, logp, idx, mask, chunk=chunk, **kw)
    ref, ref_per_token = naive_loss(h2, w2, logp, idx, mask, **kw)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    assert per_token.shape == (B, T) and not per_token.requires_grad
    torch.testing.assert_close(per_token, torch.where(mask.bool(), ref_per_token.detach(), 0.0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w1.grad, w2.grad, atol=1e-5, rtol=1e-5)


def test_support_path_gradcheck_float64(monkeypatch):
    """The support-only autograd function (tail=False) against finite differences in float64, with
    blocks of rows that do not divide the number of valid positions."""
    import distill
    monkeypatch.setattr(distill, "_SUPPORT_BLOCK_ELEMENTS", 2 * K * H)  # 2 rows per block
    hidden, weight, logp, idx, mask = chunk_inputs(seed=35)
    h, w = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda h_, w_: chunked_distill_loss(h_, w_, logp.double(), idx, mask, chunk=5)[0], (h, w))


def test_chunked_teacher_topk_equals_full_logits_topk():
    hidden = rand_logits(B, T, H, seed=36, scale=1.0)
    weight = rand_logits(V, H, seed=37, scale=1.0)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    ref_logp, ref_idx = teacher_topk(hidden @ weight.T, K)                  # [B, T, K]
    for chunk in (1, 2, 4, 100):
        logp, idx = chunked_teacher_topk(hidden, weight, mask, K, chunk=chunk)
        valid = mask.bool()
        torch.testing.assert_close(logp[valid], ref_logp[valid])
        assert torch.equal(idx[valid], ref_idx[valid])
        assert (logp[~valid] == 0).all() and (idx[~valid] == 0).all()
    logp, idx = chunked_teacher_topk(hidden, weight, torch.zeros(B, T), K)  # nothing valid
    assert logp.shape == (B, T, K) and (logp == 0).all()
    with pytest.raises(ValueError):
        chunked_teacher_topk(hidden, weight, mask, K, chunk=0)


def test_chunked_skips_padding_and_handles_empty_mask():
    hidden, weight, logp, idx, mask = chunk_inputs(seed=40)
    h = hidden.clone().requires_grad_(True)
    loss, _ = chunked_distill_loss(h, weight, logp, idx, mask, chunk=3)
    loss.backward()
    # garbage at padded positions, hidden and teacher alike, changes nothing
    hidden2, logp2 = hidden.clone(), logp.clone()
    hidden2[mask == 0] = float("nan")
    logp2[mask == 0] = float("-inf")
    h2 = hidden2.clone().requires_grad_(True)
    loss2, per_token2 = chunked_distill_loss(h2, weight, logp2, idx, mask, chunk=3)
    loss2.backward()
    assert loss2.item() == loss.item()
    assert (h2.grad[mask == 0] == 0).all()
    torch.testing.assert_close(h2.grad[mask == 1], h.grad[mask == 1])
    assert (per_token2[mask == 0] == 0).all()
    # empty mask: 0 on the graph
    h3, w3 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    loss3, per_token3 = chunked_distill_loss(h3, w3, logp, idx, torch.zeros(B, T), chunk=3)
    assert loss3.item() == 0.0 and loss3.requires_grad
    loss3.backward()
    assert (per_token3 == 0).all()
    # no grad needed: no checkpointing, same value
    with torch.no_grad():
        assert chunked_distill_loss(hidden, weight, logp, idx, mask, chunk=3)[0].item() == pytest.approx(loss.item())


def test_invalid_arguments():
    s, t = rand_logits(2, 5, seed=50), rand_logits(2, 5, seed=51)
    for kw in [dict(divergence="kl"), dict(support="both", topk=2), dict(beta=1.5), dict(topk=0)]:
        with pytest.raises(ValueError):
            per_token_divergence(s, t, **kw)
    with pytest.raises(ValueError):
        per_token_divergence(s, t[:, :4])


@pytest.mark.parametrize("topk,support,tail", MODES)
@pytest.mark.parametrize("d", DIVS)
def test_distill_loss_object_is_the_functional_loss(d, topk, support, tail):
    """DistillLoss (what train.py builds once from the flags) gives the same loss, per-token values and LM-head
    gradient as the functions it wraps: the memory-bounded path for the teacher's top-k, full logits otherwise."""
    loss_fn = DistillLoss(divergence=d, topk=topk, support=support, tail=tail, beta=0.3, chunk=2)
    assert loss_fn.bounded == (topk is not None and support == "teacher")
    h_s, h_t = rand_logits(2, 3, 4, seed=41), rand_logits(2, 3, 4, seed=42)  # fp32, as the trainer's
    weight = rand_logits(7, 4, seed=43).requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    target = loss_fn.teacher_target(h_t, weight, mask)
    assert isinstance(target, tuple) == loss_fn.bounded
    loss, per_tok = loss_fn(h_s, weight, target, mask)
    loss.backward()
    grad, weight.grad = weight.grad.clone(), None
    ref_tok = per_token_divergence(h_s @ weight.T, h_t @ weight.T, divergence=d, topk=topk, support=support,
                                   tail=tail, beta=0.3)  # [2, 3]
    ref = masked_mean(ref_tok, mask)
    ref.backward()
    tol = dict(rtol=1e-5, atol=1e-6)  # float summation order
    torch.testing.assert_close(loss.double(), ref.double(), **tol)
    torch.testing.assert_close((per_tok * mask).double(), (ref_tok * mask).detach().double(), **tol)
    torch.testing.assert_close(grad, weight.grad, **tol)
    argmax = loss_fn.teacher_argmax(target)
    assert argmax.shape == (2, 3)
    if loss_fn.bounded or topk is None:  # the teacher's most likely token
        torch.testing.assert_close(argmax[mask.bool()], (h_t @ weight.T).argmax(-1)[mask.bool()])


def test_distill_loss_refuses_bad_settings():
    for kw, msg in ((dict(divergence="kl"), "divergence"), (dict(support="both"), "support"),
                    (dict(beta=1.5), "beta"), (dict(topk=0), "topk"), (dict(chunk=0), "chunk")):
        with pytest.raises(ValueError, match=msg):
            DistillLoss(**kw)
