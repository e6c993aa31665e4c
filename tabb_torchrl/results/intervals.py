"""Scores aggregated over tasks and seeds: IQM, median and mean with stratified-bootstrap confidence intervals.

The estimators and the bootstrap are those of Agarwal et al., "Deep
Reinforcement Learning at the Edge of the Statistical Precipice" (NeurIPS 2021)
and their ``rliable`` library:

* **IQM**, the interquartile mean: the mean of the middle 50 % of all runs of
  all tasks (``scipy.stats.trim_mean(scores, 0.25)`` over the pooled runs, as
  ``rliable.metrics.aggregate_iqm``);
* **Median** and **Mean** of the per-task means over seeds
  (``rliable.metrics.aggregate_median`` / ``aggregate_mean``);
* the **performance profile**: the fraction of runs (all tasks pooled) whose
  score is above a threshold ``tau``, for a grid of thresholds
  (``rliable.library.create_performance_profile``'s score distribution);
* **confidence intervals** by the stratified bootstrap: each resample draws the
  runs of every task with replacement, within that task (``rliable``'s
  ``StratifiedBootstrap`` over runs), and the interval is the percentile
  interval of the statistic over the resamples.

The bootstrap is ``scipy.stats.bootstrap`` with one sample per task (scipy
resamples each sample on its own, which is the stratified scheme) and a seeded
generator, so a report is reproducible. ``rliable.library`` itself is not used:
its ``arch`` dependency does not import with pandas 3 (arch 7) or rejects the
``random_state`` argument rliable passes (arch 8), and its resampling draws from
numpy's global generator.

Scores are aggregated on the tasks that every algorithm of the table has (the
others are named in :attr:`AggregateScores.notes`): an aggregate over different
task sets does not compare algorithms. The metric should be normalised (the
default ``normalized_score``, 0 = random, 100 = expert), or tasks with large
returns dominate.

With one seed per task there is nothing to resample within a task: the point
estimates are reported and the intervals are ``nan``, with a note saying so.

Examples:
    >>> from tabb_torchrl.results import aggregate, aggregate_scores
    >>> runs = [{"algo": "tabb", "env": f"{task}-v0", "seed": s, "normalized_score": x}
    ...         for task, xs in (("A", [0.0, 10.0, 20.0, 30.0]), ("B", [40.0, 50.0, 60.0, 70.0]))
    ...         for s, x in enumerate(xs)]
    >>> est = aggregate_scores(aggregate(runs), reps=1000).estimates["tabb"]
    >>> est["IQM"].point, est["Mean"].point  # IQM: mean of 20, 30, 40, 50
    (35.0, 35.0)
    >>> est["IQM"].low <= 35.0 <= est["IQM"].high
    True
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tabb_torchrl.results.table import ResultsError, ResultTable

__all__ = ["STATISTICS", "Interval", "AggregateScores", "aggregate_scores", "PerformanceProfile", "performance_profile"]

#: The aggregate statistics, in report order.
STATISTICS = ("IQM", "Median", "Mean")


def _iqm(samples: Sequence[np.ndarray], axis: int = -1) -> np.ndarray:
    """Interquartile mean of all runs of all tasks pooled (``rliable.metrics.aggregate_iqm``)."""
    from scipy.stats import trim_mean

    return trim_mean(np.concatenate(samples, axis=axis), proportiontocut=0.25, axis=axis)


def _task_means(samples: Sequence[np.ndarray], axis: int = -1) -> np.ndarray:
    return np.stack([np.mean(s, axis=axis) for s in samples], axis=0)


def _statistics(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """``[IQM, Median, Mean]`` of per-task samples (batched along the leading axes, runs along ``axis``)."""
    means = _task_means(samples, axis)
    return np.stack([_iqm(samples, axis), np.median(means, axis=0), np.mean(means, axis=0)])


def _profile(taus: np.ndarray):
    """Fraction of the pooled runs with a score above each ``tau`` (rliable's run-score distribution)."""

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        pooled = np.moveaxis(np.concatenate(samples, axis=axis), axis, -1)
        frac = (pooled[..., None] > taus).mean(axis=-2)  # [..., n_taus]
        return np.moveaxis(frac, -1, 0)

    return statistic


def _bootstrap(samples: list[np.ndarray], statistic, reps: int, confidence: float, seed: int):
    """Percentile interval of ``statistic`` under the stratified bootstrap (runs resampled within each task)."""
    from scipy.stats import bootstrap

    res = bootstrap(tuple(samples), statistic, n_resamples=reps, confidence_level=confidence,
                    method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return np.asarray(res.confidence_interval.low), np.asarray(res.confidence_interval.high)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval (``nan`` bounds when there is none).

    Examples:
        >>> Interval(35.0, 30.0, 41.5).format()
        '35.0 [30.0, 41.5]'
        >>> Interval(35.0, math.nan, math.nan).format()
        '35.0 [n/a]'
    """

    point: float
    low: float
    high: float

    def format(self, digits: int = 1) -> str:
        """``"point [low, high]"`` (``[n/a]`` without an interval)."""
        if math.isnan(self.low):
            return f"{self.point:.{digits}f} [n/a]"
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _score_samples(table: ResultTable) -> tuple[list[str], dict[str, list[np.ndarray]], list[str]]:
    """The tasks every algorithm has, each algorithm's scores per task, and notes on what was left out."""
    have = {a: [t for t in table.tasks if table.cell(t, a).n] for a in table.algos}
    algos = [a for a in table.algos if have[a]]
    if not algos:
        raise ResultsError(f"No {table.metric} value in the table: there is nothing to aggregate. Fix: check that "
                           f"the runs finished and that their summary.json has '{table.metric}'.")
    tasks = [t for t in table.tasks if all(table.cell(t, a).n for a in algos)]
    if not tasks:
        listing = "; ".join(f"{a}: {', '.join(have[a])}" for a in algos)
        raise ResultsError(
            f"No task has runs of every algorithm ({listing}), so an aggregate over tasks would compare different "
            "task sets. Fix: aggregate the algorithms that share tasks on their own (algos=[...] in aggregate(), "
            "--algos on the command line), or complete the missing runs."
        )
    notes = []
    left_out = [t for t in table.tasks if t not in tasks]
    if left_out:
        notes.append(f"Left out of the aggregate (not run by every algorithm): {', '.join(left_out)}.")
    samples = {a: [np.asarray(table.cell(t, a).values, dtype=float) for t in tasks] for a in algos}
    for a in algos:
        counts = sorted({len(s) for s in samples[a]})
        if len(counts) > 1:
            notes.append(f"{a}: unequal numbers of seeds per task ({', '.join(map(str, counts))}); the IQM and the "
                         "profile pool all runs, so tasks with more seeds weigh more.")
    single = [a for a in algos if min(len(s) for s in samples[a]) < 2]
    if single:
        notes.append(f"{', '.join(single)}: a task with a single seed, so no bootstrap confidence interval (the "
                     "stratified bootstrap resamples the seeds of each task; it needs at least 2 per task).")
    return tasks, samples, notes


@dataclass
class AggregateScores:
    """IQM, median and mean over tasks and seeds per algorithm, with stratified-bootstrap intervals.

    Attributes:
        metric (str): the summary key aggregated.
        tasks (list of str): the tasks aggregated (those every algorithm has).
        algos (list of str): the algorithms, in table order.
        estimates (dict): ``estimates[algo][statistic]`` is an :class:`Interval`
            (statistics in :data:`STATISTICS`).
        runs (dict): number of runs aggregated per algorithm.
        confidence (float): coverage of the intervals (``0.95``).
        reps (int): bootstrap resamples.
        notes (list of str): what was left out or could not be estimated.

    Examples:
        >>> from tabb_torchrl.results import aggregate
        >>> runs = [{"algo": "a", "env": "E-v0", "seed": s, "normalized_score": float(s)} for s in range(4)]
        >>> print(aggregate_scores(aggregate(runs), reps=1000).to_markdown())
        | algorithm | IQM | Median | Mean | runs |
        |---|---|---|---|---|
        | a | 1.5 [...] | 1.5 [...] | 1.5 [...] | 4 |
    """

    metric: str
    tasks: list[str]
    algos: list[str]
    estimates: dict[str, dict[str, Interval]]
    runs: dict[str, int]
    confidence: float = 0.95
    reps: int = 2000
    notes: list[str] = field(default_factory=list)

    def to_markdown(self, digits: int = 1) -> str:
        """One row per algorithm: ``point [low, high]`` per statistic and the number of runs."""
        lines = ["| algorithm | " + " | ".join(STATISTICS) + " | runs |", "|---|" + "---|" * (len(STATISTICS) + 1)]
        for a in self.algos:
            cells = [self.estimates[a][s].format(digits) for s in STATISTICS]
            lines.append(f"| {a} | " + " | ".join(cells) + f" | {self.runs[a]} |")
        return "\n".join(lines)

    def to_frame(self):
        """A :class:`pandas.DataFrame` with one row per ``(algorithm, statistic)``: point, low, high, runs."""
        import pandas as pd

        rows = [{"algo": a, "statistic": s, "point": e.point, "low": e.low, "high": e.high, "runs": self.runs[a],
                 "tasks": len(self.tasks)} for a in self.algos for s, e in self.estimates[a].items()]
        return pd.DataFrame(rows, columns=["algo", "statistic", "point", "low", "high", "runs", "tasks"])

    def to_csv(self) -> str:
        """The rows of :meth:`to_frame` as CSV (4 decimals; empty bounds without an interval)."""
        return self.to_frame().to_csv(index=False, float_format="%.4f", lineterminator="\n").rstrip("\n")

    def to_latex(self, digits: int = 1, caption: str | None = None) -> str:
        """A booktabs ``tabular``: one row per algorithm, ``point [low, high]`` per statistic."""
        from tabb_torchrl.results.table import _latex_escape

        rows = [f"{_latex_escape(a)} & " + " & ".join(self.estimates[a][s].format(digits) for s in STATISTICS)
                + r" \\" for a in self.algos]
        pct = f"{100 * self.confidence:g}"
        body = [r"\begin{tabular}{l" + "c" * len(STATISTICS) + "}", r"\toprule",
                "algorithm & " + " & ".join(STATISTICS) + r" \\", r"\midrule", *rows, r"\bottomrule", r"\end{tabular}"]
        if caption is not None:
            caption = f"{caption} (point estimate [{pct}\\% stratified-bootstrap confidence interval])"
            body = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", *body, r"\end{table}"]
        return "\n".join(body)


def aggregate_scores(table: ResultTable, *, reps: int = 2000, confidence: float = 0.95,
                     seed: int = 0) -> AggregateScores:
    """IQM, median and mean of ``table``'s metric over tasks and seeds per algorithm, with bootstrap intervals.

    Args:
        table (ResultTable): from :func:`~tabb_torchrl.results.aggregate` (its
            cells hold one value per seed).

    Keyword Args:
        reps (int): bootstrap resamples. Defaults to ``2000``.
        confidence (float): coverage of the intervals. Defaults to ``0.95``.
        seed (int): seed of the bootstrap generator (a report is reproducible).

    Returns:
        AggregateScores: the estimates; tasks not run by every algorithm and
        algorithms without an interval are named in its ``notes``.

    Raises:
        ResultsError: the table has no value, or no task is shared by every
            algorithm.

    Examples:
        >>> from tabb_torchrl.results import aggregate
        >>> runs = [{"algo": "a", "env": f"{t}-v0", "seed": 0, "normalized_score": x}
        ...         for t, x in (("A", 10.0), ("B", 30.0))]
        >>> agg = aggregate_scores(aggregate(runs))
        >>> agg.estimates["a"]["Mean"].format(), agg.notes
        ('20.0 [n/a]', ['a: a task with a single seed, so no bootstrap confidence interval (...).'])
    """
    if reps < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"aggregate_scores needs reps >= 1 and 0 < confidence < 1, got reps={reps}, "
                         f"confidence={confidence}.")
    tasks, samples, notes = _score_samples(table)
    estimates, runs = {}, {}
    for a, per_task in samples.items():
        point = _statistics(*per_task)
        if min(len(s) for s in per_task) >= 2:
            low, high = _bootstrap(per_task, _statistics, reps, confidence, seed)
        else:
            low = high = np.full(len(STATISTICS), np.nan)
        estimates[a] = {s: Interval(float(point[i]), float(low[i]), float(high[i])) for i, s in enumerate(STATISTICS)}
        runs[a] = sum(len(s) for s in per_task)
    return AggregateScores(table.metric, tasks, list(samples), estimates, runs, confidence, reps, notes)


@dataclass
class PerformanceProfile:
    """Fraction of runs with a score above each threshold, per algorithm, with bootstrap bands.

    Attributes:
        metric (str): the summary key.
        taus (numpy.ndarray): the thresholds.
        fractions (dict): ``fractions[algo]`` is the fraction of runs above each tau.
        low (dict), high (dict): the confidence band (``nan`` without one).
        tasks (list of str): the tasks pooled.
        notes (list of str): as for :class:`AggregateScores`.

    Examples:
        >>> import numpy as np
        >>> p = PerformanceProfile("normalized_score", np.array([0.0, 50.0]), {"a": np.array([1.0, 0.5])},
        ...                        {"a": np.array([1.0, 0.25])}, {"a": np.array([1.0, 0.75])}, ["E"])
        >>> p.fractions["a"].tolist()
        [1.0, 0.5]
    """

    metric: str
    taus: np.ndarray
    fractions: dict[str, np.ndarray]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    tasks: list[str]
    notes: list[str] = field(default_factory=list)


def performance_profile(table: ResultTable, taus: Sequence[float] | None = None, *, reps: int = 2000,
                        confidence: float = 0.95, seed: int = 0) -> PerformanceProfile:
    """The performance profile (run-score distribution) of every algorithm over the shared tasks.

    Args:
        table (ResultTable): from :func:`~tabb_torchrl.results.aggregate`.
        taus (sequence of float, optional): thresholds; by default 101 points
            from 0 (or the lowest score, when negative) to the highest score.

    Keyword Args:
        reps, confidence, seed: as for :func:`aggregate_scores`.

    Returns:
        PerformanceProfile: fraction of runs with a score strictly above each tau.

    Raises:
        ResultsError: as for :func:`aggregate_scores`.

    Examples:
        >>> from tabb_torchrl.results import aggregate
        >>> runs = [{"algo": "a", "env": "E-v0", "seed": s, "normalized_score": x}
        ...         for s, x in enumerate([10.0, 20.0, 30.0, 40.0])]
        >>> performance_profile(aggregate(runs), [0.0, 25.0, 40.0], reps=500).fractions["a"].tolist()
        [1.0, 0.5, 0.0]
    """
    tasks, samples, notes = _score_samples(table)
    if taus is None:
        pooled = np.concatenate([np.concatenate(s) for s in samples.values()])
        taus = np.linspace(min(0.0, pooled.min()), pooled.max(), 101)
    taus = np.asarray(taus, dtype=float)
    statistic = _profile(taus)
    fractions, low, high = {}, {}, {}
    for a, per_task in samples.items():
        fractions[a] = statistic(*per_task)
        if min(len(s) for s in per_task) >= 2:
            low[a], high[a] = _bootstrap(per_task, statistic, reps, confidence, seed)
        else:
            low[a] = high[a] = np.full(len(taus), np.nan)
    return PerformanceProfile(table.metric, taus, fractions, low, high, tasks, notes)
