"""The Target Bellman Mismatch weighting of TABB as a TorchRL transform
(Liu & Long, arXiv 2605.22376, Eqs. 5 and 7)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.envs.transforms import Transform

from tabb_torchrl.modules import LatentModel, evaluate_value  # noqa: F401  (evaluate_value re-exported)
from tabb_torchrl.objectives.functional import (
    TBM_SCALINGS,
    effective_sample_size,
    masked_mean,
    target_bellman_mismatch,
    tbm_weights,
    weight_entropy,
)

from tabb_torchrl.keys import SOURCE

__all__ = ["TargetBellmanMismatch", "evaluate_value"]


class TargetBellmanMismatch(Transform):
    r"""TBM of each source transition and its transfer weight (Liu & Long, arXiv 2605.22376, Eqs. 5 and 7).

    For the source rows of a batch (``domain == SOURCE``) it writes::

        tbm    = |(r + gamma (1 - d) V(f(s'))) - (r_hat + gamma (1 - d) V(z_hat'))|   (Eq. 5)
        weight = n_src * softmax(-tbm / (temperature * s_B)) over the source rows   (Eq. 7)

    with ``s_B = std(tbm over source rows) + 1e-6`` (``scaling="batch_std"``,
    default **[reconstructed]**) or ``s_B = 1`` (``"absolute"``, the paper's
    literal form); target rows get ``tbm = 0`` and ``weight = 1``. See
    :func:`~tabb_torchrl.objectives.functional.tbm_weights` for the edge cases
    (huge or equal TBMs, one or zero source rows). No gradient flows.

    The anchor ``V`` is the value network passed (default in TABB: the IQL
    value network of :class:`~tabb_torchrl.objectives.TABBLoss`, trained on
    target data only; its parameters are shared, so the transform sees the
    current ones when the buffer samples, i.e. at the start of the update step
    **[reconstructed]**). The latents are read from the cached entries
    (``("next", "z_s")``, ``"r_hat"``, ``"z_next_hat"``) when present and
    computed with ``latent_model`` otherwise; they are **not** written into the
    batch. Only ``tbm_key`` and ``weight_key`` are written (in place).

    Use it on a replay buffer (``transform=`` or ``rb.append_transform``) whose
    stored rows carry the ``"domain"`` column, or call it on a TensorDict.

    Args:
        latent_model (LatentModel, optional): the frozen ``(f, g, h)``; may be
            ``None`` when every batch carries the cached latents.
        value_network (TensorDictModuleBase or callable): anchor ``V`` on latents.

    Keyword Args:
        gamma (float): discount. Defaults to ``0.99``.
        temperature (float): ``tau > 0`` of Eq. 7. Defaults to ``1.0`` **[reconstructed]**.
        scaling (str): ``"batch_std"`` (default) or ``"absolute"``.
        std_eps (float): added to the batch std. Defaults to ``1e-6``.
        use_predicted_termination (bool): use the cached/predicted
            ``"terminated_hat"`` in the aligned target (needs a termination
            head; not in the paper). Defaults to ``False``.
        domain_key (NestedKey): Defaults to ``"domain"``.
        reward_key (NestedKey): Defaults to ``("next", "reward")``.
        terminated_key (NestedKey): Defaults to ``("next", "terminated")``.
        tbm_key (NestedKey): output. Defaults to ``"tbm"``.
        weight_key (NestedKey): output. Defaults to ``"weight"``; use
            ``"priority_weight"`` to feed a stock TorchRL loss.
        keepdim (bool): write ``tbm`` and ``weight`` as ``[N, 1]`` (default, the
            project's schema); ``False`` writes ``[N]``, the shape TorchRL's stock
            losses require for ``"priority_weight"``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl import LatentModel, TargetBellmanMismatch, make_latent_value
        >>> _ = torch.manual_seed(0)
        >>> model = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,)).freeze()
        >>> value = make_latent_value(4, hidden_sizes=(8,))
        >>> tbm = TargetBellmanMismatch(model, value, gamma=0.99)
        >>> td = TensorDict({"observation": torch.randn(6, 3), "action": torch.rand(6, 2),
        ...     "domain": torch.tensor([0, 0, 0, 0, 1, 1]),
        ...     ("next", "observation"): torch.randn(6, 3), ("next", "reward"): torch.randn(6, 1),
        ...     ("next", "terminated"): torch.zeros(6, 1, dtype=torch.bool)}, [6])
        >>> td = tbm(td)
        >>> round(td["weight"][:4].sum().item(), 4)  # mean weight 1 over the source rows
        4.0
        >>> td["weight"][4:].squeeze(-1), td["tbm"][4:].squeeze(-1)
        (tensor([1., 1.]), tensor([0., 0.]))

        The weight can drive any TorchRL loss that reads a per-sample weight,
        e.g. :class:`~torchrl.objectives.TD3BCLoss` through its
        ``priority_weight`` key (weighted mean ``sum(w l) / sum(w)``), or on a
        replay buffer:

        >>> from torch import nn
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.data import Bounded, LazyTensorStorage, TensorDictReplayBuffer
        >>> from torchrl.objectives import TD3BCLoss
        >>> class QNet(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.lin = nn.Linear(5, 1)
        ...     def forward(self, obs, act):
        ...         return self.lin(torch.cat([obs, act], -1))
        >>> actor = TensorDictModule(nn.Sequential(nn.Linear(3, 2), nn.Tanh()),
        ...                          in_keys=["observation"], out_keys=["action"])
        >>> qvalue = TensorDictModule(QNet(), in_keys=["observation", "action"],
        ...                           out_keys=["state_action_value"])
        >>> td3bc = TD3BCLoss(actor, qvalue, action_spec=Bounded(-1, 1, (2,)))
        >>> weighting = TargetBellmanMismatch(model, value, weight_key="priority_weight",
        ...                                   keepdim=False)
        >>> rb = TensorDictReplayBuffer(storage=LazyTensorStorage(6), batch_size=6,
        ...                             transform=weighting)
        >>> _ = rb.extend(td.exclude("tbm", "weight"))
        >>> batch = rb.sample()
        >>> "priority_weight" in batch.keys()
        True
        >>> out = td3bc(batch)  # loss_actor and loss_qvalue are TBM-weighted means
    """

    def __init__(
        self,
        latent_model: LatentModel | None,
        value_network: Callable,
        *,
        gamma: float = 0.99,
        temperature: float = 1.0,
        scaling: str = "batch_std",
        std_eps: float = 1e-6,
        use_predicted_termination: bool = False,
        domain_key: NestedKey = "domain",
        reward_key: NestedKey = ("next", "reward"),
        terminated_key: NestedKey = ("next", "terminated"),
        tbm_key: NestedKey = "tbm",
        weight_key: NestedKey = "weight",
        keepdim: bool = True,
    ) -> None:
        if scaling not in TBM_SCALINGS:
            raise ValueError(f"Unknown TBM scaling {scaling!r}; choose one of {TBM_SCALINGS}.")
        if not temperature > 0:
            raise ValueError(f"The TBM temperature must be > 0, got {temperature}.")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
        super().__init__(
            in_keys=[domain_key, reward_key, terminated_key],
            out_keys=[tbm_key, weight_key],
        )
        self.latent_model = latent_model
        self.value_network = value_network
        self.gamma = gamma
        self.temperature = temperature
        self.scaling = scaling
        self.std_eps = std_eps
        self.use_predicted_termination = use_predicted_termination
        self.domain_key = domain_key
        self.reward_key = reward_key
        self.terminated_key = terminated_key
        self.tbm_key = tbm_key
        self.weight_key = weight_key
        self.keepdim = keepdim

    def _read(self, tensordict: TensorDictBase, key: NestedKey, arg: str) -> torch.Tensor:
        value = tensordict.get(key, None)
        if value is None:
            raise KeyError(
                f"TargetBellmanMismatch needs the entry {key!r} in the batch; it is missing. "
                f"Pass {arg}=<your key> to TargetBellmanMismatch if your data names it otherwise"
                + (
                    " (the domain column, 0 = source and 1 = target, is written by "
                    "tabb_torchrl.data.make_source_target_buffer)."
                    if arg == "domain_key"
                    else "."
                )
            )
        return value

    def _latents(self, tensordict: TensorDictBase):
        next_z_s = tensordict.get(("next", "z_s"), None)
        r_hat = tensordict.get("r_hat", None)
        z_next_hat = tensordict.get("z_next_hat", None)
        term_hat = tensordict.get(LatentModel.TERMINATED_HAT_KEY, None)
        need_term = self.use_predicted_termination and term_hat is None
        if next_z_s is None or r_hat is None or z_next_hat is None or need_term:
            if self.latent_model is None:
                raise KeyError(
                    "TargetBellmanMismatch: the batch lacks the cached latents "
                    "(('next', 'z_s'), 'r_hat', 'z_next_hat') and no latent_model was given. "
                    "Pass the frozen LatentModel or cache the latents with LatentModel.cache_latents()."
                )
            lat = self.latent_model.compute(tensordict)
            next_z_s, r_hat, z_next_hat = lat.next_z_s, lat.r_hat, lat.z_next_hat
            if need_term:
                if lat.terminated_hat is None:
                    raise ValueError(
                        "use_predicted_termination=True needs a predictor with a termination "
                        "head (TargetDomainPredictor(termination_head=True))."
                    )
                term_hat = lat.terminated_hat
        return next_z_s, r_hat, z_next_hat, (term_hat if self.use_predicted_termination else None)

    @torch.no_grad()
    def compute(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(tbm, weight)`` (both ``[N, 1]``) without writing anything.

        Args:
            tensordict (TensorDictBase): flat batch ``[N]``.

        Returns:
            tuple: ``(tbm, weight)``, ``[N, 1]`` each.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import TargetBellmanMismatch
            >>> t = TargetBellmanMismatch(None, lambda z: z.sum(-1, keepdim=True), gamma=0.5)
            >>> td = TensorDict({"domain": torch.tensor([0, 0, 1]),
            ...     ("next", "z_s"): torch.ones(3, 2), "r_hat": torch.zeros(3, 1),
            ...     "z_next_hat": torch.zeros(3, 2), ("next", "reward"): torch.ones(3, 1),
            ...     ("next", "terminated"): torch.tensor([[False], [True], [False]])}, [3])
            >>> tbm, w = t.compute(td)
            >>> tbm.squeeze(-1)  # |(1 + 0.5 * 2) - 0|, |1 - 0|, target row
            tensor([2., 1., 0.])
        """
        domain = self._read(tensordict, self.domain_key, "domain_key")
        reward = self._read(tensordict, self.reward_key, "reward_key")
        terminated = self._read(tensordict, self.terminated_key, "terminated_key")
        next_z_s, r_hat, z_next_hat, term_hat = self._latents(tensordict)
        v_next = evaluate_value(self.value_network, next_z_s)
        v_hat = evaluate_value(self.value_network, z_next_hat)
        tbm = target_bellman_mismatch(
            reward, v_next, r_hat, v_hat, terminated, self.gamma, terminated_hat=term_hat
        )
        tbm = tbm.reshape(tbm.shape[0], -1)
        source = (domain.reshape(domain.shape[0], -1)[:, :1] == SOURCE)
        tbm = torch.where(source, tbm, torch.zeros_like(tbm))
        weight = tbm_weights(
            tbm, source, temperature=self.temperature, scaling=self.scaling, std_eps=self.std_eps
        )
        return tbm, weight

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Writes ``tbm_key`` and ``weight_key`` into ``tensordict`` (in place) and returns it."""
        tbm, weight = self.compute(tensordict)
        if not self.keepdim:
            tbm, weight = tbm.squeeze(-1), weight.squeeze(-1)
        tensordict.set(self.tbm_key, tbm)
        tensordict.set(self.weight_key, weight)
        return tensordict

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        raise RuntimeError(
            "TargetBellmanMismatch weights offline batches: use it on a replay buffer "
            "(transform=... or rb.append_transform) or call it on a TensorDict, not inside an env."
        )

    def _inv_call(self, tensordict: TensorDictBase) -> TensorDictBase:
        return tensordict

    def summary(self, tensordict: TensorDictBase) -> dict[str, torch.Tensor]:
        """Weight diagnostics of a transformed batch (Eq. 7 of arXiv 2605.22376).

        Args:
            tensordict (TensorDictBase): a batch already passed through the transform.

        Returns:
            dict: ``mean_tbm``, ``ess`` (of the source weights, at most ``n_src``) and
            ``weight_entropy`` (nats; ``log n_src`` for uniform weights), detached.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import TargetBellmanMismatch
            >>> t = TargetBellmanMismatch(None, lambda z: z.sum(-1, keepdim=True))
            >>> td = TensorDict({"domain": torch.tensor([0, 0, 1]), "tbm": torch.zeros(3, 1),
            ...                  "weight": torch.ones(3, 1)}, [3])
            >>> {k: round(float(v), 3) for k, v in t.summary(td).items()}
            {'mean_tbm': 0.0, 'ess': 2.0, 'weight_entropy': 0.693}
        """
        domain = self._read(tensordict, self.domain_key, "domain_key")
        source = domain.reshape(domain.shape[0], -1)[:, 0] == SOURCE
        weight = tensordict.get(self.weight_key).reshape(source.shape[0], -1)[:, 0]
        tbm = tensordict.get(self.tbm_key).reshape(source.shape[0], -1)[:, 0]
        return {
            "mean_tbm": masked_mean(tbm, source).detach(),
            "ess": effective_sample_size(weight, source),
            "weight_entropy": weight_entropy(weight, source),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(gamma={self.gamma}, temperature={self.temperature}, "
            f"scaling={self.scaling!r}, out_keys={self.out_keys})"
        )
