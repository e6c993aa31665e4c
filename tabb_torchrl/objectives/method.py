"""The plug-in point of cross-domain methods: what a method does to the source rows of a batch.

Defined here, in the core, and re-exported by :mod:`tabb_torchrl.methods` (where the
concrete methods are registered).

Cross-domain offline RL methods on an IQL-style backbone differ only in what they
do to **source** rows. :class:`CrossDomainMethod` is that difference, and nothing
else; the backbone (critic, value and actor losses, Eqs. 8-10 of TABB, in
:mod:`tabb_torchrl.objectives.functional`) is shared by every method and is run
by :func:`~tabb_torchrl.objectives.cross_domain_losses`, whether through the
composable :class:`~tabb_torchrl.objectives.CrossDomainIQLLoss` or the fast
flat-tensor step :class:`~tabb_torchrl.objectives.FastCrossDomainUpdate`.

Per batch, :meth:`CrossDomainMethod.edit_source` receives the source rows
(:class:`SourceRows`: reward, terminal flag, the realised next value, the
method's own cached columns, and the value function) and returns a
:class:`SourceEdit`, any of:

* ``weight`` -- a per-row weight in the critic loss (TABB, IGDF, OTDF, V2A);
* ``keep`` -- a row filter (IGDF, OTDF, V2A keep the top fraction);
* ``reward`` -- a corrected reward, the realised next value kept (DARA, SRPO);
* ``target`` -- a replaced Bellman target, e.g. from one or more predicted next
  states aggregated by mean or min (TABB's target-aligned target, DROCO's robust
  target, MOBODY's relabelled next state); :meth:`CrossDomainMethod.next_value`
  evaluates ``V`` on such candidates;
* ``metrics`` -- detached diagnostics to log.

Around it, optional hooks: :meth:`CrossDomainMethod.prepare` (a pre-training
phase before RL: TABB's latent model is trained by the recipe's trainer and caches
its columns, IGDF's contrastive encoders, DARA's classifiers, DROCO's ensemble),
:meth:`CrossDomainMethod.add_columns` (per-row pre-computations stored with the
data: OTDF's transport scores), :meth:`CrossDomainMethod.learn` (training of the
method's own networks during RL, on each step's batch: SRPO's discriminator),
:meth:`CrossDomainMethod.actor_regularizer` (an extra actor term, e.g. OTDF's
VAE log-likelihood) and :meth:`CrossDomainMethod.after_update` (per-step state
such as an EMA). Class attributes say which rows the value and actor losses
read and whether the losses pool all rows (IQL on the union of the data).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from tabb_torchrl.objectives.functional import bellman_target

__all__ = ["CrossDomainMethod", "SourceRows", "SourceEdit", "PooledIQL"]


@dataclass
class SourceRows:
    """The source rows of one batch, as a cross-domain method sees them (all tensors detached).

    Attributes:
        reward (torch.Tensor): ``[n_s]`` realised rewards.
        terminated (torch.Tensor): ``[n_s]`` terminal flags (float, ``1`` = terminal; never time-outs).
        next_value (torch.Tensor): ``[n_s]`` ``V`` at the realised next state (``V(f(s'))``).
        next_feature (torch.Tensor): ``[n_s, d]`` the features ``V`` read for ``next_value``
            (``f(s')`` on latents, ``s'`` on raw states).
        columns (Mapping[str, torch.Tensor]): the per-row entries named in
            :attr:`CrossDomainMethod.columns` (e.g. TABB's ``r_hat``, ``z_next_hat``).
        value (Callable): ``V`` on features (``[n, d] -> [n]``), current parameters, no gradient.
        gamma (float): discount.
        target_rows (SourceRows, optional): the batch's **target** rows in the same form (their
            reward, terminal flag, ``V(f(s'))``, the method's columns), given only to methods that
            set :attr:`CrossDomainMethod.needs_target_rows` (e.g. TABB's gated source target,
            which calibrates on them); ``None`` otherwise.

    Examples:
        >>> import torch
        >>> rows = SourceRows(torch.ones(2), torch.zeros(2), torch.full((2,), 3.0), torch.zeros(2, 1), {},
        ...                   value=lambda z: z.sum(-1), gamma=0.5)
        >>> rows.realised_target()
        tensor([2.5000, 2.5000])
    """

    reward: torch.Tensor
    terminated: torch.Tensor
    next_value: torch.Tensor
    next_feature: torch.Tensor
    columns: Mapping[str, torch.Tensor]
    value: Callable[[torch.Tensor], torch.Tensor]
    gamma: float
    target_rows: "SourceRows | None" = None

    def realised_target(self, reward: torch.Tensor | None = None) -> torch.Tensor:
        """``r + gamma (1 - d) V(s')`` with the source's own next state (``reward`` replaces ``r``)."""
        r = self.reward if reward is None else reward
        return bellman_target(r, self.next_value, self.terminated, self.gamma)


@dataclass
class SourceEdit:
    """What a method changes on the source rows of a batch (``None`` = unchanged).

    Attributes:
        weight (torch.Tensor, optional): ``[n_s]`` weights of the source rows in the critic loss.
        keep (torch.Tensor, optional): ``[n_s]`` boolean filter; dropped rows leave the losses.
        reward (torch.Tensor, optional): ``[n_s]`` corrected rewards (the realised next value is kept).
        target (torch.Tensor, optional): ``[n_s]`` replaced Bellman targets (wins over ``reward``).
        metrics (dict): detached scalars to log (``mean_tbm``, ...).

    Examples:
        >>> import torch
        >>> SourceEdit(weight=torch.ones(3)).keep is None
        True
    """

    weight: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    reward: torch.Tensor | None = None
    target: torch.Tensor | None = None
    metrics: dict = field(default_factory=dict)


class CrossDomainMethod(nn.Module):
    """Base class of a cross-domain method: the identity on source rows (IQL on source ∪ target).

    Subclasses override :meth:`edit_source` and, where the method has them,
    :meth:`prepare`, :meth:`actor_regularizer` and :meth:`after_update`, and set
    the class attributes below. A method is an ``nn.Module``, so its networks and
    buffers (an EMA anchor, classifiers, an ensemble) move with ``.to(device)`` and
    are saved by ``state_dict()``.

    Attributes:
        name (str): registry name (``algo.method`` of the recipe).
        columns (tuple of str): per-row entries :meth:`edit_source` reads from the
            batch (cached in the buffer's storage before RL).
        pooled (bool): ``True``: every loss is one plain mean over all rows (IQL on
            the union of the data); ``False``: mean over target rows plus weighted
            mean over source rows (:func:`~tabb_torchrl.objectives.functional.split_mean`).
        source_in_value (bool): the value loss (Eq. 9) also reads the (weighted) source rows.
        source_in_actor (bool): the actor loss (Eq. 10) also reads the (weighted) source rows.
        critic_deltas (tuple or None): ``(target_delta, source_delta)`` Huber thresholds of the
            critic loss on target and source rows (``None`` in the tuple = squared error);
            ``None`` (default) uses the backbone's ``huber_delta`` on every row.
        needs_target_rows (bool): :meth:`edit_source` also reads the batch's target rows
            (:attr:`SourceRows.target_rows`). Defaults to ``False``.

    Examples:
        A toy method that halves the weight of source rows with a negative reward:

        >>> import torch
        >>> from tabb_torchrl.methods import CrossDomainMethod, SourceEdit, SourceRows
        >>> class HalveNegative(CrossDomainMethod):
        ...     name = "halve_negative"
        ...     def edit_source(self, rows):
        ...         return SourceEdit(weight=torch.where(rows.reward < 0, 0.5, 1.0))
        >>> rows = SourceRows(torch.tensor([-1.0, 2.0]), torch.zeros(2), torch.zeros(2), torch.zeros(2, 1), {},
        ...                   value=lambda z: z.sum(-1), gamma=0.99)
        >>> HalveNegative().edit_source(rows).weight
        tensor([0.5000, 1.0000])
    """

    name: str = "iql"
    columns: tuple[str, ...] = ()
    pooled: bool = False
    source_in_value: bool = False
    source_in_actor: bool = False
    critic_deltas: tuple | None = None
    needs_target_rows: bool = False

    def prepare(self, source, target, *, device: torch.device | None = None, progress: bool = False) -> None:
        """Pre-training, once before RL (default: nothing).

        The recipe's trainer calls it once per run, before the RL buffer is built; its
        result must live in the method's parameters and buffers (saved with the loss
        module's ``state_dict``, hence in checkpoints), so a resumed run does not call
        it again. Per-row results go through :meth:`add_columns`.

        Args:
            source (TensorDictBase): the source transitions (stored columns may be added in place).
            target (TensorDictBase): the target transitions.

        Keyword Args:
            device (torch.device, optional): where to train.
            progress (bool): show a progress bar.
        """

    def add_columns(self, data) -> None:
        """Write the method's per-row columns into the data the RL buffer stores (default: none).

        Called once per stored dataset part (after :meth:`prepare`, after TABB's latents
        are cached), and again on resume (the stored data is not checkpointed), so it
        must be a deterministic function of the method's state.

        Args:
            data (TensorDictBase): the concatenated source and target rows (``"domain"``
                column set), or one of them; columns are set in place.
        """

    def edit_source(self, rows: SourceRows) -> SourceEdit:
        """The method's change to the source rows of one batch (default: none).

        Args:
            rows (SourceRows): the source rows (detached).

        Returns:
            SourceEdit: weights, filter, corrected rewards or replaced targets.
        """
        return SourceEdit()

    def next_value(self, rows: SourceRows, candidates: torch.Tensor, reduce: str = "mean") -> torch.Tensor:
        """``V`` on ``C`` candidate next states per row, aggregated by ``"mean"`` or ``"min"``.

        Args:
            rows (SourceRows): the batch's source rows (gives ``V``).
            candidates (torch.Tensor): ``[n_s, d]`` (one candidate) or ``[n_s, C, d]``.
            reduce (str): ``"mean"`` or ``"min"`` over the candidates.

        Returns:
            torch.Tensor: ``[n_s]`` values.

        Examples:
            >>> import torch
            >>> rows = SourceRows(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1, 1), {},
            ...                   value=lambda z: z.sum(-1), gamma=0.9)
            >>> CrossDomainMethod().next_value(rows, torch.tensor([[[1.0], [3.0]]]), "min")
            tensor([1.])
        """
        if reduce not in ("mean", "min"):
            raise ValueError(f"reduce must be 'mean' or 'min', got {reduce!r}.")
        if candidates.ndim == 2:
            return rows.value(candidates)
        n, c, d = candidates.shape
        values = rows.value(candidates.reshape(n * c, d)).reshape(n, c)
        return values.mean(-1) if reduce == "mean" else values.amin(-1)

    def learn(self, rows, n_source: int, value: Callable[[torch.Tensor], torch.Tensor]) -> dict:
        """Train the method's own networks on the batch of this RL step (default: nothing).

        Called after the RL update on the same rows (a
        :class:`~tabb_torchrl.objectives.CrossDomainRows`, source rows first, detached),
        outside the compiled losses, only when a subclass overrides it
        (:attr:`has_learn`): e.g. SRPO's state discriminator, DARA's classifiers trained
        alongside RL, a dynamics model refreshed during RL. The method owns its optimiser;
        to checkpoint the optimiser's state, return it from ``get_extra_state`` and restore
        it in ``set_extra_state`` (``nn.Module``'s hooks, saved with the loss module).

        Returns:
            dict: detached metrics to log.
        """
        return {}

    @property
    def has_learn(self) -> bool:
        """Whether the subclass overrides :meth:`learn`."""
        return type(self).learn is not CrossDomainMethod.learn

    def actor_regularizer(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor | None:
        """An extra actor loss term on the target rows' observations and the policy's mean actions (default none).

        Only called when a subclass overrides it (:attr:`has_actor_regularizer`).
        """
        return None

    @property
    def has_actor_regularizer(self) -> bool:
        """Whether the subclass overrides :meth:`actor_regularizer`."""
        return type(self).actor_regularizer is not CrossDomainMethod.actor_regularizer

    def after_update(self) -> None:
        """Called after every optimiser step (e.g. an EMA update); default nothing."""

    def extra_repr(self) -> str:
        return f"name={self.name!r}, pooled={self.pooled}, source_in_value={self.source_in_value}, " \
               f"source_in_actor={self.source_in_actor}"


class PooledIQL(CrossDomainMethod):
    """IQL on source ∪ target: realised targets, weight 1, every loss one plain mean over all rows.

    The paper's ``-TBM`` ablation (``algo=iql_mixed``). With no source rows in the
    batches (``data.n_source=0``) it is IQL on the target data (``algo=iql_target``).

    Examples:
        >>> from tabb_torchrl.methods import PooledIQL
        >>> m = PooledIQL()
        >>> m.pooled, m.source_in_value, m.source_in_actor
        (True, True, True)
    """

    name = "iql"
    pooled = True
    source_in_value = True
    source_in_actor = True
