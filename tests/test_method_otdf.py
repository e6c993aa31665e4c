"""OTDF (Lyu et al., ICLR 2025): the transport deviation on problems with a known coupling, chunking,
the per-batch filter and weights by hand, the VAE constraint (fitted in prepare, gradient only to
the actor), what the plug-in changes in the losses, and a recipe run with kill-and-resume."""
from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
from tabb_torchrl.methods import METHODS, OTDF, CrossDomainMethod, SourceEdit, SourceRows, make_method
from tabb_torchrl.methods.otdf import (
    DEVIATION_COLUMN,
    BehaviorVAE,
    cosine_cost,
    keep_top_fraction,
    normalize_deviation,
    reg_weight_for_env,
    train_vae,
    transport_deviation,
)
from tabb_torchrl.objectives import CrossDomainIQLLoss
from recipe_helpers import (assert_logged, assert_same_loss_modules, flatten_state,  # noqa: E402
                            kill_and_resume, load_checkpoint, smoke_run_fixture)


def _angles(degrees):
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], -1)


# ---------------------------------------------------------------------------- optimal transport
def test_deviation_of_a_permutation_coupling_by_hand():
    # each source direction has one target direction 10 degrees away, all others >= 110 degrees:
    # with a small epsilon the coupling is the permutation / 3 and d_i = -(1/3)(1 - cos 10deg)
    src, tgt = _angles([0.0, 120.0, 240.0]), _angles([250.0, 10.0, 130.0])
    expected = -(1 - math.cos(math.radians(10))) / 3
    d = transport_deviation(src, tgt, epsilon=1e-3, num_iter=2000, row_mass="chunk")
    torch.testing.assert_close(d, torch.full((3,), expected, dtype=torch.float32), atol=1e-6, rtol=0)
    unit = transport_deviation(src, tgt, epsilon=1e-3, num_iter=2000)   # row_mass="unit": x k = 3
    torch.testing.assert_close(unit, 3 * d)


def test_deviation_4x3_matches_exact_transport():
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.rand(4, 5, generator=g, dtype=torch.float64), torch.rand(3, 5, generator=g, dtype=torch.float64)
    cost = cosine_cost(src, tgt)
    plan = ot.emd(np.full(4, 0.25), np.full(3, 1 / 3), cost.numpy())    # exact LP coupling
    expected = -(torch.from_numpy(plan) * cost).sum(1)
    d = transport_deviation(src, tgt, epsilon=1e-4, num_iter=20000, row_mass="chunk")
    torch.testing.assert_close(d, expected.float(), atol=2e-5, rtol=0)


def test_default_regularisation_is_the_authors_ott_setting():
    # ott-jax PointCloud(scale_cost="max_cost"), default epsilon = 0.05 * mean(scaled cost), 100 iterations,
    # deviation on the unscaled cost; here with POT directly on numpy
    rng = np.random.default_rng(1)
    src, tgt = rng.normal(size=(7, 4)), rng.normal(size=(5, 4))
    cost = 1 - (src / np.linalg.norm(src, axis=1, keepdims=True)) @ (tgt / np.linalg.norm(tgt, axis=1, keepdims=True)).T
    scaled = cost / cost.max()
    plan = ot.sinkhorn(np.full(7, 1 / 7), np.full(5, 1 / 5), scaled, 0.05 * scaled.mean(), method="sinkhorn_log",
                       numItermax=100, stopThr=1e-9, warn=False)
    expected = torch.from_numpy(-(plan * cost).sum(1)).float()
    d = transport_deviation(torch.from_numpy(src), torch.from_numpy(tgt), row_mass="chunk")
    torch.testing.assert_close(d, expected, atol=1e-7, rtol=1e-5)


