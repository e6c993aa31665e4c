"""DARA (Liu, Zhang & Wang, ICLR 2022) as a plug-in: the classifiers' log-ratio and its clip by hand, the
cross-entropy on logits (a softmax first would fail here), only the source rewards change, the classifiers
separate a toy problem, and the recipe runs and resumes bit-identically."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
from tabb_torchrl.methods import DARA, METHODS, PooledIQL, SourceRows, make_method
from tabb_torchrl.methods.dara import LOG_RATIO_COLUMN, classifier_loss, domain_log_ratio, dara_reward
from tabb_torchrl.objectives import CrossDomainIQLLoss
from recipe_helpers import (assert_logged, assert_same_loss_modules, flatten_state,  # noqa: E402
                            kill_and_resume, load_checkpoint, smoke_run_fixture)


def _rows(log_ratio, reward=None):
    n = len(log_ratio)
    return SourceRows(reward=torch.ones(n) if reward is None else reward, terminated=torch.zeros(n),
                      next_value=torch.zeros(n), next_feature=torch.zeros(n, 3),
                      columns={LOG_RATIO_COLUMN: torch.tensor(log_ratio)}, value=lambda z: z.sum(-1), gamma=0.99)


def _constant_logits(m: DARA, sas_bias, sa_bias):
    """Make both classifiers output fixed logits whatever their input (last layer: zero weight, given bias)."""
    with torch.no_grad():
        for net, bias in ((m.sas_classifier, sas_bias), (m.sa_classifier, sa_bias)):
            last = [mod for mod in net.modules() if isinstance(mod, torch.nn.Linear)][-1]
            last.weight.zero_()
            last.bias.copy_(torch.tensor(bias))


def test_log_ratio_by_hand():
    # logits (source, target): sas (0, 2), sa (1, 0.5)
    # log q_sas(t) - log q_sas(s) = 2 - 0 ; log q_sa(t) - log q_sa(s) = 0.5 - 1  ->  Δ = 2 - (-0.5) = 2.5
    sas, sa = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.5]])
    torch.testing.assert_close(domain_log_ratio(sas, sa), torch.tensor([2.5]))
    # the same through the class's classifiers, for any input
    m = DARA(obs_dim=3, action_dim=2, hidden_sizes=(8,))
    _constant_logits(m, [0.0, 2.0], [1.0, 0.5])
    ratio = m.log_ratio(torch.randn(4, 3), torch.rand(4, 2), torch.randn(4, 3))
    torch.testing.assert_close(ratio, torch.full((4,), 2.5))
    # the logits' normalisation does not matter (log_softmax, once)
    torch.testing.assert_close(domain_log_ratio(sas + 7.0, sa - 3.0), torch.tensor([2.5]))


def test_reward_and_the_clip_binding_by_hand():
    m = DARA(obs_dim=3, action_dim=2, eta=0.1, clip=10.0, hidden_sizes=(8,))
    edit = m.edit_source(_rows([25.0, -30.0, 3.0, -10.0], reward=torch.tensor([1.0, 2.0, 0.0, 0.5])))
    # 1 + 0.1 * 10 ; 2 + 0.1 * (-10) ; 0 + 0.1 * 3 ; 0.5 + 0.1 * (-10)
    torch.testing.assert_close(edit.reward, torch.tensor([2.0, 1.0, 0.3, -0.5]))
    assert edit.weight is None and edit.keep is None and edit.target is None
    assert edit.metrics["dara_clipped"].item() == pytest.approx(0.5)     # 25 and -30 are clipped
    assert edit.metrics["dara_log_ratio"].item() == pytest.approx(-3.0)
    torch.testing.assert_close(dara_reward(torch.zeros(2), torch.tensor([1e6, -1e6]), 0.5, 2.0),
                               torch.tensor([1.0, -1.0]))
    with pytest.raises(KeyError, match="dara_log_ratio"):
        m.edit_source(SourceRows(torch.ones(1), torch.zeros(1), torch.zeros(1), torch.zeros(1, 3), {},
                                 value=lambda z: z.sum(-1), gamma=0.99))


def test_cross_entropy_is_on_logits_not_on_probabilities():
    logits = torch.tensor([[0.0, 3.0], [2.0, -1.0]])
    label = torch.tensor([1, 0])
    # CE on logits: log(1 + e^-3) for each row (target row 1: logit gap 3; source row 2: gap 3)
    expected = 2 * math.log1p(math.exp(-3.0))
    assert classifier_loss(logits, logits, label).item() == pytest.approx(expected, rel=1e-6)
    # a softmax applied first would give a different (much larger) loss
    twice = 2 * torch.nn.functional.cross_entropy(torch.softmax(logits, -1), label).item()
    assert twice > 0.6 and abs(twice - expected) > 0.5
    # and the same on the class's classifiers with known logits
    m = DARA(obs_dim=3, action_dim=2, hidden_sizes=(8,))
    _constant_logits(m, [0.0, 3.0], [0.0, 3.0])
    sas, sa = m.logits(torch.randn(2, 3), torch.rand(2, 2), torch.randn(2, 3))
    assert classifier_loss(sas, sa, torch.tensor([1, 1])).item() == pytest.approx(expected, rel=1e-6)


def _toy(n, shift, generator):
    """s ~ N(0, 1), a ~ U(-1, 1) in both domains; s' = s + a + shift: (s, a) alike, (s, a, s') separable."""
    s = torch.randn(n, 2, generator=generator)
    a = torch.rand(n, 1, generator=generator) * 2 - 1
    return TensorDict({"observation": s, "action": a, ("next", "observation"): s + a + shift,
                       ("next", "reward"): torch.zeros(n, 1),
                       ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool)},
                      [n])


def test_classifiers_learn_a_separable_toy_problem():
    g = torch.Generator().manual_seed(0)
    source, target = _toy(2000, -2.0, g), _toy(400, 2.0, g)
    m = DARA(obs_dim=2, action_dim=1, hidden_sizes=(32, 32), noise_std=0.1, classifier_steps=300,
             classifier_lr=3e-3, classifier_batch_size=64, seed=1)
    rng = torch.get_rng_state()
    m.prepare(source, target)
    assert torch.equal(torch.get_rng_state(), rng)  # its own generators: the global RNG is untouched
    data = torch.cat([source[:400], target])
    m.add_columns(data)
    ratio = data[LOG_RATIO_COLUMN]
    assert ratio.shape == (800,)
    assert ratio[:400].mean() < -3.0 and ratio[400:].mean() > 3.0  # source rows penalised, target-like rewarded
    with torch.no_grad():
        sas, sa = m.logits(data["observation"], data["action"], data["next", "observation"])
    label = torch.cat([torch.zeros(400), torch.ones(400)]).long()
    # (s, a, s') separable: CE far below the floor log(1 + e^-1) ~ 0.313 that a softmax-before-CE cannot pass
    assert torch.nn.functional.cross_entropy(sas, label).item() < 0.1
    # (s, a) alike in both domains: the sa classifier stays near chance
    assert abs(torch.nn.functional.cross_entropy(sa, label).item() - math.log(2)) < 0.1
    # the column is a deterministic function of the classifiers (recomputed on resume)
    again = data.clone()
    m.add_columns(again)
    assert torch.equal(again[LOG_RATIO_COLUMN], ratio)
    # ... also by a method of other initial weights that loads the checkpointed state (a resumed run)
    torch.manual_seed(3)
    fresh = DARA(obs_dim=2, action_dim=1, hidden_sizes=(32, 32), noise_std=0.1, classifier_steps=300, seed=1)
    fresh.load_state_dict(m.state_dict())
    resumed = data.exclude(LOG_RATIO_COLUMN)
    fresh.add_columns(resumed)
    assert torch.equal(resumed[LOG_RATIO_COLUMN], ratio)
    # same seed, same init -> same classifiers
    torch.manual_seed(5)
    m1 = DARA(obs_dim=2, action_dim=1, hidden_sizes=(8,), classifier_steps=20)
    torch.manual_seed(5)
    m2 = DARA(obs_dim=2, action_dim=1, hidden_sizes=(8,), classifier_steps=20)
    m1.prepare(source, target)
    m2.prepare(source, target)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


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
                     ("next", "terminated"): torch.zeros(6, 1, dtype=torch.bool),
                     LOG_RATIO_COLUMN: torch.tensor([25.0, -2.0, 0.5, 9.0, 9.0, 9.0])}, [6])
    targets = []
    original = core.critic_loss

    def spy(q, target, *args, **kwargs):
        targets.append(target.detach().clone())
        return original(q, target, *args, **kwargs)

    monkeypatch.setattr(core, "critic_loss", spy)
    base = _loss(PooledIQL())(td)
    dara = _loss(DARA(obs_dim=3, action_dim=2, eta=0.1, clip=10.0, hidden_sizes=(8,)))(td)
    y0, y1 = targets
    # source rows (first 3): + 0.1 * clip(Δ, -10, 10), undiscounted ; target rows: unchanged
    torch.testing.assert_close(y1[:3] - y0[:3], torch.tensor([1.0, -0.2, 0.05]))
    assert torch.equal(y1[3:], y0[3:])
    # value and actor losses (pooled, like IQL on the union) do not read the targets: unchanged
    assert torch.equal(dara["loss_value"], base["loss_value"])
    assert torch.equal(dara["loss_actor"], base["loss_actor"])
    assert not torch.equal(dara["loss_qvalue"], base["loss_qvalue"])
    assert dara["dara_clipped"].item() == pytest.approx(1 / 3)


def test_registry_and_settings():
    assert METHODS["dara"] is DARA
    m = make_method("dara", obs_dim=4, action_dim=2, eta=0.3, hidden_sizes=[16, 16], classifier_steps=5)
    assert isinstance(m, DARA) and m.eta == 0.3 and m.classifier_steps == 5 and m.hidden_sizes == (16, 16)
    assert m.pooled and m.source_in_value and m.source_in_actor and not m.has_learn
    assert "sas_classifier.0.weight" in m.state_dict()  # the classifiers are checkpointed with the loss module
    with pytest.raises(ValueError, match="eta"):
        DARA(3, 2, eta=-1.0)
    with pytest.raises(ValueError, match="clip"):
        DARA(3, 2, clip=0.0)


def test_the_critic_is_squared_as_the_authors_unless_asked():
    """The authors' critic loss is the squared error: ``critic_deltas = (None, None)`` makes the core use
    ``0.5 (Q - y)^2`` on both domains; ``squared_critic=False`` gives back the recipe's Huber loss."""
    assert DARA(3, 2).critic_deltas == (None, None)
    assert DARA(3, 2, squared_critic=False).critic_deltas is None


# ---------------------------------------------------------------------------- the recipe
smoke_run = smoke_run_fixture("dara", "algo.method_kwargs.classifier_steps=30")


def test_recipe_smoke_run(smoke_run):
    assert "normalized_score" in smoke_run.stdout
    state = flatten_state(load_checkpoint(smoke_run.run_dir)["loss_module"])
    assert any("sas_classifier" in k for k in state)                  # the classifiers are checkpointed
    assert_logged(smoke_run.run_dir, "dara_log_ratio", "dara_clipped")


@pytest.mark.slow
def test_recipe_kill_and_resume_matches_the_smoke_run(smoke_run):
    run = kill_and_resume(smoke_run, stop_at=70)
    a = assert_same_loss_modules(smoke_run.run_dir, run.run_dir)
    assert any("sas_classifier" in k for k in a)
