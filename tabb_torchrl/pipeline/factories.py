"""Factories of the TABB recipe: datasets, networks, losses, optimisers, buffers.

Each factory reads one part of the hydra configuration (``recipes/config``) and
builds TorchRL / tabb-torchrl objects, in the style of TorchRL's
``sota-implementations/iql/utils.py``. Every number comes from the configuration.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from tensordict import TensorDictBase

from tabb_torchrl.pipeline.config import ConfigError, _get, batch_split
from tabb_torchrl.pipeline.loggers import get_console_logger

__all__ = [
    "episode_returns",
    "reward_scale_factor",
    "scale_rewards",
    "load_dataset",
    "make_datasets",
    "split_holdout",
    "make_latent_model",
    "make_latent_model_loss",
    "make_rl_networks",
    "make_loss",
    "make_method",
    "make_pretrain_buffer",
    "make_rl_buffer",
    "make_optimizers",
    "make_actor_scheduler",
    "env_dims",
    "resolve_env_ids",
    "latent_cache_bytes",
]

_LOG = get_console_logger()


# ----------------------------------------------------------------------------- envs
def resolve_env_ids(cfg: Any) -> tuple[str, str | None]:
    """``(target_id, source_id)`` of the configured task (source ``None`` for target-only runs).

    Examples:
        >>> resolve_env_ids({"env": {"id": "tabb/Hopper-morph-v0", "source_id": None},
        ...                  "algo": {"use_source": True}})
        ('tabb/Hopper-morph-v0', 'Hopper-v5')
    """
    from tabb_torchrl.envs import source_env_id

    target_id = _get(cfg, "env.id")
    if not _get(cfg, "algo.use_source", True):
        return target_id, None
    source_id = _get(cfg, "env.source_id") or source_env_id(target_id)
    return target_id, source_id


def env_dims(env_id: str) -> tuple[int, int]:
    """``(obs_dim, action_dim)`` of an env id.

    Examples:
        >>> env_dims("tabb/Hopper-morph-v0")
        (11, 3)
    """
    from tabb_torchrl.envs import env_spaces

    spaces = env_spaces(env_id)
    return spaces.obs_dim, spaces.action_dim


# ----------------------------------------------------------------------------- data
def load_dataset(
    spec: Mapping[str, Any],
    env_id: str,
    *,
    root: str | None,
    seed: int,
    obs_dim: int,
    action_dim: int,
    name: str,
    progress: bool = True,
    collect_envs: int | None = None,
    collect_workers: int | None = None,
) -> TensorDictBase:
    """Load (or generate on first use) one dataset and check it against the env.

    With ``spec["path"]`` set, the dataset is read from that Minari dataset id or
    D4RL-style ``.hdf5``/``.h5`` file and ``spec["size"]`` caps the number of
    transitions used (the first ones); otherwise it is generated from the shipped
    behaviour policy of ``(env_id, spec["quality"])`` by
    :func:`tabb_torchrl.behavior.collect.get_or_create_dataset` (cached).

    Args:
        spec: ``{"quality", "size", "path", "download"}`` (``data.source`` / ``data.target``).
        env_id: env the data must come from (generation) or match (sizes).
        root: dataset cache folder (``None``: the collection module's default).
        seed: generation seed.
        obs_dim: expected observation size.
        action_dim: expected action size.
        name: ``"source"`` or ``"target"`` (error messages).
        progress: show the collection progress bar.
        collect_envs: vectorised envs per collection worker (``None``: the collector's default).
        collect_workers: collection worker processes (``None``: the collector's default).

    Raises:
        ConfigError: a dataset that does not match the env, or that cannot be loaded.

    Examples:
        >>> import tempfile
        >>> td = load_dataset({"quality": "random", "size": 300, "path": None}, "Hopper-v5",
        ...                   root=tempfile.mkdtemp(), seed=0, obs_dim=11, action_dim=3,
        ...                   name="source", progress=False, collect_envs=2, collect_workers=1)
        >>> td.shape
        torch.Size([300])
    """
    from tabb_torchrl.data import DatasetError, load_d4rl_hdf5, load_minari_dataset, validate_transitions

    path = spec.get("path")
    size = int(spec.get("size") or 0)
    try:
        if path:
            path = str(path)
            if path.endswith((".hdf5", ".h5")):
                td = load_d4rl_hdf5(path)
            else:
                td = load_minari_dataset(path, download=bool(spec.get("download", False)))
            if size and td.shape[0] > size:
                _LOG.info("%s dataset %s: using the first %d of %d transitions (data.%s.size)",
                          name, path, size, td.shape[0], name)
                td = td[:size]
        else:
            from tabb_torchrl.behavior.collect import get_or_create_dataset

            from tabb_torchrl.behavior.policies import PolicyNotFoundError

            kwargs = {k: v for k, v in (("n_envs", collect_envs), ("n_workers", collect_workers)) if v is not None}
            try:
                td = get_or_create_dataset(env_id, spec["quality"], size, seed, root, show_progress=progress,
                                           **kwargs)
            except PolicyNotFoundError as err:
                raise ConfigError(
                    f"data.{name}.quality={spec['quality']} needs a behaviour policy for {env_id}: {err} "
                    f"Fix: ship / train that policy, or give a dataset with data.{name}.path=<Minari id or "
                    f".hdf5>, or use data.{name}.quality=random (as +preset=smoke does)."
                ) from err
        td = validate_transitions(td, obs_dim, action_dim, f"{name} dataset", env_id=env_id)
    except DatasetError as err:
        where = f"data.{name}.path={path}" if path else f"data.{name}.quality={spec.get('quality')}"
        fix = "" if "Fix:" in str(err) else (
            f" Fix: point data.{name}.path at a valid dataset collected in {env_id} "
            f"(obs {obs_dim}, action {action_dim})."
        )
        raise ConfigError(f"The {name} dataset ({where}) cannot be used with env {env_id}: {err}{fix}") from err
    return td


def make_datasets(cfg: Any, obs_dim: int, action_dim: int) -> tuple[TensorDictBase | None, TensorDictBase]:
    """Load or generate the source and target datasets of a run.

    The source set comes from the source env (``env.source_id``), the target set
    from the target env; ``algo=iql_target`` loads no source data. With
    ``data.reward_scale=iql_locomotion`` both are returned with rewards scaled by
    :func:`reward_scale_factor` (before pre-training, so ``h`` learns scaled rewards).

    Returns:
        ``(source, target)``; ``source`` is ``None`` for target-only runs.

    Examples:
        >>> import tempfile
        >>> cfg = {"env": {"id": "tabb/Hopper-morph-v0", "source_id": None},
        ...        "algo": {"use_source": False}, "progress": False,
        ...        "data": {"root": tempfile.mkdtemp(), "seed": 0, "collect_envs": 2, "collect_workers": 1,
        ...                 "target": {"quality": "random", "size": 200, "path": None}}}
        >>> src, tgt = make_datasets(cfg, 11, 3)
        >>> src is None, tgt.shape
        (True, torch.Size([200]))
    """
    target_id, source_id = resolve_env_ids(cfg)
    root = _get(cfg, "data.root")
    common = dict(
        # absolute: the collector's Minari writer mishandles relative roots
        root=None if not root else os.path.abspath(os.path.expanduser(str(root))),
        seed=int(_get(cfg, "data.seed", 0)),
        obs_dim=obs_dim,
        action_dim=action_dim,
        progress=bool(_get(cfg, "progress", True)),
        collect_envs=_get(cfg, "data.collect_envs"),
        collect_workers=_get(cfg, "data.collect_workers"),
    )
    data_cfg = _get(cfg, "data")
    target = load_dataset(dict(data_cfg["target"]), target_id, name="target", **common)
    source = None
    if source_id is not None:
        source = load_dataset(dict(data_cfg["source"]), source_id, name="source", **common)
    factor = reward_scale_factor(cfg, source, target)
    if factor != 1.0:
        _LOG.info("data.reward_scale=%s: source and target rewards multiplied by %.6g "
                  "(1000 / episode-return range of the source and target data)",
                  _get(cfg, "data.reward_scale"), factor)
        source, target = scale_rewards(source, factor), scale_rewards(target, factor)
    return source, target


def episode_returns(td: TensorDictBase) -> torch.Tensor:
    """Returns of the episodes of a flat transition dataset (rows in episode order).

    An episode ends at a row whose ``("next", "done")`` (else ``terminated``) flag is
    set; the rows after the last such flag form one more (unfinished) episode, as
    in IQL's ``split_into_trajectories``.

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({("next", "reward"): torch.ones(5, 1),
        ...                  ("next", "done"): torch.tensor([[False], [True], [False], [False], [True]])}, [5])
        >>> episode_returns(td).tolist()
        [2.0, 3.0]
    """
    reward = td["next", "reward"].reshape(-1).double()
    done = td.get(("next", "done"), None)
    if done is None:
        done = td["next", "terminated"]
    done = done.reshape(-1).clone()
    done[-1] = True
    ends = done.nonzero().squeeze(-1)
    csum = torch.cat([reward.new_zeros(1), reward.cumsum(0)])
    starts = torch.cat([ends.new_zeros(1), ends[:-1] + 1])
    return (csum[ends + 1] - csum[starts]).float()


def reward_scale_factor(cfg: Any, source: TensorDictBase | None, target: TensorDictBase) -> float:
    """The reward multiplier of ``data.reward_scale``.

    * ``none`` (default): ``1``.
    * ``iql_locomotion``: ``1000 / (max_R - min_R)``, IQL's (and CORL's) locomotion
      scaling, with ``R`` the episode returns (:func:`episode_returns`) of the
      training data: the source and target episodes together (only the target
      ones for ``algo=iql_target``). One factor for both datasets keeps the
      source and target rewards on the same scale: TBM compares a source reward
      with ``h``'s prediction, which learnt from both, and the critic regresses both
      domains' targets. [reconstructed: IQL scales one dataset]
    * a positive number: that factor (e.g. the factor a TABB run logged, to give
      ``algo=iql_target`` the same scale, which its target episodes alone would not).

    Raises:
        ConfigError: an unknown option, or all episodes have the same return.

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({("next", "reward"): torch.tensor([[1.0], [1.0], [3.0]]),
        ...                  ("next", "done"): torch.tensor([[False], [True], [True]])}, [3])
        >>> reward_scale_factor({"data": {"reward_scale": "iql_locomotion"}}, None, td)
        1000.0
        >>> reward_scale_factor({"data": {"reward_scale": 2.5}}, None, td)
        2.5
    """
    raw = _get(cfg, "data.reward_scale", "none")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        if not (math.isfinite(raw) and raw > 0):
            raise ConfigError(f"data.reward_scale={raw!r} must be a positive number, none or iql_locomotion. "
                              "Fix: e.g. data.reward_scale=iql_locomotion.")
        return float(raw)
    mode = str(raw)
    if mode == "none":
        return 1.0
    if mode != "iql_locomotion":
        raise ConfigError(f"data.reward_scale={mode!r} is unknown; valid: none, iql_locomotion or a positive number.")
    returns = torch.cat([episode_returns(td) for td in (source, target) if td is not None])
    spread = float(returns.max() - returns.min())
    if not spread > 0:
        raise ConfigError(
            "data.reward_scale=iql_locomotion divides by max - min episode return, which is 0 here "
            f"({returns.numel()} episodes). Fix: use data.reward_scale=none."
        )
    return 1000.0 / spread


def scale_rewards(td: TensorDictBase | None, factor: float) -> TensorDictBase | None:
    """A shallow copy of ``td`` with ``("next", "reward")`` multiplied by ``factor`` (``td`` unchanged).

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({("next", "reward"): torch.ones(2, 1)}, [2])
        >>> scale_rewards(td, 2.0)["next", "reward"].tolist(), td["next", "reward"].tolist()
        ([[2.0], [2.0]], [[1.0], [1.0]])
    """
    if td is None or factor == 1.0:
        return td
    nxt = td.get("next").copy()
    nxt.set("reward", nxt.get("reward") * factor)
    out = td.copy()
    out.set("next", nxt)
    return out


def split_holdout(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``(train_idx, holdout_idx)`` split of ``n`` rows (hold-out of stage 2).

    Examples:
        >>> tr, ho = split_holdout(10, 0.2, seed=0)
        >>> len(tr), len(ho), sorted(tr.tolist() + ho.tolist()) == list(range(10))
        (8, 2, True)
    """
    n_hold = max(1, int(round(n * fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[n_hold:].sort().values, perm[:n_hold].sort().values


def latent_cache_bytes(td: TensorDictBase, keys) -> int:
    """Bytes taken by the cached-latent entries ``keys`` of ``td``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> latent_cache_bytes(TensorDict({"z_s": torch.zeros(10, 4)}, [10]), ["z_s"])
        160
    """
    total = 0
    for key in keys:
        value = td.get(key, None)
        if value is not None:
            total += value.numel() * value.element_size()
    return total


# ----------------------------------------------------------------------------- models
def make_latent_model(cfg: Any, obs_dim: int, action_dim: int):
    """The latent model ``(f, g, h)`` from ``cfg.model``.

    Examples:
        >>> cfg = {"model": {"latent_state_dim": 4, "latent_sa_dim": 4, "encoder_hidden": [8],
        ...        "predictor_hidden": [8], "activation": "relu", "avg_l1_norm": True,
        ...        "termination_head": False}}
        >>> m = make_latent_model(cfg, 11, 3)
        >>> m.latent_state_dim, m.latent_sa_dim
        (4, 4)
    """
    from tabb_torchrl.modules import LatentModel, StateActionEncoder, StateEncoder, TargetDomainPredictor

    from tabb_torchrl.modules.latent import ResidualPredictor

    m = _get(cfg, "model")
    ds, dsa = int(m["latent_state_dim"]), int(m["latent_sa_dim"])
    act = m["activation"]
    enc_hidden = tuple(int(h) for h in m["encoder_hidden"])
    # model.predictor: mlp (the paper's h) | residual (source rows: their own r, f(s') + a learned shift)
    predictor = ResidualPredictor if _get(cfg, "model.predictor", "mlp") == "residual" else TargetDomainPredictor
    return LatentModel(
        StateEncoder(obs_dim, ds, hidden_sizes=enc_hidden, activation=act, avg_l1_norm=bool(m["avg_l1_norm"])),
        StateActionEncoder(ds, action_dim, dsa, hidden_sizes=enc_hidden, activation=act,
                           avg_l1_norm=bool(m["avg_l1_norm"])),
        predictor(dsa, ds, hidden_sizes=tuple(int(h) for h in m["predictor_hidden"]),
                  activation=act, termination_head=bool(m["termination_head"])),
    )


def make_latent_model_loss(cfg: Any, latent_model):
    """The Eq. 6 pre-training loss from ``cfg.pretrain``.

    Examples:
        >>> cfg = {"model": {"latent_state_dim": 4, "latent_sa_dim": 4, "encoder_hidden": [8],
        ...        "predictor_hidden": [8], "activation": "relu", "avg_l1_norm": True,
        ...        "termination_head": False},
        ...        "pretrain": {"reward_weight": 1.0, "dynamics_weight": 1.0, "termination_weight": 1.0,
        ...        "epsilon": 1e-4, "normalize_dynamics": True, "target_encoder": "stop_grad",
        ...        "ema_tau": 0.005}}
        >>> loss = make_latent_model_loss(cfg, make_latent_model(cfg, 11, 3))
        >>> loss.stage
        1
    """
    from tabb_torchrl.objectives.latent_model import LatentModelLoss

    p = _get(cfg, "pretrain")
    return LatentModelLoss(
        latent_model,
        stage=1,
        reward_weight=float(p["reward_weight"]),
        dynamics_weight=float(p["dynamics_weight"]),
        termination_weight=float(p["termination_weight"]),
        variance_eps=float(p["epsilon"]),
        normalize_dynamics=bool(p["normalize_dynamics"]),
        target_latent="ema" if p["target_encoder"] == "ema" else "stop_gradient",
        target_update_rate=float(p["ema_tau"]),
        stage2_reg=float(_get(cfg, "pretrain.stage2_reg", 0.0)),
    )


def make_rl_networks(cfg: Any, obs_dim: int, action_dim: int, latent_model):
    """``(actor, qvalue, value)`` of the RL phase from ``cfg.model``.

    Examples:
        >>> cfg = {"model": {"latent_state_dim": 4, "latent_sa_dim": 4, "encoder_hidden": [8],
        ...        "predictor_hidden": [8], "qvalue_hidden": [8], "value_hidden": [8],
        ...        "actor_hidden": [8], "activation": "relu", "avg_l1_norm": True,
        ...        "termination_head": False, "actor_log_std_init": 0.0,
        ...        "actor_log_std_min": -10.0, "actor_log_std_max": 2.0}}
        >>> actor, q, v = make_rl_networks(cfg, 11, 3, make_latent_model(cfg, 11, 3))
        >>> q.in_keys, v.in_keys
        (['z_sa'], ['z_s'])
    """
    from tabb_torchrl.modules import make_actor, make_latent_qvalue, make_latent_value

    m = _get(cfg, "model")
    act = m["activation"]
    if _get(cfg, "algo.features", "latent") == "raw":  # methods on raw states: Q([s, a]), V(s)
        q_in, v_in = obs_dim + action_dim, obs_dim
    else:
        q_in, v_in = latent_model.latent_sa_dim, latent_model.latent_state_dim
    qvalue = make_latent_qvalue(q_in, hidden_sizes=tuple(m["qvalue_hidden"]), activation=act)
    value = make_latent_value(v_in, hidden_sizes=tuple(m["value_hidden"]), activation=act)
    actor = make_actor(
        obs_dim,
        action_dim,
        hidden_sizes=tuple(m["actor_hidden"]),
        activation=act,
        log_std_init=float(m["actor_log_std_init"]),
        log_std_min=float(m["actor_log_std_min"]),
        log_std_max=float(m["actor_log_std_max"]),
    )
    return actor, qvalue, value


def make_method(cfg: Any, value_network=None, obs_dim: int | None = None, action_dim: int | None = None):
    """The cross-domain method of ``algo.method`` (:mod:`tabb_torchrl.methods`), from ``cfg.loss``.

    ``tabb`` reads ``loss.tau``, ``loss.scaling``, ``loss.std_eps``, ``loss.anchor``
    (``ema``: an EMA copy of ``value_network`` moved by ``loss.anchor_ema_tau``),
    ``loss.use_predicted_termination``, ``algo.source_actor`` and the options beyond the paper
    ``loss.source_target``, ``loss.gate_quantile`` and ``algo.source_in_value``; ``iql`` (IQL on the
    pooled rows) reads nothing. Other registered methods get ``cfg.algo.method_kwargs`` and,
    where their constructor takes them, ``obs_dim``, ``action_dim``, ``env_id`` and ``gamma``.

    Examples:
        >>> make_method({"algo": {"method": "iql"}}).pooled
        True
    """
    import copy

    from tabb_torchrl.methods import make_method as build

    name = str(_get(cfg, "algo.method"))
    if name == "iql":
        return build("iql")
    if name == "tabb":
        lc = _get(cfg, "loss")
        anchor = None
        if lc["anchor"] == "ema":
            anchor = copy.deepcopy(value_network).requires_grad_(False)
        return build(
            "tabb",
            temperature=float(lc["tau"]),
            scaling=str(lc["scaling"]),
            std_eps=float(lc["std_eps"]),
            source_actor=bool(_get(cfg, "algo.source_actor")),
            anchor=anchor,
            value_network=value_network if anchor is not None else None,
            anchor_tau=float(lc["anchor_ema_tau"]),
            use_predicted_termination=bool(lc["use_predicted_termination"]),
            source_target=str(_get(cfg, "loss.source_target", "aligned")),
            gate_quantile=float(_get(cfg, "loss.gate_quantile", 0.9)),
            source_in_value=bool(_get(cfg, "algo.source_in_value", False)),
        )
    kwargs = dict(_get(cfg, "algo.method_kwargs") or {})
    # what a method may need to build its networks: passed when its constructor takes it
    import inspect

    from tabb_torchrl.methods import METHODS

    params = inspect.signature(METHODS[name]).parameters if name in METHODS else {}
    for key, val in (("obs_dim", obs_dim), ("action_dim", action_dim), ("env_id", _get(cfg, "env.id")),
                     ("gamma", _get(cfg, "loss.gamma"))):
        if key in params and key not in kwargs and val is not None:
            kwargs[key] = val
    unknown = sorted(k for k in kwargs if params and k not in params
                     and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()))
    if unknown:
        raise ConfigError(
            f"algo.method_kwargs has keys that method {name!r} does not take: {unknown}; it takes "
            f"{sorted(k for k in params if k not in ('obs_dim', 'action_dim', 'env_id', 'gamma'))}. "
            "Fix: remove or rename them."
        )
    return build(name, **kwargs)


def make_loss(cfg: Any, actor, qvalue, value, latent_model):
    """:class:`~tabb_torchrl.objectives.CrossDomainIQLLoss` with the method of ``algo.method``, and its
    target-network updater.

    ``algo`` sets the method: ``tabb`` (TBM weights, target-aligned source targets),
    ``iql_mixed`` (IQL on the pooled rows), ``iql_target`` (no source rows in the
    batches), ``src_actor`` (TABB with ``algo.source_actor=true``).

    Returns:
        ``(loss_module, target_updater)``; the updater is a TorchRL ``SoftUpdate``.
    """
    from torchrl.objectives import SoftUpdate

    from tabb_torchrl.modules import GaussianPolicyHead
    from tabb_torchrl.objectives import CrossDomainIQLLoss

    lc = _get(cfg, "loss")
    head = next(m for m in actor.modules() if isinstance(m, GaussianPolicyHead))  # make_actor's policy
    loss = CrossDomainIQLLoss(
        actor,
        qvalue,
        value,
        latent_model,
        method=make_method(cfg, value, obs_dim=head.obs_dim, action_dim=int(head.log_std.shape[0])),
        features=str(_get(cfg, "algo.features", "latent")),
        num_qvalue_nets=int(lc["num_qvalue_nets"]),
        gamma=float(lc["gamma"]),
        expectile=float(lc["expectile"]),
        beta=float(lc["beta"]),
        huber_delta=None if lc["huber_delta"] is None else float(lc["huber_delta"]),
        max_weight=float(lc["max_weight"]),
    )
    updater = SoftUpdate(loss, tau=float(_get(cfg, "optim.target_update_tau")))
    return loss, updater


def make_pretrain_buffer(cfg: Any, source, target_train, *, seed: int, device):
    """The stage-1 buffer: ``pretrain.n_source`` source + ``pretrain.n_target`` target rows per batch.

    Target-only runs (``source=None``) draw target rows only.
    """
    from tabb_torchrl.data import make_source_target_buffer

    n_src = int(_get(cfg, "pretrain.n_source")) if source is not None else 0
    return make_source_target_buffer(
        source if n_src else None,
        target_train,
        n_source=n_src,
        n_target=int(_get(cfg, "pretrain.n_target")),
        storage=_get(cfg, "data.storage"),
        scratch_dir=_get(cfg, "data.scratch_dir"),
        seed=seed,
        device=device,
    )


def make_rl_buffer(cfg: Any, source, target, latent_model, *, seed: int, device, method=None):
    """The RL buffer (``data.n_source`` + ``data.n_target`` rows per batch), with the latents of every
    stored row cached in its storage when ``pretrain.cache_latents`` (the latent model must be frozen;
    ``algo.features=raw`` caches none) and the cross-domain method's own columns
    (:meth:`~tabb_torchrl.methods.CrossDomainMethod.add_columns`).

    Returns:
        ``(replay_buffer, latent_cache_bytes)``.
    """
    from tabb_torchrl.data import make_source_target_buffer

    n_source, n_target = batch_split(cfg)
    cache = bool(_get(cfg, "pretrain.cache_latents")) and _get(cfg, "algo.features", "latent") == "latent"
    bs = int(_get(cfg, "pretrain.cache_batch_size"))
    nbytes = [0]

    def columns(td):
        if cache:
            latent_model.cache_latents(td, batch_size=bs)
            nbytes[0] += latent_cache_bytes(td, latent_model.out_keys)
        if method is not None:
            method.add_columns(td)

    rb = make_source_target_buffer(
        source if n_source else None,
        target,
        n_source=n_source,
        n_target=n_target,
        storage=_get(cfg, "data.storage"),
        scratch_dir=_get(cfg, "data.scratch_dir"),
        seed=seed,
        device=device,
        columns=columns,
    )
    return rb, nbytes[0]


def make_optimizers(cfg: Any, loss_module) -> dict[str, torch.optim.Optimizer]:
    """Adam optimisers of the critic, the value and the actor (``cfg.optim``).

    With ``optim.update=fused`` (default) they are ``fused=True`` Adams (one kernel
    per step; the same update rule as the default ``foreach`` implementation).

    Returns:
        ``{"qvalue": ..., "value": ..., "actor": ...}``.
    """
    o = _get(cfg, "optim")
    wd = float(o["weight_decay"])
    groups = {
        "qvalue": list(loss_module.qvalue_network_params.flatten_keys().values()),
        "value": list(loss_module.value_network_params.flatten_keys().values()),
        "actor": list(loss_module.actor_network_params.flatten_keys().values()),
    }
    lrs = {"qvalue": o["lr_qvalue"], "value": o["lr_value"], "actor": o["lr_actor"]}
    # optim.update=fused: fused Adam kernels (one per optimiser step; same update rule)
    kw = {"fused": True} if _get(cfg, "optim.update", "fused") == "fused" else {}
    return {k: torch.optim.Adam(v, lr=float(lrs[k]), weight_decay=wd, **kw) for k, v in groups.items()}


def make_actor_scheduler(cfg: Any, actor_optimizer: torch.optim.Optimizer):
    """IQL's cosine decay of the actor learning rate over ``optim.steps`` (or ``None``).

    Examples:
        >>> import torch
        >>> opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = make_actor_scheduler({"optim": {"actor_cosine_decay": True, "steps": 10}}, opt)
        >>> type(sched).__name__
        'CosineAnnealingLR'
    """
    if not _get(cfg, "optim.actor_cosine_decay"):
        return None
    steps = max(1, int(_get(cfg, "optim.steps")))
    return torch.optim.lr_scheduler.CosineAnnealingLR(actor_optimizer, T_max=steps)