def test_chunks_are_independent_problems_and_duplicates_give_one_chunk():
    g = torch.Generator().manual_seed(2)
    src, tgt = torch.randn(10, 6, generator=g), torch.randn(8, 6, generator=g)
    chunked = transport_deviation(src, tgt, chunk=4)
    by_hand = torch.cat([transport_deviation(src[i:i + 4], tgt, chunk=100) for i in (0, 4, 8)])
    torch.testing.assert_close(chunked, by_hand)
    # a source set made of two copies of one chunk: chunking changes nothing (row_mass="unit")
    twice = torch.cat([src[:5], src[:5]])
    one = transport_deviation(twice, tgt, chunk=10)
    torch.testing.assert_close(transport_deviation(twice, tgt, chunk=5), one)
    torch.testing.assert_close(one, transport_deviation(src[:5], tgt).repeat(2))


def test_transport_deviation_errors_and_degenerate_costs():
    with pytest.raises(ValueError, match="cost must be one of"):
        transport_deviation(torch.ones(2, 2), torch.ones(2, 2), cost="l1")
    with pytest.raises(ValueError, match="share d"):
        transport_deviation(torch.ones(2, 2), torch.ones(2, 3))
    same = torch.tensor([[1.0, 2.0], [2.0, 4.0]])  # all pairs at cosine cost ~0 (ott's ridge)
    assert transport_deviation(same, same[:1]).abs().max() < 1e-6
    assert transport_deviation(torch.zeros(2, 2), torch.zeros(1, 2)).tolist() == [-1.0, -1.0]  # 0-vectors: cost 1
    assert transport_deviation(torch.ones(2, 2), torch.ones(1, 2), cost="euclidean").tolist() == [0.0, 0.0]


# ---------------------------------------------------------------------------- per-batch filter
def test_min_max_top_80_and_exp_weights_by_hand():
    d = torch.tensor([-0.2, -0.6, -1.0, -0.4, -0.3])
    rows = SourceRows(torch.zeros(5), torch.zeros(5), torch.zeros(5), torch.zeros(5, 2), {DEVIATION_COLUMN: d},
                      value=lambda z: z.sum(-1), gamma=0.99)
    edit = OTDF(2, 1, reg_weight=0.0, vae_hidden=4).edit_source(rows)
    d_hat = torch.tensor([0.0, -0.5, -1.0, -0.25, -0.125])          # (d - max) / (max - min), max - min = 0.8
    torch.testing.assert_close(normalize_deviation(d), d_hat)
    assert edit.keep.tolist() == [True, True, False, True, True]      # floor(0.8 * 5) = 4: the lowest is dropped
    torch.testing.assert_close(edit.weight, d_hat.exp() * 4 / 5)     # source_mean="batch": x k / n_s
    assert edit.target is None and edit.reward is None
    assert edit.metrics["mean_ot_deviation"].item() == pytest.approx(-0.5)
    kept = OTDF(2, 1, reg_weight=0.0, source_mean="kept", vae_hidden=4).edit_source(rows)
    torch.testing.assert_close(kept.weight, d_hat.exp())
    unweighted = OTDF(2, 1, reg_weight=0.0, weighted=False, source_mean="kept", vae_hidden=4).edit_source(rows)
    assert unweighted.weight is None and torch.equal(unweighted.keep, edit.keep)
    flat = OTDF(2, 1, reg_weight=0.0, weighted=False, vae_hidden=4).edit_source(rows)
    torch.testing.assert_close(flat.weight, torch.full((5,), 0.8))
    # a 128-row batch keeps int(0.8 * 128) = 102 rows (the authors' src_filter_num), the largest scores
    score = torch.randn(128, generator=torch.Generator().manual_seed(0))
    keep = keep_top_fraction(score, 0.8)
    assert int(keep.sum()) == 102 and score[keep].min() >= score[~keep].max()
    assert normalize_deviation(torch.full((3,), -0.5)).tolist() == [0.0, 0.0, 0.0]  # no nan when all equal


