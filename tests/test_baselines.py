"""The baselines' math against hand-computed values: GRPO advantages, the clipped loss, its gradient's
direction, DAPO's clip-higher, token vs sequence normalisation, overlong shaping, RFT's distinct answers."""
import math

import pytest
import torch

import baselines


def test_group_advantages_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    a = baselines.group_advantages(r, scale_by_std=False)
    assert torch.allclose(a, torch.tensor([[0.75, -0.25, -0.25, -0.25], [0.0] * 4, [0.5, 0.5, -0.5, -0.5]]))
    a = baselines.group_advantages(r, scale_by_std=True, eps=0.0 + 1e-12)
    # Group 0: mean 1/4, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5.
    assert torch.allclose(a[0], torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-6)
    assert torch.equal(a[1], torch.zeros(4))  # all equal: no signal, no NaN
    std2 = math.sqrt(4 * 0.25 / 3)
    assert torch.allclose(a[2], torch.tensor([0.5, 0.5, -0.5, -0.5]) / std2, atol=1e-6)
    with pytest.raises(ValueError, match="groups, samples"):
        baselines.group_advantages(torch.zeros(4))


def test_informative_groups():
    r = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.5]])
    assert baselines.informative_groups(r).tolist() == [False, False, True, True]


def test_dynamic_sampling_filters_on_correctness_not_the_shaped_reward():
    """An all-right group whose lengths differ has unequal shaped rewards (one sample in the overlong buffer)
    but no correctness signal: DAPO drops it. A mixed group is kept and shaped."""
    shaped, keep = baselines.group_rewards([1, 1, 1], [10, 95, 100], max_len=100, buffer=20)
    assert not keep and shaped.tolist() == pytest.approx([1.0, 0.25, 0.0])
    assert not baselines.group_rewards([0, 0], [100, 10], 100, 20)[1]
    shaped, keep = baselines.group_rewards([1, 0], [90, 10], 100, 20)
    assert keep and shaped.tolist() == pytest.approx([0.5, 0.0])


def test_overlong_penalty_by_hand():
    # cap 100, buffer 20: free up to 80, then linear to -1 at 100.
    assert baselines.overlong_penalty(50, 100, 20) == 0.0
    assert baselines.overlong_penalty(80, 100, 20) == 0.0
    assert baselines.overlong_penalty(90, 100, 20) == pytest.approx(-0.5)
    assert baselines.overlong_penalty(100, 100, 20) == pytest.approx(-1.0)
    assert baselines.overlong_penalty(130, 100, 20) == -1.0
    assert baselines.overlong_penalty(100, 100, 0) == 0.0  # off
    with pytest.raises(ValueError, match="exceeds"):
        baselines.overlong_penalty(1, 10, 20)


def test_on_policy_loss_is_minus_token_mean_advantage():
    # ratio 1 everywhere (logp == logp_old): the loss value is -sum_t A_i / #tokens (token norm) and
    # -mean_i A_i (sequence norm); with uneven lengths the two differ.
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.0 + 1e-9, 0.0 + 1e-9]])).clamp(min=-20)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    adv = torch.tensor([1.0, -2.0])
    tok, _ = baselines.clipped_pg_loss(logp, logp.detach(), adv, mask, norm="token")
    seq, _ = baselines.clipped_pg_loss(logp, logp.detach(), adv, mask, norm="sequence")
    assert tok.item() == pytest.approx(-(3 * 1.0 + 1 * -2.0) / 4)
    assert seq.item() == pytest.approx(-(1.0 + -2.0) / 2)


def test_gradient_raises_logp_of_positive_advantage_and_lowers_negative():
    logp = torch.full((2, 2), -1.0, requires_grad=True)
    loss, _ = baselines.clipped_pg_loss(logp, logp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 2))
    loss.backward()
    # Gradient descent moves logp against the gradient: up for A > 0, down for A < 0.
    assert (logp.grad[0] < 0).all() and (logp.grad[1] > 0).all()
    # d/dlogp of -rho*A/4 at rho = 1 is -A/4.
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.25], [0.25, 0.25]]))


