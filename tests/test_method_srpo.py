"""SRPO (Xue et al., NeurIPS 2023) as a plug-in: the discriminator bonus and its clip by hand, the top-50 %
labelling by V (of the target rows), only the source rewards change, the discriminator separates high- from
low-value states, its optimiser state is checkpointed, and the recipe runs and resumes bit-identically."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
from tabb_torchrl.methods import METHODS, SRPO, PooledIQL, SourceRows, make_method
from tabb_torchrl.methods.srpo import discriminator_loss, srpo_bonus, value_labels
from tabb_torchrl.objectives import CrossDomainIQLLoss, CrossDomainRows
from recipe_helpers import (assert_logged, assert_same_loss_modules, flatten_state,  # noqa: E402
                            kill_and_resume, load_checkpoint, smoke_run_fixture)


def _constant_output(m: SRPO, value: float):
    """The discriminator outputs ``value`` whatever the state (last layer: zero weight, given bias)."""
    with torch.no_grad():
        last = [mod for mod in m.discriminator.modules() if isinstance(mod, torch.nn.Linear)][-1]
        last.weight.zero_()
        last.bias.fill_(value)


def _rows(obs, reward):
    n = obs.shape[0]
    return SourceRows(reward=reward, terminated=torch.zeros(n), next_value=torch.zeros(n),
                      next_feature=torch.zeros(n, obs.shape[1]), columns={"observation": obs},
                      value=lambda z: z.sum(-1), gamma=0.99)


def test_bonus_and_clip_by_hand():
    out = torch.tensor([0.05, -4.0, 2.0, 50.0, 10.0])
    # 0.1 * log(clip(D, 0.1, 10)): clip binds below (0.05, -4) and above (50)
    expected = 0.1 * torch.log(torch.tensor([0.1, 0.1, 2.0, 10.0, 10.0]))
    torch.testing.assert_close(srpo_bonus(out, eta=0.1), expected)
    # "odds": D = e^o (= sigmoid(o) / (1 - sigmoid(o))), so the bonus is 0.1 * clip(o, log 0.1, log 10)
    torch.testing.assert_close(srpo_bonus(out, eta=0.1, bonus_input="odds"),
                               0.1 * out.clamp(math.log(0.1), math.log(10.0)))
    # through the class: the discriminator's raw output is D(s)
    m = SRPO(obs_dim=2, eta=0.1, hidden_sizes=(8,))
    for value, bonus in ((2.0, 0.1 * math.log(2.0)), (0.01, 0.1 * math.log(0.1)), (30.0, 0.1 * math.log(10.0))):
        _constant_output(m, value)
        edit = m.edit_source(_rows(torch.randn(3, 2), torch.tensor([1.0, 0.0, -1.0])))
        torch.testing.assert_close(edit.reward, torch.tensor([1.0, 0.0, -1.0]) + bonus)
        assert edit.target is None and edit.weight is None and edit.keep is None
        assert edit.metrics["srpo_bonus"].item() == pytest.approx(bonus, abs=1e-6)


def test_top_half_by_value_is_real():
    torch.testing.assert_close(value_labels(torch.tensor([3.0, -1.0, 7.0, 0.5]), 0.5),
                               torch.tensor([1.0, 0.0, 1.0, 0.0]))
    # odd n: floor(5 * 0.5) = 2 lowest are fake (the authors' low_q_portion split), 3 real
    torch.testing.assert_close(value_labels(torch.tensor([5.0, 1.0, 2.0, 4.0, 3.0]), 0.5),
                               torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(value_labels(torch.tensor([1.0, 4.0, 2.0, 3.0]), 0.25),
                               torch.tensor([0.0, 1.0, 0.0, 0.0]))
    # the loss: mean BCE over real + mean BCE over fake, on logits
    logits, labels = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0])
    real = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2
    fake = math.log(2.0)
    assert discriminator_loss(logits, labels).item() == pytest.approx(real + fake, rel=1e-6)


def _batch(n_source, n_target, generator):
    n = n_source + n_target
    obs = torch.randn(n, 2, generator=generator)
    return CrossDomainRows(feature_s=obs, feature_sa=torch.cat([obs, torch.zeros(n, 1)], -1), next_feature=obs,
                           reward=torch.zeros(n), terminated=torch.zeros(n), observation=obs,
                           action=torch.zeros(n, 1), columns={"observation": obs})


@pytest.mark.parametrize("label_rows", ["target", "all"])
def test_learn_labels_the_target_rows_by_value(monkeypatch, label_rows):
    import tabb_torchrl.methods.srpo as srpo

    seen = []
    original = srpo.discriminator_loss

    def spy(logits, labels):
        seen.append(labels.clone())
        return original(logits, labels)

    monkeypatch.setattr(srpo, "discriminator_loss", spy)
    rows = _batch(4, 6, torch.Generator().manual_seed(0))
    v = rows.feature_s[:, 0]
    metrics = SRPO(obs_dim=2, hidden_sizes=(8,), label_rows=label_rows).learn(rows, 4, lambda z: z[:, 0])
    labels = seen[0]
    ranked = v[4:] if label_rows == "target" else v
    assert labels.shape == ranked.shape
    assert labels.sum().item() == ranked.shape[0] // 2            # top 50 % real
    assert ranked[labels == 1].min() > ranked[labels == 0].max()  # "real" = the high-value states
    assert set(metrics) == {"srpo_disc_loss", "srpo_disc_accuracy"}
    assert not metrics["srpo_disc_loss"].requires_grad


def test_discriminator_separates_high_and_low_value_states():
    g = torch.Generator().manual_seed(1)
    m = SRPO(obs_dim=2, hidden_sizes=(32, 32), lr=1e-2)
    for _ in range(150):
        m.learn(_batch(8, 64, g), 8, lambda z: z[:, 0])   # V(s) = s_0: real states are those with s_0 > median
    test = torch.tensor([[2.0, 0.0], [1.0, -1.0], [-1.0, 1.0], [-2.0, 0.0]])
    with torch.no_grad():
        out = m.output(test)
    assert out[0] > 0 and out[1] > 0 and out[2] < 0 and out[3] < 0
    metrics = m.learn(_batch(8, 64, g), 8, lambda z: z[:, 0])
    assert metrics["srpo_disc_accuracy"].item() > 0.85


def test_optimizer_state_survives_a_state_dict_round_trip():
    g = torch.Generator().manual_seed(2)
    a = SRPO(obs_dim=2, hidden_sizes=(8,))
    for _ in range(3):
        a.learn(_batch(4, 8, g), 4, lambda z: z[:, 0])
    b = SRPO(obs_dim=2, hidden_sizes=(8,))
    b.load_state_dict(a.state_dict())
    assert b.optimizer.state_dict()["state"][0]["step"] == a.optimizer.state_dict()["state"][0]["step"]
    rows = _batch(4, 8, g)
    a.learn(rows, 4, lambda z: z[:, 0])
    b.learn(rows, 4, lambda z: z[:, 0])
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)                       # same Adam moments -> the same next step


def _loss(method):
    torch.manual_seed(0)
    return CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(5, hidden_sizes=(8,)),
                              make_latent_value(3, hidden_sizes=(8,)), method=method, features="raw")


def test_only_the_source_rewards_change(monkeypatch):
    import tabb_torchrl.objectives.cross_domain as core

    g = torch.Generator().manual_seed(0)
    td = TensorDict({"observation": torch.randn(6, 3, generator=g), "action": torch.rand(6, 2, generator=g) - 0.5,
                     "domain": torch.tensor([0, 0, 0, 1, 1, 1]),
                     ("next", "observation"): torch.randn(6, 3, generator=g),
                     ("next", "reward"): torch.randn(6, 1, generator=g),
                     ("next", "terminated"): torch.zeros(6, 1, dtype=torch.bool)}, [6])
    targets = []
    original = core.critic_loss

    def spy(q, target, *args, **kwargs):
        targets.append(target.detach().clone())
        return original(q, target, *args, **kwargs)

    monkeypatch.setattr(core, "critic_loss", spy)
    method = SRPO(obs_dim=3, eta=0.1, hidden_sizes=(8,))
    expected = method.bonus(td["observation"][:3])
    base = _loss(PooledIQL())(td)
    out = _loss(method)(td)
    y0, y1 = targets
    torch.testing.assert_close(y1[:3] - y0[:3], expected)   # source rows: + 0.1 log clip(D(s)), undiscounted
    assert torch.equal(y1[3:], y0[3:])                       # target rows: unchanged
    assert torch.equal(out["loss_value"], base["loss_value"])
    assert torch.equal(out["loss_actor"], base["loss_actor"])
    assert not torch.equal(out["loss_qvalue"], base["loss_qvalue"])


def test_registry_and_settings():
    assert METHODS["srpo"] is SRPO
    m = make_method("srpo", obs_dim=4, eta=0.2, hidden_sizes=[16], label_rows="all")
    assert isinstance(m, SRPO) and m.eta == 0.2 and m.label_rows == "all" and m.hidden_sizes == (16,)
    assert m.pooled and m.source_in_value and m.source_in_actor and m.has_learn
    assert any(k.endswith("_extra_state") for k in m.state_dict())
    with pytest.raises(ValueError, match="real_fraction"):
        SRPO(3, real_fraction=1.0)
    with pytest.raises(ValueError, match="clip_min"):
        SRPO(3, clip_min=0.0)
    with pytest.raises(ValueError, match="label_rows"):
        SRPO(3, label_rows="source")
    with pytest.raises(ValueError, match="bonus_input"):
        SRPO(3, bonus_input="sigmoid")


def test_the_critic_is_squared_as_the_authors_unless_asked():
    """The authors' critic loss is the squared error: ``critic_deltas = (None, None)`` makes the core use
    ``0.5 (Q - y)^2`` on both domains; ``squared_critic=False`` gives back the recipe's Huber loss."""
    assert SRPO(3).critic_deltas == (None, None)
    assert SRPO(3, squared_critic=False).critic_deltas is None


# ---------------------------------------------------------------------------- the recipe
smoke_run = smoke_run_fixture("srpo")


def test_recipe_smoke_run(smoke_run):
    assert "normalized_score" in smoke_run.stdout
    state = flatten_state(load_checkpoint(smoke_run.run_dir)["loss_module"])
    # the discriminator and its optimiser's state are checkpointed with the loss module
    assert any("discriminator" in k for k in state) and any("_extra_state/optimizer" in k for k in state)
    assert_logged(smoke_run.run_dir, "srpo_bonus", "srpo_disc_loss")


@pytest.mark.slow
def test_recipe_kill_and_resume_matches_the_smoke_run(smoke_run):
    run = kill_and_resume(smoke_run, stop_at=70)
    a = assert_same_loss_modules(smoke_run.run_dir, run.run_dir)
    assert any("_extra_state/optimizer" in k for k in a)
