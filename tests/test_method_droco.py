"""DROCO (Qiao et al., ICLR 2026) as a plug-in: the dynamic value penalty and the min over the ensemble's
predictions by hand, the per-domain critic loss (squared on target rows, Huber 30 on source rows), the
ensemble as one batched module that learns a known linear system, the cached column, and the recipe's
smoke run with a bit-identical kill-and-resume."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
from tabb_torchrl.modules import evaluate_value
from tabb_torchrl.methods import DROCO, METHODS, SourceRows, make_method
from tabb_torchrl.methods.droco import (
    PREDICTION_COLUMN,
    GaussianEnsembleDynamics,
    droco_penalty,
    gaussian_ensemble_nll,
    robust_target,
)
from tabb_torchrl.objectives import CrossDomainIQLLoss
from recipe_helpers import (assert_logged, assert_same_loss_modules, flatten_state,  # noqa: E402
                            kill_and_resume, load_checkpoint, smoke_run_fixture)


def _rows(preds, next_value, reward=None, terminated=None, gamma=0.9):
    n = preds.shape[0]
    return SourceRows(reward=torch.ones(n) if reward is None else reward,
                      terminated=torch.zeros(n) if terminated is None else terminated,
                      next_value=next_value, next_feature=torch.zeros(n, preds.shape[-1]),
                      columns={PREDICTION_COLUMN: preds}, value=lambda s: s.sum(-1), gamma=gamma)


def test_penalty_and_min_over_predictions_by_hand():
    # V(s) = s_0 + s_1 ; three source rows, E = 3 predictions each
    preds = torch.tensor([
        [[1.0, 1.0], [4.0, 0.0], [0.0, 3.0]],     # V = 2, 4, 3  -> min 2
        [[5.0, 5.0], [6.0, 4.0], [9.0, 1.0]],     # V = 10, 10, 10 -> min 10 (>= V(s') = 8: no penalty)
        [[0.0, 0.0], [2.0, 2.0], [1.0, 1.0]],     # V = 0, 4, 2 -> min 0, terminal row
    ])
    next_value = torch.tensor([6.0, 8.0, 5.0])
    rows = _rows(preds, next_value, reward=torch.tensor([1.0, 2.0, 3.0]), terminated=torch.tensor([0.0, 0.0, 1.0]))
    edit = DROCO(obs_dim=2, action_dim=1, penalty_coefficient=0.3).edit_source(rows)
    # p = max(0, 0.3 (V(s') - min V)) = [0.3 * 4, 0, 0.3 * 5] = [1.2, 0, 1.5]
    # y = r + 0.9 (1 - d) (V(s') - p) = [1 + 0.9 * 4.8, 2 + 0.9 * 8, 3]
    torch.testing.assert_close(edit.target, torch.tensor([1.0 + 0.9 * 4.8, 2.0 + 0.9 * 8.0, 3.0]))
    assert edit.weight is None and edit.keep is None and edit.reward is None
    assert edit.metrics["droco_penalty"].item() == pytest.approx((1.2 + 0.0 + 1.5) / 3)
    assert edit.metrics["droco_penalized"].item() == pytest.approx(2 / 3)
    assert edit.metrics["droco_min_next_value"].item() == pytest.approx((2 + 10 + 0) / 3)
    # the authors' code's variant: V of the element-wise minimum of the predicted states
    state = DROCO(obs_dim=2, action_dim=1, penalty_coefficient=0.3, penalty_min="state").edit_source(rows)
    # element-wise minima: [0, 0] (V 0), [5, 1] (V 6), [0, 0] (V 0) -> p = [1.8, 0.6, 1.5]
    torch.testing.assert_close(state.target, torch.tensor([1.0 + 0.9 * 4.2, 2.0 + 0.9 * 7.4, 3.0]))
    # the functions alone
    torch.testing.assert_close(droco_penalty(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0]), 5.0),
                               torch.zeros(2))          # p = 0 when min V(s_hat') >= V(s')
    torch.testing.assert_close(robust_target(torch.tensor([0.0]), torch.tensor([10.0]), torch.tensor([4.0]),
                                             torch.tensor([0.0]), 0.5), torch.tensor([3.0]))
    with pytest.raises(KeyError, match=PREDICTION_COLUMN):
        DROCO(obs_dim=2, action_dim=1).edit_source(SourceRows(torch.ones(1), torch.zeros(1), torch.zeros(1),
                                                             torch.zeros(1, 2), {}, value=lambda s: s.sum(-1), gamma=0.9))


def test_prediction_is_mean_plus_variance_or_mean():
    m = GaussianEnsembleDynamics(2, 1, ensemble_size=3, hidden_sizes=(4,))
    with torch.no_grad():   # last layer: zero weights; bias gives mean (r, ds) = (7, 1, -2), log_var = log 0.25
        m.weights[-1].zero_()
        m.biases[-1].copy_(torch.tensor([7.0, 1.0, -2.0, *([math.log(0.25)] * 3)]))
    s = torch.tensor([[10.0, 20.0]])
    var = torch.exp(m(s, torch.zeros(1, 1))[1][0, 0, 1:]).detach()
    plus = m.predict_next_observation(s, torch.zeros(1, 1), "mean_plus_variance")
    mean = m.predict_next_observation(s, torch.zeros(1, 1), "mean")
    assert plus.shape == (1, 3, 2)
    torch.testing.assert_close(mean[0], torch.tensor([[11.0, 18.0]] * 3))
    torch.testing.assert_close(plus[0], torch.tensor([[11.0, 18.0]] * 3) + var)
    # the authors' soft bounds: lv <- 0.5 - softplus(0.5 - lv), then -10 + softplus(lv + 10)
    sp = torch.nn.functional.softplus
    lv = torch.tensor(math.log(0.25))
    lv = 0.5 - sp(0.5 - lv)
    lv = -10.0 + sp(lv + 10.0)
    assert float(var[0]) == pytest.approx(float(lv.exp()), rel=1e-5)


def _loss(method, obs_dim=2):
    torch.manual_seed(0)
    return CrossDomainIQLLoss(make_actor(obs_dim, 1, hidden_sizes=(8,)), make_latent_qvalue(obs_dim + 1, hidden_sizes=(8,)),
                              make_latent_value(obs_dim, hidden_sizes=(8,)), method=method, features="raw")


def _batch(preds):
    g = torch.Generator().manual_seed(1)
    n = 6
    return TensorDict({
        "observation": torch.randn(n, 2, generator=g), "action": torch.rand(n, 1, generator=g) * 2 - 1,
        "domain": torch.tensor([0, 0, 0, 1, 1, 1]), ("next", "observation"): torch.randn(n, 2, generator=g),
        # large rewards: errors beyond the Huber threshold 30 on some rows of both domains
        ("next", "reward"): torch.tensor([[100.0], [1.0], [-80.0], [90.0], [0.5], [-70.0]]),
        ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        PREDICTION_COLUMN: preds,
    }, [n])


def test_per_domain_critic_thresholds_and_robust_targets(monkeypatch):
    import tabb_torchrl.objectives.cross_domain as core

    calls = []
    original = core.critic_loss

    def spy(q, target, target_rows, source_rows, weight, **kwargs):
        calls.append((q.detach().clone(), target.detach().clone(), target_rows, source_rows, kwargs))
        return original(q, target, target_rows, source_rows, weight, **kwargs)

    monkeypatch.setattr(core, "critic_loss", spy)
    method = DROCO(obs_dim=2, action_dim=1, penalty_coefficient=0.3, hidden_sizes=(8,))
    preds = torch.randn(6, 7, 2, generator=torch.Generator().manual_seed(2)) * 3
    loss = _loss(method)
    out = loss(_batch(preds))
    q, target, target_rows, source_rows, kwargs = calls[0]
    assert {k: kwargs[k] for k in ("delta", "source_delta")} == {"delta": None, "source_delta": 30.0}
    assert kwargs["delta_rows"].tolist() == [True] * 3 + [False] * 3
    assert target_rows.tolist() == [False] * 3 + [True] * 3 and source_rows.tolist() == [True] * 3 + [False] * 3
    # the loss by hand: mean over critics of  mean_T[(q - y)^2 / 2] + mean_S[huber_30(q - y)]
    err = q - target
    assert (err[:, :3].abs() > 30).any() and (err[:, 3:].abs() > 30).any()   # both regimes are exercised
    huber = torch.where(err.abs() <= 30, 0.5 * err ** 2, 30 * (err.abs() - 15))
    expected = (0.5 * err[:, 3:] ** 2).mean(-1) + huber[:, :3].mean(-1)
    torch.testing.assert_close(out["loss_qvalue"], expected.mean())
    # source targets: r + gamma (V(s') - p) with p from min_i V(s_hat'_i); target rows keep r + gamma V(s')
    batch = _batch(preds)
    with torch.no_grad(), loss.value_network_params.to_module(loss.value_network):
        v = lambda x: evaluate_value(loss.value_network, x).reshape(-1)
        v_next = v(batch["next", "observation"])
        v_min = v(preds.reshape(-1, 2)).reshape(6, 7).amin(-1)
    p = (0.3 * (v_next - v_min)).clamp_min(0)
    r = batch["next", "reward"].reshape(-1)
    torch.testing.assert_close(target[:3], r[:3] + 0.99 * (v_next[:3] - p[:3]))
    torch.testing.assert_close(target[3:], r[3:] + 0.99 * v_next[3:])
    # the authors' code trains V and the actor on the merged batch: source rows reach both losses
    assert method.source_in_value and method.source_in_actor and not method.pooled


def _linear_toy(n, generator):
    """s' = s + s A + a B + small noise, r = s . w : a known linear system."""
    ds, da = 3, 2
    a_mat = torch.tensor([[0.1, -0.2, 0.0], [0.3, 0.0, 0.1], [0.0, 0.2, -0.1]])
    b_mat = torch.tensor([[0.5, 0.0, -0.5], [0.0, 0.4, 0.2]])
    s = torch.randn(n, ds, generator=generator)
    a = torch.rand(n, da, generator=generator) * 2 - 1
    s2 = s + s @ a_mat + a @ b_mat + 0.01 * torch.randn(n, ds, generator=generator)
    r = (s @ torch.tensor([1.0, -1.0, 0.5]))[:, None]
    return TensorDict({"observation": s, "action": a, ("next", "observation"): s2, ("next", "reward"): r}, [n])


