"""The composable TorchRL loss of the cross-domain core: IQL whose source rows a method edits
(Liu & Long, arXiv 2605.22376, Eqs. 8-10)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule, dispatch
from tensordict.utils import NestedKey
from torchrl.objectives.common import LossModule
from torchrl.objectives.utils import _vmap_func

from tabb_torchrl.keys import SOURCE, TARGET
from tabb_torchrl.modules import LatentModel
from tabb_torchrl.objectives.method import PooledIQL
from tabb_torchrl.objectives.cross_domain import (
    CrossDomainNetworks,
    CrossDomainRows,
    IQLSettings,
    cross_domain_losses,
)

__all__ = ["CrossDomainIQLLoss"]

#: latent columns of a frozen latent model -> attribute of ``_AcceptedKeys``
_COLUMN_KEYS = {"r_hat": "reward_hat", "z_next_hat": "next_latent_hat", "terminated_hat": "terminated_hat",
                "weight": "weight", "tbm": "tbm"}


class CrossDomainIQLLoss(LossModule):
    r"""IQL on a cross-domain batch whose source rows a :class:`~tabb_torchrl.methods.CrossDomainMethod` edits.

    With ``T`` the target rows (``domain == TARGET``) and ``S`` the source rows
    (``domain == SOURCE``) of a batch, and the method's edit of the source rows
    (weights ``w``, a row filter, corrected rewards or replaced targets ``y_S``),
    it computes by :func:`~tabb_torchrl.objectives.cross_domain_losses` (the same
    function the fast path calls):

    * **critic** (Eq. 8): ``L_Q = mean_j( mean_T[l(Q_j - y)] + mean_S[w l(Q_j - y_S)] )``,
      ``l`` the Huber loss (``huber_delta``; ``None`` = squared error);
    * **value** (Eq. 9): ``L_V = mean_T[L2^kappa(min_j Q_targ_j - V)]``;
    * **actor** (Eq. 10): ``L_pi = -mean_T[min(exp(beta (min_j Q_targ_j - V)), max_weight) log pi(a|s)]``;

    the method's flags add (weighted) source rows to the value / actor losses or
    pool all rows into plain means (IQL on the union). ``V`` is evaluated
    without gradient on its current parameters for the Bellman targets (IQL).
    ``loss_qvalue`` is the **mean** over the critic ensemble (CORL's
    convention; TorchRL's IQLLoss sums).

    Features: ``features="latent"`` reads ``z_s``, ``z_sa``, ``("next", "z_s")``
    (cached by :meth:`~tabb_torchrl.LatentModel.cache_latents`, or computed with
    ``latent_model`` under ``no_grad`` when missing); ``features="raw"`` uses
    ``observation``, ``[observation, action]`` and ``("next", "observation")``
    (for methods on raw states: build the critic for ``obs_dim + act_dim``
    inputs and the value network for ``obs_dim``).

    The rows may come in any order (they are sorted source-first here); the
    domain count is read once per call (a host sync), which the fast path
    avoids. Pair the loss with ``torchrl.objectives.SoftUpdate(loss, tau=0.005)``.
    ``forward`` writes nothing into the input TensorDict.

    Args:
        actor_network (ProbabilisticTensorDictSequential): the policy on observations
            (:func:`~tabb_torchrl.make_actor`).
        qvalue_network (TensorDictModule or list of TensorDictModule): ``Q``; one module is
            expanded into a vmapped ensemble of ``num_qvalue_nets``, a list is stacked.
        value_network (TensorDictModule): ``V``.
        latent_model (LatentModel, optional): the frozen ``(f, g, h)``, used only when the
            batch lacks the cached latents.

    Keyword Args:
        method (CrossDomainMethod, optional): what is done to the source rows. Defaults to
            :class:`~tabb_torchrl.methods.PooledIQL` (IQL on the union).
        features (str): ``"latent"`` (default) or ``"raw"``.
        num_qvalue_nets (int): ensemble size. Defaults to ``2``.
        gamma (float): discount. Defaults to ``0.99``.
        expectile (float): ``kappa`` of Eq. 9. Defaults to ``0.7`` (IQL).
        beta (float): inverse temperature of Eq. 10. Defaults to ``3.0`` (IQL).
        huber_delta (float or None): Huber threshold of Eq. 8. Defaults to ``1.0`` **[reconstructed]**.
        max_weight (float): clip of the AWR weight. Defaults to ``100.0`` (IQL).
        deactivate_vmap (bool): loop over the critics instead of ``vmap``. Defaults to ``False``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
        >>> from tabb_torchrl.methods import PooledIQL
        >>> from tabb_torchrl.objectives import CrossDomainIQLLoss
        >>> loss = CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(5, hidden_sizes=(8,)),
        ...     make_latent_value(3, hidden_sizes=(8,)), method=PooledIQL(), features="raw")
        >>> td = TensorDict({"observation": torch.randn(4, 3), "action": torch.zeros(4, 2),
        ...     "domain": torch.tensor([1, 0, 1, 0]), ("next", "observation"): torch.randn(4, 3),
        ...     ("next", "reward"): torch.ones(4, 1), ("next", "terminated"): torch.zeros(4, 1, dtype=torch.bool)}, [4])
        >>> out = loss(td)
        >>> (out["loss_qvalue"] + out["loss_value"] + out["loss_actor"]).backward()
        >>> out["ess"]   # the two source rows, weight 1
        tensor(2.)
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys of the loss (remap with ``loss.set_keys(name=key)``).

        Attributes:
            observation (NestedKey): raw state (``features="raw"``). Defaults to ``"observation"``.
            action (NestedKey): dataset action. Defaults to ``"action"``.
            reward (NestedKey): read under ``"next"``. Defaults to ``"reward"``.
            terminated (NestedKey): true terminal flag, read under ``"next"``
                (never a time-out). Defaults to ``"terminated"``.
            domain (NestedKey): ``0`` source, ``1`` target. Defaults to ``"domain"``.
            weight (NestedKey): per-row source weight (Eq. 7) for methods that read it from
                the batch. Defaults to ``"weight"``.
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

        observation: NestedKey = "observation"
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
        method=None,
        features: str = "latent",
        num_qvalue_nets: int = 2,
        gamma: float = 0.99,
        expectile: float = 0.7,
        beta: float = 3.0,
        huber_delta: float | None = 1.0,
        max_weight: float = 100.0,
        deactivate_vmap: bool = False,
    ) -> None:
        settings = IQLSettings(gamma=gamma, expectile=expectile, beta=beta, max_weight=max_weight,
                               huber_delta=huber_delta)
        if num_qvalue_nets < 1:
            raise ValueError(f"num_qvalue_nets must be >= 1, got {num_qvalue_nets}.")
        if features not in ("latent", "raw"):
            raise ValueError(f"features must be 'latent' or 'raw', got {features!r}.")
        super().__init__()
        if method is None:
            method = PooledIQL()
        self.settings = settings
        self.method = method
        self.features = features
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

    # the backbone's settings, as attributes (read by factories and the fast path)
    gamma = property(lambda self: self.settings.gamma)
    expectile = property(lambda self: self.settings.expectile)
    beta = property(lambda self: self.settings.beta)
    max_weight = property(lambda self: self.settings.max_weight)
    huber_delta = property(lambda self: self.settings.huber_delta)

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        pass

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """Trainable parameters: actor, critics and value (not the frozen latent model, not the
        method's own networks, not targets)."""
        skip = tuple((prefix + "." if prefix else "") + name + "." for name in ("latent_model", "method"))
        for name, param in super().named_parameters(prefix=prefix, recurse=recurse):
            if not name.startswith(skip):
                yield name, param

    def column_key(self, name: str) -> NestedKey:
        attr = _COLUMN_KEYS.get(name)
        return getattr(self.tensor_keys, attr) if attr is not None else name

    @property
    def in_keys(self) -> list:
        """Entries read from the batch (latents may be computed instead, see the class docstring)."""
        k = self.tensor_keys
        keys = [k.action, ("next", k.reward), ("next", k.terminated), k.domain]
        if self.features == "latent":
            keys += [k.latent_state, ("next", k.latent_state), k.latent_state_action]
        else:
            keys += [k.observation, ("next", k.observation)]
        keys += [self.column_key(c) for c in self.method.columns]
        keys += list(self.actor_network.in_keys)
        if self.latent_model is not None and self.features == "latent":
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
                f"{type(self).__name__} needs the entry {key!r} in the batch; it is missing. If your data "
                f"stores it under another name, remap it with loss.set_keys({name}=<your key>)."
            )
        return value

    def _latent_entries(self, tensordict: TensorDictBase, names: list[str]) -> dict[str, torch.Tensor | None]:
        """Latent entries by ``_AcceptedKeys`` name, computed with the latent model when missing."""
        k = self.tensor_keys
        keys = {
            "latent_state": k.latent_state, "latent_state_action": k.latent_state_action,
            "next_latent_state": ("next", k.latent_state), "reward_hat": k.reward_hat,
            "next_latent_hat": k.next_latent_hat, "terminated_hat": k.terminated_hat,
        }
        values = {name: tensordict.get(keys[name], None) for name in names}
        missing = [name for name, v in values.items() if v is None]
        if missing:
            if self.latent_model is None:
                name = missing[0]
                self._get(tensordict, keys[name], "latent_state" if name == "next_latent_state" else name)
            with torch.no_grad():
                lat = self.latent_model.compute(tensordict)
            computed = {"latent_state": lat.z_s, "latent_state_action": lat.z_sa, "next_latent_state": lat.next_z_s,
                        "reward_hat": lat.r_hat, "next_latent_hat": lat.z_next_hat,
                        "terminated_hat": lat.terminated_hat}
            for name in missing:
                if computed[name] is None:
                    raise ValueError(f"{name} is needed but the latent model has no termination head "
                                     "(model.termination_head=true).")
                values[name] = computed[name]
        return values

    def rows(self, tensordict: TensorDictBase) -> tuple[CrossDomainRows, int]:
        """The batch as :class:`~tabb_torchrl.objectives.CrossDomainRows` (source rows first) and ``n_source``.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
            >>> from tabb_torchrl.objectives import CrossDomainIQLLoss
            >>> loss = CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)),
            ...     make_latent_qvalue(5, hidden_sizes=(8,)), make_latent_value(3, hidden_sizes=(8,)), features="raw")
            >>> td = TensorDict({"observation": torch.arange(3.0)[:, None].expand(3, 3), "action": torch.zeros(3, 2),
            ...     "domain": torch.tensor([1, 0, 1]), ("next", "observation"): torch.zeros(3, 3),
            ...     ("next", "reward"): torch.zeros(3, 1), ("next", "terminated"): torch.zeros(3, 1)}, [3])
            >>> rows, n_source = loss.rows(td)
            >>> n_source, rows.observation[:, 0].tolist()
            (1, [1.0, 0.0, 2.0])
        """
        k = self.tensor_keys
        domain = self._get(tensordict, k.domain, "domain")
        n = tensordict.shape[0] if tensordict.batch_dims else domain.shape[0]
        domain = domain.reshape(n)
        is_source = domain == SOURCE
        n_source = int(is_source.sum())
        n_target = int((domain == TARGET).sum())
        if n_source + n_target != n:
            raise ValueError(f"The {k.domain!r} column must hold {SOURCE} (source) or {TARGET} (target) only.")
        order = None
        if n_source and not bool(is_source[:n_source].all()):
            order = torch.argsort((~is_source).to(torch.int8), stable=True)  # source rows first

        def take(x: torch.Tensor) -> torch.Tensor:
            return x if order is None else x[order]

        reward = self._get(tensordict, ("next", k.reward), "reward").reshape(n)
        terminated = self._get(tensordict, ("next", k.terminated), "terminated").reshape(n)
        action = self._get(tensordict, k.action, "action")
        observation = tensordict.get(self.actor_network.in_keys[0], None)
        if observation is None:
            observation = self._get(tensordict, self.actor_network.in_keys[0], "observation")
        columns = {}
        latent_names = {"r_hat": "reward_hat", "z_next_hat": "next_latent_hat", "terminated_hat": "terminated_hat"}
        wanted = [c for c in self.method.columns]
        if self.features == "latent":
            lat = self._latent_entries(tensordict, ["latent_state", "latent_state_action", "next_latent_state",
                                                    *[latent_names[c] for c in wanted if c in latent_names]])
            feature_s, feature_sa, next_feature = (lat["latent_state"], lat["latent_state_action"],
                                                   lat["next_latent_state"])
            for c in wanted:
                if c in latent_names:
                    columns[c] = lat[latent_names[c]]
        else:
            feature_s = self._get(tensordict, k.observation, "observation")
            feature_sa = torch.cat([feature_s, action.to(feature_s.dtype)], -1)
            next_feature = self._get(tensordict, ("next", k.observation), "observation")
        for c in wanted:
            if c not in columns:
                value = tensordict.get(self.column_key(c), None)
                if value is not None:  # optional columns (e.g. a transform's weight) may be absent
                    columns[c] = value.reshape(n, -1).squeeze(-1) if value.shape[1:] == (1,) else value
        rows = CrossDomainRows(
            feature_s=take(feature_s), feature_sa=take(feature_sa), next_feature=take(next_feature),
            reward=take(reward.to(feature_sa.dtype)), terminated=take(terminated.to(feature_sa.dtype)),
            observation=take(observation), action=take(action),
            columns={c: take(v.detach()) for c, v in columns.items()},
        )
        return rows, n_source

    def networks(self) -> CrossDomainNetworks:
        """The loss's networks as callables for :func:`~tabb_torchrl.objectives.cross_domain_losses`."""
        k = self.tensor_keys

        def value(x, params):
            td = TensorDict({self.value_network.in_keys[0]: x}, batch_size=x.shape[:-1])
            with params.to_module(self.value_network, preserve_module_state=False):
                td = self.value_network(td)
            return td.get(k.value).squeeze(-1)

        def qvalues(x, params):
            td = TensorDict({self.qvalue_network.in_keys[0]: x}, batch_size=x.shape[:-1])
            return self._vmap_qvalue(td, params).get(k.state_action_value).squeeze(-1)

        def dist(obs):
            td = TensorDict({self.actor_network.in_keys[0]: obs}, batch_size=obs.shape[:-1])
            with self.actor_network_params.to_module(self.actor_network, preserve_module_state=False):
                return self.actor_network.get_dist(td)

        def log_prob(obs, act):
            return dist(obs).log_prob(act).reshape(obs.shape[0])

        return CrossDomainNetworks(
            q=lambda x: qvalues(x, self.qvalue_network_params),
            q_target=lambda x: qvalues(x, self.target_qvalue_network_params),
            value=lambda x: value(x, self.value_network_params),
            value_detached=lambda x: value(x, self.target_value_network_params),  # detached current V (IQL)
            log_prob=log_prob,
            policy_action=lambda obs: dist(obs).deterministic_sample,
        )

    def losses(self, tensordict: TensorDictBase):
        """``(loss_qvalue, loss_value, loss_actor, metrics)`` of a batch (Eqs. 8-10).

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
            >>> from tabb_torchrl.objectives import CrossDomainIQLLoss
            >>> loss = CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)),
            ...     make_latent_qvalue(5, hidden_sizes=(8,)), make_latent_value(3, hidden_sizes=(8,)), features="raw")
            >>> td = TensorDict({"observation": torch.randn(2, 3), "action": torch.zeros(2, 2),
            ...     "domain": torch.tensor([0, 1]), ("next", "observation"): torch.zeros(2, 3),
            ...     ("next", "reward"): torch.zeros(2, 1), ("next", "terminated"): torch.zeros(2, 1)}, [2])
            >>> lq, lv, lpi, metrics = loss.losses(td)
            >>> lq.shape, "mean_q" in metrics
            (torch.Size([]), True)
        """
        rows, n_source = self.rows(tensordict)
        return cross_domain_losses(rows, n_source, self.networks(), self.method, self.settings)

    def qvalue_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Critic loss (Eq. 8); gradients reach the critic parameters only. Returns ``(loss, metadata)``."""
        lq, _, _, m = self.losses(tensordict)
        return lq, {"mean_q": m["mean_q"], "mean_target_value": m["mean_target_value"]}

    def value_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """Expectile value loss (Eq. 9); gradients reach the value parameters only. Returns ``(loss, metadata)``."""
        _, lv, _, m = self.losses(tensordict)
        return lv, {"mean_v": m["mean_v"]}

    def actor_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, dict]:
        """AWR actor loss (Eq. 10); gradients reach the actor parameters only. Returns ``(loss, metadata)``."""
        _, _, lpi, _ = self.losses(tensordict)
        return lpi, {}

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
            TensorDict: the three losses plus the metrics of
            :data:`~tabb_torchrl.objectives.cross_domain.METRICS` and the method's own.
        """
        loss_q, loss_v, loss_pi, meta = self.losses(tensordict)
        out = TensorDict({"loss_qvalue": loss_q, "loss_value": loss_v, "loss_actor": loss_pi,
                          **{k: v for k, v in meta.items() if not k.startswith("loss_")}}, batch_size=[])
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
