"""MOBODY on the TD3 backbone: model-based off-dynamics offline RL (Guo, Yang, Xu & Liu, "MOBODY:
Model Based Off-Dynamics Offline Reinforcement Learning", arXiv 2506.08460; authors' code
``guoyihonggyh/MOBODY-Model-Based-Off-Dynamics-Offline-Reinforcement-Learning``: ``train_mobody.py``,
``algo/offline_offline/mobody.py``, ``algo/dynamics/mobody_dynamics.py``, ``mobody_module.py``).

Before RL (:meth:`MOBODY.prepare`):

1. optionally DARA's two domain classifiers (:class:`~tabb_torchrl.methods.DARA`, 5,000 steps),
   whose clipped log-ratio corrects the source rewards (``source_penalty="dara"``);
2. the target dynamics model (:class:`~tabb_torchrl.methods.mobody_model.MOBODYDynamics`, an ensemble
   of 7 as one module): a state encoder and a transition decoder shared by both domains, one action
   encoder per domain::

       z_s = f(s),  z_a = g_d(z_s, a),  s'_hat = h(z_s + z_a)         d in {source, target}

   fitted on both datasets (:func:`~tabb_torchrl.methods.mobody_model.train_mobody_dynamics`);
   ``h(f(s))`` also reconstructs ``s``. The model and its training live in
   :mod:`tabb_torchrl.methods.mobody_model` (re-exported here).

During RL, every ``rollout_every`` steps (:meth:`MOBODY.refresh_model_rows`), one-step rollouts of
the target model from 50,000 source states (actions of the current policy), 2,000 target states
(policy actions) and the same 50,000 source states with their **dataset** actions (the source
``(s, a)`` relabelled with predicted target next states) are added to a buffer of model rows, with
the predicted reward minus ``0.1 x`` the ensemble's disagreement, rows of disagreement above 10
dropped. Each step trains on 128 source + 128 target + 64 model rows (:meth:`MOBODY.edit_batch`);
the actor loss is::

    L_pi = -2.5 mean Q(s, pi(s)) / mean|Q| + bc_coef mean_real[ w (pi(s) - a)^2 ],
    w = min(exp(3 Q(s, a) / mean|Q(s, a)|), 100)                                 (q_weighted_bc_loss)

See ``docs/methods/mobody.md`` for the defaults, their sources and what is reconstructed.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from tabb_torchrl.keys import SOURCE, TARGET
from tabb_torchrl.methods.base import Checkpoint, ResumablePrepare
from tabb_torchrl.methods.dara import DARA, LOG_RATIO_COLUMN, dara_reward
from tabb_torchrl.methods.mobody_model import MOBODYDynamics, ensemble_disagreement, train_mobody_dynamics
from tabb_torchrl.objectives.functional import masked_mean
from tabb_torchrl.pipeline.td3 import MODEL_ROWS, TD3Batch, TD3Method

__all__ = [
    "MOBODY",
    "MOBODYDynamics",
    "ModelRowBuffer",
    "EnvTermination",
    "SOURCE_PENALTIES",
    "TERMINATIONS",
    "train_mobody_dynamics",
    "ensemble_disagreement",
    "penalize_and_filter",
    "q_weighted_bc_loss",
]

_LOG = logging.getLogger(__name__)

#: Corrections of the source rewards: ``"dara"`` (DARA's classifier log-ratio, ``+ coef clip(Δ, -10, 10)``),
#: ``"par"`` (``- coef mean_j (s'_j - s'_hat_j)^2`` of the target model, PAR-style) or ``"none"``.
SOURCE_PENALTIES = ("dara", "par", "none")

#: How model rows get their termination flag: ``"env"`` (the target env's own health check on the
#: predicted next state, :class:`EnvTermination`) or ``"none"`` (never terminal).
TERMINATIONS = ("env", "none")


# ----------------------------------------------------------------------------- equations
def penalize_and_filter(reward: torch.Tensor, uncertainty: torch.Tensor, coef: float, max_uncertainty: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Model-row rewards :math:`\hat r - c\,u` and the rows kept (:math:`u \le u_{\max}`) (MOPO-style penalty, MOBODY's filter).

    Args:
        reward (torch.Tensor): ``[B]`` predicted rewards.
        uncertainty (torch.Tensor): ``[B]`` :func:`~tabb_torchrl.methods.mobody_model.ensemble_disagreement`.
        coef (float): ``c >= 0``.
        max_uncertainty (float): rows above it are dropped.

    Returns:
        ``(penalised rewards [B], keep [B] bool)``.

    Examples:
        >>> import torch
        >>> r, keep = penalize_and_filter(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 20.0, 5.0]), 0.1, 10.0)
        >>> r.tolist(), keep.tolist()
        ([0.8999999761581421, -1.0, 1.5], [True, False, True])
    """
    return reward - coef * uncertainty, uncertainty <= max_uncertainty


