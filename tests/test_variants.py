"""The TABB variants beyond the paper (docs/method.rst, "Variants beyond the paper"): hand-computed
examples of each option, its default keeping the paper's equations, its config checks and a smoke run
of each through the recipe."""
from __future__ import annotations

import json
import math

import pytest
import torch
from tensordict import TensorDict

from recipe_helpers import run_recipe
from tabb_torchrl import LatentModel, LatentModelLoss, make_actor, make_latent_qvalue, make_latent_value
from tabb_torchrl.methods import TABB, SourceRows
from tabb_torchrl.modules.latent import ResidualPredictor
from tabb_torchrl.objectives import CrossDomainIQLLoss
from tabb_torchrl.objectives.functional import (
    AlignedTargets,
    gate_threshold,
    source_bellman_target,
    target_aligned_backup,
)
from tabb_torchrl.pipeline.config import (
    ADDED_DEFAULTS,
    ConfigError,
    config_hash,
    validate_config,
    without_added_defaults,
)
from tabb_torchrl.pipeline.factories import make_latent_model, make_latent_model_loss, make_method, reward_scale_factor


# ---------------------------------------------------------------- data.reward_scale
def _episodes(returns_and_lengths):
    """Rows of episodes with the given returns (reward spread evenly) and lengths; done on each last row."""
    rewards, done = [], []
    for ret, length in returns_and_lengths:
        rewards += [ret / length] * length
        done += [False] * (length - 1) + [True]
    n = len(rewards)
    return TensorDict({("next", "reward"): torch.tensor(rewards).reshape(n, 1),
                       ("next", "done"): torch.tensor(done).reshape(n, 1)}, [n])


def test_reward_scale_from_known_episode_returns():
    source = _episodes([(10.0, 4), (30.0, 2)])
    target = _episodes([(20.0, 5), (50.0, 1)])
    cfg = {"data": {"reward_scale": "iql_locomotion"}}
    # one common factor: 1000 / (max - min) over the source and target episodes = 1000 / (50 - 10)
    assert reward_scale_factor(cfg, source, target) == pytest.approx(25.0)
    # target-only runs: their own episodes, 1000 / (50 - 20)
    assert reward_scale_factor(cfg, None, target) == pytest.approx(1000 / 30)
    assert reward_scale_factor({"data": {"reward_scale": "none"}}, source, target) == 1.0
    assert reward_scale_factor({"data": {"reward_scale": 25.0}}, None, target) == 25.0  # a fixed factor
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(ConfigError, match="positive number"):
            reward_scale_factor({"data": {"reward_scale": bad}}, None, target)


# ---------------------------------------------------------------- loss.source_target
def test_gate_threshold_is_a_quantile_of_the_target_rows_tbm():
    tbm = torch.tensor([0.4, 0.0, 0.2, 0.1, 0.3])
    assert float(gate_threshold(tbm, 0.5)) == pytest.approx(0.2)
    assert float(gate_threshold(tbm, 0.75)) == pytest.approx(0.3)  # linear interpolation, torch.quantile
    assert float(gate_threshold(tbm, 1.0)) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="gate quantile"):
        gate_threshold(tbm, 0.0)


def test_source_target_kinds_on_three_rows():
    real = torch.tensor([1.0, 2.0, 3.0])
    aligned = torch.tensor([1.5, 5.0, 3.1])
    b = AlignedTargets(real, aligned, (real - aligned).abs())  # TBM 0.5, 3.0, 0.1
    torch.testing.assert_close(source_bellman_target(b), aligned)  # the paper
    torch.testing.assert_close(source_bellman_target(b, "realised"), real)
    # gate at 0.5: rows 0 (TBM = 0.5, on the threshold) and 2 keep their realised target, row 1 the aligned one
    torch.testing.assert_close(source_bellman_target(b, "gated", threshold=0.5), torch.tensor([1.0, 5.0, 3.0]))
    with pytest.raises(ValueError, match="threshold"):
        source_bellman_target(b, "gated")
    with pytest.raises(ValueError, match="Unknown source target"):
        source_bellman_target(b, "both")


