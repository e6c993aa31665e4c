"""End-to-end runs of ``recipes/tabb_offline.py`` (real subprocesses, tiny sizes).

Datasets come from the collector with ``quality=random`` (the smoke preset) or from
a D4RL-style file written here from a random rollout, so no test needs a shipped
behaviour policy (the medium-quality path runs only when the policies exist).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recipe_helpers import SCRIPT, assert_same_states, check_exit as _check, run_recipe  # noqa: E402

SUMMARY_TYPES = {
    "algo": str,
    "env": str,
    "source_env": (str, type(None)),
    "seed": int,
    "normalized_score": float,
    "normalized_score_std": float,
    "best_normalized_score": float,
    "best_step": int,
    "raw_return": float,
    "raw_return_std": float,
    "eval_episodes": int,
    "reference": str,
    "steps": int,
    "pretrain_steps": dict,
    "wall_time_s": float,
    "updates_per_s": (float, type(None)),
    "device": str,
    "config_hash": str,
    "run_name": str,
    "run_dir": str,
    "history": list,
}
# numbers that legitimately differ between two runs of the same configuration
NOT_REPRODUCIBLE = {"wall_time_s", "updates_per_s", "run_dir"}


def _run(args, cwd, timeout=240):
    """The recipe's finished process, whatever its exit code (:func:`_check` asserts 0)."""
    return run_recipe(args, cwd, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("recipe")


def _base(workdir) -> list[str]:
    return ["+preset=smoke", f"data.root={workdir / 'data'}", "progress=false", "logger.log_every=50"]


@pytest.fixture(scope="module")
def tabb_run(workdir):
    """One uninterrupted smoke run of TABB (shared by several tests)."""
    run_dir = workdir / "tabb_full"
    _check(_run([*_base(workdir), f"run_dir={run_dir}"], cwd=workdir))
    return run_dir


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("algo", ["tabb", "iql_mixed", "iql_target", "src_actor"])
def test_smoke_run_per_algo(algo, workdir, tabb_run):
    if algo == "tabb":
        run_dir = tabb_run
    else:
        run_dir = workdir / f"{algo}_run"
        proc = _check(_run([*_base(workdir), f"algo={algo}", f"run_dir={run_dir}"], cwd=workdir))
        assert "normalized_score" in proc.stdout  # the printed table
    summary = _summary(run_dir)
    assert summary["algo"] == algo
    assert summary["steps"] == 200
    assert summary["pretrain_steps"] == {"stage1": 100, "stage2": 50}
    assert (summary["source_env"] is None) == (algo == "iql_target")
    assert math.isfinite(summary["normalized_score"])
    assert (run_dir / "learning_curve.png").stat().st_size > 0
    scalars = next((run_dir / "logs").iterdir()) / "scalars"
    assert (scalars / "eval" / "normalized_score.csv").read_text().count("\n") == 2
    assert (scalars / "train" / "loss_qvalue.csv").exists()
    if algo in ("tabb", "src_actor"):
        assert (scalars / "train" / "ess.csv").exists()


def test_summary_contents(tabb_run):
    from tabb_torchrl.data import reference_returns
    from tabb_torchrl.pipeline import SUMMARY_KEYS

    summary = _summary(tabb_run)
    assert set(SUMMARY_KEYS) <= set(summary)
    for key, types in SUMMARY_TYPES.items():
        assert isinstance(summary[key], types), (key, summary[key])
    assert summary["env"] == "tabb/Hopper-morph-v0" and summary["source_env"] == "Hopper-v5"
    assert summary["device"] == "cpu" and summary["eval_episodes"] == 2 and summary["seed"] == 0
    assert summary["run_name"] == "tabb_tabb-Hopper-morph-v0_seed0"
    # normalised score consistent with the raw returns and the ODRL reference
    final = summary["history"][-1]
    returns = np.asarray(final["returns"])
    lo, hi = reference_returns(summary["env"], summary["reference"])
    scores = 100 * (returns - lo) / (hi - lo)
    assert final["step"] == summary["steps"]
    assert summary["raw_return"] == pytest.approx(returns.mean())
    assert summary["raw_return_std"] == pytest.approx(returns.std())
    assert summary["normalized_score"] == pytest.approx(scores.mean())
    assert summary["normalized_score_std"] == pytest.approx(scores.std())
    assert summary["normalized_score"] == pytest.approx(100 * (summary["raw_return"] - lo) / (hi - lo))
    best = max(h["normalized_score"] for h in summary["history"])
    assert summary["best_normalized_score"] == pytest.approx(best)
    assert [h["step"] for h in summary["history"]] == [100, 200]


def test_kill_and_resume_matches_uninterrupted(workdir, tabb_run):
    """Stop twice (in stage 2, then in the RL phase) without a final checkpoint, as a
    kill would, resume each time: same summary numbers and bit-identical parameters."""
    run_dir = workdir / "tabb_resumed"
    common = [*_base(workdir), f"run_dir={run_dir}", "checkpoint.every=40", "checkpoint.save_on_stop=false"]
    # global steps: stage 1 = 1..100, stage 2 = 101..150, RL = 151..350
    proc = _check(_run([*common, "max_steps_this_session=130"], cwd=workdir))
    assert "Stopped at global step 130" in proc.stdout
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["progress"] == {"phase": "stage2", "stage1_step": 100, "stage2_step": 20, "rl_step": 0}
    proc = _check(_run([*common, "max_steps_this_session=230", "resume=true"], cwd=workdir))
    assert "Stopped at global step 230" in proc.stdout
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["progress"]["phase"] == "rl" and ckpt["progress"]["rl_step"] == 50  # lost 30 steps at most
    _check(_run([*common, f"resume={run_dir}"], cwd=workdir))

    full, resumed = _summary(tabb_run), _summary(run_dir)
    for key in full:
        if key not in NOT_REPRODUCIBLE:
            assert full[key] == resumed[key], key
    a = torch.load(tabb_run / "checkpoint.pt", weights_only=False)
    b = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    for part in ("loss_module", "latent_model", "optimizers"):
        assert_same_states({part: a[part]}, {part: b[part]})
    # the CSV logs hold each row once (rows written after the last checkpoint were rewound)
    name = full["run_name"]
    for rel in ("eval/normalized_score.csv", "train/loss_qvalue.csv", "pretrain_stage2/holdout_loss.csv"):
        assert (tabb_run / "logs" / name / "scalars" / rel).read_text() == (
            run_dir / "logs" / name / "scalars" / rel
        ).read_text(), rel


def test_unknown_env_fails_at_start_with_valid_ids(workdir):
    proc = _run(["+preset=smoke", "env.id=tabb/Nope-morph-v0", f"run_dir={workdir / 'bad_env'}"], cwd=workdir)
    assert proc.returncode == 2
    assert "env.id='tabb/Nope-morph-v0' is not a known target env" in proc.stderr
    assert "tabb/Hopper-morph-v0" in proc.stderr and "Fix:" in proc.stderr
    assert not (workdir / "bad_env").exists()  # failed before creating anything


def test_unknown_algo_fails_with_the_choices(workdir):
    proc = _run(["+preset=smoke", "algo=nope"], cwd=workdir)
    assert proc.returncode != 0
    assert "algo" in proc.stderr and "iql_target" in proc.stderr  # hydra lists the options


def _random_rollout_file(env_id, n, path, seed=0):
    from tabb_torchrl.data import make_transitions, write_d4rl_hdf5
    from tabb_torchrl.envs import make_env

    env = make_env(env_id)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = {k: [] for k in ("o", "a", "n", "r", "t", "u")}
    for i in range(n):
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        trunc = trunc or i == n - 1
        for k, v in zip(rows, (obs, a, nxt, r, term, trunc)):
            rows[k].append(v)
        obs = env.reset()[0] if term or trunc else nxt
    env.close()
    td = make_transitions(*(np.asarray(rows[k]) for k in ("o", "a", "n", "r", "t")), np.asarray(rows["u"]))
    return write_d4rl_hdf5(td, path)


def test_dataset_paths_and_validation_errors(workdir):
    """hdf5 paths override generation; a wrong-env dataset and a too-large split fail clearly."""
    src = _random_rollout_file("Hopper-v5", 400, workdir / "files" / "hopper_src.hdf5")
    tgt = _random_rollout_file("tabb/Hopper-morph-v0", 300, workdir / "files" / "hopper_tgt.hdf5", seed=1)
    wrong = _random_rollout_file("Walker2d-v5", 300, workdir / "files" / "walker.hdf5")
    fast = ["+preset=smoke", "progress=false", "pretrain.stage1_steps=10", "pretrain.stage2_steps=5",
            "pretrain.holdout_every=5", "optim.steps=10", "eval.every=10", "eval.episodes=1",
            "eval.max_episode_steps=10"]
    run_dir = workdir / "paths_run"
    _check(_run([*fast, f"data.source.path={src}", f"data.target.path={tgt}", f"run_dir={run_dir}"], cwd=workdir))
    assert _summary(run_dir)["steps"] == 10

    proc = _run([*fast, f"data.source.path={wrong}", f"data.target.path={tgt}",
                 f"run_dir={workdir / 'wrong_run'}"], cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "The source dataset" in proc.stderr and "does not fit env Hopper-v5" in proc.stderr
    assert "Fix:" in proc.stderr

    proc = _run([*fast, f"data.source.path={src}", f"data.target.path={tgt}", "data.n_target=400",
                 "pretrain.n_target=32", f"run_dir={workdir / 'split_run'}"], cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data.n_target=400 target rows per batch is larger than the target dataset (300" in proc.stderr


def test_medium_quality_path_when_policies_are_shipped(workdir):
    """The default (medium) data path, at tiny sizes; needs the shipped behaviour policies."""
    from tabb_torchrl.behavior.policies import list_behavior_policies

    shipped = set(list_behavior_policies())
    needed = {("Hopper-v5", "medium"), ("tabb/Hopper-morph-v0", "medium")}
    if not needed <= shipped:
        pytest.skip(f"shipped behaviour policies missing: {sorted(needed - shipped)}")
    run_dir = workdir / "medium_run"
    _check(_run([*_base(workdir), "data.source.quality=medium", "data.target.quality=medium",
                 f"run_dir={run_dir}"], cwd=workdir))
    assert _summary(run_dir)["steps"] == 200


def _assert_same_run(full_dir: Path, other_dir: Path) -> None:
    full, other = _summary(full_dir), _summary(other_dir)
    for key in full:
        if key not in NOT_REPRODUCIBLE:
            assert full[key] == other[key], key
    a = torch.load(full_dir / "checkpoint.pt", weights_only=False)
    b = torch.load(other_dir / "checkpoint.pt", weights_only=False)
    for part in ("loss_module", "latent_model"):
        assert_same_states({part: a[part]}, {part: b[part]})


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted(workdir, tabb_run):
    """A real SIGKILL in the RL phase, then resume=true: same numbers as the uninterrupted run."""
    import signal
    import time

    run_dir = workdir / "tabb_killed"
    args = [*_base(workdir), f"run_dir={run_dir}", "checkpoint.every=40", "optim.steps=200"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt_file = run_dir / "checkpoint.pt"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt_file.exists():
                progress = torch.load(ckpt_file, weights_only=False)["progress"]
                if progress["rl_step"] > 0:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    _check(_run([*args, "resume=true"], cwd=workdir))
    _assert_same_run(tabb_run, run_dir)


@pytest.mark.slow
def test_compiled_update_runs(workdir):
    """compile=on wraps the RL update in torch.compile (first compilation takes a while on CPU)."""
    run_dir = workdir / "compiled"
    _check(_run([*_base(workdir), "compile=on", f"run_dir={run_dir}"], cwd=workdir, timeout=600))
    summary = _summary(run_dir)
    assert summary["steps"] == 200 and math.isfinite(summary["normalized_score"])


def test_fused_update_is_the_default_and_checkpoints_record_it(workdir, tabb_run):
    ckpt = torch.load(tabb_run / "checkpoint.pt", weights_only=False)
    assert ckpt["rl_update"] == "fused"
    # a checkpoint of one update mode does not load into the other
    proc = _run([*_base(workdir), "optim.update=modular", f"resume={tabb_run}"], cwd=workdir)
    assert proc.returncode != 0
    assert "optim.update=fused" in proc.stderr + proc.stdout


def test_predicted_termination_runs_on_the_fast_update(workdir):
    """h's termination head in the aligned targets (a TABB option) runs on the default fast update."""
    run_dir = workdir / "termination_head"
    proc = _check(_run([*_base(workdir), "model.termination_head=true", "loss.use_predicted_termination=true",
                        "optim.steps=20", "eval.every=20", f"run_dir={run_dir}"], cwd=workdir))
    assert "modular" not in proc.stdout + proc.stderr
    assert _summary(run_dir)["steps"] == 20
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["rl_update"] == "fused"



def test_a_user_method_plugs_into_the_recipe(workdir):
    """A cross-domain method in the user's own module runs from the recipe (algo.method + algo.method_module)."""
    (workdir / "toy_methods.py").write_text(
        "import torch\n"
        "from tabb_torchrl.methods import CrossDomainMethod, SourceEdit, register_method\n\n"
        "class HalfWeight(CrossDomainMethod):\n"
        "    def __init__(self, w=0.5):\n"
        "        super().__init__()\n"
        "        self.w = w\n"
        "    def edit_source(self, rows):\n"
        "        return SourceEdit(weight=torch.full_like(rows.reward, self.w))\n\n"
        "register_method('half_weight', HalfWeight)\n"
    )
    run_dir = workdir / "user_method"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=str(workdir))
    args = [*_base(workdir), "algo.method=half_weight", "+algo.method_module=toy_methods",
            "+algo.method_kwargs={w: 0.25}", "optim.steps=20", "eval.every=20", f"run_dir={run_dir}"]
    _check(subprocess.run([sys.executable, str(SCRIPT), *args], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=240))
    assert _summary(run_dir)["steps"] == 20
    csv = (run_dir / "logs").rglob("train/mean_weight.csv")
    values = [float(line.split(",")[-1]) for f in csv for line in f.read_text().splitlines() if line.strip()]
    assert values and all(abs(v - 0.25) < 1e-6 for v in values)
    bad = _run([*_base(workdir), "algo.method=nope", f"run_dir={workdir / 'bad_method'}"], cwd=workdir)
    assert bad.returncode == 2 and "algo.method='nope'" in bad.stderr


def test_method_hooks_prepare_once_and_columns_on_resume(workdir):
    """A method's prepare() runs once per run (its state is checkpointed); add_columns() writes per-row
    columns that edit_source() reads, again after a resume; raw features skip the latent pre-training."""
    (workdir / "hook_methods.py").write_text(
        "import os, torch\n"
        "from tabb_torchrl.methods import CrossDomainMethod, SourceEdit, register_method\n\n"
        "class Hooked(CrossDomainMethod):\n"
        "    columns = ('bonus',)\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.register_buffer('level', torch.zeros(()))\n"
        "    def prepare(self, source, target, *, device=None, progress=False):\n"
        "        with open(os.environ['HOOK_LOG'], 'a') as f:\n"
        "            f.write('prepare\\n')\n"
        "        self.level.fill_(float(source['next', 'reward'].mean()))\n"
        "    def add_columns(self, data):\n"
        "        data.set('bonus', torch.full((data.shape[0],), 2.0) + 0 * self.level)\n"
        "    def edit_source(self, rows):\n"
        "        return SourceEdit(weight=rows.columns['bonus'] / 2.0, metrics={'level': self.level.clone()})\n\n"
        "register_method('hooked', Hooked)\n"
    )
    run_dir, log = workdir / "hooked", workdir / "hook.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONPATH=str(workdir), HOOK_LOG=str(log))
    args = [*_base(workdir), "algo=iql_mixed", "algo.method=hooked", "+algo.method_module=hook_methods",
            "algo.features=raw", "optim.steps=40", "eval.every=20", "checkpoint.every=10", f"run_dir={run_dir}"]

    def run(*extra):
        return _check(subprocess.run([sys.executable, str(SCRIPT), *args, *extra], cwd=workdir, env=env,
                                     capture_output=True, text=True, timeout=240))

    run("max_steps_this_session=20")
    run("resume=true")
    assert log.read_text().count("prepare") == 1
    summary = _summary(run_dir)
    assert summary["steps"] == 40 and summary["pretrain_steps"] == {"stage1": 0, "stage2": 0}
    level = [float(line.split(",")[-1]) for f in (run_dir / "logs").rglob("train/level.csv")
             for line in f.read_text().splitlines() if line.strip()]
    assert level and len(set(level)) == 1 and level[0] != 0.0  # prepare()'s state survived the resume


def test_squared_critic_loss_through_the_recipe(workdir):
    """loss.huber_delta=null trains with the squared error (IQL's critic loss)."""
    run_dir = workdir / "squared"
    _check(_run([*_base(workdir), "algo=iql_mixed", "algo.features=raw", "loss.huber_delta=null", "optim.steps=20",
                 "eval.every=20", f"run_dir={run_dir}"], cwd=workdir))
    assert _summary(run_dir)["steps"] == 20
