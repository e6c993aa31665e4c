"""The Python API (tabb_torchrl.api), the run's steps (tabb_torchrl.pipeline.experiment), the rollout
command line (python -m tabb_torchrl.rollout) and env registration on ``import tabb_torchrl``.

Real tiny runs (the smoke preset, random-policy data): the API's fit must give the recipe's numbers.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tabb_torchrl
from recipe_helpers import run_recipe
from tabb_torchrl import TABB, Agent, Policy, load_policy, make_agent
from tabb_torchrl.pipeline import ALGOS, ConfigError, config_hash
from tabb_torchrl.pipeline.config import legacy_config_hashes
from tabb_torchrl.pipeline.compose import compose_config
from tabb_torchrl.pipeline.experiment import build_components, plan_run

OBS, ACT = 11, 3  # Hopper
NOT_REPRODUCIBLE = {"wall_time_s", "updates_per_s", "run_dir", "robustness"}
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("api")


def _smoke(root: Path, **settings):
    return dict(preset="smoke", data__root=str(root / "data"), logger__log_every=50, **settings)


@pytest.fixture(scope="module")
def recipe_run(root):
    """One smoke run of the recipe (TABB), in a subprocess."""
    run_dir = root / "recipe_tabb"
    run_recipe(["+preset=smoke", f"data.root={root / 'data'}", "progress=false", "logger.log_every=50",
                f"run_dir={run_dir}"], cwd=root)
    return run_dir


@pytest.fixture(scope="module")
def fitted(root, recipe_run):
    """TABB fitted through the API with the recipe run's configuration, plus a robustness evaluation."""
    seen = []

    def callback(agent, entry):
        seen.append((entry["step"], entry["normalized_score"], agent.predict(np.zeros(OBS)).shape))

    agent = TABB(**_smoke(root, run_dir=str(root / "api_tabb"), eval__perturbations=["morph"],
                          eval__perturbation_levels=["hard"]))
    summary = agent.fit(callback=callback, progress=False)
    return agent, summary, seen


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _same_numbers(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if k not in NOT_REPRODUCIBLE and a.get(k) != b.get(k)}


# ----------------------------------------------------------------------------- registration
def test_import_registers_the_env_ids_without_heavy_imports():
    code = ("import sys, tabb_torchrl, gymnasium as gym; env = gym.make('tabb/Hopper-morph-v0'); "
            "print(env.reset(seed=0)[0].shape, 'minari' in sys.modules, 'hydra' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["(11,)", "False", "False"]


def test_api_names_are_exported_lazily():
    assert {"TABB", "Agent", "Policy", "make_agent", "load_policy"} <= set(tabb_torchrl.__all__)
    assert tabb_torchrl.TABB is TABB and "make_agent" in dir(tabb_torchrl)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tabb_torchrl.nope


# ----------------------------------------------------------------------------- configuration
def test_the_api_config_is_the_recipe_config(root, recipe_run):
    cfg = compose_config("tabb", preset="smoke", data__root=str(root / "data"), progress=False)
    state = json.loads((recipe_run / "run_state.json").read_text())
    assert config_hash(cfg) == state["config_hash"]
    assert TABB(preset="smoke").config == compose_config(None, ["+preset=smoke"])


def test_compose_inside_a_hydra_app_leaves_its_state():
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from tabb_torchrl.pipeline.compose import config_dir

    with initialize_config_dir(config_dir=str(config_dir() / "env"), version_base="1.3"):
        assert compose_config("cql").algo.name == "cql"
        assert compose(config_name="hopper_morph").id == "tabb/Hopper-morph-v0"  # the app's own search path
    assert not GlobalHydra.instance().is_initialized()


def test_settings_spellings_agree():
    a = make_agent("iql_target", ["optim.steps=7", "env=walker2d_friction"]).config
    b = make_agent("iql_target", optim__steps=7, env="walker2d_friction").config
    c = make_agent("iql_target", **{"optim.steps": 7}, env="tabb/Walker2d-friction-v0").config
    assert a == b == c and a.optim.steps == 7 and a.env.short_name == "Walker2d-friction"
    d = make_agent("tabb", env="tabb/Hopper-friction-5.0-v0").config  # an id with no group file: env.id
    assert d.env.id == "tabb/Hopper-friction-5.0-v0"


@pytest.mark.parametrize("algo", ALGOS)
def test_make_agent_builds_every_algorithm(algo):
    agent = make_agent(algo, preset="smoke")
    assert agent.algo == algo and isinstance(agent, TABB) == (algo == "tabb")
    parts = build_components(agent.config, agent.env_id, OBS, ACT)
    with torch.no_grad():
        from tensordict import TensorDict
        from torchrl.envs.utils import ExplorationType, set_exploration_type

        with set_exploration_type(ExplorationType.DETERMINISTIC):
            action = parts.actor(TensorDict(observation=torch.zeros(4, OBS), batch_size=[4]))["action"]
    assert action.shape == (4, ACT)
    assert (type(parts.loss_module).__name__ == "CQLLoss") == (algo == "cql")


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: make_agent("nope"), ConfigError, "algo='nope' is unknown; valid: tabb"),
        (lambda: make_agent("tabb", optim__stepz=5), ConfigError, "the setting optim.stepz=5 cannot be applied"),
        (lambda: make_agent("tabb", env="nope"), ConfigError, "Available options in 'env'"),
        (lambda: make_agent("tabb", "optim.steps=5"), ConfigError, "must be a list of strings"),
        (lambda: make_agent("tabb", seed=object()), ConfigError, "cannot be written in a config"),
        (lambda: TABB(algo="cql"), ConfigError, "TABB runs algo=tabb"),
        (lambda: Agent("iql_target").predict(np.zeros(OBS)), RuntimeError, "Fix: call agent.fit"),
        (lambda: Agent("iql_target").save("x.pt"), RuntimeError, "nothing to save"),
    ],
)
def test_bad_construction_is_a_clear_error(call, error, message):
    with pytest.raises(error) as err:
        call()
    assert message in str(err.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": -1}, "steps=-1 must be an integer >= 0"),
        ({"steps": "10"}, "steps='10' must be an integer >= 0"),
        ({"eval_every": 0}, "eval_every=0 must be an integer > 0"),
        ({"source": 123}, "source= must be a TensorDict of transitions"),
        ({"target": "missing_file.hdf5"}, "data.target.path=missing_file.hdf5 does not exist"),
    ],
)
def test_bad_fit_arguments_fail_before_writing(root, kwargs, message):
    run_dir = root / "never_written"
    agent = TABB(**_smoke(root, run_dir=str(run_dir)))
    with pytest.raises(ConfigError) as err:
        agent.fit(progress=False, **kwargs)
    assert message in str(err.value)
    assert not run_dir.exists()


