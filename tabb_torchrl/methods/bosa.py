"""BOSA on the TD3 backbone: supported policy and value optimisation for cross-domain offline RL
(Liu, Zhang, Wei, Zhuang, Kang, Gai & Wang, "Beyond OOD State Actions: Supported Cross-Domain
Offline Reinforcement Learning", AAAI 2024, arXiv 2306.12755; reimplemented in the ODRL benchmark,
``OffDynamicsRL/off-dynamics-rl``, ``algo/offline_offline/bosa.py`` and ``config/mujoco/bosa/``).

Before RL (:meth:`BOSA.prepare`), two generative models are fitted for ``pretrain_steps`` steps:

* a conditional VAE of the behaviour policy ``beta(a | s)`` on source ∪ target rows
  (:class:`~tabb_torchrl.methods.otdf.BehaviorVAE`, the same BCQ-style VAE as OTDF's);
* an ensemble of ``E = 5`` conditional VAEs of the dynamics ``p(s' | s, a)``
  (:class:`DynamicsVAEEnsemble`, one batched module).

During RL (TD3 backbone, :mod:`tabb_torchrl.pipeline.td3`), on batches of source and target rows::

    ll_i(s, a, s') = IWAE estimate of log p_i(s' | s, a)                           (iwae_log_likelihood)
    m              = 1[min_i ll_i > log epsilon_dyn]                                (support_mask)
    L_Q  = sum_k mean_rows[ m (Q_k - y)^2 ] / 2 + alpha sum_k mean_source Q_k(s, a)    (supported value optimisation)
    L_pi = -mean Q_1(s, pi(s)) / mean|Q_1| + lambda mean[-log beta(pi(s) | s)]       (supported policy optimisation)

with ``epsilon_dyn = 0.01``, ``alpha = 0.1`` and ``lambda = 0.1``. See ``docs/methods/bosa.md``.
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
from torch import nn

from tabb_torchrl.keys import SOURCE
from tabb_torchrl.methods.base import Checkpoint, ResumablePrepare
from tabb_torchrl.methods.otdf import BehaviorVAE
from tabb_torchrl.objectives.functional import masked_mean
from tabb_torchrl.pipeline.td3 import INITS, CriticTerms, EnsembleMLP, TD3Batch, TD3Method

__all__ = [
    "BOSA",
    "DynamicsVAEEnsemble",
    "DYNAMICS_DATA",
    "iwae_log_likelihood",
    "support_mask",
]

_LOG = logging.getLogger(__name__)

#: Rows the dynamics VAEs are fitted on: ``"target"`` (the target data: the support of the target
#: dynamics) or ``"mixed"`` (the same source + target batches as the policy VAE, as ODRL).
DYNAMICS_DATA = ("target", "mixed")

_LOG_2PI = math.log(2 * math.pi)


def _normal_log_prob(x: torch.Tensor, mean: torch.Tensor | float, std: torch.Tensor | float) -> torch.Tensor:
    """Diagonal Gaussian log-density summed over the last dimension."""
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device)
    return (-0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * _LOG_2PI).sum(-1)


def iwae_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                        decode: Callable[[torch.Tensor], torch.Tensor], beta: float, num_samples: int = 1,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Importance-weighted estimate of :math:`\log p(x \mid c)` under a conditional VAE (BOSA, Eq. 7).

    .. math::

        \widehat{\log p}(x \mid c) = \log \frac{1}{M} \sum_{m=1}^{M}
        \frac{\mathcal N\big(x;\ \mathrm{dec}(c, z_m),\ \tfrac{\beta}{4} I\big)\ \mathcal N(z_m; 0, I)}
             {\mathcal N(z_m;\ \mu(c, x),\ \sigma(c, x)^2)},
        \qquad z_m \sim \mathcal N(\mu, \sigma^2)

    (the decoder's standard deviation :math:`\sqrt{\beta/4}` and the ``M`` latent draws as ODRL's
    ``importance_sampling_estimator``). Differentiable in ``x`` and in whatever ``mean``, ``std``
    and ``decode`` depend on.

    Args:
        x (torch.Tensor): ``[..., B, d]`` the modelled variable (an action, a next state).
        mean (torch.Tensor): ``[..., B, L]`` the encoder's mean at ``(c, x)``.
        std (torch.Tensor): ``[..., B, L]`` its standard deviation.
        decode (Callable): ``z [M, ..., B, L] -> [M, ..., B, d]``, the decoder's mean given the condition ``c``.
        beta (float): the decoder's variance is ``beta / 4``.
        num_samples (int): ``M``. Defaults to ``1``.
        generator (torch.Generator, optional): for the latent draws (the global RNG when ``None``).

    Returns:
        torch.Tensor: ``[..., B]``.

    Examples:
        A decoder that ignores ``z`` with ``mean = 0, std = 1`` (the prior): the estimate is the
        exact Gaussian log-density of ``x`` around the decoder's output, whatever the draws:

        >>> import math, torch
        >>> x = torch.tensor([[0.5, -1.0]])
        >>> ll = iwae_log_likelihood(x, torch.zeros(1, 3), torch.ones(1, 3), lambda z: torch.zeros(*z.shape[:-1], 2),
        ...                          beta=4.0, num_samples=5)
        >>> torch.allclose(ll, torch.tensor([-0.5 * (0.25 + 1.0) - math.log(2 * math.pi)]))
        True
    """
    if int(num_samples) < 1:
        raise ValueError(f"iwae_log_likelihood: num_samples must be >= 1, got {num_samples}.")
    if not beta > 0:
        raise ValueError(f"iwae_log_likelihood: beta must be > 0, got {beta}.")
    shape = (int(num_samples), *mean.shape)
    eps = torch.randn(shape, dtype=mean.dtype, device=mean.device, generator=generator)
    z = mean.unsqueeze(0) + std.unsqueeze(0) * eps
    dec = decode(z)
    log_px = _normal_log_prob(x.unsqueeze(0), dec, math.sqrt(beta / 4.0))
    log_pz = _normal_log_prob(z, 0.0, 1.0)
    log_qz = _normal_log_prob(z, mean.unsqueeze(0), std.unsqueeze(0))
    return torch.logsumexp(log_px + log_pz - log_qz, dim=0) - math.log(int(num_samples))


