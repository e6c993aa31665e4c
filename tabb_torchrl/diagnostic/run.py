"""Load a finished run of ``recipes/tabb_offline.py`` (its ``config.yaml`` and checkpoint) for the diagnostic."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DiagnosticError", "LoadedRun", "load_run", "load_run_data", "value_of_observations"]


class DiagnosticError(ValueError):
    """A run the diagnostic cannot read (the message names the problem and the fix).

    Examples:
        >>> issubclass(DiagnosticError, ValueError)
        True
    """


@dataclass
class LoadedRun:
    """The networks of a finished run, as its checkpoint left them.

    Attributes:
        run_dir (Path): the run directory.
        cfg: its configuration (``config.yaml``, an omegaconf ``DictConfig``).
        progress (dict): the checkpoint's phase and step counters.
        env_id (str): the target env.
        source_id (str or None): the source env (``None`` for target-only runs).
        obs_dim (int), action_dim (int): the env's sizes.
        latent_model: the frozen ``(f, g, h)``.
        loss: the :class:`~tabb_torchrl.objectives.CrossDomainIQLLoss` with the trained critic, value
            network and actor (and the run's cross-domain method).
        actor: the policy (its parameters are the loss's).
    """

    run_dir: Path
    cfg: Any
    progress: dict
    env_id: str
    source_id: str | None
    obs_dim: int
    action_dim: int
    latent_model: Any
    loss: Any
    actor: Any

    @property
    def gamma(self) -> float:
        """The discount of the run."""
        return float(self.cfg.loss.gamma)

    @property
    def label(self) -> str:
        """``"<algo> seed <seed>"``."""
        return f"{self.cfg.algo.name} seed {self.cfg.seed}"

    @torch.no_grad()
    def value(self, features: torch.Tensor) -> torch.Tensor:
        """``V`` on features (latents ``z``, or states for raw-feature runs), ``[N]``, without gradient."""
        return self.loss.networks().value_detached(features)


def load_run(run_dir: str | os.PathLike, *, checkpoint: str = "checkpoint.pt") -> LoadedRun:
    """Rebuild the networks of a run from its ``config.yaml`` and checkpoint.

    Args:
        run_dir: a run directory of ``recipes/tabb_offline.py``.

    Keyword Args:
        checkpoint (str): the checkpoint's file name. Defaults to ``"checkpoint.pt"``.

    Returns:
        LoadedRun: the frozen latent model, the loss module (critic, value, actor, method) and the actor.

    Raises:
        DiagnosticError: a folder without ``config.yaml`` or the checkpoint, or a run of an algorithm
            whose networks the diagnostic does not read (CQL, raw-state methods).

    Examples:
        >>> import tempfile
        >>> load_run(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        tabb_torchrl.diagnostic.run.DiagnosticError: ... has no config.yaml, checkpoint.pt: the diagnostic reads a run of recipes/tabb_offline.py (its config.yaml and checkpoint; keep checkpoint.save_final=true). Fix: pass the run directory the recipe printed ('run ... in <dir>').
    """
    from omegaconf import OmegaConf

    from tabb_torchrl.pipeline import (
        env_dims, load_checkpoint, make_latent_model, make_loss, make_rl_networks, resolve_env_ids,
    )

    run_dir = Path(run_dir)
    missing = [name for name in ("config.yaml", checkpoint) if not (run_dir / name).is_file()]
    if missing:
        raise DiagnosticError(
            f"{run_dir} has no {', '.join(missing)}: the diagnostic reads a run of recipes/tabb_offline.py (its "
            "config.yaml and checkpoint; keep checkpoint.save_final=true). Fix: pass the run directory the recipe "
            "printed ('run ... in <dir>')."
        )
    cfg = OmegaConf.load(run_dir / "config.yaml")
    cfg.progress = False
    algo = str(cfg.algo.name)
    if algo == "cql" or str(cfg.algo.get("features", "latent")) == "raw":
        raise DiagnosticError(
            f"{run_dir} is a run of algo={algo} on raw states: it has no trained latent model (f, g, h), which the "
            "diagnostic's TBM and predictor analyses read. Fix: pass a run of tabb, src_actor, iql_mixed or iql_target."
        )
    ckpt = load_checkpoint(run_dir / checkpoint)
    env_id, source_id = resolve_env_ids(cfg)
    obs_dim, action_dim = env_dims(env_id)
    latent_model = make_latent_model(cfg, obs_dim, action_dim)
    latent_model.load_state_dict(ckpt["latent_model"])
    latent_model.freeze()
    actor, qvalue, value = make_rl_networks(cfg, obs_dim, action_dim, latent_model)
    loss, _ = make_loss(cfg, actor, qvalue, value, latent_model)
    loss.load_state_dict(ckpt["loss_module"])
    loss.eval()
    return LoadedRun(run_dir, cfg, dict(ckpt["progress"]), env_id, source_id, obs_dim, action_dim,
                     latent_model, loss, actor)


def load_run_data(run: LoadedRun):
    """The run's source and target datasets (from its dataset cache), with its reward scale.

    The rewards are multiplied by the run's ``data.reward_scale`` factor, as in training; the factor
    is returned too (a replayed reward must be scaled by it).

    Returns:
        ``(source, target, factor)``; ``source`` is ``None`` for target-only runs.
    """
    from omegaconf import OmegaConf

    from tabb_torchrl.pipeline import make_datasets, reward_scale_factor, scale_rewards

    raw_cfg = OmegaConf.create(OmegaConf.to_container(run.cfg, resolve=True))
    raw_cfg.data.reward_scale = "none"
    source, target = make_datasets(raw_cfg, run.obs_dim, run.action_dim)
    factor = reward_scale_factor(run.cfg, source, target)
    return scale_rewards(source, factor), scale_rewards(target, factor), factor


def value_of_observations(latent_model: Any, value_fn: Callable, observations: Any, batch_size: int = 8192) -> np.ndarray:
    """``V(f(s))`` for observations (numpy in, numpy out), without gradient.

    Examples:
        >>> import torch
        >>> from tabb_torchrl import LatentModel
        >>> m = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,)).freeze()
        >>> value_of_observations(m, lambda z: z.sum(-1, keepdim=True), np.zeros((5, 3))).shape
        (5,)
    """
    obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32)
    out = []
    with torch.no_grad():
        for start in range(0, obs.shape[0], batch_size):
            z = latent_model.encode_state(obs[start : start + batch_size])
            out.append(value_fn(z).reshape(-1))
    return torch.cat(out).numpy().astype(np.float64)