def test_source_for_a_target_only_algorithm_is_refused(root, fitted):
    from tensordict import TensorDict

    with pytest.raises(ConfigError, match="algo=iql_target uses no source data"):
        make_agent("iql_target", **_smoke(root)).fit(source=TensorDict({}, batch_size=[5]))
    with pytest.raises(ConfigError, match="flat, non-empty TensorDict"):
        TABB(**_smoke(root)).fit(target=TensorDict({}, batch_size=[2, 3]))


def test_wrong_dataset_shape_names_the_dataset(root):
    from tabb_torchrl.data import make_transitions

    n = 300
    bad = make_transitions(np.zeros((n, 5)), np.zeros((n, ACT)), np.zeros((n, 5)), np.zeros(n), np.zeros(n, bool))
    with pytest.raises(ConfigError) as err:
        make_agent("iql_target", **_smoke(root, run_dir=str(root / "bad_shape"))).fit(target=bad, progress=False)
    assert "The target dataset given to fit cannot be used with env tabb/Hopper-morph-v0" in str(err.value)


def test_perturbations_setting_is_runtime_only_and_checked(root):
    cfg = compose_config("tabb", preset="smoke")
    assert config_hash(cfg) == config_hash(compose_config("tabb", preset="smoke", eval__perturbations="all"))
    cfg_bad = compose_config("tabb", preset="smoke", eval__perturbations=["wind"], run_dir=str(root / "pert_bad"))
    with pytest.raises(ConfigError, match=r"eval.perturbations=\['wind'\] names unknown kinds"):
        plan_run(cfg_bad, default_run_dir=None)
    cfg_lv = compose_config("tabb", preset="smoke", eval__perturbations="morph", eval__perturbation_levels=["max"])
    with pytest.raises(ConfigError, match="eval.perturbation_levels"):
        plan_run(cfg_lv, default_run_dir=None)
    assert not (root / "pert_bad").exists()
    # a run that hashed the new keys (code from before they became runtime-only) is still found by resume
    from tabb_torchrl.pipeline.config_hash import HASH_EXCLUDED_KEYS, _hash, _without, to_container, without_added_defaults

    data = dict(to_container(cfg))
    kept = tuple(k for k in HASH_EXCLUDED_KEYS if not k.startswith("eval.pert"))
    old_hash = _hash(_without(without_added_defaults(data), kept), 10)
    assert old_hash != config_hash(cfg) and old_hash in legacy_config_hashes(data)


