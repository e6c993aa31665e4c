"""BOSA (Liu et al., AAAI 2024) on the TD3 backbone as ``algo=bosa``: the IWAE estimate and the support
mask by hand, the masked TD loss and the conservative term through the loss module, the actor's
behaviour-support term, the VAEs on a known toy system, the ensemble as one batched module, and the
recipe's smoke run with an exact kill-and-resume. Also the TD3 backbone itself (target, delays, which
loss reaches which parameters), which MOBODY shares."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict

from tabb_torchrl.data import make_source_target_buffer
from tabb_torchrl.methods import BOSA
from tabb_torchrl.methods.bosa import DynamicsVAEEnsemble, iwae_log_likelihood, support_mask
from tabb_torchrl.pipeline.backbones import OWN_BACKBONES, make_bosa
from tabb_torchrl.pipeline.config import ConfigError
from tabb_torchrl.pipeline.td3 import (
    EnsembleMLP,
    PolyakUpdate,
    TD3Batch,
    TD3CrossDomainLoss,
    TD3Method,
    TD3Update,
    make_td3_actor,
)
from recipe_helpers import (assert_logged, assert_same_loss_modules, flatten_state,  # noqa: E402
                            kill_and_resume, load_actor, load_checkpoint, smoke_run_fixture)

ENV = "tabb/Hopper-morph-v0"
ALGO = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "recipes/config/algo/bosa.yaml"))


def _cfg(td3=None, **bosa):
    """The recipe's algo=bosa settings (recipes/config/algo/bosa.yaml), small networks."""
    return {"model": {"actor_hidden": [16, 16], "qvalue_hidden": [16, 16], "activation": "relu"},
            "loss": {"gamma": 0.99}, "optim": {"target_update_tau": 0.005, "lr_actor": 3e-4, "lr_qvalue": 3e-4,
                                               "weight_decay": 0.0},
            "algo": {"name": "bosa", "td3": {**ALGO["td3"], **(td3 or {})},
                     "bosa": {**ALGO["bosa"], "vae_hidden": 16, **bosa}}}


def _batch(n=6, obs=11, act=3, seed=0, domains=None):
    g = torch.Generator().manual_seed(seed)
    domain = torch.tensor(domains) if domains is not None else torch.tensor([0] * (n // 2) + [1] * (n - n // 2))
    return TD3Batch(torch.randn(n, obs, generator=g), torch.rand(n, act, generator=g) * 2 - 1,
                    torch.randn(n, generator=g), torch.randn(n, obs, generator=g), torch.zeros(n), domain)


# ---------------------------------------------------------------------------- the equations by hand
def test_iwae_estimate_by_hand():
    """log (1/M) sum_m N(x; dec, beta/4) N(z_m; 0, 1) / N(z_m; mu, sigma) with the same draws."""
    x, mean, std = torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[2.0]])
    decode = lambda z: 0.3 * z                                          # noqa: E731  a decoder using z
    ll = iwae_log_likelihood(x, mean, std, decode, beta=4.0, num_samples=3, generator=torch.Generator().manual_seed(7))
    eps = torch.randn((3, 1, 1), generator=torch.Generator().manual_seed(7))
    z = 0.5 + 2.0 * eps
    N = torch.distributions.Normal
    w = N(0.3 * z, 1.0).log_prob(x) + N(0.0, 1.0).log_prob(z) - N(0.5, 2.0).log_prob(z)   # sqrt(4 / 4) = 1
    expected = torch.logsumexp(w.reshape(3), 0) - math.log(3)
    torch.testing.assert_close(ll, expected.reshape(1))


def test_support_mask_by_hand():
    ll = torch.tensor([[0.0, -4.0, -4.7, math.log(0.01)], [-3.0, -4.5, 1.0, 2.0]])
    # min over members: [-3, -4.5, -4.7, log 0.01]; log 0.01 = -4.605: kept iff strictly above
    assert support_mask(ll, 0.01).tolist() == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="epsilon"):
        support_mask(ll, 0.0)