def _rows(reward, next_value, r_hat, z_hat, target_rows=None, gamma=0.5):
    n = len(reward)
    return SourceRows(reward=torch.tensor(reward), terminated=torch.zeros(n), next_value=torch.tensor(next_value),
                      next_feature=torch.zeros(n, 1),
                      columns={"r_hat": torch.tensor(r_hat), "z_next_hat": torch.tensor(z_hat).reshape(n, 1)},
                      value=lambda z: z.sum(-1), gamma=gamma, target_rows=target_rows)


def test_gated_tabb_on_a_three_row_example():
    """TABB's gated target: realised where a source row's TBM is within the target rows' TBM quantile."""
    # target rows: TBM = |r + 0.5 V' - (r_hat + 0.5 V(z_hat))| = 0.0, 0.2, 0.4 (the predictor's own error)
    tgt = _rows([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.2, 1.4], [0.0, 0.0, 0.0])
    # source rows: y_real = 1 + 0.5 * 2 = 2; y_aligned = r_hat + 0.5 z_hat = 2.1, 3.0, 1.9 -> TBM 0.1, 1.0, 0.1
    src = _rows([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [1.0, 1.0, 1.0], [2.2, 4.0, 1.8], target_rows=tgt)
    edit = TABB(source_target="gated", gate_quantile=1.0).edit_source(src)  # threshold = max target TBM = 0.4
    torch.testing.assert_close(edit.target, torch.tensor([2.0, 3.0, 2.0]))
    assert float(edit.metrics["gate_realised_fraction"]) == pytest.approx(2 / 3)
    # the weights are the paper's (Eq. 7 on the same TBM), whatever the target
    paper = TABB().edit_source(src)
    torch.testing.assert_close(edit.weight, paper.weight)
    torch.testing.assert_close(paper.target, torch.tensor([2.1, 3.0, 1.9]))
    torch.testing.assert_close(TABB(source_target="realised").edit_source(src).target, torch.full((3,), 2.0))
    # a quantile below every source TBM: the aligned target everywhere
    torch.testing.assert_close(TABB(source_target="gated", gate_quantile=0.1).edit_source(src).target,
                               paper.target)
    with pytest.raises(ValueError, match="target rows"):
        TABB(source_target="gated").edit_source(_rows([1.0], [2.0], [1.0], [2.0]))
    with pytest.raises(ValueError, match="source_target"):
        TABB(source_target="aligned_realised")
    assert TABB(source_target="gated").needs_target_rows and not TABB().needs_target_rows


# ---------------------------------------------------------------- algo.source_in_value and the losses
def _loss(method, num_q=2):
    torch.manual_seed(0)
    return CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(4, hidden_sizes=(8,)),
                              make_latent_value(4, hidden_sizes=(8,)), method=method, num_qvalue_nets=num_q,
                              gamma=0.5, huber_delta=None)


def _batch(n_src=3, n_tar=3):
    gen = torch.Generator().manual_seed(1)
    n = n_src + n_tar
    return TensorDict({
        "observation": torch.randn(n, 3, generator=gen), "action": torch.rand(n, 2, generator=gen) * 1.8 - 0.9,
        "domain": torch.tensor([0] * n_src + [1] * n_tar),
        "z_s": torch.randn(n, 4, generator=gen), "z_sa": torch.randn(n, 4, generator=gen),
        ("next", "z_s"): torch.randn(n, 4, generator=gen), "r_hat": torch.randn(n, 1, generator=gen),
        "z_next_hat": torch.randn(n, 4, generator=gen), ("next", "reward"): torch.randn(n, 1, generator=gen),
        ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
    }, [n])