def test_ensemble_learns_a_linear_toy_system():
    g = torch.Generator().manual_seed(0)
    target = _linear_toy(1500, g)
    m = DROCO(obs_dim=3, action_dim=2, hidden_sizes=(64, 64), epochs=40, batch_size=128, seed=3,
              holdout_fraction=0.2)
    rng = torch.get_rng_state()
    m.prepare(None, target)
    assert torch.equal(torch.get_rng_state(), rng)   # its own generator (seed given): the global RNG is untouched
    delta = target["next", "observation"] - target["observation"]
    labels_var = float(torch.cat([target["next", "reward"], delta], -1).var(0).mean())
    assert float(m.model_train_mse) < 0.02 * labels_var
    assert float(m.model_holdout_mse) < 0.02 * labels_var        # generalises to held-out target rows
    fresh = _linear_toy(200, g)
    pred = m.predict(fresh["observation"], fresh["action"])       # [200, 7, 3]
    err = (pred - fresh["next", "observation"].unsqueeze(1)).pow(2).mean()
    assert pred.shape == (200, 7, 3) and float(err) < 0.02 * float(delta.var(0).mean())
    assert not any(p.requires_grad for p in m.ensemble.parameters())   # frozen after prepare()


def test_the_ensemble_is_one_batched_module():
    model = GaussianEnsembleDynamics(3, 2, ensemble_size=7, hidden_sizes=(16, 16, 16, 16))
    params = dict(model.named_parameters())
    assert len(params) == 2 * 5                        # 5 layers (weight, bias): stacked, not 7 x 5 modules
    assert all(p.shape[0] == 7 for p in params.values())
    assert params["weights.0"].shape == (7, 5, 16) and params["weights.4"].shape == (7, 16, 2 * 4)
    assert not torch.equal(params["weights.0"][0], params["weights.0"][1])   # members are initialised apart
    # member i of the batched forward equals that member alone
    x_s, x_a = torch.randn(5, 3), torch.randn(5, 2)
    mean, _ = model(x_s, x_a)
    i = 4
    h = (torch.cat([x_s, x_a], -1) - model.input_mean) / model.input_std
    for k, (w, b) in enumerate(zip(model.weights, model.biases)):
        h = h @ w[i] + b[i]
        if k < 4:
            h = torch.nn.functional.silu(h)
    torch.testing.assert_close(mean[i], h[:, :4])
    # the likelihood by hand: ((mu - y)^2 e^{-lv} + lv) averaged per member, summed over members
    mu, lv, y = torch.zeros(2, 3, 1), torch.log(torch.full((2, 3, 1), 2.0)), torch.ones(2, 3, 1)
    assert gaussian_ensemble_nll(mu, lv, y).item() == pytest.approx(2 * (0.5 + math.log(2.0)))


