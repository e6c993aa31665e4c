"""Rank statistics of the diagnostic: Spearman's rho per row and over percentile groups (deciles)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["rankdata", "spearman", "percentile_groups", "group_means", "GroupCurve", "score_curve"]


def rankdata(x: Any) -> np.ndarray:
    """Ranks ``1..n`` of the values of ``x``, ties sharing their average rank (``scipy.stats.rankdata``).

    Args:
        x: 1-D array-like.

    Returns:
        np.ndarray: float ranks.

    Examples:
        >>> rankdata([10.0, 30.0, 20.0, 20.0])
        array([1. , 4. , 2.5, 2.5])
    """
    from scipy.stats import rankdata as _rankdata

    return _rankdata(np.asarray(x, dtype=float).reshape(-1), method="average").astype(float)


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation (``scipy.stats.spearmanr``): Pearson's correlation of the average ranks.

    ``nan`` when either input is constant or has fewer than two values.

    Args:
        x: 1-D array-like.
        y: 1-D array-like of the same length.

    Returns:
        float: rho in ``[-1, 1]``.

    Raises:
        ValueError: ``x`` and ``y`` differ in length.

    Examples:
        >>> spearman([1, 2, 3, 4], [10, 20, 30, 40])
        1.0
        >>> spearman([1, 2, 3, 4], [4, 3, 2, 1])
        -1.0
        >>> round(spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]), 3)
        0.8
    """
    from scipy.stats import spearmanr

    x = np.asarray(x, dtype=float).reshape(-1)
    y = np.asarray(y, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman: x and y differ in length ({x.size} vs {y.size}).")
    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic)


def percentile_groups(scores: Any, n_groups: int = 10) -> np.ndarray:
    """Group index ``0..n_groups-1`` of each item by the percentile of its score (0 = lowest).

    Items are sorted by score (ties kept in input order) and cut into
    ``n_groups`` groups of equal size (sizes differ by at most one when
    ``n_groups`` does not divide the number of items).

    Args:
        scores: 1-D array-like.
        n_groups (int): number of groups. Defaults to ``10`` (deciles, as the paper).

    Returns:
        np.ndarray: int64 group index per item.

    Examples:
        >>> percentile_groups([0.5, 0.1, 0.9, 0.3], n_groups=2)
        array([1, 0, 1, 0])
        >>> np.bincount(percentile_groups(np.arange(25), n_groups=10))
        array([3, 2, 3, 2, 3, 2, 3, 2, 3, 2])
    """
    scores = np.asarray(scores, dtype=float).reshape(-1)
    n = scores.size
    if n_groups < 1:
        raise ValueError(f"n_groups must be >= 1, got {n_groups}.")
    if n < n_groups:
        raise ValueError(f"percentile_groups: {n} items cannot fill {n_groups} groups.")
    order = np.argsort(scores, kind="mergesort")
    groups = np.empty(n, dtype=np.int64)
    groups[order] = (np.arange(n) * n_groups) // n
    return groups


def group_means(scores: Any, values: Any, n_groups: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` in each percentile group of ``scores``, and the group sizes.

    Args:
        scores: ranking score per item (e.g. TBM).
        values: value per item (e.g. the oracle target Bellman error).
        n_groups (int): Defaults to ``10``.

    Returns:
        tuple: ``(means [n_groups], counts [n_groups])``, group 0 = lowest scores.

    Examples:
        >>> means, counts = group_means([4, 1, 3, 2], [40.0, 10.0, 30.0, 20.0], n_groups=2)
        >>> means, counts
        (array([15., 35.]), array([2, 2]))
    """
    values = np.asarray(values, dtype=float).reshape(-1)
    groups = percentile_groups(scores, n_groups)
    if values.size != groups.size:
        raise ValueError(f"group_means: {groups.size} scores but {values.size} values.")
    counts = np.bincount(groups, minlength=n_groups)
    sums = np.bincount(groups, weights=values, minlength=n_groups)
    return sums / np.maximum(counts, 1), counts


@dataclass
class GroupCurve:
    """Mean of a value per percentile group of a score, and two rank correlations.

    Attributes:
        name (str): the score (``"TBM"``, ``"OT cost"``).
        means (np.ndarray): mean value per group, group 0 = lowest score.
        counts (np.ndarray): items per group.
        rho (float): Spearman's rho of group rank vs group mean ("over deciles").
        rho_items (float): Spearman's rho of score vs value over the items ("per row").
    """

    name: str
    means: np.ndarray
    counts: np.ndarray
    rho: float
    rho_items: float

    @classmethod
    def from_dict(cls, name: str, data: dict) -> GroupCurve:
        """The curve back from :meth:`to_dict` (group sizes are not stored: 0).

        Examples:
            >>> c = score_curve("s", [1, 2, 3, 4], [1.0, 2.0, 4.0, 3.0], n_groups=2)
            >>> round(GroupCurve.from_dict("s", c.to_dict()).rho_items, 6)
            0.8
        """
        means = np.asarray(data["group_means"], dtype=float)
        return cls(name, means, np.zeros(means.size, dtype=np.int64), float(data["spearman_groups"]),
                   float(data["spearman_items"]))

    def to_dict(self) -> dict:
        """JSON-ready numbers: ``group_means``, ``spearman_groups``, ``spearman_items``.

        Examples:
            >>> round(score_curve("s", [1, 2, 3, 4], [1.0, 2.0, 4.0, 3.0], n_groups=2).to_dict()["spearman_items"], 6)
            0.8
        """
        return {"group_means": [float(x) for x in self.means], "spearman_groups": float(self.rho),
                "spearman_items": float(self.rho_items)}


def score_curve(name: str, scores: Any, errors: Any, n_groups: int = 10) -> GroupCurve:
    """The :class:`GroupCurve` of a score against a value (e.g. the oracle errors).

    The two correlations answer different questions: over the group means, whether the score
    orders the *average* value (the paper's figure 3); per row, whether it orders single
    transitions. A score can reach ``rho = 1`` over ten group means with ``rho_items``
    near 0 (a weak trend under row noise).

    Examples:
        >>> c = score_curve("toy", [1, 2, 3, 4], [1.0, 2.0, 4.0, 3.0], n_groups=2)
        >>> c.means, round(c.rho, 6), round(c.rho_items, 6)
        (array([1.5, 3.5]), 1.0, 0.8)
    """
    means, counts = group_means(scores, errors, n_groups)
    return GroupCurve(name, means, counts, spearman(np.arange(n_groups), means), spearman(scores, errors))
