"""Diagnostics of cross-domain runs: does TBM find the source transitions whose backup is wrong in the
target domain (TABB, Liu & Long, arXiv 2605.22376, Sec. 5.5, Fig. 3), and does the source data count?

The oracle (:mod:`~tabb_torchrl.diagnostic.replay`): a source transition ``(s, a, r, s', d)`` is
replayed once in the **target** env from the simulator state ``s`` describes
(:func:`replay_transitions`), which gives the true target outcome ``(r_T, s'_T, d_T)``; with the run's
``f`` and ``V`` the oracle target Bellman error of the realised target is
:func:`oracle_bellman_error`.

* Figure 3 of the paper: rank the transitions by a score -- TBM (Eq. 5) or OTDF's transport cost
  (:func:`ot_transition_scores`) -- into percentile groups (:func:`percentile_groups`), take the mean
  oracle error per group (:func:`group_means`, :func:`score_curve`) and Spearman's rho of group rank
  vs mean error (:func:`spearman`); per row, the same rho over single transitions.
* The source diagnostic (:mod:`~tabb_torchrl.diagnostic.source`, :func:`source_diagnostic`): the
  true error of each kind of source-row target (aligned, realised, gated, the run's own; TBM-weighted),
  TBM's rank correlation with the realised target's true error per row and over deciles, the
  predictor ``h``'s errors on target and source rows, the seed-to-seed rank correlation of the
  advantages on the target data, and the run's actor against behaviour cloning.

The command-line entry point is ``recipes/tbm_diagnostic.py``; a run is read with :func:`load_run`.
"""
from tabb_torchrl.diagnostic.ot import ot_transition_scores
from tabb_torchrl.diagnostic.plots import plot_diagnostic, plot_source_report
from tabb_torchrl.diagnostic.replay import (
    REPLAYABLE_ENVS,
    ReplayError,
    check_replayable,
    clipped_rows,
    oracle_bellman_error,
    replay_transitions,
)
from tabb_torchrl.diagnostic.run import DiagnosticError, LoadedRun, load_run, load_run_data, value_of_observations
from tabb_torchrl.diagnostic.source import (
    SourceTargets,
    awr_vs_bc,
    fit_bc_actor,
    predictor_errors,
    report_markdown,
    sample_source_rows,
    source_diagnostic,
    source_target_errors,
    target_advantages,
)
from tabb_torchrl.diagnostic.stats import (
    GroupCurve,
    group_means,
    percentile_groups,
    rankdata,
    score_curve,
    spearman,
)

__all__ = [
    "rankdata",
    "spearman",
    "percentile_groups",
    "group_means",
    "GroupCurve",
    "score_curve",
    "replay_transitions",
    "oracle_bellman_error",
    "clipped_rows",
    "check_replayable",
    "ReplayError",
    "REPLAYABLE_ENVS",
    "ot_transition_scores",
    "plot_diagnostic",
    "plot_source_report",
    "value_of_observations",
    "DiagnosticError",
    "LoadedRun",
    "load_run",
    "load_run_data",
    "SourceTargets",
    "sample_source_rows",
    "source_target_errors",
    "predictor_errors",
    "target_advantages",
    "fit_bc_actor",
    "awr_vs_bc",
    "source_diagnostic",
    "report_markdown",
]