def support_mask(log_likelihood: torch.Tensor, epsilon: float) -> torch.Tensor:
    r"""BOSA's supported-transition mask :math:`\mathbb 1[\min_i \widehat{\log p}_i(s' \mid s, a) > \log\epsilon]`.

    Args:
        log_likelihood (torch.Tensor): ``[E, B]`` the ensemble's log-likelihoods.
        epsilon (float): density threshold ``> 0``.

    Returns:
        torch.Tensor: ``[B]`` float, ``1`` for transitions inside the support of every member.

    Examples:
        >>> import math, torch
        >>> ll = torch.tensor([[-1.0, -5.0, 0.0], [-2.0, -1.0, math.log(0.01)]])
        >>> support_mask(ll, 0.01)          # min: [-2, -5, log 0.01]; log 0.01 = -4.6 (strict)
        tensor([1., 0., 0.])
    """
    if not epsilon > 0:
        raise ValueError(f"support_mask: epsilon must be > 0, got {epsilon}.")
    return (log_likelihood.amin(0) > math.log(epsilon)).to(log_likelihood.dtype)


class DynamicsVAEEnsemble(nn.Module):
    r"""``E`` conditional VAEs of ``p(s' | s, a)`` as one module (BOSA's dynamics models; ODRL's
    ``VAE_Dynamics_Ensemble``).

    Encoder ``q_i(z | s, a, s') = N(mu, sigma^2)`` (two hidden layers, ``log sigma`` clamped to
    ``[-4, 15]``), decoder ``s'_hat = dec_i(s, a, z)`` (two hidden layers, linear output), latent
    size ``2 * obs_dim``, ReLU; both are :class:`~tabb_torchrl.pipeline.td3.EnsembleMLP` (weights
    ``[E, in, out]``, no loop over members). Fitted by :meth:`loss` (``MSE(s'_hat, s') + kl_weight *
    KL``, means over members, rows and dimensions, as ODRL's ``vae_dyna_train``).

    Args:
        obs_dim (int): state size.
        action_dim (int): action size.
        ensemble_size (int): members. Defaults to ``5`` (ODRL ``vae_dyna_ensemble``).
        hidden (int): width of the hidden layers. Defaults to ``750`` (ODRL ``vae_dyna_hidden_dim``).

    Keyword Args:
        latent_dim (int, optional): defaults to ``2 * obs_dim`` (ODRL).
        init (str): :data:`~tabb_torchrl.pipeline.td3.INITS`. Defaults to ``"torch"``.

    Examples:
        >>> import torch
        >>> vae = DynamicsVAEEnsemble(3, 2, ensemble_size=5, hidden=8)
        >>> recon, mean, std = vae(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 3))
        >>> recon.shape, mean.shape, vae.log_likelihood(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 3)).shape
        (torch.Size([5, 4, 3]), torch.Size([5, 4, 6]), torch.Size([5, 4]))
    """

    def __init__(self, obs_dim: int, action_dim: int, ensemble_size: int = 5, hidden: int = 750, *,
                 latent_dim: int | None = None, init: str = "torch"):
        super().__init__()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.latent_dim = 2 * self.obs_dim if latent_dim is None else int(latent_dim)
        self.ensemble_size = int(ensemble_size)
        self.encoder = EnsembleMLP(2 * self.obs_dim + self.action_dim, 2 * self.latent_dim, (hidden, hidden),
                                   self.ensemble_size, init=init)
        self.decoder = EnsembleMLP(self.obs_dim + self.action_dim + self.latent_dim, self.obs_dim, (hidden, hidden),
                                   self.ensemble_size, init=init)

    def encode(self, observation: torch.Tensor, action: torch.Tensor, next_observation: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, sigma)`` of every member, ``[E, B, L]`` each."""
        out = self.encoder(torch.cat([observation, action, next_observation], -1))
        mean, log_std = out[..., :self.latent_dim], out[..., self.latent_dim:]
        return mean, log_std.clamp(-4.0, 15.0).exp()

    def decode(self, observation: torch.Tensor, action: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The decoders' next states for latents ``z``: ``[E, B, L] -> [E, B, obs]`` or ``[M, E, B, L] -> [M, E, B, obs]``."""
        sa = torch.cat([observation, action], -1)                                   # [B, obs + act]
        if z.ndim == 3:
            return self.decoder(torch.cat([sa.expand(z.shape[0], -1, -1), z], -1))
        m, e, b, _ = z.shape
        zz = z.transpose(0, 1).reshape(e, m * b, -1)                                 # members first
        out = self.decoder(torch.cat([sa.repeat(m, 1).expand(e, -1, -1), zz], -1))   # [E, M B, obs]
        return out.reshape(e, m, b, -1).transpose(0, 1)

    def forward(self, observation: torch.Tensor, action: torch.Tensor, next_observation: torch.Tensor,
                generator: torch.Generator | None = None):
        """``(s'_hat, mu, sigma)`` with one reparameterised ``z`` per member and row."""
        mean, std = self.encode(observation, action, next_observation)
        z = mean + std * torch.randn(std.shape, dtype=std.dtype, device=std.device, generator=generator)
        return self.decode(observation, action, z), mean, std

    def loss(self, observation, action, next_observation, kl_weight: float = 0.5,
             generator: torch.Generator | None = None) -> torch.Tensor:
        r"""``MSE(s'_hat, s') + kl_weight * KL`` (means over members, rows, dimensions; ODRL ``vae_dyna_train``)."""
        recon, mean, std = self(observation, action, next_observation, generator)
        kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
        return ((recon - next_observation) ** 2).mean() + kl_weight * kl

    def log_likelihood(self, observation, action, next_observation, beta: float = 0.5, num_samples: int = 1,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """:func:`iwae_log_likelihood` of ``s'`` under every member, ``[E, B]``."""
        mean, std = self.encode(observation, action, next_observation)
        return iwae_log_likelihood(next_observation, mean, std, lambda z: self.decode(observation, action, z),
                                   beta, num_samples, generator)


class BOSA(ResumablePrepare, TD3Method):
    r"""BOSA on the TD3 backbone (Liu et al., AAAI 2024): a support mask on the TD loss, a conservative
    penalty on source rows, and a behaviour-support regulariser on the actor.

    Critic (:meth:`critic_terms`): the TD errors of rows whose ``(s, a, s')`` falls outside the
    support of the dynamics ensemble (:func:`support_mask` of the IWAE log-likelihoods) get weight
    ``0`` (they still count in the mean); ``conservative_coef * sum_k mean_source Q_k(s, a)`` is
    added. Actor (:meth:`actor_regularizer`): ``policy_coef * mean[-log beta(pi(s) | s)]``, the
    IWAE of the policy VAE at the actor's action. The backbone's settings for BOSA (TD3 noise 0.2
    clipped at 0.5, an actor step every 2 critic steps, the actor on ``Q_1`` normalised by
    ``mean|Q_1|``, TD errors halved) are in ``recipes/config/algo/bosa.yaml`` (``algo.td3``).

    Args:
        obs_dim (int): state size (passed by the recipe).
        action_dim (int): action size (passed by the recipe).
        max_action (float): the policy VAE's action bound. Defaults to ``1.0`` (the recipe passes the env's).

    Keyword Args:
        policy_coef (float): ``lambda``. Defaults to ``0.1`` (ODRL ``lamda_policy``).
        dynamics_epsilon (float): density threshold of the mask. Defaults to ``0.01`` (ODRL ``epsilon_dyna_exp``).
        conservative_coef (float): ``alpha``. Defaults to ``0.1`` (ODRL ``conservation_coef``).
        ensemble_size (int): dynamics VAEs. Defaults to ``5`` (ODRL ``vae_dyna_ensemble``).
        vae_hidden (int): hidden width of every VAE. Defaults to ``750`` (ODRL ``vae_*_hidden_dim``).
        vae_lr (float): Adam learning rate of both VAEs. Defaults to ``1e-3`` (ODRL ``vae_*_lr``).
        policy_beta (float): the policy VAE's KL weight and IWAE decoder variance ``beta / 4``.
            Defaults to ``0.5`` (ODRL ``vae_policy_beta``).
        dynamics_beta (float): the same for the dynamics VAEs. Defaults to ``0.5`` (ODRL ``vae_dyna_beta``).
        num_samples (int): latent draws of every IWAE estimate. Defaults to ``1`` (ODRL ``num_samples``).
        pretrain_steps (int): Adam steps of the VAEs before RL. Defaults to ``100_000`` (the paper; ODRL
            ``vae_iteration``).
        pretrain_source (int): source rows per pre-training batch. Defaults to ``128`` (ODRL ``batch_size``).
        pretrain_target (int): target rows per pre-training batch. Defaults to ``128``.
        dynamics_data (str): ``"target"`` (default **[reconstructed]**) or ``"mixed"`` (ODRL), see
            :data:`DYNAMICS_DATA`.
        init (str): initialisation of the dynamics VAEs (:data:`~tabb_torchrl.pipeline.td3.INITS`).
            Defaults to ``"torch"`` **[reconstructed]** (ODRL's ``EnsembleFC``: ``"normal_fmod"``).
        seed (int, optional): seed of the pre-training draws; ``None`` (default) draws it from the run's
            torch RNG **[reconstructed]**.

    Examples:
        >>> import math, torch
        >>> from tabb_torchrl.pipeline.td3 import TD3Batch
        >>> m = BOSA(obs_dim=2, action_dim=1, vae_hidden=8, conservative_coef=0.1)
        >>> b = TD3Batch(torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, 2), torch.zeros(3),
        ...              torch.tensor([0, 0, 1]))
        >>> q = torch.tensor([[1.0, 3.0, 10.0], [2.0, 2.0, 10.0]])
        >>> terms = m.critic_terms(b, q)
        >>> terms.extra                               # 0.1 * (mean(1, 3) + mean(2, 2)) on the two source rows
        tensor(0.4000)
        >>> terms.row_weight.shape, m.pretrain_steps
        (torch.Size([3]), 100000)
    """

    name = "bosa"

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        *,
        policy_coef: float = 0.1,
        dynamics_epsilon: float = 0.01,
        conservative_coef: float = 0.1,
        ensemble_size: int = 5,
        vae_hidden: int = 750,
        vae_lr: float = 1e-3,
        policy_beta: float = 0.5,
        dynamics_beta: float = 0.5,
        num_samples: int = 1,
        pretrain_steps: int = 100_000,
        pretrain_source: int = 128,
        pretrain_target: int = 128,
        dynamics_data: str = "target",
        init: str = "torch",
        seed: int | None = None,
    ):
        super().__init__()
        for key, value in (("policy_coef", policy_coef), ("conservative_coef", conservative_coef)):
            if not value >= 0:
                raise ValueError(f"BOSA: {key} must be >= 0, got {value}.")
        for key, value in (("dynamics_epsilon", dynamics_epsilon), ("vae_lr", vae_lr), ("policy_beta", policy_beta),
                           ("dynamics_beta", dynamics_beta), ("max_action", max_action)):
            if not value > 0:
                raise ValueError(f"BOSA: {key} must be > 0, got {value}.")
        if int(num_samples) < 1 or int(ensemble_size) < 1 or int(vae_hidden) < 1:
            raise ValueError("BOSA: num_samples, ensemble_size and vae_hidden must be >= 1.")
        if int(pretrain_steps) < 0 or int(pretrain_source) < 0 or int(pretrain_target) < 1:
            raise ValueError("BOSA: pretrain_steps and pretrain_source must be >= 0, pretrain_target >= 1.")
        if dynamics_data not in DYNAMICS_DATA:
            raise ValueError(f"BOSA: dynamics_data must be one of {DYNAMICS_DATA}, got {dynamics_data!r}.")
        if init not in INITS:
            raise ValueError(f"BOSA: init must be one of {INITS}, got {init!r}.")
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.policy_coef, self.conservative_coef = float(policy_coef), float(conservative_coef)
        self.dynamics_epsilon = float(dynamics_epsilon)
        self.vae_lr = float(vae_lr)
        self.policy_beta, self.dynamics_beta = float(policy_beta), float(dynamics_beta)
        self.num_samples = int(num_samples)
        self.pretrain_steps = int(pretrain_steps)
        self.pretrain_source, self.pretrain_target = int(pretrain_source), int(pretrain_target)
        self.dynamics_data = dynamics_data
        self.seed = None if seed is None else int(seed)
        self.policy_vae = BehaviorVAE(self.obs_dim, self.action_dim, hidden=int(vae_hidden), max_action=float(max_action))
        self.dynamics_vae = DynamicsVAEEnsemble(self.obs_dim, self.action_dim, int(ensemble_size), int(vae_hidden),
                                                init=init)
        self.requires_grad_(False)  # trained only in prepare(); never touched by the RL optimisers
        self.register_buffer("pretrain_policy_loss", torch.full((), float("nan")))
        self.register_buffer("pretrain_dynamics_loss", torch.full((), float("nan")))

    # ------------------------------------------------------------------ pre-training
    def prepare(self, source, target, *, device: torch.device | None = None, progress: bool = False,
                checkpoint: Checkpoint | None = None) -> None:
        """Fit the policy VAE and the dynamics VAEs for ``pretrain_steps`` Adam steps each, once before RL.

        Each step draws ``pretrain_source`` source rows and ``pretrain_target`` target rows
        (uniformly, with replacement): the policy VAE trains on their ``(s, a)`` (BehaviorVAE's
        ``MSE + policy_beta KL``), the dynamics VAEs on their ``(s, a, s')`` (``dynamics_data="mixed"``)
        or on as many target rows (``"target"``). Draws and latent noise come from the method's own
        generators (``seed``); both models are frozen afterwards.

        Resumable (:class:`~tabb_torchrl.methods.base.ResumablePrepare`): ``checkpoint()`` is called
        after every step; :meth:`prepare_state` then holds the step, both optimisers, both generators
        and the seed, and a ``prepare`` after :meth:`load_prepare_state` continues from that step.
        """
        if device is not None:
            self.to(device)
        dev = self.pretrain_policy_loss.device
        keys = ("observation", "action", ("next", "observation"))
        tgt = [target.get(k).to(dev) for k in keys]
        src = [source.get(k).to(dev) for k in keys] if source is not None and self.pretrain_source else None
        n_tgt = tgt[0].shape[0]
        if n_tgt == 0:
            raise ValueError("BOSA.prepare needs target transitions.")
        with self.preparing(checkpoint) as run:
            self._fit_vaes(src, tgt, dev, run.resume, run.safe_point, progress)

    def _fit_vaes(self, src, tgt, dev, resume, safe_point, progress: bool) -> None:
        n_tgt = tgt[0].shape[0]
        if resume is None:
            seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        else:
            seed = int(resume["seed"])
        index_gen = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator(device=dev).manual_seed(seed + 1)
        n_src = 0 if src is None else src[0].shape[0]
        b_src = self.pretrain_source if n_src else 0
        self.requires_grad_(True)
        opt_pi = torch.optim.Adam(self.policy_vae.parameters(), lr=self.vae_lr)
        opt_dyn = torch.optim.Adam(self.dynamics_vae.parameters(), lr=self.vae_lr)
        step, last = 0, None  # last: the losses of the last step (detached)
        if resume is not None:
            step, last = int(resume["step"]), resume["last_loss"]
            opt_pi.load_state_dict(resume["policy_optimizer"])
            opt_dyn.load_state_dict(resume["dynamics_optimizer"])
            index_gen.set_state(resume["index_generator"])
            noise_gen.set_state(resume["noise_generator"])

        def state() -> dict:
            return {"seed": seed, "step": step, "last_loss": last, "policy_optimizer": opt_pi.state_dict(),
                    "dynamics_optimizer": opt_dyn.state_dict(), "index_generator": index_gen.get_state(),
                    "noise_generator": noise_gen.get_state()}

        from tqdm.auto import tqdm

        bar = tqdm(total=self.pretrain_steps, initial=step, desc="BOSA VAEs", disable=not progress, mininterval=1.0)
        try:
            while step < self.pretrain_steps:
                i_tgt = torch.randint(n_tgt, (self.pretrain_target,), generator=index_gen).to(dev)
                mixed = [x[i_tgt] for x in tgt]
                if b_src:
                    i_src = torch.randint(n_src, (b_src,), generator=index_gen).to(dev)
                    mixed = [torch.cat([t, s[i_src]]) for t, s in zip(mixed, src)]
                loss_pi = self.policy_vae.loss(mixed[0], mixed[1], kl_weight=self.policy_beta, generator=noise_gen)
                opt_pi.zero_grad(set_to_none=True)
                loss_pi.backward()
                opt_pi.step()
                if self.dynamics_data == "mixed":
                    rows = mixed
                else:
                    i_dyn = torch.randint(n_tgt, (self.pretrain_target + b_src,), generator=index_gen).to(dev)
                    rows = [x[i_dyn] for x in tgt]
                loss_dyn = self.dynamics_vae.loss(*rows, kl_weight=self.dynamics_beta, generator=noise_gen)
                opt_dyn.zero_grad(set_to_none=True)
                loss_dyn.backward()
                opt_dyn.step()
                step, last = step + 1, (loss_pi.detach(), loss_dyn.detach())
                bar.update(1)
                safe_point(state)
        finally:
            bar.close()
            self.requires_grad_(False)
        if last is not None:
            self.pretrain_policy_loss.fill_(float(last[0]))
            self.pretrain_dynamics_loss.fill_(float(last[1]))
            _LOG.info("BOSA: VAEs trained for %d steps (last policy VAE loss %.4g, dynamics VAE loss %.4g)",
                      self.pretrain_steps, float(last[0]), float(last[1]))

    # ------------------------------------------------------------------ the hooks
    def critic_terms(self, batch: TD3Batch, q: torch.Tensor) -> CriticTerms:
        """The support mask of every row and the conservative penalty on the source rows."""
        with torch.no_grad():
            ll = self.dynamics_vae.log_likelihood(batch.observation, batch.action, batch.next_observation,
                                                  self.dynamics_beta, self.num_samples)
            mask = support_mask(ll, self.dynamics_epsilon)
        src = batch.domain == SOURCE  # masked means, no data-dependent shapes (torch.compile keeps one graph)
        extra = self.conservative_coef * masked_mean(q, src.unsqueeze(0).expand_as(q), dim=-1).sum()
        metrics = {
            "bosa_mask_ratio": mask.mean(),
            "bosa_mask_ratio_source": masked_mean(mask, src),
            "bosa_mask_ratio_target": masked_mean(mask, ~src),
            "bosa_min_log_likelihood": ll.amin(0).mean(),
            "bosa_conservative_term": extra.detach(),
        }
        return CriticTerms(row_weight=mask, extra=extra, metrics=metrics)

    def policy_neg_log_likelihood(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``-log beta(a | s)`` of the policy VAE (:func:`iwae_log_likelihood`), ``[B]``, differentiable in ``a``."""
        vae = self.policy_vae
        mean, std = vae.encode(observation, action)

        def decode(z):
            return vae.decode(observation.unsqueeze(0).expand(z.shape[0], -1, -1), z)

        return -iwae_log_likelihood(action, mean, std, decode, self.policy_beta, self.num_samples)

    def actor_regularizer(self, batch: TD3Batch, action: torch.Tensor, qvalues) -> tuple[torch.Tensor, dict]:
        """``policy_coef * mean[-log beta(pi(s) | s)]`` over every row of the batch."""
        neg = self.policy_neg_log_likelihood(batch.observation, action)
        return self.policy_coef * neg.mean(), {"bosa_neg_log_beta": neg.detach().mean(),
                                               "bosa_neg_log_beta_max": neg.detach().amax()}

    def extra_repr(self) -> str:
        return (f"policy_coef={self.policy_coef}, dynamics_epsilon={self.dynamics_epsilon}, "
                f"conservative_coef={self.conservative_coef}, num_samples={self.num_samples}, "
                f"pretrain_steps={self.pretrain_steps}, dynamics_data={self.dynamics_data!r}")
