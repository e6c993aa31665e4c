"""DARA as a cross-domain method: dynamics-aware reward augmentation of the source rows
(Liu, Zhang & Wang, ICLR 2022, arXiv 2203.06662).

Two domain classifiers, on ``(s, a)`` and on ``(s, a, s')``, estimate how much more
likely a source transition is under the target dynamics than under the source
dynamics; the source rewards are corrected by that log-ratio and IQL runs on the
union of the corrected source data and the target data (``pooled``).

The classifiers are trained once, before RL (:meth:`DARA.prepare`, the paper's
Algorithm 1: learn the classifiers, relabel the source rewards, then run an offline
RL algorithm on ``D ∪ D'``); the log-ratio of every stored row is cached with the
data (:meth:`DARA.add_columns`) and read by :meth:`DARA.edit_source`. See
``docs/methods/dara.md`` for the defaults and their sources.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchrl.modules import MLP

from tabb_torchrl.methods.base import CrossDomainMethod, SourceEdit, SourceRows

__all__ = ["DARA", "LOG_RATIO_COLUMN", "domain_log_ratio", "classifier_loss", "dara_reward"]

_LOG = logging.getLogger(__name__)

#: Per-row column holding the (unclipped) log-ratio ``Δ(s, a, s')`` of every stored row.
LOG_RATIO_COLUMN = "dara_log_ratio"

#: Class index of each domain in the classifiers' two logits.
SOURCE_CLASS, TARGET_CLASS = 0, 1


def domain_log_ratio(sas_logits: torch.Tensor, sa_logits: torch.Tensor) -> torch.Tensor:
    r"""The dynamics log-ratio of DARA (its Eq. for :math:`\Delta r`, sign as a bonus) from the classifiers' logits.

    .. math::

        \Delta(s, a, s') = \log\frac{q_{sas}(\text{target}\mid s, a, s')}{q_{sas}(\text{source}\mid s, a, s')}
                         - \log\frac{q_{sa}(\text{target}\mid s, a)}{q_{sa}(\text{source}\mid s, a)}
                         \approx \log\frac{p_{\text{target}}(s'\mid s, a)}{p_{\text{source}}(s'\mid s, a)}

    The logits are **unnormalised** scores (class 0 = source, class 1 = target); the
    log-probabilities are their ``log_softmax`` (one normalisation, never two).

    Args:
        sas_logits (torch.Tensor): ``[..., 2]`` logits of the ``(s, a, s')`` classifier.
        sa_logits (torch.Tensor): ``[..., 2]`` logits of the ``(s, a)`` classifier.

    Returns:
        torch.Tensor: ``[...]`` the log-ratio (unclipped).

    Examples:
        >>> import torch
        >>> domain_log_ratio(torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.5]]))  # (2 - 0) - (0.5 - 1)
        tensor([2.5000])
    """
    log_sas = F.log_softmax(sas_logits, dim=-1)
    log_sa = F.log_softmax(sa_logits, dim=-1)
    sas_term = log_sas[..., TARGET_CLASS] - log_sas[..., SOURCE_CLASS]
    sa_term = log_sa[..., TARGET_CLASS] - log_sa[..., SOURCE_CLASS]
    return sas_term - sa_term


def classifier_loss(sas_logits: torch.Tensor, sa_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    r"""Cross-entropy of both domain classifiers, on their logits: :math:`\mathrm{CE}(q_{sas}) + \mathrm{CE}(q_{sa})`.

    ``label`` is ``0`` for source rows and ``1`` for target rows. The logits go to
    :func:`torch.nn.functional.cross_entropy` as they are: a softmax applied first (as
    in a public reimplementation) would normalise twice and bound the loss below by
    :math:`\log(1 + e^{-1}) \approx 0.313`.

    Args:
        sas_logits (torch.Tensor): ``[n, 2]`` logits of the ``(s, a, s')`` classifier.
        sa_logits (torch.Tensor): ``[n, 2]`` logits of the ``(s, a)`` classifier.
        label (torch.Tensor): ``[n]`` integer domain labels.

    Returns:
        torch.Tensor: the scalar loss (sum of the two mean cross-entropies).

    Examples:
        >>> import torch
        >>> logits = torch.tensor([[0.0, 0.0]])
        >>> classifier_loss(logits, logits, torch.tensor([1]))   # 2 log 2
        tensor(1.3863)
    """
    return F.cross_entropy(sas_logits, label) + F.cross_entropy(sa_logits, label)


def dara_reward(reward: torch.Tensor, log_ratio: torch.Tensor, eta: float, clip: float) -> torch.Tensor:
    r"""DARA's augmented source reward :math:`\tilde r = r + \eta\,\mathrm{clip}(\Delta, -c, c)`.

    (The paper writes :math:`r - \eta\,\Delta r` with :math:`\Delta r = -\Delta`, the log-ratio
    of source over target dynamics.)

    Examples:
        >>> import torch
        >>> dara_reward(torch.tensor([1.0, 1.0]), torch.tensor([2.0, -50.0]), eta=0.1, clip=10.0)
        tensor([1.2000, 0.0000])
    """
    return reward + eta * log_ratio.clamp(-clip, clip)


def _classifier(in_features: int, hidden_sizes: Sequence[int]) -> nn.Module:
    return MLP(in_features=in_features, out_features=2, num_cells=[int(h) for h in hidden_sizes],
               activation_class=nn.ReLU)


class DARA(CrossDomainMethod):
    r"""Dynamics-Aware Reward Augmentation on source rows (Liu, Zhang & Wang, ICLR 2022, arXiv 2203.06662).

    Two classifiers :math:`q_{sa}(\cdot\mid s, a)` and :math:`q_{sas}(\cdot\mid s, a, s')` (two-logit
    MLPs, class 0 = source, 1 = target) are trained by cross-entropy on source vs target
    transitions, with Gaussian noise of std ``noise_std`` added to their inputs (as in DARC,
    Eysenbach et al. 2021). Each source row's reward becomes::

        Δ(s, a, s') = [log q_sas(tgt|s,a,s') - log q_sas(src|s,a,s')] - [log q_sa(tgt|s,a) - log q_sa(src|s,a)]
        r_tilde     = r + eta * clip(Δ, -clip, clip)

    and its Bellman target ``r_tilde + gamma (1 - d) V(s')``; target rows are unchanged.
    Every loss is one mean over all rows (IQL on the union of the corrected source data
    and the target data, ``pooled``), as in the paper's Algorithm 1 and ODRL's DARA.

    **When the classifiers train.** Once, before RL, in :meth:`prepare` (the paper's
    Algorithm 1: learn the classifiers, relabel the source rewards, then learn a policy
    with an offline RL algorithm on the union). :meth:`add_columns` caches ``Δ`` of every
    stored row (no noise; a deterministic function of the trained classifiers, so a
    resumed run recomputes the same column), and :meth:`edit_source` reads it. ODRL's
    reimplementation instead takes one classifier step per RL step; that variant is not
    offered here.

    Args:
        obs_dim (int): observation size (passed by the recipe).
        action_dim (int): action size (passed by the recipe).
        eta (float): ``eta >= 0``, the weight of the log-ratio. Defaults to ``0.1`` (ODRL's config).
        clip (float): ``c > 0``, the log-ratio is clipped to ``[-c, c]``. Defaults to ``10.0``
            (the paper, as cited by ODRL's code).

    Keyword Args:
        hidden_sizes (sequence of int): hidden layers of each classifier. Defaults to ``(256, 256)``
            (ODRL's ``MLPNetwork``).
        noise_std (float): std of the Gaussian noise on the classifiers' inputs during training.
            Defaults to ``1.0`` (ODRL's ``gaussian_noise_std``, DARC's ``noise_scale``).
        classifier_steps (int): Adam steps of the classifiers in :meth:`prepare`. Defaults to
            ``10_000`` **[reconstructed]**.
        classifier_lr (float): their learning rate. Defaults to ``3e-4`` (ODRL's code).
        classifier_batch_size (int): source rows and target rows per classifier step (each).
            Defaults to ``128`` (ODRL's code).
        seed (int): seed of the classifiers' batches and input noise in :meth:`prepare`
            (their own generators; the global RNG is not touched). Defaults to ``0``
            **[reconstructed]**.
        observation_key (str): observation entry of the data. Defaults to ``"observation"``.
        action_key (str): action entry of the data. Defaults to ``"action"``.
        squared_critic (bool): the critic's per-row loss is the squared error ``0.5 (Q - y)^2`` on every
            row, as ODRL's IQL-based DARA; ``False``: the recipe's Huber loss (``loss.huber_delta``, TABB's
            reconstructed Eq. 8). Defaults to ``True``.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.methods import DARA, SourceRows
        >>> m = DARA(obs_dim=3, action_dim=2, eta=0.1, clip=10.0)
        >>> rows = SourceRows(reward=torch.tensor([1.0, 1.0, 1.0]), terminated=torch.zeros(3),
        ...     next_value=torch.zeros(3), next_feature=torch.zeros(3, 3),
        ...     columns={"dara_log_ratio": torch.tensor([2.0, -3.0, 40.0])}, value=lambda z: z.sum(-1), gamma=0.99)
        >>> edit = m.edit_source(rows)
        >>> edit.reward                # 1 + 0.1 * clip(Δ, -10, 10)
        tensor([1.2000, 0.7000, 2.0000])
        >>> edit.metrics["dara_clipped"]
        tensor(0.3333)
        >>> m.pooled, m.columns
        (True, ('dara_log_ratio',))
    """

    name = "dara"
    columns = (LOG_RATIO_COLUMN,)
    pooled = True
    source_in_value = True
    source_in_actor = True

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        eta: float = 0.1,
        clip: float = 10.0,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        noise_std: float = 1.0,
        classifier_steps: int = 10_000,
        classifier_lr: float = 3e-4,
        classifier_batch_size: int = 128,
        seed: int = 0,
        observation_key: str = "observation",
        action_key: str = "action",
        squared_critic: bool = True,
    ):
        super().__init__()
        if not eta >= 0:
            raise ValueError(f"DARA: eta must be >= 0, got {eta}.")
        if not clip > 0:
            raise ValueError(f"DARA: clip must be > 0, got {clip}.")
        if not noise_std >= 0:
            raise ValueError(f"DARA: noise_std must be >= 0, got {noise_std}.")
        if int(classifier_steps) < 0 or int(classifier_batch_size) < 1:
            raise ValueError(f"DARA: classifier_steps must be >= 0 and classifier_batch_size >= 1, got "
                             f"{classifier_steps} and {classifier_batch_size}.")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.eta, self.clip = float(eta), float(clip)
        self.critic_deltas = (None, None) if squared_critic else None
        self.noise_std = float(noise_std)
        self.classifier_steps = int(classifier_steps)
        self.classifier_lr = float(classifier_lr)
        self.classifier_batch_size = int(classifier_batch_size)
        self.seed = int(seed)
        self.observation_key, self.action_key = observation_key, action_key
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.sa_classifier = _classifier(self.obs_dim + self.action_dim, self.hidden_sizes)
        self.sas_classifier = _classifier(2 * self.obs_dim + self.action_dim, self.hidden_sizes)

    # ------------------------------------------------------------------ classifiers
    def logits(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        next_observation: torch.Tensor,
        *,
        noise_std: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sas_logits, sa_logits)``, each ``[n, 2]``; ``noise_std > 0`` adds independent Gaussian
        noise to the two inputs (training only)."""
        dtype = next(self.sas_classifier.parameters()).dtype
        s = observation.reshape(observation.shape[0], -1).to(dtype)
        a = action.reshape(action.shape[0], -1).to(dtype)
        s_next = next_observation.reshape(next_observation.shape[0], -1).to(dtype)
        sa = torch.cat([s, a], -1)
        sas = torch.cat([s, a, s_next], -1)
        if noise_std > 0:
            sa = sa + noise_std * torch.randn(sa.shape, generator=generator, device=sa.device, dtype=sa.dtype)
            sas = sas + noise_std * torch.randn(sas.shape, generator=generator, device=sas.device, dtype=sas.dtype)
        return self.sas_classifier(sas), self.sa_classifier(sa)

    def log_ratio(self, observation: torch.Tensor, action: torch.Tensor,
                  next_observation: torch.Tensor) -> torch.Tensor:
        """``Δ(s, a, s')`` of :func:`domain_log_ratio` with the current classifiers (no noise, no gradient)."""
        with torch.no_grad():
            return domain_log_ratio(*self.logits(observation, action, next_observation))

    def _entries(self, data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return data.get(self.observation_key), data.get(self.action_key), data.get(("next", self.observation_key))

    def prepare(self, source, target, *, device: torch.device | None = None, progress: bool = False) -> None:
        """Train both classifiers on source (label 0) vs target (label 1) transitions, once before RL.

        ``classifier_steps`` Adam steps on ``classifier_batch_size`` source rows and as many target
        rows drawn uniformly with replacement, with input noise of std ``noise_std``; the loss is
        :func:`classifier_loss`. Batches and noise come from the method's own generators (``seed``).
        """
        if device is not None:
            self.to(device)
        dev = next(self.parameters()).device
        src, tgt = self._entries(source), self._entries(target)
        n_src, n_tgt, b = src[0].shape[0], tgt[0].shape[0], self.classifier_batch_size
        if n_src == 0 or n_tgt == 0:
            raise ValueError("DARA.prepare needs source and target transitions (algo.use_source=true).")
        index_gen = torch.Generator().manual_seed(self.seed)
        noise_gen = torch.Generator(device=dev).manual_seed(self.seed + 1)
        label = torch.cat([torch.full((b,), SOURCE_CLASS), torch.full((b,), TARGET_CLASS)]).to(dev)
        optimizer = torch.optim.Adam([*self.sas_classifier.parameters(), *self.sa_classifier.parameters()],
                                     lr=self.classifier_lr)
        from tqdm.auto import tqdm

        loss = None
        for _ in tqdm(range(self.classifier_steps), desc="DARA classifiers", disable=not progress, mininterval=1.0):
            i_src = torch.randint(n_src, (b,), generator=index_gen)
            i_tgt = torch.randint(n_tgt, (b,), generator=index_gen)
            batch = [torch.cat([x_s[i_src.to(x_s.device)].to(dev), x_t[i_tgt.to(x_t.device)].to(dev)])
                     for x_s, x_t in zip(src, tgt)]
            loss = classifier_loss(*self.logits(*batch, noise_std=self.noise_std, generator=noise_gen), label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if loss is not None:
            _LOG.info("DARA: classifiers trained for %d steps (last loss %.4f)", self.classifier_steps,
                      float(loss.detach()))

    def add_columns(self, data) -> None:
        """Write ``Δ(s, a, s')`` (unclipped, ``[N]``) of every row as the ``dara_log_ratio`` column."""
        dev = next(self.parameters()).device
        obs, act, nxt = self._entries(data)
        chunk = 65536
        out = [self.log_ratio(obs[i:i + chunk].to(dev), act[i:i + chunk].to(dev), nxt[i:i + chunk].to(dev))
               for i in range(0, obs.shape[0], chunk)]  # chunks of rows, not a loop over rows
        ratio = torch.cat(out) if out else torch.zeros(0, device=dev)
        data.set(LOG_RATIO_COLUMN, ratio.to(device=obs.device, dtype=torch.float32))

    # ------------------------------------------------------------------ the edit
    def edit_source(self, rows: SourceRows) -> SourceEdit:
        """Source rewards ``r + eta * clip(Δ, -clip, clip)`` from the cached ``dara_log_ratio`` column."""
        if LOG_RATIO_COLUMN not in rows.columns:
            raise KeyError(f"DARA needs the {LOG_RATIO_COLUMN!r} column in the batch; it is written by "
                           "DARA.add_columns (the recipe calls it when it builds the RL buffer).")
        log_ratio = rows.columns[LOG_RATIO_COLUMN].reshape(-1).to(rows.reward.dtype)
        reward = dara_reward(rows.reward, log_ratio, self.eta, self.clip)
        metrics = {"dara_log_ratio": log_ratio.mean(), "dara_clipped": (log_ratio.abs() > self.clip).float().mean()}
        return SourceEdit(reward=reward, metrics=metrics)

    def extra_repr(self) -> str:
        return (f"eta={self.eta}, clip={self.clip}, noise_std={self.noise_std}, "
                f"classifier_steps={self.classifier_steps}, classifier_lr={self.classifier_lr}, "
                f"classifier_batch_size={self.classifier_batch_size}")