def test_critic_loss_masks_rows_and_adds_the_conservative_term(monkeypatch):
    """L = 0.5 sum_k mean_rows(m (Q_k - y)^2) + 0.1 sum_k mean_source Q_k, with the mask of the ensemble."""
    _, loss, _, _ = make_bosa(_cfg(td3={"policy_noise": 0.0}), ENV)
    b = _batch(4, domains=[0, 0, 1, 1])
    ll = torch.tensor([[0.0, -10.0, 0.0, 0.0]] * 5)                     # row 1 is outside the support
    monkeypatch.setattr(loss.method.dynamics_vae, "log_likelihood", lambda *a, **k: ll)
    out, metrics = loss.critic_loss(b)
    with torch.no_grad():
        a2 = loss.target_actor.module(b.next_observation)
        y = b.reward + 0.99 * loss.qvalues(b.next_observation, a2, target=True).amin(0)
        q = loss.qvalues(b.observation, b.action)
        mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
        expected = 0.5 * (mask * (q - y) ** 2).mean(1).sum() + 0.1 * q[:, :2].mean(1).sum()
    torch.testing.assert_close(out, expected)
    assert float(metrics["bosa_mask_ratio"]) == 0.75 and float(metrics["bosa_mask_ratio_source"]) == 0.5
    assert float(metrics["bosa_mask_ratio_target"]) == 1.0


def test_actor_regularizer_is_the_policy_vae_iwae_and_reaches_only_the_actor():
    _, loss, _, _ = make_bosa(_cfg(num_samples=4, policy_coef=0.1), ENV)
    b = _batch(5)
    torch.manual_seed(3)
    actor_loss, metrics = loss.actor_loss(b)
    torch.manual_seed(3)
    with torch.no_grad():
        a = loss.policy(b.observation)
        q = loss.qvalues(b.observation, a)[0]
        vae = loss.method.policy_vae
        mean, std = vae.encode(b.observation, a)
        ll = iwae_log_likelihood(a, mean, std, lambda z: vae.decode(b.observation.expand(z.shape[0], -1, -1), z),
                                 0.5, 4)
    expected = -q.mean() / q.abs().mean() + 0.1 * (-ll).mean()
    torch.testing.assert_close(actor_loss, expected)
    actor_loss.backward()
    assert all(p.grad is not None for p in loss.actor.parameters())
    assert all(p.grad is None for p in loss.critic.parameters())
    assert all(p.grad is None for p in loss.method.parameters())


# ---------------------------------------------------------------------------- the models
def _toy(n, g, shift=0.0):
    """s' = 0.9 s + 0.5 [a, a, 0] (+ shift); the behaviour policy a = tanh(s_0 - s_1) + small noise."""
    s = torch.randn(n, 3, generator=g)
    a = torch.tanh(s[:, :1] - s[:, 1:2]) + 0.05 * torch.randn(n, 1, generator=g)
    nxt = 0.9 * s + 0.5 * torch.cat([a, a, torch.zeros_like(a)], -1) + shift
    return TensorDict({"observation": s, "action": a, ("next", "observation"): nxt}, [n])


