"""IGDF (Wen et al., ICML 2024): the score, the contrastive loss, the top-xi filter and the clipped
weights by hand; pre-training changes the encoders and learns a toy dynamics gap; the method
changes only the source rows' weights and filter; the recipe runs and resumes bit-identically."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
from tabb_torchrl.methods import IGDF, METHODS, CrossDomainMethod, SourceEdit, SourceRows, make_method
from tabb_torchrl.methods.igdf import (
    contrastive_logits,
    contrastive_loss,
    cosine_score,
    kept_count,
    top_fraction_mask,
    xi_for_env,
)
from tabb_torchrl.objectives import CrossDomainIQLLoss
from tabb_torchrl.objectives.functional import expectile_loss, huber_loss
from recipe_helpers import (assert_logged, assert_same_states, kill_and_resume,  # noqa: E402
                            load_checkpoint, smoke_run_fixture)


def _rows(score):
    n = score.shape[0]
    return SourceRows(torch.zeros(n), torch.zeros(n), torch.zeros(n), torch.zeros(n, 2), {"igdf_score": score},
                      value=lambda z: z.sum(-1), gamma=0.99)


def _small(**kw):
    return IGDF(2, 1, repr_dim=2, hidden_sizes=(), **kw)


# ---------------------------------------------------------------- the score and the objective by hand
def test_score_is_the_cosine_of_phi_and_psi_by_hand():
    m = _small(xi=0.5)
    with torch.no_grad():  # phi(s, a) = (s_0, a), psi(s') = s' (single linear layers, no bias)
        m.encoders.phi[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
        m.encoders.psi[0].weight.copy_(torch.eye(2))
        m.encoders.phi[0].bias.zero_()
        m.encoders.psi[0].bias.zero_()
    s = torch.tensor([[3.0, 9.0], [1.0, 0.0], [0.0, 2.0]])
    a = torch.tensor([[4.0], [0.0], [1.0]])
    s_next = torch.tensor([[4.0, 3.0], [-2.0, 0.0], [0.0, 5.0]])
    # phi = (3, 4), (1, 0), (0, 1); psi = (4, 3), (-2, 0), (0, 5): cos = 24 / 25, -1, 1
    expected = torch.tensor([0.96, -1.0, 1.0])
    torch.testing.assert_close(m.encoders.score(s, a, s_next), expected)
    torch.testing.assert_close(cosine_score(torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0]])),
                               torch.tensor([0.96]))
    # cached per stored row by add_columns
    td = TensorDict({"observation": s, "action": a, ("next", "observation"): s_next}, [3])
    m.add_columns(td)
    torch.testing.assert_close(td["igdf_score"], expected)


def test_contrastive_logits_and_loss_by_hand():
    phi = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    psi_pos = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    psi_neg = torch.tensor([[1.0, 1.0], [-1.0, 0.0]])
    logits = contrastive_logits(phi, psi_pos, psi_neg)
    # row 0: positive 2, negatives 1, -1; row 1: positive 2, negatives 2, 0
    assert logits.tolist() == [[2.0, 1.0, -1.0], [2.0, 2.0, 0.0]]
    sig = torch.sigmoid
    expected = -(torch.log(sig(torch.tensor(2.0))) * 2 + torch.log(1 - sig(torch.tensor(1.0)))
                 + torch.log(1 - sig(torch.tensor(-1.0))) + torch.log(1 - sig(torch.tensor(2.0)))
                 + torch.log(1 - sig(torch.tensor(0.0)))) / 6
    torch.testing.assert_close(contrastive_loss(logits), expected)


# ---------------------------------------------------------------- the filter and the weights
def test_top_xi_filter_keeps_exactly_the_highest_rows():
    h = torch.tensor([0.3, -0.9, 0.8, 0.1, 0.95, -0.2, 0.5, 0.0])
    assert top_fraction_mask(h, 0.25).nonzero().flatten().tolist() == [2, 4]
    assert top_fraction_mask(h, 0.75).nonzero().flatten().tolist() == [0, 2, 3, 4, 6, 7]
    assert top_fraction_mask(h, 1.0).all()
    assert kept_count(128, 0.25) == 32 and kept_count(128, 0.75) == 96 and kept_count(128, 0.5) == 64
    edit = _small(xi=0.25).edit_source(_rows(h))
    assert edit.keep.nonzero().flatten().tolist() == [2, 4]
    assert edit.reward is None and edit.target is None  # realised targets: only weights and the filter
    assert edit.metrics["kept"].item() == pytest.approx(0.25)
    assert edit.metrics["igdf_kept_score"].item() == pytest.approx((0.8 + 0.95) / 2)


def test_xi_from_the_environment_and_overridable():
    assert xi_for_env("tabb/HalfCheetah-kinematic-v0") == 0.25
    assert xi_for_env("tabb/Hopper-morph-v0") == 0.25
    assert xi_for_env("tabb/Walker2d-friction-v0") == 0.75
    assert xi_for_env("tabb/Ant-morph-v0") == 0.5
    assert _small(env_id="tabb/Walker2d-morph-v0").xi == 0.75
    assert _small(env_id="tabb/Walker2d-morph-v0", xi=0.4).xi == 0.4
    with pytest.raises(ValueError, match="xi"):
        _small(xi=0.0)
    with pytest.raises(ValueError, match="source_mean"):
        _small(source_mean="all")


def test_exp_weight_clip_at_100_binds():
    h = torch.tensor([0.9, 0.1, 0.3, 0.2])
    edit = _small(xi=0.5, alpha=10.0, source_mean="kept").edit_source(_rows(h))
    assert edit.keep.tolist() == [True, False, True, False]
    assert math.exp(10 * 0.9) > 100 and edit.weight[0].item() == 100.0  # exp(9) = 8103 clipped
    torch.testing.assert_close(edit.weight[1:], torch.exp(torch.tensor([1.0, 3.0, 2.0])))
    # source_mean="batch": (1 / n_s) sum_kept w l, i.e. the weights times k / n_s = 1 / 2
    batch = _small(xi=0.5, alpha=10.0).edit_source(_rows(h))
    torch.testing.assert_close(batch.weight, edit.weight * 0.5)
    # alpha = 1 (the default): exp(h) never reaches the clip, h being a cosine
    torch.testing.assert_close(_small(xi=0.5, source_mean="kept").edit_source(_rows(h)).weight, torch.exp(h))


# ---------------------------------------------------------------- pre-training
def _toy(n, sign, generator):
    s = torch.randn(n, 2, generator=generator)
    a = torch.rand(n, 1, generator=generator) * 2 - 1
    s_next = s + sign * torch.cat([a, -a], -1)
    return TensorDict({"observation": s, "action": a, ("next", "observation"): s_next}, [n])


def test_prepare_changes_the_encoders_and_learns_the_dynamics_gap():
    g = torch.Generator().manual_seed(0)
    target, source = _toy(512, +1.0, g), _toy(2048, -1.0, g)  # the source moves the other way
    m = IGDF(2, 1, xi=0.5, repr_dim=16, hidden_sizes=(64, 64), pretrain_steps=800, batch_size=64, lr=1e-3, seed=0)
    before = {k: v.clone() for k, v in m.encoders.state_dict().items()}
    held_out, negatives = _toy(256, +1.0, g), _toy(255, -1.0, g)["next", "observation"]

    def held_out_loss():
        with torch.no_grad():
            return m.encoders.loss(held_out["observation"], held_out["action"], held_out["next", "observation"],
                                   negatives)

    loss0 = held_out_loss()
    m.prepare(source, target)
    changed = [k for k, v in m.encoders.state_dict().items() if not torch.equal(v, before[k])]
    assert {"phi.0.weight", "psi.0.weight", "obs_mean", "obs_std"} <= set(changed)
    assert held_out_loss() < 0.8 * loss0
    assert m.pretrain_losses.shape == (800,) and m.pretrain_losses[-50:].mean() < m.pretrain_losses[:50].mean()
    # target-consistent transitions now score above the source's, and the filter prefers them (chance: 1/2)
    probe_t, probe_s = _toy(256, +1.0, g), _toy(256, -1.0, g)
    h_t = m.encoders.score_rows(probe_t["observation"], probe_t["action"], probe_t["next", "observation"])
    h_s = m.encoders.score_rows(probe_s["observation"], probe_s["action"], probe_s["next", "observation"])
    assert h_t.mean() > h_s.mean() + 0.1
    assert top_fraction_mask(torch.cat([h_t, h_s]), 0.5)[:256].float().mean() > 0.6
    # the same seed gives the same encoders (prepare is deterministic)
    m2 = IGDF(2, 1, xi=0.5, repr_dim=16, hidden_sizes=(64, 64), pretrain_steps=800, batch_size=64, lr=1e-3, seed=0)
    m2.encoders.load_state_dict(before)
    m2.prepare(source, target)
    for k, v in m.encoders.state_dict().items():
        assert torch.equal(v, m2.encoders.state_dict()[k]), k


def test_a_method_loaded_from_the_checkpoint_writes_the_same_score_column():
    """A resumed run rebuilds the method (other initial weights), loads the checkpointed state and writes the
    score column again: the same numbers as the uninterrupted run's (encoders and the observation statistics)."""
    g = torch.Generator().manual_seed(5)
    target, source = _toy(64, +1.0, g), _toy(128, -1.0, g)
    m = IGDF(2, 1, xi=0.5, repr_dim=4, hidden_sizes=(16,), pretrain_steps=10, batch_size=16, seed=0)
    m.prepare(source, target)
    assert not torch.equal(m.encoders.obs_mean, torch.zeros(2))       # prepare() set the statistics
    data = torch.cat([source, target])
    m.add_columns(data)
    torch.manual_seed(1)
    fresh = IGDF(2, 1, xi=0.5, repr_dim=4, hidden_sizes=(16,), pretrain_steps=10, batch_size=16, seed=0)
    fresh.load_state_dict(m.state_dict())
    resumed = data.exclude("igdf_score")
    fresh.add_columns(resumed)
    assert torch.equal(resumed["igdf_score"], data["igdf_score"])


