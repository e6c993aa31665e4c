"""The end-of-run summary: ``summary.json``, a printed table and the learning curve.

``summary.json`` keys (all JSON scalars unless noted):

===========================  ==========================================================
``algo``                     ``tabb`` / ``iql_mixed`` / ``iql_target`` / ``src_actor``
``env``                      target env id (evaluation env)
``source_env``               source env id (``null`` for target-only runs)
``seed``                     run seed
``normalized_score``         mean D4RL normalised score of the final evaluation
``normalized_score_std``     its standard deviation over the evaluation episodes
``best_normalized_score``    best mean normalised score over all evaluations
``best_step``                RL step of that evaluation
``raw_return``               mean raw return of the final evaluation
``raw_return_std``           its standard deviation over the episodes
``eval_episodes``            episodes per evaluation
``reference``                reference returns used (``odrl`` / ``ours``)
``steps``                    RL gradient steps done
``pretrain_steps``           ``{"stage1": int, "stage2": int}`` steps done
``wall_time_s``              wall-clock seconds over all sessions of the run
``updates_per_s``            RL updates per second (update time only)
``device``                   torch device of the run
``config_hash``              hash of the configuration (resume / sweeps)
``run_name``, ``run_dir``    CORL-style name ``<algo>_<env>_seed<seed>`` and folder
``history``                  list of evaluations ``{step, normalized_score, ...}``
===========================  ==========================================================
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

# ``write_json_atomic`` is the library's one JSON writer (strict JSON, fsync), re-exported here
# and from :mod:`tabb_torchrl.pipeline` for the callers that import it from the pipeline.
from tabb_torchrl.io import atomic_path, write_json_atomic

__all__ = [
    "SUMMARY_KEYS",
    "build_summary",
    "format_summary_table",
    "plot_learning_curve",
    "write_json_atomic",
]

#: Keys every ``summary.json`` has.
SUMMARY_KEYS = (
    "algo",
    "env",
    "source_env",
    "seed",
    "normalized_score",
    "normalized_score_std",
    "best_normalized_score",
    "best_step",
    "raw_return",
    "raw_return_std",
    "eval_episodes",
    "reference",
    "steps",
    "pretrain_steps",
    "wall_time_s",
    "updates_per_s",
    "device",
    "config_hash",
    "run_name",
    "run_dir",
    "history",
)


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def build_summary(
    *,
    history: Sequence[Mapping[str, Any]],
    algo: str,
    env: str,
    source_env: str | None,
    seed: int,
    eval_episodes: int,
    reference: str,
    steps: int,
    pretrain_steps: Mapping[str, int],
    wall_time_s: float,
    updates_per_s: float | None,
    device: str,
    config_hash: str,
    run_name: str,
    run_dir: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the summary dictionary from the evaluation history.

    The final evaluation is the last entry of ``history`` (the recipe always
    evaluates after the last step); the best is the entry with the highest mean
    normalised score.

    Examples:
        >>> h = [{"step": 10, "normalized_score": 5.0, "normalized_score_std": 1.0,
        ...       "return_mean": 150.0, "return_std": 30.0},
        ...      {"step": 20, "normalized_score": 4.0, "normalized_score_std": 2.0,
        ...       "return_mean": 120.0, "return_std": 60.0}]
        >>> s = build_summary(history=h, algo="tabb", env="tabb/Hopper-morph-v0",
        ...     source_env="Hopper-v5", seed=0, eval_episodes=10, reference="odrl",
        ...     steps=20, pretrain_steps={"stage1": 5, "stage2": 5}, wall_time_s=1.0,
        ...     updates_per_s=100.0, device="cpu", config_hash="abc", run_name="r", run_dir=".")
        >>> s["normalized_score"], s["best_normalized_score"], s["best_step"]
        (4.0, 5.0, 10)
    """
    if history:
        final = history[-1]
        best = max(history, key=lambda h: h["normalized_score"])
        final_vals = dict(
            normalized_score=float(final["normalized_score"]),
            normalized_score_std=float(final["normalized_score_std"]),
            best_normalized_score=float(best["normalized_score"]),
            best_step=int(best["step"]),
            raw_return=float(final["return_mean"]),
            raw_return_std=float(final["return_std"]),
        )
    else:
        final_vals = dict(
            normalized_score=None,
            normalized_score_std=None,
            best_normalized_score=None,
            best_step=None,
            raw_return=None,
            raw_return_std=None,
        )
    summary = dict(
        algo=algo,
        env=env,
        source_env=source_env,
        seed=int(seed),
        **final_vals,
        eval_episodes=int(eval_episodes),
        reference=reference,
        steps=int(steps),
        pretrain_steps={k: int(v) for k, v in pretrain_steps.items()},
        wall_time_s=float(wall_time_s),
        updates_per_s=_nan_to_none(updates_per_s),
        device=str(device),
        config_hash=config_hash,
        run_name=run_name,
        run_dir=str(run_dir),
        history=[dict(h) for h in history],
    )
    if extra:
        summary.update(extra)
    return summary


def format_summary_table(summary: Mapping[str, Any]) -> str:
    """A two-column text table of the main summary entries (:func:`tabulate.tabulate`, ``outline`` format).

    Examples:
        >>> print(format_summary_table({"algo": "tabb", "normalized_score": 12.345,
        ...                             "normalized_score_std": 1.0}))
        +------------------+--------------+
        | algo             | tabb         |
        | normalized_score | 12.35 ± 1.00 |
        +------------------+--------------+
    """
    from tabulate import tabulate

    rows = []
    for key in (
        "algo",
        "env",
        "source_env",
        "seed",
        "normalized_score",
        "best_normalized_score",
        "best_step",
        "raw_return",
        "steps",
        "pretrain_steps",
        "wall_time_s",
        "updates_per_s",
        "device",
        "config_hash",
        "run_dir",
    ):
        if key not in summary:
            continue
        value = summary[key]
        if key == "normalized_score" and value is not None:
            text = f"{value:.2f} ± {summary.get('normalized_score_std') or 0.0:.2f}"
        elif key == "raw_return" and value is not None:
            text = f"{value:.1f} ± {summary.get('raw_return_std') or 0.0:.1f}"
        elif key == "pretrain_steps" and isinstance(value, Mapping):
            text = " / ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, float):
            text = f"{value:.2f}"
        else:
            text = str(value)
        rows.append((key, text))
    return tabulate(rows, tablefmt="outline", disable_numparse=True)


def plot_learning_curve(
    history: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = ""
) -> None:
    """Plot the mean normalised score (± std over episodes) against the RL step (PNG).

    Uses matplotlib's ``Agg`` backend (no display needed).

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "curve.png")
        >>> plot_learning_curve([{"step": 1, "normalized_score": 3.0, "normalized_score_std": 1.0},
        ...                      {"step": 2, "normalized_score": 5.0, "normalized_score_std": 1.0}], p)
        >>> os.path.getsize(p) > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([h["step"] for h in history], dtype=float)
    mean = np.array([h["normalized_score"] for h in history], dtype=float)
    std = np.array([h["normalized_score_std"] for h in history], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, mean, marker="o", markersize=3)
    ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("RL gradient step")
    ax.set_ylabel("normalised score (target env)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
