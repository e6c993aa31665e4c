"""Algorithms with their own networks and update, outside the cross-domain IQL core: the one table
the recipe, the trainer and the run loader dispatch on (``algo.name``).

* ``cql`` -- TorchRL's ``CQLLoss`` (:mod:`tabb_torchrl.pipeline.cql`; ``optim.update=fused``, the default,
  computes it with :class:`~tabb_torchrl.pipeline.cql_fused.FusedCQLUpdate`);
* ``mobody`` -- MOBODY on the TD3 backbone (:mod:`tabb_torchrl.pipeline.td3`,
  :class:`~tabb_torchrl.methods.MOBODY`), settings ``algo.td3`` and ``algo.mobody``;
* ``bosa`` -- BOSA on the TD3 backbone (:class:`~tabb_torchrl.methods.BOSA`), settings ``algo.td3``
  and ``algo.bosa``.

An entry (:class:`OwnBackbone`) builds ``(actor, loss_module, target_updater, optimizers)`` from the
config (``make``), pre-trains the method's models once per run (``prepare``), names the object whose
``add_columns`` writes per-row columns into the RL buffer (``columns``), and builds the update
(``make_update``: ``update() -> metrics`` on the source/target buffer). Checkpoints hold the loss
module's ``state_dict`` and the optimisers, as for every algo.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch

from tabb_torchrl.pipeline.config import ConfigError, _get

__all__ = ["OwnBackbone", "OWN_BACKBONES", "own_backbone", "make_mobody", "make_bosa"]


@dataclass(frozen=True)
class OwnBackbone:
    """How the recipe builds and runs an algo with its own backbone.

    Attributes:
        make (Callable): ``(cfg, env_id, *, device) -> (actor, loss_module, target_updater, optimizers)``.
        make_update (Callable): ``(cfg, loss_module, replay_buffer, optimizers, target_updater, *, step) -> update``.
        prepare (Callable, optional): ``(loss_module, source, target, *, device, progress[, checkpoint])``,
            once per run before RL (the trainer records that it ran; checkpoints hold what it trained).
            ``checkpoint`` is given when the loss module's method is a
            :class:`~tabb_torchrl.methods.base.ResumablePrepare`: its safe points may write a checkpoint
            of the partial pre-training, from which a resumed run continues.
        columns (Callable, optional): ``loss_module -> object`` with ``add_columns(td)``, called on the data
            stored in the RL buffer (every session, a resumed one included).

    Examples:
        >>> own_backbone("mobody").columns is not None, own_backbone("cql").prepare is None
        (True, True)
    """

    make: Callable
    make_update: Callable
    prepare: Callable | None = None
    columns: Callable | None = None


def _method_from_config(cfg: Any, section: str, cls, **fixed) -> Callable[[int, int, float], Any]:
    """A factory ``(obs_dim, action_dim, max_action) -> cls(...)`` with the keyword arguments of ``algo.<section>``."""
    given = _get(cfg, f"algo.{section}") or {}
    given = dict(given.items()) if hasattr(given, "items") else {}
    params = inspect.signature(cls).parameters
    reserved = {"obs_dim", "action_dim", "max_action", *fixed}
    accepted = sorted(k for k, p in params.items() if k not in reserved and p.kind is not p.VAR_KEYWORD)
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise ConfigError(f"algo.{section} has keys that {cls.__name__} does not take: {unknown}; it takes "
                          f"{accepted}. Fix: remove them (recipes/config/algo/{section}.yaml lists every key).")

    def factory(obs_dim: int, action_dim: int, max_action: float):
        extra = {"max_action": max_action} if "max_action" in params else {}
        try:
            return cls(obs_dim, action_dim, **fixed, **extra, **given)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"algo.{section}: {err} Fix: correct the value in algo.{section} "
                              f"(recipes/config/algo/{section}.yaml documents each key).") from err

    return factory


def make_mobody(cfg: Any, env_id: str, *, device: torch.device | str = "cpu"):
    """MOBODY's networks, loss, soft update and optimisers (:func:`~tabb_torchrl.pipeline.td3.make_td3`).

    Examples:
        >>> cfg = {"model": {"actor_hidden": [8], "qvalue_hidden": [8], "activation": "relu"},
        ...        "loss": {"gamma": 0.99}, "optim": {"target_update_tau": 0.005, "lr_actor": 3e-4,
        ...        "lr_qvalue": 3e-4, "weight_decay": 0.0},
        ...        "algo": {"td3": {}, "mobody": {"hidden": 8, "source_penalty": "none"}}}
        >>> actor, loss, updater, opts = make_mobody(cfg, "tabb/Hopper-morph-v0")
        >>> type(loss.method).__name__, loss.method.env_id
        ('MOBODY', 'tabb/Hopper-morph-v0')
    """
    from tabb_torchrl.methods.mobody import MOBODY
    from tabb_torchrl.pipeline.td3 import make_td3

    return make_td3(cfg, env_id, _method_from_config(cfg, "mobody", MOBODY, env_id=env_id), device=device)


def make_bosa(cfg: Any, env_id: str, *, device: torch.device | str = "cpu"):
    """BOSA's networks, loss, soft update and optimisers (:func:`~tabb_torchrl.pipeline.td3.make_td3`).

    Examples:
        >>> cfg = {"model": {"actor_hidden": [8], "qvalue_hidden": [8], "activation": "relu"},
        ...        "loss": {"gamma": 0.99}, "optim": {"target_update_tau": 0.005, "lr_actor": 3e-4,
        ...        "lr_qvalue": 3e-4, "weight_decay": 0.0}, "algo": {"td3": {}, "bosa": {"vae_hidden": 8}}}
        >>> actor, loss, updater, opts = make_bosa(cfg, "tabb/Hopper-morph-v0")
        >>> type(loss.method).__name__, loss.method.policy_vae.max_action
        ('BOSA', 1.0)
        >>> make_bosa({**cfg, "algo": {"bosa": {"lambda": 1.0}}}, "tabb/Hopper-morph-v0")
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: algo.bosa has keys that BOSA does not take: ['lambda']; ...
    """
    from tabb_torchrl.methods.bosa import BOSA
    from tabb_torchrl.pipeline.td3 import make_td3

    return make_td3(cfg, env_id, _method_from_config(cfg, "bosa", BOSA), device=device)


def _make_cql(cfg, env_id, *, device="cpu"):
    from tabb_torchrl.pipeline.cql import make_cql

    return make_cql(cfg, env_id, device=device)


def _make_cql_update(cfg, loss_module, replay_buffer, optimizers, target_updater, *, step=0):
    from tabb_torchrl.pipeline.cql import make_cql_update

    return make_cql_update(cfg, loss_module, replay_buffer, optimizers, target_updater, step=step)


def _make_td3_update(cfg, loss_module, replay_buffer, optimizers, target_updater, *, step=0):
    from tabb_torchrl.pipeline.td3 import make_td3_update

    return make_td3_update(cfg, loss_module, replay_buffer, optimizers, target_updater, step=step)


def _td3_prepare(loss_module, source, target, *, device=None, progress=False, **kwargs) -> None:
    loss_module.method.prepare(source, target, device=device, progress=progress, **kwargs)  # kwargs: checkpoint


def _td3_columns(loss_module):
    return loss_module.method


#: ``algo.name`` -> :class:`OwnBackbone` of every algo outside the cross-domain IQL core.
OWN_BACKBONES: dict[str, OwnBackbone] = {
    "cql": OwnBackbone(make=_make_cql, make_update=_make_cql_update),
    "mobody": OwnBackbone(make=make_mobody, make_update=_make_td3_update, prepare=_td3_prepare, columns=_td3_columns),
    "bosa": OwnBackbone(make=make_bosa, make_update=_make_td3_update, prepare=_td3_prepare, columns=_td3_columns),
}


def own_backbone(name: str | None) -> OwnBackbone | None:
    """The :class:`OwnBackbone` of ``algo.name``, or ``None`` for algos on the cross-domain IQL core.

    Examples:
        >>> own_backbone("tabb") is None, own_backbone("bosa") is OWN_BACKBONES["bosa"]
        (True, True)
    """
    return OWN_BACKBONES.get(str(name)) if name is not None else None
