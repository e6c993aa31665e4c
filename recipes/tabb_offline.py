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
   every ``eval.every`` steps (``eval.episodes`` episodes, D4RL normalised score).

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
* ``config.yaml`` -- the resolved configuration.

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
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from tabb_torchrl.pipeline import (
    ConfigError,
    PolicyEvaluator,
    TABBTrainer,
    build_summary,
    config_hash,
    env_dims,
    format_summary_table,
    load_checkpoint,
    make_actor_scheduler,
    make_datasets,
    make_latent_model,
    make_latent_model_loss,
    make_logger,
    make_loss,
    make_optimizers,
    make_rl_networks,
    plot_learning_curve,
    resolve_device,
    resolve_env_ids,
    resolve_run_dir,
    run_name,
    seed_everything,
    validate_config,
    validate_datasets,
    write_json_atomic,
    write_run_state,
)
from tabb_torchrl.data import DatasetError
from tabb_torchrl.data.datasets import ACTION_TOLERANCE, check_action_bounds
from tabb_torchrl.io import write_text_atomic
from tabb_torchrl.pipeline.config import legacy_config_hashes, reconcile_env
from tabb_torchrl.pipeline.loggers import get_console_logger
from tabb_torchrl.pipeline.runs import check_resume
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


def _check_actions(cfg: DictConfig, source, source_id: str | None, target, target_id: str) -> None:
    """Every action within its env's bounds, up to ``data.action_tolerance`` of the range
    (default :data:`~tabb_torchrl.data.datasets.ACTION_TOLERANCE`; ``+data.action_tolerance=null`` accepts any)."""
    tolerance = cfg.data.get("action_tolerance", ACTION_TOLERANCE)
    if tolerance is None:
        return
    for which, td, env in (("target", target, target_id), ("source", source, source_id)):
        if td is None:
            continue
        spec = cfg.data[which]
        where = f"data.{which}.path={spec.path}" if spec.get("path") else f"data.{which}.quality={spec.quality}"
        try:
            check_action_bounds(td, env, tolerance=float(tolerance), name=f"the {which} dataset ({where})")
        except DatasetError as err:
            raise ConfigError(str(err).replace("(action_tolerance=None; in the recipe +data.action_tolerance=null)",
                                               "(+data.action_tolerance=null)")) from err


