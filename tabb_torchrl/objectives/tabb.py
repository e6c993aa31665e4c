"""The TABB loss (Liu & Long, arXiv 2605.22376, Eqs. 8-10), in the style of TorchRL's IQLLoss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, dispatch
from tensordict.utils import NestedKey
from torchrl.objectives.common import LossModule
from torchrl.objectives.utils import _vmap_func

from tabb_torchrl.modules import LatentModel, Latents
from tabb_torchrl.objectives.functional import (
    bellman_target,
    effective_sample_size,
    expectile_loss,
    huber_loss,
    masked_mean,
    weight_entropy,
)

from tabb_torchrl.keys import SOURCE, TARGET

__all__ = ["TABBLoss"]


class TABBLoss(LossModule):
    r"""TABB loss: target-aligned critic, target-only value and actor (Liu & Long, arXiv 2605.22376, Eqs. 8-10).

    Works on latents of the frozen latent model (cached in the batch, or computed
    with ``latent_model`` under ``no_grad`` when missing). With ``T`` the target
    rows (``domain == TARGET``) and ``S`` the source rows (``domain == SOURCE``)
    of a batch:

    * **Critic, Eq. 8** -- for each critic ``Q_j`` of the twin ensemble::

          y     = r     + gamma (1 - d) V(f(s'))      target rows (realised target)
          y_hat = r_hat + gamma (1 - d) V(z_hat')     source rows (target-aligned; not s')
          L_Qj  = mean_T[ huber(Q_j(z_sa) - y) ] + mean_S[ w * huber(Q_j(z_sa) - y_hat) ]

      targets without gradient; ``w`` is read from the ``"weight"`` entry
      (written by :class:`~tabb_torchrl.TargetBellmanMismatch`, or any other
      weighting scheme; ``1`` when absent). ``loss_qvalue`` is the **mean** over
      the ensemble of ``L_Qj`` (CORL's convention; TorchRL's IQLLoss sums).
      Each of the two means is over its own rows, so the source part keeps its
      weight whatever the split.
    * **Value, Eq. 9** -- ``L_V = mean_T[ L2^kappa(min_j Q_targ_j(z_sa) - V(z_s)) ]``.
    * **Actor, Eq. 10** -- ``L_pi = -mean_T[ min(exp(beta (min_j Q_targ_j - V)), max_weight) * log pi(a|s) ]``.

    Ablations of the paper's table 3, by flag:

    * ``use_tbm=False`` (**-TBM**): plain IQL on every row of the batch --
      source rows use their realised target ``r + gamma (1 - d) V(f(s'))``,
      weight 1 (the ``"weight"`` entry is ignored), and ``V`` and ``pi`` are
      trained on all rows; each loss is a plain mean over all rows.
    * ``source_actor=True`` (**SrcActor**): the AWR loss also uses the source
      rows, multiplied by their weight: ``L_pi = mean_T[...] + mean_S[w * ...]``;
      the value loss stays target-only.

    The target critic parameters (``target_qvalue_network_params``) are
    created here; pair the loss with ``torchrl.objectives.SoftUpdate(loss,
    tau=0.005)``. ``V``'s Bellman-target and advantage evaluations use its
    current parameters without gradient (as IQL). ``forward`` writes nothing
    into the input TensorDict. The update has no ``.item()`` and no branching
    on tensor values (masked means with counts clamped at 1), so it can be
    wrapped in ``torch.compile``.

    Args:
        actor_network (ProbabilisticTensorDictSequential): the policy on observations
            (:func:`~tabb_torchrl.make_actor`).
        qvalue_network (TensorDictModule or list of TensorDictModule): ``Q(z_sa)``
            (:func:`~tabb_torchrl.make_latent_qvalue`); one module is expanded
            into a vmapped ensemble of ``num_qvalue_nets`` (TorchRL re-samples
            the copies uniformly within each parameter's range), a list is stacked.
        value_network (TensorDictModule): ``V(z_s)`` (:func:`~tabb_torchrl.make_latent_value`).
        latent_model (LatentModel, optional): the frozen ``(f, g, h)``, used only
            when the batch lacks the cached latents.

    Keyword Args:
        num_qvalue_nets (int): ensemble size. Defaults to ``2``.
        gamma (float): discount. Defaults to ``0.99``.
        expectile (float): ``kappa`` of Eq. 9. Defaults to ``0.7`` (IQL).
        beta (float): inverse temperature of Eq. 10. Defaults to ``3.0`` (IQL).
        huber_delta (float): Huber threshold of Eq. 8. Defaults to ``1.0`` **[reconstructed]**.
        max_weight (float): clip of the AWR weight. Defaults to ``100.0`` (IQL).
        use_tbm (bool): ``False`` = the -TBM ablation. Defaults to ``True``.
        source_actor (bool): ``True`` = the SrcActor ablation. Defaults to ``False``.
        use_predicted_termination (bool): use the cached/predicted
            ``"terminated_hat"`` instead of ``d`` in the source rows' aligned
            target (needs a termination head; not in the paper). Defaults to ``False``.
        deactivate_vmap (bool): loop over the critics instead of ``vmap``. Defaults to ``False``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.objectives import SoftUpdate
        >>> from tabb_torchrl import (LatentModel, TABBLoss, TargetBellmanMismatch,
        ...     make_actor, make_latent_qvalue, make_latent_value)
        >>> _ = torch.manual_seed(0)
        >>> model = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,)).freeze()
        >>> actor = make_actor(3, 2, hidden_sizes=(8,))
        >>> value = make_latent_value(4, hidden_sizes=(8,))
        >>> loss = TABBLoss(actor, make_latent_qvalue(4, hidden_sizes=(8,)), value, model)
        >>> updater = SoftUpdate(loss, tau=0.005)
        >>> td = TensorDict({"observation": torch.randn(6, 3), "action": torch.rand(6, 2) * 2 - 1,
        ...     "domain": torch.tensor([0, 0, 0, 1, 1, 1]),
        ...     ("next", "observation"): torch.randn(6, 3), ("next", "reward"): torch.randn(6, 1),
        ...     ("next", "terminated"): torch.zeros(6, 1, dtype=torch.bool)}, [6])
        >>> td = TargetBellmanMismatch(model, value)(td)   # writes "tbm" and "weight"
        >>> out = loss(td)
        >>> (out["loss_qvalue"] + out["loss_value"] + out["loss_actor"]).backward()
        >>> updater.step()
        >>> sorted(out.keys())  # doctest: +NORMALIZE_WHITESPACE
        ['ess', 'loss_actor', 'loss_qvalue', 'loss_value', 'mean_q', 'mean_target_value',
         'mean_tbm', 'mean_v', 'mean_weight', 'weight_entropy']
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys of :class:`TABBLoss` (remap with ``loss.set_keys(name=key)``).

        Attributes:
            action (NestedKey): dataset action. Defaults to ``"action"``.
            reward (NestedKey): read under ``"next"``. Defaults to ``"reward"``.
            terminated (NestedKey): true terminal flag, read under ``"next"``
                (never a time-out). Defaults to ``"terminated"``.
            domain (NestedKey): ``0`` source, ``1`` target. Defaults to ``"domain"``.
            weight (NestedKey): per-row source weight (Eq. 7). Defaults to ``"weight"``.
            tbm (NestedKey): TBM, only logged. Defaults to ``"tbm"``.
            latent_state (NestedKey): ``z_s = f(s)``; ``("next", latent_state)``
                holds ``f(s')``. Defaults to ``"z_s"``.
            latent_state_action (NestedKey): ``z_sa``. Defaults to ``"z_sa"``.
            reward_hat (NestedKey): ``r_hat``. Defaults to ``"r_hat"``.
            next_latent_hat (NestedKey): ``z_hat'``. Defaults to ``"z_next_hat"``.
            terminated_hat (NestedKey): predicted termination probability.
                Defaults to ``"terminated_hat"``.
            state_action_value (NestedKey): output of the Q network.
                Defaults to ``"state_action_value"``.
            value (NestedKey): output of the value network. Defaults to ``"state_value"``.
        """

        action: NestedKey = "action"
        reward: NestedKey = "reward"
        terminated: NestedKey = "terminated"
        domain: NestedKey = "domain"
        weight: NestedKey = "weight"
        tbm: NestedKey = "tbm"
        latent_state: NestedKey = "z_s"
        latent_state_action: NestedKey = "z_sa"
        reward_hat: NestedKey = "r_hat"
        next_latent_hat: NestedKey = "z_next_hat"
        terminated_hat: NestedKey = "terminated_hat"
        state_action_value: NestedKey = "state_action_value"
        value: NestedKey = "state_value"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    out_keys = ["loss_qvalue", "loss_value", "loss_actor"]

    actor_network: TensorDictModule
    actor_network_params: TensorDictParams
    target_actor_network_params: TensorDictParams
    qvalue_network: TensorDictModule
    qvalue_network_params: TensorDictParams
    target_qvalue_network_params: TensorDictParams
    value_network: TensorDictModule
    value_network_params: TensorDictParams
    target_value_network_params: TensorDictParams

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: TensorDictModule | list[TensorDictModule],
        value_network: TensorDictModule,
        latent_model: LatentModel | None = None,
        *,
        num_qvalue_nets: int = 2,
        gamma: float = 0.99,
        expectile: float = 0.7,
        beta: float = 3.0,
        huber_delta: float = 1.0,
        max_weight: float = 100.0,
        use_tbm: bool = True,
        source_actor: bool = False,
        use_predicted_termination: bool = False,
        deactivate_vmap: bool = False,
    ) -> None:
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        if not 0 < expectile < 1:
            raise ValueError(f"expectile must be in (0, 1), got {expectile}.")
        if huber_delta <= 0:
            raise ValueError(f"huber_delta must be > 0, got {huber_delta}.")
        if max_weight <= 0:
            raise ValueError(f"max_weight must be > 0, got {max_weight}.")
        if num_qvalue_nets < 1:
            raise ValueError(f"num_qvalue_nets must be >= 1, got {num_qvalue_nets}.")
        super().__init__()
        self.gamma = gamma
        self.expectile = expectile
        self.beta = beta
        self.huber_delta = huber_delta
        self.max_weight = max_weight
        self.use_tbm = use_tbm
        self.source_actor = source_actor
        self.use_predicted_termination = use_predicted_termination
        self.deactivate_vmap = deactivate_vmap
        self.num_qvalue_nets = num_qvalue_nets

        self.convert_to_functional(actor_network, "actor_network", create_target_params=False)
        self.convert_to_functional(value_network, "value_network", create_target_params=False)
        self.convert_to_functional(
            qvalue_network, "qvalue_network", num_qvalue_nets, create_target_params=True
        )
        # registered for .to(device) and state_dict, excluded from parameters()
        self.latent_model = latent_model
        self._vmap_qvalue = _vmap_func(
            self.qvalue_network,
            (None, 0),
            randomness=self.vmap_randomness,
            pseudo_vmap=self.deactivate_vmap,
        )

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """Trainable parameters: actor, critics and value (not the frozen latent model, not targets)."""
        skip = (prefix + "." if prefix else "") + "latent_model."
        for name, param in super().named_parameters(prefix=prefix, recurse=recurse):
            if not name.startswith(skip):
                yield name, param

    @property
    def in_keys(self) -> list:
        """Entries read from the batch (latents may be computed instead, see the class docstring)."""
        k = self.tensor_keys
        keys = [
            k.action, ("next", k.reward), ("next", k.terminated), k.domain, k.weight,
            k.latent_state, ("next", k.latent_state), k.latent_state_action,
            k.reward_hat, k.next_latent_hat, *self.actor_network.in_keys,
        ]
        if self.use_predicted_termination:
            keys.append(k.terminated_hat)
        if self.latent_model is not None:  # what the latent model reads when latents are not cached
            obs = self.latent_model.observation_key
            keys += [obs, ("next", obs) if isinstance(obs, str) else ("next", *obs), self.latent_model.action_key]
        out = []
        for key in keys:
            if key not in out:
                out.append(key)
        return out

    # ------------------------------------------------------------------ inputs
    def _get(self, tensordict: TensorDictBase, key: NestedKey, name: str) -> torch.Tensor:
        value = tensordict.get(key, None)
        if value is None:
            raise KeyError(
                f"TABBLoss needs the entry {key!r} in the batch; it is missing. If your data "
                f"stores it under another name, remap it with loss.set_keys({name}=<your key>)."
            )
        return value

    def _latents(self, tensordict: TensorDictBase) -> Latents:
        k = self.tensor_keys
        names = ("latent_state", "latent_state_action", "latent_state", "reward_hat", "next_latent_hat")
        keys = (k.latent_state, k.latent_state_action, ("next", k.latent_state), k.reward_hat, k.next_latent_hat)
        values = [tensordict.get(key, None) for key in keys]
        term_hat = tensordict.get(k.terminated_hat, None) if self.use_predicted_termination else None
        missing = any(v is None for v in values) or (self.use_predicted_termination and term_hat is None)
        if missing:
            if self.latent_model is None:
                for name, key, v in zip(names, keys, values):
                    if v is None:
                        self._get(tensordict, key, name)
                self._get(tensordict, k.terminated_hat, "terminated_hat")
            with torch.no_grad():
                lat = self.latent_model.compute(tensordict)
            values = [lat[i] if v is None else v for i, v in enumerate(values)]
            if self.use_predicted_termination and term_hat is None:
                if lat.terminated_hat is None:
                    raise ValueError(
                        "use_predicted_termination=True needs a predictor with a termination head."
                    )
                term_hat = lat.terminated_hat
        return Latents(*values, term_hat)

    def _flat(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x.reshape(n, -1)[:, 0]

    def _value(self, latent: torch.Tensor, params) -> torch.Tensor:
        td = TensorDict({self.value_network.in_keys[0]: latent}, batch_size=latent.shape[:-1])
        with params.to_module(self.value_network, preserve_module_state=False):
            td = self.value_network(td)
        return td.get(self.tensor_keys.value).squeeze(-1)

    def _qvalues(self, latent_sa: torch.Tensor, params) -> torch.Tensor:
        td = TensorDict({self.qvalue_network.in_keys[0]: latent_sa}, batch_size=latent_sa.shape[:-1])
        return self._vmap_qvalue(td, params).get(self.tensor_keys.state_action_value).squeeze(-1)

    def _prepare(self, tensordict: TensorDictBase) -> dict:
        """Reads the batch once: latents, masks, weights, Bellman targets, min target Q."""
        k = self.tensor_keys
        lat = self._latents(tensordict)
        n = lat.z_sa.shape[0]
        domain = self._flat(self._get(tensordict, k.domain, "domain"), n)
        target_rows = domain == TARGET
        source_rows = domain == SOURCE
        weight = tensordict.get(k.weight, None)
        if weight is None or not self.use_tbm:
            weight = torch.ones(n, dtype=lat.z_sa.dtype, device=lat.z_sa.device)
        else:
            weight = self._flat(weight, n).detach().to(lat.z_sa.dtype)
        reward = self._flat(self._get(tensordict, ("next", k.reward), "reward"), n)
        terminated = self._flat(self._get(tensordict, ("next", k.terminated), "terminated"), n)
        with torch.no_grad():
            v_params = self.target_value_network_params  # detached current V (IQL)
            if self.use_tbm:
                values = self._value(torch.cat([lat.next_z_s, lat.z_next_hat], 0), v_params)
                v_next, v_hat = values[:n], values[n:]
                d_hat = terminated if lat.terminated_hat is None else self._flat(lat.terminated_hat, n)
                y_real = bellman_target(reward, v_next, terminated, self.gamma)
                y_aligned = bellman_target(self._flat(lat.r_hat, n), v_hat, d_hat, self.gamma)
                target = torch.where(source_rows, y_aligned, y_real)
            else:
                v_next = self._value(lat.next_z_s, v_params)
                target = bellman_target(reward, v_next, terminated, self.gamma)
            min_q_target = self._qvalues(lat.z_sa, self.target_qvalue_network_params).amin(0)
        tbm = tensordict.get(k.tbm, None)
        return {
            "lat": lat,
            "n": n,
            "target_rows": target_rows,
            "source_rows": source_rows,
            "weight": weight,
            "target": target,
            "min_q_target": min_q_target,
            "tbm": None if tbm is None else self._flat(tbm, n),
        }

    def _rows_mean(self, per_row: torch.Tensor, prep: dict, *, with_source: bool) -> torch.Tensor:
        """mean_T[l] (+ mean_S[w l]) with TABB, plain mean over all rows with use_tbm=False."""
        if not self.use_tbm:
            return per_row.mean(-1)
        out = masked_mean(per_row, prep["target_rows"].expand_as(per_row), dim=-1)
        if with_source:
            src = prep["source_rows"].expand_as(per_row)
            out = out + masked_mean(per_row * prep["weight"], src, dim=-1)
        return out

    # ------------------------------------------------------------------ losses
    def _qvalue_loss(self, prep: dict) -> tuple[torch.Tensor, dict]:
        q = self._qvalues(prep["lat"].z_sa, self.qvalue_network_params)  # [K, N]
        per_row = huber_loss(q, prep["target"].expand_as(q), self.huber_delta)
        loss = self._rows_mean(per_row, prep, with_source=True).mean(0)
        return loss, {"mean_q": q.detach().mean(), "mean_target_value": prep["target"].mean()}

    def _value_loss(self, prep: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        v = self._value(prep["lat"].z_s, self.value_network_params)
        per_row = expectile_loss(prep["min_q_target"] - v, self.expectile)
        loss = self._rows_mean(per_row, prep, with_source=False)
        return loss, {"mean_v": v.detach().mean()}, v.detach()

    def _actor_loss(self, tensordict: TensorDictBase, prep: dict, v: torch.Tensor) -> tuple[torch.Tensor, dict]:
        td_actor = tensordict.select(*self.actor_network.in_keys, strict=False)
        with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
            dist = self.actor_network.get_dist(td_actor)
        action = self._get(tensordict, self.tensor_keys.action, "action")
        log_prob = dist.log_prob(action).reshape(prep["n"])
        adv_weight = torch.exp(self.beta * (prep["min_q_target"] - v)).clamp_max(self.max_weight)
        per_row = -adv_weight * log_prob
        loss = self._rows_mean(per_row, prep, with_source=self.source_actor)
        return loss, {}

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Critic loss, Eq. 8 of arXiv 2605.22376 (see the class docstring).

        Args:
            tensordict (TensorDictBase): flat batch ``[N]``.

        Returns:
            tuple: ``(loss_qvalue, metadata)``; gradients reach the critic parameters only.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import TABBLoss, make_actor, make_latent_qvalue, make_latent_value
            >>> loss = TABBLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(4, hidden_sizes=(8,)),
            ...                 make_latent_value(4, hidden_sizes=(8,)))
            >>> td = TensorDict({"observation": torch.randn(4, 3), "action": torch.zeros(4, 2),
            ...     "domain": torch.tensor([0, 0, 1, 1]), "z_s": torch.randn(4, 4), "z_sa": torch.randn(4, 4),
            ...     "r_hat": torch.zeros(4, 1), "z_next_hat": torch.randn(4, 4),
            ...     ("next", "z_s"): torch.randn(4, 4), ("next", "reward"): torch.ones(4, 1),
            ...     ("next", "terminated"): torch.zeros(4, 1, dtype=torch.bool)}, [4])
            >>> value, meta = loss.qvalue_loss(td)
            >>> value.shape
            torch.Size([])
        """
        loss, meta = self._qvalue_loss(self._prepare(tensordict))
        return loss, meta

    def value_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Expectile value loss, Eq. 9 of arXiv 2605.22376 (target rows; all rows with ``use_tbm=False``).

        Args:
            tensordict (TensorDictBase): flat batch ``[N]``.

        Returns:
            tuple: ``(loss_value, metadata)``; gradients reach the value parameters only.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import TABBLoss, make_actor, make_latent_qvalue, make_latent_value
            >>> loss = TABBLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(4, hidden_sizes=(8,)),
            ...                 make_latent_value(4, hidden_sizes=(8,)))
            >>> td = TensorDict({"observation": torch.randn(4, 3), "action": torch.zeros(4, 2),
            ...     "domain": torch.tensor([0, 0, 1, 1]), "z_s": torch.randn(4, 4), "z_sa": torch.randn(4, 4),
            ...     "r_hat": torch.zeros(4, 1), "z_next_hat": torch.randn(4, 4),
            ...     ("next", "z_s"): torch.randn(4, 4), ("next", "reward"): torch.ones(4, 1),
            ...     ("next", "terminated"): torch.zeros(4, 1, dtype=torch.bool)}, [4])
            >>> value, meta = loss.value_loss(td)
            >>> sorted(meta)
            ['mean_v']
        """
        loss, meta, _ = self._value_loss(self._prepare(tensordict))
        return loss, meta

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """AWR actor loss, Eq. 10 of arXiv 2605.22376 (target rows; see ``source_actor``/``use_tbm``).

        Args:
            tensordict (TensorDictBase): flat batch ``[N]``.

        Returns:
            tuple: ``(loss_actor, metadata)``; gradients reach the actor parameters only.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import TABBLoss, make_actor, make_latent_qvalue, make_latent_value
            >>> loss = TABBLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(4, hidden_sizes=(8,)),
            ...                 make_latent_value(4, hidden_sizes=(8,)))
            >>> td = TensorDict({"observation": torch.randn(4, 3), "action": torch.zeros(4, 2),
            ...     "domain": torch.tensor([0, 0, 1, 1]), "z_s": torch.randn(4, 4), "z_sa": torch.randn(4, 4),
            ...     "r_hat": torch.zeros(4, 1), "z_next_hat": torch.randn(4, 4),
            ...     ("next", "z_s"): torch.randn(4, 4), ("next", "reward"): torch.ones(4, 1),
            ...     ("next", "terminated"): torch.zeros(4, 1, dtype=torch.bool)}, [4])
            >>> value, _ = loss.actor_loss(td)
            >>> value.requires_grad
            True
        """
        prep = self._prepare(tensordict)
        with torch.no_grad():
            v = self._value(prep["lat"].z_s, self.value_network_params)
        return self._actor_loss(tensordict, prep, v)

    def _weight_metrics(self, prep: dict) -> dict:
        src = prep["source_rows"]
        w = prep["weight"]
        out = {
            "mean_weight": masked_mean(w, src),
            "ess": effective_sample_size(w, src),
            "weight_entropy": weight_entropy(w, src),
        }
        if prep["tbm"] is not None:
            out["mean_tbm"] = masked_mean(prep["tbm"].detach(), src)
        return out

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Computes ``loss_qvalue``, ``loss_value``, ``loss_actor`` (Eqs. 8-10) and detached metrics.

        Like TorchRL's losses, it can also be called with keyword arguments named
        after :attr:`in_keys` (nested keys joined by ``_``: ``next_reward``,
        ``next_z_s``); it then returns the tuple ``(loss_qvalue, loss_value,
        loss_actor)``.

        Args:
            tensordict (TensorDictBase): flat batch ``[N]``; it is not modified.

        Returns:
            TensorDict: the three losses plus ``mean_q``, ``mean_target_value``,
            ``mean_v``, ``mean_weight``, ``ess``, ``weight_entropy`` (source rows)
            and ``mean_tbm`` (when the batch has a TBM entry).
        """
        prep = self._prepare(tensordict)
        loss_q, meta = self._qvalue_loss(prep)
        loss_v, meta_v, v = self._value_loss(prep)
        loss_pi, meta_pi = self._actor_loss(tensordict, prep, v)
        meta.update(meta_v)
        meta.update(meta_pi)
        meta.update(self._weight_metrics(prep))
        out = TensorDict(
            {"loss_qvalue": loss_q, "loss_value": loss_v, "loss_actor": loss_pi, **meta},
            batch_size=[],
        )
        self._clear_weakrefs(
            tensordict,
            out,
            "actor_network_params",
            "qvalue_network_params",
            "value_network_params",
            "target_actor_network_params",
            "target_qvalue_network_params",
            "target_value_network_params",
        )
        return out
