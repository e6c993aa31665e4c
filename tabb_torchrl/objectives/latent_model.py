"""Latent-model pre-training loss of TABB (Liu & Long, arXiv 2605.22376, Eq. 6)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.utils import NestedKey
from torchrl.objectives.common import LossModule

from tabb_torchrl.modules import LatentModel
from tabb_torchrl.objectives.functional import masked_mean

from tabb_torchrl.keys import TARGET

__all__ = ["LatentModelLoss", "effective_rank"]

_TARGET_LATENTS = ("stop_gradient", "ema")


def effective_rank(latents: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Effective rank (Roy & Vetterli 2007) of a batch of latents, a collapse diagnostic.

    ``exp(H(p))`` with ``p`` the singular values of the (uncentred) ``[N, d]``
    latent matrix normalised to sum 1; logged during the pre-training of Eq. 6
    (Liu & Long, arXiv 2605.22376) on target states. Rows outside ``mask`` are
    zeroed, which does not change the singular values of the others.

    Args:
        latents (torch.Tensor): ``[N, d]`` latents.
        mask (torch.Tensor, optional): ``[N]`` rows to use.

    Returns:
        torch.Tensor: scalar in ``[1, min(N, d)]`` (``1`` for a zero matrix).

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.latent_model import effective_rank
        >>> round(float(effective_rank(torch.eye(4))), 4)
        4.0
        >>> round(float(effective_rank(torch.ones(8, 4))), 4)
        1.0
    """
    x = latents.detach()
    if mask is not None:
        x = torch.where(mask.reshape(-1, *([1] * (x.ndim - 1))).bool(), x, torch.zeros_like(x))
    s = torch.linalg.svdvals(x.float())
    tiny = torch.finfo(s.dtype).tiny
    p = s / s.sum().clamp_min(tiny)
    h = -torch.where(p > 0, p * torch.log(p.clamp_min(tiny)), torch.zeros_like(p)).sum()
    return torch.exp(h)