def test_reg_weight_by_shift_and_override():
    assert reg_weight_for_env("tabb/HalfCheetah-morph-v0") == 0.5
    assert reg_weight_for_env("tabb/HalfCheetah-gravity-0.5-v0") == 0.5
    assert reg_weight_for_env("tabb/Hopper-kinematic-legjnt-medium-v0") == 0.1
    assert reg_weight_for_env("tabb/Walker2d-friction-2.0-v0") == 0.5
    assert reg_weight_for_env("Hopper-v5") == 0.5
    assert OTDF(2, 1, env_id="tabb/Hopper-kinematic-v0", vae_hidden=4).reg_weight == 0.1
    assert OTDF(2, 1, env_id="tabb/Hopper-kinematic-v0", reg_weight=0.3, vae_hidden=4).reg_weight == 0.3
    assert OTDF(2, 1, env_id="tabb/Hopper-kinematic-v0", reg_weights={"kinematic": 0.2}, vae_hidden=4).reg_weight == 0.2
    with pytest.raises(ValueError, match="proportion"):
        OTDF(2, 1, proportion=0.0)


# ---------------------------------------------------------------------------- prepare / columns / VAE
def _data(n, obs_dim=3, act_dim=2, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return TensorDict({"observation": torch.randn(n, obs_dim, generator=g) + shift,
                       "action": torch.rand(n, act_dim, generator=g) * 2 - 1,
                       ("next", "observation"): torch.randn(n, obs_dim, generator=g) + shift,
                       ("next", "reward"): torch.randn(n, 1, generator=g),
                       ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool)}, [n])


def _otdf(**kw):
    # the recipe's Huber critic unless asked (the by-hand references below use the core's Huber loss)
    kw = {"vae_hidden": 16, "vae_steps": 40, "vae_batch_size": 16, "ot_chunk": 7, "critic_deltas": None, **kw}
    return OTDF(3, 2, **kw)


def test_prepare_fits_the_vae_on_target_only_and_caches_deviations():
    source, target = _data(20, seed=1), _data(12, seed=2, shift=1.0)
    torch.manual_seed(0)
    m = _otdf(reg_weight=0.5)
    before = {k: v.clone() for k, v in m.vae.state_dict().items()}
    s, a = target["observation"], target["action"]
    torch.manual_seed(1)
    loss_before = m.vae.loss(s, a).item()
    m.prepare(source, target)
    assert any(not torch.equal(before[k], v) for k, v in m.vae.state_dict().items())   # trained in prepare
    assert not any(p.requires_grad for p in m.vae.parameters())                          # frozen for RL
    torch.manual_seed(1)
    assert m.vae.loss(s, a).item() < loss_before
    def sas(td):
        return torch.cat([td["observation"], td["action"], td["next", "observation"]], -1)

    torch.testing.assert_close(m.deviation, transport_deviation(sas(source), sas(target), chunk=7))
    # the VAE sees the target rows only: another source set, the same VAE
    torch.manual_seed(0)
    m2 = _otdf(reg_weight=0.5)
    torch.manual_seed(1)
    m2.vae.loss(s, a)
    m2.prepare(_data(20, seed=5, shift=3.0), target)
    for k, v in m.vae.state_dict().items():
        assert torch.equal(v, m2.vae.state_dict()[k]), k
    # the VAE's training recipe: MSE + 0.5 KL, decreasing on a fixed set
    vae = BehaviorVAE(3, 2, hidden=16)
    assert train_vae(vae, s, a, steps=0).isnan()


def test_add_columns_and_state_dict_round_trip():
    from tabb_torchrl.data import make_source_target_buffer

    source, target = _data(15, seed=1), _data(6, seed=2)
    m = _otdf(reg_weight=0.0)
    with pytest.raises(ValueError, match="prepare"):
        make_source_target_buffer(source, target, n_source=4, n_target=4, seed=0, columns=m.add_columns)
    m.prepare(source, target)
    rb = make_source_target_buffer(source, target, n_source=4, n_target=4, seed=0, columns=m.add_columns)
    stored = rb.storage.get(slice(0, 21))
    torch.testing.assert_close(stored[DEVIATION_COLUMN][:15], m.deviation)
    assert stored[DEVIATION_COLUMN][15:].tolist() == [0.0] * 6                # neutral on target rows
    # memmap storage: add_columns on each part
    rb2 = make_source_target_buffer(source, target, n_source=4, n_target=4, seed=0, storage="memmap",
                                    columns=m.add_columns)
    torch.testing.assert_close(rb2.storage.get(slice(0, 21))[DEVIATION_COLUMN], stored[DEVIATION_COLUMN])
    # a fresh method (resume) loads the deviations of any length and the VAE, then writes the same column
    fresh = _otdf(reg_weight=0.0)
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.deviation, m.deviation)
    td = torch.cat([source, target])
    td.set("domain", torch.tensor([0] * 15 + [1] * 6))
    fresh.add_columns(td)
    torch.testing.assert_close(td[DEVIATION_COLUMN], stored[DEVIATION_COLUMN])