def test_clip_higher_bounds():
    # Positive advantage: the ratio may rise to 1 + clip_high before the gradient stops; negative
    # advantage: it may fall to 1 - clip_low.
    old = torch.zeros(1, 4)
    ratios = torch.tensor([[1.1, 1.25, 1.3, 0.7]])
    logp = ratios.log().requires_grad_(True)
    adv = torch.tensor([1.0])
    loss, stats = baselines.clipped_pg_loss(logp, old, adv, torch.ones(1, 4), clip_low=0.2, clip_high=0.28)
    loss.backward()
    g = logp.grad[0]
    assert g[0] < 0 and g[1] < 0  # 1.1 and 1.25 are inside (1 - 0.2, 1 + 0.28): still pushed up
    assert g[2] == 0  # 1.3 > 1.28 with A > 0: clipped, no gradient
    assert g[3] < 0  # 0.7 < 0.8 with A > 0: min() keeps the unclipped term, so the gradient stays
    assert stats["clip_share"] == pytest.approx(0.5)  # 1.3 and 0.7 are where the clip bites
    # The symmetric GRPO clip (0.2, 0.2) stops the push at 1.25 too.
    logp2 = ratios.log().requires_grad_(True)
    baselines.clipped_pg_loss(logp2, old, adv, torch.ones(1, 4), clip_low=0.2, clip_high=0.2)[0].backward()
    assert logp2.grad[0, 1] == 0 and logp2.grad[0, 0] < 0
    # Negative advantage: a ratio under 1 - clip_low has no gradient.
    logp3 = torch.tensor([[math.log(0.7), math.log(0.9)]], requires_grad=True)
    baselines.clipped_pg_loss(logp3, torch.zeros(1, 2), torch.tensor([-1.0]), torch.ones(1, 2))[0].backward()
    assert logp3.grad[0, 0] == 0 and logp3.grad[0, 1] > 0


def test_padding_does_not_count():
    logp = torch.randn(2, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    loss, _ = baselines.clipped_pg_loss(logp, logp.detach() + 0.1, torch.tensor([1.0, -0.5]), mask)
    loss.backward()
    assert torch.equal(logp.grad[0, 2:], torch.zeros(3))
    # Changing padded values changes nothing.
    logp_b = logp.detach().clone()
    logp_b[0, 2:] = 100.0
    loss_b, _ = baselines.clipped_pg_loss(logp_b, logp.detach() + 0.1, torch.tensor([1.0, -0.5]), mask)
    assert loss_b.item() == pytest.approx(loss.item())


def test_kl_penalty_k3():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    base, _ = baselines.clipped_pg_loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 2))
    with_kl, stats = baselines.clipped_pg_loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 2),
                                               logp_ref=ref, kl_coef=0.1)
    d = math.log(0.25) - math.log(0.5)
    k3 = (math.exp(d) - d - 1) / 2  # second token has d = 0
    assert stats["kl_ref"] == pytest.approx(k3)
    assert with_kl.item() - base.item() == pytest.approx(0.1 * k3)
    with pytest.raises(ValueError, match="logp_ref"):
        baselines.clipped_pg_loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 2), kl_coef=0.1)
    with pytest.raises(ValueError, match="norm"):
        baselines.clipped_pg_loss(logp, logp, torch.tensor([0.0]), torch.ones(1, 2), norm="batch")


def test_distinct_correct():
    samples = [[1, 2], [1, 2], [3], [1, 2], [4]]
    rewards = [1, 1, 0, 1, 1]
    assert baselines.distinct_correct(samples, rewards) == [0, 4]
    assert baselines.distinct_correct(samples, rewards, dedup=False) == [0, 1, 3, 4]
    assert baselines.distinct_correct(samples, [0] * 5) == []
