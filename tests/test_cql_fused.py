"""FusedCQLUpdate (``algo=cql``, ``optim.update=fused``): the losses, gradients and steps of TorchRL's CQLLoss
through CQLUpdate (``optim.update=modular``), on the same parameters, batch and random draws; the selection by
``optim.update``; the settings it refuses; and the checkpoint's record of the update path."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl.data import make_source_target_buffer
from tabb_torchrl.pipeline.config import ConfigError
from tabb_torchrl.pipeline.cql import CQLUpdate, make_cql, make_cql_update
from tabb_torchrl.pipeline.cql_fused import FusedCQLUpdate
from recipe_helpers import run_recipe  # noqa: E402

ENV = "tabb/Hopper-morph-v0"  # obs 11, action 3 in [-1, 1]


def _cfg(activation="relu", update=None, **cql):
    optim = {"target_update_tau": 0.05, "lr_actor": 1e-2, "lr_qvalue": 1e-2, "weight_decay": 0.0}
    if update is not None:
        optim["update"] = update
    return {"model": {"actor_hidden": [16, 16], "qvalue_hidden": [16, 16], "activation": activation},
            "loss": {"gamma": 0.99}, "optim": optim, "algo": {"name": "cql", "cql": {"num_random": 4, **cql}}}


def _data(n, seed, low=-1.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    action = low + (high - low) * torch.rand(n, 3, generator=g)
    action[0] = high  # a data action on the bound: TorchRL's TanhNormal clamps it before atanh
    term = torch.rand(n, 1, generator=g) < 0.3
    return TensorDict({
        "observation": torch.randn(n, 11, generator=g), "action": action,
        ("next", "observation"): torch.randn(n, 11, generator=g), ("next", "reward"): torch.randn(n, 1, generator=g),
        ("next", "terminated"): term, ("next", "done"): term}, [n])


def _make(cfg, seed=0):
    torch.manual_seed(seed)
    actor, loss, updater, opts = make_cql(cfg, ENV)
    with torch.no_grad():  # away from the initial values, so that alpha and alpha' matter
        loss.log_alpha.fill_(math.log(0.6))
        if loss.with_lagrange:
            loss.log_alpha_prime.fill_(math.log(1.7))
    return loss, updater, opts


def _grads_of(loss, total):
    params = dict(loss.named_parameters())
    for p in params.values():
        p.grad = None
    total.backward()
    out = {k: p.grad.clone() for k, p in params.items() if p.grad is not None}
    for p in params.values():
        p.grad = None
    return out


def _compare_losses_and_gradients(cfg, bc_phase, batch):
    c = cfg["algo"]["cql"]
    loss, updater, opts = _make(cfg)
    mode = c.get("lagrange_update", "paper")
    modular = CQLUpdate(loss, None, opts, updater, lagrange_update=mode)
    fused = FusedCQLUpdate(loss, None, opts, updater, lagrange_update=mode)
    torch.manual_seed(7)
    total_ref, m_ref = modular.losses(batch.clone(), bc_phase)
    g_ref = _grads_of(loss, total_ref)
    torch.manual_seed(7)  # the same draws: FusedCQLUpdate draws them in CQLLoss's order and shapes
    total, m = fused.losses(*fused.tensors(batch.clone()), bc_phase)
    g = _grads_of(loss, total)
    assert sorted(m) == sorted(m_ref)
    for k in m_ref:
        torch.testing.assert_close(m[k], m_ref[k], rtol=1e-5, atol=1e-5, msg=k)
    torch.testing.assert_close(total, total_ref, rtol=1e-5, atol=1e-5)
    assert sorted(g) == sorted(g_ref)
    assert not any(k.startswith("target_") for k in g)  # the target critics get no gradient
    expected = {"log_alpha"} | ({"log_alpha_prime"} if loss.with_lagrange else set())
    assert expected <= set(g) and any(k.startswith("actor_network_params") for k in g)
    for k in g_ref:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=1e-6, msg=k)


SETTINGS = {
    "paper": {},
    "torchrl": {"lagrange_update": "torchrl"},
    "no_lagrange": {"with_lagrange": False, "min_q_weight": 5.0, "temperature": 2.0},
    "deterministic_backup": {"deterministic_backup": True},
    "max_q_backup": {"max_q_backup": True},
}


@pytest.mark.parametrize("bc_phase", [True, False], ids=["bc", "after_bc"])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_losses_and_gradients_equal_cqlloss(setting, bc_phase):
    _compare_losses_and_gradients(_cfg(**SETTINGS[setting]), bc_phase, _data(24, 1))


def test_tanh_critics_and_non_unit_action_bounds(monkeypatch):
    # another activation (the plain flat-MLP path) and TanhNormal's affine map onto [low, high] != [-1, 1]
    import tabb_torchrl.envs as envs

    low, high = torch.tensor([-0.4, -2.0, 0.0]), torch.tensor([0.4, 1.0, 3.0])
    monkeypatch.setattr(envs, "env_spaces", lambda env_id: (11, 3, low, high))
    for bc_phase in (True, False):
        _compare_losses_and_gradients(_cfg(activation="tanh"), bc_phase, _data(24, 2, low, high))


def _buffer():
    return make_source_target_buffer(_data(60, 3), _data(40, 4), n_source=8, n_target=8, seed=0)


def test_steps_equal_the_modular_path_across_the_behaviour_cloning_start():
    cfg = _cfg(policy_eval_start=2)
    states, metrics = {}, {}
    for update in ("modular", "fused"):
        loss, updater, opts = _make(cfg)
        step = make_cql_update({**cfg, "optim": {**cfg["optim"], "update": update}}, loss, _buffer(), opts, updater)
        assert type(step) is {"modular": CQLUpdate, "fused": FusedCQLUpdate}[update]
        metrics[update] = []
        for i in range(4):
            torch.manual_seed(100 + i)
            metrics[update].append(step())
        states[update] = (copy.deepcopy(loss.state_dict()), [copy.deepcopy(o.state_dict()) for o in opts.values()])
    assert [float(m["cql_bc_phase"]) for m in metrics["fused"]] == [1.0, 1.0, 0.0, 0.0]
    for mf, mm in zip(metrics["fused"], metrics["modular"]):
        for k in mm:
            torch.testing.assert_close(mf[k], mm[k], rtol=1e-4, atol=1e-5, msg=k)
    (sf, of), (sm, om) = states["fused"], states["modular"]
    assert sorted(sf) == sorted(sm)
    for k in sm:
        torch.testing.assert_close(sf[k], sm[k], rtol=1e-4, atol=1e-5, msg=k)
    for a, b in zip(of, om):  # Adam moments and step counts too
        for pa, pb in zip(a["state"].values(), b["state"].values()):
            for k in pb:
                torch.testing.assert_close(pa[k], pb[k], rtol=1e-4, atol=1e-6, msg=k)
    fresh, _, _ = _make(cfg)
    key = "target_qvalue_network_params.module.0.weight"
    assert not torch.equal(sf[key], fresh.state_dict()[key])  # the soft update moved the target critics


def test_selection_by_optim_update_and_its_errors():
    loss, updater, opts = _make(_cfg())
    assert isinstance(make_cql_update(_cfg(), loss, _buffer(), opts, updater), FusedCQLUpdate)  # the default
    assert isinstance(make_cql_update(_cfg(update="modular"), loss, _buffer(), opts, updater), CQLUpdate)
    with pytest.raises(ConfigError, match="optim.update must be one of"):
        make_cql_update(_cfg(update="fast"), loss, _buffer(), opts, updater)
    with pytest.raises(ValueError, match="lagrange_update"):
        FusedCQLUpdate(loss, None, opts, updater, lagrange_update="both")
    with pytest.raises(ValueError, match="optimisers must hold"):
        FusedCQLUpdate(loss, None, [opts["qvalue"]], updater)
    loss.reduction = "sum"
    with pytest.raises(NotImplementedError, match="reduction='sum'.*optim.update=modular"):
        FusedCQLUpdate(loss, None, opts, updater)
    loss.reduction = "mean"
    step = FusedCQLUpdate(loss, None, opts, updater)
    batch = _data(8, 5)
    batch["shifted_valid"] = torch.ones(8, dtype=torch.bool)
    with pytest.raises(NotImplementedError, match="validity masks"):
        step.tensors(batch)


def test_a_second_critic_pass_before_the_backward_of_the_first_raises():
    loss, updater, opts = _make(_cfg())
    step = FusedCQLUpdate(loss, None, opts, updater)
    batch = step.tensors(_data(8, 6))
    first, _ = step.losses(*batch, False)
    step.losses(*batch, False)  # overwrites the critic's activations kept from one pass to the next
    with pytest.raises(RuntimeError, match="overwritten"):
        first.backward()


def test_the_checkpoint_records_the_update_path_and_a_resume_cannot_switch(tmp_path):
    args = ["+preset=smoke", "algo=cql", f"data.root={tmp_path / 'data'}", "progress=false", "optim.steps=20",
            "eval.every=20", "checkpoint.every=10", "checkpoint.save_on_stop=false", "algo.cql.num_random=2",
            f"run_dir={tmp_path / 'run'}"]
    run_recipe([*args, "optim.update=modular", "max_steps_this_session=10"], tmp_path)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["rl_update"] == "modular"
    proc = run_recipe([*args, "resume=true"], tmp_path, check=False)  # the default, optim.update=fused
    assert proc.returncode != 0
    assert "optim.update modular -> fused" in proc.stderr and "Nothing was written" in proc.stderr
