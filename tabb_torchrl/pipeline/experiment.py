"""One run of the TABB pipeline, as reusable steps: the body of ``recipes/tabb_offline.py`` and of the
Python API (:mod:`tabb_torchrl.api`).

A run goes through these steps, each a function here, and both entry points call the same ones
(:func:`run_experiment` chains them):

1. :func:`~tabb_torchrl.pipeline.compose.compose_config` -- the recipe's hydra configuration with
   overrides (:mod:`tabb_torchrl.pipeline.compose`); the recipe gets it from ``@hydra.main`` instead;
2. :func:`plan_run` -- every check that can fail before anything is written (the configuration,
   the run directory, the checkpoint of a resume); returns a :class:`RunPlan`;
3. :func:`start_run` -- writes ``config.yaml`` and ``run_state.json``, sets threads and seeds;
4. :func:`load_data` -- the source and target datasets (generated, read from a path, or given);
5. :func:`build_components` -- the networks, losses and optimisers of ``algo.name``: **the one place
   an algorithm's model is chosen** (the algorithms with their own backbone -- ``cql``, ``mobody``,
   ``bosa`` -- through :data:`~tabb_torchrl.pipeline.backbones.OWN_BACKBONES`, whose entries also
   give the trainer their update);
6. :func:`build_trainer` -- the evaluator, the logger and the :class:`~tabb_torchrl.pipeline.TABBTrainer`
   (with the checkpoint of a resume loaded);
7. :func:`summarise` -- ``summary.json`` and ``learning_curve.png``; then, when
   ``eval.perturbations`` is set, :func:`evaluate_perturbations` (``robustness.json`` / ``.png``).

:func:`load_run` rebuilds the trained networks of a run directory (or of a file written by
:meth:`tabb_torchrl.api.Agent.save`) without any dataset.

Examples:
    The steps one by one (a tiny target-only run; :func:`run_experiment` does the same in one call):

    >>> import tempfile
    >>> from tabb_torchrl.pipeline.compose import compose_config
    >>> work = tempfile.mkdtemp()
    >>> cfg = compose_config("iql_target", ["+preset=smoke"], data__root=work, run_dir=f"{work}/run", progress=False,
    ...                      optim__steps=10, pretrain__stage1_steps=10, pretrain__stage2_steps=10)
    >>> plan = plan_run(cfg, default_run_dir=None)
    >>> plan.name, plan.source_id, plan.run_dir.exists()
    ('iql_target_tabb-Hopper-morph-v0_seed0', None, False)
    >>> start_run(plan)
    >>> source, target, obs_dim, action_dim = load_data(plan)
    >>> source is None, target.shape[0], obs_dim, action_dim
    (True, 600, 11, 3)
    >>> parts = build_components(plan.cfg, plan.env_id, obs_dim, action_dim, plan.device)
    >>> trainer = build_trainer(plan, source, target, parts)
    >>> trainer.run()
    True
    >>> trainer.evaluator.close()
    >>> summary = summarise(plan, trainer)
    >>> summary["steps"], sorted(p.name for p in plan.run_dir.iterdir())
    (10, ['checkpoint.pt', 'config.yaml', 'learning_curve.png', 'logs', 'run_state.json', 'summary.json'])
    >>> cfg2, parts2, state, env_id = load_run(plan.run_dir)
    >>> state["progress"]["rl_step"], env_id
    (10, 'tabb/Hopper-morph-v0')
"""
from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase

from tabb_torchrl.pipeline.compose import compose_config, hydra_run_dir
from tabb_torchrl.pipeline.config import (
    ConfigError,
    _get,
    config_hash,
    legacy_config_hashes,
    reconcile_env,
    resolve_device,
    run_name,
    validate_config,
    validate_datasets,
)
from tabb_torchrl.pipeline.factories import (
    env_dims,
    load_dataset,
    make_actor_scheduler,
    make_datasets,
    make_latent_model,
    make_latent_model_loss,
    make_loss,
    make_optimizers,
    make_rl_networks,
    resolve_env_ids,
    reward_scale_factor,
    scale_rewards,
)
from tabb_torchrl.pipeline.loggers import get_console_logger

__all__ = [
    "Components",
    "RunPlan",
    "RunResult",
    "build_components",
    "build_trainer",
    "evaluate_perturbations",
    "load_data",
    "load_run",
    "perturbation_kinds",
    "plan_run",
    "run_experiment",
    "start_run",
    "summarise",
]

_LOG = get_console_logger()