def _loss(method):
    torch.manual_seed(0)
    return CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(5, hidden_sizes=(8,)),
                              make_latent_value(3, hidden_sizes=(8,)), method=method, features="raw")


def _batch():
    td = torch.cat([_data(6, seed=3), _data(4, seed=4)])
    td.set("domain", torch.tensor([0] * 6 + [1] * 4))
    td.set(DEVIATION_COLUMN, torch.tensor([-0.1, -0.9, -0.5, -0.3, -0.7, -0.2, 0.0, 0.0, 0.0, 0.0]))
    return td


class _ByHand(CrossDomainMethod):
    """The edit OTDF should make on _batch(): floor(0.8 * 6) = 4 kept, weights exp(d_hat) * 4 / 6,
    kept source rows in every loss."""

    source_in_value = source_in_actor = True

    def edit_source(self, rows):
        d = torch.tensor([-0.1, -0.9, -0.5, -0.3, -0.7, -0.2])
        d_hat = (d + 0.1) / 0.8
        return SourceEdit(weight=d_hat.exp() * 4 / 6, keep=torch.tensor([True, False, True, True, False, True]))


def test_the_plug_in_changes_only_source_weights_filter_and_the_actor_loss():
    td = _batch()
    otdf = _otdf(reg_weight=0.5)
    out, plain, by_hand = _loss(otdf)(td), _loss(CrossDomainMethod())(td), _loss(_ByHand())(td)
    # critic and value: the source rows' weights and filter by hand; targets untouched
    torch.testing.assert_close(out["loss_qvalue"], by_hand["loss_qvalue"])
    torch.testing.assert_close(out["loss_value"], by_hand["loss_value"])
    assert not torch.allclose(out["loss_qvalue"], plain["loss_qvalue"])
    torch.testing.assert_close(out["mean_target_value"], plain["mean_target_value"])
    reg = out["actor_regularizer"]                                           # actor: AWR + the VAE term
    assert reg.item() != 0.0
    torch.testing.assert_close(out["loss_actor"] - reg, by_hand["loss_actor"])
    no_reg = _loss(_otdf(reg_weight=0.0))(td)
    torch.testing.assert_close(no_reg["loss_actor"], by_hand["loss_actor"])
    assert "actor_regularizer" not in no_reg.keys()
    # the recipe's target-only value and actor (source_in_*=False): those two equal plain IQL's
    only_critic = _loss(_otdf(reg_weight=0.0, source_in_value=False, source_in_actor=False))(td)
    torch.testing.assert_close(only_critic["loss_value"], plain["loss_value"])
    torch.testing.assert_close(only_critic["loss_actor"], plain["loss_actor"])
    torch.testing.assert_close(only_critic["loss_qvalue"], out["loss_qvalue"])
    # critic_deltas=(None, None), OTDF's default: the authors' squared error
    assert OTDF(3, 2).critic_deltas == (None, None)
    sq = _loss(_otdf(reg_weight=0.0, critic_deltas=(None, None)))(td)
    assert not torch.allclose(sq["loss_qvalue"], out["loss_qvalue"])