# ---------------------------------------------------------------- through the core
def _batch():
    g = torch.Generator().manual_seed(3)
    n_s, n_t = 4, 3
    n = n_s + n_t
    return TensorDict({
        "observation": torch.randn(n, 3, generator=g), "action": torch.rand(n, 2, generator=g) - 0.5,
        "domain": torch.tensor([0] * n_s + [1] * n_t), ("next", "observation"): torch.randn(n, 3, generator=g),
        ("next", "reward"): torch.randn(n, 1, generator=g), ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        "igdf_score": torch.tensor([0.9, -0.5, 0.4, 0.1, 0.7, -0.8, 0.3]),
    }, [n])


def _loss(method):
    torch.manual_seed(0)
    return CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(5, hidden_sizes=(8,)),
                              make_latent_value(3, hidden_sizes=(8,)), method=method, features="raw")


def test_only_the_source_rows_weights_and_filter_change():
    td = _batch()
    m = IGDF(3, 2, xi=0.5, repr_dim=4, hidden_sizes=(8,), squared_critic=False)
    loss = _loss(m)
    out = loss(td)
    # by hand: kept rows 0 and 2 (h = 0.9, 0.4), weights exp(h) * k / n_s = exp(h) / 2
    rows, n_s = loss.rows(td)
    nets = loss.networks()
    with torch.no_grad():
        y = rows.reward + 0.99 * nets.value_detached(rows.next_feature)
        per_row = huber_loss(nets.q(rows.feature_sa), y.expand(2, -1), 1.0)       # [2, 7]
        min_q = nets.q_target(rows.feature_sa).amin(0)
        v = nets.value(rows.feature_s)
    w = torch.exp(torch.tensor([0.9, 0.4])) / 2
    kept = [0, 2]
    critic = (per_row[:, 4:].mean(-1) + (per_row[:, kept] * w).sum(-1) / 2).mean()
    torch.testing.assert_close(out["loss_qvalue"], critic)
    ev = expectile_loss(min_q - v, 0.7)
    torch.testing.assert_close(out["loss_value"], ev[4:].mean() + (ev[kept] * w).sum() / 2)
    # the target rows' share of each loss is the one without source rows
    target_only = _loss(CrossDomainMethod())(td[4:])
    torch.testing.assert_close(per_row[:, 4:].mean(-1).mean(), target_only["loss_qvalue"])
    torch.testing.assert_close(ev[4:].mean(), target_only["loss_value"])
    assert out["mean_target_value"].item() == pytest.approx(y.mean().item(), abs=1e-6)  # realised targets
    # dropped source rows, and the score column of target rows, leave every loss unchanged
    td2 = td.clone()
    td2["next", "reward"][[1, 3]] += 100.0
    td2["observation"][[1, 3]] += 5.0
    td2["igdf_score"][4:] = torch.tensor([-3.0, 5.0, 0.0])
    out2 = _loss(IGDF(3, 2, xi=0.5, repr_dim=4, hidden_sizes=(8,), squared_critic=False))(td2)
    for key in ("loss_qvalue", "loss_value", "loss_actor"):
        torch.testing.assert_close(out2[key], out[key])
    # without the value / actor flags, those losses are the target-only ones of the plain core
    off = _loss(IGDF(3, 2, xi=0.5, repr_dim=4, hidden_sizes=(8,), squared_critic=False, source_in_value=False, source_in_actor=False))(td)
    base = _loss(CrossDomainMethod())(td)
    torch.testing.assert_close(off["loss_value"], base["loss_value"])
    torch.testing.assert_close(off["loss_actor"], base["loss_actor"])
    torch.testing.assert_close(off["loss_qvalue"], out["loss_qvalue"])
    # squared_critic (the default): the authors' squared error, 0.5 (Q - y)^2, on every row instead of the recipe's Huber
    sq = _loss(IGDF(3, 2, xi=0.5, repr_dim=4, hidden_sizes=(8,)))(td)
    per_row_sq = 0.5 * (nets.q(rows.feature_sa).detach() - y) ** 2
    expected_sq = (per_row_sq[:, 4:].mean(-1) + (per_row_sq[:, kept] * w).sum(-1) / 2).mean()
    torch.testing.assert_close(sq["loss_qvalue"], expected_sq)
    torch.testing.assert_close(sq["loss_value"], out["loss_value"])


