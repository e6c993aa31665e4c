"""recipes/train_behavior_all.py: a plan of SAC runs in parallel, their status, shipping what is ready."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tabb_torchrl.behavior.policies import list_behavior_policies, load_policy_returns

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("train_behavior_all", REPO / "recipes" / "train_behavior_all.py")
tba = importlib.util.module_from_spec(spec)
sys.modules["train_behavior_all"] = tba
spec.loader.exec_module(tba)

TINY = ["init_random_steps=50", "batch_size=16", "hidden_sizes=[16,16]", "eval_every=50", "eval_episodes=1",
        "checkpoint_every=50", "log_every=50", "buffer_size=1000", "total_steps=150"]


def _plan(tmp_path: Path) -> Path:
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "common: [" + ", ".join(f"'{o}'" for o in TINY) + "]\n"
        "jobs:\n"
        "  - {env: Hopper-v5, overrides: [medium_return=-1000, stop_after_medium=true]}\n"
        "  - {env: tabb/Hopper-morph-v0, overrides: [medium_return=1.0e9, seed=3]}\n"
    )
    return plan


def test_plan_runs_in_parallel_reports_status_and_ships(tmp_path, capsys):
    plan, runs = _plan(tmp_path), tmp_path / "runs"
    jobs = tba.load_plan(plan)
    assert [j["env"] for j in jobs] == ["Hopper-v5", "tabb/Hopper-morph-v0"]
    assert jobs[1]["overrides"][-1] == "seed=3" and "total_steps=150" in jobs[1]["overrides"]
    assert tba.main(["--plan", str(plan), "--runs-root", str(runs), "--workers", "2"]) == 0
    hop, morph = (tba.job_status(j, runs) for j in jobs)
    # the Hopper job stops at its first evaluation (medium threshold -1000); the morph one runs to the end
    assert hop["done"] and hop["medium_step"] == 50 and hop["step"] == 50
    assert morph["done"] and morph["medium_step"] is None and morph["step"] == 150
    assert Path(morph["run_dir"]).name == "tabb__Hopper-morph-v0_s3"
    capsys.readouterr()
    tba.main(["--plan", str(plan), "--runs-root", str(runs), "--status"])
    out = capsys.readouterr().out
    assert "Hopper-v5" in out and "tabb/Hopper-morph-v0" in out
    # a second run starts nothing: every job is done
    assert tba.main(["--plan", str(plan), "--runs-root", str(runs)]) == 0
    assert "0 to run" in capsys.readouterr().out
    # ship: the medium snapshot that exists; no expert (not plateaued) unless asked
    assets = tmp_path / "assets"
    tba.ship(jobs, runs, unplateaued=False, root=assets)
    assert list_behavior_policies(assets) == [("Hopper-v5", "medium")]
    tba.ship(jobs, runs, unplateaued=True, root=assets)
    assert ("tabb/Hopper-morph-v0", "expert") in list_behavior_policies(assets)
    assert load_policy_returns("tabb/Hopper-morph-v0", assets)["expert"]["plateaued"] is False
    # report: one table row per run with its evaluation numbers, and the curves
    md = tba.report(jobs, runs, tmp_path / "rep" / "bt.md")
    text = md.read_text()
    assert text.count("\n| `") == 2 and "| `tabb/Hopper-morph-v0` (seed 3) | 150 |" in text and "| 50 | no |" in text
    assert (tmp_path / "rep" / "bt.png").stat().st_size > 1000 and "![evaluation curves](bt.png)" in text


def test_bad_plans_and_options_are_rejected(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        tba.load_plan(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs: []\n")
    with pytest.raises(ValueError, match="non-empty `jobs:`"):
        tba.load_plan(bad)
    bad.write_text("jobs:\n  - {overrides: [seed=1]}\n")
    with pytest.raises(ValueError, match="`env` key"):
        tba.load_plan(bad)
    with pytest.raises(SystemExit):
        tba.main(["--plan", str(_plan(tmp_path)), "--only", "Humanoid"])


def test_default_plan_covers_sources_and_paper_targets():
    import tabb_torchrl.envs as envs

    jobs = tba.load_plan(tba.DEFAULT_PLAN)
    ids = [j["env"] for j in jobs]
    assert {"Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5"} <= set(ids)
    targets = [i for i in ids if i.startswith("tabb/")]
    assert len(targets) == 12 and all(i in envs.list_env_ids() for i in targets)
    cmd = tba.command(jobs[0], Path("/r"), 9.0)
    assert cmd[-1] == "max_minutes=9.0" and "run_dir=/r/Hopper-v5_s0" in cmd
