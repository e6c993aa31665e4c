"""Run a results grid (algorithms x tasks x seeds) of ``recipes/tabb_offline.py`` through a hydra
multirun, then aggregate its ``summary.json`` files into tables and figures.

Usage::

    python recipes/run_grid.py recipes/grids/reduced_cpu.yaml              # run + aggregate
    python recipes/run_grid.py recipes/grids/paper.yaml --dry-run          # print the hydra command
    python recipes/run_grid.py recipes/grids/reduced_cpu.yaml --aggregate-only
    python recipes/run_grid.py recipes/grids/reduced_cpu.yaml --launcher local   # submitit, this machine
    python recipes/run_grid.py recipes/grids/reduced_cpu.yaml --extra optim.steps=500 --seeds 0 \\
        --sweep-dir results/raw/grids/short --results-dir results/short

A grid YAML (``recipes/grids/*.yaml``) has::

    name: reduced_cpu
    tasks: [hopper_morph]           # env config names (recipes/config/env/<task>.yaml)
    algos: [tabb, iql_mixed, iql_target, src_actor]
    seeds: [0, 1]
    launcher: null                  # null (hydra's basic launcher: one run after the other) | local | slurm
    sweep_dir: results/raw/grids/reduced_cpu     # default: results/raw/grids/<name>
    results_dir: results/reduced_cpu             # default: results/<name>
    overrides: [optim.steps=3000, ...]   # any hydra overrides of the recipe
    split_by: []                    # optional: config keys whose values get their own columns

Relative paths (in the grid file and on the command line) are relative to the
current directory, where the recipe also runs. The command it runs is::

    python recipes/tabb_offline.py -m env=<tasks> algo=<algos> seed=<seeds> \\
        hydra.sweep.dir=<sweep_dir> [hydra/launcher=<launcher>] <overrides>

The launchers are hydra's basic one (``null``: one run after the other, in this
process), ``local`` (hydra-submitit-launcher on this machine: one job per run, all
at once) and ``slurm`` (the same jobs on a SLURM cluster); the configs are in
``recipes/config/hydra/launcher/``. A grid checked with ``--launcher local`` runs
on a cluster with ``--launcher slurm`` and nothing else changed.

The aggregation is :func:`tabb_torchrl.results.write_report` (the same as
``python -m tabb_torchrl.results <sweep_dir> --out <results_dir>``): ``table.md``
(mean ± std over seeds per task of the final and of the best normalised target
score; IQM, median and mean over tasks and seeds with stratified-bootstrap 95 %
confidence intervals), ``table.tex``, ``table.csv``, ``aggregate.csv`` /
``.tex``, ``curve_<task>.png``, ``aggregate.png`` and ``profile.png``.

A cell never mixes runs of different settings: when the runs of one
(task, algorithm) differ in a setting besides the seed (say two values of
``loss.tau`` in one sweep folder), the aggregation stops with status 2 and names
the keys; ``--split-by loss.tau`` (or ``split_by`` in the grid file) gives each
value its own column.

Exit status: 0; 1 when some runs failed (the tables of the finished ones are
written); 2 when there is nothing to aggregate or a cell would mix settings.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load_grid(path: str | Path) -> dict:
    """Read and check a grid YAML."""
    grid = yaml.safe_load(Path(path).read_text())
    for key in ("name", "tasks", "algos", "seeds"):
        if not grid.get(key):
            raise SystemExit(f"{path}: the grid needs a non-empty '{key}' entry.")
    grid.setdefault("launcher", None)
    grid.setdefault("overrides", [])
    grid.setdefault("split_by", [])
    grid.setdefault("sweep_dir", f"results/raw/grids/{grid['name']}")
    grid.setdefault("results_dir", f"results/{grid['name']}")
    return grid


def hydra_command(grid: dict, extra: list[str] | None = None) -> list[str]:
    """The ``python recipes/tabb_offline.py -m ...`` command of a grid."""
    join = lambda xs: ",".join(str(x) for x in xs)  # noqa: E731
    cmd = [
        sys.executable, str(REPO / "recipes" / "tabb_offline.py"), "-m",
        f"env={join(grid['tasks'])}", f"algo={join(grid['algos'])}", f"seed={join(grid['seeds'])}",
        f"hydra.sweep.dir={grid['sweep_dir']}",
    ]
    if grid.get("launcher") and grid["launcher"] != "basic":
        cmd.append(f"hydra/launcher={grid['launcher']}")
    cmd += [str(o) for o in grid["overrides"]]
    cmd += list(extra or [])
    return cmd


def aggregate_grid(grid: dict) -> str:
    """Aggregate the grid's summaries into ``results_dir``; returns the markdown of ``table.md``."""
    from tabb_torchrl.results import ResultsError, collect_summaries, write_report

    sweep = Path(grid["sweep_dir"])
    runs = collect_summaries(sweep) if sweep.exists() else []
    if not runs:
        print(f"error: no summary.json under {sweep}: run the grid first (without --aggregate-only), or pass "
              "--sweep-dir where it ran.", file=sys.stderr)
        sys.exit(2)
    out = Path(grid["results_dir"])
    try:
        md = write_report(runs, out, algos=grid["algos"], split_by=list(grid.get("split_by") or []),
                          title=f"{grid['name']} grid")
    except ResultsError as err:
        print(f"error: {sweep}: {err}", file=sys.stderr)
        sys.exit(2)
    print(md)
    print(f"\n{len(runs)} runs; tables and figures in {out}")
    return md


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Run and aggregate a TABB results grid (hydra multirun).")
    p.add_argument("grid", help="grid YAML (recipes/grids/*.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the hydra command and stop")
    p.add_argument("--aggregate-only", action="store_true", help="only aggregate existing summaries")
    p.add_argument("--launcher", default=None, help="override the grid's launcher (basic | local | slurm)")
    p.add_argument("--seeds", default=None, help="override the seeds, e.g. 0,1")
    p.add_argument("--sweep-dir", default=None, help="override the grid's sweep_dir")
    p.add_argument("--results-dir", default=None, help="override the grid's results_dir")
    p.add_argument("--extra", nargs="*", default=[], help="extra hydra overrides")
    p.add_argument("--split-by", nargs="*", default=None, metavar="KEY",
                   help="config keys whose values get their own columns (e.g. loss.tau)")
    args = p.parse_args(argv)
    grid = load_grid(args.grid)
    if args.launcher:
        grid["launcher"] = None if args.launcher == "basic" else args.launcher
    if args.seeds:
        grid["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.sweep_dir:
        grid["sweep_dir"] = args.sweep_dir
    if args.results_dir:
        grid["results_dir"] = args.results_dir
    if args.split_by is not None:
        grid["split_by"] = args.split_by
    cmd = hydra_command(grid, args.extra)
    n_runs = len(grid["tasks"]) * len(grid["algos"]) * len(grid["seeds"])
    print(f"grid {grid['name']}: {n_runs} runs")
    print(" ".join(shlex.quote(c) for c in cmd))
    if args.dry_run:
        return
    rc = 0
    if not args.aggregate_only:
        t0 = time.time()
        rc = subprocess.call(cmd)
        print(f"multirun finished with status {rc} in {(time.time() - t0) / 60:.1f} min")
        if rc != 0:
            print("Some runs failed; aggregating the summaries that exist.", file=sys.stderr)
    aggregate_grid(grid)
    if rc != 0:
        sys.exit(1)  # the tables are written, but a script or CI sees that runs failed


if __name__ == "__main__":
    main()
