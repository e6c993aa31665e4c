"""IGDF as a cross-domain method: contrastive dynamics scores filter and weight source rows
(Wen et al., "Contrastive Representation for Data Filtering in Cross-Domain Offline
Reinforcement Learning", ICML 2024, arXiv 2405.06192; authors' code BattleWen/IGDF).

Two encoders, ``phi(s, a)`` and ``psi(s')``, are pre-trained before RL
(:meth:`IGDF.prepare`) with a contrastive objective whose positives are the target
transitions' own next states and whose negatives are source next states. Their
cosine ``h(s, a, s')`` scores every source transition; each batch keeps its top
``xi`` fraction of source rows and weights them by ``exp(alpha h)`` in the critic
(and, as in the authors' IQL, lets them into the value and actor losses).

The reusable pieces (:class:`ContrastiveEncoders`, :func:`cosine_score`,
:func:`contrastive_logits`, :func:`contrastive_loss`, :func:`pretrain_contrastive`,
:func:`top_fraction_mask`, :func:`clipped_exp_weight`, :func:`source_mean_scale`)
are imported by :mod:`tabb_torchrl.methods.v2a`.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tabb_torchrl.keys import DOMAIN_KEY, SOURCE
from tabb_torchrl.methods.base import CrossDomainMethod, SourceEdit, SourceRows

__all__ = [
    "IGDF",
    "IGDF_XI",
    "ContrastiveEncoders",
    "cosine_score",
    "contrastive_logits",
    "contrastive_loss",
    "pretrain_contrastive",
    "kept_count",
    "top_fraction_mask",
    "clipped_exp_weight",
    "source_mean_scale",
    "xi_for_env",
    "make_mlp",
]

#: Data selection ratio ``xi`` per task family. HalfCheetah, Hopper: 0.25 and Walker2d: 0.75
#: (authors' README, "Notice"); Ant: 0.5, the default of ``TrainConfig.xi`` in the authors'
#: ``algorithms/igdf/igdf.py`` (the repository has no Ant setting).
IGDF_XI: dict[str, float] = {"halfcheetah": 0.25, "hopper": 0.25, "walker2d": 0.75, "ant": 0.5}

#: ``xi`` for an unknown task family: ``TrainConfig.xi`` of the authors' ``igdf.py``.
DEFAULT_XI: float = 0.5

#: Name of the cached per-row score column.
SCORE_COLUMN: str = "igdf_score"

SOURCE_MEANS = ("batch", "kept")


def xi_for_env(env_id: str | None, default: float = DEFAULT_XI) -> float:
    """The data selection ratio ``xi`` of :data:`IGDF_XI` for an environment id.

    Examples:
        >>> xi_for_env("tabb/Hopper-morph-v0"), xi_for_env("tabb/Walker2d-friction-v0"), xi_for_env("Ant-v5")
        (0.25, 0.75, 0.5)
        >>> xi_for_env(None), xi_for_env("Humanoid-v5")
        (0.5, 0.5)
    """
    if env_id:
        for part in re.split(r"[/\-_:]", str(env_id).lower()):
            if part in IGDF_XI:
                return IGDF_XI[part]
    return float(default)


def make_mlp(in_dim: int, out_dim: int, hidden_sizes: Sequence[int]) -> nn.Sequential:
    """A ReLU MLP ``in_dim -> hidden_sizes -> out_dim`` (linear output).

    Examples:
        >>> make_mlp(3, 2, (4, 4))(torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """
    layers: list[nn.Module] = []
    last = int(in_dim)
    for h in hidden_sizes:
        layers += [nn.Linear(last, int(h)), nn.ReLU()]
        last = int(h)
    layers.append(nn.Linear(last, int(out_dim)))
    return nn.Sequential(*layers)


def cosine_score(phi: torch.Tensor, psi: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""IGDF's score ``h = phi^T psi / (||phi|| ||psi||)`` per row (authors' ``igdf.py``, ``repr_norm=False``).

    Args:
        phi (torch.Tensor): ``[N, d]`` representations ``phi(s, a)``.
        psi (torch.Tensor): ``[N, d]`` representations ``psi(s')``.
        eps (float): lower bound of the norm product.

    Returns:
        torch.Tensor: ``[N]`` scores in ``[-1, 1]``.

    Examples:
        >>> cosine_score(torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[4.0, 3.0], [-2.0, 0.0]]))
        tensor([ 0.9600, -1.0000])
    """
    return (phi * psi).sum(-1) / (phi.norm(dim=-1) * psi.norm(dim=-1)).clamp_min(eps)


def contrastive_logits(phi: torch.Tensor, psi_pos: torch.Tensor, psi_neg: torch.Tensor) -> torch.Tensor:
    """Logits of IGDF's contrastive objective: column 0 the positive, then the shared negatives.

    ``logits[i, 0] = phi_i^T psi(s'_i)`` (the target row's own next state) and
    ``logits[i, 1 + j] = phi_i^T psi(s'^-_j)`` (source next states, the same ``M`` for every row),
    as the authors' ``info(tar_s, tar_a, concat(tar_ss, src_ss))``.

    Args:
        phi (torch.Tensor): ``[B, d]``.
        psi_pos (torch.Tensor): ``[B, d]``.
        psi_neg (torch.Tensor): ``[M, d]``.

    Returns:
        torch.Tensor: ``[B, 1 + M]``.

    Examples:
        >>> contrastive_logits(torch.eye(2), torch.eye(2), torch.tensor([[1.0, 1.0]]))
        tensor([[1., 1.],
                [1., 1.]])
    """
    return torch.cat([(phi * psi_pos).sum(-1, keepdim=True), phi @ psi_neg.T], dim=1)


def contrastive_loss(logits: torch.Tensor) -> torch.Tensor:
    r"""Binary cross-entropy of IGDF's contrastive objective (authors' ``igdf.py``).

    With label ``1`` on column 0 and ``0`` elsewhere, averaged over every entry::

        L = -1/(B (1+M)) sum_i [ log sigma(l_i0) + sum_{j>=1} log(1 - sigma(l_ij)) ]

    Examples:
        >>> contrastive_loss(torch.zeros(2, 3))   # log 2
        tensor(0.6931)
    """
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, labels)