def test_source_in_value_adds_the_weighted_source_rows_to_the_value_loss():
    td = _batch()
    loss = _loss(TABB(source_in_value=True))
    out = loss(td)
    # by hand: mean_T[L2(minQ' - V)] + mean_S[w L2(minQ' - V)], w of Eq. 7 on the source rows
    rows, ns = loss.rows(td)
    nets = loss.networks()
    with torch.no_grad():
        min_q = nets.q_target(rows.feature_sa).amin(0)
        v = nets.value(rows.feature_s)
        u = min_q - v
        l2 = torch.where(u < 0, 0.3, 0.7) * u ** 2
        edit = loss.method.edit_source(SourceRows(rows.reward[:ns], rows.terminated[:ns],
                                                  nets.value_detached(rows.next_feature[:ns]),
                                                  rows.next_feature[:ns], {k: c[:ns] for k, c in rows.columns.items()},
                                                  nets.value_detached, 0.5))
    expected = l2[ns:].mean() + (edit.weight * l2[:ns]).mean()
    torch.testing.assert_close(out["loss_value"], expected)
    # the default reads the target rows only, and the actor stays target-only either way
    paper = _loss(TABB())(td)
    torch.testing.assert_close(paper["loss_value"], l2[ns:].mean())
    torch.testing.assert_close(out["loss_actor"], paper["loss_actor"])
    torch.testing.assert_close(out["loss_qvalue"], paper["loss_qvalue"])


def test_larger_critic_ensemble_takes_the_min_over_all_critics():
    td = _batch()
    loss = _loss(TABB(), num_q=5)
    rows, ns = loss.rows(td)
    q_t = loss.networks().q_target(rows.feature_sa)
    assert q_t.shape == (5, 6)
    with torch.no_grad():  # the value loss reads min over the five target critics
        u = q_t.amin(0)[ns:] - loss.networks().value(rows.feature_s[ns:])
        expected = (torch.where(u < 0, 0.3, 0.7) * u ** 2).mean()
    torch.testing.assert_close(loss(td)["loss_value"], expected)


# ---------------------------------------------------------------- model.predictor=residual
def _latent(predictor="residual", termination_head=False):
    torch.manual_seed(0)
    return LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,), predictor=predictor,
                                 termination_head=termination_head)


def _transitions(domain):
    gen = torch.Generator().manual_seed(2)
    n = len(domain)
    return TensorDict({"observation": torch.randn(n, 3, generator=gen), "action": torch.rand(n, 2, generator=gen),
                       ("next", "observation"): torch.randn(n, 3, generator=gen),
                       ("next", "reward"): torch.randn(n, 1, generator=gen),
                       ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
                       "domain": torch.tensor(domain)}, [n])


def test_residual_predictor_is_the_source_outcome_at_init_and_adds_the_shift():
    model = _latent().freeze()
    td = _transitions([0, 0, 1, 1])
    lat = model.compute(td)
    # source rows: their own reward and f(s') (the shift's heads start at zero)
    torch.testing.assert_close(lat.r_hat[:2], td["next", "reward"][:2])
    torch.testing.assert_close(lat.z_next_hat[:2], lat.next_z_s[:2])
    # target rows: h_T = h_S + 0
    r_s, z_s = model.predictor.base(lat.z_sa[2:])
    torch.testing.assert_close(lat.r_hat[2:], r_s)
    torch.testing.assert_close(lat.z_next_hat[2:], z_s)
    # a shift of +1 on every output: source rows move by exactly 1
    with torch.no_grad():
        model.predictor.shift.reward_head.bias.fill_(1.0)
        model.predictor.shift.next_latent_head.bias.fill_(1.0)
    lat = model.compute(td)
    torch.testing.assert_close(lat.r_hat[:2], td["next", "reward"][:2] + 1)
    torch.testing.assert_close(lat.z_next_hat[:2], lat.next_z_s[:2] + 1)
    torch.testing.assert_close(lat.z_next_hat[2:], z_s + 1)
    with pytest.raises(KeyError, match="domain"):
        model.compute(td.exclude("domain"))
    assert isinstance(make_latent_model({"model": {
        "latent_state_dim": 4, "latent_sa_dim": 4, "encoder_hidden": [8], "predictor_hidden": [8],
        "activation": "relu", "avg_l1_norm": True, "termination_head": False, "predictor": "residual"}}, 3, 2
    ).predictor, ResidualPredictor)


