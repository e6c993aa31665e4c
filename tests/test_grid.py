"""recipes/run_grid.py: where a grid writes, the hydra command it runs, its aggregation; the launcher configs."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GRIDS = sorted((REPO / "recipes" / "grids").glob("*.yaml"))


@pytest.fixture(scope="module")
def run_grid():
    spec = importlib.util.spec_from_file_location("run_grid", REPO / "recipes" / "run_grid.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_shipped_grids_write_outside_docs(path, run_grid):
    grid = run_grid.load_grid(path)
    for key in ("sweep_dir", "results_dir"):
        assert not Path(grid[key]).is_absolute() and Path(grid[key]).parts[0] != "docs", (key, grid[key])
    assert grid["launcher"] in (None, "local", "slurm")


def test_defaults_and_command(tmp_path, run_grid):
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"name": "mine", "tasks": ["hopper_morph", "ant_morph"],
                                                     "algos": ["tabb"], "seeds": [0, 1]}))
    grid = run_grid.load_grid(tmp_path / "g.yaml")
    assert grid["results_dir"] == "results/mine" and grid["sweep_dir"] == "results/raw/grids/mine"
    cmd = run_grid.hydra_command(grid, ["optim.steps=5"])
    assert cmd[1].endswith("recipes/tabb_offline.py") and cmd[2] == "-m"
    assert cmd[3:] == ["env=hopper_morph,ant_morph", "algo=tabb", "seed=0,1", "hydra.sweep.dir=results/raw/grids/mine",
                       "optim.steps=5"]
    assert "hydra/launcher=local" in run_grid.hydra_command({**grid, "launcher": "local"})
    assert not any(c.startswith("hydra/launcher") for c in run_grid.hydra_command({**grid, "launcher": "basic"}))


def test_dry_run(tmp_path, run_grid, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_grid.main([str(REPO / "recipes" / "grids" / "paper.yaml"), "--dry-run", "--launcher", "local", "--seeds", "0"])
    out = capsys.readouterr().out
    assert "grid paper: 48 runs" in out and "hydra/launcher=local" in out and "seed=0 " in out
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


def _fake_sweep(root: Path, algos=("tabb", "iql_target"), seeds=(0, 1)):
    for i, (algo, seed) in enumerate((a, s) for a in algos for s in seeds):
        d = root / f"{i}_{algo}_seed{seed}"
        d.mkdir(parents=True)
        score = 10.0 * (1 + (algo == "tabb")) + seed
        hist = [{"step": 10, "normalized_score": score / 2}, {"step": 20, "normalized_score": score}]
        (d / "summary.json").write_text(json.dumps({"algo": algo, "env": "tabb/Hopper-morph-v0", "seed": seed,
                                                    "normalized_score": score, "best_normalized_score": score,
                                                    "history": hist}))


def test_aggregate_only_writes_where_asked(tmp_path, run_grid, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"name": "mine", "tasks": ["hopper_morph"],
                                                     "algos": ["tabb", "iql_target"], "seeds": [0, 1]}))
    _fake_sweep(tmp_path / "results" / "raw" / "grids" / "mine")
    run_grid.main(["g.yaml", "--aggregate-only", "--seeds", "0,1"])
    out = tmp_path / "results" / "mine"  # the default, relative to the current directory
    md = (out / "table.md").read_text()
    assert md.startswith("# mine grid\n")
    assert "| task | tabb | iql_target |" in md  # the grid's column order
    assert "| Hopper-morph | **20.5 ± 0.5 (2)** | 10.5 ± 0.5 (2) |" in md
    assert {"table.csv", "table.tex", "aggregate.csv", "profile.png", "curve_Hopper-morph.png"} <= {
        p.name for p in out.iterdir()}
    assert not (tmp_path / "docs").exists()
    capsys.readouterr()

    run_grid.main(["g.yaml", "--aggregate-only", "--results-dir", "elsewhere/x"])
    assert (tmp_path / "elsewhere" / "x" / "table.md").read_text() == md


def test_aggregate_only_without_runs(tmp_path, run_grid, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"name": "none", "tasks": ["hopper_morph"], "algos": ["tabb"],
                                                     "seeds": [0]}))
    with pytest.raises(SystemExit) as exc:
        run_grid.main(["g.yaml", "--aggregate-only"])
    assert exc.value.code == 2
    assert "no summary.json under results/raw/grids/none: run the grid first" in capsys.readouterr().err


def test_local_launcher_mirrors_slurm():
    """hydra/launcher=local and =slurm compose, with the same job settings: a cluster differs by the name only."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    launchers = {}
    with initialize_config_dir(config_dir=str(REPO / "recipes" / "config"), version_base=None):
        for name in ("local", "slurm"):
            cfg = compose(config_name="config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
            launchers[name] = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launchers["local"]["_target_"].endswith("LocalLauncher")
    assert launchers["slurm"]["_target_"].endswith("SlurmLauncher")
    for key in ("timeout_min", "gpus_per_node", "tasks_per_node", "nodes"):
        assert launchers["local"][key] == launchers["slurm"][key], key
    assert launchers["local"]["submitit_folder"] == launchers["slurm"]["submitit_folder"] == (
        "${hydra.sweep.dir}/.submitit/%j")