# ----------------------------------------------------------------------------- 2. plan (nothing written)
@dataclass
class RunPlan:
    """A checked run: its configuration, ids, device, run directory and the checkpoint it resumes.

    Built by :func:`plan_run`; nothing is written until :func:`start_run`.

    Attributes:
        cfg: the configuration (``env.id`` reconciled with ``env.name / shift / level``).
        config_hash (str): :func:`~tabb_torchrl.pipeline.config_hash` of ``cfg``.
        env_id (str): the target env (training data and evaluation).
        source_id (str or None): the source env (``None`` for target-only runs).
        name (str): the run name ``<algo>_<env>_seed<seed>``.
        device (torch.device): where the networks live.
        run_dir (Path): where the run writes.
        checkpoint_path (Path or None): the checkpoint a resume continues.
        checkpoint (dict or None): its content (accepted by :func:`~tabb_torchrl.pipeline.runs.check_resume`).
        perturbations (list of str): the kinds of ``eval.perturbations`` (empty: none).

    Examples:
        >>> import tempfile
        >>> cfg = compose_config("iql_target", ["+preset=smoke"])
        >>> plan = plan_run(cfg, default_run_dir=tempfile.mkdtemp())
        >>> plan.env_id, plan.source_id, plan.name, plan.checkpoint is None
        ('tabb/Hopper-morph-v0', None, 'iql_target_tabb-Hopper-morph-v0_seed0', True)
    """

    cfg: Any
    config_hash: str
    env_id: str
    source_id: str | None
    name: str
    device: torch.device
    run_dir: Path
    checkpoint_path: Path | None = None
    checkpoint: dict | None = None
    perturbations: list[str] = field(default_factory=list)


def perturbation_kinds(cfg: Any, env_id: str | None = None) -> list[str]:
    """The perturbation kinds of ``eval.perturbations`` (``null`` / ``[]``: none, ``all``: every kind).

    With ``env_id``, also checks that each kind has a catalogue family composing with that env
    (:func:`tabb_torchrl.robustness.perturbation_families`), so a bad setting fails before training.

    Raises:
        ConfigError: an unknown kind or level, or a kind with no family for ``env_id``.

    Examples:
        >>> perturbation_kinds({"eval": {"perturbations": "all"}})
        ['kinematic', 'morph']
        >>> perturbation_kinds({"eval": {"perturbations": None}})
        []
        >>> perturbation_kinds({"eval": {"perturbations": ["wind"]}})
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: eval.perturbations=['wind'] names unknown kinds ['wind']; ...
    """
    from tabb_torchrl.pipeline.config import to_container
    from tabb_torchrl.robustness import KINDS, LEVELS, perturbation_families

    value = to_container(_get(cfg, "eval.perturbations"))
    if value in (None, False, "", "none", []):
        return []
    kinds = list(KINDS) if value == "all" else [value] if isinstance(value, str) else value
    ok = isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)
    unknown = [k for k in kinds if k not in KINDS] if ok else kinds
    if unknown:
        raise ConfigError(
            f"eval.perturbations={value!r} names unknown kinds {unknown}; valid: {', '.join(KINDS)}, all, or null. "
            "Fix: e.g. eval.perturbations=[kinematic,morph] or eval.perturbations=all."
        )
    levels = to_container(_get(cfg, "eval.perturbation_levels", list(LEVELS)))
    bad = [lv for lv in levels if lv not in LEVELS] if isinstance(levels, list) and levels else levels
    if bad:
        raise ConfigError(
            f"eval.perturbation_levels={levels!r} is not a non-empty list of {', '.join(LEVELS)}. "
            "Fix: e.g. eval.perturbation_levels=[easy,medium,hard]."
        )
    if env_id is not None:
        try:
            perturbation_families(env_id, kinds, levels)
        except ValueError as err:
            raise ConfigError(f"eval.perturbations={value!r} for env.id={env_id}: {err}") from err
    return list(dict.fromkeys(kinds))


