"""DROCO as a cross-domain method: a robust Bellman target for source rows from an ensemble of
target-dynamics models (Qiao et al., "Dual-Robust Cross-Domain Offline Reinforcement Learning
Against Dynamics Shifts", ICLR 2026, arXiv 2512.02486; authors' code zq2r/DROCO).

An ensemble of ``E = 7`` Gaussian dynamics models, trained once by maximum likelihood on the
target data (:meth:`DROCO.prepare`), predicts ``E`` next states ``s_hat'_i`` for each source
``(s, a)``. The source row's Bellman target is the robust cross-domain (RCB) target with the
dynamic value penalty::

    p = max(0, c * (V(s') - min_i V(s_hat'_i)))                          (dynamic value penalty)
    y = r + gamma * (1 - d) * (V(s') - p)                                 (source rows)
    y = r + gamma * (1 - d) * V(s')                                       (target rows)

and the critic loss is the Huber loss with ``delta = 30`` on source rows and the squared error on
target rows (:attr:`DROCO.critic_deltas`). The models are frozen after :meth:`DROCO.prepare`; their
predictions for every stored row are cached with the data (:meth:`DROCO.add_columns`,
``[N, E, obs_dim]``), or recomputed per batch (``cache_predictions=False``). See
``docs/methods/droco.md`` for the equations, the defaults and their sources.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tabb_torchrl.methods.base import Checkpoint, CrossDomainMethod, ResumablePrepare, SourceEdit, SourceRows
from tabb_torchrl.objectives.functional import bellman_target

__all__ = [
    "DROCO",
    "GaussianEnsembleDynamics",
    "PREDICTION_COLUMN",
    "PREDICTIONS",
    "PENALTY_MINS",
    "droco_penalty",
    "robust_target",
    "gaussian_ensemble_nll",
]

_LOG = logging.getLogger(__name__)

#: Per-row column of the cached ensemble predictions ``s_hat'_i`` (``[N, E, obs_dim]``).
PREDICTION_COLUMN = "droco_next_observation"

#: How a member's prediction of ``s'`` is formed: ``"mean_plus_variance"`` (authors' code:
#: ``s + mu + sigma^2``) or ``"mean"`` (``s + mu``).
PREDICTIONS = ("mean_plus_variance", "mean")

#: Where the minimum over the ensemble is taken: ``"value"`` (``min_i V(s_hat'_i)``, the paper's
#: penalty) or ``"state"`` (``V(min_i s_hat'_i)``, the element-wise minimum of the predicted
#: states, as the authors' code does).
PENALTY_MINS = ("value", "state")

# Per-layer L2 coefficients of the authors' EnsembleModel (nn1..nn4, output nn5), use_decay=True.
_HIDDEN_DECAY = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5)
_OUTPUT_DECAY = 1e-4


def droco_penalty(next_value: torch.Tensor, min_value: torch.Tensor, coefficient: float) -> torch.Tensor:
    r"""DROCO's dynamic value penalty :math:`p = \max(0,\ c\,(V(s') - \min_i V(\hat s'_i)))`.

    Args:
        next_value (torch.Tensor): ``[n]`` ``V`` at the realised next state ``s'``.
        min_value (torch.Tensor): ``[n]`` the minimum of ``V`` over the ensemble's predicted next states.
        coefficient (float): ``c >= 0``.

    Returns:
        torch.Tensor: ``[n]`` penalties (``0`` where the predictions are worth at least ``V(s')``).

    Examples:
        >>> import torch
        >>> droco_penalty(torch.tensor([10.0, 2.0]), torch.tensor([4.0, 5.0]), 0.3)   # 0.3 * 6 ; max(0, -0.9)
        tensor([1.8000, 0.0000])
    """
    return (coefficient * (next_value - min_value)).clamp_min(0.0)


def robust_target(reward: torch.Tensor, next_value: torch.Tensor, penalty: torch.Tensor,
                  terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    r"""DROCO's source-row target :math:`r + \gamma (1 - d) (V(s') - p)`.

    Examples:
        >>> import torch
        >>> robust_target(torch.tensor([1.0, 1.0]), torch.tensor([10.0, 10.0]), torch.tensor([2.0, 2.0]),
        ...               torch.tensor([0.0, 1.0]), 0.5)
        tensor([5., 1.])
    """
    return bellman_target(reward, next_value - penalty, terminated, gamma)


def gaussian_ensemble_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""The ensemble's Gaussian negative log-likelihood (up to constants), as the authors' ``EnsembleModel.loss``.

    Per member, the mean over rows and output dimensions of
    :math:`(\mu - y)^2 e^{-\log\sigma^2} + \log\sigma^2`; summed over the members.

    Args:
        mean (torch.Tensor): ``[E, B, k]`` predicted means.
        log_var (torch.Tensor): ``[E, B, k]`` predicted log-variances.
        target (torch.Tensor): ``[E, B, k]`` (or ``[B, k]``) labels.

    Returns:
        torch.Tensor: scalar.

    Examples:
        >>> import torch
        >>> gaussian_ensemble_nll(torch.zeros(2, 1, 1), torch.zeros(2, 1, 1), torch.full((2, 1, 1), 2.0))
        tensor(8.)
    """
    return (((mean - target) ** 2) * torch.exp(-log_var) + log_var).mean(dim=(-2, -1)).sum()


class GaussianEnsembleDynamics(nn.Module):
    r"""``E`` Gaussian dynamics models of ``(s, a) -> (r, s' - s)`` as one module (weights ``[E, in, out]``).

    Every layer is a batched matrix product (``torch.baddbmm``) over the stacked weights of the
    ``E`` members, so the ensemble runs as one module, with no Python loop over members. Its
    structure follows the authors' ``EnsembleModel`` (itself MBPO's): SiLU (swish) hidden layers,
    an output of mean and log-variance, the log-variance soft-bounded to ``[min_log_var,
    max_log_var]``, inputs standardised by the training data's mean and standard deviation,
    truncated-normal initialisation (std ``1 / (2 sqrt(fan_in))``) and per-layer L2 decay.

    Args:
        obs_dim (int): observation size.
        action_dim (int): action size.
        ensemble_size (int): number of members ``E``. Defaults to ``7``.
        hidden_sizes (sequence of int): hidden layers of each member. Defaults to ``(256,) * 4``.

    Keyword Args:
        predict_reward (bool): also predict the reward (the authors' models do; DROCO's target does
            not use it). Defaults to ``True``.
        max_log_var (float): upper soft bound of the log-variance. Defaults to ``0.5``.
        min_log_var (float): lower soft bound. Defaults to ``-10.0``.

    Examples:
        >>> import torch
        >>> model = GaussianEnsembleDynamics(3, 2, ensemble_size=7, hidden_sizes=(16, 16))
        >>> model.weights[0].shape, model.weights[-1].shape          # stacked members
        (torch.Size([7, 5, 16]), torch.Size([7, 16, 8]))
        >>> mean, log_var = model(torch.randn(4, 3), torch.randn(4, 2))
        >>> mean.shape, bool((log_var <= 0.5).all())
        (torch.Size([7, 4, 4]), True)
        >>> model.predict_next_observation(torch.randn(4, 3), torch.randn(4, 2)).shape   # [B, E, obs_dim]
        torch.Size([4, 7, 3])
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        ensemble_size: int = 7,
        hidden_sizes: Sequence[int] = (256, 256, 256, 256),
        *,
        predict_reward: bool = True,
        max_log_var: float = 0.5,
        min_log_var: float = -10.0,
    ):
        super().__init__()
        if int(ensemble_size) < 1:
            raise ValueError(f"GaussianEnsembleDynamics: ensemble_size must be >= 1, got {ensemble_size}.")
        if not min_log_var < max_log_var:
            raise ValueError(f"GaussianEnsembleDynamics: min_log_var ({min_log_var}) must be < max_log_var "
                             f"({max_log_var}).")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.ensemble_size = int(ensemble_size)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.predict_reward = bool(predict_reward)
        self.out_dim = self.obs_dim + int(self.predict_reward)
        sizes = (self.obs_dim + self.action_dim, *self.hidden_sizes, 2 * self.out_dim)
        e = self.ensemble_size
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(e, i, o)) for i, o in zip(sizes[:-1], sizes[1:])])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(e, 1, o)) for o in sizes[1:]])
        self.decay = (*[_HIDDEN_DECAY[min(i, len(_HIDDEN_DECAY) - 1)] for i in range(len(self.hidden_sizes))],
                      _OUTPUT_DECAY)
        self.register_buffer("input_mean", torch.zeros(sizes[0]))
        self.register_buffer("input_std", torch.ones(sizes[0]))
        self.register_buffer("max_log_var", torch.full((self.out_dim,), float(max_log_var)))
        self.register_buffer("min_log_var", torch.full((self.out_dim,), float(min_log_var)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Truncated-normal weights (std ``1 / (2 sqrt(fan_in))``, cut at 2 std) and zero biases (authors' init)."""
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):
                std = 1.0 / (2.0 * math.sqrt(w.shape[1]))
                nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
                b.zero_()

    def fit_normalizer(self, observation: torch.Tensor, action: torch.Tensor) -> None:
        """Set the input standardisation from training inputs (a std below ``1e-12`` becomes ``1``)."""
        x = torch.cat([observation, action.to(observation.dtype)], -1)
        with torch.no_grad():
            self.input_mean.copy_(x.mean(0))
            std = x.std(0) if x.shape[0] > 1 else torch.ones_like(x[0])
            self.input_std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log_var)`` of ``(r, s' - s)`` (reward first when predicted), each ``[E, B, out_dim]``.

        ``observation`` and ``action`` are ``[B, d]`` (the same rows for every member) or
        ``[E, B, d]`` (each member its own rows).
        """
        dtype = self.input_mean.dtype
        x = torch.cat([observation.to(dtype), action.to(dtype)], -1)
        x = (x - self.input_mean) / self.input_std
        if x.ndim == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = F.silu(x)
        mean, log_var = x[..., : self.out_dim], x[..., self.out_dim:]
        log_var = self.max_log_var - F.softplus(self.max_log_var - log_var)
        log_var = self.min_log_var + F.softplus(log_var - self.min_log_var)
        return mean, log_var

    def labels(self, observation: torch.Tensor, next_observation: torch.Tensor,
               reward: torch.Tensor | None = None) -> torch.Tensor:
        """The regression targets ``[r, s' - s]`` (``[s' - s]`` without the reward head)."""
        delta = (next_observation - observation).to(self.input_mean.dtype)
        if not self.predict_reward:
            return delta
        return torch.cat([reward.reshape(-1, 1).to(delta.dtype), delta], -1)

    def decay_loss(self) -> torch.Tensor:
        """``sum_l lambda_l ||W_l||^2 / 2`` with the authors' per-layer coefficients."""
        return sum(lam * (w ** 2).sum() / 2 for lam, w in zip(self.decay, self.weights))

    def predict_next_observation(self, observation: torch.Tensor, action: torch.Tensor,
                                 prediction: str = "mean_plus_variance") -> torch.Tensor:
        """Each member's next state ``s + mu_i (+ sigma_i^2)``: ``[B, E, obs_dim]`` (no gradient).

        Args:
            observation (torch.Tensor): ``[B, obs_dim]``.
            action (torch.Tensor): ``[B, action_dim]``.
            prediction (str): ``"mean_plus_variance"`` (authors' code) or ``"mean"``.
        """
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}.")
        with torch.no_grad():
            mean, log_var = self(observation, action)
            delta = mean if prediction == "mean" else mean + torch.exp(log_var)
            delta = delta[..., int(self.predict_reward):]                      # drop the reward
            return observation.to(delta.dtype).unsqueeze(1) + delta.transpose(0, 1)

    def extra_repr(self) -> str:
        return (f"ensemble_size={self.ensemble_size}, obs_dim={self.obs_dim}, action_dim={self.action_dim}, "
                f"hidden_sizes={self.hidden_sizes}, predict_reward={self.predict_reward}")


class DROCO(ResumablePrepare, CrossDomainMethod):
    r"""Dual-robust cross-domain offline RL on source rows (Qiao et al., ICLR 2026, arXiv 2512.02486).

    For each source row, with ``V`` the value network at the start of the step and
    ``s_hat'_1..E`` the frozen ensemble's predictions for its ``(s, a)``::

        m = min_i V(s_hat'_i)                 (penalty_min="value"; "state": V(min_i s_hat'_i))
        p = max(0, c * (V(s') - m))           (dynamic value penalty, droco_penalty)
        y = r + gamma * (1 - d) * (V(s') - p) (robust_target)

    Target rows keep ``r + gamma (1 - d) V(s')``. The critic loss is the squared error ``u^2/2``
    on target rows plus the Huber loss of threshold ``huber_delta`` on source rows
    (:attr:`critic_deltas`), each averaged over its own rows. Value and actor losses read
    source and target rows (the authors' code trains ``V`` and the AWR actor on the merged batch).

    Args:
        obs_dim (int): observation size (passed by the recipe).
        action_dim (int): action size (passed by the recipe).
        penalty_coefficient (float): ``c >= 0``. Defaults to ``0.3`` (authors' ``run_droco.sh``).
        huber_delta (float): Huber threshold on source rows. Defaults to ``30.0`` (``run_droco.sh``).

    Keyword Args:
        ensemble_size (int): models in the ensemble. Defaults to ``7``.
        hidden_sizes (sequence of int): each model's hidden layers. Defaults to ``(256,) * 4`` (four
            hidden layers as the authors' ``EnsembleModel``; the width is not published, ours
            **[reconstructed]**).
        prediction (str): ``"mean_plus_variance"`` (default; authors' code: ``s + mu + sigma^2``) or
            ``"mean"``.
        penalty_min (str): ``"value"`` (default; the paper: ``min_i V(s_hat'_i)``) or ``"state"``
            (authors' code: ``V`` of the element-wise minimum of the predicted states).
        predict_reward (bool): the models also predict the reward (authors' code; unused by the
            target). Defaults to ``True``.
        epochs (int): training epochs of the ensemble in :meth:`prepare`; in each epoch every member
            sees the training rows once, in its own random order. Defaults to ``200``
            **[reconstructed]** (authors: ``model_epochs``, not published).
        batch_size (int): rows per member and step. Defaults to ``256`` **[reconstructed]** (ours: the
            backbone's 128 + 128; authors: ``dynamics_batch_size``, not published).
        lr (float): Adam learning rate. Defaults to ``1e-3`` (authors' ``EnsembleModel``).
        weight_decay (bool): add the authors' per-layer L2 terms (``use_decay=True``). Defaults to ``True``.
        holdout_fraction (float): target rows kept out of training to report a held-out error.
            Defaults to ``0.0`` (the authors re-draw their hold-out split every epoch, so every row
            is trained on).
        cache_predictions (bool): ``True`` (default): cache ``[N, E, obs_dim]`` predictions of every
            stored row (:meth:`add_columns`); ``False``: recompute them for each batch's source rows
            from its ``observation`` and ``action`` (no memory cost, one ensemble forward per step).
        source_in_value (bool): source rows in the value loss. Defaults to ``True`` (authors' code).
        source_in_actor (bool): source rows in the actor loss. Defaults to ``True`` (authors' code).
        seed (int, optional): seed of the ensemble's training draws; ``None`` (default) draws it from
            the global torch RNG (seeded by the run) **[reconstructed]**.
        chunk_size (int): rows per ensemble forward when caching. Defaults to ``16384``.
        observation_key (str): observation entry of the data. Defaults to ``"observation"``.
        action_key (str): action entry of the data. Defaults to ``"action"``.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.methods import DROCO, SourceRows
        >>> m = DROCO(obs_dim=1, action_dim=1, penalty_coefficient=0.5)
        >>> preds = torch.tensor([[[1.0], [3.0]], [[6.0], [8.0]]])     # [n=2, E=2, obs_dim=1]
        >>> rows = SourceRows(reward=torch.zeros(2), terminated=torch.zeros(2), next_value=torch.tensor([5.0, 5.0]),
        ...     next_feature=torch.zeros(2, 1), columns={"droco_next_observation": preds},
        ...     value=lambda s: s.sum(-1), gamma=1.0)
        >>> edit = m.edit_source(rows)     # V = identity: min V = [1, 6]; p = [0.5 * 4, 0]
        >>> edit.target                    # 0 + (5 - p)
        tensor([3., 5.])
        >>> m.critic_deltas, m.ensemble.weights[0].shape[0]
        ((None, 30.0), 7)
    """

    name = "droco"
    pooled = False

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        penalty_coefficient: float = 0.3,
        huber_delta: float = 30.0,
        *,
        ensemble_size: int = 7,
        hidden_sizes: Sequence[int] = (256, 256, 256, 256),
        prediction: str = "mean_plus_variance",
        penalty_min: str = "value",
        predict_reward: bool = True,
        epochs: int = 200,
        batch_size: int = 256,
        lr: float = 1e-3,
        weight_decay: bool = True,
        holdout_fraction: float = 0.0,
        cache_predictions: bool = True,
        source_in_value: bool = True,
        source_in_actor: bool = True,
        seed: int | None = None,
        chunk_size: int = 16384,
        observation_key: str = "observation",
        action_key: str = "action",
    ):
        super().__init__()
        if not penalty_coefficient >= 0:
            raise ValueError(f"DROCO: penalty_coefficient must be >= 0, got {penalty_coefficient}.")
        if not huber_delta > 0:
            raise ValueError(f"DROCO: huber_delta must be > 0, got {huber_delta}.")
        if prediction not in PREDICTIONS:
            raise ValueError(f"DROCO: prediction must be one of {PREDICTIONS}, got {prediction!r}.")
        if penalty_min not in PENALTY_MINS:
            raise ValueError(f"DROCO: penalty_min must be one of {PENALTY_MINS}, got {penalty_min!r}.")
        if int(epochs) < 0 or int(batch_size) < 1 or int(chunk_size) < 1:
            raise ValueError(f"DROCO: epochs must be >= 0, batch_size and chunk_size >= 1; got {epochs}, "
                             f"{batch_size}, {chunk_size}.")
        if not 0.0 <= holdout_fraction < 1.0:
            raise ValueError(f"DROCO: holdout_fraction must be in [0, 1), got {holdout_fraction}.")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.penalty_coefficient = float(penalty_coefficient)
        self.huber_delta = float(huber_delta)
        self.critic_deltas = (None, self.huber_delta)
        self.prediction, self.penalty_min = prediction, penalty_min
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.weight_decay = bool(weight_decay)
        self.holdout_fraction = float(holdout_fraction)
        self.cache_predictions = bool(cache_predictions)
        self.source_in_value, self.source_in_actor = bool(source_in_value), bool(source_in_actor)
        self.seed = None if seed is None else int(seed)
        self.chunk_size = int(chunk_size)
        self.observation_key, self.action_key = observation_key, action_key
        self.columns = (PREDICTION_COLUMN,) if self.cache_predictions else (observation_key, action_key)
        self.ensemble = GaussianEnsembleDynamics(self.obs_dim, self.action_dim, ensemble_size, hidden_sizes,
                                                 predict_reward=predict_reward)
        self.ensemble.requires_grad_(False)  # frozen outside prepare(): never touched by the RL optimisers
        # the fit's errors (checkpointed with the loss module, logged with every step's metrics)
        self.register_buffer("model_train_mse", torch.full((), float("nan")))
        self.register_buffer("model_holdout_mse", torch.full((), float("nan")))

    # ------------------------------------------------------------------ the ensemble
    def _entries(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        return data.get(self.observation_key), data.get(self.action_key)

    def prepare(self, source, target, *, device: torch.device | None = None, progress: bool = False,
                checkpoint: Checkpoint | None = None) -> None:
        """Train the ensemble by maximum likelihood on the target transitions, once before RL.

        ``epochs`` epochs; in each, every member goes through the training rows in its own random
        order, ``batch_size`` rows per step, Adam (``lr``) on :func:`gaussian_ensemble_nll` plus the
        per-layer L2 terms. Inputs are standardised with the training rows' statistics. The draws come
        from the method's own generator (``seed``; the global RNG is read once when ``seed`` is
        ``None``). The models are frozen afterwards.

        Resumable (:class:`~tabb_torchrl.methods.base.ResumablePrepare`): ``checkpoint()`` is called
        after every epoch; :meth:`prepare_state` then holds the epoch, the optimiser, the generator and
        the seed, and a ``prepare`` after :meth:`load_prepare_state` continues with the next epoch.
        """
        if device is not None:
            self.to(device)
        model = self.ensemble
        dev = model.input_mean.device
        obs, act = (x.to(dev) for x in self._entries(target))
        nxt = target.get(("next", self.observation_key)).to(dev)
        rew = target.get(("next", "reward")).reshape(-1).to(dev)
        n = obs.shape[0]
        if n < 2:
            raise ValueError(f"DROCO.prepare needs target transitions to fit the dynamics ensemble, got {n}.")
        with self.preparing(checkpoint) as run:
            self._fit(obs, act, nxt, rew, run.resume, run.safe_point, progress)

    def _fit(self, obs, act, nxt, rew, resume, safe_point, progress: bool) -> None:
        model, dev, n = self.ensemble, self.ensemble.input_mean.device, obs.shape[0]
        if resume is None:
            seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        else:
            seed = int(resume["seed"])
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=gen)
        n_hold = int(round(n * self.holdout_fraction))
        train, hold = perm[n_hold:].sort().values.to(dev), perm[:n_hold].sort().values.to(dev)
        x_s, x_a = obs[train], act[train]
        y = model.labels(obs, nxt, rew)
        y_train = y[train]
        model.fit_normalizer(x_s, x_a)
        n_train, e, b = train.numel(), model.ensemble_size, min(self.batch_size, train.numel())
        model.requires_grad_(True)
        optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        from tqdm.auto import tqdm

        steps_per_epoch = math.ceil(n_train / b)
        epoch, mse = 0, float("nan")
        if resume is not None:  # the split and the normaliser above are recomputed; the draws continue
            epoch, mse = int(resume["epoch"]), float(resume["last_epoch_mse"])
            optimizer.load_state_dict(resume["optimizer"])
            gen.set_state(resume["generator"])

        def state() -> dict:
            return {"seed": seed, "epoch": epoch, "last_epoch_mse": mse, "optimizer": optimizer.state_dict(),
                    "generator": gen.get_state()}

        bar = tqdm(total=self.epochs, initial=epoch, desc="DROCO dynamics ensemble", disable=not progress,
                   mininterval=1.0)
        try:
            while epoch < self.epochs:
                order = torch.argsort(torch.rand(e, n_train, generator=gen), dim=1).to(dev)   # [E, n] per member
                total = 0.0
                for k in range(steps_per_epoch):
                    idx = order[:, k * b:(k + 1) * b]                                          # [E, b]
                    mean, log_var = model(x_s[idx], x_a[idx])
                    loss = gaussian_ensemble_nll(mean, log_var, y_train[idx])
                    if self.weight_decay:
                        loss = loss + model.decay_loss()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(((mean.detach() - y_train[idx]) ** 2).mean())
                epoch, mse = epoch + 1, total / steps_per_epoch
                bar.update(1)
                safe_point(state)
        finally:
            bar.close()
            model.requires_grad_(False)
        with torch.no_grad():
            self.model_train_mse.fill_(self.model_error(x_s, x_a, y_train))
            if n_hold:
                self.model_holdout_mse.fill_(self.model_error(obs[hold], act[hold], y[hold]))
        _LOG.info("DROCO: ensemble of %d trained for %d epochs on %d target rows (last epoch MSE %.4g, "
                  "train MSE %.4g, hold-out MSE %.4g)", e, self.epochs, n_train, mse,
                  float(self.model_train_mse), float(self.model_holdout_mse))

    def model_error(self, observation: torch.Tensor, action: torch.Tensor, labels: torch.Tensor) -> float:
        """Mean squared error of the members' mean predictions of ``labels`` (``[r, s' - s]``)."""
        with torch.no_grad():
            out = []
            for i in range(0, observation.shape[0], self.chunk_size):
                mean, _ = self.ensemble(observation[i:i + self.chunk_size], action[i:i + self.chunk_size])
                out.append(((mean - labels[i:i + self.chunk_size]) ** 2).mean(dim=(0, 2)))
            return float(torch.cat(out).mean()) if out else float("nan")

    def predict(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The ensemble's next states ``[B, E, obs_dim]`` for ``(s, a)``, in chunks (no gradient)."""
        dev = self.ensemble.input_mean.device
        out = [self.ensemble.predict_next_observation(observation[i:i + self.chunk_size].to(dev),
                                                      action[i:i + self.chunk_size].to(dev), self.prediction)
               for i in range(0, observation.shape[0], self.chunk_size)]
        if not out:
            return torch.zeros(0, self.ensemble.ensemble_size, self.obs_dim, device=dev)
        return torch.cat(out)

    def add_columns(self, data) -> None:
        """Cache ``s_hat'_i`` of every stored row as ``droco_next_observation`` (``[N, E, obs_dim]`` float32).

        Deterministic in the frozen ensemble (means and variances, no sampling), so a resumed run
        recomputes the same column. Nothing is written with ``cache_predictions=False``.
        """
        if not self.cache_predictions:
            return
        obs, act = self._entries(data)
        data.set(PREDICTION_COLUMN, self.predict(obs, act).to(device=obs.device, dtype=torch.float32))

    def cache_bytes(self, n_rows: int) -> int:
        """Bytes of the cached column for ``n_rows`` stored rows (``n_rows * E * obs_dim * 4``).

        Examples:
            >>> DROCO(obs_dim=11, action_dim=3).cache_bytes(1_000_000) / 2**20   # Hopper, 1M rows
            293.731689453125
        """
        return int(n_rows) * self.ensemble.ensemble_size * self.obs_dim * 4

    # ------------------------------------------------------------------ the edit
    def edit_source(self, rows: SourceRows) -> SourceEdit:
        """Robust targets ``r + gamma (1 - d) (V(s') - p)`` of the source rows (:func:`droco_penalty`)."""
        if self.cache_predictions:
            if PREDICTION_COLUMN not in rows.columns:
                raise KeyError(f"DROCO needs the {PREDICTION_COLUMN!r} column in the batch; it is written by "
                               "DROCO.add_columns (the recipe calls it when it builds the RL buffer).")
            preds = rows.columns[PREDICTION_COLUMN]
        else:
            obs = rows.columns[self.observation_key].reshape(-1, self.obs_dim)  # [n, 1] columns arrive as [n]
            act = rows.columns[self.action_key].reshape(-1, self.action_dim)
            preds = self.ensemble.predict_next_observation(obs, act, self.prediction)
        preds = preds.to(rows.next_value.dtype)
        if self.penalty_min == "value":
            min_value = self.next_value(rows, preds, "min")
        else:
            min_value = rows.value(preds.amin(1))
        penalty = droco_penalty(rows.next_value, min_value, self.penalty_coefficient)
        target = robust_target(rows.reward, rows.next_value, penalty, rows.terminated, rows.gamma)
        metrics = {"droco_penalty": penalty.mean(), "droco_penalized": (penalty > 0).to(penalty.dtype).mean(),
                   "droco_min_next_value": min_value.mean(), "droco_model_mse": self.model_train_mse.clone()}
        return SourceEdit(target=target, metrics=metrics)

    def extra_repr(self) -> str:
        return (f"penalty_coefficient={self.penalty_coefficient}, huber_delta={self.huber_delta}, "
                f"prediction={self.prediction!r}, penalty_min={self.penalty_min!r}, epochs={self.epochs}, "
                f"cache_predictions={self.cache_predictions}, source_in_value={self.source_in_value}, "
                f"source_in_actor={self.source_in_actor}")