def test_the_vaes_learn_a_known_toy_system():
    g = torch.Generator().manual_seed(0)
    target, source = _toy(2000, g), _toy(2000, g, shift=1.5)           # source dynamics: shifted next states
    m = BOSA(3, 1, vae_hidden=64, pretrain_steps=500, dynamics_data="target", seed=0)
    m.prepare(source, target)
    assert not any(p.requires_grad for p in m.parameters())
    test_t, test_s = _toy(500, g), _toy(500, g, shift=1.5)
    with torch.no_grad():
        ll_t = m.dynamics_vae.log_likelihood(test_t["observation"], test_t["action"], test_t["next", "observation"])
        ll_s = m.dynamics_vae.log_likelihood(test_s["observation"], test_s["action"], test_s["next", "observation"])
        recon, _, _ = m.dynamics_vae(test_t["observation"], test_t["action"], test_t["next", "observation"])
    # every member reconstructs the target dynamics; source (shifted) transitions fall outside its support
    assert float(((recon - test_t["next", "observation"]) ** 2).mean()) < 0.05
    assert float(support_mask(ll_t, 0.01).mean()) > 0.9
    assert float(support_mask(ll_s, 0.01).mean()) < 0.1
    # the policy VAE: dataset actions are likely, far-away actions are not
    with torch.no_grad():
        near = -m.policy_neg_log_likelihood(test_t["observation"], test_t["action"])
        far = -m.policy_neg_log_likelihood(test_t["observation"], -test_t["action"].sign())
    assert float(near.mean()) > float(far.mean()) + 1.0


def test_the_dynamics_ensemble_is_one_batched_module():
    vae = DynamicsVAEEnsemble(3, 2, ensemble_size=5, hidden=8)
    shapes = [tuple(w.shape) for w in vae.encoder.weights]
    assert shapes == [(5, 8, 8), (5, 8, 8), (5, 8, 12)]                 # [E, in, out]: no per-member modules
    s, a, s2 = torch.randn(4, 3), torch.randn(4, 2), torch.randn(4, 3)
    mean, std = vae.encode(s, a, s2)
    for i in range(5):  # member i equals a plain MLP with member i's weights (the loop is in the test only)
        x = torch.cat([s, a, s2], -1)
        for j, (w, b) in enumerate(zip(vae.encoder.weights, vae.encoder.biases)):
            x = x @ w[i] + b[i]
            x = torch.relu(x) if j < 2 else x
        torch.testing.assert_close(mean[i], x[:, :6])
        torch.testing.assert_close(std[i], x[:, 6:].clamp(-4, 15).exp())
    assert EnsembleMLP(4, 1, (8,), 2, init="normal_fmod").weights[0].abs().max() < 2


def test_pretraining_uses_its_own_generator():
    g = torch.Generator().manual_seed(1)
    before = torch.get_rng_state()
    m1, m2 = BOSA(3, 1, vae_hidden=8, pretrain_steps=5, seed=4), BOSA(3, 1, vae_hidden=8, pretrain_steps=5, seed=4)
    m2.load_state_dict(m1.state_dict())
    data_s, data_t = _toy(100, g), _toy(50, g)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    m1.prepare(data_s, data_t)
    assert torch.equal(torch.get_rng_state(), state)                     # the global RNG is not touched
    m2.prepare(data_s, data_t)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    torch.set_rng_state(before)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"algo.bosa has keys that BOSA does not take: \['lambda'\]"):
        make_bosa(_cfg(**{"lambda": 0.1}), ENV)
    with pytest.raises(ConfigError, match="algo.bosa: BOSA: dynamics_data must be one of"):
        make_bosa(_cfg(dynamics_data="source"), ENV)
    with pytest.raises(ConfigError, match="algo.td3.actor_q"):
        make_bosa(_cfg(td3={"actor_q": "mean"}), ENV)
    assert set(OWN_BACKBONES) == {"cql", "mobody", "bosa"}


# ---------------------------------------------------------------------------- the TD3 backbone
def _td3(**kw):
    return TD3CrossDomainLoss(make_td3_actor(3, 2, -2.0, 2.0, hidden_sizes=(8,)), EnsembleMLP(5, 1, (8,), 2),
                              TD3Method(), **kw)


def test_target_policy_smoothing_stays_in_the_action_box_and_clips_the_noise():
    loss = _td3(policy_noise=10.0, noise_clip=0.5)
    s = torch.randn(2000, 3)
    with torch.no_grad():
        a0 = loss.target_actor.module(s)
        a = loss.next_action(s)
    assert bool((a.abs() <= 2.0).all())
    assert float((a - a0).abs().max()) <= 0.5 * 2.0 + 1e-6             # clip * half-width
    assert float((a - a0).abs().max()) > 0.9                           # the noise is there
    plain = _td3(policy_noise=0.0, target_actor=False)                  # MOBODY's a' = pi(s'): the actor itself
    with torch.no_grad():
        assert plain.target_actor is None and torch.equal(plain.next_action(s), plain.actor.module(s))


