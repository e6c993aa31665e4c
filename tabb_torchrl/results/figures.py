"""Figures of a sweep: learning curves per task, and the aggregate interval estimates and performance profile.

The aggregate figures use ``rliable.plot_utils`` (the figures of Agarwal et al.,
NeurIPS 2021). Every figure is written atomically (:mod:`tabb_torchrl.io`).

Examples:
    >>> import tempfile
    >>> from tabb_torchrl.results import plot_learning_curves
    >>> runs = [{"algo": "tabb", "env": "E-v0", "seed": s,
    ...          "history": [{"step": 1, "normalized_score": 1.0 + s},
    ...                      {"step": 2, "normalized_score": 2.0 + s}]} for s in range(2)]
    >>> [p.name for p in plot_learning_curves(runs, tempfile.mkdtemp())]
    ['curve_E.png']
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tabb_torchrl.io import atomic_path
from tabb_torchrl.results.intervals import STATISTICS, AggregateScores, PerformanceProfile
from tabb_torchrl.results.table import _check_cells, _columns, _label, task_name

__all__ = ["plot_learning_curves", "plot_interval_estimates", "plot_performance_profile"]

_METRIC_LABELS = {"normalized_score": "normalised score (target env)",
                  "best_normalized_score": "best normalised score (target env)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 100) -> Path:
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def _curves(summaries: Sequence[Mapping[str, Any]], task: str, algo: str, split_by: Sequence[str] = (),
            metric: str = "normalized_score"):
    """Mean and std over seeds of the evaluation history, on the steps every seed has."""
    per_seed = {}
    for s in summaries:
        if task_name(str(s["env"])) != task or _label(s, split_by) != algo or not s.get("history"):
            continue
        per_seed[int(s.get("seed", 0))] = {int(h["step"]): float(h[metric]) for h in s["history"]
                                           if h.get(metric) is not None}
    per_seed = {k: v for k, v in per_seed.items() if v}
    if not per_seed:
        return None
    steps = sorted(set.intersection(*(set(h) for h in per_seed.values())))
    if not steps:
        return None
    values = np.array([[h[t] for t in steps] for h in per_seed.values()])
    return np.array(steps), values.mean(0), values.std(0), len(per_seed)


def plot_learning_curves(
    summaries: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    algos: Sequence[str] | None = None,
    prefix: str = "curve_",
    split_by: Sequence[str] = (),
    metric: str = "normalized_score",
) -> list[Path]:
    """One PNG per task: the metric vs RL step, mean ± std over seeds, one line per algorithm.

    The curves use the evaluation ``history`` of each summary, on the steps
    that every seed of an algorithm evaluated.

    Args:
        summaries: from :func:`~tabb_torchrl.results.collect_summaries`.
        out_dir: folder of the figures (created).

    Keyword Args:
        algos (sequence of str, optional): algorithms and their order.
        prefix (str): file name prefix; files are ``<prefix><task>.png``.
        split_by (sequence of str): as for :func:`~tabb_torchrl.results.aggregate` (one line per value).
        metric (str): the key of each history entry to plot. Defaults to
            ``"normalized_score"``.

    Returns:
        list of Path: the files written (tasks without a history get none).

    Raises:
        ResultsError: a line would mix runs of different settings (see :func:`~tabb_torchrl.results.aggregate`).

    Examples:
        >>> import tempfile
        >>> runs = [{"algo": "tabb", "env": "E-v0", "seed": 0,
        ...          "history": [{"step": 1, "normalized_score": 1.0}]}]
        >>> [p.name for p in plot_learning_curves(runs, tempfile.mkdtemp(), prefix="c_")]
        ['c_E.png']
    """
    plt = _pyplot()
    _check_cells(summaries, split_by)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = sorted({task_name(str(s["env"])) for s in summaries})
    algo_list = _columns(algos, {_label(s, split_by) for s in summaries})
    written = []
    for task in tasks:
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for algo in algo_list:
            curve = _curves(summaries, task, algo, split_by, metric)
            if curve is None:
                continue
            steps, mean, std, n = curve
            ax.plot(steps, mean, marker="o", markersize=3, label=f"{algo} ({n} seed{'s' if n > 1 else ''})")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("RL gradient step")
        ax.set_ylabel(_METRIC_LABELS.get(metric, metric) + ", mean ± std over seeds")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out / f"{prefix}{task}.png"))
        plt.close(fig)
    return written


def plot_interval_estimates(scores: AggregateScores, path: str | os.PathLike) -> Path:
    """IQM, median and mean per algorithm with their confidence intervals (``rliable.plot_utils``), as a PNG.

    Each row is an algorithm: the bar spans the confidence interval, the tick is
    the point estimate. Algorithms without an interval (one seed) show the tick only.

    Args:
        scores (AggregateScores): from :func:`~tabb_torchrl.results.aggregate_scores`.
        path: the PNG to write (its folder is created).

    Returns:
        Path: ``path``.

    Examples:
        >>> import os, tempfile
        >>> from tabb_torchrl.results import aggregate, aggregate_scores
        >>> runs = [{"algo": "a", "env": "E-v0", "seed": s, "normalized_score": float(s)} for s in range(3)]
        >>> p = plot_interval_estimates(aggregate_scores(aggregate(runs), reps=200),
        ...                             os.path.join(tempfile.mkdtemp(), "aggregate.png"))
        >>> p.stat().st_size > 0
        True
    """
    plt = _pyplot()
    from rliable import plot_utils

    algos = list(scores.algos)
    points, intervals = {}, {}
    for a in algos:
        est = [scores.estimates[a][s] for s in STATISTICS]
        points[a] = np.array([e.point for e in est])
        # no interval (one seed): a zero-width bar at the point estimate
        intervals[a] = np.array([[e.point if math.isnan(e.low) else e.low for e in est],
                                 [e.point if math.isnan(e.high) else e.high for e in est]])
    pct = f"{100 * scores.confidence:g}"
    row_height = max(0.6, 1.8 / len(algos))  # inches per algorithm; at least 1.8 in in all
    height = row_height * len(algos)
    fig, _ = plot_utils.plot_interval_estimates(
        points, intervals, metric_names=list(STATISTICS), algorithms=algos, row_height=row_height,
        xlabel=f"{_METRIC_LABELS.get(scores.metric, scores.metric)} ({len(scores.tasks)} "
               f"task{'s' if len(scores.tasks) > 1 else ''}; {pct}% stratified-bootstrap CIs)",
        xlabel_y_coordinate=-0.75 / height,  # 0.75 in below the axes, under the tick labels
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_performance_profile(profile: PerformanceProfile, path: str | os.PathLike) -> Path:
    """The performance profiles with their confidence bands (``rliable.plot_utils``), as a PNG.

    A curve at height ``y`` above threshold ``tau`` means a fraction ``y`` of
    the runs (all aggregated tasks and seeds) scored above ``tau``; a curve
    that lies above another everywhere dominates it.

    Args:
        profile (PerformanceProfile): from :func:`~tabb_torchrl.results.performance_profile`.
        path: the PNG to write (its folder is created).

    Returns:
        Path: ``path``.

    Examples:
        >>> import os, tempfile
        >>> from tabb_torchrl.results import aggregate, performance_profile
        >>> runs = [{"algo": "a", "env": "E-v0", "seed": s, "normalized_score": float(s)} for s in range(3)]
        >>> p = plot_performance_profile(performance_profile(aggregate(runs), reps=200),
        ...                              os.path.join(tempfile.mkdtemp(), "profile.png"))
        >>> p.stat().st_size > 0
        True
    """
    plt = _pyplot()
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(7, 4.5))
    has_band = {a: not np.isnan(profile.low[a]).any() for a in profile.fractions}
    names = {a: a if has_band[a] else f"{a} (no band: a task with one seed)" for a in profile.fractions}
    bands = {names[a]: (profile.low[a], profile.high[a]) for a in profile.fractions if has_band[a]}
    label = _METRIC_LABELS.get(profile.metric, profile.metric)
    plot_utils.plot_performance_profiles(
        {names[a]: f for a, f in profile.fractions.items()}, profile.taus, performance_profile_cis=bands, ax=ax,
        xlabel=rf"{label} ($\tau$)", ylabel=r"fraction of runs with score $> \tau$",
        labelsize="medium", ticklabelsize="medium",
    )
    ax.set_title(f"Performance profile ({len(profile.tasks)} task{'s' if len(profile.tasks) > 1 else ''})")
    ax.legend(loc="upper right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(fig, path)
    plt.close(fig)
    return path