def test_the_edit_equals_a_hand_written_edit_through_the_core():
    class Fixed(CrossDomainMethod):
        source_in_value = source_in_actor = True

        def edit_source(self, rows):
            keep = torch.tensor([True, False, True, False])
            return SourceEdit(weight=torch.exp(torch.tensor([0.9, -0.5, 0.4, 0.1])) / 2, keep=keep)

    td = _batch()
    a = _loss(IGDF(3, 2, xi=0.5, repr_dim=4, hidden_sizes=(8,), squared_critic=False))(td)
    b = _loss(Fixed())(td)
    for key in ("loss_qvalue", "loss_value", "loss_actor", "mean_weight", "ess"):
        torch.testing.assert_close(a[key], b[key])


def test_registry_and_the_recipe_factory():
    assert METHODS["igdf"] is IGDF
    m = make_method("igdf", obs_dim=3, action_dim=2, env_id="tabb/HalfCheetah-morph-v0", pretrain_steps=1)
    assert isinstance(m, IGDF) and m.xi == 0.25
    from tabb_torchrl.pipeline import ALGOS
    from tabb_torchrl.pipeline import make_method as from_cfg

    assert "igdf" in ALGOS
    cfg = {"algo": {"method": "igdf", "method_kwargs": {"repr_dim": 8}}, "env": {"id": "tabb/Walker2d-morph-v0"},
           "loss": {"gamma": 0.99}}
    built = from_cfg(cfg, obs_dim=3, action_dim=2)
    assert built.xi == 0.75 and built.encoders.repr_dim == 8
    assert "method.encoders.phi.0.weight" in "".join(_loss(built).state_dict())  # checkpointed with the loss


# ---------------------------------------------------------------- the recipe
smoke_run = smoke_run_fixture("igdf", "algo.method_kwargs.pretrain_steps=30", checkpoint_every=30)


def test_recipe_smoke_run(smoke_run):
    assert "method igdf prepared" in smoke_run.output
    a = load_checkpoint(smoke_run.run_dir)
    assert a["progress"]["rl_step"] == 100
    assert any(k.startswith("method.encoders.") for k in a["loss_module"])    # checkpointed with the loss
    assert_logged(smoke_run.run_dir, "kept", "igdf_score")


@pytest.mark.slow
def test_recipe_kill_and_resume_matches_the_smoke_run(smoke_run):
    run = kill_and_resume(smoke_run, stop_at=70)             # killed after step 70, checkpoint at 60
    assert "method igdf prepared" not in run.resumed_output   # prepare() ran once per run
    a, b = load_checkpoint(smoke_run.run_dir), load_checkpoint(run.run_dir)
    assert a["progress"]["rl_step"] == b["progress"]["rl_step"] == 100
    assert_same_states(a["loss_module"], b["loss_module"])
