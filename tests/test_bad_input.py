"""The bad-input table: every hostile-but-fair input we know of, through the real entry points.

Each case of :data:`CASES` runs one entry point -- the recipe (``recipes/tabb_offline.py``
in a subprocess), the collector (``python -m tabb_torchrl.behavior.collect``), or a
loader / public function in process -- and asserts

* a non-zero exit (or the documented exception), and no raw traceback;
* a message naming the key or the file, and the fix;
* that every pre-existing dataset, checkpoint and run folder is byte-identical
  afterwards (SHA-256 of every file of the workspace, before and after).

The workspace (a module fixture) holds the smoke datasets, one finished smoke run,
a copy of it with a truncated checkpoint, and D4RL files with one defect each.
A few inputs that used to be silently wrong now work; they are tested at the end
(``env.level`` derives the env id, a resume with another thread count continues).
The counts of this table are quoted in ``docs/troubleshooting.md``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tabb_offline.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")


def _run(cmd, cwd, timeout=240):
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def _recipe(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, str(RECIPE), "+preset=smoke", f"data.root={ws / 'data'}", "progress=false",
                 f"runs_root={ws / 'hydra'}", *args], cwd=ws)


def _snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under the protected folders of the workspace."""
    out = {}
    for top in ("data", "base_run", "trunc_run", "files"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------------------------- the workspace
def _write_h5(path: Path, **arrays) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Smoke datasets, a finished smoke run, a copy with a truncated checkpoint, and defective D4RL files."""
    ws = tmp_path_factory.mktemp("bad_input")
    proc = _recipe(ws, f"run_dir={ws / 'base_run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(ws / "base_run", ws / "trunc_run")
    ckpt = ws / "trunc_run" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])

    from tabb_torchrl.data import load_minari_dataset, write_d4rl_hdf5

    files = ws / "files"
    files.mkdir()
    target = load_minari_dataset(None, data_path=ws / "data" / "tabb" / "Hopper-morph" / "random-600-s0-v0")
    good = write_d4rl_hdf5(target, files / "good.hdf5")
    with h5py.File(good) as f:
        arrays = {k: f[k][()] for k in f}

    def variant(name, **changes):
        data = {k: v.copy() for k, v in arrays.items()}
        for key, value in changes.items():
            if value is None:
                del data[key]
            else:
                data[key] = value(data[key]) if callable(value) else value
        return _write_h5(files / name, **data)

    def at(row, value):
        def change(a):
            a = a.astype(np.float64) if a.dtype == bool else a
            a[row] = value
            return a
        return change

    variant("terminals_half.hdf5", terminals=at(7, 0.5))
    variant("terminals_nan.hdf5", terminals=at(9, np.nan))
    variant("actions_x100.hdf5", actions=lambda a: a * 100)
    variant("nan_row.hdf5", observations=at(5, np.nan))
    variant("inf_row.hdf5", rewards=at(3, np.inf))
    variant("no_actions.hdf5", actions=None)
    n = len(arrays["rewards"])
    rng = np.random.default_rng(0)
    variant("walker_sized.hdf5", observations=rng.normal(size=(n, 17)).astype(np.float32),
            next_observations=rng.normal(size=(n, 17)).astype(np.float32),
            actions=rng.uniform(-1, 1, (n, 6)).astype(np.float32))
    variant("huge_rewards.hdf5", rewards=lambda r: np.full_like(r, 3e38))
    (files / "empty.hdf5").write_bytes(b"")
    (files / "truncated.hdf5").write_bytes(good.read_bytes()[:4096])
    shutil.copy(good, files / "good.hdf")
    return ws


# ----------------------------------------------------------------------------- the table
@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    entry: str  # recipe | collect | call
    args: tuple = ()
    must: tuple = ()  # substrings of the message (key / file names)
    fix: str = "Fix"  # how the message says the fix
    rc: int | None = 2  # expected exit status (None: any non-zero)


def _f(name: str) -> str:
    return "{files}/" + name


CASES = [
    # ---- issue 20, data or progress lost
    Case("rejected_resume_keeps_the_run", "recipe", ("resume={ws}/base_run", "seed=1"),
         ("seed 0 -> 1", "Nothing was written", "base_run")),
    Case("collect_size_0_keeps_the_cache", "collect", ("--size", "0"), ("--size", "0 is below 1"), "pass an integer >= 1"),
    Case("collect_size_negative_keeps_the_cache", "collect", ("--size", "-5"), ("--size", "-5 is below 1"),
         "pass an integer >= 1"),
    # ---- silently wrong results
    Case("env_level_mismatching_env_id", "recipe",
         ("env=hopper_friction", "env.id=tabb/Hopper-friction-2.0-v0", "env.level=5.0"),
         ("env.level=5.0", "tabb/Hopper-friction-2.0-v0", "tabb/Hopper-friction-5.0-v0")),
    Case("env_level_unknown", "recipe", ("env=hopper_friction", "env.level=3.0"), ("env.level=3.0", "0.1, 0.5, 2.0, 5.0")),
    Case("env_shift_mismatching_env_id", "recipe", ("env.shift=friction", "env.id=tabb/Hopper-morph-v0"),
         ("env.shift='friction'", "tabb/Hopper-morph-v0")),
    Case("std_eps_zero_one_source_row", "recipe", ("loss.std_eps=0", "data.n_source=1"), ("loss.std_eps=0",)),
    Case("latent_state_dim_zero", "recipe", ("model.latent_state_dim=0",), ("model.latent_state_dim=0",)),
    Case("latent_sa_dim_negative", "recipe", ("model.latent_sa_dim=-4",), ("model.latent_sa_dim=-4",)),
    Case("nan_loss_stops_the_run", "recipe", ("run_dir={ws}/runs/nan_loss", "optim.lr_qvalue=1e30"),
         ("loss_qvalue became", "RL step", "checkpoint.pt", "is kept unchanged"), rc=3),
    Case("huge_rewards_stop_pretraining", "recipe", ("run_dir={ws}/runs/huge", "data.target.path=" + _f("huge_rewards.hdf5")),
         ("loss_model became", "pre-training stage-1 step 1 ", "no checkpoint had been written yet"), rc=3),
    Case("tbm_infinite_is_not_nan", "call", ("tbm_inf",), ()),
    Case("tbm_negative_std_eps", "call", ("tbm_negative_eps",), ("std_eps", "-0.5")),
    Case("d4rl_terminals_half", "recipe", ("data.target.path=" + _f("terminals_half.hdf5"),),
         ("terminals_half.hdf5", "'terminals'", "0.5", "row 7")),
    Case("d4rl_terminals_nan", "recipe", ("data.target.path=" + _f("terminals_nan.hdf5"),),
         ("terminals_nan.hdf5", "'terminals'", "nan", "row 9")),
    Case("d4rl_actions_x100", "recipe", ("data.target.path=" + _f("actions_x100.hdf5"),),
         ("actions_x100.hdf5", "action bounds", "+data.action_tolerance=null")),
    Case("loader_terminals_half", "call", ("load", "terminals_half.hdf5"), ("'terminals'", "0.5")),
    Case("loader_actions_x100", "call", ("load", "actions_x100.hdf5"), ("action bounds", "action_tolerance=None")),
    # ---- raw tracebacks before
    Case("seed_negative", "recipe", ("seed=-1",), ("seed=-1",)),
    Case("data_seed_negative", "recipe", ("data.seed=-3",), ("data.seed=-3",)),
    Case("threads_zero", "recipe", ("threads=0",), ("threads=0",)),
    Case("lr_actor_negative", "recipe", ("optim.lr_actor=-1",), ("optim.lr_actor=-1",)),
    Case("pretrain_lr_negative", "recipe", ("pretrain.lr=-0.01",), ("pretrain.lr=-0.01",)),
    Case("max_weight_negative", "recipe", ("loss.max_weight=-1",), ("loss.max_weight=-1",)),
    Case("target_update_tau_above_1", "recipe", ("optim.target_update_tau=2.0",), ("optim.target_update_tau=2.0",)),
    Case("max_episode_steps_zero", "recipe", ("eval.max_episode_steps=0",), ("eval.max_episode_steps=0",)),
    Case("source_id_unknown_version", "recipe", ("env.source_id=Hopper-v9",), ("env.source_id='Hopper-v9'", "Hopper-v5")),
    Case("truncated_checkpoint", "recipe", ("resume={ws}/trunc_run",), ("trunc_run/checkpoint.pt", "truncated or corrupt")),
    Case("source_env_of_another_robot", "recipe", ("env.source_id=Walker2d-v5",),
         ("env.source_id='Walker2d-v5'", "observation 17", "tabb/Hopper-morph-v0")),
    Case("hdf_suffix_is_not_a_minari_id", "recipe", ("data.target.path=" + _f("good.hdf"),), ("good.hdf", "rename")),
    Case("hdf5_path_missing", "recipe", ("data.source.path=" + _f("nope.hdf5"),), ("data.source.path=", "nope.hdf5")),
    Case("run_dir_holding_a_checkpoint", "recipe", ("run_dir={ws}/base_run",), ("base_run", "resume=true")),
    # ---- already handled before issue 20 (kept working)
    Case("wrong_sizes", "recipe", ("data.target.path=" + _f("walker_sized.hdf5"),),
         ("walker_sized.hdf5", "observation size 17")),
    Case("nan_row", "recipe", ("data.target.path=" + _f("nan_row.hdf5"),), ("nan_row.hdf5", "'observations'", "row 5")),
    Case("loader_inf_row", "call", ("load", "inf_row.hdf5"), ("inf_row.hdf5", "'rewards'", "row 3"),
         "Regenerate or re-download"),
    Case("loader_missing_key", "call", ("load", "no_actions.hdf5"), ("no_actions.hdf5", "'actions'"),
         "A D4RL-style file needs"),
    Case("loader_empty_file", "call", ("load", "empty.hdf5"), ("empty.hdf5", "corrupt, truncated or empty"),
         "delete it and regenerate"),
    Case("truncated_file", "recipe", ("data.target.path=" + _f("truncated.hdf5"),),
         ("truncated.hdf5", "corrupt, truncated or empty")),
    Case("unknown_env_id", "recipe", ("env.id=tabb/Hopper-morf-v0",), ("tabb/Hopper-morf-v0", "Did you mean")),
    Case("unknown_algo", "recipe", ("algo=nope",), ("algo/nope", "iql_target"), "Available options", rc=None),
    Case("negative_steps", "recipe", ("optim.steps=-1",), ("optim.steps=-1",)),
    Case("batch_larger_than_dataset", "recipe", ("data.n_target=10000",), ("data.n_target=10000", "data.target.size")),
    Case("collect_unknown_env", "collect_env", ("--env", "Hopper-v9", "--size", "10"), ("Hopper-v9", "Hopper-v5"),
         "gymnasium ids such as Hopper-v5"),
    Case("collect_negative_seed", "collect", ("--seed", "-1"), ("--seed",), "pass an integer >= 0"),
]


def _call(ws: Path, what: str, *args) -> str:
    """In-process entry points; returns the error message ('' when nothing is raised)."""
    from tabb_torchrl.data import DatasetError, load_d4rl_hdf5
    from tabb_torchrl.objectives.functional import tbm_weights

    if what == "tbm_inf":
        w = tbm_weights(torch.tensor([0.0, 1.0, float("inf"), 2.0]))
        assert torch.isfinite(w).all() and w[2] == 0 and w.sum() == pytest.approx(4.0)
        return ""
    if what == "tbm_negative_eps":
        with pytest.raises(ValueError) as err:
            tbm_weights(torch.tensor([0.0, 1.0]), std_eps=-0.5)
        return str(err.value)
    if what == "load":
        with pytest.raises(DatasetError) as err:
            load_d4rl_hdf5(ws / "files" / args[0], env_id="tabb/Hopper-morph-v0")
        return str(err.value)
    raise AssertionError(what)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, ws: Path):
    before = _snapshot(ws)
    fill = lambda a: a.format(ws=ws, files=ws / "files")  # noqa: E731
    args = [fill(a) for a in case.args]
    if case.entry == "call":
        message = _call(ws, *args)
    else:
        if case.entry == "recipe":
            proc = _recipe(ws, *args) if any(a.startswith(("run_dir=", "resume=")) for a in args) else \
                _recipe(ws, f"run_dir={ws / 'runs' / case.id}", *args)
        else:
            base = [] if case.entry == "collect_env" else ["--env", "Hopper-v5", "--quality", "random"]
            proc = _run([sys.executable, "-m", "tabb_torchrl.behavior.collect", *base, "--dataset-root",
                         str(ws / "data"), *args], cwd=ws)
        message = proc.stderr
        assert proc.returncode != 0, f"exit 0\n{proc.stdout[-2000:]}"
        if case.rc is not None:
            assert proc.returncode == case.rc, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for text in case.must:
        assert fill(text) in message, f"{text!r} not in:\n{message[-3000:]}"
    if case.must:
        assert case.fix in message, message[-3000:]
    after = _snapshot(ws)
    changed = [k for k, h in before.items() if after.get(k) != h]
    assert not changed, f"pre-existing files changed or removed: {changed}"
    if case.id == "source_env_of_another_robot":  # checked before any Walker2d data was generated
        assert not list((ws / "data").rglob("*Walker2d*"))
    if case.id == "nan_loss_stops_the_run":  # the checkpoint written before the bad step holds finite parameters
        from tabb_torchrl.pipeline.runs import load_checkpoint

        state = load_checkpoint(ws / "runs" / "nan_loss" / "checkpoint.pt")
        assert state["progress"]["phase"] == "rl" and state["progress"]["rl_step"] == 0
        assert all(torch.isfinite(v).all() for v in state["loss_module"].values() if v.is_floating_point())


def test_the_table_covers_every_item_of_issue_20():
    ids = {c.id for c in CASES}
    assert len(CASES) == len(ids)
    for needed in ("rejected_resume_keeps_the_run", "collect_size_0_keeps_the_cache", "env_level_mismatching_env_id",
                   "nan_loss_stops_the_run", "tbm_infinite_is_not_nan", "d4rl_terminals_half", "d4rl_actions_x100",
                   "seed_negative", "truncated_checkpoint", "source_env_of_another_robot",
                   "hdf_suffix_is_not_a_minari_id"):
        assert needed in ids


# ----------------------------------------------------------------------------- inputs that now work
def test_env_level_derives_the_env_id(ws):
    """``env=hopper_friction env.level=5.0`` trains on friction 5.0 (it trained on 0.5)."""
    run_dir = ws / "runs" / "level_5"
    proc = _recipe(ws, f"run_dir={run_dir}", "env=hopper_friction", "env.level=5.0", "pretrain.stage1_steps=0",
                   "pretrain.stage2_steps=0", "optim.steps=0", "eval.episodes=1", "eval.max_episode_steps=5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env"] == "tabb/Hopper-friction-5.0-v0"


def test_resume_with_another_thread_count_continues(ws):
    """``resume=true threads=1`` after a ``threads=null`` session finds the run and continues it (logged)."""
    root = ws / "resume_root"
    common = [f"runs_root={root}", "checkpoint.every=50", "pretrain.stage1_steps=60", "pretrain.stage2_steps=10",
              "optim.steps=20", "eval.every=20", "eval.episodes=1", "eval.max_episode_steps=5"]
    proc = _recipe(ws, *common, "threads=null", "max_steps_this_session=60")
    assert proc.returncode == 0 and "Stopped at global step 60" in proc.stdout, proc.stderr[-3000:]
    proc = _recipe(ws, *common, "threads=1", "resume=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "resuming from" in log and "threads: null -> 1" in log
    (summary,) = root.rglob("summary.json")
    assert json.loads(summary.read_text())["pretrain_steps"] == {"stage1": 60, "stage2": 10}


def test_runs_of_the_old_hash_stay_findable(tmp_path):
    """Runs started before runtime-only settings left the hash are found by ``resume=true``."""
    from tabb_torchrl.pipeline.config import config_hash, legacy_config_hashes
    from tabb_torchrl.pipeline.runs import resolve_run_dir, write_run_state

    cfg = {"seed": 0, "threads": 1, "resume": True, "run_dir": None, "runs_root": str(tmp_path),
           "checkpoint": {"filename": "checkpoint.pt"}}
    old_cfg = {**cfg, "threads": None}  # the old default
    old = tmp_path / "old_run"
    write_run_state(old, {"config_hash": legacy_config_hashes(old_cfg)[0]})
    (old / "checkpoint.pt").write_bytes(b"x")
    assert config_hash(cfg) == config_hash(old_cfg)
    assert resolve_run_dir(cfg, tmp_path / "new", config_hash(cfg))[0] == tmp_path / "new"
    assert resolve_run_dir(cfg, tmp_path / "new", config_hash(cfg), legacy_config_hashes(cfg))[0] == old


def test_stale_temp_folders_are_removed_but_a_live_writers_is_kept(tmp_path):
    from tabb_torchrl.behavior.minari_writer import _Lock, clean_stale_temp

    folder = tmp_path / "tabb" / "Hopper"
    (folder / "random-v0").mkdir(parents=True)
    dead = folder / ".random-v0.tmp-999999999-aaaa"  # its writer's process is gone
    live = folder / f".random-v0.tmp-{os.getpid()}-bbbb"  # a writer at work holds its lock
    old = folder / ".random-v0.old-cccc"  # a swap leftover next to the dataset
    for d in (dead, live, old):
        d.mkdir()
    (dead / "data").mkdir()
    with _Lock(live):
        removed = clean_stale_temp(folder)
    assert sorted(p.name for p in removed) == sorted([dead.name, old.name])
    assert live.exists() and not dead.exists() and not old.exists() and (folder / "random-v0").exists()
    # a swap cut between its two renames: the dataset moved aside is put back
    moved = folder / ".medium-v0.old-dddd"
    moved.mkdir()
    clean_stale_temp(folder)
    assert (folder / "medium-v0").is_dir() and not moved.exists()


def test_write_d4rl_hdf5_gives_the_usual_permissions(tmp_path):
    from tabb_torchrl.data import make_transitions, write_d4rl_hdf5

    td = make_transitions(torch.zeros(2, 3), torch.zeros(2, 1), torch.zeros(2, 3), torch.zeros(2), [False, True])
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_d4rl_hdf5(td, tmp_path / "x.hdf5")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.slow
def test_collection_workers_exit_with_their_parent(tmp_path):
    """Killing the collector (SIGKILL) ends its worker processes within seconds (they ran on ~45 s)."""
    proc = subprocess.Popen([sys.executable, "-m", "tabb_torchrl.behavior.collect", "--env", "Hopper-v5", "--quality",
                             "random", "--size", "400000", "--workers", "2", "--dataset-root", str(tmp_path)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    for _ in range(120):  # the workers are spawned after the imports
        time.sleep(0.5)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        workers = [int(p) for p in children.read_text().split()] if children.exists() else []
        if len(workers) >= 3:  # the resource tracker and two workers
            break
    assert workers, "no worker process started"
    time.sleep(2.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20.0
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.5)
        alive = [w for w in alive if Path(f"/proc/{w}").exists() and "zombie" not in _state(w)]
    assert not alive, f"workers still running: {alive}"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"
