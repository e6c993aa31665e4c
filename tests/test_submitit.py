"""A sweep through hydra-submitit-launcher's local executor, end to end: run_grid.py -> submitit jobs -> report.

``launcher: local`` (``recipes/config/hydra/launcher/local.yaml``, built on the plugin's
``submitit_local``) submits one job per run exactly as ``slurm.yaml`` does on a
cluster, so this 2-run sweep checks the path a SLURM sweep takes, short of the
scheduler: pickling the recipe's task, the job folders, the sweep directory and the
summaries, then the aggregation. Runs of a few steps, one thread each.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                    reason="needs hydra-submitit-launcher (pip install -e '.[test]')")

REPO = Path(__file__).resolve().parents[1]

TINY = ["+preset=smoke", "progress=false", "pretrain.stage1_steps=20", "pretrain.stage2_steps=10",
        "pretrain.holdout_every=5", "optim.steps=20", "eval.every=10", "eval.episodes=1",
        "eval.max_episode_steps=20", "checkpoint.every=1000", "logger.log_every=10"]


def test_two_run_sweep_through_submitit_local(tmp_path):
    grid = {
        "name": "submitit_smoke", "tasks": ["hopper_morph"], "algos": ["tabb"], "seeds": [0, 1],
        "launcher": "local", "sweep_dir": "sweep", "results_dir": "report",
        "overrides": [*TINY, f"data.root={tmp_path / 'data'}", "hydra.launcher.timeout_min=5"],
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "run_grid.py"), "grid.yaml", "--extra", "threads=1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"STDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-5000:]}"
    assert "hydra/launcher=local" in proc.stdout

    sweep = tmp_path / "sweep"  # relative paths are relative to the directory run_grid.py runs in
    summaries = sorted(sweep.glob("*/summary.json"))
    assert [p.parent.name for p in summaries] == ["0_tabb_Hopper-morph_seed0", "1_tabb_Hopper-morph_seed1"]
    for seed, path in enumerate(summaries):
        s = json.loads(path.read_text())
        assert s["seed"] == seed and s["steps"] == 20 and s["algo"] == "tabb"
    # one submitit job per run, each with its own log: the jobs ran through submitit, not in this process
    logs = sorted(sweep.glob(".submitit/*/*_log.out"))
    assert len(logs) == 2, sorted(str(p.relative_to(sweep)) for p in sweep.rglob("*"))[:40]

    report = (tmp_path / "report" / "table.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| Hopper-morph | "))
    assert row.endswith(" (2)** |")  # both seeds in the cell
    assert any(line.startswith("| tabb | ") and line.endswith(" | 2 |") for line in report.splitlines())  # IQM row
    assert (tmp_path / "report" / "profile.png").exists()
