"""CQL (Kumar et al. 2020) through TorchRL's CQLLoss as the recipe's ``algo=cql``: the loss keys, one
update trains critic, actor and temperatures, batches of 128 source + 128 target rows, the Lagrange
update's gradients by hand (ours and TorchRL's example's), the behaviour-cloning start, and the recipe's
smoke run with an exact kill-and-resume and a loadable actor."""
from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import CQLLoss

from tabb_torchrl.data import make_source_target_buffer
from tabb_torchrl.pipeline.config import ConfigError
from tabb_torchrl.pipeline.cql import CQL_DEFAULTS, CQLUpdate, make_cql, make_cql_update
from tabb_torchrl.pipeline.factories import make_rl_buffer
from recipe_helpers import (assert_logged, assert_same_loss_modules, flatten_state,  # noqa: E402
                            kill_and_resume, load_actor, load_checkpoint, smoke_run_fixture)

ENV = "tabb/Hopper-morph-v0"


def _cfg(**cql):
    return {"model": {"actor_hidden": [16, 16], "qvalue_hidden": [16, 16], "activation": "relu"},
            "loss": {"gamma": 0.99}, "optim": {"target_update_tau": 0.005, "lr_actor": 3e-4, "lr_qvalue": 3e-4,
                                               "weight_decay": 0.0},
            "algo": {"name": "cql", "use_source": True, "features": "raw", "cql": cql},
            "data": {"n_source": 128, "n_target": 128, "storage": "tensor", "scratch_dir": None},
            "pretrain": {"cache_latents": True, "cache_batch_size": 1024}}


def _data(n, domain_shift, seed):
    g = torch.Generator().manual_seed(seed)
    return TensorDict({
        "observation": torch.randn(n, 11, generator=g) + domain_shift, "action": torch.rand(n, 3, generator=g) * 2 - 1,
        ("next", "observation"): torch.randn(n, 11, generator=g), ("next", "reward"): torch.randn(n, 1, generator=g),
        ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool), ("next", "done"): torch.zeros(n, 1, dtype=torch.bool),
    }, [n])


def test_loss_keys_and_defaults():
    torch.manual_seed(0)
    actor, loss, updater, opts = make_cql(_cfg(), ENV)
    assert isinstance(loss, CQLLoss)
    out = loss(_data(8, 0.0, 0))
    assert set(out.keys()) == {"loss_actor", "loss_actor_bc", "loss_qvalue", "loss_cql", "loss_alpha",
                               "loss_alpha_prime", "alpha", "entropy"}
    # TorchRL's offline MuJoCo example (sota-implementations/cql/offline_config.yaml)
    assert (loss.loss_function, loss.temperature, loss.min_q_weight, loss.num_random, loss.with_lagrange,
            loss.target_action_gap, loss.max_q_backup, loss.deterministic_backup) == ("l2", 1.0, 1.0, 10, True, 5.0,
                                                                                       False, False)
    assert CQL_DEFAULTS["policy_eval_start"] == 40_000
    assert loss.num_qvalue_nets == 2 and loss.qvalue_network_params["module", "0", "weight"].shape[0] == 2  # twin
    assert sorted(opts) == ["actor", "alpha", "alpha_prime", "qvalue"]
    assert float(loss.target_entropy) == -3.0
    no_lagrange = make_cql(_cfg(with_lagrange=False), ENV)[3]
    assert sorted(no_lagrange) == ["actor", "alpha", "qvalue"]
    with pytest.raises(ConfigError, match="unknown keys"):
        make_cql(_cfg(nope=1), ENV)


def test_one_update_changes_critic_actor_and_temperatures_on_128_plus_128_rows():
    torch.manual_seed(0)
    cfg = _cfg(policy_eval_start=0)
    actor, loss, updater, opts = make_cql(cfg, ENV)
    rb, _ = make_rl_buffer(cfg, _data(500, 0.0, 1), _data(300, 3.0, 2), None, seed=0, device="cpu")
    seen = []
    sample = rb.sample
    rb.sample = lambda: seen.append(sample()) or seen[-1]
    update = make_cql_update(cfg, loss, rb, opts, updater)
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    metrics = update()
    batch = seen[0]
    assert batch.shape == (256,) and batch["domain"].tolist() == [0] * 128 + [1] * 128
    assert float(batch["observation"][128:].mean() - batch["observation"][:128].mean()) > 2.0  # target rows
    after = loss.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for prefix in ("actor_network_params", "qvalue_network_params", "target_qvalue_network_params"):
        assert any(k.startswith(prefix) for k in changed), prefix
    assert "log_alpha" in changed and "log_alpha_prime" in changed
    assert all(not v.requires_grad for v in metrics.values()) and float(metrics["cql_bc_phase"]) == 0.0
    # the actor the evaluator runs is the trained one (it shares the loss module's parameters)
    torch.testing.assert_close(dict(actor.named_parameters())["module.0.module.0.0.weight"],
                               loss.actor_network_params["module", "0", "module", "0", "0", "weight"].data)