def test_cached_column_is_deterministic_and_equals_per_batch_recomputation():
    g = torch.Generator().manual_seed(4)
    target = _linear_toy(300, g)
    cached = DROCO(obs_dim=3, action_dim=2, hidden_sizes=(16,), epochs=2, seed=0)
    cached.prepare(None, target)
    data = _linear_toy(50, g)
    cached.add_columns(data)
    assert data[PREDICTION_COLUMN].shape == (50, 7, 3) and data[PREDICTION_COLUMN].dtype == torch.float32
    again = data.clone()
    cached.add_columns(again)
    assert torch.equal(again[PREDICTION_COLUMN], data[PREDICTION_COLUMN])   # recomputed identically on resume
    assert cached.cache_bytes(50) == data[PREDICTION_COLUMN].numel() * 4
    live = DROCO(obs_dim=3, action_dim=2, hidden_sizes=(16,), cache_predictions=False)
    live.load_state_dict(cached.state_dict())
    assert live.columns == ("observation", "action")
    nothing = data.exclude(PREDICTION_COLUMN)
    live.add_columns(nothing)
    assert PREDICTION_COLUMN not in nothing.keys()
    value = lambda s: s.pow(2).sum(-1)
    common = dict(reward=torch.ones(50), terminated=torch.zeros(50), next_value=torch.full((50,), 3.0),
                  next_feature=data["next", "observation"], value=value, gamma=0.99)
    a = cached.edit_source(SourceRows(columns={PREDICTION_COLUMN: data[PREDICTION_COLUMN]}, **common))
    b = live.edit_source(SourceRows(columns={"observation": data["observation"], "action": data["action"]}, **common))
    torch.testing.assert_close(a.target, b.target)