def test_vae_regulariser_reaches_only_the_actor():
    td = _batch()
    grads = {}
    for w in (0.0, 0.5):
        loss = _loss(_otdf(reg_weight=w))
        lq, lv, lpi, _ = loss.losses(td)
        (lq + lv + lpi).backward()
        grads[w] = {name: params.flatten_keys().apply(lambda p: p.grad.clone()) for name, params in
                    (("critic", loss.qvalue_network_params), ("value", loss.value_network_params),
                     ("actor", loss.actor_network_params))}
        assert all(p.grad is None and not p.requires_grad for p in loss.method.vae.parameters())
    for part in ("critic", "value"):
        for key, g in grads[0.0][part].items():
            torch.testing.assert_close(grads[0.5][part][key], g)
    changed = [not torch.allclose(grads[0.5]["actor"][k], g) for k, g in grads[0.0]["actor"].items()]
    assert any(changed)
    # on the fast path the same term reaches the actor (the policy's mean action, flat tensors)
    from tabb_torchrl.data import make_source_target_buffer
    from tabb_torchrl.objectives import FastCrossDomainUpdate

    m = _otdf(reg_weight=0.5)
    m.prepare(_data(30, seed=1), _data(10, seed=2))
    rb = make_source_target_buffer(_data(30, seed=1), _data(10, seed=2), n_source=8, n_target=8, seed=0,
                                   columns=m.add_columns)
    loss = _loss(m)
    opts = [torch.optim.Adam(list(p.flatten_keys().values()), lr=1e-3) for p in
            (loss.qvalue_network_params, loss.value_network_params, loss.actor_network_params)]
    vae_before = [p.clone() for p in m.vae.parameters()]
    metrics = FastCrossDomainUpdate(loss, rb, opts)()
    assert torch.isfinite(metrics["actor_regularizer"]) and metrics["actor_regularizer"].item() != 0.0
    assert all(torch.equal(a, b) for a, b in zip(vae_before, m.vae.parameters()))


def test_registry_and_recipe_kwargs():
    assert METHODS["otdf"] is OTDF
    m = make_method("otdf", obs_dim=3, action_dim=2, env_id="tabb/Hopper-kinematic-v0", vae_hidden=8)
    assert m.reg_weight == 0.1 and m.columns == (DEVIATION_COLUMN,) and not m.pooled
    from tabb_torchrl.pipeline.config import ALGOS
    from tabb_torchrl.pipeline.factories import make_method as make_from_cfg

    assert "otdf" in ALGOS
    cfg = {"algo": {"method": "otdf", "method_kwargs": {"vae_hidden": 8, "proportion": 0.5}},
           "env": {"id": "tabb/Hopper-gravity-0.5-v0"}, "loss": {"gamma": 0.99}}
    built = make_from_cfg(cfg, obs_dim=11, action_dim=3)
    assert built.proportion == 0.5 and built.reg_weight == 0.5 and built.vae.mean.out_features == 6


# ---------------------------------------------------------------------------- the recipe
smoke_run = smoke_run_fixture("otdf", "algo.method_kwargs.vae_steps=50")


def test_recipe_smoke_run(smoke_run):
    import json

    full = smoke_run.run_dir
    assert "normalized_score" in smoke_run.output and "OTDF: transport deviations" in smoke_run.output
    summary = json.loads((full / "summary.json").read_text())
    assert summary["algo"] == "otdf" and summary["steps"] == 100 and math.isfinite(summary["normalized_score"])
    assert summary["pretrain_steps"] == {"stage1": 0, "stage2": 0}     # raw features: no latent pre-training
    assert_logged(full, "actor_regularizer", "mean_ot_deviation")
    state = load_checkpoint(full)["loss_module"]
    assert any("method.deviation" in k for k in flatten_state(state))   # the deviations are checkpointed


@pytest.mark.slow
def test_recipe_kill_and_resume_matches_the_smoke_run(smoke_run):
    # stopped after step 60 with the last checkpoint at 40 (as a kill), then resumed
    run = kill_and_resume(smoke_run, stop_at=60)
    assert "OTDF: transport deviations" in run.stopped_output
    assert run.stopped_progress["rl_step"] == 40
    assert "OTDF: transport deviations" not in run.resumed_output   # prepare() ran once
    a = assert_same_loss_modules(smoke_run.run_dir, run.run_dir)
    assert any("method.deviation" in k for k in a)
