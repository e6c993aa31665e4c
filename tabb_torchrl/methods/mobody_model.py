"""MOBODY's dynamics model and its training (Guo, Yang, Xu & Liu, "MOBODY: Model Based Off-Dynamics
Offline Reinforcement Learning", arXiv 2506.08460; authors' ``algo/dynamics/mobody_dynamics.py`` and
``mobody_module.py``), used by :class:`~tabb_torchrl.methods.MOBODY` (:mod:`tabb_torchrl.methods.mobody`,
which re-exports every name here).

:class:`MOBODYDynamics` is an ensemble of members, each a state encoder and a transition decoder
shared by both domains with one action encoder per domain, and a reward model::

    z_s = f(s),  z_a = g_d(z_s, a),  s'_hat = h(z_s + z_a)         d in {source, target}

:func:`train_mobody_dynamics` fits it on both datasets (resumable after every epoch);
:func:`ensemble_disagreement` is the members' disagreement that penalises and filters model rows.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch
from torch import nn

from tabb_torchrl.keys import SOURCE, TARGET
from tabb_torchrl.pipeline.td3 import EnsembleMLP

__all__ = ["MOBODYDynamics", "train_mobody_dynamics", "ensemble_disagreement"]

_DOMAINS = {"source": SOURCE, "target": TARGET}


def ensemble_disagreement(mean: torch.Tensor) -> torch.Tensor:
    r"""The model's uncertainty :math:`u = \max_i \lVert \hat s'_i - \tfrac1E \sum_j \hat s'_j \rVert_2` (``pairwise-diff``).

    Args:
        mean (torch.Tensor): ``[E, B, d]`` the members' predicted next states.

    Returns:
        torch.Tensor: ``[B]``.

    Examples:
        >>> import torch
        >>> ensemble_disagreement(torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]], [[4.0, 0.0]]]))   # mean (2, 0)
        tensor([2.])
    """
    return (mean - mean.mean(0, keepdim=True)).norm(dim=-1).amax(0)




class MOBODYDynamics(nn.Module):
    r"""MOBODY's dynamics model: ``E`` members of a shared state encoder and transition decoder with
    one action encoder per domain, and a reward model, each an :class:`~tabb_torchrl.pipeline.td3.EnsembleMLP`.

    * state encoder ``f``: ``s -> (mu, log var)`` of ``z_s`` (``latent_dim``; sampled in training, ``mu`` otherwise);
    * action encoders ``g_source``, ``g_target``: ``[z_s, a] -> z_a`` (the mean half of their output);
    * transition decoder ``h``: ``z -> s``; next state ``s'_hat = h(z_s + z_a)``, reconstruction ``h(z_s)``;
    * reward model ``R``: ``[s, a, s'] -> r`` (the mean of a mean / log-variance head).

    Swish (SiLU) activations and truncated-normal initialisation (std ``1 / (2 sqrt(fan_in))``) as the
    authors' ``MOBODYModule``; ``elites`` holds the members used for sampling.

    Args:
        obs_dim (int): state size.
        action_dim (int): action size.

    Keyword Args:
        ensemble_size (int): members. Defaults to ``7``.
        num_elites (int): elite members. Defaults to ``5``.
        latent_dim (int): size of ``z_s``, ``z_a``. Defaults to ``16``.
        hidden (int): width of ``f``, ``h``, ``R`` (two hidden layers). Defaults to ``256``.
        action_hidden (int): width of the action encoders (one hidden layer). Defaults to ``32``.

    Examples:
        >>> import torch
        >>> m = MOBODYDynamics(3, 2, ensemble_size=7, hidden=16)
        >>> m.predict(torch.zeros(4, 3), torch.zeros(4, 2), "target").shape     # [E, B, obs]
        torch.Size([7, 4, 3])
        >>> nxt, reward, u = m.sample_step(torch.zeros(4, 3), torch.zeros(4, 2))
        >>> nxt.shape, reward.shape, u.shape, m.elites.tolist()
        (torch.Size([4, 3]), torch.Size([4]), torch.Size([4]), [0, 1, 2, 3, 4])
    """

    def __init__(self, obs_dim: int, action_dim: int, *, ensemble_size: int = 7, num_elites: int = 5,
                 latent_dim: int = 16, hidden: int = 256, action_hidden: int = 32):
        super().__init__()
        if not 1 <= int(num_elites) <= int(ensemble_size):
            raise ValueError(f"MOBODYDynamics: need 1 <= num_elites <= ensemble_size, got {num_elites}, {ensemble_size}.")
        self.obs_dim, self.action_dim, self.latent_dim = int(obs_dim), int(action_dim), int(latent_dim)
        self.ensemble_size = e = int(ensemble_size)
        kw = {"activation": "silu", "init": "trunc_normal"}
        self.state_encoder = EnsembleMLP(self.obs_dim, 2 * self.latent_dim, (hidden, hidden), e, **kw)
        self.action_encoders = nn.ModuleDict({
            name: EnsembleMLP(self.latent_dim + self.action_dim, 2 * self.latent_dim, (action_hidden,), e, **kw)
            for name in _DOMAINS})
        self.decoder = EnsembleMLP(self.latent_dim, self.obs_dim, (hidden, hidden), e, **kw)
        self.reward_model = EnsembleMLP(2 * self.obs_dim + self.action_dim, 2, (hidden, hidden), e, **kw)
        self.register_buffer("elites", torch.arange(int(num_elites)))

    def encode_state(self, observation: torch.Tensor, *, sample: bool = False,
                     generator: torch.Generator | None = None):
        """``(z_s, mu, log_var)``, each ``[E, B, L]``; ``z_s = mu`` unless ``sample``."""
        out = self.state_encoder(observation)
        mu, log_var = out[..., :self.latent_dim], out[..., self.latent_dim:]
        if not sample:
            return mu, mu, log_var
        eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        return mu + eps * torch.exp(0.5 * log_var), mu, log_var

    def action_latent(self, z: torch.Tensor, action: torch.Tensor, domain: str) -> torch.Tensor:
        """``z_a = g_domain(z_s, a)``, ``[E, B, L]``."""
        if action.ndim == 2:
            action = action.unsqueeze(0).expand(z.shape[0], -1, -1)
        return self.action_encoders[domain](torch.cat([z, action], -1))[..., :self.latent_dim]

    def predict(self, observation: torch.Tensor, action: torch.Tensor, domain: str = "target") -> torch.Tensor:
        """Every member's next state ``h(mu_s + z_a)`` (no sampling), ``[E, B, obs]``."""
        z, _, _ = self.encode_state(observation)
        return self.decoder(z + self.action_latent(z, action, domain))

    def reward(self, observation: torch.Tensor, action: torch.Tensor, next_observation: torch.Tensor) -> torch.Tensor:
        """Every member's predicted reward, ``[E, B]``."""
        e = self.ensemble_size
        if next_observation.ndim == 3:
            observation = observation.unsqueeze(0).expand(e, -1, -1) if observation.ndim == 2 else observation
            action = action.unsqueeze(0).expand(e, -1, -1) if action.ndim == 2 else action
        return self.reward_model(torch.cat([observation, action, next_observation], -1))[..., 0]

    def loss(self, domain: str, observation, action, next_observation, reward, *, encoder_weight: float = 1.0,
             reward_weight: float = 1.0, recon_weight: float = 100.0, kl_weight: float = 0.05,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        r"""The training loss of one domain's rows ``[E, B, ...]`` (each member its own rows), summed over members.

        .. math::

            L = \underbrace{\lVert h(z_s + z_a) - s' \rVert^2}_{\text{transition}}
              + w_{\text{enc}} \Big( 100 \big(\lVert h(z_s) - s\rVert^2 + \lVert h(z_{s'}) - s'\rVert^2\big)
              + 0.05 (\mathrm{KL}_s + \mathrm{KL}_{s'}) + \lVert z_s + z_a - \mathrm{sg}(z_{s'})\rVert^2 \Big)
              + w_r \big( (R(s, a, \tilde s') - r)^2 + (R(s, a, s') - r)^2 \big)

        (means over rows and dimensions; ``z`` sampled; ``\tilde s' = s'_{hat} + \sigma_E \epsilon``,
        ``\sigma_E`` the members' spread). The authors weight the encoder terms 5 on target rows and
        1 on source rows and the reward terms 1 and 0.01.
        """
        z, mu, log_var = self.encode_state(observation, sample=True, generator=generator)
        za = self.action_latent(z, action, domain)
        pred = self.decoder(z + za)
        transition = ((pred - next_observation) ** 2).mean((1, 2)).sum()
        z2, mu2, log_var2 = self.encode_state(next_observation, sample=True, generator=generator)
        recon = (((self.decoder(z) - observation) ** 2).mean((1, 2)).sum()
                 + ((self.decoder(z2) - next_observation) ** 2).mean((1, 2)).sum())

        def kl(m, lv):
            return (-0.5 * (1 + lv - m.pow(2) - lv.exp())).mean((1, 2)).sum()

        kl_term = kl(mu, log_var) + kl(mu2, log_var2)
        latent = ((z + za - z2.detach()) ** 2).mean((1, 2)).sum()
        encoder = recon_weight * recon + kl_weight * kl_term + latent
        noise = torch.randn(pred.shape, dtype=pred.dtype, device=pred.device, generator=generator)
        noisy = pred + noise * pred.std(0, keepdim=True)
        reward_term = (((self.reward(observation, action, noisy) - reward) ** 2).mean(1).sum()
                       + ((self.reward(observation, action, next_observation) - reward) ** 2).mean(1).sum())
        total = transition + encoder_weight * encoder + reward_weight * reward_term
        return total, {"transition": transition.detach(), "recon": recon.detach(), "kl": kl_term.detach(),
                       "latent": latent.detach(), "reward": reward_term.detach()}

    @torch.no_grad()
    def transition_error(self, observation, action, next_observation, domain: str = "target") -> torch.Tensor:
        """Every member's mean squared error of ``s'`` (no sampling), ``[E]``."""
        return ((self.predict(observation, action, domain) - next_observation) ** 2).mean((1, 2))

    @torch.no_grad()
    def sample_step(self, observation: torch.Tensor, action: torch.Tensor,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of the target model (authors' ``step``): ``(s', r_hat, u)``, ``[B, obs]``, ``[B]``, ``[B]``.

        Each member's mean is perturbed by Gaussian noise of the members' spread; one elite member
        per row is drawn; the reward is the members' mean prediction at that next state; ``u`` is
        :func:`ensemble_disagreement` of the means (no penalty applied here).
        """
        mean = self.predict(observation, action, "target")                        # [E, B, obs]
        noise = torch.randn(mean.shape, dtype=mean.dtype, generator=generator).to(mean.device)
        samples = mean + noise * mean.std(0, keepdim=True)
        b = observation.shape[0]
        pick = torch.randint(self.elites.numel(), (b,), generator=generator).to(mean.device)
        nxt = samples[self.elites[pick], torch.arange(b, device=mean.device)]
        reward = self.reward(observation, action, nxt).mean(0)
        return nxt, reward, ensemble_disagreement(mean)


def train_mobody_dynamics(model: MOBODYDynamics, source: tuple, target: tuple, *, batch_size: int = 256,
                          lr: float = 1e-3, target_passes: int = 3, target_encoder_weight: float = 5.0,
                          source_encoder_weight: float = 1.0, source_reward_weight: float = 0.01,
                          holdout_fraction: float = 0.2, max_source_holdout: int = 1000,
                          max_target_holdout: int = 500, max_epochs: int | None = None, patience: int = 5,
                          improvement: float = 0.01, generator: torch.Generator | None = None,
                          noise_generator: torch.Generator | None = None, progress: bool = False,
                          resume: Mapping | None = None,
                          safe_point: Callable[[Callable[[], dict]], None] | None = None) -> dict:
    """Fit :class:`MOBODYDynamics` on source and target transitions (authors' ``MOBODYEnsembleDynamics.train``).

    ``source`` / ``target`` are ``(s, a, s', r)`` tensors. Hold-out rows (``holdout_fraction``, at
    most 1,000 source / 500 target) are set aside; each member trains on its own bootstrap sample
    of the rest. One epoch is a pass over the source rows (``model.loss("source", ...)``, encoder
    weight 1, reward weight 0.01) then ``target_passes`` passes over the target rows (weight 5, 1),
    ``batch_size`` rows per member and step, Adam (``lr``). After each epoch every member whose
    target hold-out error improved by more than ``improvement`` (relative) is saved; training
    stops after ``patience`` epochs without such an improvement (or ``max_epochs``); the saved
    members are restored and the ``num_elites`` best become the elites.

    Resumable: after every epoch ``safe_point`` (if given) is called with a function that returns the
    training's state (epoch, epochs without improvement, the best members so far and their hold-out
    errors, the bootstrap orders, the optimiser and both generators; the current weights are
    ``model``'s); given back as ``resume`` (with ``model`` holding the weights of that moment), the
    training continues with the next epoch and ends as an uninterrupted one. Without
    ``noise_generator`` the latent noise comes from the global RNG, which the caller then restores too.

    Args:
        model (MOBODYDynamics): trained in place (on its own device).
        source (tuple): ``(s, a, s', r)`` source tensors.
        target (tuple): ``(s, a, s', r)`` target tensors.

    Keyword Args:
        generator (torch.Generator, optional): the split, bootstrap and order draws (seed ``0`` when ``None``).
        noise_generator (torch.Generator, optional): the latent and reward noise (on the model's device).
        resume (Mapping, optional): a state read through ``safe_point``.
        safe_point (Callable, optional): e.g. :meth:`~tabb_torchrl.methods.base.PrepareProgress.safe_point`.

    Returns:
        ``{"epochs", "holdout_mse" (per member), "elites"}``.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> rows = lambda n: (torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g),
        ...                   torch.randn(n, 3, generator=g), torch.randn(n, generator=g))
        >>> model = MOBODYDynamics(3, 2, ensemble_size=3, num_elites=2, hidden=8, latent_dim=4)
        >>> states = []
        >>> info = train_mobody_dynamics(model, rows(40), rows(30), batch_size=16, target_passes=1, max_epochs=2,
        ...                              safe_point=lambda read: states.append(read()["epoch"]))
        >>> info["epochs"], states, len(info["elites"])
        (2, [1, 2], 2)
    """
    dev = model.elites.device
    gen = generator if generator is not None else torch.Generator().manual_seed(0)

    def split(data, cap):
        n = data[0].shape[0]
        n_hold = min(int(n * holdout_fraction), cap)
        perm = torch.randperm(n, generator=gen)
        hold, train = perm[:n_hold].to(dev), perm[n_hold:].to(dev)
        return [x.to(dev)[train] for x in data], [x.to(dev)[hold] for x in data]

    src_train, _ = split(source, max_source_holdout)
    tgt_train, tgt_hold = split(target, max_target_holdout)
    if tgt_hold[0].shape[0] == 0:
        tgt_hold = tgt_train  # too few target rows for a hold-out: select on the training rows
    e = model.ensemble_size
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    boot = {name: torch.randint(d[0].shape[0], (e, d[0].shape[0]), generator=gen)
            for name, d in (("source", src_train), ("target", tgt_train)) if d[0].shape[0] > 0}
    best_loss = torch.full((e,), float("inf"))
    best_state = {k: v.detach().clone() for k, v in model.named_parameters()}
    stale, epoch = 0, 0
    if resume is not None:  # the split above is recomputed (the same draws); the rest continues
        epoch, stale = int(resume["epoch"]), int(resume["stale"])
        best_loss = resume["best_loss"].detach().cpu().clone()
        best_state = {k: resume["best_state"][k].to(v.device).clone() for k, v in model.named_parameters()}
        boot = {name: order.cpu().clone() for name, order in resume["bootstrap"].items()}
        optimizer.load_state_dict(resume["optimizer"])
        gen.set_state(resume["generator"])
        if noise_generator is not None:
            noise_generator.set_state(resume["noise_generator"])

    def state() -> dict:
        return {"epoch": epoch, "stale": stale, "best_loss": best_loss, "best_state": best_state, "bootstrap": boot,
                "optimizer": optimizer.state_dict(), "generator": gen.get_state(),
                "noise_generator": None if noise_generator is None else noise_generator.get_state()}

    def done() -> bool:
        return stale >= patience or (max_epochs is not None and epoch >= max_epochs)

    passes = [("source", src_train, source_encoder_weight, source_reward_weight)] if "source" in boot else []
    passes += [("target", tgt_train, target_encoder_weight, 1.0)] * int(target_passes)
    from tqdm.auto import tqdm

    bar = tqdm(desc="MOBODY dynamics (epochs)", initial=epoch, disable=not progress, mininterval=1.0)
    while epoch == 0 or not done():  # at least one epoch
        epoch += 1
        for domain, data, enc_w, rew_w in passes:
            idx_all = boot[domain]
            n = idx_all.shape[1]
            for k in range(math.ceil(n / batch_size)):
                idx = idx_all[:, k * batch_size:(k + 1) * batch_size].to(dev)                 # [E, b]
                s, a, s2, r = (x[idx] for x in data)
                loss, _ = model.loss(domain, s, a, s2, r, encoder_weight=enc_w, reward_weight=rew_w,
                                     generator=noise_generator)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        for name in boot:  # a new order of each member's bootstrap rows
            boot[name] = torch.gather(boot[name], 1, torch.argsort(torch.rand(boot[name].shape, generator=gen), 1))
        err = model.transition_error(tgt_hold[0], tgt_hold[1], tgt_hold[2]).cpu()
        better = (best_loss - err) / best_loss > improvement
        better |= torch.isinf(best_loss)
        if bool(better.any()):
            best_loss = torch.where(better, err, best_loss)
            with torch.no_grad():
                for k, v in model.named_parameters():
                    best_state[k][better.to(v.device)] = v[better.to(v.device)]
            stale = 0
        else:
            stale += 1
        bar.update(1)
        bar.set_postfix(holdout=f"{float(best_loss.min()):.4g}")
        if safe_point is not None:
            safe_point(state)
    bar.close()
    with torch.no_grad():
        for k, v in model.named_parameters():
            v.copy_(best_state[k])
        model.elites.copy_(torch.argsort(best_loss)[:model.elites.numel()].to(dev))
    return {"epochs": epoch, "holdout_mse": best_loss, "elites": model.elites.tolist()}