def test_residual_predictor_training_source_rows_train_h_s_target_rows_the_shift():
    model = _latent()
    loss = LatentModelLoss(model, stage=1)
    base = list(model.predictor.base.parameters())
    shift = list(model.predictor.shift.parameters())

    def grads(domain):
        model.zero_grad(set_to_none=True)
        loss(_transitions(domain))["loss_model"].backward()
        return ([p.grad is not None and bool(p.grad.abs().sum() > 0) for p in base],
                [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in shift])

    g_base, g_shift = grads([0, 0, 0, 0])
    assert all(g_base) and not any(g_shift)
    g_base, g_shift = grads([1, 1, 1, 1])
    assert not any(g_base) and any(g_shift)  # zero heads: only the heads move first


def test_residual_predictor_termination_head():
    model = _latent(termination_head=True).freeze()
    lat = model.compute(_transitions([0, 1]))
    assert lat.terminated_hat.shape == (2, 1) and bool(((lat.terminated_hat > 0) & (lat.terminated_hat < 1)).all())


# ---------------------------------------------------------------- pretrain.stage2_reg
def test_stage2_reg_is_an_l2_sp_penalty_toward_the_stage1_predictor():
    model = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,))
    loss = LatentModelLoss(model, stage=1, stage2_reg=0.5)
    td = _transitions([1, 1, 1, 1])
    assert "stage2_reg_penalty" not in loss(td).keys()  # stage 1: no penalty
    loss.stage = 2  # snapshot of h here
    plain = float(LatentModelLoss(model, stage=2)(td)["loss_model"])
    assert float(loss(td)["loss_model"]) == pytest.approx(plain)
    with torch.no_grad():
        model.predictor.reward_head.bias += 0.1     # 1 entry moved by 0.1
        model.predictor.next_latent_head.bias -= 0.2  # 4 entries moved by 0.2
    expected_penalty = 0.1 ** 2 + 4 * 0.2 ** 2
    out = loss(td)
    plain = float(LatentModelLoss(model, stage=2)(td)["loss_model"])
    assert float(out["stage2_reg_penalty"]) == pytest.approx(expected_penalty)
    assert float(out["loss_model"]) == pytest.approx(plain + 0.5 * expected_penalty, rel=1e-5)
    with torch.no_grad():  # held-out evaluation: the prediction loss alone
        assert float(loss(td)["loss_model"]) == pytest.approx(plain)
    # the gradient pulls h back toward the snapshot
    model.zero_grad()
    loss(td)["loss_model"].backward()
    g_plain = torch.autograd.grad(LatentModelLoss(model, stage=2)(td)["loss_model"], model.predictor.reward_head.bias)[0]
    torch.testing.assert_close(model.predictor.reward_head.bias.grad, g_plain + 0.5 * 2 * 0.1 * torch.ones(1))
    # a resumed run keeps the stage-1 snapshot (state_dict), it does not re-take it
    resumed = LatentModelLoss(model, stage=1, stage2_reg=0.5)
    resumed.load_state_dict(loss.state_dict())
    resumed.stage = 2
    assert float(resumed.stage2_penalty()) == pytest.approx(expected_penalty)
    # the default adds no buffers: checkpoints of other runs load
    assert not [k for k in LatentModelLoss(model).state_dict() if "stage1" in k]
    with pytest.raises(ValueError, match="stage2_reg"):
        LatentModelLoss(model, stage2_reg=-1.0)


# ---------------------------------------------------------------- factories and config
def _cfg(**over):
    from hydra import compose, initialize_config_dir

    from recipe_helpers import SCRIPT

    with initialize_config_dir(config_dir=str(SCRIPT.parent / "config"), version_base=None):
        return compose(config_name="config", overrides=[f"{k}={v}" for k, v in over.items()])