# ----------------------------------------------------------------------------- fit
def test_fit_gives_the_recipe_run(fitted, recipe_run):
    agent, summary, seen = fitted
    assert _same_numbers(summary, _summary(recipe_run)) == {}
    assert summary["steps"] == 200 and summary["pretrain_steps"] == {"stage1": 100, "stage2": 50}
    assert [s for s, _, _ in seen] == [100, 200] and all(shape == (ACT,) for _, _, shape in seen)
    assert [e["normalized_score"] for e in agent.history] == [score for _, score, _ in seen]
    assert agent.run_dir == Path(summary["run_dir"]) and (agent.run_dir / "checkpoint.pt").is_file()
    assert torch.get_num_threads() == 1  # restored (conftest's value)


def test_fit_runs_the_robustness_evaluation(fitted):
    agent, summary, _ = fitted
    report = json.loads((agent.run_dir / "robustness.json").read_text())
    assert (agent.run_dir / "robustness.png").stat().st_size > 0
    assert [(r["kind"], r["level"]) for r in report["results"]] == [("morph", "hard")]
    # same seeds and episodes as the run's evaluations: the unperturbed score is the final one
    assert report["nominal"]["normalized_score"] == pytest.approx(summary["normalized_score"], abs=1e-9)
    assert report["episodes"] == 2 and report["seed"] == 100000
    drop = summary["robustness"]["drops"]["morph"]["hard"]
    perturbed = summary["robustness"]["scores"]["morph"]["hard"]
    assert drop == pytest.approx(100 * (summary["normalized_score"] - perturbed) / summary["normalized_score"])
    assert _summary(agent.run_dir)["robustness"] == summary["robustness"]


def test_predict_types_and_shapes(fitted):
    agent = fitted[0]
    obs = np.random.default_rng(0).normal(size=(5, OBS))
    batch = agent.predict(obs)
    assert isinstance(batch, np.ndarray) and batch.shape == (5, ACT) and batch.dtype == np.float32
    np.testing.assert_allclose(agent.predict(obs[2]), batch[2], atol=1e-6)  # a batch of one: other BLAS kernels
    assert np.array_equal(agent.predict(obs.tolist()), batch)
    assert agent.predict(obs.reshape(5, 1, OBS)).shape == (5, 1, ACT)
    as_torch = agent.predict(torch.as_tensor(obs))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float32
    assert np.array_equal(as_torch.numpy(), batch)
    assert np.all(np.abs(batch) <= 1.0)
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\), but the policy takes observations of size 11"):
        agent.predict(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="array of numbers"):
        agent.predict({"obs": 1})


def test_predict_is_the_evaluated_action(fitted):
    """The policy's action is the evaluator's: evaluating it again gives the run's final score."""
    agent, summary, _ = fitted
    assert agent.evaluate()["normalized_score"] == pytest.approx(summary["normalized_score"], abs=1e-9)


def test_save_load_round_trip(fitted, root):
    agent = fitted[0]
    obs = np.random.default_rng(1).normal(size=(7, OBS))
    path = agent.save(root / "agent.pt")
    loaded = TABB.load(path)
    assert np.array_equal(loaded.predict(obs), agent.predict(obs))
    assert loaded.config == agent.config and loaded.history == agent.history
    with pytest.raises(FileExistsError, match="overwrite=True"):
        agent.save(path)
    loaded.save(path, overwrite=True)  # a loaded agent saves what it loaded
    assert np.array_equal(Agent.load(path).predict(obs), agent.predict(obs))
    with pytest.raises(IsADirectoryError):
        agent.save(root)
    # the run directory itself loads too (recipe or API), with its summary
    from_dir = Agent.load(agent.run_dir)
    assert np.array_equal(from_dir.predict(obs), agent.predict(obs)) and from_dir.summary["steps"] == 200


def test_fit_with_given_datasets_equals_generated(root, fitted):
    """TensorDicts given to fit are the configured datasets' twins: same numbers."""
    from tabb_torchrl.pipeline import load_dataset

    spec = dict(seed=0, obs_dim=OBS, action_dim=ACT, progress=False, root=str(root / "data"))
    agent = fitted[0]
    target = load_dataset({"quality": "random", "size": 600, "path": None}, "tabb/Hopper-morph-v0", name="target",
                          **spec)
    source = load_dataset({"quality": "random", "size": 2000, "path": None}, "Hopper-v5", name="source", **spec)
    other = TABB(**_smoke(root, run_dir=str(root / "api_given")))
    summary = other.fit(source=source, target=target, progress=False)
    assert _same_numbers(summary, fitted[1]) == {}
    state = json.loads((root / "api_given" / "run_state.json").read_text())
    assert state["data_given_to_fit"] == ["source", "target"]


