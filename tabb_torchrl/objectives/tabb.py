"""TABB as a plug-in of the cross-domain core (Liu & Long, arXiv 2605.22376): the :class:`TABB` method
(target-aligned targets and TBM weights for source rows, Eqs. 5, 7, 8) and :class:`TABBLoss`, the
cross-domain IQL loss with it (Eqs. 8-10).

Its pre-training phase (the latent model ``f, g, h`` of Eq. 6, stages 1 and 2) is run by the
recipe's trainer, which then caches the per-row columns the method reads: ``r_hat`` and
``z_next_hat`` (``h(g(f(s), a))``).
"""

from __future__ import annotations

import torch
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule
from torch import nn

from tabb_torchrl.modules import LatentModel, evaluate_value
from tabb_torchrl.objectives.functional import (
    SOURCE_TARGETS,
    TBM_SCALINGS,
    gate_threshold,
    source_bellman_target,
    target_aligned_backup,
    tbm_weights,
)
from tabb_torchrl.objectives.iql_loss import CrossDomainIQLLoss
from tabb_torchrl.objectives.method import CrossDomainMethod, PooledIQL, SourceEdit, SourceRows

__all__ = ["TABB", "TABBLoss"]


def _as_value_fn(module: nn.Module):
    """``latent -> [N]`` for a value TensorDictModule (or a plain module)."""
    return lambda z: evaluate_value(module, z).reshape(z.shape[0])