def test_defaults_are_the_paper_and_factories_pass_the_options():
    cfg = _cfg()
    method = make_method(cfg, make_latent_value(4, hidden_sizes=(8,)))
    assert (method.source_target, method.source_in_value, method.source_in_actor) == ("aligned", False, False)
    assert make_latent_model_loss(cfg, make_latent_model(cfg, 11, 3)).stage2_reg == 0.0
    assert not make_latent_model(cfg, 11, 3).residual
    cfg = _cfg(**{"loss.source_target": "gated", "loss.gate_quantile": 0.5, "algo.source_in_value": "true",
                  "pretrain.stage2_reg": 0.1, "model.predictor": "residual"})
    method = make_method(cfg, make_latent_value(4, hidden_sizes=(8,)))
    assert (method.source_target, method.gate_quantile, method.source_in_value) == ("gated", 0.5, True)
    model = make_latent_model(cfg, 11, 3)
    assert model.residual and make_latent_model_loss(cfg, model).stage2_reg == 0.1


def test_added_keys_at_their_default_keep_the_config_hash():
    cfg = _cfg()
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True)
    before = without_added_defaults(data)  # the configuration as it was before the keys existed
    for key in ADDED_DEFAULTS:
        group, name = key.split(".")
        assert name in data[group] and name not in before[group]
    assert config_hash(before) == config_hash(cfg)
    assert config_hash(_cfg(**{"loss.source_target": "realised"})) != config_hash(cfg)


