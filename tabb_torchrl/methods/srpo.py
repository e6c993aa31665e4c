"""SRPO as a cross-domain method: a state-distribution reward on the source rows
(Xue, Cai, Liu, Zheng, Jiang, Gai & An, "State Regularized Policy Optimization on Data
with Dynamics Shift", NeurIPS 2023, arXiv 2306.03552).

A state discriminator, trained during RL on each step's rows (:meth:`SRPO.learn`),
separates the high-value states of the batch ("real": a sample of the optimal
stationary state distribution, shared across dynamics) from its low-value states
("fake"); the source rewards get ``eta * log(clip(D(s), 0.1, 10))`` and IQL runs on
the union of the data (``pooled``). See ``docs/methods/srpo.md`` for the defaults and
their sources.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchrl.modules import MLP

from tabb_torchrl.methods.base import CrossDomainMethod, SourceEdit, SourceRows

__all__ = ["SRPO", "value_labels", "discriminator_loss", "srpo_bonus"]

#: What the bonus takes the log of (``bonus_input``).
BONUS_INPUTS = ("output", "odds")
#: Which rows of a batch the discriminator is trained on (``label_rows``).
LABEL_ROWS = ("target", "all")


def value_labels(values: torch.Tensor, real_fraction: float) -> torch.Tensor:
    r"""Labels of a batch of states by value: ``1`` ("real") for the top ``real_fraction``, ``0`` ("fake") for the rest.

    As in the authors' code, the ``floor(n (1 - real_fraction))`` lowest values are fake
    (``low_q_portion = 1 - real_fraction``) and all others real; ties are broken by position
    (stable sort).

    Args:
        values (torch.Tensor): ``[n]`` state values.
        real_fraction (float): fraction of real states, in ``(0, 1)``.

    Returns:
        torch.Tensor: ``[n]`` float labels.

    Examples:
        >>> import torch
        >>> value_labels(torch.tensor([3.0, -1.0, 7.0, 0.5]), 0.5)
        tensor([1., 0., 1., 0.])
    """
    n = values.shape[0]
    n_fake = int(n * (1.0 - real_fraction))
    order = torch.argsort(values, stable=True)
    labels = torch.zeros(n, dtype=values.dtype, device=values.device)
    return labels.index_fill(0, order[n_fake:], 1.0)


def discriminator_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Binary cross-entropy of the state discriminator: mean over real states plus mean over fake states.

    .. math::

        L(\delta) = -\frac{1}{|R|}\sum_{s \in R} \log \sigma(o_\delta(s))
                    - \frac{1}{|F|}\sum_{s \in F} \log\big(1 - \sigma(o_\delta(s))\big)

    with :math:`o_\delta` the network's output (a logit): the authors' ``BCELoss(sigmoid(low), 0) +
    BCELoss(sigmoid(high), 1)``, computed stably from the logits.

    Examples:
        >>> import torch
        >>> discriminator_loss(torch.zeros(4), torch.tensor([1.0, 0.0, 1.0, 0.0]))   # 2 log 2
        tensor(1.3863)
    """
    per_row = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    n_real = labels.sum().clamp_min(1.0)
    n_fake = (1.0 - labels).sum().clamp_min(1.0)
    return (per_row * labels).sum() / n_real + (per_row * (1.0 - labels)).sum() / n_fake


def srpo_bonus(output: torch.Tensor, eta: float, clip_min: float = 0.1, clip_max: float = 10.0,
               bonus_input: str = "output") -> torch.Tensor:
    r"""SRPO's state reward :math:`\eta \log \mathrm{clip}(D(s), c_{\min}, c_{\max})` from the discriminator's output.

    ``bonus_input="output"`` (the authors' code): :math:`D(s)` is the network's raw output
    :math:`o_\delta(s)` (the logit its BCE loss is trained on); ``"odds"``: :math:`D(s)` is the
    density-ratio estimate :math:`\sigma(o)/(1 - \sigma(o)) = e^{o}` of the paper's
    :math:`d^*(s)/d(s)` **[reconstructed]**, so the bonus is ``eta * clip(o, log c_min, log c_max)``.

    Examples:
        >>> import torch
        >>> srpo_bonus(torch.tensor([-3.0, 1.0, 100.0]), eta=0.1)     # 0.1 * log([0.1, 1, 10])
        tensor([-0.2303,  0.0000,  0.2303])
        >>> srpo_bonus(torch.tensor([-3.0, 1.0]), eta=0.1, bonus_input="odds")   # 0.1 * clip(o, -2.30, 2.30)
        tensor([-0.2303,  0.1000])
    """
    if bonus_input == "output":
        return eta * torch.log(output.clamp(clip_min, clip_max))
    if bonus_input == "odds":
        return eta * output.clamp(math.log(clip_min), math.log(clip_max))
    raise ValueError(f"SRPO: bonus_input must be one of {BONUS_INPUTS}, got {bonus_input!r}.")


