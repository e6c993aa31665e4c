"""TABB offline run: cross-domain offline RL from a large source dataset and a small
target dataset (Liu & Long, "Target-Aligned Bellman Backup for Cross-domain Offline
Reinforcement Learning", arXiv 2605.22376). The method is described in the docs
(method page); the configuration is ``recipes/config/config.yaml`` and its groups.

Usage::

    python recipes/tabb_offline.py                          # TABB on Hopper-morph, ~30 min on 2 CPU cores
    python recipes/tabb_offline.py +preset=smoke            # whole pipeline in < 2 minutes (random-policy data)
    python recipes/tabb_offline.py +preset=paper            # the paper's scale (1M source transitions, 1M steps)
    python recipes/tabb_offline.py algo=iql_target          # baselines / ablations: iql_mixed, iql_target, src_actor
    python recipes/tabb_offline.py env=walker2d_kinematic data.target.quality=expert
    python recipes/tabb_offline.py -m seed=0,1,2,3,4 algo=tabb,iql_target   # local sweep
    python recipes/tabb_offline.py resume=true              # continue the latest run of this config

What it does, in order:

1. checks the configuration (unknown env / algo, batch splits larger than the
   datasets, ...) and stops with a message naming the key and the fix;
2. loads the source dataset (source env, e.g. ``Hopper-v5``) and the target
   dataset (target env, e.g. ``tabb/Hopper-morph-v0``), generating and caching them
   on first use from the shipped behaviour policies, or reading
   ``data.<source|target>.path`` (a Minari dataset id or a D4RL-style ``.hdf5``);
3. pre-trains the latent model: stage 1 (``f, g, h`` on 128 source + 128 target
   rows per batch), stage 2 (``h`` alone on the target data, 10 % held out, the
   best held-out ``h`` kept);
4. freezes ``f, g, h`` and caches the latents of every stored transition (the
   memory it takes is logged);
5. trains the critic, value and actor (the cross-domain method of ``algo.method``
   edits the source rows -- TABB: TBM weights and target-aligned targets, paper
   Eqs. 5 and 7 -- then the IQL-style losses, Eqs. 8-10), evaluating the deterministic actor in the target env
   every ``eval.every`` steps (``eval.episodes`` episodes, D4RL normalised score);
6. with ``eval.perturbations`` set (``all`` or ``[kinematic,morph]``), evaluates the final actor
   in the target env with an extra kinematic / morphology shift (:mod:`tabb_torchrl.robustness`).

The steps are the functions of :mod:`tabb_torchrl.pipeline.experiment`, which the
Python API (``tabb_torchrl.make_agent(...).fit()``) runs too; this script is their
hydra entry point.

What it prints: tqdm progress bars with ETA for data generation, pre-training and
RL training; log lines (time-stamped, also in hydra's ``<job>.log``) with the
held-out loss of stage 2, the latent cache size, each evaluation's normalised
score; at the end a table with the final normalised score ± its standard
deviation over the evaluation episodes, the best score and its step, the raw
return, the steps done, the wall time, the updates per second, the device and
the config hash.

What it writes, in the run directory (hydra's ``outputs/<date>/<time>_<algo>_<env>_seed<seed>``,
or ``run_dir=...``):

* ``summary.json`` -- the final numbers (keys listed in
  :mod:`tabb_torchrl.pipeline.summary`) and the evaluation history;
* ``learning_curve.png`` -- normalised score (± std over episodes) against the RL step;
* ``checkpoint.pt`` -- every ``checkpoint.every`` global steps (atomic); everything
  needed to resume exactly (``resume=true`` or ``resume=<run dir>``);
* ``run_state.json`` -- the run's name and config hash (how ``resume=true`` finds it);
* ``logs/<run name>/`` -- the metric logger (CSV by default: ``scalars/*.csv`` with
  ``train/*`` losses and diagnostics, ``pretrain_stage{1,2}/*``, ``eval/*``, ``time/*``
  timers); ``logger=tensorboard`` or ``logger=wandb`` switch backend;
* ``config.yaml`` -- the resolved configuration;
* ``robustness.json`` / ``robustness.png`` -- with ``eval.perturbations`` set: scores and
  drops per perturbation kind and level (also under ``"robustness"`` in ``summary.json``).

Nothing is written into a run directory before the configuration, the datasets'
env ids and (on ``resume``) the checkpoint were checked: a refused resume leaves
the run it refused as it was. ``threads``, ``device``, ``compile``, the logger and
the checkpoint interval are runtime-only settings: they are not part of the config
hash, so a resume may change them (each change is logged).

Exit status: 0 when the run completed or stopped at ``max_steps_this_session``;
2 on a configuration or data error (message on stderr, naming the key or file and
the fix); 3 when a loss became NaN or inf (training stopped at once; the last
checkpoint, written before, is kept).
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from tabb_torchrl.data import DatasetError
from tabb_torchrl.pipeline import ConfigError, format_summary_table
from tabb_torchrl.pipeline.experiment import run_experiment
from tabb_torchrl.pipeline.trainer import NonFiniteLossError


def _hydra_output_dir() -> str:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.output_dir


def _overridden_keys() -> list[str]:
    """The command line's overrides (``env.level=5.0``...), as hydra recorded them."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # not under hydra
        return []


def run(cfg: DictConfig) -> dict | None:
    """The whole run (:func:`tabb_torchrl.pipeline.experiment.run_experiment`); returns the summary
    (``None`` when the session stopped early)."""
    result = run_experiment(cfg, default_run_dir=None if cfg.run_dir else _hydra_output_dir(),
                            overridden=_overridden_keys())
    run_dir = result.plan.run_dir
    if not result.complete:
        print(f"Stopped at global step {result.trainer.progress.global_step} (max_steps_this_session). "
              f"Continue with: python recipes/tabb_offline.py <same overrides> resume={run_dir}")
        return None
    summary = result.summary
    print(format_summary_table(summary))
    print(f"summary: {run_dir / 'summary.json'}  curve: {run_dir / 'learning_curve.png'}")
    if result.robustness is not None:
        print(result.robustness.table())
        print(f"robustness: {run_dir / 'robustness.json'}  figure: {run_dir / 'robustness.png'}")
    return summary


@hydra.main(config_path="config", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = run(cfg)
    except ConfigError as err:
        print(f"Configuration error: {err}", file=sys.stderr)
        sys.exit(2)
    except DatasetError as err:
        print(f"Data error: {err}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as err:
        print(f"Training stopped: {err}", file=sys.stderr)
        sys.exit(3)
    return None if summary is None else summary["normalized_score"]


if __name__ == "__main__":
    main()
