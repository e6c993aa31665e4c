"""Aggregation of sweeps: tables, interval estimates and figures from the ``summary.json`` of each run.

Every run of ``recipes/tabb_offline.py`` writes a ``summary.json`` (keys in
:mod:`tabb_torchrl.pipeline.summary`). This package collects them (one sweep =
many run directories, e.g. a hydra multirun folder) and reports

* per task: the mean ± standard deviation over seeds of the final normalised
  target score, as a markdown, LaTeX or CSV table (:func:`aggregate`,
  :func:`to_markdown`, :func:`to_latex`, :func:`to_csv`) and one learning-curve
  figure per task (:func:`plot_learning_curves`);
* over tasks and seeds, per algorithm: the interquartile mean (IQM), median and
  mean with stratified-bootstrap 95 % confidence intervals
  (:func:`aggregate_scores`) and the performance profile, the fraction of runs
  above each score (:func:`performance_profile`), as recommended by
  Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
  Precipice" (NeurIPS 2021, the ``rliable`` library), with their figures
  (:func:`plot_interval_estimates`, :func:`plot_performance_profile`).

:func:`write_report` writes all of it into one folder; from the command line::

    python -m tabb_torchrl.results <sweep dir> [--out DIR] [--metric normalized_score] [--split-by KEY ...]

A cell never mixes settings silently: the runs of one ``(task, algo)`` cell must
share every setting but the seed and the runtime-only ones (read from the
``config.yaml`` next to each ``summary.json``). Otherwise :func:`aggregate`
raises :class:`ResultsError` naming the differing keys; ``split_by=["loss.tau"]``
gives each value its own column (``tabb (loss.tau=0.5)``).

Examples:
    >>> from tabb_torchrl.results import aggregate, aggregate_scores, to_markdown
    >>> runs = [{"algo": "tabb", "env": "tabb/Hopper-morph-v0", "seed": s, "normalized_score": x}
    ...         for s, x in enumerate([10.0, 20.0])]
    >>> table = aggregate(runs)
    >>> print(to_markdown(table))
    | task | tabb |
    |---|---|
    | Hopper-morph | 15.0 ± 5.0 (2) |
    >>> aggregate_scores(table).estimates["tabb"]["IQM"].point
    15.0
"""
from tabb_torchrl.results.figures import plot_interval_estimates, plot_learning_curves, plot_performance_profile
from tabb_torchrl.results.intervals import (
    STATISTICS,
    AggregateScores,
    Interval,
    PerformanceProfile,
    aggregate_scores,
    performance_profile,
)
from tabb_torchrl.results.report import write_report
from tabb_torchrl.results.table import (
    ALGO_ORDER,
    CellStats,
    ResultsError,
    ResultTable,
    aggregate,
    collect_summaries,
    task_name,
    to_csv,
    to_latex,
    to_markdown,
)

__all__ = [
    "ALGO_ORDER",
    "ResultsError",
    "CellStats",
    "ResultTable",
    "task_name",
    "collect_summaries",
    "aggregate",
    "to_markdown",
    "to_latex",
    "to_csv",
    "plot_learning_curves",
    "STATISTICS",
    "Interval",
    "AggregateScores",
    "aggregate_scores",
    "PerformanceProfile",
    "performance_profile",
    "plot_interval_estimates",
    "plot_performance_profile",
    "write_report",
]