def plan_run(cfg: Any, *, default_run_dir: str | os.PathLike | None, overridden: Sequence[str] = ()) -> RunPlan:
    """Check everything that can be checked before a run writes, and decide where it writes.

    Reconciles ``env.id`` with ``env.name / shift / level`` (:func:`~tabb_torchrl.pipeline.config.reconcile_env`),
    validates the configuration, resolves the device and the run directory, and loads and checks the
    checkpoint of a resume (:func:`~tabb_torchrl.pipeline.runs.check_resume`). A refused resume leaves
    the run directory as it was.

    Args:
        cfg: the run configuration (changed in place by the env reconciliation).

    Keyword Args:
        default_run_dir: where to write when ``run_dir`` is not set (the recipe: hydra's output
            directory; ``None``: :func:`~tabb_torchrl.pipeline.compose.hydra_run_dir`).
        overridden: the overrides given (``"env.level=5.0"``...), for the env reconciliation.

    Returns:
        RunPlan: the checked run.

    Raises:
        ConfigError: a bad setting, run directory or checkpoint (the message names it and the fix).
    """
    from omegaconf import OmegaConf

    from tabb_torchrl.pipeline.runs import check_resume, load_checkpoint, resolve_run_dir

    given = OmegaConf.to_container(cfg, resolve=True)
    derived_id = reconcile_env(cfg, overridden)
    if derived_id is not None:
        _LOG.info("env.id=%s (the env that env.name / env.shift / env.level name)", derived_id)
    validate_config(cfg)
    cfg_hash = config_hash(cfg)
    legacy = legacy_config_hashes(given) if derived_id is None else []
    env_id, source_id = resolve_env_ids(cfg)
    kinds = perturbation_kinds(cfg, env_id)
    name = run_name(cfg.algo.name, env_id, cfg.seed)
    device = resolve_device(cfg.device)
    if default_run_dir is None and not cfg.run_dir:
        default_run_dir = hydra_run_dir(cfg)
    run_dir, ckpt_path = resolve_run_dir(cfg, cfg.run_dir or default_run_dir, cfg_hash, legacy)
    checkpoint = None
    if ckpt_path is not None:
        checkpoint = load_checkpoint(ckpt_path)
        for change in check_resume(checkpoint, cfg, cfg_hash, run_dir=run_dir, checkpoint_path=ckpt_path,
                                   legacy_hashes=legacy):
            _LOG.info("resume with another runtime-only setting, %s (results stay comparable, not bit-identical "
                      "to an uninterrupted run)", change)
        checkpoint["config_hash"] = cfg_hash  # accepted (maybe under a legacy hash): the run carries this one now
    return RunPlan(cfg=cfg, config_hash=cfg_hash, env_id=env_id, source_id=source_id, name=name, device=device,
                   run_dir=Path(run_dir), checkpoint_path=ckpt_path, checkpoint=checkpoint, perturbations=kinds)