def _grads(params, loss):
    return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)


@pytest.mark.parametrize("mode", ["paper", "torchrl"])
def test_lagrange_update_gradients_by_hand(mode):
    torch.manual_seed(0)
    actor, loss, updater, opts = make_cql(_cfg(), ENV)
    with torch.no_grad():
        loss.log_alpha_prime.fill_(math.log(3.0))             # alpha' = 3
    update = CQLUpdate(loss, None, opts, updater, policy_eval_start=0, lagrange_update=mode)
    batch = _data(16, 0.0, 3)
    critic = list(loss.qvalue_network_params.flatten_keys().values())
    torch.manual_seed(1)
    out = loss(batch.clone())
    g_q = _grads(critic, out["loss_qvalue"])
    g_cql = _grads(critic, out["loss_cql"])
    torch.manual_seed(1)                                      # the same sampled actions
    total, metrics = update.losses(batch.clone(), bc_phase=False)
    g_total = _grads(critic, total)
    a_prime_grad = _grads([loss.log_alpha_prime], total)[0]
    # paper: critic + alpha' CQL ; alpha' alone on -alpha' (CQL_1 + CQL_2 - 2 tau) / 2
    # torchrl (its example sums loss_alpha_prime into one backward): critic + (1 - alpha'/2) CQL
    factor = 3.0 if mode == "paper" else 1.0 - 3.0 / 2
    for gt, gq, gc in zip(g_total, g_q, g_cql):
        torch.testing.assert_close(gt, gq + factor * gc, rtol=1e-4, atol=1e-5)
    expected = -0.5 * 3.0 * (float(out["loss_cql"]) - 2 * 5.0)
    assert float(a_prime_grad) == pytest.approx(expected, rel=1e-4)
    assert float(metrics["alpha_prime"]) == pytest.approx(3.0)


def test_behaviour_cloning_first_then_cql_and_the_step_count_resumes():
    torch.manual_seed(0)
    cfg = _cfg(policy_eval_start=2)
    actor, loss, updater, opts = make_cql(cfg, ENV)
    rb = make_source_target_buffer(_data(40, 0.0, 4), _data(20, 1.0, 5), n_source=4, n_target=4, seed=0)
    update = make_cql_update(cfg, loss, rb, opts, updater)
    phases = [float(update()["cql_bc_phase"]) for _ in range(3)]
    assert phases == [1.0, 1.0, 0.0] and update.step_count == 3
    resumed = make_cql_update(cfg, loss, rb, opts, updater, step=1)
    assert float(resumed()["cql_bc_phase"]) == 1.0 and float(resumed()["cql_bc_phase"]) == 0.0
    with pytest.raises(ConfigError, match="lagrange_update"):
        make_cql_update(_cfg(lagrange_update="both"), loss, rb, opts, updater)


# ---------------------------------------------------------------------------- the recipe
smoke_run = smoke_run_fixture("cql", "algo.cql.policy_eval_start=50", "algo.cql.num_random=4")


def test_recipe_smoke_run_and_the_actor_loads(smoke_run):
    full = smoke_run.run_dir
    assert "normalized_score" in smoke_run.stdout and "| cql" in smoke_run.stdout
    ca = load_checkpoint(full)
    assert sorted(ca["optimizers"]) == ["actor", "alpha", "alpha_prime", "qvalue"]
    assert "log_alpha_prime/" in flatten_state(ca["loss_module"])
    assert_logged(full, "loss_cql", "cql_bc_phase")
    # the robustness evaluation's loader rebuilds the CQL actor of a run directory
    actor = load_actor(full, "cql", 100)
    params = dict(actor.named_parameters())
    torch.testing.assert_close(params["module.0.module.0.0.weight"],
                               ca["loss_module"]["actor_network_params.module.0.module.0.0.weight"])


@pytest.mark.slow
def test_recipe_kill_and_resume_matches_the_smoke_run(smoke_run):
    run = kill_and_resume(smoke_run, stop_at=70)
    a = assert_same_loss_modules(smoke_run.run_dir, run.run_dir)
    assert "log_alpha_prime/" in a