class SRPO(CrossDomainMethod):
    r"""State Regularized Policy Optimization on source rows (Xue et al., NeurIPS 2023, arXiv 2306.03552).

    A state discriminator :math:`o_\delta(s)` (an MLP with one output, a logit) is trained
    after every RL step on that step's rows: the states whose value ``V(s)`` is in the top
    ``real_fraction`` of the batch are "real" (a sample of the optimal state distribution),
    the others "fake" (:func:`value_labels`, :func:`discriminator_loss`); by default only the
    target rows of the batch are labelled (``label_rows="target"``). Each source row's
    reward becomes::

        r_tilde = r + eta * log(clip(D(s), clip_min, clip_max))       (srpo_bonus)

    with ``D(s)`` the discriminator's output (``bonus_input``), and its Bellman target
    ``r_tilde + gamma (1 - d) V(s')``; target rows are unchanged. Every loss is one mean
    over all rows (``pooled``). The discriminator reads raw states (the ``observation``
    column), ``V`` its features.

    Its Adam state is saved with the loss module (``get_extra_state`` / ``set_extra_state``),
    so a resumed run continues exactly.

    Args:
        obs_dim (int): observation size (passed by the recipe).
        eta (float): weight of the state reward. Defaults to ``0.1`` (the authors' README command,
            ``--rew_reg_eta 0.1``).
        clip_min (float): lower clip of ``D(s)`` (``> 0``). Defaults to ``0.1`` (authors' code).
        clip_max (float): upper clip of ``D(s)``. Defaults to ``10.0`` (authors' code).

    Keyword Args:
        real_fraction (float): fraction of the labelled states that are "real", in ``(0, 1)``.
            Defaults to ``0.5`` (authors' config, ``low_q_portion = 0.5``).
        lr (float): Adam learning rate of the discriminator. Defaults to ``1e-3`` (authors' config,
            ``s_prior_lr``).
        hidden_sizes (sequence of int): hidden layers of the discriminator. Defaults to ``(256, 256)``
            (authors' config: ``hidden_layers = 2``, ``hidden_layer_size = 256``).
        label_rows (str): ``"target"`` (default **[reconstructed]**): the target rows of each batch
            are ranked and labelled; ``"all"``: all rows of the batch (the authors' single pool of
            data with dynamics shift).
        bonus_input (str): ``"output"`` (default, authors' code) or ``"odds"`` **[reconstructed]**,
            see :func:`srpo_bonus`.
        squared_critic (bool): the critic's per-row loss is the squared error ``0.5 (Q - y)^2`` on every
            row, as the authors' SAC-style critic; ``False``: the recipe's Huber loss (``loss.huber_delta``, TABB's
            reconstructed Eq. 8). Defaults to ``True``.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.methods import SRPO, SourceRows
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> m = SRPO(obs_dim=2, hidden_sizes=(16,))
        >>> rows = SourceRows(reward=torch.ones(3), terminated=torch.zeros(3), next_value=torch.zeros(3),
        ...     next_feature=torch.zeros(3, 2), columns={"observation": torch.randn(3, 2)},
        ...     value=lambda z: z.sum(-1), gamma=0.99)
        >>> edit = m.edit_source(rows)
        >>> bool(((edit.reward - 1).abs() <= 0.1 * torch.log(torch.tensor(10.0)) + 1e-6).all())
        True
        >>> m.pooled, m.columns, m.has_learn
        (True, ('observation',), True)
    """

    name = "srpo"
    columns = ("observation",)
    pooled = True
    source_in_value = True
    source_in_actor = True

    def __init__(
        self,
        obs_dim: int,
        eta: float = 0.1,
        clip_min: float = 0.1,
        clip_max: float = 10.0,
        *,
        real_fraction: float = 0.5,
        lr: float = 1e-3,
        hidden_sizes: Sequence[int] = (256, 256),
        label_rows: str = "target",
        bonus_input: str = "output",
        squared_critic: bool = True,
    ):
        super().__init__()
        if not 0 < clip_min < clip_max:
            raise ValueError(f"SRPO: need 0 < clip_min < clip_max, got {clip_min} and {clip_max}.")
        if not 0 < real_fraction < 1:
            raise ValueError(f"SRPO: real_fraction must be in (0, 1), got {real_fraction}.")
        if label_rows not in LABEL_ROWS:
            raise ValueError(f"SRPO: label_rows must be one of {LABEL_ROWS}, got {label_rows!r}.")
        if bonus_input not in BONUS_INPUTS:
            raise ValueError(f"SRPO: bonus_input must be one of {BONUS_INPUTS}, got {bonus_input!r}.")
        self.obs_dim = int(obs_dim)
        self.eta, self.clip_min, self.clip_max = float(eta), float(clip_min), float(clip_max)
        self.critic_deltas = (None, None) if squared_critic else None
        self.real_fraction = float(real_fraction)
        self.lr = float(lr)
        self.label_rows = label_rows
        self.bonus_input = bonus_input
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.discriminator = MLP(in_features=self.obs_dim, out_features=1, num_cells=list(self.hidden_sizes),
                                 activation_class=nn.ReLU)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.lr)

    # ------------------------------------------------------------------ the discriminator
    def output(self, observation: torch.Tensor) -> torch.Tensor:
        """The discriminator's raw output ``o(s)`` (a logit), ``[n]``."""
        x = observation.reshape(observation.shape[0], -1).to(next(self.discriminator.parameters()).dtype)
        return self.discriminator(x).squeeze(-1)

    def bonus(self, observation: torch.Tensor) -> torch.Tensor:
        """``eta * log(clip(D(s), clip_min, clip_max))`` of :func:`srpo_bonus` (no gradient), ``[n]``."""
        with torch.no_grad():
            return srpo_bonus(self.output(observation), self.eta, self.clip_min, self.clip_max, self.bonus_input)

    def edit_source(self, rows: SourceRows) -> SourceEdit:
        """Source rewards ``r + eta * log(clip(D(s), clip_min, clip_max))``, ``s`` from the ``observation`` column."""
        if "observation" not in rows.columns:
            raise KeyError("SRPO needs the source rows' 'observation' column in the batch.")
        n = rows.reward.shape[0]
        bonus = self.bonus(rows.columns["observation"].reshape(n, -1)).to(rows.reward.dtype)
        return SourceEdit(reward=rows.reward + bonus, metrics={"srpo_bonus": bonus.mean()})

    def learn(self, rows, n_source: int, value: Callable[[torch.Tensor], torch.Tensor]) -> dict:
        """One Adam step of the discriminator on this step's rows, labelled by ``V`` (:func:`value_labels`).

        Args:
            rows (CrossDomainRows): the batch, ``n_source`` source rows first.
            n_source (int): number of source rows.
            value (Callable): ``V`` on features, no gradient.

        Returns:
            dict: ``srpo_disc_loss`` and ``srpo_disc_accuracy`` (detached).
        """
        first = int(n_source) if self.label_rows == "target" else 0
        observation = rows.observation[first:]
        with torch.no_grad():
            labels = value_labels(value(rows.feature_s[first:]).reshape(-1), self.real_fraction)
        with torch.enable_grad():
            logits = self.output(observation.detach())
            labels = labels.to(logits.dtype)
            loss = discriminator_loss(logits, labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            accuracy = ((logits > 0).to(labels.dtype) == labels).to(labels.dtype).mean()
        return {"srpo_disc_loss": loss.detach(), "srpo_disc_accuracy": accuracy}

    # ------------------------------------------------------------------ checkpoints
    def get_extra_state(self) -> dict:
        """The discriminator's Adam state (saved with the loss module's ``state_dict``)."""
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict) -> None:
        """Restores the discriminator's Adam state (a copy: like parameters, never shared with the source)."""
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))

    def extra_repr(self) -> str:
        return (f"eta={self.eta}, clip=({self.clip_min}, {self.clip_max}), real_fraction={self.real_fraction}, "
                f"lr={self.lr}, label_rows={self.label_rows!r}, bonus_input={self.bonus_input!r}")
