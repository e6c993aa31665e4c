"""Helpers shared by the tests that run ``recipes/tabb_offline.py`` in a subprocess.

The methods' recipe tests (``tests/test_method_*.py``, ``tests/test_cql.py``) each make one uninterrupted smoke
run (:func:`smoke_run_fixture`), check it in a CI test, and in a slow test stop a second session part-way as a kill
would, resume it (:func:`kill_and_resume`) and compare the two checkpoints bit for bit (:func:`assert_same_states`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "tabb_offline.py"


def recipe_env() -> dict:
    """The environment of a recipe subprocess: one thread, no display."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")


def check_exit(proc):
    """Assert a finished recipe process exited 0, showing the tails of its output otherwise; returns it."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}"
    return proc


def run_recipe(args, cwd, timeout: float = 300, check: bool = True):
    """Run the recipe with ``args`` (one thread) in ``cwd``; with ``check``, assert it exits 0
    (:func:`check_exit`). Returns the ``subprocess.CompletedProcess``."""
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=recipe_env(), capture_output=True,
                          text=True, timeout=timeout)
    return check_exit(proc) if check else proc


def flatten_state(obj, prefix: str = "") -> dict:
    """``{"a/b/0/": leaf}`` of a nested state dict (dicts, lists and tuples), to compare two checkpoints."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten_state(v, f"{prefix}{k}/"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten_state(v, f"{prefix}{i}/"))
        return out
    return {prefix: obj}


def load_checkpoint(run_dir: Path) -> dict:
    """The ``checkpoint.pt`` of a run directory."""
    return torch.load(Path(run_dir) / "checkpoint.pt", weights_only=False)


def train_scalars(run_dir: Path) -> Path:
    """The folder of a run's training-scalar CSV files (``logs/<run name>/scalars/train``)."""
    return next((Path(run_dir) / "logs").iterdir()) / "scalars" / "train"


def assert_logged(run_dir: Path, *names: str) -> None:
    """Assert the run logged each training scalar of ``names`` (a CSV file under :func:`train_scalars`)."""
    logs = train_scalars(run_dir)
    for name in names:
        assert (logs / f"{name}.csv").exists(), name


def load_actor(run_dir: Path, algo: str, rl_step: int):
    """The run's actor as the robustness evaluation loads it (``load_run_actor``), asserting the run is ``algo``'s
    and the actor is from RL step ``rl_step``."""
    from tabb_torchrl.robustness import load_run_actor

    actor, cfg, info = load_run_actor(run_dir)
    assert cfg.algo.name == algo and info["rl_step"] == rl_step
    return actor


def assert_same_states(a, b, *, nan_equal: bool = False) -> dict:
    """Assert two (nested) states hold the same keys and bit-identical leaves: tensors by ``torch.equal``, other
    leaves by ``==``. With ``nan_equal``, NaN counts as equal to NaN (in a tensor, at the same places), for states
    holding NaN where nothing was fitted yet. Returns the flattened ``a`` (see :func:`flatten_state`), for the
    caller's own key checks."""
    fa, fb = flatten_state(a), flatten_state(b)
    assert fa.keys() == fb.keys(), sorted(fa.keys() ^ fb.keys())
    for key, va in fa.items():
        vb = fb[key]
        if isinstance(va, torch.Tensor) and nan_equal:
            torch.testing.assert_close(va, vb, rtol=0, atol=0, equal_nan=True, msg=key)
        elif isinstance(va, torch.Tensor):
            assert torch.equal(va, vb), key
        else:
            assert va == vb or (nan_equal and va != va and vb != vb), key
    return fa


def assert_same_loss_modules(run_dir: Path, other_dir: Path, *, nan_equal: bool = False) -> dict:
    """Assert the ``loss_module`` states of two runs' checkpoints are bit-identical (:func:`assert_same_states`);
    returns the first one's, flattened."""
    return assert_same_states(load_checkpoint(run_dir)["loss_module"], load_checkpoint(other_dir)["loss_module"],
                              nan_equal=nan_equal)


def recipe_args(workdir: Path, algo: str, *extra: str, steps: int = 100, checkpoint_every: int = 40) -> list[str]:
    """The smoke-run overrides of a method's recipe test: ``+preset=smoke``, ``algo=<algo>``, data under
    ``workdir/data``, ``steps`` RL updates evaluated once at the end, a checkpoint every ``checkpoint_every`` steps
    and none when ``max_steps_this_session`` stops a session (as a kill), then ``extra``."""
    return ["+preset=smoke", f"algo={algo}", f"data.root={Path(workdir) / 'data'}", "progress=false",
            f"optim.steps={steps}", f"eval.every={steps}", f"checkpoint.every={checkpoint_every}",
            "checkpoint.save_on_stop=false", "logger.log_every=50", *extra]


class SmokeRun(NamedTuple):
    """One finished recipe run: its work dir (``workdir/data`` holds the data), run dir, the overrides it ran with
    (without ``run_dir``) and its printed output."""

    workdir: Path
    run_dir: Path
    args: list
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """``stdout`` and ``stderr`` together (the log lines go to ``stderr``)."""
        return self.stdout + self.stderr


def smoke_run_fixture(algo: str, *extra: str, **settings):
    """A module-scoped fixture ``smoke_run``: one uninterrupted run of :func:`recipe_args` ``(workdir, algo, *extra,
    **settings)`` in ``<tmp>/<algo>_recipe/full``, as a :class:`SmokeRun`. Use as
    ``smoke_run = smoke_run_fixture("dara", "algo.method_kwargs.classifier_steps=30")``."""

    @pytest.fixture(scope="module", name="smoke_run")
    def smoke_run(tmp_path_factory):
        workdir = tmp_path_factory.mktemp(f"{algo}_recipe")
        args = recipe_args(workdir, algo, *extra, **settings)
        proc = run_recipe([*args, f"run_dir={workdir / 'full'}"], workdir)
        return SmokeRun(workdir, workdir / "full", args, proc.stdout, proc.stderr)

    smoke_run.__doc__ = f"One uninterrupted smoke run of ``algo={algo}`` (a :class:`recipe_helpers.SmokeRun`)."
    return smoke_run


class KilledRun(NamedTuple):
    """A run stopped part-way and resumed: its run dir, the two sessions' processes and the ``progress`` of the
    checkpoint the first session left."""

    run_dir: Path
    stopped: subprocess.CompletedProcess
    resumed: subprocess.CompletedProcess
    stopped_progress: dict

    @property
    def stopped_output(self) -> str:
        """The first session's ``stdout`` and ``stderr`` together."""
        return self.stopped.stdout + self.stopped.stderr

    @property
    def resumed_output(self) -> str:
        """The resumed session's ``stdout`` and ``stderr`` together."""
        return self.resumed.stdout + self.resumed.stderr


def kill_and_resume(smoke: SmokeRun, stop_at: int, name: str = "resumed") -> KilledRun:
    """Run ``smoke``'s configuration again in ``smoke.workdir / name``: a first session stops after ``stop_at``
    steps (``max_steps_this_session``; with ``checkpoint.save_on_stop=false`` as a kill, so it resumes from the
    last periodic checkpoint), a second one resumes it (``resume=true``) to the end."""
    run_dir = smoke.workdir / name
    args = [*smoke.args, f"run_dir={run_dir}"]
    stopped = run_recipe([*args, f"max_steps_this_session={stop_at}"], smoke.workdir)
    progress = load_checkpoint(run_dir)["progress"]
    resumed = run_recipe([*args, "resume=true"], smoke.workdir)
    return KilledRun(run_dir, stopped, resumed, progress)