def kept_count(n: int, fraction: float) -> int:
    """Rows kept out of ``n``: ``floor(n xi)``, at least 1 (the authors' ``int(batch_size * xi)``).

    Examples:
        >>> kept_count(128, 0.25), kept_count(128, 0.75), kept_count(3, 0.1)
        (32, 96, 1)
    """
    return max(1, min(int(n), int(math.floor(int(n) * float(fraction) + 1e-9))))


def top_fraction_mask(score: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask of the :func:`kept_count` highest scores of a batch (ties: any of them).

    Examples:
        >>> top_fraction_mask(torch.tensor([0.1, 0.9, -0.3, 0.5]), 0.5)
        tensor([False,  True, False,  True])
    """
    score = score.reshape(-1)
    k = kept_count(score.shape[0], fraction)
    idx = torch.topk(score, k, sorted=False).indices
    return torch.zeros(score.shape, dtype=torch.bool, device=score.device).index_fill_(0, idx, True)


def clipped_exp_weight(score: torch.Tensor, alpha: float = 1.0, max_weight: float = 100.0) -> torch.Tensor:
    """``min(exp(alpha score), max_weight)``: the weight of a kept source row.

    Examples:
        >>> clipped_exp_weight(torch.tensor([0.0, 1.0, 5.0]))
        tensor([  1.0000,   2.7183, 100.0000])
    """
    return torch.exp(float(alpha) * score).clamp_max(float(max_weight))


def source_mean_scale(n_source: int, fraction: float, source_mean: str) -> float:
    """Factor on the kept rows' weights so that the core's mean over kept rows becomes a mean over the batch.

    The core (:func:`~tabb_torchrl.objectives.functional.split_mean`) averages the source
    term over the kept rows, ``(1/k) sum_kept w l``. ``source_mean="batch"`` scales the
    weights by ``k / n_s``, giving ``(1/n_s) sum_kept w l``: the expectation over the source
    batch of ``1[kept] w l`` (the paper's filtered TD loss; the authors' code, one mean over the
    ``n_t + k`` rows, is the same up to a constant factor when ``n_s = n_t``). ``"kept"``: ``1``.

    Examples:
        >>> source_mean_scale(128, 0.25, "batch"), source_mean_scale(128, 0.25, "kept")
        (0.25, 1.0)
    """
    if source_mean == "kept":
        return 1.0
    return kept_count(n_source, fraction) / int(n_source)


def _check_source_mean(source_mean: str, who: str) -> str:
    if source_mean not in SOURCE_MEANS:
        raise ValueError(f"{who}: source_mean must be one of {SOURCE_MEANS}, got {source_mean!r}.")
    return source_mean


class ContrastiveEncoders(nn.Module):
    r"""IGDF's two encoders ``phi(s, a)`` and ``psi(s')`` (authors' ``ContrastiveInfo``, one member).

    Both are ReLU MLPs (``hidden_sizes``, linear output of ``repr_dim``) on states
    standardised by the buffers ``obs_mean`` / ``obs_std`` (identity until
    :meth:`set_state_stats`). :meth:`score` is :func:`cosine_score`.

    Args:
        obs_dim (int): state dimension.
        action_dim (int): action dimension.
        repr_dim (int): representation size. Defaults to ``64`` (authors' ``repr_dim``).
        hidden_sizes (sequence of int): hidden layers. Defaults to ``(256, 256)``.

    Examples:
        >>> enc = ContrastiveEncoders(3, 2, repr_dim=4, hidden_sizes=(8,))
        >>> enc.score(torch.zeros(5, 3), torch.zeros(5, 2), torch.ones(5, 3)).shape
        torch.Size([5])
    """

    def __init__(self, obs_dim: int, action_dim: int, repr_dim: int = 64, hidden_sizes: Sequence[int] = (256, 256)):
        super().__init__()
        self.obs_dim, self.action_dim, self.repr_dim = int(obs_dim), int(action_dim), int(repr_dim)
        self.phi = make_mlp(self.obs_dim + self.action_dim, self.repr_dim, hidden_sizes)
        self.psi = make_mlp(self.obs_dim, self.repr_dim, hidden_sizes)
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))

    @torch.no_grad()
    def set_state_stats(self, observations: torch.Tensor, eps: float = 1e-3) -> None:
        """Standardise states by the mean and ``std + eps`` of ``observations`` (authors' ``compute_mean_std``)."""
        obs = observations.to(self.obs_mean.device, self.obs_mean.dtype)
        self.obs_mean.copy_(obs.mean(0))
        self.obs_std.copy_(obs.std(0, unbiased=False) + eps)

    def _norm(self, s: torch.Tensor) -> torch.Tensor:
        return (s.to(self.obs_mean.dtype) - self.obs_mean) / self.obs_std

    def encode_sa(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``phi(s, a)``: ``[N, repr_dim]``."""
        return self.phi(torch.cat([self._norm(s), a.to(self.obs_mean.dtype)], -1))

    def encode_next(self, s_next: torch.Tensor) -> torch.Tensor:
        """``psi(s')``: ``[N, repr_dim]``."""
        return self.psi(self._norm(s_next))

    def score(self, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
        """``h(s, a, s')`` (:func:`cosine_score`): ``[N]``."""
        return cosine_score(self.encode_sa(s, a), self.encode_next(s_next))

    def loss(self, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor, s_next_neg: torch.Tensor) -> torch.Tensor:
        """:func:`contrastive_loss` of target rows ``(s, a, s')`` against negatives ``s_next_neg``."""
        phi = self.encode_sa(s, a)
        return contrastive_loss(contrastive_logits(phi, self.encode_next(s_next), self.encode_next(s_next_neg)))

    @torch.no_grad()
    def score_rows(self, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """:meth:`score` of many rows, in chunks, without gradient (on the encoders' device)."""
        dev = self.obs_mean.device
        out = [self.score(s[i:i + chunk].to(dev), a[i:i + chunk].to(dev), s_next[i:i + chunk].to(dev))
               for i in range(0, s.shape[0], chunk)]
        return torch.cat(out) if out else torch.zeros(0, device=dev)


def pretrain_contrastive(
    encoders: ContrastiveEncoders,
    target: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    source_next: torch.Tensor,
    *,
    steps: int = 7000,
    batch_size: int = 128,
    lr: float = 3e-4,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Pre-trains IGDF's encoders (authors' ``igdf.py``: ``num_update`` steps of Adam).

    Each step draws ``batch_size`` target transitions (the positives: their own next
    states) and ``batch_size - 1`` source next states (the negatives, shared by the
    rows), uniformly with replacement, and takes one Adam step on :func:`contrastive_loss`.

    Args:
        encoders (ContrastiveEncoders): trained in place.
        target (tuple): target ``(s, a, s')`` tensors ``[N_t, ...]``.
        source_next (torch.Tensor): source next states ``[N_s, obs_dim]``.

    Keyword Args:
        steps (int): updates. Defaults to ``7000`` (``num_update``).
        batch_size (int): target rows per update. Defaults to ``128`` (``info_batch_size``).
        lr (float): Adam learning rate. Defaults to ``3e-4`` (``info_lr``).
        generator (torch.Generator, optional): the draws' generator (CPU).
        progress (bool): show a progress bar.

    Returns:
        torch.Tensor: ``[steps]`` the loss of every update (detached).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> s, a = torch.randn(64, 2, generator=g), torch.randn(64, 1, generator=g)
        >>> enc = ContrastiveEncoders(2, 1, repr_dim=4, hidden_sizes=(16,))
        >>> losses = pretrain_contrastive(enc, (s, a, s + a), torch.randn(64, 2, generator=g) + 3.0,
        ...                               steps=100, batch_size=16, lr=1e-2, generator=g)
        >>> bool(losses[-10:].mean() < losses[:10].mean())
        True
    """
    from tqdm.auto import tqdm

    dev = encoders.obs_mean.device
    s_t, a_t, sn_t = (x.to(dev) for x in target)
    sn_s = source_next.to(dev)
    n_t, n_s = s_t.shape[0], sn_s.shape[0]
    if n_t == 0 or n_s == 0:
        raise ValueError("pretrain_contrastive: the target and the source data must both hold transitions.")
    opt = torch.optim.Adam(encoders.parameters(), lr=float(lr))
    losses = torch.zeros(int(steps))
    for step in tqdm(range(int(steps)), desc="IGDF contrastive pre-training", disable=not progress):
        i_t = torch.randint(n_t, (int(batch_size),), generator=generator).to(dev)
        i_s = torch.randint(n_s, (int(batch_size) - 1,), generator=generator).to(dev)
        loss = encoders.loss(s_t[i_t], a_t[i_t], sn_t[i_t], sn_s[i_s])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = loss.detach()
    return losses


def _source_rows(data) -> torch.Tensor | None:
    """Indices of the source rows of ``data`` (``None``: every row, no domain column)."""
    domain = data.get(DOMAIN_KEY, None)
    if domain is None:
        return None
    return torch.nonzero(domain.reshape(-1) == SOURCE).reshape(-1)


class IGDF(CrossDomainMethod):
    r"""IGDF's contrastive data filtering of source rows (Wen et al., ICML 2024, arXiv 2405.06192).

    Pre-training (:meth:`prepare`, ``pretrain_steps`` updates, :func:`pretrain_contrastive`):
    encoders ``phi(s, a)`` and ``psi(s')`` with the binary contrastive objective of the authors'
    code, target transitions ``(s, a, s')`` as positives and source next states as negatives::

        L = -E[ log sigma(phi(s,a)^T psi(s')) + sum_j log(1 - sigma(phi(s,a)^T psi(s'_j^src))) ] / B

    Score (authors' ``igdf.py``), cached per stored row by :meth:`add_columns`::

        h(s, a, s') = phi(s,a)^T psi(s') / (||phi(s,a)|| ||psi(s')||)

    Per batch (:meth:`edit_source`): keep the top ``floor(xi n_s)`` source rows by ``h``, with
    weight ``w = min(exp(alpha h), max_weight)`` in the critic; with ``source_mean="batch"``
    the critic's source term is ``(1/n_s) sum_kept w l`` (the expectation over the source batch
    of ``1[h >= h_xi] w l``; see :func:`source_mean_scale`). As in the authors' IQL, the kept
    rows also enter the value and actor losses (``source_in_value``, ``source_in_actor``; the
    core applies the same weights there, where the authors' code uses weight 1).

    Args:
        obs_dim (int): state dimension (passed by the recipe).
        action_dim (int): action dimension (passed by the recipe).

    Keyword Args:
        env_id (str, optional): picks ``xi`` from :data:`IGDF_XI` (passed by the recipe).
        xi (float, optional): data selection ratio in ``(0, 1]``; overrides ``env_id``.
        alpha (float): importance coefficient in ``exp(alpha h)``. Defaults to ``1.0`` (authors' README).
        max_weight (float): clip of the weight. Defaults to ``100.0``.
        repr_dim (int): representation size. Defaults to ``64`` (authors' ``repr_dim``).
        hidden_sizes (sequence of int): encoder hidden layers. Defaults to ``(256, 256)``.
        pretrain_steps (int): contrastive updates in :meth:`prepare`. Defaults to ``7000`` (``num_update``).
        batch_size (int): target rows per contrastive update. Defaults to ``128`` (``info_batch_size``).
        lr (float): contrastive Adam learning rate. Defaults to ``3e-4`` (``info_lr``).
        normalize_states (bool): standardise the encoders' states by the mean / std of source and
            target states (authors' ``normalize=True``). Defaults to ``True``.
        state_eps (float): added to the std. Defaults to ``1e-3`` (authors' ``compute_mean_std``).
        source_mean (str): ``"batch"`` (default **[reconstructed]**, see :func:`source_mean_scale`) or ``"kept"``.
        source_in_value (bool): kept source rows in the value loss. Defaults to ``True`` (authors' IQL).
        source_in_actor (bool): kept source rows in the actor loss. Defaults to ``True`` (authors' IQL).
        squared_critic (bool): the critic's per-row loss is the squared error ``0.5 (Q - y)^2`` on every
            row, as the authors' ``igdf.py``; ``False``: the recipe's Huber loss (``loss.huber_delta``, TABB's
            reconstructed Eq. 8). Defaults to ``True``.
        seed (int, optional): seed of the pre-training draws (``None``: drawn from torch's global
            generator at construction, so it follows the run's seed) **[reconstructed]**.

    Examples:
        Scores are cached in the ``"igdf_score"`` column; a batch keeps its top half here:

        >>> import torch
        >>> from tabb_torchrl.methods import IGDF, SourceRows
        >>> m = IGDF(3, 2, xi=0.5, repr_dim=4, hidden_sizes=(8,))
        >>> rows = SourceRows(torch.zeros(4), torch.zeros(4), torch.zeros(4), torch.zeros(4, 3),
        ...                   {"igdf_score": torch.tensor([0.9, -0.2, 0.5, 0.1])},
        ...                   value=lambda z: z.sum(-1), gamma=0.99)
        >>> edit = m.edit_source(rows)
        >>> edit.keep
        tensor([ True, False,  True, False])
        >>> edit.weight   # exp(h) * k / n_s
        tensor([1.2298, 0.4094, 0.8244, 0.5526])
    """

    name = "igdf"
    columns = (SCORE_COLUMN,)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        env_id: str | None = None,
        xi: float | None = None,
        alpha: float = 1.0,
        max_weight: float = 100.0,
        repr_dim: int = 64,
        hidden_sizes: Sequence[int] = (256, 256),
        pretrain_steps: int = 7000,
        batch_size: int = 128,
        lr: float = 3e-4,
        normalize_states: bool = True,
        state_eps: float = 1e-3,
        source_mean: str = "batch",
        source_in_value: bool = True,
        source_in_actor: bool = True,
        squared_critic: bool = True,
        seed: int | None = None,
    ):
        super().__init__()
        xi = xi_for_env(env_id) if xi is None else float(xi)
        if not 0 < xi <= 1:
            raise ValueError(f"IGDF: xi (the kept fraction of source rows) must be in (0, 1], got {xi}.")
        if not max_weight > 0:
            raise ValueError(f"IGDF: max_weight must be > 0, got {max_weight}.")
        if int(pretrain_steps) < 0 or int(batch_size) < 2:
            raise ValueError(f"IGDF: pretrain_steps must be >= 0 and batch_size >= 2, got {pretrain_steps}, "
                             f"{batch_size}.")
        self.xi = xi
        self.alpha = float(alpha)
        self.max_weight = float(max_weight)
        self.pretrain_steps = int(pretrain_steps)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.normalize_states = bool(normalize_states)
        self.state_eps = float(state_eps)
        self.source_mean = _check_source_mean(source_mean, "IGDF")
        self.source_in_value = bool(source_in_value)
        self.source_in_actor = bool(source_in_actor)
        self.critic_deltas = (None, None) if squared_critic else None
        self.seed = int(torch.randint(2**62, ()).item()) if seed is None else int(seed)
        self.encoders = ContrastiveEncoders(obs_dim, action_dim, repr_dim, tuple(hidden_sizes))
        self.pretrain_losses: torch.Tensor | None = None  # set by prepare() (not checkpointed)

    # ------------------------------------------------------------------ before RL
    def prepare(self, source, target, *, device: torch.device | None = None, progress: bool = False) -> None:
        """Contrastive pre-training of ``phi``, ``psi`` (:func:`pretrain_contrastive`); sets
        :attr:`pretrain_losses` (the loss of every update)."""
        if source is None or source.shape[0] == 0:
            raise ValueError("IGDF: prepare() needs source transitions. "
                             "Fix: algo.use_source=true and a source dataset.")
        if device is not None:
            self.to(device)
        if self.normalize_states:
            self.encoders.set_state_stats(torch.cat([source["observation"], target["observation"]]), self.state_eps)
        g = torch.Generator().manual_seed(self.seed)
        self.pretrain_losses = pretrain_contrastive(
            self.encoders, (target["observation"], target["action"], target["next", "observation"]),
            source["next", "observation"], steps=self.pretrain_steps, batch_size=self.batch_size, lr=self.lr,
            generator=g, progress=progress)

    def add_columns(self, data) -> None:
        """Writes ``h(s, a, s')`` of every row as the ``"igdf_score"`` column (the encoders are frozen)."""
        obs = data["observation"]
        h = self.encoders.score_rows(obs, data["action"], data["next", "observation"])
        data.set(SCORE_COLUMN, h.to(obs.device))

    # ------------------------------------------------------------------ per batch
    def edit_source(self, rows: SourceRows) -> SourceEdit:
        """Top-``xi`` filter and ``exp(alpha h)`` weights of the source rows."""
        h = _column(rows, SCORE_COLUMN, "IGDF")
        keep = top_fraction_mask(h, self.xi)
        weight = clipped_exp_weight(h, self.alpha, self.max_weight) * source_mean_scale(h.shape[0], self.xi,
                                                                                        self.source_mean)
        kept = keep.to(h.dtype)
        return SourceEdit(weight=weight, keep=keep, metrics={
            "igdf_score": h.mean(), "igdf_kept_score": (h * kept).sum() / kept.sum(), "kept": kept.mean()})

    def extra_repr(self) -> str:
        return (f"xi={self.xi}, alpha={self.alpha}, max_weight={self.max_weight}, source_mean={self.source_mean!r}, "
                f"source_in_value={self.source_in_value}, source_in_actor={self.source_in_actor}")


def _column(rows: SourceRows, name: str, who: str) -> torch.Tensor:
    value = rows.columns.get(name)
    if value is None:
        raise KeyError(f"{who}: the batch has no {name!r} column. Fix: build the replay buffer with "
                       f"columns=method.add_columns (the recipe does), after method.prepare().")
    return value.reshape(-1)