@pytest.mark.parametrize("override, message", [
    ({"loss.source_target": "both"}, "loss.source_target"),
    ({"loss.gate_quantile": 1.5}, "loss.gate_quantile"),
    ({"pretrain.stage2_reg": -0.1}, "pretrain.stage2_reg"),
    ({"model.predictor": "ensemble"}, "model.predictor"),
    ({"data.reward_scale": -2}, "data.reward_scale"),
    ({"data.reward_scale": "d4rl"}, "data.reward_scale"),
    ({"algo": "iql_mixed", "loss.source_target": "realised"}, "read by TABB only"),
])
def test_bad_variant_settings_are_clear_config_errors(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate_config(_cfg(**override))
    assert "Fix:" in str(err.value)


# ---------------------------------------------------------------- a smoke run of each option
VARIANTS = {
    "reward_scale": ["data.reward_scale=iql_locomotion"],
    "squared_loss": ["loss.huber_delta=null"],
    "ensemble": ["loss.num_qvalue_nets=5"],
    "realised": ["loss.source_target=realised"],
    "gated": ["loss.source_target=gated"],
    "stage2_reg": ["pretrain.stage2_reg=0.1"],
    "residual": ["model.predictor=residual"],
    "source_in_value": ["algo.source_in_value=true"],
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("variants")


# the options of the RL losses run on both update paths; the others change the data or the pre-training
# (the modular path's runs are marked slow: tests/test_fast_update.py checks that both paths compute the same step)
RUNS = [(v, "fused") for v in VARIANTS] + [pytest.param(v, "modular", marks=pytest.mark.slow)
                                           for v in ("ensemble", "realised", "gated", "source_in_value")]


@pytest.mark.parametrize("variant, update", RUNS)
def test_smoke_run_of_each_variant(variant, update, workdir):
    run_dir = workdir / f"{variant}_{update}"
    run_recipe(["+preset=smoke", f"data.root={workdir / 'data'}", "progress=false", "pretrain.stage1_steps=40",
                "pretrain.stage2_steps=20", "optim.steps=40", "eval.every=40", "eval.episodes=1",
                "logger.log_every=20", f"optim.update={update}", f"run_dir={run_dir}", *VARIANTS[variant]],
               cwd=workdir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 40 and math.isfinite(summary["normalized_score"])
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["rl_update"] == update
    scalars = next((run_dir / "logs").iterdir()) / "scalars"
    if variant == "gated":
        assert (scalars / "train" / "gate_realised_fraction.csv").exists()
    if variant == "stage2_reg":
        assert (scalars / "pretrain_stage2" / "stage2_reg_penalty.csv").exists()
    if variant == "ensemble":
        assert next(iter(ckpt["loss_module"][k] for k in ckpt["loss_module"] if "qvalue" in k)).shape[0] == 5


# ---------------------------------------------------------------- the named variants (recipes/config/algo/tabb_*.yaml)
NAMED = {  # algo file: the settings it changes besides algo.name / algo.variant_of
    "tabb_rscale": {"data.reward_scale": "iql_locomotion"},
    "tabb_sq": {"loss.huber_delta": None},
    "tabb_q10": {"loss.num_qvalue_nets": 10},
    "tabb_realised": {"loss.source_target": "realised"},
    "tabb_plus": {"loss.source_target": "realised"},  # tabb_realised promoted (docs/results/source_study.md)
    "tabb_gated": {"loss.source_target": "gated"},
    "tabb_s2reg": {"pretrain.stage2_reg": 0.1},
    "tabb_residual": {"model.predictor": "residual"},
    "tabb_vsrc": {"algo.source_in_value": True},
}


@pytest.mark.parametrize("name", list(NAMED))
def test_each_named_variant_is_tabb_with_its_one_change(name):
    from tabb_torchrl.pipeline.config import config_diff

    cfg = _cfg(algo=name)
    validate_config(cfg)
    diff = config_diff(_cfg(), cfg)
    assert diff.pop("algo.name") == ("tabb", name)
    assert diff.pop("algo.variant_of") == ("<absent>", "tabb")
    assert {k: v[1] for k, v in diff.items()} == NAMED[name]


def test_variant_of_must_name_a_registered_algorithm():
    with pytest.raises(ConfigError, match="algo.name='tabb_x' is unknown"):
        validate_config(_cfg(**{"algo.name": "tabb_x"}))
    with pytest.raises(ConfigError, match="algo.name='tabb_x' is unknown"):
        validate_config(_cfg(**{"algo.name": "tabb_x", "+algo.variant_of": "nope"}))
    validate_config(_cfg(**{"algo.name": "tabb_x", "+algo.variant_of": "tabb"}))
    for own in ("cql", "mobody", "bosa"):  # own backbones: a variant would silently run on the IQL core
        with pytest.raises(ConfigError, match=f"variant_of={own} is not supported.*Fix"):
            validate_config(_cfg(**{"algo.name": f"{own}_x", "+algo.variant_of": own}))


def test_a_named_variant_runs_through_the_recipe(workdir):
    run_dir = workdir / "named_gated"
    run_recipe(["+preset=smoke", f"data.root={workdir / 'data'}", "progress=false", "pretrain.stage1_steps=40",
                "pretrain.stage2_steps=20", "optim.steps=40", "eval.every=40", "eval.episodes=1", "algo=tabb_gated",
                f"run_dir={run_dir}"], cwd=workdir)
    assert json.loads((run_dir / "summary.json").read_text())["algo"] == "tabb_gated"


def test_python_api_takes_a_named_variant():
    """make_agent / compose_config accept the algo group's variant files (tabb_realised); unknown names list them."""
    from tabb_torchrl import make_agent
    from tabb_torchrl.pipeline.compose import algo_variants

    assert {"tabb_realised", "tabb_gated"} <= set(algo_variants())
    assert not set(algo_variants()) & {"tabb", "iql_target", "cql"}
    agent = make_agent("tabb_realised", preset="smoke")
    assert (agent.config.algo.name, agent.config.algo.variant_of) == ("tabb_realised", "tabb")
    assert agent.config.loss.source_target == "realised"
    with pytest.raises(ConfigError, match=r"algo='tabb_rea' is unknown; valid: tabb, .*named variant \(.*tabb_realised"):
        make_agent("tabb_rea")
