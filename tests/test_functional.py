"""Equation-level functions (arXiv 2605.22376, Eqs. 5, 7, 8, 9) against hand computations."""

import math

import pytest
import torch

from tabb_torchrl.objectives.functional import (
    bellman_target,
    effective_sample_size,
    expectile_loss,
    huber_loss,
    masked_mean,
    target_bellman_mismatch,
    tbm_weights,
    weight_entropy,
)


def test_huber_matches_formula():
    u = torch.tensor([-3.0, -0.5, 0.0, 0.2, 2.0])
    for delta in (0.5, 1.0, 5.0):
        ref = torch.where(u.abs() <= delta, 0.5 * u**2, delta * (u.abs() - 0.5 * delta))
        torch.testing.assert_close(huber_loss(u, torch.zeros_like(u), delta), ref)


def test_expectile_matches_formula():
    u = torch.tensor([-2.0, -0.1, 0.0, 0.3, 4.0])
    kappa = 0.7
    ref = torch.tensor([(1 - kappa) * 4.0, (1 - kappa) * 0.01, 0.0, kappa * 0.09, kappa * 16.0])
    torch.testing.assert_close(expectile_loss(u, kappa), ref)


def test_bellman_target_and_tbm():
    r = torch.tensor([[1.0], [2.0]])
    v = torch.tensor([[3.0], [4.0]])
    d = torch.tensor([[False], [True]])
    torch.testing.assert_close(bellman_target(r, v, d, 0.9), torch.tensor([[1 + 0.9 * 3], [2.0]]))
    r_hat = torch.tensor([[0.5], [1.0]])
    v_hat = torch.tensor([[1.0], [10.0]])
    tbm = target_bellman_mismatch(r, v, r_hat, v_hat, d, 0.9)
    ref = torch.tensor([[abs((1 + 0.9 * 3) - (0.5 + 0.9 * 1))], [abs(2.0 - 1.0)]])
    torch.testing.assert_close(tbm, ref)
    # predicted termination replaces d in the aligned target only
    tbm_p = target_bellman_mismatch(r, v, r_hat, v_hat, d, 0.9, terminated_hat=torch.tensor([[1.0], [0.0]]))
    ref_p = torch.tensor([[abs((1 + 0.9 * 3) - 0.5)], [abs(2.0 - (1.0 + 0.9 * 10))]])
    torch.testing.assert_close(tbm_p, ref_p)


def _hand_weights(tbm_src, tau, scaling):
    x = torch.tensor(tbm_src, dtype=torch.float64)
    s = x.std() + 1e-6 if scaling == "batch_std" else 1.0
    return len(tbm_src) * torch.softmax(-x / (tau * s), 0)


@pytest.mark.parametrize("scaling", ["batch_std", "absolute"])
@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_tbm_weights_hand_computation(scaling, tau):
    tbm = torch.tensor([[0.3], [1.2], [7.0], [0.0], [2.5], [0.9]])
    src = torch.tensor([True, True, False, True, False, True])
    w = tbm_weights(tbm, src, temperature=tau, scaling=scaling)
    assert w.shape == tbm.shape
    ref = _hand_weights([0.3, 1.2, 0.0, 0.9], tau, scaling).float()
    torch.testing.assert_close(w[src, 0], ref)
    torch.testing.assert_close(w[~src, 0], torch.ones(2))
    torch.testing.assert_close(w[src].mean(), torch.tensor(1.0))
    # smaller TBM -> larger weight
    assert w[3] > w[0] > w[5] > w[1]


def test_tbm_weights_huge_values_are_finite_and_correct():
    tbm = torch.tensor([0.0, 1e30, 2e30, 5.0])
    src = torch.tensor([True, True, True, False])
    w = tbm_weights(tbm, src)  # batch_std: std = 1e30 -> logits 0, 1, 2
    assert torch.isfinite(w).all()
    ref = _hand_weights([0.0, 1e30, 2e30], 1.0, "batch_std").float()
    torch.testing.assert_close(w[:3], ref)
    w_abs = tbm_weights(tbm, src, scaling="absolute")
    assert torch.isfinite(w_abs).all()
    torch.testing.assert_close(w_abs, torch.tensor([3.0, 0.0, 0.0, 1.0]))
    w_all_huge = tbm_weights(torch.full((4,), 1e30), None)
    torch.testing.assert_close(w_all_huge, torch.ones(4))


