"""Figures of the diagnostic (PNG, written atomically)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from tabb_torchrl.diagnostic.stats import GroupCurve

__all__ = ["plot_diagnostic", "plot_source_report"]


def _savefig(fig, path: Any) -> None:
    import matplotlib.pyplot as plt

    from tabb_torchrl.io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _curve_panel(ax, c: GroupCurve, ylabel: str) -> None:
    k = len(c.means)
    ax.bar(np.arange(1, k + 1), c.means, color="tab:blue" if "TBM" in c.name else "tab:orange")
    ax.set_xticks(np.arange(1, k + 1))
    ax.set_xlabel(f"{c.name} percentile group (1 = lowest)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{c.name}: rho = {c.rho:.2f} (groups), {c.rho_items:.2f} (rows)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")


def plot_diagnostic(curves: list[GroupCurve], path: Any, title: str = "") -> None:
    """Bar plot of the mean oracle error per percentile group, one panel per score (PNG).

    Examples:
        >>> import os, tempfile
        >>> from tabb_torchrl.diagnostic import score_curve
        >>> p = os.path.join(tempfile.mkdtemp(), "d.png")
        >>> plot_diagnostic([score_curve("s", [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], n_groups=2)], p)
        >>> os.path.getsize(p) > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, c in zip(axes[0], curves):
        _curve_panel(ax, c, "mean oracle target Bellman error")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _savefig(fig, path)


def plot_source_report(curves: list[GroupCurve], target_errors: Mapping[str, float], path: Any,
                       title: str = "") -> None:
    """The source diagnostic's figure: the mean true error of each source-target kind, then one panel per score curve.

    Args:
        curves: :class:`GroupCurve` of each score against the realised target's true error.
        target_errors: ``{kind: mean true error}`` (e.g. ``aligned``, ``realised``, their
            TBM-weighted means).
        path: PNG path.
        title (str): figure title.

    Examples:
        >>> import os, tempfile
        >>> from tabb_torchrl.diagnostic import score_curve
        >>> p = os.path.join(tempfile.mkdtemp(), "r.png")
        >>> plot_source_report([score_curve("TBM", [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0], n_groups=2)],
        ...                    {"aligned": 4.5, "realised": 2.5}, p)
        >>> os.path.getsize(p) > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 1 + len(curves)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    ax = axes[0][0]
    names = list(target_errors)
    ax.bar(np.arange(len(names)), [target_errors[k] for k in names], color="tab:green")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean |source target - true target|")
    ax.set_title("source targets vs the target env", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    for ax, c in zip(axes[0][1:], curves):
        which = "aligned" if "aligned" in c.name else "realised"
        _curve_panel(ax, c, f"mean true error of the {which} target")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _savefig(fig, path)