class TABB(CrossDomainMethod):
    r"""Target-Aligned Bellman Backup on source rows (Liu & Long, arXiv 2605.22376, Eqs. 5, 7, 8).

    For each source row, with ``V`` the value network at the start of the step::

        y_hat  = r_hat + gamma (1 - d) V(z_hat')                        the source row's target (Eq. 8)
        TBM    = | (r + gamma (1 - d) V_anc(f(s'))) - y_hat_anc |        (Eq. 5)
        w      = n_s * softmax(-TBM / (temperature * s_B))              (Eq. 7)

    ``V_anc = V`` by default **[reconstructed]**, or a slow EMA copy of ``V``
    (``anchor``). Value and actor see target rows only (``source_actor=True``:
    the SrcActor ablation, the actor also reads the weighted source rows).

    Options **beyond the paper** (defaults keep the paper's equations):
    ``source_target`` picks the source rows' critic target per row
    (:func:`~tabb_torchrl.objectives.functional.source_bellman_target`: ``"aligned"``, the
    paper; ``"realised"``; ``"gated"``, the realised target where the row's TBM is within the
    ``gate_quantile`` of the batch's target-row TBM, else the aligned one), and
    ``source_in_value=True`` lets the value loss (Eq. 9) also read the source rows, weighted
    by ``w``.

    Args:
        temperature (float): ``tau > 0`` of Eq. 7. Defaults to ``1.0`` **[reconstructed]**.
        scaling (str): ``"batch_std"`` (default **[reconstructed]**) or ``"absolute"``.
        std_eps (float): added to the batch std of TBM (``> 0``). Defaults to ``1e-6``.

    Keyword Args:
        weights (str): ``"tbm"`` (default): the weights of Eq. 7, computed here; ``"batch"``:
            read the ``"weight"`` column of the batch (written by the
            :class:`~tabb_torchrl.TargetBellmanMismatch` transform on a replay buffer, or by
            any other weighting scheme; ``1`` when the batch has none).
        source_actor (bool): the SrcActor ablation. Defaults to ``False``.
        anchor (nn.Module, optional): an EMA copy of the value network used as ``V_anc``.
        value_network (nn.Module, optional): the value network the anchor follows
            (required with ``anchor``).
        anchor_tau (float): EMA rate of the anchor. Defaults to ``0.005``.
        use_predicted_termination (bool): use the cached ``terminated_hat`` column in
            the aligned target (needs a termination head; not in the paper). Defaults to ``False``.
        source_target (str): ``"aligned"`` (default, the paper), ``"realised"`` or ``"gated"``
            (beyond the paper).
        gate_quantile (float): quantile of the target rows' TBM that gates ``"gated"``, in
            ``(0, 1]``. Defaults to ``0.9``.
        source_in_value (bool): the value loss also reads the weighted source rows (beyond
            the paper). Defaults to ``False``.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.methods import TABB, SourceRows
        >>> rows = SourceRows(reward=torch.tensor([1.0, 1.0]), terminated=torch.zeros(2),
        ...     next_value=torch.tensor([2.0, 2.0]), next_feature=torch.zeros(2, 1),
        ...     columns={"r_hat": torch.tensor([1.0, 0.0]), "z_next_hat": torch.tensor([[2.0], [2.0]])},
        ...     value=lambda z: z.sum(-1), gamma=0.5)
        >>> edit = TABB(scaling="absolute").edit_source(rows)
        >>> edit.target          # r_hat + 0.5 * V(z_hat') = r_hat + 1
        tensor([2., 1.])
        >>> edit.metrics["mean_tbm"], edit.weight.sum()   # TBM = [0, 1]; mean weight 1
        (tensor(0.5000), tensor(2.))
        >>> TABB(source_target="realised").edit_source(rows).target   # r + 0.5 * V(f(s'))
        tensor([2., 2.])
    """

    name = "tabb"
    columns = ("r_hat", "z_next_hat")

    def __init__(
        self,
        temperature: float = 1.0,
        scaling: str = "batch_std",
        std_eps: float = 1e-6,
        *,
        weights: str = "tbm",
        source_actor: bool = False,
        anchor: nn.Module | None = None,
        value_network: nn.Module | None = None,
        anchor_tau: float = 0.005,
        use_predicted_termination: bool = False,
        source_target: str = "aligned",
        gate_quantile: float = 0.9,
        source_in_value: bool = False,
    ):
        super().__init__()
        if source_target not in SOURCE_TARGETS:
            raise ValueError(f"TABB: unknown source_target {source_target!r} (loss.source_target); "
                             f"choose one of {SOURCE_TARGETS}.")
        if not 0 < gate_quantile <= 1:
            raise ValueError(f"TABB: gate_quantile (loss.gate_quantile) must be in (0, 1], got {gate_quantile}. "
                             "Fix: e.g. 0.9.")
        if scaling not in TBM_SCALINGS:
            raise ValueError(f"Unknown TBM scaling {scaling!r}; choose one of {TBM_SCALINGS}.")
        if not temperature > 0:
            raise ValueError(f"The TBM temperature (loss.tau) must be > 0, got {temperature}.")
        if not std_eps > 0:
            raise ValueError(
                f"loss.std_eps must be > 0 (it keeps the batch-std scaling finite), got {std_eps}. "
                "Fix: use the default 1e-6."
            )
        if weights not in ("tbm", "batch"):
            raise ValueError(f"TABB: weights must be 'tbm' or 'batch', got {weights!r}.")
        if anchor is not None and value_network is None:
            raise ValueError("TABB: an EMA anchor needs the value_network it follows.")
        self.temperature = float(temperature)
        self.scaling = scaling
        self.std_eps = float(std_eps)
        self.source_in_actor = bool(source_actor)
        self.source_in_value = bool(source_in_value)
        self.source_target = source_target
        self.gate_quantile = float(gate_quantile)
        self.needs_target_rows = source_target == "gated"
        self.anchor_tau = float(anchor_tau)
        self.use_predicted_termination = bool(use_predicted_termination)
        self.weights = weights
        self.columns = (*type(self).columns, *(("terminated_hat",) if use_predicted_termination else ()),
                        *(("weight", "tbm") if weights == "batch" else ()))
        self.anchor = anchor
        # not registered as a submodule: the value network belongs to the loss
        self._follow = None if value_network is None else [value_network]
        if anchor is not None:
            self._anchor_params = [p for p in anchor.parameters()]
            self._value_params = [p for p in value_network.parameters()]
            if [p.shape for p in self._anchor_params] != [p.shape for p in self._value_params]:
                raise ValueError("TABB: the anchor must be a copy of the value network.")

    def _backup(self, rows: SourceRows, value=None):
        """Eq. 5 on ``rows`` with ``value`` (default: the step's ``V``)."""
        value = rows.value if value is None else value
        d_hat = rows.columns["terminated_hat"].reshape(-1) if self.use_predicted_termination else None
        next_value = rows.next_value if value is rows.value else value(rows.next_feature)
        return target_aligned_backup(rows.reward, next_value, rows.columns["r_hat"].reshape(-1),
                                     value(rows.columns["z_next_hat"]), rows.terminated, rows.gamma,
                                     terminated_hat=d_hat)

    def edit_source(self, rows: SourceRows) -> SourceEdit:
        """Source targets (Eq. 8: target-aligned by default) and TBM weights (Eqs. 5, 7) of the source rows."""
        backup = self._backup(rows)
        anchor = None if self.anchor is None else _as_value_fn(self.anchor)
        if anchor is not None and (self.weights == "tbm" or self.source_target == "gated"):
            backup = backup._replace(tbm=self._backup(rows, anchor).tbm)  # TBM with V_anc; targets with V
        tbm = backup.tbm
        metrics = {}
        threshold = None
        if self.source_target == "gated":
            if rows.target_rows is None:
                raise ValueError("TABB(source_target='gated') needs the batch's target rows (SourceRows.target_rows).")
            threshold = gate_threshold(self._backup(rows.target_rows, anchor).tbm, self.gate_quantile)
            metrics["gate_realised_fraction"] = (tbm <= threshold).to(tbm.dtype).mean()
        target = source_bellman_target(backup, self.source_target, threshold=threshold)
        if self.weights == "batch":  # weights (and TBM) of a transform, or of the user's own scheme
            weight, logged = rows.columns.get("weight"), rows.columns.get("tbm")
            if logged is not None:
                metrics["mean_tbm"] = logged.reshape(-1).mean()
            return SourceEdit(weight=None if weight is None else weight.reshape(-1), target=target, metrics=metrics)
        weight = tbm_weights(tbm, temperature=self.temperature, scaling=self.scaling, std_eps=self.std_eps)
        return SourceEdit(weight=weight, target=target, metrics={"mean_tbm": tbm.mean(), **metrics})

    def after_update(self) -> None:
        """Moves the EMA anchor towards the value network (``loss.anchor=ema``)."""
        if self.anchor is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self._anchor_params, [p.detach() for p in self._value_params],
                                     self.anchor_tau)

    def extra_repr(self) -> str:
        return (f"weights={self.weights!r}, temperature={self.temperature}, scaling={self.scaling!r}, std_eps={self.std_eps}, "
                f"source_actor={self.source_in_actor}, anchor={'ema' if self.anchor is not None else 'value'}, "
                f"source_target={self.source_target!r}, source_in_value={self.source_in_value}")