def run(cfg: DictConfig) -> dict | None:
    """The whole run; returns the summary (``None`` when the session stopped early)."""
    import torch

    log = get_console_logger()
    # ------------------------------------------- config, run dir, checkpoint: checked before anything is written
    given = OmegaConf.to_container(cfg, resolve=True)
    derived_id = reconcile_env(cfg, _overridden_keys())
    if derived_id is not None:
        log.info("env.id=%s (the env that env.name / env.shift / env.level name)", derived_id)
    validate_config(cfg)
    cfg_hash = config_hash(cfg)
    legacy = legacy_config_hashes(given) if derived_id is None else []
    env_id, source_id = resolve_env_ids(cfg)
    name = run_name(cfg.algo.name, env_id, cfg.seed)
    device = resolve_device(cfg.device)
    run_dir, ckpt_path = resolve_run_dir(cfg, cfg.run_dir or _hydra_output_dir(), cfg_hash, legacy)
    checkpoint = None
    if ckpt_path is not None:
        checkpoint = load_checkpoint(ckpt_path)
        for change in check_resume(checkpoint, cfg, cfg_hash, run_dir=run_dir, checkpoint_path=ckpt_path,
                                   legacy_hashes=legacy):
            log.info("resume with another runtime-only setting, %s (results stay comparable, not bit-identical "
                     "to an uninterrupted run)", change)
        checkpoint["config_hash"] = cfg_hash  # accepted (maybe under a legacy hash): the run carries this one now
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    write_run_state(run_dir, {"config_hash": cfg_hash, "run_name": name, "algo": cfg.algo.name,
                              "env": env_id, "seed": int(cfg.seed)})
    log.info("run %s (config %s) in %s%s", name, cfg_hash, run_dir,
             f", resuming from {ckpt_path}" if checkpoint else "")
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    seed_everything(int(cfg.seed))

    # ---------------------------------------------------------------- data
    obs_dim, action_dim = env_dims(env_id)
    source, target = make_datasets(cfg, obs_dim, action_dim)
    validate_datasets(cfg, source, target)
    _check_actions(cfg, source, source_id, target, env_id)
    log.info("data: source %s (%s transitions), target %s (%d transitions)", source_id,
             "none" if source is None else source.shape[0], env_id, target.shape[0])

    # ---------------------------------------------------------------- models and losses
    latent_model = make_latent_model(cfg, obs_dim, action_dim).to(device)
    model_loss = make_latent_model_loss(cfg, latent_model).to(device)
    if cfg.algo.name == "cql":  # CQL: TorchRL's CQLLoss and its own update (tabb_torchrl.pipeline.cql)
        from tabb_torchrl.pipeline.cql import make_cql

        actor, loss_module, target_updater, optimizers = make_cql(cfg, env_id, device=device)
        scheduler = None
    else:
        actor, qvalue, value = make_rl_networks(cfg, obs_dim, action_dim, latent_model)
        actor, qvalue, value = actor.to(device), qvalue.to(device), value.to(device)
        loss_module, target_updater = make_loss(cfg, actor, qvalue, value, latent_model)
        loss_module = loss_module.to(device)
        optimizers = make_optimizers(cfg, loss_module)
        scheduler = make_actor_scheduler(cfg, optimizers["actor"])

    # ---------------------------------------------------------------- eval, logger
    evaluator = PolicyEvaluator(env_id, cfg.eval.episodes, seed=int(cfg.seed) + int(cfg.eval.seed_offset),
                                device=device, max_episode_steps=cfg.eval.max_episode_steps)
    logger = make_logger(cfg.logger.backend, run_dir, name, project=cfg.logger.project,
                         config=OmegaConf.to_container(cfg, resolve=True),
                         state_dict=None if checkpoint is None else checkpoint.get("logger"))

    # ---------------------------------------------------------------- train
    trainer = TABBTrainer(
        cfg, run_dir=run_dir, device=device, source=source, target=target,
        latent_model=latent_model, model_loss=model_loss, actor=actor, loss_module=loss_module,
        target_updater=target_updater, optimizers=optimizers, scheduler=scheduler, evaluator=evaluator, logger=logger, env_id=env_id, config_hash=cfg_hash,
    )
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
        del checkpoint
    complete = trainer.run()
    evaluator.close()
    if not complete:
        print(f"Stopped at global step {trainer.progress.global_step} (max_steps_this_session). "
              f"Continue with: python recipes/tabb_offline.py <same overrides> resume={run_dir}")
        return None

    # ---------------------------------------------------------------- summary
    summary = build_summary(
        history=trainer.history, algo=cfg.algo.name, env=env_id, source_env=source_id,
        seed=int(cfg.seed), eval_episodes=int(cfg.eval.episodes), reference=cfg.eval.reference,
        steps=trainer.progress.rl_step,
        pretrain_steps={"stage1": trainer.progress.stage1_step, "stage2": trainer.progress.stage2_step},
        wall_time_s=trainer.wall_time(), updates_per_s=trainer.updates_per_second(),
        device=str(device), config_hash=cfg_hash, run_name=name, run_dir=str(run_dir),
        extra={"latent_cache_mib": trainer.latent_cache_mb,
               "stage2_best_step": int(trainer.stage2_best.get("step", 0))},
    )
    write_json_atomic(run_dir / "summary.json", summary)
    if summary["history"]:
        plot_learning_curve(summary["history"], run_dir / "learning_curve.png",
                            title=f"{cfg.algo.name} on {env_id} (seed {cfg.seed})")
    print(format_summary_table(summary))
    print(f"summary: {run_dir / 'summary.json'}  curve: {run_dir / 'learning_curve.png'}")
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
