"""The TABB loss (Liu & Long, arXiv 2605.22376, Eqs. 8-10): the cross-domain IQL loss with the TABB method."""

from __future__ import annotations

from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule

from tabb_torchrl.modules import LatentModel
from tabb_torchrl.objectives.iql_loss import CrossDomainIQLLoss

__all__ = ["TABBLoss"]


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
        deactivate_vmap: bool = False,
    ) -> None:
        if method is None:
            from tabb_torchrl.methods import TABB, PooledIQL

            if use_tbm:
                method = TABB(temperature, scaling, std_eps, weights=weights, source_actor=source_actor,
                              use_predicted_termination=use_predicted_termination)
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