class TABBLoss(CrossDomainIQLLoss):
    r"""TABB loss: target-aligned critic, target-only value and actor (Liu & Long, arXiv 2605.22376, Eqs. 8-10).

    :class:`~tabb_torchrl.objectives.CrossDomainIQLLoss` on latents with the
    :class:`~tabb_torchrl.methods.TABB` method. With ``T`` the target rows and
    ``S`` the source rows of a batch:

    * **Critic, Eq. 8** -- for each critic ``Q_j`` of the twin ensemble::

          y     = r     + gamma (1 - d) V(f(s'))      target rows (realised target)
          y_hat = r_hat + gamma (1 - d) V(z_hat')     source rows (target-aligned; not s')
          L_Qj  = mean_T[ huber(Q_j(z_sa) - y) ] + mean_S[ w * huber(Q_j(z_sa) - y_hat) ]

      ``w`` is read from the ``"weight"`` entry (written by
      :class:`~tabb_torchrl.TargetBellmanMismatch` on the replay buffer, or any
      other weighting scheme; ``1`` when absent) with ``weights="batch"``
      (default), or computed here from the TBM (Eqs. 5 and 7) with ``weights="tbm"``.
    * **Value, Eq. 9** -- ``L_V = mean_T[ L2^kappa(min_j Q_targ_j(z_sa) - V(z_s)) ]``.
    * **Actor, Eq. 10** -- ``L_pi = -mean_T[ min(exp(beta (min_j Q_targ_j - V)), max_weight) * log pi(a|s) ]``.

    Ablations of the paper's table 3, by flag:

    * ``use_tbm=False`` (**-TBM**): plain IQL on every row of the batch
      (:class:`~tabb_torchrl.methods.PooledIQL`) -- source rows use their realised
      target, weight 1, and each loss is a plain mean over all rows.
    * ``source_actor=True`` (**SrcActor**): the AWR loss also uses the source
      rows, multiplied by their weight: ``L_pi = mean_T[...] + mean_S[w * ...]``.

    Args:
        actor_network (ProbabilisticTensorDictSequential): the policy on observations
            (:func:`~tabb_torchrl.make_actor`).
        qvalue_network (TensorDictModule or list of TensorDictModule): ``Q(z_sa)``
            (:func:`~tabb_torchrl.make_latent_qvalue`).
        value_network (TensorDictModule): ``V(z_s)`` (:func:`~tabb_torchrl.make_latent_value`).
        latent_model (LatentModel, optional): the frozen ``(f, g, h)``, used only
            when the batch lacks the cached latents.

    Keyword Args:
        method (CrossDomainMethod, optional): overrides the method built from the flags below.
        weights (str): ``"batch"`` (default) or ``"tbm"``, see above.
        temperature, scaling, std_eps: the TBM weights of Eq. 7 (``weights="tbm"``);
            see :class:`~tabb_torchrl.methods.TABB`.
        use_tbm (bool): ``False`` = the -TBM ablation. Defaults to ``True``.
        source_actor (bool): ``True`` = the SrcActor ablation. Defaults to ``False``.
        use_predicted_termination (bool): use the cached/predicted ``"terminated_hat"``
            instead of ``d`` in the source rows' aligned target (needs a termination
            head; not in the paper). Defaults to ``False``.
        source_target, gate_quantile, source_in_value: options beyond the paper, see
            :class:`~tabb_torchrl.methods.TABB` (defaults: the paper's equations).
        num_qvalue_nets, gamma, expectile, beta, huber_delta, max_weight, deactivate_vmap:
            see :class:`~tabb_torchrl.objectives.CrossDomainIQLLoss`.

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

    def __init__(
        self,
        actor_network: ProbabilisticTensorDictSequential,
        qvalue_network: TensorDictModule | list[TensorDictModule],
        value_network: TensorDictModule,
        latent_model: LatentModel | None = None,
        *,
        method=None,
        weights: str = "batch",
        temperature: float = 1.0,
        scaling: str = "batch_std",
        std_eps: float = 1e-6,
        num_qvalue_nets: int = 2,
        gamma: float = 0.99,
        expectile: float = 0.7,
        beta: float = 3.0,
        huber_delta: float | None = 1.0,
        max_weight: float = 100.0,
        use_tbm: bool = True,
        source_actor: bool = False,
        use_predicted_termination: bool = False,
        source_target: str = "aligned",
        gate_quantile: float = 0.9,
        source_in_value: bool = False,
        deactivate_vmap: bool = False,
    ) -> None:
        if method is None:
            if use_tbm:
                method = TABB(temperature, scaling, std_eps, weights=weights, source_actor=source_actor,
                              use_predicted_termination=use_predicted_termination, source_target=source_target,
                              gate_quantile=gate_quantile, source_in_value=source_in_value)
            else:
                method = PooledIQL()
        super().__init__(
            actor_network, qvalue_network, value_network, latent_model, method=method, features="latent",
            num_qvalue_nets=num_qvalue_nets, gamma=gamma, expectile=expectile, beta=beta,
            huber_delta=huber_delta, max_weight=max_weight, deactivate_vmap=deactivate_vmap,
        )

    @property
    def use_tbm(self) -> bool:
        """Whether the method is TABB (``False``: the -TBM ablation, IQL on pooled rows)."""
        return not self.method.pooled

    @property
    def source_actor(self) -> bool:
        """Whether the actor loss also reads the (weighted) source rows."""
        return bool(self.method.source_in_actor) and not self.method.pooled
