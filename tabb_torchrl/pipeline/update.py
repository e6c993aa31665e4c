"""The RL update of the recipe, behind one interface: ``update() -> metrics``.

:func:`make_rl_update` returns, for ``optim.update``:

* ``"fused"`` (default): :class:`~tabb_torchrl.objectives.FastCrossDomainUpdate`, the
  flat-tensor step (indices from the sampler's public draw, rows from a view of the
  storage; its loss function compiled with ``compile.enabled``);
* ``"modular"``: :class:`ModularUpdate`, the composable TorchRL path
  (``rb.sample()`` -> the loss module -> Adam steps -> ``SoftUpdate``).

Both call :func:`~tabb_torchrl.objectives.cross_domain_losses` with the same method
on the parameters of the same loss module, so they train the same thing (a test
checks equal losses and parameters) and share one checkpoint format.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
from tensordict import TensorDictBase

from tabb_torchrl.objectives.flat import optimizer_step
from tabb_torchrl.pipeline.config import ConfigError

__all__ = ["ModularUpdate", "make_rl_update", "UPDATE_MODES"]

#: Values of ``optim.update``.
UPDATE_MODES = ("fused", "modular")


class ModularUpdate:
    """One RL step through TorchRL's pieces: ``rb.sample()``, the loss module, the optimisers, ``SoftUpdate``.

    Args:
        loss_module (CrossDomainIQLLoss): the loss (its method edits the source rows).
        replay_buffer (ReplayBuffer): gives the batches (its transforms run at ``sample()``).
        optimizers (mapping or sequence of torch.optim.Optimizer): stepped in order.
        target_updater (SoftUpdate): the target-critic update.

    Keyword Args:
        compile (bool): ``torch.compile`` the step on the batch. Defaults to ``False``.
        mode (str, optional): ``torch.compile`` mode.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.objectives import SoftUpdate
        >>> from tabb_torchrl import make_actor, make_latent_qvalue, make_latent_value
        >>> from tabb_torchrl.data import make_source_target_buffer
        >>> from tabb_torchrl.objectives import CrossDomainIQLLoss
        >>> def data(n):
        ...     return TensorDict({"observation": torch.randn(n, 3), "action": torch.rand(n, 2) * 2 - 1,
        ...         ("next", "observation"): torch.randn(n, 3), ("next", "reward"): torch.randn(n, 1),
        ...         ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool)}, [n])
        >>> rb = make_source_target_buffer(data(20), data(10), n_source=4, n_target=4, seed=0)
        >>> loss = CrossDomainIQLLoss(make_actor(3, 2, hidden_sizes=(8,)), make_latent_qvalue(5, hidden_sizes=(8,)),
        ...                           make_latent_value(3, hidden_sizes=(8,)), features="raw")
        >>> opt = torch.optim.Adam(loss.parameters(), lr=1e-3)
        >>> update = ModularUpdate(loss, rb, [opt], SoftUpdate(loss, tau=0.005))
        >>> float(update()["loss_qvalue"]) > 0
        True
    """

    def __init__(self, loss_module, replay_buffer, optimizers, target_updater, *, compile: bool = False,
                 mode: str | None = None):
        self.loss_module = loss_module
        self.replay_buffer = replay_buffer
        self.optimizers = list(optimizers.values()) if isinstance(optimizers, Mapping) else list(optimizers)
        self.target_updater = target_updater
        self._step = torch.compile(self.step, mode=mode) if compile else self.step

    def step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Losses, backward, optimiser steps, soft update and the method's hook on one batch."""
        out = self.loss_module(batch)
        (out["loss_qvalue"] + out["loss_value"] + out["loss_actor"]).backward()
        optimizer_step(self.optimizers)
        self.target_updater.step()
        metrics = {k: v.detach() for k, v in out.items()}
        method = self.loss_module.method
        if method.has_learn:
            rows, n_source = self.loss_module.rows(batch)
            metrics.update(method.learn(rows, n_source, self.loss_module.networks().value_detached))
        method.after_update()
        return metrics

    def __call__(self) -> dict[str, torch.Tensor]:
        """Sample a batch (``rb.sample()``) and run :meth:`step`."""
        return self._step(self.replay_buffer.sample())


def make_rl_update(
    mode: str,
    loss_module,
    replay_buffer,
    optimizers,
    target_updater,
    *,
    compile: bool = False,
    compile_mode: str | None = None,
) -> Callable[[], dict[str, torch.Tensor]]:
    """The RL update of ``optim.update=mode``: a callable ``update() -> metrics`` (detached tensors).

    Args:
        mode (str): ``"fused"`` or ``"modular"``.
        loss_module (CrossDomainIQLLoss): the loss whose parameters are trained.
        replay_buffer: from :func:`~tabb_torchrl.data.make_source_target_buffer`.
        optimizers (mapping of torch.optim.Optimizer): critic, value and actor optimisers.
        target_updater (SoftUpdate): the target-critic update (its ``tau`` is the Polyak rate).

    Keyword Args:
        compile (bool): ``torch.compile`` the step.
        compile_mode (str, optional): ``torch.compile`` mode.

    Raises:
        ConfigError: unknown ``mode``.

    Examples:
        >>> make_rl_update("fast", None, None, {}, None)
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: optim.update must be one of ('fused', 'modular'), got 'fast'.
    """
    if mode not in UPDATE_MODES:
        raise ConfigError(f"optim.update must be one of {UPDATE_MODES}, got {mode!r}.")
    if mode == "modular":
        return ModularUpdate(loss_module, replay_buffer, optimizers, target_updater, compile=compile,
                             mode=compile_mode)
    from tabb_torchrl.objectives import FastCrossDomainUpdate

    return FastCrossDomainUpdate(loss_module, replay_buffer, optimizers, polyak=1.0 - float(target_updater.eps),
                                 compile=compile, mode=compile_mode)
