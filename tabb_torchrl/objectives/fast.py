"""The fast RL step of the cross-domain core: index draw, Eqs. 8-10 and the method's edit, Adam and
Polyak update on flat tensors.

:class:`FastCrossDomainUpdate` computes what the composable path computes
(``rb.sample()`` -> :class:`~tabb_torchrl.objectives.CrossDomainIQLLoss` -> Adam
steps -> ``SoftUpdate``), through the same function,
:func:`~tabb_torchrl.objectives.cross_domain_losses`, and on the parameters of the
same loss module, but:

* the networks are read as flat MLPs (:mod:`tabb_torchrl.objectives.flat`), the
  twin critic as batched matmuls; no TensorDict is built in the step;
* the indices are drawn by the buffer's sampler
  (:meth:`~tabb_torchrl.data.SourceTargetSampler.sample_indices`, the draw of
  ``rb.sample()``) and the rows are gathered from a view of the buffer's storage
  (``rb.storage.get(slice)``), so the row split is static and the loss function
  (forward and backward) can be compiled as one graph.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from tabb_torchrl.objectives.cross_domain import CrossDomainNetworks, CrossDomainRows, cross_domain_losses
from tabb_torchrl.objectives.flat import activation_of, ensemble_forward, linear_params, mlp_forward, optimizer_step
from tabb_torchrl.objectives.functional import gaussian_log_prob

__all__ = ["FastCrossDomainUpdate"]


class FastCrossDomainUpdate:
    r"""One RL step of a :class:`~tabb_torchrl.objectives.CrossDomainIQLLoss` from a source/target buffer, on flat tensors.

    Each call draws ``n_source`` source and ``n_target`` target row indices with the
    buffer's sampler, gathers the rows (features, rewards, the method's columns),
    runs :func:`~tabb_torchrl.objectives.cross_domain_losses` with flat-MLP
    networks, ``(L_Q + L_V + L_pi).backward()``, one step of each optimiser, the
    Polyak update ``Q_targ <- Q_targ + polyak (Q - Q_targ)`` and the method's
    :meth:`~tabb_torchrl.methods.CrossDomainMethod.after_update`.

    It shares the parameter tensors of ``loss_module`` (and of the optimisers), so
    checkpoints of the loss and the optimisers keep one format whichever path
    trained them. Not supported (:class:`NotImplementedError`; use the composable
    path): non-MLP networks, actors other than :func:`~tabb_torchrl.make_actor`'s,
    buffer transforms (they would be skipped), samplers without
    ``sample_indices``, ``n_target=0``.

    Args:
        loss_module (CrossDomainIQLLoss): the loss whose parameters are trained (its
            ``method`` and ``features``).
        replay_buffer (TensorDictReplayBuffer): from
            :func:`~tabb_torchrl.data.make_source_target_buffer` (with the cached latents
            for ``features="latent"``).
        optimizers (sequence or mapping of torch.optim.Optimizer): the optimisers of the
            critic, value and actor parameters of ``loss_module`` (stepped in order).

    Keyword Args:
        polyak (float): rate of the target-critic update (``SoftUpdate``'s ``tau``). Defaults to ``0.005``.
        compile (bool): ``torch.compile`` the loss function (forward and backward;
            the optimiser and Polyak steps stay eager). Defaults to ``False``.
        mode (str, optional): ``torch.compile`` mode. Defaults to ``None``.

    Raises:
        NotImplementedError: an unsupported configuration (see above).
        ValueError: the buffer's content does not fit.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl import TABBLoss, make_actor, make_latent_qvalue, make_latent_value
        >>> from tabb_torchrl.data import make_source_target_buffer
        >>> from tabb_torchrl.methods import TABB
        >>> from tabb_torchrl.objectives import FastCrossDomainUpdate
        >>> def data(n):
        ...     return TensorDict({"observation": torch.randn(n, 3), "action": torch.rand(n, 2) * 2 - 1,
        ...         "z_s": torch.randn(n, 4), "z_sa": torch.randn(n, 4), "r_hat": torch.randn(n, 1),
        ...         "z_next_hat": torch.randn(n, 4), ("next", "z_s"): torch.randn(n, 4),
        ...         ("next", "reward"): torch.randn(n, 1),
        ...         ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool)}, [n])
        >>> rb = make_source_target_buffer(data(20), data(10), n_source=4, n_target=4, seed=0)
        >>> loss = TABBLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(4, hidden_sizes=(8,)),
        ...                 make_latent_value(4, hidden_sizes=(8,)), method=TABB())
        >>> opts = [torch.optim.Adam(list(p.flatten_keys().values()), lr=1e-3) for p in
        ...         (loss.qvalue_network_params, loss.value_network_params, loss.actor_network_params)]
        >>> update = FastCrossDomainUpdate(loss, rb, opts)
        >>> metrics = update()
        >>> sorted(metrics)[:4]
        ['ess', 'loss_actor', 'loss_qvalue', 'loss_value']
    """

    def __init__(
        self,
        loss_module,
        replay_buffer,
        optimizers: Sequence[torch.optim.Optimizer] | Mapping[str, torch.optim.Optimizer],
        *,
        polyak: float = 0.005,
        compile: bool = False,
        mode: str | None = None,
    ):
        lm = loss_module
        self.loss_module = lm
        self.method = lm.method
        self.settings = lm.settings
        self.features = lm.features
        self.polyak = float(polyak)
        self.optimizers = list(optimizers.values()) if isinstance(optimizers, Mapping) else list(optimizers)

        # ---- the buffer: its sampler's public index draw and a view of its storage
        rb = replay_buffer
        sampler = rb.sampler
        if not hasattr(sampler, "sample_indices"):
            raise NotImplementedError(
                f"FastCrossDomainUpdate needs a SourceTargetSampler buffer (make_source_target_buffer), "
                f"got sampler {type(sampler).__name__}."
            )
        if len(getattr(rb, "transform", None) or ()) > 0:
            raise NotImplementedError("FastCrossDomainUpdate: the replay buffer has transforms, which it would skip.")
        self.replay_buffer = rb
        self.sampler = sampler
        self.n_source, self.n_target = int(sampler.n_source), int(sampler.n_target)
        if self.n_target <= 0:
            raise NotImplementedError("FastCrossDomainUpdate: n_target must be > 0.")
        n_src_rows, n_tgt_rows = sampler.domain_sizes(rb.storage)
        if self.n_source and n_src_rows == 0:
            raise ValueError(f"FastCrossDomainUpdate: n_source={self.n_source} but the buffer holds no source rows.")
        if n_tgt_rows == 0:
            raise ValueError("FastCrossDomainUpdate: the buffer holds no target rows.")
        length = len(rb.storage)
        data = rb.storage.get(slice(0, length))  # a view of the stored columns (no copy)
        k = lm.tensor_keys
        if self.features == "latent":
            keys = {"feature_s": k.latent_state, "feature_sa": k.latent_state_action,
                    "next_feature": ("next", k.latent_state)}
        else:
            keys = {"feature_s": k.observation, "next_feature": ("next", k.observation)}
        missing = [key for key in keys.values() if data.get(key, None) is None]
        if missing:
            raise ValueError(
                f"FastCrossDomainUpdate: the buffer's storage has no {missing}. "
                "Cache the latents first (LatentModel.cache_latents; pretrain.cache_latents=true)."
            )
        self._cols = {name: data.get(key) for name, key in keys.items()}
        self.device = self._cols["feature_s"].device
        dtype = self._cols["feature_s"].dtype
        self._reward = data.get(("next", k.reward)).reshape(length).to(dtype)
        self._terminated = data.get(("next", k.terminated)).reshape(length).to(dtype)
        self._obs = data.get(lm.actor_network.in_keys[0])
        self._act = data.get(k.action)
        self._method_cols = {}
        for c in self.method.columns:
            value = data.get(lm.column_key(c), None)
            if value is not None:
                self._method_cols[c] = value.reshape(length) if value.shape[1:] == (1,) else value

        # ---- the networks, as flat parameter lists shared with the loss module
        self._q = linear_params(lm.qvalue_network_params, "critic")
        self._q_target = linear_params(lm.target_qvalue_network_params, "target critic")
        self._v = linear_params(lm.value_network_params, "value network")
        self._pi = linear_params(lm.actor_network_params, "actor", extra=("log_std",))
        self._q_act = activation_of(lm.qvalue_network, "critic")
        self._v_act = activation_of(lm.value_network, "value network")
        self._pi_act = activation_of(lm.actor_network, "actor")
        from tabb_torchrl.modules import GaussianPolicyHead

        heads = [m for m in lm.actor_network.modules() if isinstance(m, GaussianPolicyHead)]
        if len(heads) != 1:
            raise NotImplementedError("FastCrossDomainUpdate: the actor must be make_actor's IQL Gaussian.")
        self._head = heads[0]
        actor_flat = lm.actor_network_params.flatten_keys()
        self._log_std = actor_flat[[key for key in actor_flat.keys() if key.endswith("log_std")][0]]
        self._q_detached = [p.detach() for p in self._q]
        owned = {id(p) for opt in self.optimizers for g in opt.param_groups for p in g["params"]}
        trained = [*self._q, *self._v, *self._pi, self._log_std]
        if any(id(p) not in owned for p in trained):
            raise ValueError("FastCrossDomainUpdate: the optimisers must hold the loss module's critic, value "
                             "and actor parameters.")
        self._losses = torch.compile(self.losses, mode=mode) if compile else self.losses

    # ------------------------------------------------------------------ networks
    def _policy_loc(self, obs: torch.Tensor) -> torch.Tensor:
        loc = mlp_forward(obs, self._pi, self._pi_act)
        if self._head.tanh_mean:
            loc = torch.tanh(loc) * self._head.max_action
        return loc

    def networks(self) -> CrossDomainNetworks:
        """The loss module's networks as flat-tensor callables."""
        head = self._head

        def log_prob(obs, act):
            log_std = self._log_std.clamp(head.log_std_min, head.log_std_max)
            return gaussian_log_prob(act, self._policy_loc(obs), log_std)

        def value_detached(x):
            return mlp_forward(x, [p.detach() for p in self._v], self._v_act).squeeze(-1)

        return CrossDomainNetworks(
            q=lambda x: ensemble_forward(x, self._q, self._q_act),
            q_target=lambda x: ensemble_forward(x, self._q_target, self._q_act),
            value=lambda x: mlp_forward(x, self._v, self._v_act).squeeze(-1),
            value_detached=value_detached,
            log_prob=log_prob,
            policy_action=self._policy_loc,
        )

    # ------------------------------------------------------------------ steps
    def sample_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Storage indices of one batch, ``(source_rows, target_rows)``: the draw of ``rb.sample()``."""
        src, tgt = self.sampler.sample_indices(self.replay_buffer.storage)
        return src.to(self.device), tgt.to(self.device)

    def rows(self, idx_src: torch.Tensor, idx_tgt: torch.Tensor) -> CrossDomainRows:
        """The gathered batch (source rows first)."""
        idx = torch.cat([idx_src, idx_tgt])
        c = self._cols
        obs, act = self._obs[idx], self._act[idx]
        if self.features == "latent":
            feature_s, feature_sa = c["feature_s"][idx], c["feature_sa"][idx]
        else:
            feature_s = obs
            feature_sa = torch.cat([obs, act.to(obs.dtype)], -1)
        return CrossDomainRows(
            feature_s=feature_s, feature_sa=feature_sa, next_feature=c["next_feature"][idx],
            reward=self._reward[idx], terminated=self._terminated[idx], observation=obs, action=act,
            columns={name: col[idx] for name, col in self._method_cols.items()},
        )

    def losses(self, idx_src: torch.Tensor, idx_tgt: torch.Tensor):
        """``(L_Q + L_V + L_pi, metrics)`` of the rows ``idx_src`` (source) and ``idx_tgt`` (target)."""
        lq, lv, lpi, metrics = cross_domain_losses(self.rows(idx_src, idx_tgt), idx_src.shape[0],
                                                   self.networks(), self.method, self.settings)
        return lq + lv + lpi, metrics

    def step(self, idx_src: torch.Tensor, idx_tgt: torch.Tensor) -> dict[str, torch.Tensor]:
        """One RL step on the given rows: losses, backward, optimiser steps, Polyak update, the method's hook.

        Returns:
            dict: the detached metrics (tensors; no host sync).
        """
        total, metrics = self._losses(idx_src, idx_tgt)
        total.backward()
        optimizer_step(self.optimizers)
        with torch.no_grad():
            torch._foreach_lerp_(self._q_target, self._q_detached, self.polyak)
        if self.method.has_learn:
            value = self.networks().value_detached
            metrics = {**metrics, **self.method.learn(self.rows(idx_src, idx_tgt), idx_src.shape[0], value)}
        self.method.after_update()
        return metrics

    def __call__(self) -> dict[str, torch.Tensor]:
        """Draw a batch with the buffer's sampler and run :meth:`step`."""
        return self.step(*self.sample_indices())
