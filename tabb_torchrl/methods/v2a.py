"""V2A as a cross-domain method: dynamics alignment (IGDF's score) plus a modality-aware advantage
filter source rows (Qiao, Lyu, Bai, Wang, Gao & Qiu, "Unifying Value Alignment and Assignment in
Cross-Domain Offline Reinforcement Learning with Heterogeneous Datasets", ICML 2026, arXiv 2605.24862;
authors' code zq2r/V2A, an early snapshot marked "to be organized").

Everything V2A learns is pre-trained in :meth:`V2A.prepare`, before RL, and frozen afterwards, as
in the authors' pipeline of separate scripts (``train_repr.py``, ``relabel_z.py``,
``train_offline_z.py``, then ``train_v2a.py``); nothing is trained during RL (no ``learn``):

1. IGDF's contrastive encoders (reused from :mod:`tabb_torchrl.methods.igdf`);
2. the temporally-consistent modality representation: a GRU trajectory encoder
   ``q_psi(z | tau)`` and an ensemble dynamics decoder ``p_theta(s' - s | s, a, z)``, trained
   by alternating E-steps (encoder) and M-steps (decoder) on the TC-ELBO
   ``E_tau E_z[sum_t log p_theta(s_{t+1} | s_t, a_t, z)] - beta KL(q_psi(z | tau) || N(0, I))``;
3. one ``z`` per source trajectory (the encoder's mean on the whole trajectory), and a
   modality-aware Sparse-QL critic ``Q(s, a, z)``, ``V(s, z)`` on the source data.

Per batch, ``f = lambda h + (1 - lambda) Norm(A(s, a, z))`` ranks the source rows
(``Norm`` the batch's min-max normalisation, ``A = min_j Q_j - V``); the top ``xi`` are kept.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tabb_torchrl.methods.base import CrossDomainMethod, SourceEdit, SourceRows
from tabb_torchrl.methods.igdf import (
    SCORE_COLUMN,
    ContrastiveEncoders,
    _check_source_mean,
    _column,
    _source_rows,
    clipped_exp_weight,
    make_mlp,
    pretrain_contrastive,
    source_mean_scale,
    top_fraction_mask,
)

__all__ = [
    "V2A",
    "TrajectoryEncoder",
    "EnsembleDynamics",
    "min_max_normalise",
    "mixed_score",
    "sparse_ql_value_loss",
    "episode_segments",
    "segment_batch",
]

#: Name of the cached per-row advantage column.
ADVANTAGE_COLUMN: str = "v2a_advantage"

WEIGHT_SCORES = ("igdf", "mixed")


def min_max_normalise(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - min x) / (max x - min x + eps)`` over the batch (authors' ``v2a_igdf.py``).

    Examples:
        >>> min_max_normalise(torch.tensor([1.0, 3.0, 2.0]), eps=0.0)
        tensor([0.0000, 1.0000, 0.5000])
    """
    lo, hi = x.amin(), x.amax()
    return (x - lo) / (hi - lo + eps)


def mixed_score(h: torch.Tensor, advantage: torch.Tensor, tradeoff: float = 0.6, eps: float = 1e-8) -> torch.Tensor:
    """V2A's filtering score ``f = lambda h + (1 - lambda) Norm(A)`` (:func:`min_max_normalise`).

    Examples:
        >>> mixed_score(torch.tensor([1.0, 0.0]), torch.tensor([-2.0, 2.0]), 0.6, eps=0.0)
        tensor([0.6000, 0.4000])
    """
    return float(tradeoff) * h + (1.0 - float(tradeoff)) * min_max_normalise(advantage, eps)


