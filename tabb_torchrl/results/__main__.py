"""Aggregate a sweep: ``python -m tabb_torchrl.results <sweep dir> [--out DIR] [--metric KEY] [--split-by KEY ...]``.

Reads every ``summary.json`` under the sweep folder(s) (a hydra multirun
folder, a ``run_grid.py`` sweep, or any folder of runs) and writes the tables
and figures of :func:`tabb_torchrl.results.write_report` into ``--out``
(default: ``<sweep dir>/report``). Exit status 2, with a message naming the
problem and the fix, when there is nothing to aggregate or a cell would mix
runs of different settings.

Examples::

    python -m tabb_torchrl.results results/raw/grids/reduced_cpu
    python -m tabb_torchrl.results multirun/2026-01-01/12-00-00 --out results/my_sweep --split-by loss.tau
    python -m tabb_torchrl.results sweep_a sweep_b --out results/both --metric best_normalized_score
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, write the report, print ``table.md``; return the exit status (0, or 2 on bad input)."""
    from tabb_torchrl.results import ResultsError, collect_summaries, write_report

    p = argparse.ArgumentParser(
        prog="python -m tabb_torchrl.results",
        description="Aggregate the summary.json files of a sweep into tables (mean ± std per task; IQM, median "
                    "and mean over tasks with stratified-bootstrap 95% confidence intervals) and figures "
                    "(learning curves per task, interval estimates, performance profile).",
    )
    p.add_argument("sweep", nargs="+", help="sweep folder(s) searched recursively for summary.json, or summary files")
    p.add_argument("--out", default=None, help="output folder (default: <sweep dir>/report; required with several)")
    p.add_argument("--metric", default="normalized_score", help="summary key to report (default: normalized_score)")
    p.add_argument("--split-by", nargs="*", default=[], metavar="KEY",
                   help="config keys whose values get their own columns (e.g. loss.tau)")
    p.add_argument("--algos", nargs="*", default=None, metavar="ALGO", help="algorithms to report, in this order")
    p.add_argument("--title", default=None, help="heading of table.md and caption of the LaTeX tables")
    p.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    p.add_argument("--confidence", type=float, default=0.95, help="coverage of the intervals (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    args = p.parse_args(argv)

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    missing = [s for s in args.sweep if not Path(s).exists()]
    if missing:
        return fail(f"{', '.join(missing)}: no such file or folder. Fix: pass the sweep folder (the hydra.sweep.dir "
                    "of the multirun, or run_grid.py's sweep_dir) of finished runs.")
    if args.out is None and len(args.sweep) > 1:
        return fail("several sweeps given and no --out. Fix: choose the output folder with --out DIR.")
    out = Path(args.out) if args.out else Path(args.sweep[0]) / "report"
    runs = collect_summaries(args.sweep)
    if not runs:
        return fail(f"no summary.json under {', '.join(args.sweep)}. Fix: pass the folder the runs wrote into "
                    "(hydra.sweep.dir, or the run_dir of single runs); a run writes summary.json when it ends.")
    try:
        text = write_report(runs, out, metric=args.metric, algos=args.algos, split_by=args.split_by,
                            title=args.title, reps=args.reps, confidence=args.confidence, seed=args.seed)
    except (ResultsError, ValueError) as err:
        return fail(str(err))
    print(text)
    print(f"\n{len(runs)} runs; tables and figures in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