def test_cql_and_target_only_fit_through_the_api(root):
    cql = make_agent("cql", **_smoke(root, run_dir=str(root / "api_cql")))
    summary = cql.fit(steps=20, eval_every=10, progress=False)
    assert summary["algo"] == "cql" and summary["steps"] == 20 and [e["step"] for e in cql.history] == [10, 20]
    assert cql.predict(np.zeros((2, OBS))).shape == (2, ACT)
    iql = make_agent("iql_target", **_smoke(root, run_dir=str(root / "api_iql_target"), pretrain__stage1_steps=10,
                                             pretrain__stage2_steps=10))
    assert iql.fit(steps=10, progress=False)["source_env"] is None
    assert isinstance(iql.policy, Policy) and iql.actor is iql.policy.actor


# ----------------------------------------------------------------------------- load_policy
def test_load_policy_of_a_recipe_run(recipe_run, fitted):
    from tensordict import TensorDict

    policy = load_policy(recipe_run)
    assert policy.env_id == "tabb/Hopper-morph-v0" and policy.info["phase"] == "done"
    obs = np.random.default_rng(2).normal(size=(4, OBS)).astype(np.float32)
    assert np.array_equal(policy(obs), fitted[0].predict(obs))  # the API's run trained the same actor
    td = policy(TensorDict(observation=torch.as_tensor(obs), batch_size=[4]))
    assert np.array_equal(td["action"].detach().numpy(), policy(obs))
    assert policy.in_keys == ["observation"] and "action" in policy.out_keys
    # a TorchRL env (float64 observations) rolls it out, deterministically
    from torchrl.envs import GymEnv

    env = GymEnv("tabb/Hopper-morph-v0")
    env.set_seed(0)
    with torch.no_grad():
        rollout = env.rollout(10, policy)
    env.close()
    first = rollout["observation"][:1].numpy()
    assert rollout["observation"].dtype == torch.float64
    assert np.array_equal(rollout["action"][:1].numpy(), policy(first.astype(np.float32)))


def test_load_policy_errors(root, recipe_run):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy(root / "nowhere")
    with pytest.raises(FileNotFoundError, match="has no config.yaml"):
        load_policy(root)
    partial = root / "no_checkpoint"
    partial.mkdir(exist_ok=True)
    shutil.copy(recipe_run / "config.yaml", partial / "config.yaml")
    with pytest.raises(FileNotFoundError, match="has no checkpoint checkpoint.pt"):
        load_policy(partial)
    with pytest.raises(FileNotFoundError, match="checkpoint without its configuration"):
        load_policy(recipe_run / "checkpoint.pt")
    (partial / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_policy(partial)


# ----------------------------------------------------------------------------- rollout CLI
def _rollout(*args, env=None, timeout=240):
    return subprocess.run([sys.executable, "-m", "tabb_torchrl.rollout", *map(str, args)], env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def test_rollout_cli_reproduces_the_final_evaluation(recipe_run):
    summary = _summary(recipe_run)
    proc = _rollout(recipe_run, "--episodes", 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"normalised score (odrl): {summary['normalized_score']:.2f} ± {summary['normalized_score_std']:.2f}" \
        in proc.stdout
    assert f"return: {summary['raw_return']:.2f}" in proc.stdout


def test_rollout_cli_one_episode_with_a_gif(recipe_run, root):
    video = root / "hopper.gif"
    proc = _rollout(recipe_run, "--episodes", 1, "--video", video, "--video-size", 64)
    if proc.returncode == 2 and "cannot render" in proc.stderr:
        pytest.skip(f"no offscreen rendering here: {proc.stderr.strip()[:300]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 episode(s), seeds 100000..100000, at most 100 steps" in proc.stdout
    import imageio.v3 as iio

    frames = iio.imread(video, index=None)
    assert frames.shape[1:3] == (64, 64) and frames.shape[0] > 1


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["{root}/nowhere"], None, "does not exist"),
        (["{run}", "--video", "{root}/v"], None, "has no extension"),
        (["{run}", "--episodes", "0"], None, "--episodes 0 must be >= 1"),
        (["{run}", "--episodes", "1", "--video", "{root}/x.gif"], {"MUJOCO_GL": "disable"},
         "MuJoCo cannot render tabb/Hopper-morph-v0 offscreen here"),
    ],
)
def test_rollout_cli_errors(recipe_run, root, args, env, message):
    args = [a.format(root=root, run=recipe_run) for a in args]
    proc = _rollout(*args, env=dict(ENV, **(env or {})))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-3000:]
    assert not (root / "x.gif").exists()


def test_rollout_cli_mp4_without_ffmpeg_names_the_package(recipe_run, root):
    import importlib.util

    if importlib.util.find_spec("imageio_ffmpeg") is not None:
        pytest.skip("imageio-ffmpeg is installed")
    proc = _rollout(recipe_run, "--video", root / "out.mp4")
    assert proc.returncode == 2 and "pip install -e '.[video]' (imageio-ffmpeg)" in proc.stderr
    assert not (root / "out.mp4").exists()