def sparse_ql_value_loss(q: torch.Tensor, v: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""Sparse-QL's value loss (Xu et al., ICLR 2023), as in the authors' ``sql_z.py``::

        u = (Q - V) / (2 alpha) + 1,   L_V = mean( 1[u > 0] u^2 + V / alpha )

    Examples:
        >>> sparse_ql_value_loss(torch.tensor([1.0, -10.0]), torch.tensor([0.0, 0.0]), alpha=1.0)  # (1.5^2 + 0) / 2
        tensor(1.1250)
    """
    u = (q - v) / (2.0 * float(alpha)) + 1.0
    return ((u > 0).to(u.dtype) * u.square() + v / float(alpha)).mean()


def episode_segments(
    done: torch.Tensor, observation: torch.Tensor, next_observation: torch.Tensor, max_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous trajectories of a transition table: ``(starts, lengths)``, covering every row in order.

    A trajectory ends at a ``done`` row, before a row whose state is not the previous row's
    next state, at the last row, and every ``max_len`` rows **[reconstructed]**: the authors'
    ``split_into_trajectories`` cuts D4RL files at ``terminals | timeouts`` and every
    ``max_episode_steps``; the continuity test guards stored rows that are not in episode order.

    Examples:
        >>> s = torch.arange(6.0)[:, None]
        >>> ns = s + 1
        >>> ns[3] = 9.0                                  # row 4 does not continue row 3
        >>> done = torch.tensor([False, True, False, False, False, False])
        >>> starts, lengths = episode_segments(done, s, ns, max_len=1000)
        >>> starts.tolist(), lengths.tolist()
        ([0, 2, 4], [2, 2, 2])
        >>> episode_segments(torch.zeros(5, dtype=torch.bool), torch.arange(5.0)[:, None],
        ...                  torch.arange(1.0, 6.0)[:, None], max_len=2)[1].tolist()
        [2, 2, 1]
    """
    n = done.shape[0]
    end = done.reshape(n).to(torch.bool).clone()
    if n > 1:
        end[:-1] |= (observation[1:] != next_observation[:-1]).reshape(n - 1, -1).any(-1)
    if n:
        end[-1] = True
    last = torch.nonzero(end).reshape(-1)
    starts = torch.cat([last.new_zeros(1), last[:-1] + 1]) if n else last
    lengths = last - starts + 1
    if max_len is not None and n:
        pieces = torch.div(lengths + max_len - 1, max_len, rounding_mode="floor")
        first = torch.cumsum(pieces, 0) - pieces
        k = torch.arange(int(pieces.sum()), device=done.device) - torch.repeat_interleave(first, pieces)
        seg_start = torch.repeat_interleave(starts, pieces) + k * max_len
        seg_end = torch.repeat_interleave(last, pieces)
        starts, lengths = seg_start, torch.clamp(seg_end - seg_start + 1, max=max_len)
    return starts, lengths


def segment_batch(starts: torch.Tensor, lengths: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices ``[B, horizon]`` of segments (padding points at the segment's first row) and their mask.

    Examples:
        >>> idx, mask = segment_batch(torch.tensor([0, 5]), torch.tensor([3, 1]), 3)
        >>> idx.tolist(), mask.tolist()
        ([[0, 1, 2], [5, 5, 5]], [[True, True, True], [True, False, False]])
    """
    t = torch.arange(int(horizon), device=starts.device)
    mask = t[None, :] < lengths[:, None]
    idx = torch.where(mask, starts[:, None] + t[None, :], starts[:, None])
    return idx, mask


class TrajectoryEncoder(nn.Module):
    """``q_psi(z | tau)``: a GRU over ``x_t = [s_t, a_t, s_{t+1} - s_t]``, its last valid output to a
    Gaussian's mean and log-std (authors' ``tc_elbo.py``).

    Examples:
        >>> enc = TrajectoryEncoder(3, 2, z_dim=4, hidden_size=8)
        >>> mean, log_std = enc(torch.zeros(2, 5, 3), torch.zeros(2, 5, 2), torch.ones(2, 5, 3), torch.tensor([5, 2]))
        >>> mean.shape, bool((log_std >= -5).all())
        (torch.Size([2, 4]), True)
    """

    def __init__(self, obs_dim: int, action_dim: int, z_dim: int = 128, hidden_size: int = 256, num_layers: int = 1,
                 log_std_bounds: tuple[float, float] = (-5.0, 2.0)):
        super().__init__()
        self.rnn = nn.GRU(2 * int(obs_dim) + int(action_dim), int(hidden_size), num_layers=int(num_layers),
                          batch_first=True)
        self.mean = nn.Linear(int(hidden_size), int(z_dim))
        self.log_std = nn.Linear(int(hidden_size), int(z_dim))
        self.log_std_bounds = (float(log_std_bounds[0]), float(log_std_bounds[1]))

    def forward(self, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor, lengths: torch.Tensor):
        """``(mean, log_std)`` ``[B, z_dim]`` of padded trajectories ``[B, T, .]`` of ``lengths`` steps."""
        out, _ = self.rnn(torch.cat([s, a.to(s.dtype), s_next - s], -1))
        last = out[torch.arange(out.shape[0], device=out.device), lengths.clamp(min=1) - 1]
        return self.mean(last), self.log_std(last).clamp(*self.log_std_bounds)


class EnsembleDynamics(nn.Module):
    """``p_theta(s' - s | s, a, z)``: an ensemble of ReLU MLPs (authors' ``EnsembleConditionalDynamicsModel``).

    Hidden layers: weights uniform in ``+-1/sqrt(fan_in)``, biases ``0.1``; output layer uniform in
    ``+-3e-3`` (authors' ``ParallelizedEnsembleFlattenMLP``).

    Examples:
        >>> EnsembleDynamics(3, 2, 4, hidden_sizes=(8, 8), ensemble_size=3)(torch.zeros(5, 3), torch.zeros(5, 2),
        ...                                                                 torch.zeros(5, 4)).shape
        torch.Size([3, 5, 3])
    """

    def __init__(self, obs_dim: int, action_dim: int, z_dim: int, hidden_sizes: Sequence[int] = (256, 256),
                 ensemble_size: int = 3):
        super().__init__()
        dims = [int(obs_dim) + int(action_dim) + int(z_dim), *[int(h) for h in hidden_sizes], int(obs_dim)]
        e = int(ensemble_size)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = i == len(dims) - 2
            bound = 3e-3 if last else 1.0 / math.sqrt(d_in)
            self.weights.append(nn.Parameter(torch.empty(e, d_in, d_out).uniform_(-bound, bound)))
            b = torch.empty(e, 1, d_out).uniform_(-bound, bound) if last else torch.full((e, 1, d_out), 0.1)
            self.biases.append(nn.Parameter(b))

    def forward(self, s: torch.Tensor, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Predicted ``s' - s``: ``[E, N, obs_dim]``."""
        x = torch.cat([s, a.to(s.dtype), z], -1).unsqueeze(0).expand(self.weights[0].shape[0], -1, -1)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < len(self.weights) - 1:
                x = torch.relu(x)
        return x


class V2A(CrossDomainMethod):
    r"""V2A on source rows (Qiao et al., ICML 2026, arXiv 2605.24862; authors' code zq2r/V2A).

    Pre-training (:meth:`prepare`, all before RL):

    * IGDF's encoders ``phi``, ``psi`` and score ``h(s, a, s')`` (:class:`~tabb_torchrl.methods.IGDF`);
    * TC-ELBO, alternating per update an E-step (encoder, decoder fixed; ``z ~ q_psi(.|tau)``)
      and an M-step (decoder, encoder fixed; ``z`` its mean) on trajectories cropped to
      ``repr_max_len`` steps::

          L = mean_{t, i, e} || p_theta^e(s_t, a_t, z) - (s_{t+1} - s_t) ||^2 + beta_kl KL(q_psi(z|tau) || N(0, I))

    * ``z(tau)`` = the encoder's mean on each whole source trajectory, given to its rows;
    * modality-aware Sparse-QL on the source rows:
      ``L_V = mean(1[u > 0] u^2 + V(s,z)/alpha_sql)``, ``u = (min_j Q'_j(s,a,z) - V(s,z)) / (2 alpha_sql) + 1``;
      ``L_Q = sum_j mean (Q_j(s,a,z) - r - gamma (1 - d) V(s',z))^2``; ``A(s,a,z) = min_j Q_j - V``.

    :meth:`add_columns` caches ``h`` and ``A`` per stored row (``"igdf_score"``, ``"v2a_advantage"``).
    Per batch (:meth:`edit_source`)::

        f    = lambda h + (1 - lambda) (A - min_B A) / (max_B A - min_B A + eps)
        keep = top floor(xi n_s) rows by f
        w    = min(exp(alpha h), max_weight)        (weight_score="igdf", the authors' code)
             | min(exp(alpha f), max_weight)        (weight_score="mixed")

    with the batch / kept-row mean and the value / actor flags as in :class:`~tabb_torchrl.methods.IGDF`.

    Args:
        obs_dim (int): state dimension (passed by the recipe).
        action_dim (int): action dimension (passed by the recipe).

    Keyword Args:
        xi (float): kept fraction. Defaults to ``0.5`` (``train_v2a.py --xi``).
        tradeoff (float): ``lambda``. Defaults to ``0.6`` (paper; ``train_v2a.py --tradeoff``).
        alpha (float): importance coefficient of the weight. Defaults to ``1.0`` (``v2a_igdf.py``: ``exp(h)``).
        max_weight (float): clip of the weight. Defaults to ``100.0`` (``v2a_igdf.py``).
        weight_score (str): ``"igdf"`` (``w`` from ``h``; default, ``v2a_igdf.py``) or ``"mixed"`` (from ``f``).
        norm_eps (float): ``eps`` of the min-max normalisation. Defaults to ``1e-8`` (``v2a_igdf.py``).
        repr_dim, hidden_sizes, contrastive_steps, contrastive_batch_size, contrastive_lr: IGDF's
            encoders. Defaults ``64``, ``(256, 256)``, ``7000``, ``128``, ``3e-4`` (``v2a_igdf.py``, ``ant.yaml``).
        normalize_states (bool): standardise the encoders' states. Defaults to ``False``
            (``train_v2a.py`` does not normalise).
        z_dim (int): modality size. Defaults to ``128`` (``train_repr.py``; the ``TCELBO`` class default is 8).
        traj_hidden (int): GRU width. Defaults to ``256``.
        decoder_hidden_sizes (sequence of int): decoder hidden layers. Defaults to ``(256, 256)``
            (``n_layers=3`` linear layers).
        decoder_ensemble (int): decoder members. Defaults to ``3``.
        beta_kl (float): KL coefficient. Defaults to ``1e-3``.
        grad_clip_norm (float): gradient-norm clip of both TC-ELBO steps. Defaults to ``10.0``.
        repr_steps (int): TC-ELBO updates. Defaults to ``100000`` (``train_repr.py``).
        repr_batch_size (int): trajectories per update. Defaults to ``16``.
        repr_max_len (int): random crop of a training trajectory. Defaults to ``200``.
        repr_lr (float): Adam rate of encoder and decoder. Defaults to ``3e-4``.
        max_episode_steps (int): longest trajectory (longer ones are cut). Defaults to ``1000``. Trajectories
            are cut from the stored source rows by :func:`episode_segments` **[reconstructed]**.
        value_steps (int): Sparse-QL updates. Defaults to ``5000`` (``train_offline_z.py``).
        value_batch_size (int): Defaults to ``256``.
        value_lr (float): Defaults to ``3e-4``.
        value_hidden_sizes (sequence of int): ``Q``, ``V`` hidden layers. Defaults to ``(256, 256)``.
        sql_alpha (float): Sparse-QL's ``alpha``. Defaults to ``0.2`` (``sql_z/halfcheetah.yaml``).
        gamma (float): discount of ``Q(s, a, z)``. Defaults to ``0.99`` (the recipe passes ``loss.gamma``).
        tau (float): Polyak rate of the target ``Q``. Defaults to ``0.005``.
        target_update_interval (int): updates between Polyak steps. Defaults to ``2``.
        source_mean (str): ``"batch"`` (default **[reconstructed]**) or ``"kept"``
            (:func:`~tabb_torchrl.methods.igdf.source_mean_scale`).
        source_in_value (bool): Defaults to ``True`` (authors' IQL).
        source_in_actor (bool): Defaults to ``True`` (authors' IQL).
        squared_critic (bool): the critic's per-row loss is the squared error ``0.5 (Q - y)^2`` on every
            row, as the authors' ``v2a_igdf.py``; ``False``: the recipe's Huber loss (``loss.huber_delta``,
            TABB's reconstructed Eq. 8). Defaults to ``True``.
        seed (int, optional): seed of the pre-training draws (``None``: from torch's global generator)
            **[reconstructed]**.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.methods import V2A, SourceRows
        >>> m = V2A(3, 2, xi=0.5, repr_dim=4, hidden_sizes=(8,), z_dim=2, traj_hidden=8,
        ...         decoder_hidden_sizes=(8,), value_hidden_sizes=(8,))
        >>> cols = {"igdf_score": torch.tensor([0.9, 0.8, 0.1, 0.0]),
        ...         "v2a_advantage": torch.tensor([-1.0, 3.0, 1.0, 2.0])}
        >>> rows = SourceRows(torch.zeros(4), torch.zeros(4), torch.zeros(4), torch.zeros(4, 3), cols,
        ...                   value=lambda z: z.sum(-1), gamma=0.99)
        >>> edit = m.edit_source(rows)    # f = 0.6 h + 0.4 [0, 1, 0.5, 0.75] = [0.54, 0.88, 0.26, 0.30]
        >>> edit.keep, edit.metrics["v2a_score"]
        (tensor([ True,  True, False, False]), tensor(0.4950))
    """

    name = "v2a"
    columns = (SCORE_COLUMN, ADVANTAGE_COLUMN)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        xi: float = 0.5,
        tradeoff: float = 0.6,
        alpha: float = 1.0,
        max_weight: float = 100.0,
        weight_score: str = "igdf",
        norm_eps: float = 1e-8,
        repr_dim: int = 64,
        hidden_sizes: Sequence[int] = (256, 256),
        contrastive_steps: int = 7000,
        contrastive_batch_size: int = 128,
        contrastive_lr: float = 3e-4,
        normalize_states: bool = False,
        state_eps: float = 1e-3,
        z_dim: int = 128,
        traj_hidden: int = 256,
        decoder_hidden_sizes: Sequence[int] = (256, 256),
        decoder_ensemble: int = 3,
        beta_kl: float = 1e-3,
        grad_clip_norm: float = 10.0,
        repr_steps: int = 100000,
        repr_batch_size: int = 16,
        repr_max_len: int = 200,
        repr_lr: float = 3e-4,
        max_episode_steps: int = 1000,
        value_steps: int = 5000,
        value_batch_size: int = 256,
        value_lr: float = 3e-4,
        value_hidden_sizes: Sequence[int] = (256, 256),
        sql_alpha: float = 0.2,
        gamma: float = 0.99,
        tau: float = 0.005,
        target_update_interval: int = 2,
        source_mean: str = "batch",
        source_in_value: bool = True,
        source_in_actor: bool = True,
        squared_critic: bool = True,
        seed: int | None = None,
    ):
        super().__init__()
        if not 0 < float(xi) <= 1:
            raise ValueError(f"V2A: xi (the kept fraction of source rows) must be in (0, 1], got {xi}.")
        if not 0 <= float(tradeoff) <= 1:
            raise ValueError(f"V2A: tradeoff (lambda) must be in [0, 1], got {tradeoff}.")
        if weight_score not in WEIGHT_SCORES:
            raise ValueError(f"V2A: weight_score must be one of {WEIGHT_SCORES}, got {weight_score!r}.")
        if not max_weight > 0 or not sql_alpha > 0:
            raise ValueError(f"V2A: max_weight and sql_alpha must be > 0, got {max_weight}, {sql_alpha}.")
        if min(int(contrastive_steps), int(repr_steps), int(value_steps)) < 0:
            raise ValueError("V2A: the pre-training step counts must be >= 0.")
        if int(contrastive_batch_size) < 2 or int(repr_batch_size) < 1 or int(value_batch_size) < 1:
            raise ValueError("V2A: contrastive_batch_size must be >= 2, the other batch sizes >= 1.")
        self.xi, self.tradeoff = float(xi), float(tradeoff)
        self.alpha, self.max_weight = float(alpha), float(max_weight)
        self.weight_score, self.norm_eps = weight_score, float(norm_eps)
        self.contrastive_steps, self.contrastive_batch_size = int(contrastive_steps), int(contrastive_batch_size)
        self.contrastive_lr = float(contrastive_lr)
        self.normalize_states, self.state_eps = bool(normalize_states), float(state_eps)
        self.beta_kl, self.grad_clip_norm = float(beta_kl), float(grad_clip_norm)
        self.repr_steps, self.repr_batch_size = int(repr_steps), int(repr_batch_size)
        self.repr_max_len, self.repr_lr = int(repr_max_len), float(repr_lr)
        self.max_episode_steps = int(max_episode_steps)
        self.value_steps, self.value_batch_size = int(value_steps), int(value_batch_size)
        self.value_lr = float(value_lr)
        self.sql_alpha, self.gamma, self.tau = float(sql_alpha), float(gamma), float(tau)
        self.target_update_interval = int(target_update_interval)
        self.source_mean = _check_source_mean(source_mean, "V2A")
        self.source_in_value = bool(source_in_value)
        self.source_in_actor = bool(source_in_actor)
        self.critic_deltas = (None, None) if squared_critic else None
        self.seed = int(torch.randint(2**62, ()).item()) if seed is None else int(seed)

        obs_dim, action_dim, z_dim = int(obs_dim), int(action_dim), int(z_dim)
        self.encoders = ContrastiveEncoders(obs_dim, action_dim, repr_dim, tuple(hidden_sizes))
        self.traj_encoder = TrajectoryEncoder(obs_dim, action_dim, z_dim, traj_hidden)
        self.dynamics = EnsembleDynamics(obs_dim, action_dim, z_dim, tuple(decoder_hidden_sizes), decoder_ensemble)
        self.q_z = nn.ModuleList([make_mlp(obs_dim + action_dim + z_dim, 1, tuple(value_hidden_sizes))
                                  for _ in range(2)])
        self.q_z_target = copy.deepcopy(self.q_z).requires_grad_(False)
        self.v_z = make_mlp(obs_dim + z_dim, 1, tuple(value_hidden_sizes))
        # diagnostics of prepare() (not checkpointed)
        self.contrastive_losses = self.repr_losses = self.value_losses = None

    # ------------------------------------------------------------------ networks
    def q_values(self, s: torch.Tensor, a: torch.Tensor, z: torch.Tensor, target: bool = False) -> torch.Tensor:
        """``min_j Q_j(s, a, z)``: ``[N]`` (the target critics with ``target=True``)."""
        x = torch.cat([s, a.to(s.dtype), z], -1)
        qs = self.q_z_target if target else self.q_z
        return torch.minimum(qs[0](x), qs[1](x)).squeeze(-1)

    def value(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``V(s, z)``: ``[N]``."""
        return self.v_z(torch.cat([s, z], -1)).squeeze(-1)

    @torch.no_grad()
    def advantage(self, s: torch.Tensor, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``A(s, a, z) = min_j Q_j(s, a, z) - V(s, z)``: ``[N]``."""
        return self.q_values(s, a, z) - self.value(s, z)

    @torch.no_grad()
    def infer_z(self, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor, starts: torch.Tensor,
                lengths: torch.Tensor, rows_per_chunk: int = 131072) -> torch.Tensor:
        """The encoder's mean ``z`` of every (whole) trajectory: ``[n_traj, z_dim]``, in chunks of trajectories."""
        n = starts.shape[0]
        if n == 0:
            return torch.zeros(0, self.traj_encoder.mean.out_features, device=s.device)
        chunk = max(1, int(rows_per_chunk) // int(lengths.max()))
        out = []
        for i in range(0, n, chunk):
            st, ln = starts[i:i + chunk], lengths[i:i + chunk]
            idx, _ = segment_batch(st, ln, int(ln.max()))
            out.append(self.traj_encoder(s[idx], a[idx], s_next[idx], ln)[0])
        return torch.cat(out)

    # ------------------------------------------------------------------ before RL
    def prepare(self, source, target, *, device: torch.device | None = None, progress: bool = False) -> None:
        """IGDF's encoders, TC-ELBO, ``z`` per source trajectory and the Sparse-QL ``Q(s,a,z)``, ``V(s,z)``."""
        if source is None or source.shape[0] == 0:
            raise ValueError("V2A: prepare() needs source transitions. "
                             "Fix: algo.use_source=true and a source dataset.")
        if device is not None:
            self.to(device)
        dev = self.encoders.obs_mean.device
        g = torch.Generator().manual_seed(self.seed)
        if self.normalize_states:
            self.encoders.set_state_stats(torch.cat([source["observation"], target["observation"]]), self.state_eps)
        self.contrastive_losses = pretrain_contrastive(
            self.encoders, (target["observation"], target["action"], target["next", "observation"]),
            source["next", "observation"], steps=self.contrastive_steps, batch_size=self.contrastive_batch_size,
            lr=self.contrastive_lr, generator=g, progress=progress)
        s, a, sn = (source[k].to(dev) for k in ("observation", "action", ("next", "observation")))
        starts, lengths = self._segments(source, s, sn)
        self.repr_losses = self._fit_tc_elbo(s, a, sn, starts, lengths, g, progress)
        z_traj = self.infer_z(s, a, sn, starts, lengths)
        row_traj = torch.repeat_interleave(torch.arange(starts.shape[0], device=dev), lengths)
        r = source["next", "reward"].to(dev).reshape(-1).to(s.dtype)
        d = source["next", "terminated"].to(dev).reshape(-1).to(s.dtype)
        self.value_losses = self._fit_sparse_ql(s, a, sn, r, d, z_traj, row_traj, g, progress)

    def _segments(self, data, s: torch.Tensor, s_next: torch.Tensor):
        done = data.get(("next", "done"), None)
        if done is None:
            done = data["next", "terminated"]
        return episode_segments(done.to(s.device).reshape(-1), s, s_next, self.max_episode_steps)

    def _fit_tc_elbo(self, s, a, s_next, starts, lengths, g, progress) -> torch.Tensor:
        """Alternating E-steps (encoder) and M-steps (decoder) of TC-ELBO; returns ``[steps, 2]`` losses."""
        from tqdm.auto import tqdm

        dev = s.device
        enc, dec = self.traj_encoder, self.dynamics
        opt_e = torch.optim.Adam(enc.parameters(), lr=self.repr_lr)
        opt_d = torch.optim.Adam(dec.parameters(), lr=self.repr_lr)
        horizon = min(self.repr_max_len, int(lengths.max())) if lengths.numel() else 0
        losses = torch.zeros(self.repr_steps, 2)
        n_traj = starts.shape[0]

        def recon(idx, mask, z):
            x_s, x_a, x_n = s[idx], a[idx], s_next[idx]
            pred = dec(x_s[mask], x_a[mask], z[:, None, :].expand(-1, idx.shape[1], -1)[mask])
            return (pred - (x_n - x_s)[mask]).square().mean()

        for step in tqdm(range(self.repr_steps), desc="V2A TC-ELBO", disable=not progress):
            ids = torch.randint(n_traj, (self.repr_batch_size,), generator=g).to(dev)
            full = lengths[ids]
            crop = full.clamp(max=self.repr_max_len)
            offset = torch.floor(torch.rand(ids.shape[0], generator=g).to(dev) * (full - crop + 1)).long()
            idx, mask = segment_batch(starts[ids] + offset, crop, horizon)
            # E-step: the decoder fixed, z sampled from q_psi(z | tau)
            dec.requires_grad_(False)
            mean, log_std = enc(s[idx], a[idx], s_next[idx], crop)
            z = mean + log_std.exp() * torch.randn(mean.shape, generator=g).to(dev)
            kl = (-0.5 * (1.0 + 2.0 * log_std - mean.square() - (2.0 * log_std).exp())).sum(-1).mean()
            loss_e = recon(idx, mask, z) + self.beta_kl * kl
            opt_e.zero_grad(set_to_none=True)
            loss_e.backward()
            nn.utils.clip_grad_norm_(enc.parameters(), self.grad_clip_norm)
            opt_e.step()
            dec.requires_grad_(True)
            # M-step: the encoder fixed, z its mean
            with torch.no_grad():
                z = enc(s[idx], a[idx], s_next[idx], crop)[0]
            loss_m = recon(idx, mask, z)
            opt_d.zero_grad(set_to_none=True)
            loss_m.backward()
            nn.utils.clip_grad_norm_(dec.parameters(), self.grad_clip_norm)
            opt_d.step()
            losses[step, 0], losses[step, 1] = loss_e.detach(), loss_m.detach()
        return losses

    def _fit_sparse_ql(self, s, a, s_next, r, d, z_traj, row_traj, g, progress) -> torch.Tensor:
        """Modality-aware Sparse-QL on source rows (authors' ``sql_z.py``); returns ``[steps, 2]`` losses."""
        from tqdm.auto import tqdm

        dev = s.device
        opt_v = torch.optim.Adam(self.v_z.parameters(), lr=self.value_lr)
        opt_q = torch.optim.Adam(self.q_z.parameters(), lr=self.value_lr)
        q_params = list(self.q_z.parameters())
        q_target = list(self.q_z_target.parameters())
        losses = torch.zeros(self.value_steps, 2)
        for step in tqdm(range(self.value_steps), desc="V2A Sparse-QL", disable=not progress):
            i = torch.randint(s.shape[0], (self.value_batch_size,), generator=g).to(dev)
            z = z_traj[row_traj[i]]
            with torch.no_grad():
                q_t = self.q_values(s[i], a[i], z, target=True)
            loss_v = sparse_ql_value_loss(q_t, self.value(s[i], z), self.sql_alpha)
            opt_v.zero_grad(set_to_none=True)
            loss_v.backward()
            opt_v.step()
            with torch.no_grad():
                y = r[i] + self.gamma * (1.0 - d[i]) * self.value(s_next[i], z)
            x = torch.cat([s[i], a[i].to(s.dtype), z], -1)
            loss_q = sum(F.mse_loss(q(x).squeeze(-1), y) for q in self.q_z)
            opt_q.zero_grad(set_to_none=True)
            loss_q.backward()
            opt_q.step()
            if (step + 1) % self.target_update_interval == 0:
                with torch.no_grad():
                    torch._foreach_lerp_(q_target, [p.detach() for p in q_params], self.tau)
            losses[step, 0], losses[step, 1] = loss_v.detach(), loss_q.detach()
        return losses

    def add_columns(self, data) -> None:
        """Writes ``h`` (``"igdf_score"``, every row) and ``A(s, a, z)`` (``"v2a_advantage"``, source rows;
        ``0`` on target rows), ``z`` inferred again from the stored source trajectories."""
        obs, act, nxt = data["observation"], data["action"], data["next", "observation"]
        dev = self.encoders.obs_mean.device
        data.set(SCORE_COLUMN, self.encoders.score_rows(obs, act, nxt).to(obs.device))
        adv = torch.zeros(obs.shape[0], dtype=obs.dtype, device=obs.device)
        src = _source_rows(data)
        part = data if src is None else data[src]
        if part.shape[0]:
            s, a, sn = (part[k].to(dev) for k in ("observation", "action", ("next", "observation")))
            starts, lengths = self._segments(part, s, sn)
            z = self.infer_z(s, a, sn, starts, lengths)
            row_traj = torch.repeat_interleave(torch.arange(starts.shape[0], device=dev), lengths)
            chunk = 65536
            values = torch.cat([self.advantage(s[i:i + chunk], a[i:i + chunk], z[row_traj[i:i + chunk]])
                                for i in range(0, s.shape[0], chunk)]).to(obs.device, obs.dtype)
            if src is None:
                adv = values
            else:
                adv[src.to(obs.device)] = values
        data.set(ADVANTAGE_COLUMN, adv)

    # ------------------------------------------------------------------ per batch
    def edit_source(self, rows: SourceRows) -> SourceEdit:
        """Top-``xi`` filter by ``f = lambda h + (1 - lambda) Norm(A)`` and clipped exponential weights."""
        h = _column(rows, SCORE_COLUMN, "V2A")
        adv = _column(rows, ADVANTAGE_COLUMN, "V2A")
        f = mixed_score(h, adv, self.tradeoff, self.norm_eps)
        keep = top_fraction_mask(f, self.xi)
        weight = clipped_exp_weight(h if self.weight_score == "igdf" else f, self.alpha, self.max_weight)
        weight = weight * source_mean_scale(h.shape[0], self.xi, self.source_mean)
        kept = keep.to(h.dtype)
        return SourceEdit(weight=weight, keep=keep, metrics={
            "igdf_score": h.mean(), "v2a_advantage": adv.mean(), "v2a_score": f.mean(),
            "v2a_kept_score": (f * kept).sum() / kept.sum(), "kept": kept.mean()})

    def extra_repr(self) -> str:
        return (f"xi={self.xi}, tradeoff={self.tradeoff}, alpha={self.alpha}, max_weight={self.max_weight}, "
                f"weight_score={self.weight_score!r}, source_mean={self.source_mean!r}, "
                f"source_in_value={self.source_in_value}, source_in_actor={self.source_in_actor}")
