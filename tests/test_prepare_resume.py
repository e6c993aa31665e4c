"""A cross-domain method's own pre-training (``prepare``) stopped at a safe point and resumed from what a
checkpoint holds ends bit-identical to an uninterrupted one: BOSA's VAEs, MOBODY's dynamics model (after
DARA's classifiers), DROCO's ensemble, OTDF's optimal transport (per chunk) and VAE. Also through the
trainer (``checkpoint.prepare_every_s``, a session ending mid-prepare, ``resume``), and the config hash
of the existing configurations is unchanged by the new runtime-only setting."""
from __future__ import annotations

import copy

import pytest
import torch
from tensordict import TensorDict

from tabb_torchrl.methods import BOSA, DROCO, MOBODY, OTDF
from tabb_torchrl.methods.base import ResumablePrepare
from tabb_torchrl.methods.otdf import transport_deviation
from recipe_helpers import assert_same_states  # noqa: E402


def _data(n: int, seed: int, shift: float = 0.0) -> TensorDict:
    """``n`` transitions of a noisy linear toy system (obs 3, action 2)."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, 3, generator=g)
    a = torch.rand(n, 2, generator=g) * 2 - 1
    s2 = s + 0.1 * a.sum(-1, keepdim=True) + shift + 0.01 * torch.randn(n, 3, generator=g)
    return TensorDict({"observation": s, "action": a, ("next", "observation"): s2,
                       ("next", "reward"): (s.sum(-1) + a.sum(-1)).unsqueeze(-1)}, [n])


SOURCE, TARGET = _data(300, seed=1), _data(200, seed=2, shift=0.1)

# tiny sizes; seed=None draws the seed from the global RNG (restored from the checkpoint, as the trainer does)
FACTORIES = {
    "bosa": lambda seed: BOSA(3, 2, vae_hidden=16, ensemble_size=3, pretrain_steps=12, pretrain_source=16,
                              pretrain_target=16, seed=seed),
    "mobody": lambda seed: MOBODY(3, 2, hidden=16, latent_dim=4, action_hidden=8, ensemble_size=3, num_elites=2,
                                  termination="none", source_penalty="dara", dara_classifier_steps=10,
                                  dynamics_batch_size=64, dynamics_max_epochs=3, target_passes=1, seed=seed),
    "droco": lambda seed: DROCO(3, 2, hidden_sizes=(16, 16), ensemble_size=3, epochs=4, batch_size=64,
                                holdout_fraction=0.2, seed=seed),
    "otdf": lambda seed: OTDF(3, 2, vae_hidden=16, vae_steps=6, vae_batch_size=32, ot_chunk=70, ot_iterations=50,
                              seed=seed),
}
# (method, stop after this safe point, what the state then says)
STOPS = [
    ("bosa", 1, {"step": 1}), ("bosa", 7, {"step": 7}), ("bosa", 12, {"step": 12}),
    ("mobody", 1, {"epoch": 1}), ("mobody", 2, {"epoch": 2}),
    ("droco", 1, {"epoch": 1}), ("droco", 3, {"epoch": 3}),
    ("otdf", 2, {"stage": "ot", "rows_done": 140}), ("otdf", 5, {"stage": "ot", "rows_done": 300}),
    ("otdf", 6, {"stage": "vae", "step": 1}), ("otdf", 10, {"stage": "vae", "step": 5}),
]


class _Kill(Exception):
    """A session ending right after a checkpoint."""


def _uninterrupted(name: str, seed):
    torch.manual_seed(0)
    method = FACTORIES[name](seed)
    method.prepare(SOURCE, TARGET)
    return method, torch.get_rng_state()


def _stopped(name: str, seed, k: int):
    """Run ``prepare`` until its ``k``-th safe point and return what a checkpoint there holds."""
    torch.manual_seed(0)
    method = FACTORIES[name](seed)
    saved = []

    def checkpoint():
        saved.append((copy.deepcopy(method.state_dict()), method.prepare_state(), torch.get_rng_state()))
        if len(saved) == k:
            raise _Kill

    with pytest.raises(_Kill):
        method.prepare(SOURCE, TARGET, checkpoint=checkpoint)
    assert method.prepare_state() is None  # nothing in progress once prepare() has left
    return saved[-1]


def _resumed(name: str, seed, saved):
    """A new session: the same configuration, other initial weights and global RNG, then the checkpoint."""
    weights, state, rng = saved
    torch.manual_seed(123)
    method = FACTORIES[name](seed)
    method.load_state_dict(weights)
    method.load_prepare_state(state)
    torch.set_rng_state(rng)
    method.prepare(SOURCE, TARGET)
    return method, torch.get_rng_state()


@pytest.mark.parametrize("name,k,expected", STOPS, ids=[f"{n}-{k}" for n, k, _ in STOPS])
@pytest.mark.parametrize("seed", [None, 7])
def test_prepare_stopped_at_a_safe_point_resumes_bit_identical(name, k, expected, seed):
    full, full_rng = _uninterrupted(name, seed)
    saved = _stopped(name, seed, k)
    state = saved[1]
    assert state["method"] == name
    where = state.get("dynamics", state)  # MOBODY nests the dynamics training's state
    assert {key: where[key] for key in expected} == expected
    resumed, resumed_rng = _resumed(name, seed, saved)
    assert_same_states(full.state_dict(), resumed.state_dict(), nan_equal=True)
    assert torch.equal(full_rng, resumed_rng)  # the run's RNG goes on as after an uninterrupted prepare
    assert resumed.prepare_state() is None


def test_the_comparison_can_fail_a_restart_from_the_partial_weights_differs():
    """Without load_prepare_state, prepare() restarts its steps from the partial weights: another result."""
    full, _ = _uninterrupted("bosa", 7)
    weights, _, rng = _stopped("bosa", 7, 5)
    torch.manual_seed(123)
    restarted = FACTORIES["bosa"](7)
    restarted.load_state_dict(weights)
    torch.set_rng_state(rng)
    restarted.prepare(SOURCE, TARGET)
    a, b = full.state_dict(), restarted.state_dict()
    assert not torch.equal(a["policy_vae.mean.weight"], b["policy_vae.mean.weight"])
    # and the checkpoint was mid-way: its weights are neither the initial nor the final ones
    torch.manual_seed(0)
    initial = FACTORIES["bosa"](7).state_dict()
    for other in (initial, a):
        assert not torch.equal(weights["dynamics_vae.encoder.weights.0"], other["dynamics_vae.encoder.weights.0"])


def test_a_state_of_another_method_is_refused():
    state = {"method": "droco", "seed": 0, "epoch": 1}
    with pytest.raises(ValueError, match="written by 'droco', this method is 'bosa'"):
        FACTORIES["bosa"](0).load_prepare_state(state)
    assert isinstance(FACTORIES["otdf"](0), ResumablePrepare)


def test_transport_deviation_continues_from_a_row_and_reports_each_chunk():
    src, tgt = torch.rand(23, 4, generator=torch.Generator().manual_seed(0)), torch.rand(9, 4)
    whole = transport_deviation(src, tgt, chunk=5)
    done = []
    out = torch.full((23,), 7.0)
    part = transport_deviation(src, tgt, chunk=5, out=out, start=10, on_chunk=done.append)
    assert part is out and done == [15, 20, 23]
    assert torch.equal(out[:10], torch.full((10,), 7.0)) and torch.equal(out[10:], whole[10:])
    assert transport_deviation(src, tgt, chunk=5, out=out, start=23).data_ptr() == out.data_ptr()  # all done
    with pytest.raises(ValueError, match="start must be a multiple of chunk=5"):
        transport_deviation(src, tgt, chunk=5, start=7)
    with pytest.raises(ValueError, match=r"out must have shape \[23\]"):
        transport_deviation(src, tgt, chunk=5, out=torch.zeros(3))


# ---------------------------------------------------------------------------- configuration
def test_the_config_hash_of_existing_configurations_is_unchanged():
    """checkpoint.prepare_every_s is runtime-only: the hashes are those from before it existed."""
    from tabb_torchrl.pipeline.compose import compose_config
    from tabb_torchrl.pipeline.config_hash import config_hash

    assert config_hash(compose_config("tabb")) == "603616dcf8"
    assert config_hash(compose_config("bosa")) == "148bc04c9c"
    cfg = compose_config("bosa", ["checkpoint.prepare_every_s=0"])
    assert cfg.checkpoint.prepare_every_s == 0 and config_hash(cfg) == "148bc04c9c"
    assert compose_config("tabb").checkpoint.prepare_every_s == 300


# ---------------------------------------------------------------------------- through the trainer
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("prepare_resume_data")


# BOSA on the TD3 backbone (backbones.py's prepare), OTDF on the IQL core (the method's prepare):
# the 3rd safe point is BOSA's 3rd VAE step, OTDF's 2nd VAE step after its one OT chunk (2,000 source rows)
ALGOS = {"bosa": (["algo.bosa.pretrain_steps=8", "algo.bosa.vae_hidden=16"], {"step": 3}),
         "otdf": (["algo.method_kwargs.vae_steps=8", "algo.method_kwargs.vae_hidden=16"],
                  {"stage": "vae", "step": 2})}


def _run(algo, data_root, run_dir, *extra):
    from tabb_torchrl.pipeline.compose import compose_config
    from tabb_torchrl.pipeline.experiment import run_experiment

    overrides = ["+preset=smoke", f"data.root={data_root}", "progress=false", "optim.steps=10", "eval.every=10",
                 "eval.episodes=1", "eval.max_episode_steps=20", "checkpoint.prepare_every_s=0",
                 f"run_dir={run_dir}", *ALGOS[algo][0], *extra]
    return run_experiment(compose_config(algo, overrides))


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_a_session_ending_mid_prepare_resumes_to_the_same_run(algo, data_root, tmp_path, monkeypatch):
    """Through the recipe's run: the session ends at the 3rd safe point of prepare() (a checkpoint at every
    safe point, prepare_every_s=0); resume=true continues prepare() from there and the run ends as an
    uninterrupted one. An older checkpoint without the new key still loads."""
    from functools import partial

    from tabb_torchrl.pipeline import trainer as trainer_module

    run = partial(_run, algo, data_root)
    full = run(tmp_path / "full")
    assert full.complete and full.trainer.method_prepared
    calls = []
    original = trainer_module.TABBTrainer.prepare_checkpoint

    def stop_after_three(self):
        original(self)
        calls.append(self.progress.global_step)
        if len(calls) == 3:
            raise trainer_module._StopSession  # as max_steps_this_session stops a session

    monkeypatch.setattr(trainer_module.TABBTrainer, "prepare_checkpoint", stop_after_three)
    stopped = run(tmp_path / "resumed")
    assert not stopped.complete
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    state = ckpt["method_prepare_state"]
    assert not ckpt["method_prepared"] and state["method"] == algo and ckpt["progress"]["rl_step"] == 0
    assert {key: state[key] for key in ALGOS[algo][1]} == ALGOS[algo][1]
    monkeypatch.setattr(trainer_module.TABBTrainer, "prepare_checkpoint", original)
    resumed = run(tmp_path / "resumed", "resume=true")
    assert resumed.complete
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert a["method_prepare_state"] is None and b["method_prepare_state"] is None
    for part in ("loss_module", "optimizers", "history"):
        assert_same_states({part: a[part]}, {part: b[part]}, nan_equal=True)
    # a checkpoint written before method_prepare_state existed (a finished run) resumes as before
    del b["method_prepare_state"]
    torch.save(b, tmp_path / "resumed" / "checkpoint.pt")
    again = run(tmp_path / "resumed", "resume=true")
    assert again.complete and again.trainer.progress.rl_step == 10


@pytest.mark.parametrize("bad", ["-5", "soon"])
def test_a_bad_prepare_interval_is_refused_with_the_fix(bad, data_root, tmp_path):
    from tabb_torchrl.pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=r"checkpoint.prepare_every_s=.* Fix: e.g. checkpoint.prepare_every_s=300"):
        _run("bosa", data_root, tmp_path / "run", f"checkpoint.prepare_every_s={bad}")
