"""OTDF as a cross-domain method: optimal-transport deviations filter and weight source rows, and a
VAE of the target data constrains the policy (Lyu et al., "Cross-Domain Offline Policy Adaptation
with Optimal Transport and Dataset Constraint", ICLR 2025; authors' code dmksjfl/OTDF).

Before RL (:meth:`OTDF.prepare`), once per run:

1. every source transition ``u_i = [s, a, s']`` is aligned to the target transitions
   ``v_j = [s, a, s']`` (raw, unnormalised, as in the authors' ``make_otdf_cost.py``) by entropic
   optimal transport with the cosine cost, the source set cut into chunks of 10,000 rows, each
   chunk against the whole target set (:func:`transport_deviation`); a row's deviation is
   ``d_i = -sum_j P_ij C_ij`` (``P`` the Sinkhorn coupling of its chunk), stored as the per-row
   column ``"ot_deviation"`` (:meth:`OTDF.add_columns`; target rows get ``0``, never read);
2. a VAE ``p(a | s)`` is fitted on the target ``(s, a)`` only (:class:`BehaviorVAE`).

Per batch (:meth:`OTDF.edit_source`), over its source rows::

    d_hat = (d - max_B d) / (max_B d - min_B d)          in [-1, 0]
    keep  = the k = floor(proportion * n_s) rows of largest d_hat
    w     = exp(d_hat) * k / n_s                          weight of a kept source row

and the actor loss gains ``-lambda * mean_T log p_VAE(pi(s) | s)`` over the target rows' states
(:meth:`OTDF.actor_regularizer`), ``lambda`` chosen by the shift of the task
(:func:`reg_weight_for_env`). As in the authors' IQL, the kept source rows enter the critic, the
value and the actor losses.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from tabb_torchrl.keys import DOMAIN_KEY, SOURCE
from tabb_torchrl.methods.base import Checkpoint, CrossDomainMethod, ResumablePrepare, SourceEdit, SourceRows

__all__ = [
    "OTDF",
    "BehaviorVAE",
    "OTDF_REG_WEIGHTS",
    "DEVIATION_COLUMN",
    "cosine_cost",
    "transport_deviation",
    "normalize_deviation",
    "keep_top_fraction",
    "train_vae",
    "reg_weight_for_env",
]

_LOG = logging.getLogger(__name__)

#: Name of the cached per-row deviation column.
DEVIATION_COLUMN: str = "ot_deviation"

#: Policy coefficient ``lambda`` (``--reg_weight``) per shift kind: ``0.5`` for morph and gravity
#: and ``0.1`` for kinematic (authors' ``run.sh`` and README). The paper and the code have no
#: friction, broken-joint or shrink-finger tasks: friction takes ``0.5``, the default of
#: ``--reg_weight`` in ``train_otdf.py`` (a physical-parameter shift like gravity), broken-joint
#: (a joint limit, Adroit) ``0.1`` like kinematic, shrink-finger (a body size, Adroit) ``0.5``
#: like morph **[reconstructed]**.
OTDF_REG_WEIGHTS: dict[str, float] = {"morph": 0.5, "gravity": 0.5, "kinematic": 0.1, "friction": 0.5,
                                      "broken-joint": 0.1, "shrink-finger": 0.5}

#: ``lambda`` for an id without a known shift: the default of ``--reg_weight`` in ``train_otdf.py``.
DEFAULT_REG_WEIGHT: float = 0.5

_COSTS = ("cosine", "euclidean")
_SCALE_COSTS = ("max_cost", "mean", "median")
_ROW_MASSES = ("unit", "chunk")
_SOURCE_MEANS = ("batch", "kept")


def reg_weight_for_env(env_id: str | None, weights: Mapping[str, float] | None = None,
                       default: float = DEFAULT_REG_WEIGHT) -> float:
    """The policy coefficient ``lambda`` of :data:`OTDF_REG_WEIGHTS` for the shift of an env id.

    The shift is parsed with :func:`tabb_torchrl.envs.get_shift`; an id that is not in the
    catalogue (a plain gymnasium id) or ``None`` gets ``default``.

    Args:
        env_id (str, optional): the target env id, e.g. ``"tabb/Hopper-kinematic-v0"``.
        weights (Mapping[str, float], optional): ``shift -> lambda``. Defaults to :data:`OTDF_REG_WEIGHTS`.
        default (float): for unknown shifts. Defaults to ``0.5``.

    Examples:
        >>> reg_weight_for_env("tabb/Hopper-morph-v0"), reg_weight_for_env("tabb/Walker2d-kinematic-v0")
        (0.5, 0.1)
        >>> reg_weight_for_env("tabb/HalfCheetah-friction-0.5-v0"), reg_weight_for_env(None)
        (0.5, 0.5)
    """
    if not env_id:
        return float(default)
    from tabb_torchrl.envs import UnknownEnvError, get_shift

    try:
        shift = get_shift(str(env_id)).shift
    except UnknownEnvError:
        return float(default)
    table = OTDF_REG_WEIGHTS if weights is None else weights
    return float(table.get(shift, default))


# ---------------------------------------------------------------------------- optimal transport
def cosine_cost(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-8) -> torch.Tensor:
    r"""Pairwise cosine cost ``C_ij = 1 - <x_i, y_j> / (|x_i| |y_j| + ridge)``, clipped to ``[0, 2]``.

    The cost of ``ott.geometry.costs.Cosine`` that the authors use.

    Args:
        x (torch.Tensor): ``[n, d]``.
        y (torch.Tensor): ``[m, d]``.
        ridge (float): added to the norm product. Defaults to ``1e-8`` (ott-jax).

    Returns:
        torch.Tensor: ``[n, m]``.

    Examples:
        >>> import torch
        >>> cosine_cost(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]))
        tensor([[0., 1., 2.]])
    """
    norm = x.norm(dim=-1, keepdim=True) * y.norm(dim=-1, keepdim=True).T
    return (1.0 - (x @ y.T) / (norm + ridge)).clamp(0.0, 2.0)


def _cost(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "cosine":
        return cosine_cost(x, y)
    return torch.cdist(x, y)  # ott.geometry.costs.Euclidean: the (unsquared) distance


def _cost_scale(cost: torch.Tensor, scale_cost) -> torch.Tensor | float:
    if scale_cost == "max_cost":
        return cost.max()
    if scale_cost == "mean":
        return cost.mean()
    if scale_cost == "median":
        return cost.median()
    return float(scale_cost)


def transport_deviation(
    source: torch.Tensor,
    target: torch.Tensor,
    chunk: int = 10000,
    *,
    epsilon: float = 0.05,
    relative_epsilon: bool = True,
    scale_cost: str | float = "max_cost",
    cost: str = "cosine",
    num_iter: int = 100,
    stop_threshold: float = 1e-9,
    method: str = "sinkhorn_log",
    row_mass: str = "unit",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    progress: bool = False,
    out: torch.Tensor | None = None,
    start: int = 0,
    on_chunk: Callable[[int], None] | None = None,
) -> torch.Tensor:
    r"""Per-row optimal-transport deviation of source transitions from the target set (OTDF, Sec. 4.1).

    The source rows are cut into chunks of ``chunk`` rows; each chunk ``U`` (``k`` rows, uniform
    mass ``a_i = 1/k``) is transported onto the whole target set ``V`` (``m`` rows, ``b_j = 1/m``)
    by POT's Sinkhorn (``ot.sinkhorn``, log-domain by default, as the authors' ott-jax solver)::

        C    = cost(U, V)                          cosine: 1 - cos(u_i, v_j)
        M    = C / scale(C)                        ott-jax scale_cost="max_cost"
        reg  = epsilon * mean(M)                   ott-jax's default epsilon (relative_epsilon)
        P    = Sinkhorn(a, b, M, reg)              num_iter iterations at most
        d_i  = -sum_j P_ij C_ij                    (row_mass="chunk": the authors' number)
        d_i  = -k sum_j P_ij C_ij                  (row_mass="unit", default)

    ``row_mass="unit"`` is the expected cost of row ``i`` under its transport plan: the authors'
    number times ``k``, so the same up to the constant ``10,000`` on full chunks (which the
    per-batch min-max normalisation of :func:`normalize_deviation` removes), and free of the
    ``10,000 / k`` inflation that the authors' chunking gives the rows of a shorter last chunk
    **[reconstructed]**. The deviation is computed on the unscaled cost ``C`` (as the authors'
    ``cost_fn.all_pairs``); ``M`` and ``reg`` only shape the coupling.

    Args:
        source (torch.Tensor): ``[n, d]`` source transitions ``[s, a, s']``.
        target (torch.Tensor): ``[m, d]`` target transitions.
        chunk (int): source rows per OT problem. Defaults to ``10000`` (authors).

    Keyword Args:
        epsilon (float): entropic regularisation; relative to ``mean(M)`` when
            ``relative_epsilon``. Defaults to ``0.05`` (ott-jax's default, which the authors keep).
        relative_epsilon (bool): ``reg = epsilon * mean(M)``. Defaults to ``True``.
        scale_cost (str or float): ``"max_cost"`` (authors), ``"mean"``, ``"median"`` or a number.
        cost (str): ``"cosine"`` (authors' default ``--metric``) or ``"euclidean"``.
        num_iter (int): Sinkhorn iterations at most. Defaults to ``100`` (authors).
        stop_threshold (float): marginal error to stop at. Defaults to ``1e-9`` (authors).
        method (str): POT's Sinkhorn variant. Defaults to ``"sinkhorn_log"`` (ott-jax's
            ``lse_mode``; ``"sinkhorn"`` is faster but underflows for a small ``reg``).
        row_mass (str): ``"unit"`` (default) or ``"chunk"`` (see above).
        dtype (torch.dtype): precision of the OT. Defaults to ``torch.float64`` (the authors cast
            the inputs to float16 under JAX).
        device: where to solve (the source's device when ``None``).
        progress (bool): a progress bar over the chunks.
        out (torch.Tensor, optional): ``[n]`` tensor the deviations are written into (and returned);
            a new float32 tensor on the source's device when ``None``.
        start (int): the first source row to compute, a multiple of ``chunk`` or ``n`` (the rows before
            it are left as they are in ``out``: a computation continued after a stop). Defaults to ``0``.
        on_chunk (Callable, optional): called with the number of source rows done after each chunk
            (the chunks are independent problems, so the rows done never change again).

    Returns:
        torch.Tensor: ``[n]`` float32 deviations (``<= 0``; larger = closer to the target data).

    Examples:
        Two target transitions; the first source row lies on the first one:

        >>> import torch
        >>> src = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> tgt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> transport_deviation(src, tgt, epsilon=1e-3, num_iter=1000).round(decimals=3)
        tensor([-0.0000, -0.2930])
    """
    if cost not in _COSTS:
        raise ValueError(f"transport_deviation: cost must be one of {_COSTS}, got {cost!r}.")
    if isinstance(scale_cost, str) and scale_cost not in _SCALE_COSTS:
        raise ValueError(f"transport_deviation: scale_cost must be one of {_SCALE_COSTS} or a number, "
                         f"got {scale_cost!r}.")
    if row_mass not in _ROW_MASSES:
        raise ValueError(f"transport_deviation: row_mass must be one of {_ROW_MASSES}, got {row_mass!r}.")
    if int(chunk) < 1:
        raise ValueError(f"transport_deviation: chunk must be >= 1, got {chunk}.")
    if not epsilon > 0:
        raise ValueError(f"transport_deviation: epsilon must be > 0, got {epsilon}.")
    source = torch.as_tensor(source)
    device = source.device if device is None else torch.device(device)
    tgt = torch.as_tensor(target).to(device=device, dtype=dtype)
    if source.ndim != 2 or tgt.ndim != 2 or source.shape[1] != tgt.shape[1]:
        raise ValueError(f"transport_deviation: source [n, d] and target [m, d] must share d, got "
                         f"{list(source.shape)} and {list(tgt.shape)}.")
    n, m = source.shape[0], tgt.shape[0]
    if m == 0:
        raise ValueError("transport_deviation: the target set is empty.")
    if not 0 <= int(start) <= n or (int(start) % int(chunk) and int(start) != n):
        raise ValueError(f"transport_deviation: start must be a multiple of chunk={chunk} in [0, {n}] (or {n}: "
                         f"all done), got {start}.")
    b = torch.full((m,), 1.0 / m, dtype=dtype, device=device)
    if out is None:
        out = torch.empty(n, dtype=torch.float32, device=source.device)
    elif tuple(out.shape) != (n,):
        raise ValueError(f"transport_deviation: out must have shape [{n}] (one per source row), got {list(out.shape)}.")
    starts = range(int(start), n, int(chunk))
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="OTDF transport", unit="chunk")
    for first in starts:
        x = source[first:first + int(chunk)].to(device=device, dtype=dtype)
        k = x.shape[0]
        out[first:first + k] = _chunk_deviation(x, tgt, b, cost=cost, epsilon=epsilon,
                                                relative_epsilon=relative_epsilon, scale_cost=scale_cost,
                                                num_iter=num_iter, stop_threshold=stop_threshold, method=method,
                                                row_mass=row_mass).to(out.device, out.dtype)
        if on_chunk is not None:
            on_chunk(first + k)
    return out


def _chunk_deviation(x: torch.Tensor, tgt: torch.Tensor, b: torch.Tensor, *, cost, epsilon, relative_epsilon,
                     scale_cost, num_iter, stop_threshold, method, row_mass) -> torch.Tensor:
    """The deviations of one chunk ``x`` (:func:`transport_deviation`), in ``x``'s dtype."""
    import ot

    k = x.shape[0]
    c = _cost(x, tgt, cost)
    if not bool(c.max() > 0):  # every pair at cost 0: nothing to transport
        return torch.zeros(k, dtype=x.dtype, device=x.device)
    scaled = c / _cost_scale(c, scale_cost)
    reg = float(epsilon * scaled.mean()) if relative_epsilon else float(epsilon)
    a = torch.full((k,), 1.0 / k, dtype=x.dtype, device=x.device)
    plan = ot.sinkhorn(a, b, scaled, reg, method=method, numItermax=int(num_iter),
                       stopThr=float(stop_threshold), warn=False)
    del scaled
    dev = -(plan.mul_(c)).sum(1)
    return dev * k if row_mass == "unit" else dev


# ---------------------------------------------------------------------------- per-batch filter
def normalize_deviation(deviation: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""``d_hat = (d - max d) / (max d - min d)`` over the rows given, in ``[-1, 0]`` (authors' ``train``).

    ``eps`` bounds the denominator from below (all equal: ``d_hat = 0``) **[reconstructed]**; the
    authors' code has none.

    Examples:
        >>> import torch
        >>> normalize_deviation(torch.tensor([-3.0, -1.0, -2.0]))
        tensor([-1.0000,  0.0000, -0.5000])
    """
    hi, lo = deviation.amax(), deviation.amin()
    return (deviation - hi) / (hi - lo).clamp_min(eps)


def keep_top_fraction(score: torch.Tensor, proportion: float) -> torch.Tensor:
    """Boolean mask of the ``floor(proportion * n)`` rows of largest ``score`` (``torch.topk``, as the authors).

    Examples:
        >>> import torch
        >>> keep_top_fraction(torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7]), 0.6)
        tensor([False,  True,  True, False,  True])
    """
    n = score.shape[0]
    k = int(n * proportion)
    keep = torch.zeros(n, dtype=torch.bool, device=score.device)
    return keep.scatter(0, torch.topk(score, k).indices, True)


# ---------------------------------------------------------------------------- the VAE
class BehaviorVAE(nn.Module):
    r"""Conditional VAE of the target data ``p(a | s)`` (OTDF's dataset constraint; BCQ-style, authors' ``VAE_Policy``).

    Encoder ``q(z | s, a) = N(mu, sigma^2)`` (two ReLU layers, ``log sigma`` clamped to
    ``[-4, 15]``), decoder ``a_hat = max_action * tanh(MLP([s, z]))`` (two ReLU layers), latent
    size ``2 * action_dim``. Fitted by :func:`train_vae` with ``MSE(a_hat, a) + kl_weight * KL``.
    :meth:`log_likelihood` is the authors' ``dataset_prob``.

    Args:
        obs_dim (int): state size.
        action_dim (int): action size.
        hidden (int): width of the hidden layers. Defaults to ``750`` (authors).
        latent_dim (int, optional): defaults to ``2 * action_dim`` (authors).
        max_action (float): action bound. Defaults to ``1.0``.
        log_std_bounds (tuple): clamp of the encoder's ``log sigma``. Defaults to ``(-4, 15)`` (authors).

    Examples:
        >>> import torch
        >>> vae = BehaviorVAE(3, 2, hidden=8)
        >>> recon, mean, std = vae(torch.zeros(5, 3), torch.zeros(5, 2))
        >>> recon.shape, mean.shape, vae.log_likelihood(torch.zeros(5, 3), torch.zeros(5, 2)).shape
        (torch.Size([5, 2]), torch.Size([5, 4]), torch.Size([5]))
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 750, latent_dim: int | None = None,
                 max_action: float = 1.0, log_std_bounds: tuple[float, float] = (-4.0, 15.0)):
        super().__init__()
        latent_dim = 2 * int(action_dim) if latent_dim is None else int(latent_dim)
        self.latent_dim = latent_dim
        self.max_action = float(max_action)
        self.log_std_bounds = (float(log_std_bounds[0]), float(log_std_bounds[1]))
        self.encoder = nn.Sequential(nn.Linear(obs_dim + action_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, latent_dim)
        self.log_std = nn.Linear(hidden, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(obs_dim + latent_dim, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, action_dim), nn.Tanh())

    def encode(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)`` of ``q(z | s, a)``."""
        h = self.encoder(torch.cat([state, action], -1))
        return self.mean(h), self.log_std(h).clamp(*self.log_std_bounds).exp()

    def decode(self, state: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``max_action * tanh(MLP([s, z]))``."""
        return self.max_action * self.decoder(torch.cat([state, z], -1))

    def forward(self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None):
        """``(a_hat, mu, sigma)`` with one reparameterised ``z ~ q(z | s, a)`` (noise from ``generator``)."""
        mean, std = self.encode(state, action)
        noise = torch.randn(std.shape, dtype=std.dtype, device=std.device, generator=generator)
        return self.decode(state, mean + std * noise), mean, std

    def loss(self, state: torch.Tensor, action: torch.Tensor, kl_weight: float = 0.5,
             generator: torch.Generator | None = None) -> torch.Tensor:
        r"""``MSE(a_hat, a) + kl_weight * KL`` with ``KL = -mean(1 + log sigma^2 - mu^2 - sigma^2) / 2`` (train_vae).

        Both terms are means over rows and dimensions.
        """
        recon, mean, std = self(state, action, generator)
        kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
        return F.mse_loss(recon, action) + kl_weight * kl

    def log_likelihood(self, state: torch.Tensor, action: torch.Tensor, beta: float = 0.4,
                       num_samples: int = 10) -> torch.Tensor:
        r"""The authors' ``dataset_prob``: ``log sum_m N(a; a_hat(s, z_m), beta / 4)``, ``z_m ~ q(z | s, a)``.

        ``M = num_samples`` latents from the encoder at ``(s, a)``; the decoder's Gaussian has
        standard deviation ``sqrt(beta / 4)`` per action dimension; the densities are summed
        over action dimensions in log space and log-sum-exp'ed over the samples (no ``- log M``,
        no ``log p(z) - log q(z | s, a)`` correction: the authors compute these two terms and
        leave them out). Differentiable in ``action`` (the policy's action).

        Args:
            state (torch.Tensor): ``[B, obs_dim]``.
            action (torch.Tensor): ``[B, action_dim]``.
            beta (float): decoder variance ``beta / 4``. Defaults to ``0.4`` (authors).
            num_samples (int): ``M``. Defaults to ``10`` (authors).

        Returns:
            torch.Tensor: ``[B]``.
        """
        mean, std = self.encode(state, action)
        shape = (state.shape[0], int(num_samples), mean.shape[-1])
        z = mean.unsqueeze(1).expand(shape) + std.unsqueeze(1).expand(shape) * torch.randn(
            shape, dtype=mean.dtype, device=mean.device)
        states = state.unsqueeze(1).expand(state.shape[0], int(num_samples), state.shape[-1])
        dec = self.decode(states, z)                                      # [B, M, A]
        sigma = math.sqrt(beta / 4.0)
        log_p = -0.5 * ((action.unsqueeze(1) - dec) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)
        return log_p.sum(-1).logsumexp(-1)


def train_vae(vae: BehaviorVAE, state: torch.Tensor, action: torch.Tensor, *, steps: int = 10000,
              batch_size: int = 128, lr: float = 1e-3, kl_weight: float = 0.5,
              generator: torch.Generator | None = None, progress: bool = False,
              resume: Mapping | None = None,
              safe_point: Callable[[Callable[[], dict]], None] | None = None) -> torch.Tensor:
    """Fits ``vae`` on ``(state, action)`` with Adam on uniformly drawn mini-batches (authors' ``train_vae``).

    The parameters get gradients only here (they are frozen again on return).

    Args:
        vae (BehaviorVAE): the model (trained in place, on its own device).
        state (torch.Tensor): ``[N, obs_dim]`` target states.
        action (torch.Tensor): ``[N, action_dim]`` target actions.

    Keyword Args:
        steps (int): gradient steps. Defaults to ``10000`` (authors: ``int(1e4)``).
        batch_size (int): rows per step, drawn with replacement. Defaults to ``128`` (authors' batch size).
        lr (float): Adam learning rate. Defaults to ``1e-3`` (authors).
        kl_weight (float): weight of the KL term. Defaults to ``0.5`` (authors).
        generator (torch.Generator, optional): for the mini-batch draws and the latent noise (on the
            VAE's device), so that the fit does not depend on the global RNG.
        progress (bool): a progress bar.
        resume (Mapping, optional): a state that ``safe_point`` read earlier (with ``vae`` holding the
            weights of that moment): the fit continues from its step, optimiser and generator state.
        safe_point (Callable, optional): called after every step with a function that returns the
            fit's state (``{"step", "optimizer", "generator", "last_loss"}``; the weights are ``vae``'s),
            e.g. :meth:`~tabb_torchrl.methods.base.PrepareProgress.safe_point`. Without ``generator`` the
            draws come from the global RNG, which the caller then restores too.

    Returns:
        torch.Tensor: the VAE loss on the last mini-batch (detached; ``nan`` when ``steps == 0``).

    Examples:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> s, a = torch.randn(64, 3), torch.rand(64, 2) * 2 - 1
        >>> vae = BehaviorVAE(3, 2, hidden=32)
        >>> before = vae.loss(s, a).item()
        >>> bool(train_vae(vae, s, a, steps=200, batch_size=32) < before), vae.mean.weight.requires_grad
        (True, False)
    """
    device = next(vae.parameters()).device
    state, action = state.to(device), action.to(device, state.dtype)
    n = state.shape[0]
    last = torch.full((), float("nan"))
    if steps <= 0:
        return last
    if n == 0:
        raise ValueError("train_vae: no target transitions to fit.")
    vae.requires_grad_(True)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    step = 0
    if resume is not None:
        step, last = int(resume["step"]), resume["last_loss"]
        optimizer.load_state_dict(resume["optimizer"])
        if generator is not None:
            generator.set_state(resume["generator"])

    def fit_state() -> dict:
        return {"step": step, "optimizer": optimizer.state_dict(), "last_loss": last,
                "generator": None if generator is None else generator.get_state()}

    from tqdm.auto import tqdm

    bar = tqdm(total=int(steps), initial=step, desc="OTDF VAE", disable=not progress, mininterval=1.0)
    try:
        with torch.enable_grad():
            while step < int(steps):
                idx = torch.randint(0, n, (int(batch_size),), generator=generator, device=device)
                loss = vae.loss(state[idx], action[idx], kl_weight, generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step, last = step + 1, loss.detach()
                bar.update(1)
                if safe_point is not None:
                    safe_point(fit_state)
    finally:
        bar.close()
        vae.requires_grad_(False)
        vae.zero_grad(set_to_none=True)
    return last


# ---------------------------------------------------------------------------- the method
class OTDF(ResumablePrepare, CrossDomainMethod):
    r"""Optimal Transport Data Filtering (Lyu et al., ICLR 2025) on the IQL backbone, raw states.

    Source rows carry a deviation ``d`` computed once before RL (:func:`transport_deviation`,
    column ``"ot_deviation"``). Per batch, over the ``n_s`` source rows::

        d_hat = (d - max_B d) / (max_B d - min_B d)                       (normalize_deviation)
        keep  = top k = floor(proportion * n_s) rows by d_hat             (keep_top_fraction)
        w     = exp(d_hat) * k / n_s                                      (weighted, source_mean="batch")

    and the actor loss gains ``-lambda * mean_T log p_VAE(pi(s) | s)`` over the target rows
    (:meth:`BehaviorVAE.log_likelihood` at the policy's mean action), with the VAE fitted on
    the target ``(s, a)`` in :meth:`prepare`. The core reduces each loss as
    ``mean_T l + mean_kept(w l)``; the factor ``k / n_s`` makes the source term
    ``(1 / n_s) sum_kept exp(d_hat) l``, so that source and target rows weigh against each
    other as in the authors' single mean over the ``k + n_t`` rows (up to a constant factor when
    ``n_s = n_t``). The kept source rows also enter the value and the actor losses
    (``source_in_value``, ``source_in_actor``), as the authors' IQL trains ``V`` and ``pi`` on
    the merged batch; there the core applies the same weights, where the authors' code has none.

    Args:
        obs_dim (int): state size (the recipe passes it).
        action_dim (int): action size (the recipe passes it).

    Keyword Args:
        env_id (str, optional): the target env id; picks ``lambda`` by its shift
            (:func:`reg_weight_for_env`) when ``reg_weight`` is ``None``.
        proportion (float): fraction of a batch's source rows kept. Defaults to ``0.8`` (authors).
        weighted (bool): weight kept rows by ``exp(d_hat)`` (authors' ``--weight``, on in ``run.sh``).
        source_mean (str): ``"batch"`` (default: the factor ``k / n_s`` above) or ``"kept"`` (none:
            a plain mean over the kept rows).
        reg_weight (float, optional): ``lambda``; overrides the per-shift table. ``0`` drops the term.
        reg_weights (Mapping[str, float], optional): shift -> ``lambda``. Defaults to :data:`OTDF_REG_WEIGHTS`.
        normalize_eps (float): lower bound of ``max - min``. Defaults to ``1e-8`` **[reconstructed]**.
        source_in_value (bool): value loss also on the (weighted, kept) source rows. Defaults to ``True``.
        source_in_actor (bool): AWR loss also on them. Defaults to ``True``.
        critic_deltas (tuple, optional): per-domain Huber thresholds of the critic
            (:attr:`~tabb_torchrl.methods.CrossDomainMethod.critic_deltas`); ``(None, None)`` (default):
            the authors' squared error ``0.5 (Q - y)^2`` on both domains; ``None``: the recipe's Huber
            loss (``loss.huber_delta``, TABB's reconstructed Eq. 8).
        ot_chunk (int): source rows per OT problem (:func:`transport_deviation`'s ``chunk``). ``10000``.
        ot_epsilon (float): ``epsilon``. ``0.05``.
        ot_relative_epsilon (bool): ``relative_epsilon``. ``True``.
        ot_scale_cost (str or float): ``scale_cost``. ``"max_cost"``.
        ot_cost (str): ``cost``. ``"cosine"``.
        ot_iterations (int): ``num_iter``. ``100``.
        ot_threshold (float): ``stop_threshold``. ``1e-9``.
        ot_method (str): ``method``. ``"sinkhorn_log"``.
        ot_row_mass (str): ``row_mass``. ``"unit"`` **[reconstructed]**.
        ot_dtype (str): name of ``dtype``. ``"float64"`` **[reconstructed]**.
        vae_hidden (int): :class:`BehaviorVAE`'s ``hidden``. ``750``.
        vae_latent_dim (int, optional): ``latent_dim``; ``None`` = ``2 * action_dim``.
        vae_steps (int): :func:`train_vae`'s ``steps``. ``10000``.
        vae_batch_size (int): ``batch_size``. ``128``.
        vae_lr (float): ``lr``. ``1e-3``.
        vae_kl_weight (float): ``kl_weight``. ``0.5``.
        likelihood_beta (float): :meth:`BehaviorVAE.log_likelihood`'s ``beta``. ``0.4``.
        likelihood_samples (int): its ``num_samples``. ``10``.
        max_action (float): the VAE decoder's action bound. ``1.0``.
        seed (int, optional): seeds the VAE fit (mini-batches and latent noise); ``None`` (default)
            draws it from the global torch RNG in :meth:`prepare` (so it follows the run's seed).
        observation_key (str): the data's state entry (``("next", key)`` for ``s'``). ``"observation"``.
        action_key (str): the data's action entry. ``"action"``.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.methods import OTDF, SourceRows
        >>> m = OTDF(3, 2, proportion=0.75, reg_weight=0.1, vae_hidden=8)
        >>> rows = SourceRows(torch.zeros(4), torch.zeros(4), torch.zeros(4), torch.zeros(4, 3),
        ...     {"ot_deviation": torch.tensor([-0.2, -0.6, -1.0, -0.4])}, value=lambda z: z.sum(-1), gamma=0.99)
        >>> edit = m.edit_source(rows)      # d_hat = [0, -0.5, -1, -0.25]; k / n_s = 3 / 4
        >>> edit.keep, edit.weight / 0.75
        (tensor([ True,  True, False,  True]), tensor([1.0000, 0.6065, 0.3679, 0.7788]))
        >>> m.actor_regularizer(torch.zeros(5, 3), torch.zeros(5, 2)).shape
        torch.Size([])
    """

    name = "otdf"
    columns = (DEVIATION_COLUMN,)

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        env_id: str | None = None,
        proportion: float = 0.8,
        weighted: bool = True,
        source_mean: str = "batch",
        reg_weight: float | None = None,
        reg_weights: Mapping[str, float] | None = None,
        normalize_eps: float = 1e-8,
        source_in_value: bool = True,
        source_in_actor: bool = True,
        critic_deltas: tuple | None = (None, None),
        ot_chunk: int = 10000,
        ot_epsilon: float = 0.05,
        ot_relative_epsilon: bool = True,
        ot_scale_cost: str | float = "max_cost",
        ot_cost: str = "cosine",
        ot_iterations: int = 100,
        ot_threshold: float = 1e-9,
        ot_method: str = "sinkhorn_log",
        ot_row_mass: str = "unit",
        ot_dtype: str = "float64",
        vae_hidden: int = 750,
        vae_latent_dim: int | None = None,
        vae_steps: int = 10000,
        vae_batch_size: int = 128,
        vae_lr: float = 1e-3,
        vae_kl_weight: float = 0.5,
        likelihood_beta: float = 0.4,
        likelihood_samples: int = 10,
        max_action: float = 1.0,
        seed: int | None = None,
        observation_key: str = "observation",
        action_key: str = "action",
    ):
        super().__init__()
        if not 0 < proportion <= 1:
            raise ValueError(f"OTDF: proportion must be in (0, 1], got {proportion}.")
        if source_mean not in _SOURCE_MEANS:
            raise ValueError(f"OTDF: source_mean must be one of {_SOURCE_MEANS}, got {source_mean!r}.")
        if critic_deltas is not None and len(critic_deltas) != 2:
            raise ValueError(f"OTDF: critic_deltas must be (target_delta, source_delta), got {critic_deltas!r}.")
        if reg_weight is not None and not reg_weight >= 0:
            raise ValueError(f"OTDF: reg_weight must be >= 0, got {reg_weight}.")
        if ot_cost not in _COSTS:
            raise ValueError(f"OTDF: ot_cost must be one of {_COSTS}, got {ot_cost!r}.")
        if ot_row_mass not in _ROW_MASSES:
            raise ValueError(f"OTDF: ot_row_mass must be one of {_ROW_MASSES}, got {ot_row_mass!r}.")
        if not isinstance(getattr(torch, str(ot_dtype), None), torch.dtype):
            raise ValueError(f"OTDF: ot_dtype must name a torch dtype (e.g. 'float64'), got {ot_dtype!r}.")
        if int(likelihood_samples) < 1 or not likelihood_beta > 0:
            raise ValueError("OTDF: likelihood_samples must be >= 1 and likelihood_beta > 0.")
        self.proportion = float(proportion)
        self.weighted = bool(weighted)
        self.source_mean = source_mean
        self.critic_deltas = None if critic_deltas is None else tuple(critic_deltas)
        self.env_id = env_id
        self.reg_weight = float(reg_weight) if reg_weight is not None else reg_weight_for_env(env_id, reg_weights)
        self.normalize_eps = float(normalize_eps)
        self.source_in_value = bool(source_in_value)
        self.source_in_actor = bool(source_in_actor)
        self.ot_kwargs = dict(chunk=int(ot_chunk), epsilon=float(ot_epsilon),
                              relative_epsilon=bool(ot_relative_epsilon), scale_cost=ot_scale_cost,
                              cost=ot_cost, num_iter=int(ot_iterations), stop_threshold=float(ot_threshold),
                              method=str(ot_method), row_mass=ot_row_mass, dtype=getattr(torch, str(ot_dtype)))
        self.vae_kwargs = dict(steps=int(vae_steps), batch_size=int(vae_batch_size), lr=float(vae_lr),
                               kl_weight=float(vae_kl_weight))
        self.likelihood_beta = float(likelihood_beta)
        self.likelihood_samples = int(likelihood_samples)
        self.seed = None if seed is None else int(seed)
        self.observation_key, self.action_key = observation_key, action_key
        self.vae = BehaviorVAE(obs_dim, action_dim, hidden=int(vae_hidden), latent_dim=vae_latent_dim,
                               max_action=max_action).requires_grad_(False)
        # one deviation per source row, in the order of the source data (checkpointed; resized on load)
        self.register_buffer("deviation", torch.zeros(0))

    # ------------------------------------------------------------------ before RL
    def _transitions(self, data) -> torch.Tensor:
        obs = data.get(self.observation_key)
        return torch.cat([obs, data.get(self.action_key).to(obs.dtype), data.get(("next", self.observation_key))], -1)

    def prepare(self, source, target, *, device: torch.device | None = None, progress: bool = False,
                checkpoint: Checkpoint | None = None) -> None:
        """OT deviations of the source rows (the ``deviation`` buffer); the VAE fitted on the target ``(s, a)``.

        Resumable (:class:`~tabb_torchrl.methods.base.ResumablePrepare`): ``checkpoint()`` is called
        after every OT chunk (the deviations of the chunks done are in the ``deviation`` buffer, hence
        in ``state_dict()``; :meth:`prepare_state` holds how many rows are done) and after every VAE
        step (the step, the optimiser, the generator and the seed); a ``prepare`` after
        :meth:`load_prepare_state` continues with the next chunk or step.

        Args:
            source (TensorDictBase): source transitions (``None`` or empty: no deviations).
            target (TensorDictBase): target transitions.

        Keyword Args:
            device (torch.device, optional): where the OT is solved (the VAE trains on its own device).
            progress (bool): progress bars.
            checkpoint (Callable, optional): called at every safe point (see above).
        """
        with self.preparing(checkpoint) as run:
            resume = run.resume or {}
            stage = resume.get("stage", "ot")
            if stage == "ot" and source is not None and source.shape[0] > 0:
                self._fit_deviations(source, target, int(resume.get("rows_done", 0)), run.safe_point, device,
                                     progress)
            if self.reg_weight > 0:
                self._fit_vae(target, resume if stage == "vae" else None, run.safe_point, progress)

    def _fit_deviations(self, source, target, done: int, safe_point, device, progress: bool) -> None:
        n = source.shape[0]
        if done == 0:
            self.deviation = torch.zeros(n, device=self.deviation.device)
        elif self.deviation.numel() != n:
            raise ValueError(f"OTDF.prepare: the checkpoint holds {self.deviation.numel()} deviations, the source "
                             f"data has {n} rows. Fix: resume with the data of the run, or start a new run.")
        t0 = time.perf_counter()
        transport_deviation(self._transitions(source), self._transitions(target), device=device, progress=progress,
                            out=self.deviation, start=done,
                            on_chunk=lambda rows: safe_point(lambda: {"stage": "ot", "rows_done": rows}),
                            **self.ot_kwargs)
        _LOG.info("OTDF: transport deviations of %d source rows against %d target rows in %.1f s",
                  n, target.shape[0], time.perf_counter() - t0)

    def _fit_vae(self, target, resume, safe_point, progress: bool) -> None:
        t0 = time.perf_counter()
        vae_device = next(self.vae.parameters()).device
        if resume is not None:
            seed = int(resume["seed"])
        else:
            seed = int(torch.randint(0, 2**62, (1,))) if self.seed is None else self.seed
        gen = torch.Generator(device=vae_device).manual_seed(seed)
        loss = train_vae(self.vae, target.get(self.observation_key), target.get(self.action_key),
                         generator=gen, progress=progress, resume=resume,
                         safe_point=lambda read: safe_point(lambda: {"stage": "vae", "seed": seed, **read()}),
                         **self.vae_kwargs)
        _LOG.info("OTDF: VAE fitted on %d target rows in %.1f s (last loss %.4g)", target.shape[0],
                  time.perf_counter() - t0, float(loss))

    def add_columns(self, data) -> None:
        """Writes ``"ot_deviation"``: the stored deviation on source rows (in order), ``0`` on target rows.

        Raises:
            ValueError: no ``"domain"`` column, or the data's source rows do not match the deviations
                of :meth:`prepare` in number.
        """
        domain = data.get(DOMAIN_KEY, None)
        if domain is None:
            raise ValueError(f"OTDF.add_columns: the data has no {DOMAIN_KEY!r} column.")
        is_source = domain.reshape(-1) == SOURCE
        n_src = int(is_source.sum())
        if n_src and n_src != self.deviation.numel():  # (a target-only part: all neutral)
            raise ValueError(
                f"OTDF.add_columns: the data holds {n_src} source rows but prepare() computed "
                f"{self.deviation.numel()} deviations. Fix: call prepare(source, target) with the "
                "source data that the buffer stores."
            )
        column = torch.zeros(data.shape[0], dtype=torch.float32, device=domain.device)
        if n_src:
            column[is_source] = self.deviation.to(column.device, column.dtype)
        data.set(DEVIATION_COLUMN, column)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "deviation")
        if saved is not None and saved.shape != self.deviation.shape:  # one per source row: any length
            self.deviation = torch.empty_like(saved, device=self.deviation.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ per batch
    def edit_source(self, rows: SourceRows) -> SourceEdit:
        """Top ``proportion`` of the batch's source rows by normalised deviation, weighted by ``exp(d_hat)``."""
        d = rows.columns[DEVIATION_COLUMN].reshape(-1).to(rows.reward.dtype)
        d_hat = normalize_deviation(d, self.normalize_eps)
        keep = keep_top_fraction(d_hat, self.proportion)
        weight = torch.exp(d_hat) if self.weighted else None
        if self.source_mean == "batch":  # (1 / n_s) sum over the kept rows, as the authors' one mean
            scale = int(d.shape[0] * self.proportion) / max(d.shape[0], 1)
            weight = torch.full_like(d, scale) if weight is None else weight * scale
        return SourceEdit(weight=weight, keep=keep, metrics={"mean_ot_deviation": d.mean()})

    def actor_regularizer(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor | None:
        """``-lambda * mean log p_VAE(action | observation)`` (``None`` when ``lambda = 0``)."""
        if self.reg_weight == 0:
            return None
        ll = self.vae.log_likelihood(observation, action, beta=self.likelihood_beta,
                                     num_samples=self.likelihood_samples)
        return -self.reg_weight * ll.mean()

    def extra_repr(self) -> str:
        return (f"proportion={self.proportion}, weighted={self.weighted}, source_mean={self.source_mean!r}, "
                f"reg_weight={self.reg_weight}, "
                f"source_in_value={self.source_in_value}, source_in_actor={self.source_in_actor}, "
                f"deviations={self.deviation.numel()}")