# ----------------------------------------------------------------------------- 3. start
def start_run(plan: RunPlan, *, info: Mapping[str, Any] | None = None) -> None:
    """Create the run directory, write ``config.yaml`` and ``run_state.json``, set threads and seeds.

    Keyword Args:
        info: more entries for ``run_state.json``.

    Examples:
        See the module's example (every step in order).
    """
    from omegaconf import OmegaConf

    from tabb_torchrl.io import write_text_atomic
    from tabb_torchrl.pipeline.runs import seed_everything, write_run_state

    cfg = plan.cfg
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(plan.run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    write_run_state(plan.run_dir, {"config_hash": plan.config_hash, "run_name": plan.name, "algo": cfg.algo.name,
                                   "env": plan.env_id, "seed": int(cfg.seed), **dict(info or {})})
    _LOG.info("run %s (config %s) in %s%s", plan.name, plan.config_hash, plan.run_dir,
              f", resuming from {plan.checkpoint_path}" if plan.checkpoint else "")
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    seed_everything(int(cfg.seed))


# ----------------------------------------------------------------------------- 4. data
def _check_actions(cfg: Any, source, source_id: str | None, target, target_id: str,
                   given: Sequence[str] = ()) -> None:
    """Every action within its env's bounds, up to ``data.action_tolerance`` of the range
    (default :data:`~tabb_torchrl.data.datasets.ACTION_TOLERANCE`; ``+data.action_tolerance=null`` accepts any)."""
    from tabb_torchrl.data import DatasetError
    from tabb_torchrl.data.datasets import ACTION_TOLERANCE, check_action_bounds

    tolerance = cfg.data.get("action_tolerance", ACTION_TOLERANCE)
    if tolerance is None:
        return
    for which, td, env in (("target", target, target_id), ("source", source, source_id)):
        if td is None:
            continue
        spec = cfg.data[which]
        if which in given:
            where = f"given to fit as {which}="
        else:
            where = f"data.{which}.path={spec.path}" if spec.get("path") else f"data.{which}.quality={spec.quality}"
        try:
            check_action_bounds(td, env, tolerance=float(tolerance), name=f"the {which} dataset ({where})")
        except DatasetError as err:
            raise ConfigError(str(err).replace("(action_tolerance=None; in the recipe +data.action_tolerance=null)",
                                               "(+data.action_tolerance=null)")) from err


def load_data(plan: RunPlan, *, source: TensorDictBase | None = None, target: TensorDictBase | None = None
              ) -> tuple[TensorDictBase | None, TensorDictBase, int, int]:
    """The source and target datasets of a run, checked against the env and the batch split.

    Each dataset not given is loaded or generated as the configuration says
    (:func:`~tabb_torchrl.pipeline.make_datasets`); a given one (a TensorDict of transitions with the
    keys of :data:`~tabb_torchrl.data.TRANSITION_KEYS`) is checked like a loaded one. With
    ``data.reward_scale`` set, both get the same reward factor.

    Returns:
        ``(source, target, obs_dim, action_dim)``; ``source`` is ``None`` for target-only runs.

    Examples:
        See the module's example (every step in order).
    """
    cfg = plan.cfg
    obs_dim, action_dim = env_dims(plan.env_id)
    if source is None and target is None:
        src, tgt = make_datasets(cfg, obs_dim, action_dim)
    else:
        src, tgt = _given_datasets(cfg, plan, source, target, obs_dim, action_dim)
    validate_datasets(cfg, src, tgt)
    _check_actions(cfg, src, plan.source_id, tgt, plan.env_id,
                   given=[w for w, td in (("source", source), ("target", target)) if td is not None])
    _LOG.info("data: source %s (%s transitions), target %s (%d transitions)", plan.source_id,
              "none" if src is None else src.shape[0], plan.env_id, tgt.shape[0])
    return src, tgt, obs_dim, action_dim


def _given_datasets(cfg, plan: RunPlan, source, target, obs_dim: int, action_dim: int):
    """``make_datasets`` with some datasets given in memory: the others loaded, both checked and scaled alike."""
    from tabb_torchrl.data import DatasetError, validate_transitions

    root = _get(cfg, "data.root")
    common = dict(root=None if not root else os.path.abspath(os.path.expanduser(str(root))),
                  seed=int(_get(cfg, "data.seed", 0)), obs_dim=obs_dim, action_dim=action_dim,
                  progress=bool(_get(cfg, "progress", True)), collect_envs=_get(cfg, "data.collect_envs"),
                  collect_workers=_get(cfg, "data.collect_workers"))
    out = {}
    for which, td, env in (("target", target, plan.env_id), ("source", source, plan.source_id)):
        if env is None:
            out[which] = None
        elif td is None:
            out[which] = load_dataset(dict(cfg.data[which]), env, name=which, **common)
        else:
            try:
                out[which] = validate_transitions(td, obs_dim, action_dim, f"{which} dataset", env_id=env)
            except DatasetError as err:
                raise ConfigError(f"The {which} dataset given to fit cannot be used with env {env}: {err}") from err
    factor = reward_scale_factor(cfg, out["source"], out["target"])
    if factor != 1.0:
        _LOG.info("data.reward_scale=%s: source and target rewards multiplied by %.6g "
                  "(1000 / episode-return range of the source and target data)", _get(cfg, "data.reward_scale"),
                  factor)
    return scale_rewards(out["source"], factor), scale_rewards(out["target"], factor)


# ----------------------------------------------------------------------------- 5. models (the algorithm dispatch)
@dataclass
class Components:
    """The trainable parts of a run, built by :func:`build_components`.

    Attributes:
        latent_model: TABB's latent model ``(f, g, h)`` (built for every algorithm; pre-trained only
            with ``algo.features=latent``).
        model_loss: its Eq. 6 loss (:class:`~tabb_torchrl.objectives.LatentModelLoss`).
        actor: the policy (a TorchRL ``ProbabilisticActor``: ``"observation"`` -> ``"action"``).
        loss_module: the RL loss (its state is the checkpoint's ``"loss_module"``).
        target_updater: the ``SoftUpdate`` of the target networks.
        optimizers (dict): the RL optimisers.
        scheduler: the actor learning-rate scheduler or ``None``.

    Examples:
        Built by :func:`build_components` (see its example and the module's).
    """

    latent_model: Any
    model_loss: Any
    actor: Any
    loss_module: Any
    target_updater: Any
    optimizers: dict
    scheduler: Any = None


def build_components(cfg: Any, env_id: str, obs_dim: int, action_dim: int, device: torch.device | str = "cpu"
                     ) -> Components:
    """The networks, losses and optimisers of ``algo.name``: the one place an algorithm's model is chosen.

    * ``cql``, ``mobody``, ``bosa`` (own backbones): ``make`` of their
      :data:`~tabb_torchrl.pipeline.backbones.OWN_BACKBONES` entry (``cql``:
      :func:`tabb_torchrl.pipeline.cql.make_cql`, TorchRL's ``CQLLoss``; ``mobody`` / ``bosa``: the TD3
      backbone); :meth:`~tabb_torchrl.pipeline.TABBTrainer.prepare_rl` takes their update from the same entry;
    * every other algorithm: the cross-domain IQL core -- :func:`~tabb_torchrl.pipeline.make_rl_networks`,
      :func:`~tabb_torchrl.pipeline.make_loss` (the method of ``algo.method``; a user module of
      ``algo.method_module`` is imported first), :func:`~tabb_torchrl.pipeline.make_optimizers` and
      :func:`~tabb_torchrl.pipeline.make_actor_scheduler`.

    An algorithm with its own model and update adds an entry to ``OWN_BACKBONES``. The recipe, the
    Python API and :func:`load_run` all build through this function.

    Examples:
        >>> cfg = compose_config("iql_mixed", ["+preset=smoke"])
        >>> parts = build_components(cfg, "tabb/Hopper-morph-v0", 11, 3)
        >>> sorted(parts.optimizers), type(parts.loss_module).__name__
        (['actor', 'qvalue', 'value'], 'CrossDomainIQLLoss')
        >>> type(build_components(compose_config("cql", ["+preset=smoke"]), "tabb/Hopper-morph-v0", 11, 3).loss_module).__name__
        'CQLLoss'
    """
    device = torch.device(device)
    latent_model = make_latent_model(cfg, obs_dim, action_dim).to(device)
    model_loss = make_latent_model_loss(cfg, latent_model).to(device)
    algo = str(_get(cfg, "algo.name"))
    from tabb_torchrl.pipeline.backbones import own_backbone

    backbone = own_backbone(algo)
    if backbone is not None:  # cql, mobody, bosa: their own model and update (tabb_torchrl.pipeline.backbones)
        actor, loss_module, target_updater, optimizers = backbone.make(cfg, env_id, device=device)
        return Components(latent_model, model_loss, actor, loss_module, target_updater, optimizers, None)
    module = _get(cfg, "algo.method_module")
    if module:  # a user's module that registers its method (validate_config imported it already in a run)
        importlib.import_module(str(module))
    actor, qvalue, value = make_rl_networks(cfg, obs_dim, action_dim, latent_model)
    actor, qvalue, value = actor.to(device), qvalue.to(device), value.to(device)
    loss_module, target_updater = make_loss(cfg, actor, qvalue, value, latent_model)
    loss_module = loss_module.to(device)
    optimizers = make_optimizers(cfg, loss_module)
    scheduler = make_actor_scheduler(cfg, optimizers["actor"])
    return Components(latent_model, model_loss, actor, loss_module, target_updater, optimizers, scheduler)


# ----------------------------------------------------------------------------- 6. trainer
def build_trainer(plan: RunPlan, source, target, parts: Components, *,
                  on_evaluate: Callable[[Any, dict], Any] | None = None):
    """The evaluator, the logger and the :class:`~tabb_torchrl.pipeline.TABBTrainer` of a run.

    The checkpoint of a resume (``plan.checkpoint``) is loaded into the trainer and dropped from the plan.

    Keyword Args:
        on_evaluate: called as ``on_evaluate(trainer, entry)`` after each evaluation (``entry``: the
            history entry ``{"step", "normalized_score", ...}``).

    Returns:
        TABBTrainer: ready for ``run()``; ``trainer.evaluator`` is closed by :func:`run_experiment`.

    Examples:
        See the module's example (every step in order).
    """
    from omegaconf import OmegaConf

    from tabb_torchrl.pipeline.evaluation import PolicyEvaluator
    from tabb_torchrl.pipeline.loggers import make_logger
    from tabb_torchrl.pipeline.trainer import TABBTrainer

    cfg = plan.cfg
    evaluator = PolicyEvaluator(plan.env_id, cfg.eval.episodes, seed=int(cfg.seed) + int(cfg.eval.seed_offset),
                                device=plan.device, max_episode_steps=cfg.eval.max_episode_steps)
    logger = make_logger(cfg.logger.backend, plan.run_dir, plan.name, project=cfg.logger.project,
                         config=OmegaConf.to_container(cfg, resolve=True),
                         state_dict=None if plan.checkpoint is None else plan.checkpoint.get("logger"))
    cls = TABBTrainer if on_evaluate is None else _callback_trainer(on_evaluate)
    trainer = cls(
        cfg, run_dir=plan.run_dir, device=plan.device, source=source, target=target,
        latent_model=parts.latent_model, model_loss=parts.model_loss, actor=parts.actor,
        loss_module=parts.loss_module, target_updater=parts.target_updater, optimizers=parts.optimizers,
        scheduler=parts.scheduler, evaluator=evaluator, logger=logger, env_id=plan.env_id,
        config_hash=plan.config_hash,
    )
    if plan.checkpoint is not None:
        trainer.load_state_dict(plan.checkpoint)
        plan.checkpoint = None
    return trainer


def _callback_trainer(on_evaluate: Callable[[Any, dict], Any]):
    """A :class:`TABBTrainer` that calls ``on_evaluate(trainer, entry)`` after each evaluation."""
    from tabb_torchrl.pipeline.trainer import TABBTrainer

    class _EvaluationCallbackTrainer(TABBTrainer):
        def evaluate(self) -> dict:
            entry = super().evaluate()
            on_evaluate(self, dict(entry))
            return entry

    return _EvaluationCallbackTrainer


# ----------------------------------------------------------------------------- 7. summary and robustness
def summarise(plan: RunPlan, trainer) -> dict:
    """Build the run's summary; write ``summary.json`` and ``learning_curve.png`` into the run directory.

    Returns:
        dict: the summary (keys: :data:`~tabb_torchrl.pipeline.SUMMARY_KEYS`).

    Examples:
        See the module's example (every step in order).
    """
    from tabb_torchrl.pipeline.summary import build_summary, plot_learning_curve, write_json_atomic

    cfg = plan.cfg
    summary = build_summary(
        history=trainer.history, algo=cfg.algo.name, env=plan.env_id, source_env=plan.source_id,
        seed=int(cfg.seed), eval_episodes=int(cfg.eval.episodes), reference=cfg.eval.reference,
        steps=trainer.progress.rl_step,
        pretrain_steps={"stage1": trainer.progress.stage1_step, "stage2": trainer.progress.stage2_step},
        wall_time_s=trainer.wall_time(), updates_per_s=trainer.updates_per_second(),
        device=str(plan.device), config_hash=plan.config_hash, run_name=plan.name, run_dir=str(plan.run_dir),
        extra={"latent_cache_mib": trainer.latent_cache_mb,
               "stage2_best_step": int(trainer.stage2_best.get("step", 0))},
    )
    write_json_atomic(plan.run_dir / "summary.json", summary)
    if summary["history"]:
        plot_learning_curve(summary["history"], plan.run_dir / "learning_curve.png",
                            title=f"{cfg.algo.name} on {plan.env_id} (seed {cfg.seed})")
    return summary


def evaluate_perturbations(plan: RunPlan, actor, summary: dict | None = None):
    """The test-time robustness evaluation of ``eval.perturbations`` (:func:`tabb_torchrl.robustness.evaluate_robustness`).

    The actor is evaluated in the target env and in each perturbed env (kinds of ``eval.perturbations``,
    levels of ``eval.perturbation_levels``) with the run's evaluation settings (``eval.episodes``, seeds
    ``seed + eval.seed_offset + i``, ``eval.max_episode_steps``, ``eval.reference``), as
    ``recipes/evaluate_robustness.py`` does by default. Writes ``robustness.json`` and
    ``robustness.png`` into the run directory; with ``summary``, adds its ``"robustness"`` entry
    (scores and drops) and rewrites ``summary.json``.

    Returns:
        RobustnessReport or None: ``None`` when ``eval.perturbations`` is not set.

    Examples:
        >>> from tabb_torchrl.pipeline.compose import compose_config
        >>> plan = RunPlan(compose_config("tabb"), "h", "tabb/Hopper-morph-v0", "Hopper-v5", "n", "cpu", None)
        >>> evaluate_perturbations(plan, actor=None) is None  # eval.perturbations=null
        True
    """
    import json

    from tabb_torchrl.io import write_text_atomic
    from tabb_torchrl.robustness import LEVELS, evaluate_robustness, plot_robustness
    from tabb_torchrl.pipeline.config import to_container
    from tabb_torchrl.pipeline.summary import write_json_atomic

    if not plan.perturbations:
        return None
    cfg = plan.cfg
    levels = list(to_container(_get(cfg, "eval.perturbation_levels", list(LEVELS))))
    max_steps = cfg.eval.get("max_episode_steps")
    report = evaluate_robustness(
        actor, plan.env_id, kinds=plan.perturbations, levels=levels, episodes=int(cfg.eval.episodes),
        seed=int(cfg.seed) + int(cfg.eval.seed_offset), device=plan.device, max_episode_steps=max_steps,
        reference=str(cfg.eval.reference), progress=lambda line: _LOG.info("robustness: %s", line),
    )
    report.info.update({"run_dir": str(plan.run_dir), "algo": str(cfg.algo.name), "max_episode_steps": max_steps,
                        "checkpoint": {"phase": "done", "rl_step": None if summary is None else summary["steps"],
                                       "path": None}})
    data = report.to_dict()
    write_text_atomic(plan.run_dir / "robustness.json", json.dumps(data, indent=2))
    plot_robustness(report, plan.run_dir / "robustness.png",
                    title=f"{cfg.algo.name} on {plan.env_id} (seed {cfg.seed})\ntest-time robustness")
    if summary is not None:
        summary["robustness"] = {"file": "robustness.json", "nominal_score": data["nominal"]["normalized_score"],
                                 "scores": {r["kind"]: {} for r in data["results"]}, "drops": data["drops"]}
        for r in data["results"]:
            summary["robustness"]["scores"][r["kind"]][r["level"]] = r["normalized_score"]
        write_json_atomic(plan.run_dir / "summary.json", summary)
    return report


# ----------------------------------------------------------------------------- the whole run
@dataclass
class RunResult:
    """What :func:`run_experiment` returns.

    Attributes:
        plan (RunPlan): the run's configuration, ids and directory.
        trainer: the :class:`~tabb_torchrl.pipeline.TABBTrainer` (its networks are the trained ones).
        complete (bool): ``False`` when the session stopped at ``max_steps_this_session``.
        summary (dict or None): the summary (``None`` when not complete).
        robustness: the :class:`~tabb_torchrl.robustness.RobustnessReport` of ``eval.perturbations`` (or ``None``).

    Examples:
        Returned by :func:`run_experiment`; :meth:`tabb_torchrl.api.Agent.fit` reads it.
    """

    plan: RunPlan
    trainer: Any
    complete: bool
    summary: dict | None = None
    robustness: Any = None


def run_experiment(cfg: Any, *, default_run_dir: str | os.PathLike | None = None, overridden: Sequence[str] = (),
                   source: TensorDictBase | None = None, target: TensorDictBase | None = None,
                   on_evaluate: Callable[[Any, dict], Any] | None = None,
                   run_state: Mapping[str, Any] | None = None) -> RunResult:
    """One whole run: plan, start, data, components, training, summary (and robustness).

    The body of ``recipes/tabb_offline.py`` and of :meth:`tabb_torchrl.api.Agent.fit`.

    Args:
        cfg: the run configuration (:func:`~tabb_torchrl.pipeline.compose.compose_config` or hydra's).

    Keyword Args:
        default_run_dir: see :func:`plan_run`.
        overridden: see :func:`plan_run`.
        source, target: datasets given in memory (see :func:`load_data`).
        on_evaluate: see :func:`build_trainer`.
        run_state: more entries for ``run_state.json``.

    Returns:
        RunResult: the plan, the trainer, whether the run completed, its summary.

    Raises:
        ConfigError: a configuration or data problem (nothing written when found before the start).
        tabb_torchrl.data.DatasetError: a dataset that cannot be read.
        tabb_torchrl.pipeline.trainer.NonFiniteLossError: a loss became NaN or inf.

    Examples:
        See the module's example (the same steps one by one), and :meth:`tabb_torchrl.api.Agent.fit`.
    """
    plan = plan_run(cfg, default_run_dir=default_run_dir, overridden=overridden)
    start_run(plan, info=run_state)
    src, tgt, obs_dim, action_dim = load_data(plan, source=source, target=target)
    parts = build_components(plan.cfg, plan.env_id, obs_dim, action_dim, plan.device)
    trainer = build_trainer(plan, src, tgt, parts, on_evaluate=on_evaluate)
    start_step = trainer.progress.global_step
    try:
        complete = trainer.run()
    finally:
        trainer.evaluator.close()
    if not complete:
        return RunResult(plan, trainer, False)
    earlier = _finished_summary(plan, trainer) if trainer.progress.global_step == start_step else None
    if earlier is not None:  # a finished run resumed (a sweep run again): its summary stays as measured
        _LOG.info("run %s had already finished: summary.json kept as written", plan.run_dir)
        if earlier.get("robustness") is not None or not plan.perturbations:
            return RunResult(plan, trainer, True, earlier)
        return RunResult(plan, trainer, True, earlier, evaluate_perturbations(plan, trainer.actor, earlier))
    summary = summarise(plan, trainer)
    report = evaluate_perturbations(plan, trainer.actor, summary)
    return RunResult(plan, trainer, True, summary, report)


def _finished_summary(plan: RunPlan, trainer) -> dict | None:
    """The run directory's ``summary.json`` when it summarises this configuration at the trainer's step."""
    path = plan.run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (isinstance(summary, dict) and summary.get("config_hash") == plan.config_hash
            and summary.get("steps") == trainer.progress.rl_step)
    return summary if same else None


# ----------------------------------------------------------------------------- a trained run, without data
def load_run(path: str | os.PathLike, *, device: torch.device | str = "cpu", checkpoint: str | None = None):
    """The configuration, networks and checkpoint of a trained run, rebuilt without its datasets.

    Args:
        path: a run directory of ``recipes/tabb_offline.py`` (``config.yaml`` + its checkpoint) or a
            file written by :meth:`tabb_torchrl.api.Agent.save` (a checkpoint that holds its config).

    Keyword Args:
        device: where to put the networks.
        checkpoint: the checkpoint file name in a run directory (default: the run's ``checkpoint.filename``).

    Returns:
        ``(cfg, components, state, env_id)``: the configuration, :class:`Components` with the trained
        parameters (``loss_module`` and ``latent_model`` loaded; the actor in eval mode), the
        checkpoint dict and the target env id.

    Raises:
        FileNotFoundError: no such path, no ``config.yaml`` or no checkpoint (the message says why and the fix).
        ConfigError: a damaged checkpoint, or one that does not fit the configuration.

    Examples:
        See the module's example; a folder that is not a run:

        >>> import tempfile
        >>> load_run(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        FileNotFoundError: ... is not a run directory: it has no config.yaml. Fix: ...
    """
    from omegaconf import OmegaConf

    from tabb_torchrl.pipeline.runs import load_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist. Fix: pass a run directory of recipes/tabb_offline.py (it holds config.yaml "
            "and checkpoint.pt) or a file written by Agent.save()."
        )
    if path.is_dir():
        cfg_path = path / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"{path} is not a run directory: it has no config.yaml. Fix: pass the folder a run of "
                "recipes/tabb_offline.py or Agent.fit() wrote (its summary.json names it as run_dir), or a file "
                "written by Agent.save()."
            )
        cfg = OmegaConf.load(cfg_path)
        name = checkpoint or str(_get(cfg, "checkpoint.filename", "checkpoint.pt"))
        ckpt_path = path / name
        if not ckpt_path.is_file():
            raise FileNotFoundError(
                f"{path} has no checkpoint {name}: the run ended with checkpoint.save_final=false, or stopped "
                "before its first checkpoint. Fix: run it again with checkpoint.save_final=true (the default), or "
                "resume it (resume=<run dir>) to the end."
            )
        state = load_checkpoint(ckpt_path)
    else:
        state = load_checkpoint(path)
        if not isinstance(state.get("config"), Mapping):
            raise FileNotFoundError(
                f"{path} is a checkpoint without its configuration (a checkpoint.pt of a run directory). "
                f"Fix: pass the run directory itself ({path.parent}), or a file written by Agent.save()."
            )
        cfg = OmegaConf.create(dict(state["config"]))
    if "loss_module" not in state:
        raise ConfigError(f"{path}: the checkpoint has no 'loss_module' entry: it is not a checkpoint of a "
                          "tabb-torchrl run. Fix: pass a run directory of recipes/tabb_offline.py or Agent.save().")
    env_id, _ = resolve_env_ids(cfg)
    obs_dim, action_dim = env_dims(env_id)
    parts = build_components(cfg, env_id, obs_dim, action_dim, device)
    try:
        parts.loss_module.load_state_dict(state["loss_module"])  # the actor shares its parameters with the loss
        if "latent_model" in state:
            parts.latent_model.load_state_dict(state["latent_model"])
    except (RuntimeError, KeyError) as err:
        raise ConfigError(f"{path}: the checkpoint does not fit the networks its config.yaml describes ({err}). "
                          "Fix: load it with the tabb-torchrl version that wrote it.") from err
    parts.actor.eval()
    return cfg, parts, state, env_id