@pytest.mark.parametrize("scaling", ["batch_std", "absolute"])
def test_tbm_weights_edge_cases(scaling):
    # equal TBMs -> all ones
    torch.testing.assert_close(tbm_weights(torch.full((5, 1), 3.7), None, scaling=scaling), torch.ones(5, 1))
    # one source row: std undefined -> weight 1, no NaN
    w = tbm_weights(torch.tensor([4.0, 0.0, 0.0]), torch.tensor([True, False, False]), scaling=scaling)
    torch.testing.assert_close(w, torch.ones(3))
    # zero source rows -> all ones
    w = tbm_weights(torch.tensor([4.0, 1.0]), torch.tensor([False, False]), scaling=scaling)
    torch.testing.assert_close(w, torch.ones(2))
    # empty batch
    assert tbm_weights(torch.zeros(0), torch.zeros(0, dtype=torch.bool), scaling=scaling).shape == (0,)


def test_tbm_weights_are_detached_and_validate_args():
    tbm = torch.tensor([1.0, 2.0], requires_grad=True)
    assert not tbm_weights(tbm).requires_grad
    with pytest.raises(ValueError, match="scaling"):
        tbm_weights(tbm, scaling="std")
    with pytest.raises(ValueError, match="temperature"):
        tbm_weights(tbm, temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        tbm_weights(tbm, temperature=-1.0)


def test_ess_and_entropy():
    w = torch.tensor([2.0, 1.0, 1.0, 0.0, 9.0])
    mask = torch.tensor([True, True, True, True, False])
    torch.testing.assert_close(effective_sample_size(w, mask), torch.tensor(16.0 / 6.0))
    p = torch.tensor([0.5, 0.25, 0.25])
    torch.testing.assert_close(weight_entropy(w, mask), -(p * p.log()).sum())
    torch.testing.assert_close(weight_entropy(torch.ones(8)), torch.tensor(math.log(8)))
    assert effective_sample_size(w, torch.zeros(5, dtype=torch.bool)) == 0
    assert weight_entropy(w, torch.zeros(5, dtype=torch.bool)) == 0


def test_masked_mean():
    x = torch.tensor([[1.0, 0.0], [float("nan"), 4.0]])
    mask = torch.tensor([True, False])
    # a [N] mask selects rows of [N, d] values
    torch.testing.assert_close(masked_mean(x, mask, dim=0), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(masked_mean(x.T, mask.expand(2, 2), dim=-1), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(masked_mean(torch.tensor([1.0, float("nan")]), mask), torch.tensor(1.0))


# ----------------------------------------------------------------------------- Eqs. 5, 8-10 by hand
from tabb_torchrl.objectives.functional import (  # noqa: E402
    awr_actor_loss,
    critic_loss,
    gaussian_log_prob,
    split_mean,
    target_aligned_backup,
    value_loss,
)


def test_target_aligned_backup_by_hand():
    # y = 1 + 0.5 * 4 = 3 ; y_hat = 0.5 + 0.5 * 2 = 1.5 ; terminal row: y = 1, y_hat = 0.5
    out = target_aligned_backup(torch.tensor([1.0, 1.0]), torch.tensor([4.0, 4.0]), torch.tensor([0.5, 0.5]),
                                torch.tensor([2.0, 2.0]), torch.tensor([False, True]), gamma=0.5)
    assert out.realised.tolist() == [3.0, 1.0]
    assert out.aligned.tolist() == [1.5, 0.5]
    assert out.tbm.tolist() == [1.5, 0.5]
    # a predicted termination replaces d in the aligned target only
    out = target_aligned_backup(torch.tensor([1.0]), torch.tensor([4.0]), torch.tensor([0.5]), torch.tensor([2.0]),
                                torch.tensor([False]), gamma=0.5, terminated_hat=torch.tensor([1.0]))
    assert out.realised.tolist() == [3.0] and out.aligned.tolist() == [0.5]


def test_split_mean_counts_each_domain_over_its_own_rows():
    loss = torch.tensor([[1.0, 3.0, 5.0, 10.0, 20.0]])
    src = torch.tensor([True, True, True, False, False])
    keep = src & torch.tensor([True, False, True, True, True])  # a row filter drops the second source row
    w = torch.tensor([2.0, 7.0, 0.5, 1.0, 1.0])
    # target mean 15 ; kept source rows (2*1 + 0.5*5) / 2 = 2.25
    assert split_mean(loss, ~src, keep, w).tolist() == [17.25]
    assert split_mean(loss, ~src).tolist() == [15.0]
    assert split_mean(loss).tolist() == pytest.approx([7.8])
    # no source rows at all: the source term is 0, not NaN
    assert split_mean(loss, torch.ones(5, dtype=torch.bool), torch.zeros(5, dtype=torch.bool)).tolist() == \
        pytest.approx([7.8])


def test_critic_loss_by_hand():
    q = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    y = torch.tensor([0.5, 3.0, 0.0, 2.0])
    src = torch.tensor([True, True, False, False])
    w = torch.tensor([2.0, 0.5, 1.0, 1.0])
    # critic 1: huber(.5)=.125, huber(3)=2.5, huber(0)=0, huber(2)=1.5 -> .75 + (2*.125 + .5*2.5)/2 = 1.5
    # critic 2: u = .5, -2, 1, -1 -> .125, 1.5, .5, .5 -> .5 + (.25 + .75)/2 = 1.0
    assert critic_loss(q, y, ~src, src, w).item() == pytest.approx(1.25)
    # squared loss (delta=None): critic 1 only
    sq = critic_loss(q[:1], y, ~src, src, w, delta=None).item()
    assert sq == pytest.approx((0 + 2) / 2 + (2 * 0.125 + 0.5 * 4.5) / 2)


def test_value_loss_and_awr_by_hand():
    # expectile 0.9: u = 1 -> 0.9 ; u = -2 -> 0.1 * 4 = 0.4
    assert value_loss(torch.tensor([1.0, -2.0]), torch.zeros(2), 0.9).item() == pytest.approx(0.65)
    lp = torch.tensor([-1.0, -2.0, -3.0])
    adv = torch.tensor([0.0, 1.0, 10.0])
    # beta 1: weights 1, e, clip 5 -> (1 + 2e + 15) / 3
    expected = (1.0 + 2 * math.e + 15.0) / 3
    assert awr_actor_loss(lp, adv, beta=1.0, max_weight=5.0).item() == pytest.approx(expected)
    # the clip matters: without it the third row weighs e^10
    assert awr_actor_loss(lp, adv, beta=1.0, max_weight=1e9).item() > 1e4
    # no gradient through the advantage
    a = adv.clone().requires_grad_(True)
    awr_actor_loss(lp.clone().requires_grad_(True), a, beta=1.0).backward()
    assert a.grad is None


def test_gaussian_log_prob_matches_torch_normal():
    g = torch.Generator().manual_seed(0)
    x, mu, ls = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g), torch.randn(3, generator=g) * 0.3
    ref = torch.distributions.Normal(mu, ls.exp()).log_prob(x).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(x, mu, ls), ref)


def test_critic_loss_with_a_source_threshold_of_its_own():
    """DROCO-style: squared error on target rows, Huber(30) on source rows."""
    q = torch.zeros(1, 3)
    y = torch.tensor([40.0, 2.0, 3.0])
    src, tgt = torch.tensor([True, True, False]), torch.tensor([False, False, True])
    got = critic_loss(q, y, tgt, src, None, delta=None, source_delta=30.0).item()
    # target: 0.5 * 9 = 4.5 ; source: huber30(40) = 30 * (40 - 15) = 750, 0.5 * 4 = 2 -> 376
    assert got == pytest.approx(4.5 + 376.0)
    assert critic_loss(q, y, tgt, src, None, delta=None).item() == pytest.approx(4.5 + (800 + 2) / 2)
