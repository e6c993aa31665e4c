"""FusedSACUpdate: the same SAC-v2 step as TorchRL's SACLoss + SoftUpdate, on the loss's own parameters."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.data import Bounded
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import SACLoss, SoftUpdate

from tabb_torchrl.behavior.policies import SquashedGaussianActor
from tabb_torchrl.behavior.sac import FusedSACUpdate, tanh_normal_sample

OBS, ACT, N = 5, 3, 64


def _make(seed: int = 0, alpha_init: float = 1.0):
    torch.manual_seed(seed)
    net = SquashedGaussianActor(OBS, ACT, (32, 32))
    spec = Bounded(-torch.ones(ACT), torch.ones(ACT), shape=(ACT,))
    actor = ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"], spec=spec, distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
    )
    q = ValueOperator(MLP(in_features=OBS + ACT, out_features=1, num_cells=[32, 32]), in_keys=["observation", "action"])
    loss = SACLoss(actor, q, num_qvalue_nets=2, loss_function="l2", alpha_init=alpha_init, action_spec=spec,
                   target_entropy="auto", delay_qvalue=True)
    loss.make_value_estimator(gamma=0.9)
    opts = [
        torch.optim.Adam(loss.actor_network_params.flatten_keys().values(), lr=1e-2),
        torch.optim.Adam(loss.qvalue_network_params.flatten_keys().values(), lr=1e-2),
        torch.optim.Adam([loss.log_alpha], lr=1e-2),
    ]
    return net, loss, opts


def _batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(N, OBS, generator=g)
    act = torch.rand(N, ACT, generator=g) * 2 - 1
    rew = torch.randn(N, 1, generator=g)
    nobs = torch.randn(N, OBS, generator=g)
    term = torch.rand(N, 1, generator=g) < 0.3
    td = TensorDict({"observation": obs, "action": act,
                     "next": {"observation": nobs, "reward": rew, "terminated": term,
                              "truncated": torch.zeros_like(term), "done": term}}, [N])
    return (obs, act, rew, nobs, term), td


@pytest.mark.parametrize("alpha_init", [1.0, 0.3])
def test_losses_and_gradients_equal_sacloss(alpha_init):
    net, loss, opts = _make(alpha_init=alpha_init)
    args, td = _batch()
    torch.manual_seed(7)
    out = loss(td.clone())
    (out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]).backward()
    ref_grads = {k: p.grad.clone() for k, p in loss.named_parameters() if p.grad is not None}
    for p in loss.parameters():
        p.grad = None
    fused = FusedSACUpdate(net, loss, opts, gamma=0.9, tau=0.05)
    torch.manual_seed(7)  # same noise draws, in SACLoss's order (next state first)
    total, metrics = fused.losses(*args)
    m = fused.metrics_dict(metrics)
    for k in ("loss_qvalue", "loss_actor", "loss_alpha", "alpha", "entropy"):
        assert m[k] == pytest.approx(float(out[k].detach()), rel=1e-5, abs=1e-6), k
    total.backward()
    grads = {k: p.grad for k, p in loss.named_parameters() if p.grad is not None}
    assert sorted(grads) == sorted(ref_grads)
    assert not any(k.startswith("target_") for k in grads)  # target critics get no gradient
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)


def test_steps_match_sacloss_with_softupdate():
    net_a, loss_a, opts_a = _make()
    net_b, loss_b, opts_b = _make()
    soft = SoftUpdate(loss_a, tau=0.05)
    fused = FusedSACUpdate(net_b, loss_b, opts_b, gamma=0.9, tau=0.05)
    for i in range(5):
        args, td = _batch(seed=10 + i)
        torch.manual_seed(100 + i)
        out = loss_a(td)
        for o in opts_a:
            o.zero_grad()
        (out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]).backward()
        for o in opts_a:
            o.step()
        soft.step()
        torch.manual_seed(100 + i)
        fused(*args)
    sa, sb = loss_a.state_dict(), loss_b.state_dict()
    assert sorted(sa) == sorted(sb)
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-4, atol=1e-5, msg=k)
    # the target critics moved, by Polyak averaging only
    _, fresh, _ = _make()
    assert not torch.equal(sb["target_qvalue_network_params.module.0.weight"],
                           fresh.state_dict()["target_qvalue_network_params.module.0.weight"])


def test_tanh_normal_log_prob_matches_change_of_variables():
    loc, scale = torch.tensor([[0.3, -1.2]]), torch.tensor([[0.5, 2.0]])
    noise = torch.tensor([[0.7, -0.4]])
    a, logp = tanh_normal_sample(loc, scale, noise)
    u = loc + scale * noise
    base = torch.distributions.Normal(loc, scale).log_prob(u)
    hand = (base - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)
    torch.testing.assert_close(a, torch.tanh(u))
    torch.testing.assert_close(logp, hand)
    # one dimension by hand: N(u; 0.3, 0.5) at u = 0.65, minus log(1 - tanh(0.65)^2)
    u0 = 0.3 + 0.5 * 0.7
    hand0 = -0.5 * 0.7**2 - math.log(0.5) - 0.5 * math.log(2 * math.pi) - math.log(1 - math.tanh(u0) ** 2)
    _, lp0 = tanh_normal_sample(loc[:, :1], scale[:, :1], noise[:, :1])
    assert float(lp0) == pytest.approx(hand0, rel=1e-6)


def test_terminal_rows_do_not_bootstrap():
    net, loss, opts = _make()
    fused = FusedSACUpdate(net, loss, opts, gamma=0.9, tau=0.05)
    (obs, act, rew, nobs, _), _ = _batch()
    term = torch.ones(N, 1, dtype=torch.bool)
    torch.manual_seed(0)
    _, m1 = fused.losses(obs, act, rew, nobs, term)
    torch.manual_seed(0)
    _, m2 = fused.losses(obs, act, rew, nobs * 100.0, term)  # next state cannot matter
    assert float(m1[0]) == pytest.approx(float(m2[0]))
    # with every row terminal, L_Q = mean_batch sum_k (Q_k(s, a) - r)^2, Q_k read through TorchRL's vmap
    with torch.no_grad():
        q = loss._vmap_qnetworkN0(TensorDict({"observation": obs, "action": act}, [N]),
                                  loss.qvalue_network_params)["state_action_value"].squeeze(-1)
    assert q.shape == (2, N)
    assert float(m1[0]) == pytest.approx(float((q - rew.reshape(-1)).pow(2).sum(0).mean()), rel=1e-5)


def test_rejects_non_mlp_actor():
    _, loss, opts = _make()
    with pytest.raises(TypeError, match="SquashedGaussianActor"):
        FusedSACUpdate(torch.nn.Linear(3, 3), loss, opts, gamma=0.9, tau=0.05)
    net, loss, opts = _make()
    with pytest.raises(ValueError, match="tau"):
        FusedSACUpdate(net, loss, opts, gamma=0.9, tau=0.0)
