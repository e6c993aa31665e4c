"""A flat-tensor CQL step that computes TorchRL's :class:`~torchrl.objectives.CQLLoss` exactly, on its parameters.

``algo=cql`` with ``optim.update=fused`` (the default) runs :class:`FusedCQLUpdate`:
the losses of the ``CQLLoss`` built by :func:`~tabb_torchrl.pipeline.cql.make_cql`
(twin critics, soft or deterministic or max-Q backup, the importance-sampled
conservative term, the actor, behaviour-cloning, temperature and Lagrange
losses), the same optimisers and the same soft update, written on plain tensors
instead of TensorDicts, ``vmap`` and distribution objects. It reads and trains
the loss module's own parameters, draws its random numbers in the order and
shapes ``CQLLoss`` draws them, and returns the metrics of
:class:`~tabb_torchrl.pipeline.cql.CQLUpdate`, so that the two paths train the
same thing (the tests check equal losses, gradients and parameters) and share
one checkpoint format. ``optim.update=modular`` runs TorchRL's module itself.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
from tensordict import TensorDictBase
from tensordict.nn import NormalParamExtractor
from torch import nn
from torchrl.modules import MLP, TanhNormal
from torchrl.objectives import SoftUpdate
from torchrl.objectives.utils import distance_loss
from torchrl.objectives.value import TD0Estimator

from tabb_torchrl.behavior.sac import tanh_normal_log_prob, tanh_normal_sample
from tabb_torchrl.objectives.flat import ACTIVATION_FNS, ensemble_forward, linear_params, mlp_forward, optimizer_step
from tabb_torchrl.pipeline.cql import LAGRANGE_UPDATES, paper_lagrange_losses

__all__ = ["FusedCQLUpdate"]

#: Masks ``CQLLoss`` reads from a batch to drop rows (``LossModule._reduce_loss``); the fused step has none.
_MASK_KEYS = (("collector", "mask"), "shifted_valid")


def _activation(mlp: nn.Module, what: str):
    """The one activation function between the ``Linear`` layers of ``mlp`` (a TorchRL ``MLP``)."""
    kinds = {type(m) for m in mlp.modules() if m is not mlp and not isinstance(m, nn.Linear) and not list(m.children())}
    if len(kinds) > 1 or not kinds <= set(ACTIVATION_FNS):
        raise NotImplementedError(
            f"FusedCQLUpdate: the {what} must be Linear layers with one of "
            f"{sorted(k.__name__ for k in ACTIVATION_FNS)}; found {sorted(k.__name__ for k in kinds)}. "
            "Fix: optim.update=modular runs TorchRL's CQLLoss on any network."
        )
    return ACTIVATION_FNS[kinds.pop()] if kinds else (lambda x: x)


class _Workspace:
    """Tensors kept from one step to the next (by name), so that a big batch does not page-fault fresh memory.

    ``generation`` counts the forward passes that wrote into them: a backward pass of an older
    forward finds its activations overwritten and refuses to run.
    """

    def __init__(self) -> None:
        self.tensors: dict = {}
        self.generation = 0

    def get(self, name, shape, like: torch.Tensor) -> torch.Tensor:
        t = self.tensors.get(name)
        if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
            t = self.tensors[name] = like.new_empty(shape)
        return t


class _ReluTwinCritic(torch.autograd.Function):
    """:func:`~tabb_torchrl.objectives.flat.ensemble_forward` of a ReLU MLP ensemble, activations and gradients
    written into a :class:`_Workspace` (the same batched matmuls and ReLU masks as autograd's; no fresh memory).

    ``forward(x [N, d], workspace, w1, b1, w2, b2, ...) -> [K, N]`` (weights ``[K, out, in]``); ``x``
    gets no gradient. One forward per backward: a second forward before the backward of the first
    makes that backward raise.
    """

    @staticmethod
    def forward(ctx, x, ws, *params):
        n = len(params) // 2
        ws.generation += 1
        h = x.expand(params[0].shape[0], -1, -1)
        hs = [h]
        for i in range(n):
            w, b = params[2 * i], params[2 * i + 1]
            out = ws.get(("h", i), (w.shape[0], x.shape[0], w.shape[1]), x)
            torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2), out=out)
            if i < n - 1:
                out.relu_()
            hs.append(out)
            h = out
        ctx.ws, ctx.generation, ctx.hs = ws, ws.generation, hs
        ctx.save_for_backward(*params)
        return h.squeeze(-1).clone()

    @staticmethod
    def backward(ctx, grad_q):
        if ctx.generation != ctx.ws.generation:
            raise RuntimeError("FusedCQLUpdate: the critic's activations were overwritten by a later forward pass "
                               "before this backward pass (one forward per backward).")
        params = ctx.saved_tensors
        n = len(params) // 2
        g = grad_q.unsqueeze(-1)
        grads = [None] * len(params)
        for i in reversed(range(n)):
            h_prev = ctx.hs[i]
            grads[2 * i] = torch.bmm(g.transpose(1, 2), h_prev)
            grads[2 * i + 1] = g.sum(1)
            if i > 0:
                gh = ctx.ws.get(("g", i), h_prev.shape, h_prev)
                if params[2 * i].shape[1] == 1:  # a one-output layer: the outer product, as a product
                    torch.mul(g, params[2 * i], out=gh)
                else:
                    torch.bmm(g, params[2 * i], out=gh)
                torch.ops.aten.threshold_backward.grad_input(gh, h_prev, 0.0, grad_input=gh)  # ReLU's mask, in place
                g = gh
        ctx.hs = None
        return (None, None, *grads)


def _unsupported(what: str) -> NotImplementedError:
    return NotImplementedError(f"FusedCQLUpdate does not support {what}. "
                               "Fix: optim.update=modular runs TorchRL's CQLLoss itself.")


class FusedCQLUpdate:
    r"""One CQL step in flat tensors, with the losses of TorchRL's ``CQLLoss``, on that loss's parameters.

    Per batch of ``N`` rows ``(s, a, r, s', d)``, with ``alpha = exp(log_alpha)`` (no gradient),
    ``R = num_random``, ``T = temperature``, ``w = min_q_weight`` and the actor's TanhNormal
    :math:`\pi` on the env's bounds, exactly as ``CQLLoss`` computes them:

    * critic: ``y = r + gamma (1 - d) (min_k Q'_k(s', a') - alpha log pi(a'|s'))``,
      ``a' ~ pi(.|s')`` (``deterministic_backup`` drops the entropy term; ``max_q_backup`` takes
      ``min_k max_j Q'_k(s', a'_j)`` over ``R`` policy actions), and
      ``L_Q = mean_i sum_k loss_function(Q_k(s_i, a_i), y_i)``;
    * conservative term: for each row ``i`` and draw ``j <= R``, a uniform action
      ``u_ij`` in ``[-1, 1]^d`` and policy actions ``c_ij ~ pi(.|s_i)``, ``n_ij ~ pi(.|s'_i)``
      (policy and actions without gradient),
      ``L_CQL = sum_k w (T mean_ij logsumexp_3([Q_k(s_i, u_ij) - log 2^-d,
      Q_k(s'_i, n_ij) - log pi(n_ij|s'_i), Q_k(s_i, c_ij) - log pi(c_ij|s_i)] / T) - mean_i Q_k(s_i, a_i))``:
      TorchRL's log-sum-exp runs over the three importance-sampled values of one draw (not over
      the ``3R`` actions of a state, as in the authors' code) and scores the ``s'`` actions at
      ``s'``;
    * actor: ``L_pi = mean(alpha log pi(a~|s) - min_k Q_k(s, a~))`` (critics detached) and the
      behaviour-cloning loss ``L_bc = mean(alpha log pi(a^|s) - log pi(a|s))``, with
      reparametrised ``a~, a^ ~ pi(.|s)``; the step trains ``L_bc`` for the first
      ``policy_eval_start`` steps, ``L_pi`` after;
    * temperature: ``L_alpha = mean(-log_alpha (log pi(a~|s) + H_target))``;
    * Lagrange multiplier (``with_lagrange``): ``lagrange_update="paper"`` trains the critics on
      ``L_Q + alpha' L_CQL`` and ``alpha'`` on ``-alpha' (L_CQL - 2 tau) / 2``
      (:func:`~tabb_torchrl.pipeline.cql.paper_lagrange_losses`); ``"torchrl"`` adds TorchRL's
      ``loss_alpha_prime`` (not detached) to ``L_Q + L_CQL``, as TorchRL's example does;

    then one backward pass, one step of each optimiser and the soft update of the target critics
    (``SoftUpdate``'s rate). The random numbers are drawn from the global generator in
    ``CQLLoss``'s order and shapes (next-state action, max-Q-backup actions, uniform actions,
    current and next policy actions, behaviour-cloning action, actor action), so with the same
    seed both paths draw the same actions.

    Its arguments are those of :class:`~tabb_torchrl.pipeline.cql.CQLUpdate`, which it replaces.

    Args:
        loss_module (CQLLoss): the loss of :func:`~tabb_torchrl.pipeline.cql.make_cql` (an MLP actor
            to ``NormalParamExtractor`` to ``TanhNormal(tanh_loc=False)``, twin MLP critics on
            ``[s, a]``, TD(0) value estimator, ``reduction="mean"``).
        replay_buffer (ReplayBuffer): gives the batches (``rb.sample()``; one pooled loss).
        optimizers (mapping or sequence of torch.optim.Optimizer): hold the actor, critic,
            ``log_alpha`` (and ``log_alpha_prime``) parameters; stepped in order.
        target_updater (SoftUpdate): its rate ``1 - eps`` moves the target critics.

    Keyword Args:
        policy_eval_start (int): steps of behaviour cloning first. Defaults to ``40_000``.
        lagrange_update (str): ``"paper"`` or ``"torchrl"``. Defaults to ``"paper"``.
        step (int): RL steps already done (a resumed run continues the schedule). Defaults to ``0``.
        compile (bool): ``torch.compile`` the losses (forward and backward; the optimiser and
            soft-update steps stay eager). Defaults to ``False``.
        mode (str, optional): ``torch.compile`` mode.

    Raises:
        NotImplementedError: a loss, network or batch the fused step does not cover (use
            ``optim.update=modular``).
        ValueError: bad ``lagrange_update`` or optimisers that miss a trained parameter.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl.data import make_source_target_buffer
        >>> from tabb_torchrl.pipeline.cql import make_cql
        >>> cfg = {"model": {"actor_hidden": [8], "qvalue_hidden": [8], "activation": "relu"},
        ...        "loss": {"gamma": 0.99}, "optim": {"target_update_tau": 0.005, "lr_actor": 3e-4,
        ...        "lr_qvalue": 3e-4, "weight_decay": 0.0}, "algo": {"name": "cql", "cql": {"num_random": 2}}}
        >>> actor, loss, updater, opts = make_cql(cfg, "Hopper-v5")
        >>> def data(n):
        ...     return TensorDict({"observation": torch.randn(n, 11), "action": torch.rand(n, 3) * 2 - 1,
        ...         ("next", "observation"): torch.randn(n, 11), ("next", "reward"): torch.randn(n, 1),
        ...         ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        ...         ("next", "done"): torch.zeros(n, 1, dtype=torch.bool)}, [n])
        >>> rb = make_source_target_buffer(data(40), data(20), n_source=4, n_target=4, seed=0)
        >>> update = FusedCQLUpdate(loss, rb, opts, updater, policy_eval_start=1)
        >>> m = update()
        >>> sorted(k for k in m if k.startswith("loss")), float(m["cql_bc_phase"])
        (['loss_actor', 'loss_actor_bc', 'loss_alpha', 'loss_alpha_prime', 'loss_cql', 'loss_qvalue'], 1.0)
        >>> float(update()["cql_bc_phase"]), update.step_count
        (0.0, 2)
    """

    def __init__(self, loss_module, replay_buffer, optimizers, target_updater, *, policy_eval_start: int = 40_000,
                 lagrange_update: str = "paper", step: int = 0, compile: bool = False, mode: str | None = None):
        if lagrange_update not in LAGRANGE_UPDATES:
            raise ValueError(f"lagrange_update must be one of {LAGRANGE_UPDATES}, got {lagrange_update!r}.")
        lm = loss_module
        self.loss_module = lm
        self.replay_buffer = replay_buffer
        self.optimizers = list(optimizers.values()) if isinstance(optimizers, Mapping) else list(optimizers)
        self.target_updater = target_updater
        self.policy_eval_start = int(policy_eval_start)
        self.lagrange_update = lagrange_update
        self.step_count = int(step)

        # ---- the loss's settings (what the fused step covers)
        if lm.reduction != "mean":
            raise _unsupported(f"reduction={lm.reduction!r}")
        if lm.delay_actor or not lm.delay_qvalue:
            raise _unsupported("delay_actor=True or delay_qvalue=False")
        if lm.min_log_alpha is not None or lm.max_log_alpha is not None:
            raise _unsupported("min_alpha / max_alpha")
        if type(lm.value_estimator) is not TD0Estimator:
            raise _unsupported(f"the value estimator {type(lm.value_estimator).__name__} (TD0 only)")
        if not isinstance(target_updater, SoftUpdate):
            raise _unsupported(f"the target updater {type(target_updater).__name__} (SoftUpdate only)")
        self.loss_function = str(lm.loss_function)
        self.gamma = float(lm.value_estimator.gamma)
        self.temperature = float(lm.temperature)
        self.min_q_weight = float(lm.min_q_weight)
        self.num_random = int(lm.num_random)
        self.max_q_backup = bool(lm.max_q_backup)
        self.deterministic_backup = bool(lm.deterministic_backup)
        self.with_lagrange = bool(lm.with_lagrange)
        self.target_action_gap = float(lm.target_action_gap) if self.with_lagrange else 0.0
        self.target_entropy = float(lm.target_entropy)
        self.polyak = 1.0 - float(target_updater.eps)
        keys = lm.tensor_keys
        self._keys = {"action": keys.action, "reward": ("next", keys.reward),
                      "terminated": ("next", keys.terminated)}

        # ---- the actor: MLP -> NormalParamExtractor -> TanhNormal(tanh_loc=False) on [low, high]
        actor = lm.actor_network
        mlps = [m for m in actor.modules() if isinstance(m, MLP)]
        extractors = [m for m in actor.modules() if isinstance(m, NormalParamExtractor)]
        dists = [m for m in actor.modules() if getattr(m, "distribution_class", None) is not None]
        if (len(mlps) != 1 or len(extractors) != 1 or len(dists) != 1 or len(actor.in_keys) != 1
                or not any(isinstance(m, nn.Sequential) and list(m.children()) == [mlps[0], extractors[0]]
                           for m in actor.modules())):
            raise _unsupported("this actor (make_cql_actor's MLP -> NormalParamExtractor -> TanhNormal only)")
        kwargs = dict(dists[0].distribution_kwargs)
        if (dists[0].distribution_class is not TanhNormal or kwargs.get("tanh_loc", False)
                or kwargs.get("event_dims") not in (None, 1)):
            raise _unsupported("an actor distribution other than TanhNormal(tanh_loc=False)")
        self._obs_key = actor.in_keys[0]
        self._pi = [p for lin in mlps[0].modules() if isinstance(lin, nn.Linear) for p in (lin.weight, lin.bias)]
        if {id(p) for p in self._pi} != {id(p) for p in lm.actor_network_params.flatten_keys().values()}:
            raise _unsupported("an actor whose parameters are not the loss module's")
        self._pi_act = _activation(mlps[0], "actor")
        self._extractor = extractors[0]  # loc, scale = chunk; scale = scale_mapping(scale).clamp_min(scale_lb)
        device = self._pi[0].device
        low = torch.as_tensor(kwargs.get("low", -1.0), dtype=self._pi[0].dtype, device=device)
        high = torch.as_tensor(kwargs.get("high", 1.0), dtype=self._pi[0].dtype, device=device)
        # TanhNormal adds an affine map tanh -> [low, high] only when the bounds are not [-1, 1]
        self._bounded = bool((low != -1.0).any() or (high != 1.0).any())
        self._mid, self._half = (high + low) / 2, (high - low) / 2
        self._log_half = self._half.log().expand(self._pi[-1].shape[0] // 2).sum()
        self._atanh_lim = 1.0 - torch.finfo(self._pi[0].dtype).resolution  # TorchRL's SafeTanhTransform

        # ---- the twin critics (stacked [2, ...]) and their targets
        critic_mlps = [m for m in lm.qvalue_network.modules() if isinstance(m, MLP)]
        if len(critic_mlps) != 1 or list(lm.qvalue_network.in_keys) != [self._obs_key, keys.action]:
            raise _unsupported("this critic (an MLP on [observation, action] only)")
        self._q_act = _activation(critic_mlps[0], "critic")
        self._q = linear_params(lm.qvalue_network_params, "FusedCQLUpdate critic", container="module")
        self._q_target = [p.data for p in linear_params(lm.target_qvalue_network_params,
                                                        "FusedCQLUpdate target critic", container="module")]
        self._q_data = [p.data for p in self._q]
        self.log_alpha = lm.log_alpha
        self.log_alpha_prime = lm.log_alpha_prime if self.with_lagrange else None
        owned = {id(p) for opt in self.optimizers for g in opt.param_groups for p in g["params"]}
        trained = [*self._pi, *self._q, self.log_alpha] + ([self.log_alpha_prime] if self.with_lagrange else [])
        if any(id(p) not in owned for p in trained if p.requires_grad):
            raise ValueError("FusedCQLUpdate: the optimisers must hold the loss module's actor and critic "
                             "parameters, log_alpha (and log_alpha_prime).")
        # eager ReLU critics: activations and gradients of the big batch in buffers kept across steps
        self._workspace = _Workspace() if self._q_act is torch.relu and not compile else None
        self._losses = torch.compile(self.losses, mode=mode) if compile else self.losses

    def _critic(self, x: torch.Tensor) -> torch.Tensor:
        """The twin critics on the ``N (1 + 3 R)`` rows of the critic and conservative losses, ``[2, rows]``."""
        if self._workspace is None:
            return ensemble_forward(x, self._q, self._q_act)
        return _ReluTwinCritic.apply(x, self._workspace, *self._q)

    # ------------------------------------------------------------------ the actor's TanhNormal
    def _policy(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._extractor(mlp_forward(obs, self._pi, self._pi_act))

    def _sample(self, loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparametrised action on the env's bounds and its log-density (noise from the global generator)."""
        action, log_prob = tanh_normal_sample(loc, scale, torch.empty_like(loc).normal_())
        if self._bounded:
            action, log_prob = self._mid + self._half * action, log_prob - self._log_half
        return action, log_prob

    def _log_prob(self, loc: torch.Tensor, scale: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``log pi(action|s)`` of given actions, inverted as TorchRL's TanhNormal does (clamped ``atanh``)."""
        y = (action - self._mid) / self._half if self._bounded else action
        log_prob = tanh_normal_log_prob(y.clamp(-self._atanh_lim, self._atanh_lim).atanh(), loc, scale)
        return log_prob - self._log_half if self._bounded else log_prob

    # ------------------------------------------------------------------ the step
    def tensors(self, batch: TensorDictBase) -> tuple[torch.Tensor, ...]:
        """``(obs, action, reward [N], next_obs, terminated [N])`` of a batch, with ``CQLLoss``'s keys."""
        if any(batch.get(k, None) is not None for k in _MASK_KEYS):
            raise _unsupported(f"batches with validity masks {_MASK_KEYS}")
        n = batch.shape[0]
        return (batch.get(self._obs_key), batch.get(self._keys["action"]),
                batch.get(self._keys["reward"]).reshape(n), batch.get(("next", self._obs_key)),
                batch.get(self._keys["terminated"]).reshape(n))

    def losses(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor,
               terminated: torch.Tensor, bc_phase: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss of one step (actor or BC + critic + temperature (+ ``alpha'``)) and the detached metrics.

        Random numbers are drawn in ``CQLLoss.forward``'s order (see the class docstring).
        """
        n, r = obs.shape[0], self.num_random
        alpha = self.log_alpha.detach().exp()
        # ---- the soft (or max-Q) backup, without gradient (CQLLoss: actor_params.data, target critics)
        with torch.no_grad():
            next_loc, next_scale = self._policy(next_obs)
            next_a, next_logp = self._sample(next_loc, next_scale)
            if self.max_q_backup:
                a_max, _ = self._sample(next_loc.repeat_interleave(r, 0), next_scale.repeat_interleave(r, 0))
                q_max = ensemble_forward(torch.cat([next_obs.repeat_interleave(r, 0), a_max], -1), self._q_target,
                                         self._q_act)
                v_next = q_max.reshape(-1, n, r).max(-1).values.min(0).values
            else:
                v_next = ensemble_forward(torch.cat([next_obs, next_a], -1), self._q_target, self._q_act).min(0).values
                if not self.deterministic_backup:
                    v_next = v_next - alpha * next_logp
            y = reward + self.gamma * (~terminated.bool()).int() * v_next
        # ---- the conservative term's actions: uniform, policy at s, policy at s' (no gradient)
        loc, scale = self._policy(obs)
        with torch.no_grad():
            a_rand = loc.new_empty(n * r, action.shape[-1]).uniform_(-1, 1)
            a_curr, logp_curr = self._sample(loc.detach().repeat_interleave(r, 0),
                                             scale.detach().repeat_interleave(r, 0))
            a_new, logp_new = self._sample(next_loc.repeat_interleave(r, 0), next_scale.repeat_interleave(r, 0))
            obs_r, next_obs_r = obs.repeat_interleave(r, 0), next_obs.repeat_interleave(r, 0)
            x = torch.cat([torch.cat([obs, action.to(obs.dtype)], -1), torch.cat([obs_r, a_rand], -1),
                           torch.cat([obs_r, a_curr], -1), torch.cat([next_obs_r, a_new], -1)])
        q_pred, q_rand, q_curr, q_new = self._critic(x).split([n, n * r, n * r, n * r], -1)
        loss_q = distance_loss(q_pred, y.expand_as(q_pred), self.loss_function).sum(0).mean()
        random_density = math.log(0.5 ** action.shape[-1])
        cat_q = torch.stack([q_rand - random_density, q_new - logp_new, q_curr - logp_curr], -1)  # [2, N R, 3]
        lse = torch.logsumexp(cat_q / self.temperature, -1) * self.min_q_weight * self.temperature
        # CQLLoss's mean over its broadcast [N, N R] matrix lse_j - w Q(s_i, a_i), per critic
        cql_k = lse.mean(-1) - self.min_q_weight * q_pred.mean(-1)
        loss_cql = cql_k.sum()
        # ---- actor: behaviour cloning, then the SAC actor loss; temperature on the actor's sample
        _, logp_bc = self._sample(loc, scale)
        loss_bc = (alpha * logp_bc - self._log_prob(loc, scale, action.to(loc.dtype))).mean()
        a_pi, logp_pi = self._sample(loc, scale)
        q_pi = ensemble_forward(torch.cat([obs, a_pi], -1), [p.detach() for p in self._q], self._q_act)
        loss_actor = (alpha * logp_pi - q_pi.min(0).values).mean()
        loss_alpha = (-self.log_alpha * (logp_pi.detach() + self.target_entropy)).mean()
        metrics = {"loss_actor": loss_actor, "loss_actor_bc": loss_bc, "loss_qvalue": loss_q, "loss_cql": loss_cql,
                   "loss_alpha": loss_alpha, "alpha": alpha, "entropy": -logp_pi.mean()}
        total = (loss_bc if bc_phase else loss_actor) + loss_alpha
        if not self.with_lagrange:
            total = total + loss_q + loss_cql
        elif self.lagrange_update == "paper":
            critic, loss_alpha_prime, alpha_prime = paper_lagrange_losses(loss_q, loss_cql, self.log_alpha_prime,
                                                                          self.target_action_gap)
            total = total + critic + loss_alpha_prime
        else:  # TorchRL's alpha_prime_loss, not detached, summed into one backward pass as its example does
            alpha_prime = torch.clamp_max(self.log_alpha_prime.exp(), max=1000000.0)
            loss_alpha_prime = (-(alpha_prime * (cql_k[0] - self.target_action_gap))
                                - alpha_prime * (cql_k[1] - self.target_action_gap)) * 0.5
            total = total + loss_q + loss_cql + loss_alpha_prime
        if self.with_lagrange:
            metrics.update(loss_alpha_prime=loss_alpha_prime, alpha_prime=alpha_prime)
        metrics = {k: v.detach() for k, v in metrics.items()}
        metrics["cql_bc_phase"] = torch.tensor(float(bc_phase))
        return total, metrics

    def step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Losses, one backward pass, the optimiser steps and the soft update on one batch."""
        bc_phase = self.step_count < self.policy_eval_start
        total, metrics = self._losses(*self.tensors(batch), bc_phase)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        optimizer_step(self.optimizers)
        with torch.no_grad():
            torch._foreach_lerp_(self._q_target, self._q_data, self.polyak)
        return metrics

    def __call__(self) -> dict[str, torch.Tensor]:
        """Sample a batch (``rb.sample()``), run :meth:`step` and count it."""
        metrics = self.step(self.replay_buffer.sample())
        self.step_count += 1
        return metrics
