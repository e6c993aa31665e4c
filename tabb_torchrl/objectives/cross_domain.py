"""One cross-domain IQL step, shared by every method and every path (Liu & Long, arXiv 2605.22376, Eqs. 8-10).

:func:`cross_domain_losses` is the one place where a batch of source rows and
target rows becomes the critic, value and actor losses:

1. ``y = r + gamma (1 - d) V(s')`` on every row (:func:`~.functional.bellman_target`);
2. the method (:class:`~tabb_torchrl.methods.CrossDomainMethod`) edits the source
   rows: weights, a row filter, corrected rewards or replaced targets (TABB: the
   target-aligned target and the TBM weights of Eqs. 5 and 7);
3. critic (Eq. 8, :func:`~.functional.critic_loss`), value (Eq. 9,
   :func:`~.functional.value_loss`) and actor (Eq. 10, :func:`~.functional.awr_actor_loss`)
   on the rows the method names, plus the method's actor regulariser.

It works on plain tensors with the source rows first, and on callables for the
networks, so that both the composable TorchRL loss
(:class:`~tabb_torchrl.objectives.CrossDomainIQLLoss`, TensorDict modules, vmapped
critics) and the fast flat-tensor step
(:class:`~tabb_torchrl.objectives.FastCrossDomainUpdate`, flat MLPs, compiled)
call it. Features are latents (``z_s``, ``z_sa``, ``f(s')``) for TABB, or raw
states (``s``, ``[s, a]``, ``s'``) for methods on raw inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple

import torch

from tabb_torchrl.objectives.method import SourceRows
from tabb_torchrl.objectives.functional import (
    awr_actor_loss,
    bellman_target,
    critic_loss,
    effective_sample_size,
    value_loss,
    weight_entropy,
)

__all__ = ["IQLSettings", "CrossDomainRows", "CrossDomainNetworks", "cross_domain_losses", "METRICS"]

#: Metrics every step reports (methods may add their own, e.g. ``mean_tbm``).
METRICS = ("loss_qvalue", "loss_value", "loss_actor", "mean_q", "mean_target_value", "mean_v",
           "mean_weight", "ess", "weight_entropy")


@dataclass(frozen=True)
class IQLSettings:
    """Hyper-parameters of the IQL backbone (Eqs. 8-10).

    Attributes:
        gamma (float): discount. Defaults to ``0.99``.
        expectile (float): ``kappa`` of Eq. 9. Defaults to ``0.7`` (IQL).
        beta (float): inverse temperature of Eq. 10. Defaults to ``3.0`` (IQL).
        max_weight (float): clip of the AWR weight. Defaults to ``100.0`` (IQL).
        huber_delta (float or None): Huber threshold of Eq. 8; ``None`` = squared error.
            Defaults to ``1.0`` **[reconstructed]**.

    Examples:
        >>> IQLSettings(gamma=0.9).expectile
        0.7
        >>> IQLSettings(expectile=1.5)
        Traceback (most recent call last):
        ...
        ValueError: loss.expectile must be in (0, 1), got 1.5.
    """

    gamma: float = 0.99
    expectile: float = 0.7
    beta: float = 3.0
    max_weight: float = 100.0
    huber_delta: float | None = 1.0

    def __post_init__(self):
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"loss.gamma must be in [0, 1], got {self.gamma}.")
        if not 0 < self.expectile < 1:
            raise ValueError(f"loss.expectile must be in (0, 1), got {self.expectile}.")
        if self.huber_delta is not None and not self.huber_delta > 0:
            raise ValueError(f"loss.huber_delta must be > 0 (or null for the squared loss), got {self.huber_delta}.")
        if not self.max_weight > 0:
            raise ValueError(f"loss.max_weight must be > 0, got {self.max_weight}.")
        if not self.beta >= 0:
            raise ValueError(f"loss.beta must be >= 0, got {self.beta}.")


class CrossDomainRows(NamedTuple):
    """One batch as plain tensors, the source rows first (``n_source`` of them), then the target rows.

    Attributes:
        feature_s: ``[N, d]`` what ``V`` reads (``z_s`` or ``s``).
        feature_sa: ``[N, d']`` what ``Q`` reads (``z_sa`` or ``[s, a]``).
        next_feature: ``[N, d]`` ``V``'s input at the next state (``f(s')`` or ``s'``).
        reward: ``[N]`` rewards.
        terminated: ``[N]`` float terminal flags.
        observation: ``[N, obs_dim]`` what the actor reads.
        action: ``[N, act_dim]`` dataset actions.
        columns: the method's per-row columns (``[N, ...]`` each).
    """

    feature_s: torch.Tensor
    feature_sa: torch.Tensor
    next_feature: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    observation: torch.Tensor
    action: torch.Tensor
    columns: Mapping[str, torch.Tensor]


class CrossDomainNetworks(NamedTuple):
    """The networks of one step as callables.

    Attributes:
        q: ``feature_sa [N, d] -> [K, N]`` the critic ensemble (with gradient).
        q_target: the target critics (no gradient).
        value: ``[N, d] -> [N]`` ``V`` (with gradient).
        value_detached: ``V`` at the current parameters, without gradient.
        log_prob: ``(observation, action) -> [N]`` ``log pi(a|s)``.
        policy_action: ``observation -> [N, act_dim]`` the policy's mean action (used only by
            methods with an actor regulariser).
    """

    q: Callable[[torch.Tensor], torch.Tensor]
    q_target: Callable[[torch.Tensor], torch.Tensor]
    value: Callable[[torch.Tensor], torch.Tensor]
    value_detached: Callable[[torch.Tensor], torch.Tensor]
    log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    policy_action: Callable[[torch.Tensor], torch.Tensor] | None = None


def cross_domain_losses(
    rows: CrossDomainRows,
    n_source: int,
    nets: CrossDomainNetworks,
    method,
    settings: IQLSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Critic, value and actor losses of one cross-domain IQL step (Eqs. 8-10) and detached metrics.

    Args:
        rows (CrossDomainRows): the batch, ``n_source`` source rows first.
        n_source (int): number of source rows (a Python int: the split is static).
        nets (CrossDomainNetworks): the networks.
        method (CrossDomainMethod): what is done to the source rows.
        settings (IQLSettings): the backbone's hyper-parameters.

    Returns:
        ``(loss_qvalue, loss_value, loss_actor, metrics)``; gradients of each loss reach only
        its own network (critic, value, actor); ``metrics`` holds :data:`METRICS` and the
        method's own metrics, detached.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.methods import PooledIQL
        >>> n, d = 4, 3
        >>> rows = CrossDomainRows(torch.randn(n, d), torch.randn(n, d), torch.randn(n, d), torch.ones(n),
        ...                        torch.zeros(n), torch.randn(n, 2), torch.zeros(n, 1), {})
        >>> lin = torch.nn.Linear(d, 1)
        >>> nets = CrossDomainNetworks(q=lambda x: lin(x).T.expand(2, -1), q_target=lambda x: lin(x).T.detach(),
        ...     value=lambda x: lin(x)[:, 0], value_detached=lambda x: lin(x)[:, 0].detach(),
        ...     log_prob=lambda s, a: -(a ** 2).sum(-1))
        >>> lq, lv, lpi, m = cross_domain_losses(rows, 2, nets, PooledIQL(), IQLSettings())
        >>> sorted(m)[:3], lq.requires_grad
        (['ess', 'loss_actor', 'loss_qvalue'], True)
    """
    s = settings
    n = rows.reward.shape[0]
    ns = int(n_source)
    if not 0 <= ns <= n:
        raise ValueError(f"n_source={ns} is not in [0, {n}] (the batch has {n} rows).")
    device, dtype = rows.feature_sa.device, rows.feature_sa.dtype
    metrics: dict[str, torch.Tensor] = {}
    weight = keep = None
    with torch.no_grad():
        next_v = nets.value_detached(rows.next_feature)
        target = bellman_target(rows.reward, next_v, rows.terminated, s.gamma)
        if ns:
            tgt = None
            if getattr(method, "needs_target_rows", False):  # e.g. TABB's gated target calibrates on the target rows
                tgt = SourceRows(
                    reward=rows.reward[ns:], terminated=rows.terminated[ns:], next_value=next_v[ns:],
                    next_feature=rows.next_feature[ns:],
                    columns={k: v[ns:] for k, v in rows.columns.items()},
                    value=nets.value_detached, gamma=s.gamma,
                )
            src = SourceRows(
                reward=rows.reward[:ns], terminated=rows.terminated[:ns], next_value=next_v[:ns],
                next_feature=rows.next_feature[:ns],
                columns={k: v[:ns] for k, v in rows.columns.items()},
                value=nets.value_detached, gamma=s.gamma, target_rows=tgt,
            )
            edit = method.edit_source(src)
            if edit.target is not None:
                target = torch.cat([edit.target.reshape(ns).to(dtype), target[ns:]])
            elif edit.reward is not None:
                target = torch.cat([src.realised_target(edit.reward.reshape(ns).to(dtype)), target[ns:]])
            weight, keep = edit.weight, edit.keep
            metrics.update({k: v.detach() for k, v in edit.metrics.items()})
        # rows read by the value and the actor losses
        all_rows = method.pooled or method.source_in_value or method.source_in_actor
        first = 0 if all_rows else ns
        min_q_target = nets.q_target(rows.feature_sa[first:]).amin(0)

    # row masks (constant for a given split) and the weights of the source rows
    if method.pooled:
        target_rows = source_rows = w_full = None
    else:
        is_source = torch.arange(n, device=device) < ns
        target_rows = ~is_source
        source_rows = is_source
        if keep is not None:
            source_rows = is_source & torch.cat([keep.reshape(ns).to(torch.bool),
                                                 torch.zeros(n - ns, dtype=torch.bool, device=device)])
        w_full = None
        if weight is not None:
            w_full = torch.cat([weight.reshape(ns).to(dtype).detach(), torch.ones(n - ns, dtype=dtype, device=device)])

    def reduction(with_source: bool):
        """Masks for a loss over the rows ``first:``."""
        if method.pooled:
            return {}
        if not all_rows:  # target rows only: a plain mean over them
            return {}
        return {"target_rows": target_rows, "source_rows": source_rows if with_source else None,
                "weight": w_full if with_source else None}

    # critic, Eq. 8
    q = nets.q(rows.feature_sa)
    deltas = getattr(method, "critic_deltas", None)  # (target rows, source rows), e.g. DROCO's (None, 30)
    loss_q = critic_loss(q, target, target_rows, source_rows, w_full,
                         delta=s.huber_delta if deltas is None else deltas[0],
                         source_delta="same" if deltas is None else deltas[1],
                         delta_rows=None if deltas is None else torch.arange(n, device=device) < ns)
    # value, Eq. 9
    v = nets.value(rows.feature_s[first:])
    loss_v = value_loss(min_q_target, v, s.expectile, **reduction(method.source_in_value))
    # actor, Eq. 10
    obs, act = rows.observation[first:], rows.action[first:]
    log_prob = nets.log_prob(obs, act)
    loss_pi = awr_actor_loss(log_prob, min_q_target - v.detach(), beta=s.beta, max_weight=s.max_weight,
                             **reduction(method.source_in_actor))
    if method.has_actor_regularizer:
        obs_t = rows.observation[ns:]
        reg = method.actor_regularizer(obs_t, nets.policy_action(obs_t))
        if reg is not None:
            loss_pi = loss_pi + reg
            metrics["actor_regularizer"] = reg.detach()

    with torch.no_grad():
        if ns:
            w_src = torch.ones(ns, dtype=dtype, device=device) if weight is None else weight.reshape(ns).to(dtype)
            if keep is not None:
                w_src = w_src * keep.reshape(ns).to(dtype)
            w_stats = (w_src.mean(), effective_sample_size(w_src), weight_entropy(w_src))
        else:
            zero = torch.zeros((), dtype=dtype, device=device)
            w_stats = (zero, zero, zero)
        metrics.update({
            "loss_qvalue": loss_q.detach(), "loss_value": loss_v.detach(), "loss_actor": loss_pi.detach(),
            "mean_q": q.detach().mean(), "mean_target_value": target.mean(), "mean_v": v.detach().mean(),
            "mean_weight": w_stats[0], "ess": w_stats[1], "weight_entropy": w_stats[2],
        })
    return loss_q, loss_v, loss_pi, metrics