def test_registry_settings_and_checkpointed_state():
    assert METHODS["droco"] is DROCO
    m = make_method("droco", obs_dim=4, action_dim=2, penalty_coefficient=0.5, hidden_sizes=[16, 16], epochs=3)
    assert isinstance(m, DROCO) and m.penalty_coefficient == 0.5 and m.epochs == 3
    assert m.critic_deltas == (None, 30.0) and make_method("droco", obs_dim=4, action_dim=2,
                                                           huber_delta=50.0).critic_deltas == (None, 50.0)
    assert "ensemble.weights.0" in m.state_dict() and "ensemble.input_std" in m.state_dict()
    assert "model_train_mse" in m.state_dict()
    for bad, match in (({"penalty_coefficient": -1.0}, "penalty_coefficient"), ({"huber_delta": 0.0}, "huber_delta"),
                       ({"prediction": "sample"}, "prediction"), ({"penalty_min": "mean"}, "penalty_min"),
                       ({"holdout_fraction": 1.0}, "holdout_fraction")):
        with pytest.raises(ValueError, match=match):
            DROCO(3, 2, **bad)


# ---------------------------------------------------------------------------- the recipe
smoke_run = smoke_run_fixture("droco", "algo.method_kwargs.epochs=3", "algo.method_kwargs.hidden_sizes=[32,32]")


def test_recipe_smoke_run(smoke_run):
    assert "normalized_score" in smoke_run.output and "DROCO: ensemble of 7" in smoke_run.output
    state = flatten_state(load_checkpoint(smoke_run.run_dir)["loss_module"])
    assert any("ensemble.weights" in k for k in state)                 # the ensemble is checkpointed
    assert_logged(smoke_run.run_dir, "droco_penalty", "droco_penalized")


@pytest.mark.slow
def test_recipe_kill_and_resume_matches_the_smoke_run(smoke_run):
    run = kill_and_resume(smoke_run, stop_at=70)
    a = assert_same_loss_modules(smoke_run.run_dir, run.run_dir, nan_equal=True)
    assert any("ensemble.weights" in k for k in a)
