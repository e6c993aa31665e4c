"""CQL (Kumar et al., "Conservative Q-Learning for Offline Reinforcement Learning", NeurIPS 2020,
arXiv 2006.04779) on source ∪ target: TorchRL's :class:`~torchrl.objectives.CQLLoss` with its
offline MuJoCo defaults, as a separate update path of the recipe (``algo=cql``).

CQL does not fit the cross-domain IQL core (a SAC-style critic and actor, no value network), so
it is built here and selected by the recipe by name: :func:`make_cql` gives the TanhNormal actor,
the twin critic on raw states, the loss, its target-network updater and its optimisers;
:func:`make_cql_update` gives the update of ``optim.update``, with the interface of
:class:`~tabb_torchrl.pipeline.update.ModularUpdate` (``update() -> metrics``) on the recipe's
source/target buffer (``data.n_source + data.n_target`` rows per batch, one pooled loss):
:class:`~tabb_torchrl.pipeline.cql_fused.FusedCQLUpdate` (``fused``, the default), which computes
``CQLLoss``'s losses exactly on plain tensors, or :class:`CQLUpdate` (``modular``), TorchRL's
``CQLLoss`` module itself.

The defaults are those of TorchRL's ``sota-implementations/cql/offline_config.yaml`` (the offline
MuJoCo example); ``docs/methods/cql.md`` lists them and where they differ from the paper's code.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from tensordict import TensorDictBase
from torch import nn

from tabb_torchrl.pipeline.config import ConfigError, _get

__all__ = [
    "CQL_DEFAULTS",
    "LAGRANGE_UPDATES",
    "CQLUpdate",
    "paper_lagrange_losses",
    "make_cql_actor",
    "make_cql_qvalue",
    "make_cql",
    "make_cql_update",
]

#: ``algo.cql`` defaults: TorchRL's ``sota-implementations/cql/offline_config.yaml`` (``loss`` and
#: ``model`` sections, ``optim.policy_eval_start``), plus ``lagrange_update`` (ours).
CQL_DEFAULTS = {
    "loss_function": "l2",
    "temperature": 1.0,
    "min_q_weight": 1.0,
    "max_q_backup": False,
    "deterministic_backup": False,
    "num_random": 10,
    "with_lagrange": True,
    "lagrange_thresh": 5.0,
    "lagrange_update": "paper",
    "policy_eval_start": 40_000,
    "default_policy_scale": 1.0,
    "scale_lb": 0.1,
}

#: How the Lagrange multiplier ``alpha'`` enters the update (``with_lagrange=true``): ``"paper"``
#: (the authors' code: critic loss ``+ alpha' * CQL``, ``alpha'`` trained on its own loss only) or
#: ``"torchrl"`` (TorchRL's example: the losses summed and back-propagated once).
LAGRANGE_UPDATES = ("paper", "torchrl")

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU, "mish": nn.Mish}


def make_cql_actor(
    obs_dim: int,
    action_dim: int,
    low: torch.Tensor | float = -1.0,
    high: torch.Tensor | float = 1.0,
    *,
    hidden_sizes: Sequence[int] = (256, 256),
    activation: str = "relu",
    default_policy_scale: float = 1.0,
    scale_lb: float = 0.1,
    device: torch.device | str | None = None,
):
    """TorchRL's CQL actor: an MLP to ``(loc, scale)`` and a TanhNormal on ``[low, high]``.

    As ``make_cql_model`` of TorchRL's CQL example: the scale is
    ``biased_softplus_<default_policy_scale>`` bounded below by ``scale_lb``; ``tanh_loc=False``. The
    action bounds are put on ``device`` (the distribution's keyword arguments do not move with ``.to()``).
    Evaluated deterministically (``ExplorationType.DETERMINISTIC``) it returns the squashed mean.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> actor = make_cql_actor(3, 2, hidden_sizes=(8,))
        >>> with set_exploration_type(ExplorationType.DETERMINISTIC):
        ...     a = actor(TensorDict({"observation": torch.zeros(4, 3)}, [4]))["action"]
        >>> a.shape, bool((a.abs() <= 1).all())
        (torch.Size([4, 2]), True)
    """
    from tensordict.nn import TensorDictModule
    from torchrl.data import Bounded
    from torchrl.envs.utils import ExplorationType
    from torchrl.modules import MLP, NormalParamExtractor, ProbabilisticActor, TanhNormal

    # the bounds live where the actor runs (TanhNormal's kwargs are not moved by .to())
    low = torch.as_tensor(low, dtype=torch.float32).expand(action_dim).clone().to(device)
    high = torch.as_tensor(high, dtype=torch.float32).expand(action_dim).clone().to(device)
    net = nn.Sequential(
        MLP(in_features=obs_dim, out_features=2 * action_dim, num_cells=[int(h) for h in hidden_sizes],
            activation_class=_ACTIVATIONS[activation]),
        NormalParamExtractor(scale_mapping=f"biased_softplus_{default_policy_scale}", scale_lb=scale_lb),
    )
    return ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=Bounded(low, high, (action_dim,), device=low.device),
        distribution_class=TanhNormal,
        distribution_kwargs={"low": low, "high": high, "tanh_loc": False},
        default_interaction_type=ExplorationType.RANDOM,
    )


def make_cql_qvalue(obs_dim: int, action_dim: int, *, hidden_sizes: Sequence[int] = (256, 256),
                    activation: str = "relu"):
    """``Q([s, a])`` as a TorchRL ``ValueOperator`` (CQLLoss makes the twin copies).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> q = make_cql_qvalue(3, 2, hidden_sizes=(8,))
        >>> q(TensorDict({"observation": torch.zeros(4, 3), "action": torch.zeros(4, 2)}, [4]))["state_action_value"].shape
        torch.Size([4, 1])
    """
    from torchrl.modules import MLP, ValueOperator

    return ValueOperator(
        MLP(in_features=obs_dim + action_dim, out_features=1, num_cells=[int(h) for h in hidden_sizes],
            activation_class=_ACTIVATIONS[activation]),
        in_keys=["observation", "action"],
    )


def _cql_cfg(cfg: Any) -> dict:
    given = _get(cfg, "algo.cql") or {}
    given = dict(given.items()) if hasattr(given, "items") else {}
    unknown = sorted(set(given) - set(CQL_DEFAULTS))
    if unknown:
        raise ConfigError(f"algo.cql has unknown keys {unknown}; valid: {sorted(CQL_DEFAULTS)}. "
                          "Fix: remove them (recipes/config/algo/cql.yaml lists every key).")
    out = {**CQL_DEFAULTS, **given}
    if out["lagrange_update"] not in LAGRANGE_UPDATES:
        raise ConfigError(f"algo.cql.lagrange_update={out['lagrange_update']!r} is not one of {LAGRANGE_UPDATES}. "
                          "Fix: algo.cql.lagrange_update=paper.")
    if int(out["policy_eval_start"]) < 0 or int(out["num_random"]) < 1:
        raise ConfigError("algo.cql.policy_eval_start must be >= 0 and algo.cql.num_random >= 1. "
                          "Fix: e.g. algo.cql.policy_eval_start=40000 algo.cql.num_random=10.")
    return out


def make_cql(cfg: Any, env_id: str, *, device: torch.device | str = "cpu"):
    """The CQL networks, loss, target updater and optimisers of ``algo=cql`` from ``cfg``.

    Networks: ``model.actor_hidden`` / ``model.qvalue_hidden`` / ``model.activation`` (the recipe's
    ``[256, 256]``, ReLU: TorchRL's example too); the actor's action bounds are the env's. Loss:
    ``algo.cql.*`` (:data:`CQL_DEFAULTS`), ``loss.gamma``; target critics ``SoftUpdate`` at
    ``optim.target_update_tau``. Optimisers as TorchRL's ``make_continuous_cql_optimizer``: Adam on
    the actor (``optim.lr_actor``), the critics (``optim.lr_qvalue``), ``log_alpha``
    (``optim.lr_actor``) and, with the Lagrange multiplier, ``log_alpha_prime`` (``optim.lr_qvalue``,
    no weight decay); ``optim.weight_decay`` on the others.

    Returns:
        ``(actor, loss_module, target_updater, optimizers)``; ``optimizers`` is a dict with keys
        ``actor``, ``qvalue``, ``alpha`` (and ``alpha_prime``).

    Examples:
        >>> cfg = {"model": {"actor_hidden": [8], "qvalue_hidden": [8], "activation": "relu"},
        ...        "loss": {"gamma": 0.99}, "optim": {"target_update_tau": 0.005, "lr_actor": 3e-4,
        ...        "lr_qvalue": 3e-4, "weight_decay": 0.0}, "algo": {"name": "cql", "cql": {}}}
        >>> actor, loss, updater, opts = make_cql(cfg, "tabb/Hopper-morph-v0")
        >>> type(loss).__name__, sorted(opts)
        ('CQLLoss', ['actor', 'alpha', 'alpha_prime', 'qvalue'])
    """
    from torchrl.objectives import CQLLoss, SoftUpdate

    from tabb_torchrl.envs import env_spaces

    obs_dim, action_dim, low, high = env_spaces(env_id)
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    c = _cql_cfg(cfg)
    act = str(_get(cfg, "model.activation", "relu"))
    actor = make_cql_actor(obs_dim, action_dim, low, high, hidden_sizes=_get(cfg, "model.actor_hidden"),
                           activation=act, default_policy_scale=float(c["default_policy_scale"]),
                           scale_lb=float(c["scale_lb"]), device=device).to(device)
    qvalue = make_cql_qvalue(obs_dim, action_dim, hidden_sizes=_get(cfg, "model.qvalue_hidden"),
                             activation=act).to(device)
    loss = CQLLoss(
        actor, qvalue,
        loss_function=str(c["loss_function"]),
        temperature=float(c["temperature"]),
        min_q_weight=float(c["min_q_weight"]),
        max_q_backup=bool(c["max_q_backup"]),
        deterministic_backup=bool(c["deterministic_backup"]),
        num_random=int(c["num_random"]),
        with_lagrange=bool(c["with_lagrange"]),
        lagrange_thresh=float(c["lagrange_thresh"]),
    )
    loss.make_value_estimator(gamma=float(_get(cfg, "loss.gamma")))
    updater = SoftUpdate(loss, tau=float(_get(cfg, "optim.target_update_tau")))
    wd = float(_get(cfg, "optim.weight_decay", 0.0))
    lr_actor, lr_q = float(_get(cfg, "optim.lr_actor")), float(_get(cfg, "optim.lr_qvalue"))
    optimizers = {
        "actor": torch.optim.Adam(list(loss.actor_network_params.flatten_keys().values()), lr=lr_actor, weight_decay=wd),
        "qvalue": torch.optim.Adam(list(loss.qvalue_network_params.flatten_keys().values()), lr=lr_q, weight_decay=wd),
        "alpha": torch.optim.Adam([loss.log_alpha], lr=lr_actor, weight_decay=wd),
    }
    if loss.with_lagrange:
        optimizers["alpha_prime"] = torch.optim.Adam([loss.log_alpha_prime], lr=lr_q)
    return actor, loss, updater, optimizers


def paper_lagrange_losses(loss_qvalue: torch.Tensor, loss_cql: torch.Tensor, log_alpha_prime: torch.Tensor,
                          target_action_gap: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The critic loss and the ``alpha'`` loss of ``lagrange_update="paper"`` (the authors' code).

    ``alpha' = min(exp(log_alpha'), 1e6)`` (TorchRL's clamp); the critics minimise
    ``L_Q + alpha' L_CQL`` (``alpha'`` detached) and ``alpha'`` minimises
    ``-alpha' (L_CQL - 2 tau) / 2`` alone (``L_CQL = mean(CQL_1) + mean(CQL_2)`` detached), i.e.
    ``-alpha' ((CQL_1 - tau) + (CQL_2 - tau)) / 2``.

    Args:
        loss_qvalue (torch.Tensor): ``L_Q``, TorchRL's ``loss_qvalue``.
        loss_cql (torch.Tensor): ``L_CQL``, TorchRL's ``loss_cql``.
        log_alpha_prime (torch.Tensor): the multiplier's parameter.
        target_action_gap (float): ``tau`` (``lagrange_thresh``).

    Returns:
        ``(critic_loss, alpha_prime_loss, alpha_prime)``.

    Examples:
        >>> import torch
        >>> lap = torch.tensor(0.0, requires_grad=True)
        >>> critic, ap_loss, ap = paper_lagrange_losses(torch.tensor(2.0), torch.tensor(8.0), lap, 5.0)
        >>> float(critic), float(ap_loss), float(ap)
        (10.0, 1.0, 1.0)
    """
    alpha_prime = torch.clamp_max(log_alpha_prime.exp(), 1e6)
    critic_loss = loss_qvalue + alpha_prime.detach() * loss_cql
    alpha_prime_loss = -0.5 * alpha_prime * (loss_cql.detach() - 2.0 * target_action_gap)
    return critic_loss, alpha_prime_loss, alpha_prime


class CQLUpdate:
    """One CQL step on a source + target batch: ``rb.sample()``, TorchRL's ``CQLLoss``, Adam steps, ``SoftUpdate``.

    The ``optim.update=modular`` path; :class:`~tabb_torchrl.pipeline.cql_fused.FusedCQLUpdate`
    (the default) computes the same step on plain tensors.

    As the ``update`` of TorchRL's offline CQL example: the actor loss is the behaviour-cloning
    loss ``loss_actor_bc`` for the first ``policy_eval_start`` steps, then ``loss_actor``; the
    critic loss is ``loss_qvalue`` plus the conservative term ``loss_cql``; the entropy
    temperature is trained on ``loss_alpha``. With the Lagrange multiplier ``alpha'``
    (``with_lagrange``), ``lagrange_update="paper"`` (default) weights the conservative term by
    ``alpha'`` in the critic loss and trains ``alpha'`` alone on
    ``-alpha' (CQL_1 + CQL_2 - 2 tau) / 2`` (the authors' code); ``"torchrl"`` sums TorchRL's
    ``loss_alpha_prime`` into one backward pass as TorchRL's example does (whose gradient also
    reaches the critics: ``(1 - alpha'/2)`` times that of ``loss_cql``).

    Args:
        loss_module (CQLLoss): the loss.
        replay_buffer (ReplayBuffer): gives the batches (source rows then target rows; one pooled loss).
        optimizers (mapping of torch.optim.Optimizer): ``actor``, ``qvalue``, ``alpha`` (``alpha_prime``).
        target_updater (SoftUpdate): the target-critic update.

    Keyword Args:
        policy_eval_start (int): steps of behaviour cloning first. Defaults to ``40_000`` (TorchRL's example).
        lagrange_update (str): ``"paper"`` or ``"torchrl"``. Defaults to ``"paper"``.
        step (int): RL steps already done (a resumed run continues the schedule). Defaults to ``0``.
        compile (bool): ``torch.compile`` the step on the batch. Defaults to ``False``.
        mode (str, optional): ``torch.compile`` mode.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl.data import make_source_target_buffer
        >>> cfg = {"model": {"actor_hidden": [8], "qvalue_hidden": [8], "activation": "relu"},
        ...        "loss": {"gamma": 0.99}, "optim": {"target_update_tau": 0.005, "lr_actor": 3e-4,
        ...        "lr_qvalue": 3e-4, "weight_decay": 0.0}, "algo": {"name": "cql", "cql": {"num_random": 2}}}
        >>> actor, loss, updater, opts = make_cql(cfg, "Hopper-v5")
        >>> def data(n):
        ...     return TensorDict({"observation": torch.randn(n, 11), "action": torch.rand(n, 3) * 2 - 1,
        ...         ("next", "observation"): torch.randn(n, 11), ("next", "reward"): torch.randn(n, 1),
        ...         ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool),
        ...         ("next", "done"): torch.zeros(n, 1, dtype=torch.bool)}, [n])
        >>> rb = make_source_target_buffer(data(40), data(20), n_source=4, n_target=4, seed=0)
        >>> update = CQLUpdate(loss, rb, opts, updater, policy_eval_start=1)
        >>> m = update()
        >>> sorted(k for k in m if k.startswith("loss")), float(m["cql_bc_phase"])
        (['loss_actor', 'loss_actor_bc', 'loss_alpha', 'loss_alpha_prime', 'loss_cql', 'loss_qvalue'], 1.0)
        >>> float(update()["cql_bc_phase"]), update.step_count
        (0.0, 2)
    """

    def __init__(self, loss_module, replay_buffer, optimizers, target_updater, *, policy_eval_start: int = 40_000,
                 lagrange_update: str = "paper", step: int = 0, compile: bool = False, mode: str | None = None):
        if lagrange_update not in LAGRANGE_UPDATES:
            raise ValueError(f"lagrange_update must be one of {LAGRANGE_UPDATES}, got {lagrange_update!r}.")
        self.loss_module = loss_module
        self.replay_buffer = replay_buffer
        self.optimizers = list(optimizers.values()) if isinstance(optimizers, Mapping) else list(optimizers)
        self.target_updater = target_updater
        self.policy_eval_start = int(policy_eval_start)
        self.lagrange_update = lagrange_update
        self.step_count = int(step)
        self._step = torch.compile(self.step, mode=mode) if compile else self.step

    def losses(self, batch: TensorDictBase, bc_phase: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The total loss of one step (actor + critic + temperature (+ ``alpha'``)) and the detached metrics."""
        lm = self.loss_module
        out = lm(batch)
        actor_loss = out["loss_actor_bc"] if bc_phase else out["loss_actor"]
        metrics = {k: v.detach() for k, v in out.items()}
        if lm.with_lagrange and self.lagrange_update == "paper":
            critic_loss, alpha_prime_loss, alpha_prime = paper_lagrange_losses(
                out["loss_qvalue"], out["loss_cql"], lm.log_alpha_prime, lm.target_action_gap)
            metrics["loss_alpha_prime"] = alpha_prime_loss.detach()
            metrics["alpha_prime"] = alpha_prime.detach()
        else:
            critic_loss = out["loss_qvalue"] + out["loss_cql"]
            alpha_prime_loss = out["loss_alpha_prime"] if lm.with_lagrange else 0.0
            if lm.with_lagrange:
                metrics["alpha_prime"] = torch.clamp_max(lm.log_alpha_prime.exp(), 1e6).detach()
        total = actor_loss + critic_loss + out["loss_alpha"] + alpha_prime_loss
        metrics["cql_bc_phase"] = torch.tensor(float(bc_phase))
        return total, metrics

    def step(self, batch: TensorDictBase) -> dict[str, torch.Tensor]:
        """Losses, one backward pass, the optimiser steps and the soft update on one batch."""
        total, metrics = self.losses(batch, self.step_count < self.policy_eval_start)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in self.optimizers:
            opt.step()
        self.target_updater.step()
        return metrics

    def __call__(self) -> dict[str, torch.Tensor]:
        """Sample a batch (``rb.sample()``), run :meth:`step` and count it."""
        metrics = self._step(self.replay_buffer.sample())
        self.step_count += 1
        return metrics


def make_cql_update(cfg: Any, loss_module, replay_buffer, optimizers, target_updater, *, step: int = 0):
    """The CQL update of ``optim.update``, with ``algo.cql.policy_eval_start``, ``algo.cql.lagrange_update`` and ``compile.*``.

    ``optim.update=fused`` (default): :class:`~tabb_torchrl.pipeline.cql_fused.FusedCQLUpdate`, the
    flat-tensor step that computes ``CQLLoss``'s losses exactly; ``optim.update=modular``:
    :class:`CQLUpdate`, TorchRL's ``CQLLoss`` itself. Both train the loss module's parameters with the
    same optimisers (one checkpoint format; the trainer refuses to switch mid-run).

    Raises:
        ConfigError: a bad ``algo.cql`` entry or ``optim.update``.

    Examples:
        >>> make_cql_update({"algo": {"cql": {"lagrange_update": "nope"}}}, None, None, {}, None)
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: algo.cql.lagrange_update='nope' is not one of ('paper', 'torchrl'). Fix: algo.cql.lagrange_update=paper.
        >>> make_cql_update({"optim": {"update": "fast"}}, None, None, {}, None)
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: optim.update must be one of ('fused', 'modular'), got 'fast'.
    """
    from tabb_torchrl.pipeline.update import UPDATE_MODES

    c = _cql_cfg(cfg)
    mode = str(_get(cfg, "optim.update", "fused"))
    if mode not in UPDATE_MODES:
        raise ConfigError(f"optim.update must be one of {UPDATE_MODES}, got {mode!r}.")
    if mode == "fused":
        from tabb_torchrl.pipeline.cql_fused import FusedCQLUpdate

        cls = FusedCQLUpdate
    else:
        cls = CQLUpdate
    return cls(loss_module, replay_buffer, optimizers, target_updater,
               policy_eval_start=int(c["policy_eval_start"]), lagrange_update=str(c["lagrange_update"]),
               step=step, compile=bool(_get(cfg, "compile.enabled", False)), mode=_get(cfg, "compile.mode"))
