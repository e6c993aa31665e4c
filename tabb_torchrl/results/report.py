"""One folder with every table and figure of a sweep (what ``python -m tabb_torchrl.results`` writes).

:func:`write_report` aggregates the summaries of a sweep and writes, into one folder:

========================  ==================================================================
``table.md``              per task: mean ± std over seeds (number of seeds) of the metric,
                          and of ``best_<metric>`` when the runs have it; then the aggregate
                          over tasks and seeds (IQM, median, mean with 95 % intervals) and
                          the notes (tasks left out, algorithms without an interval)
``table.csv``             per task: ``task,algo,n,mean,std,values``
``table.tex``             per task, booktabs ``tabular``, best mean in bold
``aggregate.csv``         per algorithm and statistic: point, low, high, runs, tasks
``aggregate.tex``         the aggregate as a booktabs ``tabular``
``curve_<task>.png``      the metric vs RL step per task, mean ± std over seeds
``aggregate.png``         IQM, median, mean with their intervals (``rliable.plot_utils``)
``profile.png``           the performance profiles with their bands
========================  ==================================================================

Examples:
    >>> import os, tempfile
    >>> from tabb_torchrl.results import write_report
    >>> runs = [{"algo": a, "env": "tabb/Hopper-morph-v0", "seed": s, "normalized_score": x + s}
    ...         for a, x in (("tabb", 30.0), ("iql_target", 20.0)) for s in range(3)]
    >>> out = tempfile.mkdtemp()
    >>> md = write_report(runs, out, reps=200)
    >>> sorted(os.listdir(out))
    ['aggregate.csv', 'aggregate.png', 'aggregate.tex', 'profile.png', 'table.csv', 'table.md', 'table.tex']
    >>> print(md.splitlines()[4])
    | Hopper-morph | 21.0 ± 0.8 (3) | **31.0 ± 0.8 (3)** |
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tabb_torchrl.io import write_text_atomic
from tabb_torchrl.results.figures import plot_interval_estimates, plot_learning_curves, plot_performance_profile
from tabb_torchrl.results.intervals import aggregate_scores, performance_profile
from tabb_torchrl.results.table import ResultsError, aggregate, to_csv, to_latex, to_markdown

__all__ = ["write_report"]

_NAMES = {"normalized_score": "Final normalised target score (last evaluation)",
          "best_normalized_score": "Best normalised target score over the evaluations"}


def _describe(metric: str) -> str:
    return _NAMES.get(metric, f"`{metric}`")


def write_report(
    summaries: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    metric: str = "normalized_score",
    algos: Sequence[str] | None = None,
    split_by: Sequence[str] = (),
    title: str | None = None,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> str:
    """Write the tables and figures of a sweep into ``out_dir`` (see the module docstring); return ``table.md``.

    Args:
        summaries: from :func:`~tabb_torchrl.results.collect_summaries`.
        out_dir: the folder (created; files of the same names are replaced).

    Keyword Args:
        metric (str): the summary key reported. Defaults to ``"normalized_score"``.
        algos (sequence of str, optional): algorithms and their order (default:
            every algorithm of the runs).
        split_by (sequence of str): config keys whose values get their own
            columns (see :func:`~tabb_torchrl.results.aggregate`).
        title (str, optional): the first line of ``table.md`` and the caption of the LaTeX tables.
        reps (int): bootstrap resamples. Defaults to ``2000``.
        confidence (float): coverage of the intervals. Defaults to ``0.95``.
        seed (int): seed of the bootstrap. Defaults to ``0``.

    Returns:
        str: the markdown written to ``table.md``.

    Raises:
        ResultsError: no run has ``metric``, or a cell would mix runs of
            different settings (the message names them and the fix).
    """
    table = aggregate(summaries, metric, algos=algos, split_by=split_by)
    if not table.cells:
        keys = sorted({k for s in summaries for k in s if not k.startswith("_")})
        raise ResultsError(
            f"None of the {len(summaries)} runs has a value for '{metric}' (unfinished runs have none). "
            f"Fix: wait for the runs to finish, or choose one of their keys with --metric: {', '.join(keys)}."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    caption = title or _describe(metric)
    md = [f"# {title}", ""] if title else []
    md += [f"{_describe(metric)}, mean ± std over seeds (number of seeds):", "", to_markdown(table, bold_best=True)]
    best_metric = f"best_{metric}"
    if any(s.get(best_metric) is not None for s in summaries):
        best = aggregate(summaries, best_metric, algos=algos, split_by=split_by)
        md += ["", f"{_describe(best_metric)}, mean ± std over seeds:", "", to_markdown(best, bold_best=True)]
    write_text_atomic(out / "table.csv", to_csv(table) + "\n")
    write_text_atomic(out / "table.tex", to_latex(table, caption=caption) + "\n")

    try:
        scores = aggregate_scores(table, reps=reps, confidence=confidence, seed=seed)
        profile = performance_profile(table, reps=reps, confidence=confidence, seed=seed)
    except ResultsError as err:  # e.g. no task shared by every algorithm: the per-task tables still stand
        md += ["", f"No aggregate over tasks: {err}"]
        scores = None
    if scores is not None:
        pct = f"{100 * confidence:g}"
        md += [
            "",
            f"Aggregate over {len(scores.tasks)} task(s) ({', '.join(scores.tasks)}) and their seeds: "
            f"interquartile mean (IQM), median and mean of the per-task means, each with its {pct} % "
            f"stratified-bootstrap confidence interval ({reps} resamples of the seeds within each task):",
            "",
            scores.to_markdown(),
        ]
        md += ["", *(f"* {n}" for n in scores.notes)] if scores.notes else []
        write_text_atomic(out / "aggregate.csv", scores.to_csv() + "\n")
        write_text_atomic(out / "aggregate.tex", scores.to_latex(caption=caption) + "\n")
        plot_interval_estimates(scores, out / "aggregate.png")
        plot_performance_profile(profile, out / "profile.png")
    curves = plot_learning_curves(summaries, out, algos=algos, split_by=split_by, metric=metric)
    figures = [p.name for p in curves] + (["aggregate.png", "profile.png"] if scores is not None else [])
    md += ["", "Figures: " + ", ".join(f"`{f}`" for f in figures) + "."]
    text = "\n".join(md)
    write_text_atomic(out / "table.md", text + "\n")
    return text