class LatentModelLoss(LossModule):
    r"""Latent-model loss of TABB (Liu & Long, arXiv 2605.22376, Eq. 6).

    .. math::

        L_{model} = w_r\,E[(\hat r - r)^2]
            + w_z\,E\big[\tfrac{1}{d}(\hat z' - z')^\top \Sigma^{-1}(\hat z' - z')\big]
            \;[+\ w_d\,E[\mathrm{BCE}(\hat d, d)]]

    with ``z_s = f(s)``, ``z_sa = g(z_s, a)``, ``(r_hat, z_hat') = h(z_sa)``,
    ``z' = sg(f(s'))`` and ``Sigma = diag(Var_{target rows}[f(s)]) + eps``
    (detached).

    * **Stage 1** (``stage=1``): trains ``f``, ``g`` and ``h`` on every row of
      the batch (source ∪ target).
    * **Stage 2** (``stage=2``): ``f`` and ``g`` run without gradient and only
      ``h`` is trained, on the target rows only (``domain == TARGET``);
      :meth:`parameters` then yields ``h``'s parameters only.

    Reconstructed choices, all options (**[reconstructed]**; the paper's formulas
    were lost in extraction): ``Sigma`` from the per-dimension (unbiased)
    variance of ``f(s)`` over the target rows of the batch plus ``eps=1e-4``;
    the dynamics term is the mean over latent dimensions; both weights 1; the
    next-state latent is a stop-gradient of ``f(s')`` (``target_latent=
    "stop_gradient"``) or, as in MR.Q, the output of an EMA copy of ``f``
    (``target_latent="ema"``, moved by :meth:`update_target`). The optional
    termination head (not in the paper) is trained with BCE on the true
    terminal flag.

    Options beyond the paper (their defaults keep Eq. 6 as above):

    * ``stage2_reg = lambda > 0``: stage 2 adds ``lambda * sum_k ||theta_k - theta_k^(1)||^2``, an
      L2-SP penalty (Li et al., ICML 2018) pulling ``h``'s parameters toward their values at
      the end of stage 1 (snapshot taken when :attr:`stage` first becomes 2, kept in the
      ``state_dict``), so fine-tuning on the 5k target rows moves ``h`` less where the target
      data say nothing. It is a training term: added when gradients are enabled (a held-out
      evaluation under ``torch.no_grad()`` compares the prediction loss alone); logged as
      ``stage2_reg_penalty``.
    * a :class:`~tabb_torchrl.modules.latent.ResidualPredictor` as ``h``
      (``model.predictor=residual``): source rows train its source dynamics ``h_S``, target
      rows its shift ``Delta`` (with ``h_S`` detached), in stage 1 as in stage 2; the loss of
      a target row is on ``h_S + Delta``.

    Logged (detached): ``reward_mse``, ``dynamics_error``, ``termination_bce``
    (with a termination head), ``effective_rank`` (of ``f`` on the target rows)
    and ``sigma_mean`` (mean of ``Sigma``). A constant latent dimension has zero
    loss, so watch the effective rank for collapse.

    Args:
        latent_model (LatentModel): ``(f, g, h)``.

    Keyword Args:
        stage (int): ``1`` or ``2``. Defaults to ``1``.
        reward_weight (float): Defaults to ``1.0`` **[reconstructed]**.
        dynamics_weight (float): Defaults to ``1.0`` **[reconstructed]**.
        termination_weight (float): Defaults to ``1.0`` (termination head only).
        variance_eps (float): ``eps`` of ``Sigma``. Defaults to ``1e-4`` **[reconstructed]**.
        normalize_dynamics (bool): divide by ``Sigma``; ``False`` = plain MSE.
            Defaults to ``True`` **[reconstructed]**.
        target_latent (str): ``"stop_gradient"`` (default **[reconstructed]**) or ``"ema"``.
        target_update_rate (float): EMA rate of :meth:`update_target`. Defaults to ``0.005``.
        stage2_reg (float): ``lambda >= 0`` of the stage-2 L2-SP penalty. Defaults to ``0.0``
            (none: the paper).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl import LatentModel, LatentModelLoss
        >>> _ = torch.manual_seed(0)
        >>> model = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,))
        >>> loss = LatentModelLoss(model, stage=1)
        >>> td = TensorDict({"observation": torch.randn(6, 3), "action": torch.rand(6, 2),
        ...     "domain": torch.tensor([0, 0, 0, 1, 1, 1]),
        ...     ("next", "observation"): torch.randn(6, 3), ("next", "reward"): torch.randn(6, 1),
        ...     ("next", "terminated"): torch.zeros(6, 1, dtype=torch.bool)}, [6])
        >>> out = loss(td)
        >>> out["loss_model"].backward()
        >>> sorted(out.keys())
        ['dynamics_error', 'effective_rank', 'loss_model', 'reward_mse', 'sigma_mean']
        >>> loss.stage = 2  # fine-tune h on target rows; parameters() is now h only
        >>> len(list(loss.parameters())) == len(list(model.predictor.parameters()))
        True
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys of :class:`LatentModelLoss` (remap with ``set_keys``).

        Attributes:
            observation (NestedKey): Defaults to ``"observation"``; the next
                observation is ``("next", observation)``.
            action (NestedKey): Defaults to ``"action"``.
            reward (NestedKey): read under ``"next"``. Defaults to ``"reward"``.
            terminated (NestedKey): read under ``"next"``. Defaults to ``"terminated"``.
            domain (NestedKey): ``0`` source, ``1`` target. Defaults to ``"domain"``.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        terminated: NestedKey = "terminated"
        domain: NestedKey = "domain"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    out_keys = ["loss_model"]

    def __init__(
        self,
        latent_model: LatentModel,
        *,
        stage: int = 1,
        reward_weight: float = 1.0,
        dynamics_weight: float = 1.0,
        termination_weight: float = 1.0,
        variance_eps: float = 1e-4,
        normalize_dynamics: bool = True,
        target_latent: str = "stop_gradient",
        target_update_rate: float = 0.005,
        stage2_reg: float = 0.0,
    ) -> None:
        super().__init__()
        if not stage2_reg >= 0:
            raise ValueError(f"stage2_reg must be >= 0 (pretrain.stage2_reg), got {stage2_reg}. Fix: e.g. 0.1, or 0.")
        if target_latent not in _TARGET_LATENTS:
            raise ValueError(
                f"Unknown target_latent {target_latent!r}; choose one of {_TARGET_LATENTS}."
            )
        if variance_eps <= 0:
            raise ValueError(f"variance_eps must be > 0, got {variance_eps}.")
        if not 0 < target_update_rate <= 1:
            raise ValueError(f"target_update_rate must be in (0, 1], got {target_update_rate}.")
        self.latent_model = latent_model
        self.stage2_reg = float(stage2_reg)
        if self.stage2_reg > 0:  # buffers only when used: checkpoints of other runs keep their keys
            self.register_buffer("_stage1_snapshot_taken", torch.zeros((), dtype=torch.bool))
            for i, p in enumerate(latent_model.predictor.parameters()):
                self.register_buffer(f"_stage1_predictor_{i}", p.detach().clone())
        self.stage = stage
        self.reward_weight = reward_weight
        self.dynamics_weight = dynamics_weight
        self.termination_weight = termination_weight
        self.variance_eps = variance_eps
        self.normalize_dynamics = normalize_dynamics
        self.target_latent = target_latent
        self.target_update_rate = target_update_rate
        if target_latent == "ema":
            # "_target" prefix: LossModule.named_parameters() skips it
            self._target_encoder = copy.deepcopy(latent_model.encoder).requires_grad_(False)
        else:
            self._target_encoder = None

    @property
    def stage(self) -> int:
        """Return the pre-training stage, ``1`` (f, g, h on all rows) or ``2`` (h on target rows)."""
        return self._stage

    @stage.setter
    def stage(self, value: int) -> None:
        if value not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {value!r}.")
        self._stage = int(value)
        if value == 2 and self.stage2_reg > 0 and not bool(self._stage1_snapshot_taken):
            self.snapshot_stage1_predictor()

    def _stage1_params(self) -> list[torch.Tensor]:
        n = sum(1 for _ in self.latent_model.predictor.parameters())
        return [getattr(self, f"_stage1_predictor_{i}") for i in range(n)]

    @torch.no_grad()
    def snapshot_stage1_predictor(self) -> None:
        """Record ``h``'s parameters as the anchor of the stage-2 penalty (``stage2_reg > 0``).

        Called automatically when :attr:`stage` first becomes 2; the snapshot is part of the
        ``state_dict``, so a run resumed in stage 2 keeps the stage-1 anchor.

        Examples:
            >>> from tabb_torchrl import LatentModel, LatentModelLoss
            >>> model = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,))
            >>> loss = LatentModelLoss(model, stage2_reg=0.1)
            >>> loss.stage = 2            # snapshot of h taken here
            >>> float(loss.stage2_penalty())
            0.0
        """
        if self.stage2_reg <= 0:
            raise RuntimeError("snapshot_stage1_predictor: stage2_reg is 0, there is no stage-2 penalty.")
        for buf, p in zip(self._stage1_params(), self.latent_model.predictor.parameters()):
            buf.copy_(p.detach())
        self._stage1_snapshot_taken.fill_(True)

    def stage2_penalty(self) -> torch.Tensor:
        """``sum_k ||theta_k - theta_k^(1)||^2`` over ``h``'s parameters (``0`` without ``stage2_reg``)."""
        params = list(self.latent_model.predictor.parameters())
        if self.stage2_reg <= 0:
            return torch.zeros((), device=params[0].device)
        return sum(((p - a) ** 2).sum() for p, a in zip(params, self._stage1_params()))

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """Trainable parameters: ``f, g, h`` in stage 1, ``h`` only in stage 2."""
        for name, param in super().named_parameters(prefix=prefix, recurse=recurse):
            if self._stage == 2 and not name.startswith(prefix + ("." if prefix else "") + "latent_model.predictor."):
                continue
            yield name, param

    @torch.no_grad()
    def update_target(self) -> None:
        """EMA step of the target encoder (``target_latent="ema"``); a no-op otherwise.

        Examples:
            >>> from tabb_torchrl import LatentModel, LatentModelLoss
            >>> loss = LatentModelLoss(LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,)),
            ...                        target_latent="ema")
            >>> loss.update_target()
        """
        if self._target_encoder is None:
            return
        for p_t, p in zip(self._target_encoder.parameters(), self.latent_model.encoder.parameters()):
            p_t.lerp_(p.detach(), self.target_update_rate)

    def _get(self, tensordict: TensorDictBase, key: NestedKey, name: str) -> torch.Tensor:
        value = tensordict.get(key, None)
        if value is None:
            raise KeyError(
                f"LatentModelLoss needs the entry {key!r} in the batch; it is missing. "
                f"If your data stores it under another name, remap it with "
                f"loss.set_keys({name}=<your key>)."
            )
        return value

    def model_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Eq. 6 of arXiv 2605.22376 on one batch.

        Args:
            tensordict (TensorDictBase): flat batch ``[N]`` of transitions with a
                domain column.

        Returns:
            tuple: ``(loss, metadata)``, the differentiable loss and a dict of
            detached diagnostics.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import LatentModel, LatentModelLoss
            >>> loss = LatentModelLoss(LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,)))
            >>> td = TensorDict({"observation": torch.randn(4, 3), "action": torch.rand(4, 2),
            ...     "domain": torch.tensor([0, 0, 1, 1]), ("next", "observation"): torch.randn(4, 3),
            ...     ("next", "reward"): torch.randn(4, 1),
            ...     ("next", "terminated"): torch.zeros(4, 1, dtype=torch.bool)}, [4])
            >>> value, meta = loss.model_loss(td)
            >>> value.shape, sorted(meta)
            (torch.Size([]), ['dynamics_error', 'effective_rank', 'reward_mse', 'sigma_mean'])
        """
        keys = self.tensor_keys
        obs = self._get(tensordict, keys.observation, "observation")
        action = self._get(tensordict, keys.action, "action")
        next_obs = self._get(tensordict, ("next", keys.observation), "observation")
        reward = self._get(tensordict, ("next", keys.reward), "reward")
        domain = self._get(tensordict, keys.domain, "domain")
        target_rows = domain.reshape(domain.shape[0], -1)[:, 0] == TARGET
        model = self.latent_model

        with torch.set_grad_enabled(torch.is_grad_enabled() and self._stage == 1):
            z_s = model.encode_state(obs)
            z_sa = model.encode_state_action(z_s, action)
        if model.residual:  # source rows train h_S; target rows train the shift on top of a detached h_S
            base, shift = model.predictor.components(z_sa)
            tgt = target_rows.unsqueeze(-1)
            pred = tuple(torch.where(tgt, b.detach() + d, b) for b, d in zip(base, shift))
        else:
            pred = model.predict(z_sa)
        r_hat, z_next_hat = pred[0], pred[1]
        with torch.no_grad():
            encoder = self._target_encoder if self._target_encoder is not None else model.encoder
            z_next = encoder(next_obs)
            if self.normalize_dynamics:
                z_det = z_s.detach()
                mean = masked_mean(z_det, target_rows.unsqueeze(-1), dim=0)
                n_tar = target_rows.sum()
                sq = torch.where(target_rows.unsqueeze(-1), (z_det - mean) ** 2, torch.zeros_like(z_det))
                sigma = sq.sum(0) / (n_tar - 1).clamp_min(1) + self.variance_eps
            else:
                sigma = torch.ones(z_next.shape[-1], dtype=z_next.dtype, device=z_next.device)

        rows = target_rows if self._stage == 2 else None
        reward_err = (r_hat - reward.to(r_hat.dtype)).pow(2).reshape(r_hat.shape[0], -1).mean(-1)
        dyn_err = ((z_next_hat - z_next).pow(2) / sigma).mean(-1)
        reward_mse = masked_mean(reward_err, rows)
        dynamics_error = masked_mean(dyn_err, rows)
        loss = self.reward_weight * reward_mse + self.dynamics_weight * dynamics_error
        metadata = {
            "reward_mse": reward_mse.detach(),
            "dynamics_error": dynamics_error.detach(),
            "effective_rank": effective_rank(z_s, target_rows),
            "sigma_mean": sigma.mean().detach(),
        }
        if len(pred) > 2:
            terminated = self._get(tensordict, ("next", keys.terminated), "terminated")
            bce = torch.nn.functional.binary_cross_entropy_with_logits(
                pred[2], terminated.to(pred[2].dtype).reshape(pred[2].shape), reduction="none"
            ).reshape(pred[2].shape[0], -1).mean(-1)
            termination_bce = masked_mean(bce, rows)
            loss = loss + self.termination_weight * termination_bce
            metadata["termination_bce"] = termination_bce.detach()
        if self._stage == 2 and self.stage2_reg > 0:
            penalty = self.stage2_penalty()
            metadata["stage2_reg_penalty"] = penalty.detach()
            if torch.is_grad_enabled():  # a training term; held-out evaluation compares the prediction loss
                loss = loss + self.stage2_reg * penalty
        return loss, metadata

    @property
    def in_keys(self) -> list:
        """Entries read from the batch."""
        k = self.tensor_keys
        return [k.observation, k.action, ("next", k.observation), ("next", k.reward),
                ("next", k.terminated), k.domain]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Returns ``loss_model`` and the detached diagnostics (see the class docstring)."""
        loss, metadata = self.model_loss(tensordict)
        return TensorDict({"loss_model": loss, **metadata}, batch_size=[])