def q_weighted_bc_loss(policy_action: torch.Tensor, data_action: torch.Tensor, q: torch.Tensor,
                       temperature: float = 3.0, max_weight: float = 100.0, mask: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""MOBODY's Q-weighted behaviour cloning :math:`\operatorname{mean}_{i,j}\, w_i (\pi(s_i)_j - a_{ij})^2`.

    .. math::

        w_i = \min\Big(\exp\big(T\, Q(s_i, a_i) / \operatorname{mean}_k |Q(s_k, a_k)|\big),\ w_{\max}\Big)

    with ``Q`` the minimum of the twin critics at the dataset's actions (no gradient), ``T = 3``,
    ``w_max = 100``; the mean runs over rows and action dimensions (authors' ``bc_loss``).

    Args:
        policy_action (torch.Tensor): ``[B, A]`` ``pi(s)``.
        data_action (torch.Tensor): ``[B, A]``.
        q (torch.Tensor): ``[B]`` ``Q(s, a)`` (detached).
        temperature (float): ``T``. Defaults to ``3.0``.
        max_weight (float): ``w_max``. Defaults to ``100.0``.
        mask (torch.Tensor, optional): ``[B]`` bool, the rows that count (both means run over them only).

    Returns:
        ``(loss, w)``.

    Examples:
        >>> import math, torch
        >>> loss, w = q_weighted_bc_loss(torch.tensor([[1.0], [0.0]]), torch.zeros(2, 1), torch.tensor([4.0, 0.0]))
        >>> w                                   # exp(3 * [4, 0] / 2) = [e^6, 1], the first clipped at 100
        tensor([100.,   1.])
        >>> loss                                # (100 * 1 + 1 * 0) / 2
        tensor(50.)
    """
    w = torch.exp(temperature * q / masked_mean(q.abs(), mask)).clamp(max=max_weight)
    return masked_mean((w.unsqueeze(-1) * (policy_action - data_action) ** 2).mean(-1), mask), w


# ----------------------------------------------------------------------------- model rows and termination
class ModelRowBuffer:
    """A ring buffer of model rows (``s, a, r, s', d``), first in first out, with a checkpointable state.

    Args:
        capacity (int): rows kept (the oldest are overwritten).

    Examples:
        >>> import torch
        >>> buf = ModelRowBuffer(3)
        >>> def rows(*values):
        ...     x = torch.tensor(values).unsqueeze(-1)
        ...     return x, x, x.squeeze(-1), x, torch.zeros(len(values))
        >>> buf.add(*rows(0.0, 1.0)); buf.add(*rows(2.0, 3.0))
        >>> len(buf), buf.observation.squeeze(-1).tolist()          # rows 0..3 into 3 slots: 3 overwrote 0
        (3, [3.0, 1.0, 2.0])
    """

    _FIELDS = ("observation", "action", "reward", "next_observation", "terminated")

    def __init__(self, capacity: int):
        if int(capacity) < 1:
            raise ValueError(f"ModelRowBuffer: capacity must be >= 1, got {capacity}.")
        self.capacity = int(capacity)
        self.ptr = 0
        for name in self._FIELDS:
            setattr(self, name, None)

    def __len__(self) -> int:
        return 0 if self.observation is None else self.observation.shape[0]

    def add(self, observation, action, reward, next_observation, terminated) -> None:
        """Append rows (the oldest overwritten once ``capacity`` is reached)."""
        new = dict(zip(self._FIELDS, (observation, action, reward, next_observation, terminated)))
        n = new["observation"].shape[0]
        if n == 0:
            return
        if n > self.capacity:  # only the last `capacity` rows can stay
            new = {k: v[-self.capacity:] for k, v in new.items()}
            n = self.capacity
        size = len(self)
        if size < self.capacity:  # still growing: append what fits
            fit = min(n, self.capacity - size)
            for k, v in new.items():
                setattr(self, k, v[:fit].clone() if getattr(self, k) is None else torch.cat([getattr(self, k), v[:fit]]))
            self.ptr = (size + fit) % self.capacity
            new = {k: v[fit:] for k, v in new.items()}
            n -= fit
        if n:
            pos = (self.ptr + torch.arange(n)) % self.capacity
            for k, v in new.items():
                getattr(self, k)[pos.to(v.device)] = v
            self.ptr = int((self.ptr + n) % self.capacity)

    def sample(self, n: int, generator: torch.Generator | None = None) -> TD3Batch:
        """``n`` rows drawn uniformly with replacement, as a :class:`TD3Batch` of :data:`MODEL_ROWS` rows."""
        if len(self) == 0:
            raise RuntimeError("ModelRowBuffer.sample: the buffer is empty (no model rows were kept).")
        idx = torch.randint(len(self), (int(n),), generator=generator).to(self.observation.device)
        return TD3Batch(self.observation[idx], self.action[idx], self.reward[idx], self.next_observation[idx],
                        self.terminated[idx], torch.full((int(n),), MODEL_ROWS, dtype=torch.long,
                                                         device=self.observation.device))

    def state_dict(self) -> dict:
        """The rows and the write position."""
        return {"capacity": self.capacity, "ptr": self.ptr, **{k: getattr(self, k) for k in self._FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.capacity, self.ptr = int(state["capacity"]), int(state["ptr"])
        for k in self._FIELDS:
            setattr(self, k, state[k])

    def to(self, device) -> "ModelRowBuffer":
        for k in self._FIELDS:
            if getattr(self, k) is not None:
                setattr(self, k, getattr(self, k).to(device))
        return self


class EnvTermination:
    """Termination of predicted next states by the env's own health check (``is_healthy``).

    Each next state is put into the env (:func:`~tabb_torchrl.envs.state.set_state_from_observation`)
    and the env's public ``is_healthy`` read (Hopper, Walker2d, Ant: height / angle / finiteness
    ranges of the env, a target's own settings included); envs without it (HalfCheetah, Adroit)
    never terminate.

    Examples:
        >>> import numpy as np
        >>> term = EnvTermination("Hopper-v5")
        >>> obs = np.zeros((2, 11)); obs[:, 0] = [1.25, 0.3]      # torso height 1.25 (healthy), 0.3 (fallen)
        >>> term(obs).tolist()
        [False, True]
        >>> EnvTermination("HalfCheetah-v5")(np.zeros((2, 17))).tolist()
        [False, False]
    """

    def __init__(self, env_id: str):
        from tabb_torchrl.envs import make_env

        self.env_id = env_id
        self.env = make_env(env_id)
        self.checks = hasattr(self.env.unwrapped, "is_healthy")

    def __call__(self, next_observation) -> np.ndarray:
        obs = np.asarray(next_observation, dtype=np.float64)
        if not self.checks:
            return np.zeros(obs.shape[0], dtype=bool)
        from tabb_torchrl.envs.state import set_state_from_observation

        out = np.empty(obs.shape[0], dtype=bool)
        base = self.env.unwrapped
        for i, row in enumerate(obs):  # one MuJoCo state per row (no batched health check in gymnasium)
            if not np.isfinite(row).all():
                out[i] = True
                continue
            set_state_from_observation(self.env, row)
            out[i] = not bool(base.is_healthy)
        return out


# ----------------------------------------------------------------------------- the method
class MOBODY(ResumablePrepare, TD3Method):
    r"""MOBODY on the TD3 backbone: target-model rows, an optional source-reward correction and a
    Q-weighted behaviour-cloning actor regulariser (Guo et al., arXiv 2506.08460).

    :meth:`prepare` fits DARA's classifiers (``source_penalty="dara"``) and the dynamics model
    (:func:`~tabb_torchrl.methods.mobody_model.train_mobody_dynamics`). :meth:`edit_batch` corrects the
    source rewards (DARA: ``r + penalty_coef clip(Δ, -10, 10)`` from the cached column; PAR:
    ``r - penalty_coef mean_j (s'_j - s'_hat_j)^2``), refreshes the model rows every ``rollout_every`` steps
    (:meth:`refresh_model_rows`) and appends ``model_rows`` of them. :meth:`actor_regularizer` is
    ``bc_coef`` times :func:`q_weighted_bc_loss` on the dataset rows. The backbone's settings for
    MOBODY (no target actor, no target noise, an actor step every step, the actor on
    ``min(Q_1, Q_2)`` scaled by ``2.5 / mean|Q|``) are in ``recipes/config/algo/mobody.yaml``.

    Args:
        obs_dim (int): state size (passed by the recipe).
        action_dim (int): action size (passed by the recipe).
        env_id (str, optional): the target env (passed by the recipe; termination of model rows).

    Keyword Args:
        latent_dim, hidden, action_hidden, ensemble_size, num_elites:
            :class:`~tabb_torchrl.methods.mobody_model.MOBODYDynamics`
            (``16, 256, 32, 7, 5``: the authors' ``MOBODYModule`` / ``train_mobody.py``).
        dynamics_lr (float): Adam learning rate of the model. Defaults to ``1e-3`` (``--dynamics_lr``).
        dynamics_batch_size (int): rows per member and step. Defaults to ``256`` (``train(batch_size=256)``).
        dynamics_max_epochs (int, optional): epochs at most; ``None`` (default, authors): until
            ``dynamics_patience`` epochs without improvement.
        dynamics_patience (int): Defaults to ``5`` (``max_epochs_since_update``).
        target_passes (int): passes over the target rows per epoch. Defaults to ``3`` (authors).
        target_encoder_weight (float): encoder-loss weight of target rows. Defaults to ``5.0`` (authors).
        source_reward_weight (float): reward-loss weight of source rows. Defaults to ``0.01`` (authors).
        rollout_every (int): RL steps between refreshes of the model rows. Defaults to ``5000`` (authors).
        rollout_source (int): source states per refresh. Defaults to ``50_000`` (authors).
        rollout_target (int): target states per refresh. Defaults to ``2000`` (authors).
        relabel_source (bool): also relabel the source ``(s, a)`` with predicted target next states.
            Defaults to ``True`` (``--use_src_sa_to_get_target_next_state 1``).
        model_rows (int): model rows per batch. Defaults to ``64`` (``fake_batch_scale 0.5`` x 128).
        model_buffer_size (int): model rows kept. Defaults to ``1_000_000`` (authors' ``ReplayBuffer``).
        uncertainty_coef (float): reward penalty per unit of disagreement. Defaults to ``0.1``
            (``--env_penalty_coef``; the README's example run uses 5).
        max_uncertainty (float): model rows with a larger disagreement are dropped. Defaults to ``10.0``
            (``--env_filter``).
        bc_coef (float): weight of the behaviour cloning. Defaults to ``1.0`` (``--bc_coef``).
        bc_temperature (float): ``T`` of :func:`q_weighted_bc_loss`. Defaults to ``3.0`` (authors).
        bc_max_weight (float): ``w_max``. Defaults to ``100.0`` (authors).
        source_penalty (str): :data:`SOURCE_PENALTIES`. Defaults to ``"dara"`` (the README's run).
        penalty_coef (float): weight of the source correction. Defaults to ``0.1`` (``--penalty_coef``).
        dara_classifier_steps (int): DARA's classifier steps. Defaults to ``5000`` (authors: ``10 * 500``).
        termination (str): :data:`TERMINATIONS`. Defaults to ``"env"`` **[reconstructed]**.
        chunk_size (int): rows per model forward in a refresh. Defaults to ``16384``.
        seed (int, optional): seed of the model's training, rollouts and model-row draws; ``None``
            (default) draws it from the run's torch RNG **[reconstructed]**.

    Examples:
        >>> import torch
        >>> m = MOBODY(obs_dim=2, action_dim=1, hidden=8, termination="none", source_penalty="none")
        >>> real = torch.tensor([0, 1, 2])                      # source, target, model row
        >>> b = TD3Batch(torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, 2), torch.zeros(3), real)
        >>> q = lambda s, a: torch.tensor([[4.0, 0.0, 7.0], [5.0, 0.0, 9.0]])   # min: [4, 0, 7]; dataset rows: w = [100, 1]
        >>> loss, metrics = m.actor_regularizer(b, torch.tensor([[1.0], [0.0], [5.0]]), q)
        >>> loss                                                # the model row is not cloned: (100 * 1 + 0) / 2
        tensor(50.)
    """

    name = "mobody"

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        env_id: str | None = None,
        *,
        latent_dim: int = 16,
        hidden: int = 256,
        action_hidden: int = 32,
        ensemble_size: int = 7,
        num_elites: int = 5,
        dynamics_lr: float = 1e-3,
        dynamics_batch_size: int = 256,
        dynamics_max_epochs: int | None = None,
        dynamics_patience: int = 5,
        target_passes: int = 3,
        target_encoder_weight: float = 5.0,
        source_reward_weight: float = 0.01,
        rollout_every: int = 5000,
        rollout_source: int = 50_000,
        rollout_target: int = 2000,
        relabel_source: bool = True,
        model_rows: int = 64,
        model_buffer_size: int = 1_000_000,
        uncertainty_coef: float = 0.1,
        max_uncertainty: float = 10.0,
        bc_coef: float = 1.0,
        bc_temperature: float = 3.0,
        bc_max_weight: float = 100.0,
        source_penalty: str = "dara",
        penalty_coef: float = 0.1,
        dara_classifier_steps: int = 5000,
        termination: str = "env",
        chunk_size: int = 16384,
        seed: int | None = None,
    ):
        super().__init__()
        if source_penalty not in SOURCE_PENALTIES:
            raise ValueError(f"MOBODY: source_penalty must be one of {SOURCE_PENALTIES}, got {source_penalty!r}.")
        if termination not in TERMINATIONS:
            raise ValueError(f"MOBODY: termination must be one of {TERMINATIONS}, got {termination!r}.")
        if termination == "env" and not env_id:
            raise ValueError("MOBODY: termination='env' needs the target env id (env_id=...); "
                             "pass termination='none' for model rows that never terminate.")
        for key, value in (("rollout_every", rollout_every), ("model_buffer_size", model_buffer_size),
                           ("dynamics_batch_size", dynamics_batch_size), ("dynamics_patience", dynamics_patience),
                           ("chunk_size", chunk_size), ("rollout_target", rollout_target)):
            if int(value) < 1:
                raise ValueError(f"MOBODY: {key} must be >= 1, got {value}.")
        for key, value in (("rollout_source", rollout_source), ("model_rows", model_rows),
                           ("target_passes", target_passes), ("dara_classifier_steps", dara_classifier_steps)):
            if int(value) < 0:
                raise ValueError(f"MOBODY: {key} must be >= 0, got {value}.")
        for key, value in (("uncertainty_coef", uncertainty_coef), ("bc_coef", bc_coef),
                           ("penalty_coef", penalty_coef), ("bc_temperature", bc_temperature)):
            if not value >= 0:
                raise ValueError(f"MOBODY: {key} must be >= 0, got {value}.")
        if dynamics_max_epochs is not None and int(dynamics_max_epochs) < 1:
            raise ValueError(f"MOBODY: dynamics_max_epochs must be null or >= 1, got {dynamics_max_epochs}.")
        self.obs_dim, self.action_dim, self.env_id = int(obs_dim), int(action_dim), env_id
        self.dynamics_lr, self.dynamics_batch_size = float(dynamics_lr), int(dynamics_batch_size)
        self.dynamics_max_epochs = None if dynamics_max_epochs is None else int(dynamics_max_epochs)
        self.dynamics_patience, self.target_passes = int(dynamics_patience), int(target_passes)
        self.target_encoder_weight, self.source_reward_weight = float(target_encoder_weight), float(source_reward_weight)
        self.rollout_every, self.rollout_source, self.rollout_target = int(rollout_every), int(rollout_source), int(rollout_target)
        self.relabel_source, self.model_rows = bool(relabel_source), int(model_rows)
        self.uncertainty_coef, self.max_uncertainty = float(uncertainty_coef), float(max_uncertainty)
        self.bc_coef, self.bc_temperature, self.bc_max_weight = float(bc_coef), float(bc_temperature), float(bc_max_weight)
        self.source_penalty, self.penalty_coef = source_penalty, float(penalty_coef)
        self.termination, self.chunk_size = termination, int(chunk_size)
        self.seed = None if seed is None else int(seed)
        self.dynamics = MOBODYDynamics(self.obs_dim, self.action_dim, ensemble_size=ensemble_size,
                                       num_elites=num_elites, latent_dim=latent_dim, hidden=hidden,
                                       action_hidden=action_hidden)
        self.dara = (DARA(self.obs_dim, self.action_dim, eta=self.penalty_coef, clip=10.0, hidden_sizes=(256, 256),
                          noise_std=1.0, classifier_steps=int(dara_classifier_steps), classifier_lr=3e-4,
                          classifier_batch_size=128, seed=0 if self.seed is None else self.seed)
                     if source_penalty == "dara" else None)
        self.columns = (LOG_RATIO_COLUMN,) if self.dara is not None else ()
        self.requires_grad_(False)  # trained only in prepare(); never touched by the RL optimisers
        self.buffer = ModelRowBuffer(model_buffer_size)
        self._generator = torch.Generator()
        self._pool: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._terminate: Callable | None = None
        self._refresh: dict[str, float] = {}  # the last refresh's numbers, reported at every step
        self.register_buffer("dynamics_epochs", torch.zeros((), dtype=torch.long))
        self.register_buffer("dynamics_holdout_mse", torch.full((), float("nan")))

    # ------------------------------------------------------------------ checkpointed state
    def get_extra_state(self) -> dict:
        """The model rows, their write position, the method's generator and the last refresh's numbers
        (saved with the loss module)."""
        return {"buffer": self.buffer.state_dict(), "generator": self._generator.get_state(),
                "refresh": dict(self._refresh)}

    def set_extra_state(self, state: dict) -> None:
        """Restore :meth:`get_extra_state`."""
        self.buffer.load_state_dict(state["buffer"])
        self.buffer.to(self.dynamics.elites.device)
        self._generator.set_state(state["generator"])
        self._refresh = dict(state.get("refresh", {}))

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self.buffer.to(self.dynamics.elites.device)
        return out

    # ------------------------------------------------------------------ pre-training
    def prepare(self, source, target, *, device: torch.device | None = None, progress: bool = False,
                checkpoint: Checkpoint | None = None) -> None:
        """DARA's classifiers (``source_penalty="dara"``), then the dynamics model, once before RL.

        Resumable (:class:`~tabb_torchrl.methods.base.ResumablePrepare`) in the dynamics model's
        training: ``checkpoint()`` is called after every epoch
        (:func:`~tabb_torchrl.methods.mobody_model.train_mobody_dynamics`); a ``prepare`` after
        :meth:`load_prepare_state` skips DARA's classifiers (their weights are in ``state_dict()``)
        and continues with the next epoch. DARA's classifier steps have no safe point.
        """
        if device is not None:
            self.to(device)
        if source is None or source.shape[0] == 0:
            raise ValueError("MOBODY.prepare needs source transitions (algo.use_source=true).")
        with self.preparing(checkpoint) as run:
            self._prepare(source, target, device, progress, run.resume, run.safe_point)

    def _prepare(self, source, target, device, progress: bool, resume, safe_point) -> None:
        if resume is None:
            seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        else:
            seed = int(resume["seed"])
        self._generator.manual_seed(seed + 2)
        if self.dara is not None and resume is None:
            self.dara.requires_grad_(True)
            try:
                self.dara.prepare(source, target, device=device, progress=progress)
            finally:
                self.dara.requires_grad_(False)

        def rows(td):
            return (td.get("observation"), td.get("action"), td.get(("next", "observation")),
                    td.get(("next", "reward")).reshape(-1))

        dev = self.dynamics.elites.device
        self.dynamics.requires_grad_(True)
        try:
            info = train_mobody_dynamics(
                self.dynamics, rows(source), rows(target), batch_size=self.dynamics_batch_size, lr=self.dynamics_lr,
                target_passes=self.target_passes, target_encoder_weight=self.target_encoder_weight,
                source_reward_weight=self.source_reward_weight, max_epochs=self.dynamics_max_epochs,
                patience=self.dynamics_patience, generator=torch.Generator().manual_seed(seed),
                noise_generator=torch.Generator(device=dev).manual_seed(seed + 1), progress=progress,
                resume=None if resume is None else resume["dynamics"],
                safe_point=lambda read: safe_point(lambda: {"seed": seed, "dynamics": read()}))
        finally:
            self.dynamics.requires_grad_(False)
        self.dynamics_epochs.fill_(int(info["epochs"]))
        self.dynamics_holdout_mse.fill_(float(info["holdout_mse"][self.dynamics.elites.cpu()].mean()))
        _LOG.info("MOBODY: dynamics model trained for %d epochs (elites %s, target hold-out MSE %.4g)",
                  info["epochs"], info["elites"], float(self.dynamics_holdout_mse))

    def add_columns(self, data) -> None:
        """DARA's log-ratio column (``source_penalty="dara"``); remembers the stored ``(s, a)`` of each
        domain (no copy of contiguous rows) as the start states of the model rollouts."""
        if self.dara is not None:
            self.dara.add_columns(data)
        obs, act = data.get("observation"), data.get("action")
        domain = data.get("domain").reshape(-1)
        for d in (SOURCE, TARGET):
            where = (domain == d).nonzero().reshape(-1)
            if where.numel() == 0:
                continue
            lo, hi = int(where[0]), int(where[-1]) + 1
            self._pool[d] = ((obs[lo:hi], act[lo:hi]) if hi - lo == where.numel()
                             else (obs[where], act[where]))

    # ------------------------------------------------------------------ model rows
    def _termination(self, next_observation: torch.Tensor) -> torch.Tensor:
        if self.termination == "none":
            return torch.zeros(next_observation.shape[0], device=next_observation.device)
        if self._terminate is None:
            self._terminate = EnvTermination(self.env_id)
        done = self._terminate(next_observation.detach().cpu().numpy())
        return torch.as_tensor(done, dtype=next_observation.dtype, device=next_observation.device)

    @torch.no_grad()
    def model_step(self, observation: torch.Tensor, action: torch.Tensor) -> dict[str, torch.Tensor]:
        """One target-model step for ``(s, a)`` rows, in chunks: next states, rewards penalised by the
        disagreement (:func:`penalize_and_filter`), the rows kept, termination flags of the kept rows."""
        outs = [self.dynamics.sample_step(observation[i:i + self.chunk_size], action[i:i + self.chunk_size],
                                          self._generator) for i in range(0, observation.shape[0], self.chunk_size)]
        nxt, reward, u = (torch.cat(x) for x in zip(*outs))
        reward, keep = penalize_and_filter(reward, u, self.uncertainty_coef, self.max_uncertainty)
        return {"observation": observation[keep], "action": action[keep], "reward": reward[keep],
                "next_observation": nxt[keep], "terminated": self._termination(nxt[keep]),
                "uncertainty": u, "kept": keep}

    @torch.no_grad()
    def refresh_model_rows(self, policy: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Add one round of model rows (authors' rollout every 5,000 steps): one-step rollouts from
        ``rollout_source`` source states and ``rollout_target`` target states with the policy's
        actions and, with ``relabel_source``, the same source states with their dataset actions.
        Returns its numbers (also reported with every later step's metrics)."""
        if SOURCE not in self._pool or TARGET not in self._pool:
            raise RuntimeError("MOBODY needs the stored data to roll out from; the recipe passes it through "
                               "add_columns when it builds the RL buffer.")
        dev = self.dynamics.elites.device
        (s_src, a_src), (s_tgt, _) = self._pool[SOURCE], self._pool[TARGET]
        i_src = torch.randint(s_src.shape[0], (self.rollout_source,), generator=self._generator)
        i_tgt = torch.randint(s_tgt.shape[0], (self.rollout_target,), generator=self._generator)
        s_src, a_src = s_src[i_src.to(s_src.device)].to(dev), a_src[i_src.to(a_src.device)].to(dev)
        s_tgt = s_tgt[i_tgt.to(s_tgt.device)].to(dev)
        obs = [s_src, s_tgt]
        act = [policy(s_src), policy(s_tgt)]
        if self.relabel_source:
            obs.append(s_src)
            act.append(a_src)
        out = self.model_step(torch.cat(obs).float(), torch.cat(act).float())
        self.buffer.add(out["observation"], out["action"], out["reward"], out["next_observation"], out["terminated"])
        kept = out["kept"]
        self._refresh = {"mobody_model_rows_added": float(kept.sum()),
                         "mobody_model_rows_kept": float(kept.float().mean()),
                         "mobody_model_uncertainty": float(out["uncertainty"].mean()),
                         "mobody_model_reward": float(out["reward"].mean()) if kept.any() else float("nan"),
                         "mobody_model_terminal": float(out["terminated"].mean()) if kept.any() else 0.0}
        return dict(self._refresh)

    # ------------------------------------------------------------------ the hooks
    def source_reward(self, batch: TD3Batch) -> torch.Tensor:
        """The batch's rewards with the source correction (``source_penalty``) on its source rows."""
        src = batch.domain == SOURCE
        if self.source_penalty == "none" or not bool(src.any()):
            return batch.reward
        reward = batch.reward.clone()
        if self.source_penalty == "dara":
            if LOG_RATIO_COLUMN not in batch.columns:
                raise KeyError(f"MOBODY needs the {LOG_RATIO_COLUMN!r} column; DARA.add_columns writes it when the "
                               "recipe builds the RL buffer.")
            ratio = batch.columns[LOG_RATIO_COLUMN].reshape(-1).to(reward.dtype)
            reward[src] = dara_reward(reward[src], ratio[src], self.penalty_coef, self.dara.clip)
        else:  # par
            with torch.no_grad():
                pred, _, _ = self.dynamics.sample_step(batch.observation[src], batch.action[src], self._generator)
            reward[src] = reward[src] - self.penalty_coef * ((batch.next_observation[src] - pred) ** 2).mean(-1)
        return reward

    def edit_batch(self, batch: TD3Batch, *, step: int, policy) -> tuple[TD3Batch, dict]:
        """Correct the source rewards, refresh the model rows every ``rollout_every`` steps, append
        ``model_rows`` of them."""
        batch = batch.replace(reward=self.source_reward(batch))
        metrics: dict = {}
        if step % self.rollout_every == 0:
            self.refresh_model_rows(policy)
        if self.model_rows and len(self.buffer):
            batch = batch.append(self.buffer.sample(self.model_rows, self._generator))
        metrics.update(self._refresh)
        metrics["mobody_model_buffer"] = float(len(self.buffer))
        return batch, metrics

    def actor_regularizer(self, batch: TD3Batch, action: torch.Tensor, qvalues) -> tuple[torch.Tensor, dict]:
        """``bc_coef`` times :func:`q_weighted_bc_loss` on the dataset rows (``Q = min(Q_1, Q_2)`` at their actions)."""
        real = batch.domain != MODEL_ROWS  # masked means, no data-dependent shapes (torch.compile keeps one graph)
        q = qvalues(batch.observation, batch.action).amin(0)
        bc, w = q_weighted_bc_loss(action, batch.action, q, self.bc_temperature, self.bc_max_weight, mask=real)
        return self.bc_coef * bc, {"mobody_bc": bc.detach(), "mobody_bc_weight": masked_mean(w, real)}

    def extra_repr(self) -> str:
        return (f"source_penalty={self.source_penalty!r}, penalty_coef={self.penalty_coef}, "
                f"rollout_every={self.rollout_every}, model_rows={self.model_rows}, "
                f"uncertainty_coef={self.uncertainty_coef}, bc_coef={self.bc_coef}, termination={self.termination!r}")
