"""A flat-tensor SAC update on the parameters of a TorchRL :class:`~torchrl.objectives.SACLoss`.

The behaviour policies of the data protocol are SAC agents trained online
(``recipes/train_behavior.py``).  TorchRL's ``SACLoss`` spends most of an update
of these small networks in TensorDict bookkeeping: about 16 ms per update of a
2x256 MLP at batch 256 on one CPU thread here, against well under 1 ms for the
environment step, the policy call and the replay-buffer write together.
:class:`FusedSACUpdate` computes the same SAC-v2 losses as ``SACLoss`` (twin
critics, learned temperature, ``l2`` critic loss summed over the critics),
steps the same optimisers and Polyak-averages the same target parameters, but on
plain tensors.  Because it works on the loss module's own parameters, a run can
switch between the two paths and its checkpoints stay interchangeable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tabb_torchrl.objectives.flat import ACTIVATION_FNS, ensemble_forward, linear_params, mlp_forward
from tabb_torchrl.objectives.functional import gaussian_log_prob

__all__ = ["FusedSACUpdate", "tanh_normal_sample", "tanh_normal_log_prob"]

_LOG2 = math.log(2.0)


def tanh_normal_sample(loc: torch.Tensor, scale: torch.Tensor, noise: torch.Tensor):
    """Reparametrised ``tanh(loc + scale * noise)`` and its log-density (summed over the last dim).

    The density of ``u = loc + scale * noise`` under the Gaussian
    (:func:`~tabb_torchrl.objectives.functional.gaussian_log_prob`) minus the
    log-Jacobian of ``tanh``, in the stable form ``2 (log 2 - u - softplus(-2u))``.

    Args:
        loc (torch.Tensor): means of the pre-``tanh`` Gaussian, ``[..., d]``.
        scale (torch.Tensor): its standard deviations (positive), ``[..., d]``.
        noise (torch.Tensor): standard normal draws, ``[..., d]``.

    Returns:
        ``(action, log_prob)``: ``[..., d]`` actions in ``(-1, 1)`` and ``[...]`` log-densities.

    Examples:
        >>> import torch
        >>> loc, scale, noise = torch.tensor([[0.3, -1.2]]), torch.tensor([[0.5, 2.0]]), torch.tensor([[0.7, -0.4]])
        >>> a, logp = tanh_normal_sample(loc, scale, noise)
        >>> torch.allclose(a, torch.tanh(loc + scale * noise))
        True
        >>> ref = torch.distributions.Normal(loc, scale).log_prob(loc + scale * noise)
        >>> torch.allclose(logp, (ref - torch.log1p(-a.pow(2))).sum(-1))
        True
    """
    u = loc + scale * noise
    return torch.tanh(u), tanh_normal_log_prob(u, loc, scale)


def tanh_normal_log_prob(u: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Log-density of ``tanh(u)`` under the tanh-Gaussian, from the pre-``tanh`` point ``u`` (summed over the last dim).

    ``log N(u; loc, scale) - sum_i log(1 - tanh(u_i)^2)``, the change of variables of
    :func:`tanh_normal_sample`, with the log-Jacobian in TorchRL's (``TanhTransform``) stable
    form ``2 (log 2 - u - softplus(-2u))``. Scoring a given action ``a`` takes
    ``u = atanh(a)``.

    Args:
        u (torch.Tensor): pre-``tanh`` points, ``[..., d]``.
        loc (torch.Tensor): means of the Gaussian, ``[..., d]``.
        scale (torch.Tensor): its standard deviations (positive), ``[..., d]``.

    Returns:
        torch.Tensor: ``[...]`` log-densities.

    Examples:
        >>> import torch
        >>> u, loc, scale = torch.tensor([[0.4, -2.0]]), torch.tensor([[0.1, -1.0]]), torch.tensor([[0.5, 1.5]])
        >>> ref = torch.distributions.Normal(loc, scale).log_prob(u) - torch.log1p(-torch.tanh(u) ** 2)
        >>> torch.allclose(tanh_normal_log_prob(u, loc, scale), ref.sum(-1))
        True
    """
    return gaussian_log_prob(u, loc, scale.log()) - (2.0 * (_LOG2 - u - F.softplus(-2.0 * u))).sum(-1)


