"""Plain-tensor functions of TABB, one per equation (Liu & Long, arXiv 2605.22376).

* :func:`bellman_target` -- ``r + gamma (1 - d) V'`` (Eqs. 5 and 8).
* :func:`target_aligned_backup` -- realised and target-aligned targets and their
  mismatch, the TBM (Eq. 5); :func:`target_bellman_mismatch` returns the TBM alone.
* :func:`source_bellman_target` -- the critic's target on source rows (Eq. 8): the
  aligned target (the paper), or, beyond the paper, the realised one or a per-row
  TBM-gated choice between them (:func:`gate_threshold`).
* :func:`tbm_weights` -- the transfer weights of Eq. 7.
* :func:`huber_loss` / :func:`critic_loss` -- the (weighted) critic loss of Eq. 8.
* :func:`expectile_loss` / :func:`value_loss` -- the expectile value loss of Eq. 9.
* :func:`awr_actor_loss` -- the advantage-weighted actor loss of Eq. 10, with IQL's clip;
  :func:`gaussian_log_prob` -- its ``log pi(a|s)``.
* :func:`split_mean` -- how a loss over a cross-domain batch is reduced: the mean over
  the target rows plus the weighted mean over the source rows (or one pooled mean).
* :func:`effective_sample_size`, :func:`weight_entropy` -- weight diagnostics.

Every path that trains TABB or a baseline (the composable
:class:`~tabb_torchrl.objectives.CrossDomainIQLLoss`, the fast flat-tensor step
:class:`~tabb_torchrl.objectives.FastCrossDomainUpdate`, the TBM transform)
computes these equations by calling these functions; none has its own copy.
All functions are free of Python branching on tensor values (``torch.compile``
friendly) and work row-wise on ``[N]`` or ``[N, 1]`` tensors.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = [
    "AlignedTargets",
    "SOURCE_TARGETS",
    "awr_actor_loss",
    "critic_loss",
    "gaussian_log_prob",
    "split_mean",
    "target_aligned_backup",
    "source_bellman_target",
    "gate_threshold",
    "value_loss",
    "bellman_target",
    "target_bellman_mismatch",
    "tbm_weights",
    "huber_loss",
    "expectile_loss",
    "effective_sample_size",
    "weight_entropy",
    "masked_mean",
    "TBM_SCALINGS",
]

#: Valid ``scaling`` names of :func:`tbm_weights`.
TBM_SCALINGS = ("batch_std", "absolute")

#: Valid ``kind`` names of :func:`source_bellman_target` (``"aligned"``: the paper's Eq. 8).
SOURCE_TARGETS = ("aligned", "realised", "gated")


def _align_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Boolean mask broadcast to ``like`` (``[N]`` masks work on ``[N, 1]`` tensors)."""
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    mask = mask.to(torch.bool)
    while mask.ndim < like.ndim:
        mask = mask.unsqueeze(-1)
    while mask.ndim > like.ndim and mask.shape[-1] == 1:
        mask = mask.squeeze(-1)
    return mask.expand_as(like)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None, dim=None) -> torch.Tensor:
    """Mean of ``x`` over the rows where ``mask`` is true (``0`` when there are none).

    The count is clamped to at least 1, so an empty mask gives ``0``, not NaN;
    masked-out entries are selected away (a NaN there does not leak).

    Args:
        x (torch.Tensor): values.
        mask (torch.Tensor, optional): boolean mask broadcastable to ``x``
            (a ``[N]`` mask works on ``[N, 1]`` values). ``None`` = all rows.
        dim (int or tuple of int, optional): dimensions to reduce; all by default.

    Returns:
        torch.Tensor: the masked mean.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import masked_mean
        >>> masked_mean(torch.tensor([1.0, 2.0, 30.0]), torch.tensor([True, True, False]))
        tensor(1.5000)
        >>> masked_mean(torch.tensor([1.0]), torch.tensor([False]))
        tensor(0.)
    """
    m = _align_mask(mask, x)
    total = torch.where(m, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / m.sum().clamp_min(1)
    return total.sum(dim) / m.sum(dim).clamp_min(1)


def bellman_target(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """One-step Bellman target ``r + gamma (1 - d) V(next)`` (arXiv 2605.22376, Eqs. 5 and 8).

    ``d`` is the true terminal flag (never a time-out), or a predicted
    termination probability in ``[0, 1]``.

    Args:
        reward (torch.Tensor): ``r`` (or ``r_hat``).
        next_value (torch.Tensor): ``V(f(s'))`` (or ``V(z_hat')``).
        terminated (torch.Tensor): ``d``, bool or float.
        gamma (float): discount.

    Returns:
        torch.Tensor: the target, broadcast shape of the inputs.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import bellman_target
        >>> bellman_target(torch.tensor([1.0, 1.0]), torch.tensor([10.0, 10.0]),
        ...                torch.tensor([False, True]), gamma=0.9)
        tensor([10.,  1.])
    """
    not_done = 1.0 - terminated.to(next_value.dtype)
    return reward + gamma * not_done * next_value


class AlignedTargets(NamedTuple):
    """The two Bellman targets of a source transition and their mismatch (Eq. 5)."""

    realised: torch.Tensor
    """``y_real = r + gamma (1 - d) V(f(s'))``."""
    aligned: torch.Tensor
    """``y_aligned = r_hat + gamma (1 - d_hat) V(z_hat')``."""
    tbm: torch.Tensor
    """``|y_real - y_aligned|``, the Target Bellman Mismatch."""


def target_aligned_backup(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    reward_hat: torch.Tensor,
    next_value_hat: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    *,
    terminated_hat: torch.Tensor | None = None,
) -> AlignedTargets:
    """Realised and target-aligned Bellman targets and the TBM (Liu & Long, arXiv 2605.22376, Eq. 5).

    ::

        y_real    = r     + gamma (1 - d)     V(f(s'))
        y_aligned = r_hat + gamma (1 - d_hat) V(z_hat')
        TBM       = |y_real - y_aligned|

    with ``d_hat = d`` unless a predicted termination is given (an option; the
    paper's ``h`` has no termination head). ``y_aligned`` is also the critic's
    target for source rows in Eq. 8.

    Args:
        reward (torch.Tensor): realised reward ``r``.
        next_value (torch.Tensor): ``V(f(s'))``.
        reward_hat (torch.Tensor): predicted reward ``r_hat``.
        next_value_hat (torch.Tensor): ``V(z_hat')``.
        terminated (torch.Tensor): the transition's own terminal flag ``d``.
        gamma (float): discount.

    Keyword Args:
        terminated_hat (torch.Tensor, optional): predicted termination
            probability for the aligned target. Defaults to ``None`` (use ``d``).

    Returns:
        AlignedTargets: ``(realised, aligned, tbm)``, each shaped like ``reward``.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import target_aligned_backup
        >>> out = target_aligned_backup(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.5]),
        ...                             torch.tensor([1.0]), torch.tensor([False]), gamma=0.5)
        >>> out.realised, out.aligned, out.tbm
        (tensor([2.]), tensor([1.]), tensor([1.]))
    """
    y_real = bellman_target(reward, next_value, terminated, gamma)
    d_hat = terminated if terminated_hat is None else terminated_hat
    y_aligned = bellman_target(reward_hat, next_value_hat, d_hat, gamma)
    return AlignedTargets(y_real, y_aligned, (y_real - y_aligned).abs())


def target_bellman_mismatch(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    reward_hat: torch.Tensor,
    next_value_hat: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    *,
    terminated_hat: torch.Tensor | None = None,
) -> torch.Tensor:
    """Target Bellman Mismatch (Liu & Long, arXiv 2605.22376, Eq. 5): the ``tbm`` of :func:`target_aligned_backup`.

    ``TBM = |(r + gamma (1 - d) V(f(s'))) - (r_hat + gamma (1 - d_hat) V(z_hat'))|``.

    Args:
        reward (torch.Tensor): realised reward ``r``.
        next_value (torch.Tensor): ``V_anc(f(s'))``.
        reward_hat (torch.Tensor): predicted reward ``r_hat``.
        next_value_hat (torch.Tensor): ``V_anc(z_hat')``.
        terminated (torch.Tensor): the transition's own terminal flag ``d``.
        gamma (float): discount.

    Keyword Args:
        terminated_hat (torch.Tensor, optional): predicted termination
            probability for the aligned target. Defaults to ``None`` (use ``d``).

    Returns:
        torch.Tensor: the TBM (non-negative), same shape as ``reward``.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import target_bellman_mismatch
        >>> target_bellman_mismatch(torch.tensor([1.0]), torch.tensor([2.0]),
        ...                         torch.tensor([0.5]), torch.tensor([1.0]),
        ...                         torch.tensor([False]), gamma=0.5)
        tensor([1.])
    """
    return target_aligned_backup(
        reward, next_value, reward_hat, next_value_hat, terminated, gamma, terminated_hat=terminated_hat
    ).tbm


def gate_threshold(target_tbm: torch.Tensor, quantile: float = 0.9) -> torch.Tensor:
    """Threshold of the gated source target: a quantile of the TBM of the batch's **target** rows.

    On a target row the realised target ``r + gamma (1 - d) V(f(s'))`` is the true target-domain
    target, so its TBM ``|y_real - y_aligned|`` is the error of the predictor ``h`` alone: the
    target rows give the distribution of TBM *when the dynamics agree*. A source row whose TBM
    lies above its ``quantile`` shows a mismatch larger than ``h``'s own error on target data
    (see :func:`source_bellman_target`). Beyond the paper.

    Args:
        target_tbm (torch.Tensor): TBM of the target rows, ``[n_t]`` or ``[n_t, 1]``.
        quantile (float): in ``(0, 1]``. Defaults to ``0.9``.

    Returns:
        torch.Tensor: scalar threshold (detached).

    Raises:
        ValueError: ``quantile`` outside ``(0, 1]``.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import gate_threshold
        >>> gate_threshold(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]), 0.5)
        tensor(2.)
        >>> gate_threshold(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]), 1.0)
        tensor(4.)
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"The gate quantile must be in (0, 1], got {quantile}. Fix: e.g. loss.gate_quantile=0.9.")
    return torch.quantile(target_tbm.detach().reshape(-1), quantile)


def source_bellman_target(
    backup: AlignedTargets,
    kind: str = "aligned",
    *,
    threshold: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """The critic's target on source rows (Liu & Long, arXiv 2605.22376, Eq. 8), chosen per row.

    ::

        aligned  (the paper):     y_S = y_aligned = r_hat + gamma (1 - d) V(z_hat')
        realised (beyond it):     y_S = y_real    = r     + gamma (1 - d) V(f(s'))
        gated    (beyond it):     y_S = y_real     if TBM <= threshold
                                        y_aligned  otherwise

    The gate is a per-row test of "this source transition follows the target dynamics": under
    that hypothesis the realised target is exact and ``TBM = |y_real - y_aligned|`` is only the
    predictor's error, whose distribution the batch's target rows give
    (:func:`gate_threshold`). A source row within it keeps its own, exact, realised target; a row
    above it has a mismatch ``h`` does not explain by its own error, and takes the paper's
    target-aligned target. ``realised`` with the TBM weights of Eq. 7 is IQL on the weighted union
    for the critic.

    Args:
        backup (AlignedTargets): the output of :func:`target_aligned_backup` for the source rows.
        kind (str): ``"aligned"`` (default), ``"realised"`` or ``"gated"``.

    Keyword Args:
        threshold (torch.Tensor or float, optional): the gate's TBM threshold (required for ``"gated"``).

    Returns:
        torch.Tensor: the source rows' targets, shaped like ``backup.realised``.

    Raises:
        ValueError: an unknown ``kind``, or ``"gated"`` without ``threshold``.

    Examples:
        Three source rows; the gate keeps the realised target where TBM <= 0.5:

        >>> import torch
        >>> from tabb_torchrl.objectives.functional import AlignedTargets, source_bellman_target
        >>> real, aligned = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.2, 4.0, 2.9])
        >>> b = AlignedTargets(real, aligned, (real - aligned).abs())   # TBM 0.2, 2.0, 0.1
        >>> source_bellman_target(b, "gated", threshold=0.5)
        tensor([1., 4., 3.])
        >>> source_bellman_target(b)   # the paper
        tensor([1.2000, 4.0000, 2.9000])
    """
    if kind == "aligned":
        return backup.aligned
    if kind == "realised":
        return backup.realised
    if kind == "gated":
        if threshold is None:
            raise ValueError("source_bellman_target(kind='gated') needs the TBM threshold (gate_threshold).")
        return torch.where(backup.tbm <= threshold, backup.realised, backup.aligned)
    raise ValueError(f"Unknown source target {kind!r}; choose one of {SOURCE_TARGETS}.")


def tbm_weights(
    tbm: torch.Tensor,
    source_mask: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    scaling: str = "batch_std",
    std_eps: float = 1e-6,
) -> torch.Tensor:
    """Transfer weights from the TBM (Liu & Long, arXiv 2605.22376, Eq. 7).

    Over the source rows ``B_src`` of a batch::

        w_i = |B_src| * softmax_i(-TBM_i / (temperature * s_B))      [reconstructed: mean 1]
        s_B = std_{j in B_src}(TBM_j) + std_eps     ("batch_std", default [reconstructed])
        s_B = 1                                      ("absolute", the paper's literal form)

    and ``w = 1`` on the other rows. The std is the unbiased one (``torch.std``);
    with a single source row it is taken as 0 (that row gets weight 1). The
    softmax is shifted by the smallest source TBM and the std is computed on
    rescaled values, so huge TBMs (``1e30``) give finite, correct weights; equal
    TBMs give weights 1; no source rows gives all-ones. No gradient flows.

    Infinite TBMs do not turn the batch into NaN: a ``+inf`` row gets weight 0
    and the other source rows are weighted among themselves (their own batch
    std) and share the batch's total weight ``|B_src|`` (mean 1 over the source
    rows); ``-inf`` rows share it alone; when every source row is ``+inf`` (or
    every one ``-inf``) they are equal, so each gets 1. A NaN TBM still gives NaN
    weights (the trainer's non-finite guard then stops the run).
    With ``std_eps=0`` a zero batch std (equal TBMs, one source row) gives
    logits 0, not ``0 / 0``.

    Args:
        tbm (torch.Tensor): TBM per row, ``[N]`` or ``[N, 1]``.
        source_mask (torch.Tensor, optional): boolean ``[N]`` mask of source rows;
            ``None`` = all rows are source.

    Keyword Args:
        temperature (float): ``tau > 0``. Defaults to ``1.0`` **[reconstructed]**.
        scaling (str): ``"batch_std"`` (default) or ``"absolute"``.
        std_eps (float): added to the batch std, ``>= 0``. Defaults to ``1e-6``.

    Returns:
        torch.Tensor: weights, same shape as ``tbm``, detached.

    Raises:
        ValueError: an unknown ``scaling``, ``temperature <= 0`` or ``std_eps < 0``
            (a negative ``std_eps`` can make the scale negative, which reverses
            the weighting: the worst-aligned rows would get the most weight).

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import tbm_weights
        >>> tbm = torch.tensor([0.0, 1.0, 5.0, 0.0])
        >>> src = torch.tensor([True, True, False, False])
        >>> w = tbm_weights(tbm, src, scaling="absolute")
        >>> w
        tensor([1.4621, 0.5379, 1.0000, 1.0000])
        >>> torch.allclose(w[:2], 2 * torch.softmax(-tbm[:2], 0))
        True
        >>> tbm_weights(torch.tensor([0.0, 1.0, float("inf")]))  # the inf row is left out, not NaN
        tensor([2.4133, 0.5867, 0.0000])
        >>> tbm_weights(tbm, src, std_eps=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: The TBM std_eps must be >= 0 (a negative one can reverse the weighting), got -1.0. Fix: e.g. std_eps=1e-6.
    """
    if scaling not in TBM_SCALINGS:
        raise ValueError(f"Unknown TBM scaling {scaling!r}; choose one of {TBM_SCALINGS}.")
    if not temperature > 0:
        raise ValueError(f"The TBM temperature must be > 0, got {temperature}.")
    if not std_eps >= 0:  # also NaN
        raise ValueError(
            f"The TBM std_eps must be >= 0 (a negative one can reverse the weighting), got {std_eps}. "
            "Fix: e.g. std_eps=1e-6."
        )
    tbm = tbm.detach()
    if tbm.numel() == 0:  # shape check, not a value check: compile-safe
        return torch.ones_like(tbm)
    src_mask = _align_mask(source_mask, tbm)
    dtype = tbm.dtype
    zero = torch.zeros((), dtype=dtype, device=tbm.device)
    inf = torch.full((), float("inf"), dtype=dtype, device=tbm.device)
    n_src = src_mask.sum().to(dtype)
    # infinite TBMs (tensor ops only: compile-safe): -inf rows take the whole weight, +inf rows none;
    # rows of one infinite kind are equal to each other (TBM 0 among themselves)
    pos_inf, neg_inf = src_mask & (tbm == inf), src_mask & (tbm == -inf)
    all_pos_inf = pos_inf.sum() == src_mask.sum()
    mask = torch.where(neg_inf.any(), neg_inf, torch.where(all_pos_inf, src_mask, src_mask & ~pos_inf))
    tbm = torch.where(mask & (pos_inf | neg_inf), zero, tbm)
    n_in = mask.sum().to(dtype)
    # shift by the smallest source TBM (stable softmax); target rows are ignored
    tbm_min = torch.where(mask, tbm, inf).amin()
    tbm_min = torch.where(torch.isfinite(tbm_min), tbm_min, zero)
    shifted = torch.where(mask, tbm - tbm_min, zero)
    if scaling == "batch_std":
        # unbiased std, computed on rescaled values so that 1e30 does not overflow
        scale = shifted.amax().clamp_min(torch.finfo(dtype).tiny)
        x = shifted / scale
        mean = x.sum() / n_in.clamp_min(1)
        var = torch.where(mask, (x - mean) ** 2, zero).sum() / (n_in - 1).clamp_min(1)
        s_b = var.sqrt() * scale + std_eps
        # a zero scale (std_eps=0 and equal TBMs) means equal rows: logits 0
        logits = torch.where(s_b == 0, zero, shifted / (temperature * s_b))
    else:
        logits = shifted / temperature
    expo = torch.where(mask, torch.exp(-logits), zero)
    # the smallest-TBM row has exp(0) = 1, so the sum is >= 1 whenever a source row exists
    weights = n_src * expo / expo.sum().clamp_min(torch.finfo(dtype).tiny)
    return torch.where(src_mask, weights, torch.ones_like(weights))


def huber_loss(input: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """Element-wise Huber loss of the TABB critic (Liu & Long, arXiv 2605.22376, Eq. 8).

    ``0.5 u^2`` if ``|u| <= delta`` else ``delta (|u| - 0.5 delta)``, ``u = input - target``.

    Args:
        input (torch.Tensor): predictions ``Q(z_sa)``.
        target (torch.Tensor): Bellman targets (broadcastable).
        delta (float): threshold. Defaults to ``1.0`` **[reconstructed]**.

    Returns:
        torch.Tensor: the per-element loss (no reduction).

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import huber_loss
        >>> huber_loss(torch.tensor([0.5, 3.0]), torch.zeros(2))
        tensor([0.1250, 2.5000])
    """
    input, target = torch.broadcast_tensors(input, target)
    return torch.nn.functional.huber_loss(input, target, reduction="none", delta=delta)


def expectile_loss(diff: torch.Tensor, expectile: float = 0.7) -> torch.Tensor:
    """Expectile regression loss ``L_2^kappa(u) = |kappa - 1(u < 0)| u^2`` (arXiv 2605.22376, Eq. 9).

    Args:
        diff (torch.Tensor): ``u = min_j Q_targ_j(z_sa) - V(z_s)``.
        expectile (float): ``kappa``. Defaults to ``0.7`` (IQL).

    Returns:
        torch.Tensor: the per-element loss.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import expectile_loss
        >>> expectile_loss(torch.tensor([2.0, -2.0]), expectile=0.7)
        tensor([2.8000, 1.2000])
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff.pow(2)


def split_mean(
    per_row: torch.Tensor,
    target_rows: torch.Tensor | None = None,
    source_rows: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """How every loss of a cross-domain batch is reduced (arXiv 2605.22376, Eqs. 8-10).

    ``mean_T[l] + mean_S[w l]``: the mean over the target rows plus the weighted
    mean over the source rows, each over its own rows (so the source part keeps
    its weight whatever the split). ``source_rows=None`` leaves the source term
    out (the target-only value and actor losses of TABB); with both masks
    ``None`` it is the plain mean over all rows (IQL on pooled data, the
    ``-TBM`` ablation). Reduces the last dimension, so ``[K, N]`` ensemble
    losses give ``[K]``.

    Args:
        per_row (torch.Tensor): per-row losses ``[..., N]``.
        target_rows (torch.Tensor, optional): boolean ``[N]`` mask of target rows.
        source_rows (torch.Tensor, optional): boolean ``[N]`` mask of the source rows
            that count (a method's row filter removes rows from it).
        weight (torch.Tensor, optional): ``[N]`` weights of the source rows (``1`` when ``None``).

    Returns:
        torch.Tensor: ``per_row`` reduced over its last dimension.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import split_mean
        >>> loss = torch.tensor([1.0, 3.0, 10.0, 20.0])
        >>> src, tgt = torch.tensor([True, True, False, False]), torch.tensor([False, False, True, True])
        >>> split_mean(loss, tgt, src, torch.tensor([2.0, 0.0, 1.0, 1.0]))  # 15 + (2 + 0) / 2
        tensor(16.)
        >>> split_mean(loss, tgt), split_mean(loss)
        (tensor(15.), tensor(8.5000))
    """
    if target_rows is None and source_rows is None:
        return per_row.mean(-1)
    out = masked_mean(per_row, target_rows.expand_as(per_row), dim=-1) if target_rows is not None else 0.0
    if source_rows is not None:
        weighted = per_row if weight is None else per_row * weight
        out = out + masked_mean(weighted, source_rows.expand_as(per_row), dim=-1)
    return out


def critic_loss(
    q: torch.Tensor,
    target: torch.Tensor,
    target_rows: torch.Tensor | None = None,
    source_rows: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    *,
    delta: float | None = 1.0,
    source_delta: float | None | str = "same",
    delta_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """The weighted critic loss of TABB (Liu & Long, arXiv 2605.22376, Eq. 8), averaged over the ensemble.

    ``L_Q = mean_j( mean_T[ l(Q_j - y) ] + mean_S[ w l(Q_j - y_hat) ] )`` with ``l``
    the Huber loss of threshold ``delta`` (``delta=None``: the squared error
    ``u^2 / 2``) and ``target`` holding ``y`` on target rows and the source
    rows' target (``y_hat`` for TABB). The reduction is :func:`split_mean`.

    Args:
        q (torch.Tensor): ``[K, N]`` critic outputs (or ``[N]``).
        target (torch.Tensor): ``[N]`` Bellman targets (no gradient).
        target_rows, source_rows, weight: see :func:`split_mean`.

    Keyword Args:
        delta (float or None): Huber threshold. Defaults to ``1.0`` **[reconstructed]**.
        source_delta (float, None or "same"): the threshold on the source rows when it differs
            (DROCO: Huber with ``delta=30`` on source rows, squared error on target rows).
            Defaults to ``"same"`` (``delta``).
        delta_rows (torch.Tensor, optional): the rows that take ``source_delta`` when the
            reduction pools all rows (``source_rows=None``). Defaults to ``source_rows``.

    Returns:
        torch.Tensor: scalar loss.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import critic_loss
        >>> q = torch.tensor([[0.0, 0.0, 0.0]])
        >>> y = torch.tensor([0.5, 3.0, 1.0])
        >>> src, tgt = torch.tensor([True, True, False]), torch.tensor([False, False, True])
        >>> critic_loss(q, y, tgt, src, torch.tensor([2.0, 0.0, 1.0]))  # 0.5 + (2 * 0.125 + 0) / 2
        tensor(0.6250)
        >>> critic_loss(q, y, tgt, src, torch.tensor([2.0, 0.0, 1.0]), delta=None, source_delta=30.0)
        tensor(0.6250)
    """
    def elementwise(d):
        return 0.5 * (q - target) ** 2 if d is None else huber_loss(q, target.expand_as(q), d)

    per_row = elementwise(delta)
    rows = source_rows if delta_rows is None else delta_rows
    if source_delta != "same" and source_delta != delta and rows is not None:
        per_row = torch.where(rows.expand_as(per_row), elementwise(source_delta), per_row)
    return split_mean(per_row, target_rows, source_rows, weight).mean()


def value_loss(
    min_q_target: torch.Tensor,
    value: torch.Tensor,
    expectile: float = 0.7,
    target_rows: torch.Tensor | None = None,
    source_rows: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The expectile value loss (Liu & Long, arXiv 2605.22376, Eq. 9; IQL).

    ``L_V = mean_T[ L2^kappa(min_j Q_targ_j(z_sa) - V(z_s)) ]`` (reduced by :func:`split_mean`:
    TABB passes the target rows only).

    Args:
        min_q_target (torch.Tensor): ``[N]`` ``min_j Q_targ_j`` (no gradient).
        value (torch.Tensor): ``[N]`` ``V(z_s)``.
        expectile (float): ``kappa``. Defaults to ``0.7`` (IQL).
        target_rows, source_rows, weight: see :func:`split_mean`.

    Returns:
        torch.Tensor: scalar loss.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import value_loss
        >>> value_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0]), 0.7)  # (0.7 * 4 + 0.3 * 4) / 2
        tensor(2.)
    """
    return split_mean(expectile_loss(min_q_target - value, expectile), target_rows, source_rows, weight)


def awr_actor_loss(
    log_prob: torch.Tensor,
    advantage: torch.Tensor,
    *,
    beta: float = 3.0,
    max_weight: float = 100.0,
    target_rows: torch.Tensor | None = None,
    source_rows: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Advantage-weighted regression of the actor (Liu & Long, arXiv 2605.22376, Eq. 10; IQL).

    ``L_pi = -mean_T[ min(exp(beta A), max_weight) log pi(a|s) ]`` with
    ``A = min_j Q_targ_j(z_sa) - V(z_s)`` (no gradient) and IQL's clip of the
    weight at ``max_weight``; reduced by :func:`split_mean` (the SrcActor
    ablation adds the weighted source rows).

    Args:
        log_prob (torch.Tensor): ``[N]`` ``log pi(a|s)`` of the dataset actions.
        advantage (torch.Tensor): ``[N]`` advantages (detached here).

    Keyword Args:
        beta (float): inverse temperature. Defaults to ``3.0`` (IQL).
        max_weight (float): clip of ``exp(beta A)``. Defaults to ``100.0`` (IQL).
        target_rows, source_rows, weight: see :func:`split_mean`.

    Returns:
        torch.Tensor: scalar loss.

    Examples:
        >>> import torch, math
        >>> from tabb_torchrl.objectives.functional import awr_actor_loss
        >>> lp = torch.tensor([-1.0, -2.0])
        >>> awr_actor_loss(lp, torch.tensor([0.0, 10.0]), beta=1.0, max_weight=5.0)  # (1 * 1 + 5 * 2) / 2
        tensor(5.5000)
    """
    adv_weight = torch.exp(beta * advantage.detach()).clamp_max(max_weight)
    return split_mean(-adv_weight * log_prob, target_rows, source_rows, weight)


def effective_sample_size(weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Effective sample size ``(sum w)^2 / sum w^2`` of the TBM weights (arXiv 2605.22376, Eq. 7).

    Equals the number of rows when all weights are equal.

    Args:
        weights (torch.Tensor): weights ``[N]`` or ``[N, 1]``.
        mask (torch.Tensor, optional): rows to consider (e.g. source rows).

    Returns:
        torch.Tensor: scalar ESS (``0`` for no rows).

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import effective_sample_size
        >>> effective_sample_size(torch.tensor([1.0, 1.0, 1.0, 1.0]))
        tensor(4.)
        >>> effective_sample_size(torch.tensor([4.0, 0.0, 0.0, 0.0]))
        tensor(1.)
    """
    m = _align_mask(mask, weights)
    w = torch.where(m, weights.detach(), torch.zeros_like(weights))
    return w.sum().pow(2) / w.pow(2).sum().clamp_min(torch.finfo(w.dtype).tiny)


def weight_entropy(weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy (nats) of the normalised TBM weights ``p = w / sum w`` (arXiv 2605.22376, Eq. 7).

    ``log(n)`` for ``n`` equal weights; ``0`` when one row has all the mass.

    Args:
        weights (torch.Tensor): weights ``[N]`` or ``[N, 1]``.
        mask (torch.Tensor, optional): rows to consider (e.g. source rows).

    Returns:
        torch.Tensor: scalar entropy.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.objectives.functional import weight_entropy
        >>> weight_entropy(torch.ones(4))  # log 4
        tensor(1.3863)
    """
    m = _align_mask(mask, weights)
    w = torch.where(m, weights.detach(), torch.zeros_like(weights))
    p = w / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(torch.finfo(w.dtype).tiny)), torch.zeros_like(p))
    return -plogp.sum()


def gaussian_log_prob(x: torch.Tensor, loc: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """Log-density of a diagonal Gaussian, summed over the last dimension (the ``log pi(a|s)`` of Eq. 10).

    ``sum_i [ -(x_i - mu_i)^2 / (2 sigma_i^2) - log sigma_i - log(2 pi) / 2 ]``, the density of
    IQL's Gaussian actor (and, before the tanh correction, of SAC's).

    Args:
        x (torch.Tensor): points ``[..., d]``.
        loc (torch.Tensor): means ``mu`` (broadcastable).
        log_std (torch.Tensor): ``log sigma`` (broadcastable).

    Returns:
        torch.Tensor: ``[...]`` log-densities.

    Examples:
        >>> import torch
        >>> from torch.distributions import Normal
        >>> from tabb_torchrl.objectives.functional import gaussian_log_prob
        >>> x, mu, ls = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.0, 0.5]]), torch.tensor([0.1, -0.2])
        >>> ref = Normal(mu, ls.exp()).log_prob(x).sum(-1)
        >>> torch.allclose(gaussian_log_prob(x, mu, ls), ref)
        True
    """
    return (-((x - loc) ** 2) * torch.exp(-2 * log_std) / 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
