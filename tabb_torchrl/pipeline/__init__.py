"""The end-to-end TABB pipeline behind ``recipes/tabb_offline.py``.

* :mod:`~tabb_torchrl.pipeline.config` -- validation (:func:`validate_config`,
  :func:`validate_datasets`, :class:`ConfigError`), config hash, run names, devices;
* :mod:`~tabb_torchrl.pipeline.factories` -- datasets, networks, the cross-domain
  method, losses, buffers, optimisers;
* :mod:`~tabb_torchrl.pipeline.update` -- :func:`make_rl_update`: the RL step behind
  one ``update() -> metrics`` interface (fast flat-tensor or composable path);
* :mod:`~tabb_torchrl.pipeline.trainer` -- :class:`TABBTrainer` (pre-training,
  latent caching, RL phase, evaluation, exact checkpoint / resume);
* :mod:`~tabb_torchrl.pipeline.runs` -- seeding, run directories, atomic checkpoints;
* :mod:`~tabb_torchrl.pipeline.evaluation` -- :class:`PolicyEvaluator`, normalised scores;
* :mod:`~tabb_torchrl.pipeline.summary` -- ``summary.json``, the table, the learning curve;
* :mod:`~tabb_torchrl.pipeline.loggers` -- TorchRL loggers with resumable positions;
* :mod:`~tabb_torchrl.pipeline.compose` -- the recipe's hydra configuration composed in Python
  (:func:`compose_config`);
* :mod:`~tabb_torchrl.pipeline.experiment` -- one whole run as steps (:func:`run_experiment`:
  plan, start, data, :func:`build_components`, trainer, summary), the body of the recipe and of
  the Python API; :func:`load_run` rebuilds a trained run without its data.
"""
from tabb_torchrl.pipeline.config import (
    ALGOS,
    ConfigError,
    batch_split,
    config_hash,
    find_latest_run,
    resolve_device,
    run_name,
    validate_config,
    validate_datasets,
)
from tabb_torchrl.pipeline.evaluation import PolicyEvaluator, normalized_scores
from tabb_torchrl.pipeline.factories import (
    env_dims,
    episode_returns,
    latent_cache_bytes,
    load_dataset,
    make_actor_scheduler,
    make_datasets,
    make_latent_model,
    make_latent_model_loss,
    make_loss,
    make_method,
    make_optimizers,
    make_pretrain_buffer,
    make_rl_buffer,
    make_rl_networks,
    resolve_env_ids,
    reward_scale_factor,
    scale_rewards,
    split_holdout,
)
from tabb_torchrl.pipeline.loggers import MissingLoggerBackendError, log_metrics, make_logger
from tabb_torchrl.pipeline.summary import (
    SUMMARY_KEYS,
    build_summary,
    format_summary_table,
    plot_learning_curve,
    write_json_atomic,
)
from tabb_torchrl.pipeline.runs import (
    load_checkpoint,
    resolve_run_dir,
    save_checkpoint_atomic,
    seed_everything,
    spawn_seeds,
    write_run_state,
)
from tabb_torchrl.pipeline.trainer import Progress, TABBTrainer
from tabb_torchrl.pipeline.update import ModularUpdate, make_rl_update
from tabb_torchrl.pipeline.compose import algo_variants, compose_config
from tabb_torchrl.pipeline.experiment import build_components, load_run, run_experiment

__all__ = [
    "ALGOS",
    "ConfigError",
    "PolicyEvaluator",
    "Progress",
    "SUMMARY_KEYS",
    "TABBTrainer",
    "algo_variants",
    "batch_split",
    "build_components",
    "build_summary",
    "compose_config",
    "config_hash",
    "env_dims",
    "episode_returns",
    "find_latest_run",
    "format_summary_table",
    "latent_cache_bytes",
    "load_checkpoint",
    "load_dataset",
    "load_run",
    "log_metrics",
    "make_actor_scheduler",
    "make_datasets",
    "make_latent_model",
    "make_latent_model_loss",
    "make_logger",
    "MissingLoggerBackendError",
    "make_loss",
    "make_method",
    "make_optimizers",
    "make_pretrain_buffer",
    "make_rl_buffer",
    "make_rl_update",
    "ModularUpdate",
    "make_rl_networks",
    "normalized_scores",
    "plot_learning_curve",
    "resolve_device",
    "resolve_env_ids",
    "resolve_run_dir",
    "reward_scale_factor",
    "run_experiment",
    "run_name",
    "save_checkpoint_atomic",
    "scale_rewards",
    "seed_everything",
    "spawn_seeds",
    "split_holdout",
    "validate_config",
    "validate_datasets",
    "write_json_atomic",
    "write_run_state",
]