class FusedSACUpdate:
    """One SAC-v2 gradient step in flat tensors, on the parameters of a TorchRL ``SACLoss``.

    Per batch of ``(s, a, r, s', terminated)``, with ``alpha = exp(log_alpha)``
    (no gradient), ``a~ ~ pi(.|s)`` and ``a' ~ pi(.|s')`` reparametrised
    ``tanh``-Gaussian samples:

    * critic: ``y = r + gamma (1 - terminated) min_k (Q'_k(s', a') - alpha log pi(a'|s'))``
      with the target critics ``Q'``, and ``L_Q = mean_batch sum_k (Q_k(s, a) - y)^2``;
    * actor: ``L_pi = mean(alpha log pi(a~|s) - min_k Q_k(s, a~))`` (critics detached);
    * temperature: ``L_alpha = mean(-log_alpha (log pi(a~|s) + H_target))``;

    then one step of each optimiser on ``L_Q + L_pi + L_alpha`` and
    ``Q' <- (1 - tau) Q' + tau Q``.  These are the losses of
    :class:`torchrl.objectives.SACLoss` (version 2, ``loss_function="l2"``, TD(0)
    value estimator); the tests check both paths against each other.

    Args:
        actor: the :class:`~tabb_torchrl.behavior.policies.SquashedGaussianActor`
            inside ``loss``'s actor (its parameters are the loss's actor parameters).
        loss: the :class:`~torchrl.objectives.SACLoss` holding the twin critics
            (``qvalue_network_params``, stacked ``[2, ...]``), their targets,
            ``log_alpha`` and ``target_entropy``.  Its critic must be an MLP of
            ``Linear`` layers with ReLU, ELU or Tanh activations.
        optimizers: the optimisers to step (their parameters are the loss's).
        gamma: discount.
        tau: Polyak rate of the target critics (``SoftUpdate(tau=...)``).

    Examples:
        >>> import torch
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.data import Bounded
        >>> from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
        >>> from torchrl.objectives import SACLoss
        >>> from tabb_torchrl.behavior import FusedSACUpdate, SquashedGaussianActor
        >>> _ = torch.manual_seed(0)
        >>> net = SquashedGaussianActor(3, 2, hidden_sizes=(16, 16))
        >>> spec = Bounded(-torch.ones(2), torch.ones(2), shape=(2,))
        >>> actor = ProbabilisticActor(
        ...     TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        ...     in_keys=["loc", "scale"], spec=spec, distribution_class=TanhNormal)
        >>> qnet = ValueOperator(MLP(in_features=5, out_features=1, num_cells=[16, 16]),
        ...                      in_keys=["observation", "action"])
        >>> loss = SACLoss(actor, qnet, num_qvalue_nets=2, loss_function="l2", action_spec=spec)
        >>> opt = torch.optim.Adam(loss.parameters(), lr=1e-3)
        >>> update = FusedSACUpdate(net, loss, [opt], gamma=0.99, tau=0.005)
        >>> n = 8
        >>> metrics = update(torch.randn(n, 3), torch.rand(n, 2) * 2 - 1, torch.randn(n),
        ...                  torch.randn(n, 3), torch.zeros(n, dtype=torch.bool))
        >>> sorted(update.metrics_dict(metrics))
        ['alpha', 'entropy', 'loss_actor', 'loss_alpha', 'loss_qvalue']
    """

    #: Names of the entries of the metrics tensor returned by :meth:`__call__`.
    METRICS = ("loss_qvalue", "loss_actor", "loss_alpha", "alpha", "entropy")

    def __init__(
        self,
        actor: nn.Module,
        loss: nn.Module,
        optimizers: Sequence[torch.optim.Optimizer],
        *,
        gamma: float,
        tau: float,
    ) -> None:
        if not hasattr(actor, "trunk") or not hasattr(actor, "head"):
            raise TypeError("FusedSACUpdate: `actor` must be a SquashedGaussianActor (trunk + head)")
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"FusedSACUpdate: tau must be in (0, 1], got {tau}")
        self.actor = actor
        self.loss = loss
        self.optimizers = list(optimizers)
        self.gamma = float(gamma)
        self.tau = float(tau)
        kinds = {type(m) for m in actor.trunk if not isinstance(m, nn.Linear)}
        qkinds = {type(m) for m in loss.qvalue_network.modules()
                  if not isinstance(m, (nn.Linear, nn.Sequential)) and not list(m.children())}
        if len(kinds) > 1 or len(qkinds) > 1 or not (kinds | qkinds) <= set(ACTIVATION_FNS):
            raise NotImplementedError(
                f"FusedSACUpdate: actor and critic must be Linear layers with one of "
                f"{sorted(k.__name__ for k in ACTIVATION_FNS)}; found {sorted(k.__name__ for k in kinds | qkinds)}"
            )
        self._act = ACTIVATION_FNS[kinds.pop()] if kinds else (lambda x: x)
        self._qact = ACTIVATION_FNS[qkinds.pop()] if qkinds else (lambda x: x)
        self._pi = [p for lin in [*(m for m in actor.trunk if isinstance(m, nn.Linear)), actor.head]
                    for p in (lin.weight, lin.bias)]
        # the critic is a TorchRL MLP inside a ValueOperator: parameters ``module.<i>.weight``, stacked [2, ...]
        self._q = linear_params(loss.qvalue_network_params, "FusedSACUpdate critic", container="module")
        self._q_target = linear_params(loss.target_qvalue_network_params, "FusedSACUpdate target critic",
                                       container="module")
        if len(self._q) != len(self._q_target) or any(a.shape != b.shape for a, b in zip(self._q, self._q_target)):
            raise NotImplementedError("FusedSACUpdate: critic and target critic parameters do not match")
        self._q_data = [p.data for p in self._q]
        self._q_target_data = [p.data for p in self._q_target]
        self.log_alpha = loss.log_alpha
        self.target_entropy = float(loss.target_entropy)
        self.log_std_min = float(actor.log_std_min)
        self.log_std_max = float(actor.log_std_max)

    def _policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = mlp_forward(obs, self._pi, self._act)
        loc, raw = out.chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw) + 1.0)
        return loc, log_std.exp()

    def losses(self, obs, action, reward, next_obs, terminated):
        """The three losses (with graph) and the detached metrics of one batch.

        Draws the next-state noise first and the current-state noise second from
        the global generator, in the order ``SACLoss`` draws them.

        Returns:
            ``(total_loss, metrics)``; ``metrics`` is a tensor in :attr:`METRICS` order.
        """
        reward = reward.reshape(-1)
        terminated = terminated.reshape(-1)
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            nloc, nscale = self._policy(next_obs)
            next_a, next_logp = tanh_normal_sample(nloc, nscale, torch.empty_like(nloc).normal_())
            q_next = ensemble_forward(torch.cat([next_obs, next_a], -1), self._q_target_data, self._qact)
            v_next = (q_next - alpha * next_logp).min(0).values
            y = reward + self.gamma * (~terminated.bool()).to(reward.dtype) * v_next
        q = ensemble_forward(torch.cat([obs, action], -1), self._q, self._qact)
        loss_q = (q - y).pow(2).sum(0).mean()
        loc, scale = self._policy(obs)
        a, logp = tanh_normal_sample(loc, scale, torch.empty_like(loc).normal_())
        q_pi = ensemble_forward(torch.cat([obs, a], -1), [p.detach() for p in self._q], self._qact)
        loss_pi = (alpha * logp - q_pi.min(0).values).mean()
        loss_alpha = (-self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        total = loss_q + loss_pi + loss_alpha
        metrics = torch.stack([loss_q.detach(), loss_pi.detach(), loss_alpha.detach(), alpha,
                               -logp.detach().mean()])
        return total, metrics

    def __call__(self, obs, action, reward, next_obs, terminated) -> torch.Tensor:
        """One update: losses, backward, each optimiser's step, Polyak update of the target critics.

        Args:
            obs: ``[N, obs_dim]`` observations.
            action: ``[N, act_dim]`` actions in ``[-1, 1]``.
            reward: ``[N]`` or ``[N, 1]`` rewards.
            next_obs: ``[N, obs_dim]`` next observations.
            terminated: ``[N]`` or ``[N, 1]`` termination flags (truncation is not termination).

        Returns:
            the detached metrics (:attr:`METRICS` order; :meth:`metrics_dict` names them).
        """
        total, metrics = self.losses(obs, action, reward, next_obs, terminated)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in self.optimizers:
            opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._q_target_data, self._q_data, self.tau)
        return metrics

    def metrics_dict(self, metrics: torch.Tensor) -> dict[str, float]:
        """``{name: value}`` of a metrics tensor returned by :meth:`__call__`."""
        return dict(zip(self.METRICS, metrics.tolist()))