def test_delayed_actor_steps_and_target_updates():
    loss = _td3()
    g = torch.Generator().manual_seed(0)

    def data(n):
        return TensorDict({"observation": torch.randn(n, 3, generator=g), "action": torch.rand(n, 2, generator=g),
                           ("next", "observation"): torch.randn(n, 3, generator=g),
                           ("next", "reward"): torch.randn(n, 1, generator=g),
                           ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool)}, [n])

    rb = make_source_target_buffer(data(50), data(30), n_source=8, n_target=8, seed=0)
    opts = {"actor": torch.optim.Adam(loss.actor.parameters(), lr=1e-2),
            "qvalue": torch.optim.Adam(loss.critic.parameters(), lr=1e-2)}
    update = TD3Update(loss, rb, opts, PolyakUpdate(loss, 0.5), policy_delay=2)
    actor0 = [p.clone() for p in loss.actor.parameters()]
    target0 = [p.clone() for p in loss.target_critic.parameters()]
    critic0 = [p.clone() for p in loss.critic.parameters()]
    m = update()                                                        # step 1: critic only
    assert float(m["actor_updated"]) == 0.0 and float(m["loss_actor"]) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(actor0, loss.actor.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(target0, loss.target_critic.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(critic0, loss.critic.parameters()))
    m = update()                                                        # step 2: actor and targets
    assert float(m["actor_updated"]) == 1.0 and float(m["loss_actor"]) != 0.0
    assert not all(torch.equal(a, b) for a, b in zip(actor0, loss.actor.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(target0, loss.target_critic.parameters()))
    assert set(update().keys()) >= {"loss_qvalue", "loss_actor"} and update.step_count == 3
    # a resumed run's update continues the count: restarted at step 3, its first step (the 4th) updates the actor
    resumed = TD3Update(loss, rb, opts, PolyakUpdate(loss, 0.5), policy_delay=2, step=update.step_count)
    assert float(resumed()["actor_updated"]) == 1.0 and resumed.step_count == 4


def test_the_critic_loss_reaches_only_the_critic():
    loss = _td3()
    b = _batch(6, obs=3, act=2)
    out, _ = loss.critic_loss(b)
    out.backward()
    assert all(p.grad is not None for p in loss.critic.parameters())
    assert all(p.grad is None for p in loss.actor.parameters())
    assert all(p.grad is None for p in loss.target_critic.parameters())


# ---------------------------------------------------------------------------- the recipe
smoke_run = smoke_run_fixture("bosa")


def test_recipe_smoke_run_and_the_actor_loads(smoke_run):
    assert "normalized_score" in smoke_run.stdout and "| bosa" in smoke_run.stdout
    ca = load_checkpoint(smoke_run.run_dir)
    assert sorted(ca["optimizers"]) == ["actor", "qvalue"] and ca["method_prepared"]
    assert any(k.startswith("method.dynamics_vae.") for k in flatten_state(ca["loss_module"]))
    assert_logged(smoke_run.run_dir, "bosa_mask_ratio", "loss_actor")
    actor = load_actor(smoke_run.run_dir, "bosa", 100)
    torch.testing.assert_close(dict(actor.named_parameters())["module.net.0.weight"],
                               ca["loss_module"]["actor.module.net.0.weight"])


@pytest.mark.slow
def test_recipe_kill_and_resume_matches_the_smoke_run(smoke_run):
    run = kill_and_resume(smoke_run, stop_at=70)
    a = assert_same_loss_modules(smoke_run.run_dir, run.run_dir)
    assert any(k.startswith("method.dynamics_vae.") for k in a)
