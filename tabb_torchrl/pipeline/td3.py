"""The TD3-style backbone of the baselines that do not fit the cross-domain IQL core (MOBODY, BOSA).

TD3 (Fujimoto, van Hoof & Meger, "Addressing Function Approximation Error in Actor-Critic Methods",
ICML 2018, arXiv 1802.09477) on the recipe's source/target buffer, with hooks through which a
method edits the batch (rewards, model-generated rows), the critic loss (a per-row mask, an extra
penalty) and the actor loss (a regulariser). Everything is selected by name through
:mod:`tabb_torchrl.pipeline.backbones` (``algo=mobody``, ``algo=bosa``), as ``algo=cql`` is.

* :class:`EnsembleMLP` -- ``E`` MLPs as one module (weights ``[E, in, out]``, ``torch.baddbmm``):
  the twin critic here, the methods' model ensembles;
* :func:`make_td3_actor` -- the deterministic actor ``pi(s) = c + h tanh(MLP(s))`` (``c``, ``h``: the
  centre and half-width of the action box);
* :class:`TD3Method` -- the hooks (no-ops), subclassed by each method;
* :class:`TD3CrossDomainLoss` -- actor, twin critic, target copies, the method; the TD target
  (:func:`td3_target`), the critic loss (:func:`masked_td_loss`) and the actor loss
  (:func:`normalized_q_loss` plus the method's regulariser);
* :class:`TD3Update` -- one step: ``rb.sample()``, the method's batch edit, a critic step, every
  ``policy_delay`` steps an actor step and the soft update of the targets;
* :func:`make_td3` / :func:`make_td3_update` -- built from the recipe's config (``algo.td3``).

Each step is::

    a'  = clip(pi'(s') + clip(sigma h eps, -c_n h, c_n h), low, high),  eps ~ N(0, I)   (target smoothing)
    y   = r + gamma (1 - d) min_k Q'_k(s', a')
    L_Q = td_coef * sum_k mean_rows[w (Q_k(s, a) - y)^2] + (method's extra critic term)
    L_pi = -q_coef * mean(Q(s, pi(s))) / mean|Q(s, pi(s))| + (method's regulariser)   (every policy_delay steps)

``pi'`` is the target actor (``target_actor: true``) or the actor itself; ``Q`` in ``L_pi`` is
the first critic (TD3) or the minimum of the two (``actor_q: min``); ``w`` the method's row
weights (``1`` by default). The critic is detached in the actor loss; target networks follow
with rate ``tau`` after each actor step.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence

import torch
from tensordict import TensorDictBase
from torch import nn

from tabb_torchrl.keys import DOMAIN_KEY
from tabb_torchrl.objectives.functional import bellman_target
from tabb_torchrl.pipeline.config import ConfigError, _get

__all__ = [
    "TD3_DEFAULTS",
    "ACTOR_QS",
    "INITS",
    "MODEL_ROWS",
    "EnsembleMLP",
    "make_td3_actor",
    "TD3Batch",
    "CriticTerms",
    "TD3Method",
    "td3_target",
    "masked_td_loss",
    "normalized_q_loss",
    "TD3CrossDomainLoss",
    "PolyakUpdate",
    "TD3Update",
    "td3_config",
    "make_td3",
    "make_td3_update",
]

#: ``algo.td3`` defaults: TD3's own (Fujimoto et al. 2018, ``sfujim/TD3``): target-policy noise
#: 0.2 clipped at 0.5 (times the action half-width), an actor step every 2 critic steps, target
#: actor and critics, the actor on the first critic, ``-Q`` not normalised, the squared TD error
#: of each critic summed.
TD3_DEFAULTS = {
    "policy_noise": 0.2,
    "noise_clip": 0.5,
    "policy_delay": 2,
    "target_actor": True,
    "actor_q": "first",
    "q_coef": 1.0,
    "normalize_q": False,
    "td_coef": 1.0,
}

#: Which critic the actor loss reads: ``"first"`` (TD3: ``Q_1``) or ``"min"`` (``min(Q_1, Q_2)``).
ACTOR_QS = ("first", "min")

#: Initialisations of :class:`EnsembleMLP`: ``"torch"`` (each member as ``nn.Linear``: weights and
#: biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``), ``"trunc_normal"`` (MBPO's ensembles: weights
#: ``N(0, (1/(2 sqrt(fan_in)))^2)`` cut at 2 std, zero biases), ``"normal_fmod"`` (ODRL's
#: ``EnsembleFC``: ``fmod(N(0, 1), 2)``, zero biases).
INITS = ("torch", "trunc_normal", "normal_fmod")

#: Value of the ``domain`` column of rows a method generates with a model (MOBODY); the dataset's
#: rows are :data:`~tabb_torchrl.keys.SOURCE` (0) and :data:`~tabb_torchrl.keys.TARGET` (1).
MODEL_ROWS: int = 2

_ACTIVATIONS = {"relu": nn.functional.relu, "silu": nn.functional.silu, "elu": nn.functional.elu,
                "tanh": torch.tanh, "mish": nn.functional.mish}


# ----------------------------------------------------------------------------- networks
class EnsembleMLP(nn.Module):
    """``E`` MLPs with the same layout as one module: each layer is one batched matrix product.

    Layer ``l`` holds the stacked weights ``[E, in_l, out_l]`` and biases ``[E, 1, out_l]`` of the
    ``E`` members and runs as one :func:`torch.baddbmm`, with no Python loop over members.

    Args:
        in_features (int): input size.
        out_features (int): output size.
        hidden_sizes (sequence of int): hidden layer widths.
        ensemble_size (int): members ``E``.

    Keyword Args:
        activation (str): ``"relu"``, ``"silu"`` (swish), ``"elu"``, ``"tanh"`` or ``"mish"``.
            Defaults to ``"relu"``.
        init (str): one of :data:`INITS`. Defaults to ``"torch"``.

    Examples:
        >>> import torch
        >>> net = EnsembleMLP(5, 1, (8, 8), 2)
        >>> net.weights[0].shape, net(torch.zeros(4, 5)).shape        # shared input -> [E, B, out]
        (torch.Size([2, 5, 8]), torch.Size([2, 4, 1]))
        >>> net(torch.zeros(2, 4, 5)).shape                           # each member its own rows
        torch.Size([2, 4, 1])
    """

    def __init__(self, in_features: int, out_features: int, hidden_sizes: Sequence[int], ensemble_size: int, *,
                 activation: str = "relu", init: str = "torch"):
        super().__init__()
        if int(ensemble_size) < 1:
            raise ValueError(f"EnsembleMLP: ensemble_size must be >= 1, got {ensemble_size}.")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"EnsembleMLP: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}.")
        if init not in INITS:
            raise ValueError(f"EnsembleMLP: init must be one of {INITS}, got {init!r}.")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.ensemble_size = int(ensemble_size)
        self.activation, self.init = activation, init
        sizes = (self.in_features, *(int(h) for h in hidden_sizes), self.out_features)
        e = self.ensemble_size
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(e, i, o)) for i, o in zip(sizes[:-1], sizes[1:])])
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(e, 1, o)) for o in sizes[1:]])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every member by :attr:`init` (see :data:`INITS`)."""
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):
                fan_in = w.shape[1]
                if self.init == "torch":
                    bound = 1.0 / math.sqrt(fan_in)
                    w.uniform_(-bound, bound)
                    b.uniform_(-bound, bound)
                elif self.init == "trunc_normal":
                    std = 1.0 / (2.0 * math.sqrt(fan_in))
                    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)
                    b.zero_()
                else:
                    w.copy_(torch.fmod(torch.randn_like(w), 2.0))
                    b.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[E, B, out]`` from ``x``: ``[B, in]`` (the same rows for every member) or ``[E, B, in]``."""
        if x.ndim == 2:
            x = x.unsqueeze(0).expand(self.ensemble_size, -1, -1)
        if x.ndim != 3 or x.shape[0] != self.ensemble_size or x.shape[-1] != self.in_features:
            raise ValueError(f"EnsembleMLP expects inputs [B, {self.in_features}] or "
                             f"[{self.ensemble_size}, B, {self.in_features}], got {tuple(x.shape)}.")
        act = _ACTIVATIONS[self.activation]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = act(x)
        return x

    def extra_repr(self) -> str:
        sizes = [self.in_features, *(w.shape[2] for w in self.weights)]
        return f"ensemble_size={self.ensemble_size}, sizes={sizes}, activation={self.activation}, init={self.init}"


class _SquashedActor(nn.Module):
    """``c + h * tanh(MLP(s))``: a deterministic action inside ``[low, high]``."""

    def __init__(self, obs_dim, action_dim, low, high, hidden_sizes, activation):
        from torchrl.modules import MLP

        super().__init__()
        acts = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU, "mish": nn.Mish}
        self.net = MLP(in_features=obs_dim, out_features=action_dim, num_cells=[int(h) for h in hidden_sizes],
                       activation_class=acts[activation])
        low = torch.as_tensor(low, dtype=torch.float32).expand(action_dim).clone()
        high = torch.as_tensor(high, dtype=torch.float32).expand(action_dim).clone()
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("half_width", (high - low) / 2)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_width * torch.tanh(self.net(observation))


def make_td3_actor(obs_dim: int, action_dim: int, low: torch.Tensor | float = -1.0, high: torch.Tensor | float = 1.0,
                   *, hidden_sizes: Sequence[int] = (256, 256), activation: str = "relu"):
    """The deterministic TD3 actor ``pi(s) = c + h tanh(MLP(s))`` as a TensorDict module.

    ``c`` and ``h`` are the centre and the half-width of ``[low, high]`` (``max_action * tanh`` of
    TD3's code for symmetric bounds). Reads ``"observation"``, writes ``"action"``; the
    recipe's evaluator runs it as it is.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> actor = make_td3_actor(3, 2, -2.0, 2.0, hidden_sizes=(8,))
        >>> a = actor(TensorDict({"observation": torch.randn(4, 3)}, [4]))["action"]
        >>> a.shape, bool((a.abs() <= 2).all())
        (torch.Size([4, 2]), True)
    """
    from tensordict.nn import TensorDictModule

    if activation not in ("relu", "elu", "tanh", "silu", "mish"):
        raise ValueError(f"make_td3_actor: unknown activation {activation!r}.")
    return TensorDictModule(_SquashedActor(obs_dim, action_dim, low, high, hidden_sizes, activation),
                            in_keys=["observation"], out_keys=["action"])


# ----------------------------------------------------------------------------- batches and hooks
@dataclass
class TD3Batch:
    """The rows of one TD3 step as flat tensors (source rows, target rows, then any model rows).

    Attributes:
        observation (torch.Tensor): ``[B, obs_dim]``.
        action (torch.Tensor): ``[B, action_dim]``.
        reward (torch.Tensor): ``[B]``.
        next_observation (torch.Tensor): ``[B, obs_dim]``.
        terminated (torch.Tensor): ``[B]`` float, ``1`` where the episode terminated (no bootstrap).
        domain (torch.Tensor): ``[B]`` int64: :data:`~tabb_torchrl.keys.SOURCE`,
            :data:`~tabb_torchrl.keys.TARGET` or :data:`MODEL_ROWS`.
        columns (dict): a method's per-row columns of the dataset rows (e.g. DARA's log-ratio).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"observation": torch.zeros(3, 2), "action": torch.zeros(3, 1),
        ...     ("next", "observation"): torch.ones(3, 2), ("next", "reward"): torch.ones(3, 1),
        ...     ("next", "terminated"): torch.tensor([[False], [True], [False]]),
        ...     "domain": torch.tensor([0, 0, 1])}, [3])
        >>> b = TD3Batch.from_tensordict(td)
        >>> b.terminated.tolist(), b.reward.shape, b.rows(1).domain.tolist()
        ([0.0, 1.0, 0.0], torch.Size([3]), [1])
    """

    observation: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_observation: torch.Tensor
    terminated: torch.Tensor
    domain: torch.Tensor
    columns: dict = field(default_factory=dict)

    @classmethod
    def from_tensordict(cls, td: TensorDictBase, columns: Sequence[str] = ()) -> "TD3Batch":
        """Read a batch of the source/target buffer (``terminated``, not ``done``, stops the bootstrap)."""
        dtype = td.get("observation").dtype if td.get("observation").is_floating_point() else torch.float32
        return cls(
            observation=td.get("observation").to(dtype),
            action=td.get("action").to(dtype),
            reward=td.get(("next", "reward")).reshape(-1).to(dtype),
            next_observation=td.get(("next", "observation")).to(dtype),
            terminated=td.get(("next", "terminated")).reshape(-1).to(dtype),
            domain=td.get(DOMAIN_KEY).reshape(-1).long(),
            columns={k: td.get(k) for k in columns},
        )

    def __len__(self) -> int:
        return self.observation.shape[0]

    def rows(self, domain: int) -> "TD3Batch":
        """The rows of one domain (columns are kept for dataset domains only)."""
        keep = self.domain == domain
        return TD3Batch(self.observation[keep], self.action[keep], self.reward[keep], self.next_observation[keep],
                        self.terminated[keep], self.domain[keep],
                        {k: v[keep] for k, v in self.columns.items()} if domain != MODEL_ROWS else {})

    def replace(self, **changes) -> "TD3Batch":
        """A copy with some fields replaced."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return TD3Batch(**values)

    def append(self, other: "TD3Batch") -> "TD3Batch":
        """These rows followed by ``other``'s (columns of the first batch's dataset rows only)."""
        return TD3Batch(*(torch.cat([getattr(self, f.name), getattr(other, f.name)])
                          for f in fields(self) if f.name != "columns"), columns=self.columns)


@dataclass
class CriticTerms:
    """What a method adds to the critic loss (:meth:`TD3Method.critic_terms`).

    Attributes:
        row_weight (torch.Tensor, optional): ``[B]`` weights of the rows' squared TD errors (``1`` when ``None``).
        extra (torch.Tensor, optional): a scalar added to the critic loss.
        metrics (dict): detached numbers to log.

    Examples:
        >>> CriticTerms().row_weight is None
        True
    """

    row_weight: torch.Tensor | None = None
    extra: torch.Tensor | None = None
    metrics: dict = field(default_factory=dict)


class TD3Method(nn.Module):
    """The hooks of a method on the TD3 backbone; every hook of this base class changes nothing.

    A method subclasses it and overrides what it needs; it is a submodule of
    :class:`TD3CrossDomainLoss`, so its models and buffers are saved with the loss module's
    ``state_dict`` (the recipe's checkpoints).

    * :meth:`prepare` -- pre-training before RL, once per run (the trainer records that it ran);
    * :meth:`add_columns` -- per-row columns cached with the stored data (read via :attr:`columns`);
    * :meth:`edit_batch` -- edit the sampled rows (rewards) or append rows (model rollouts);
    * :meth:`critic_terms` -- per-row weights of the TD errors and an extra critic loss;
    * :meth:`actor_regularizer` -- a term added to the actor loss.

    Examples:
        >>> m = TD3Method()
        >>> m.name, m.columns
        ('td3', ())
    """

    name: str = "td3"
    columns: tuple[str, ...] = ()

    def prepare(self, source, target, *, device: torch.device | None = None, progress: bool = False) -> None:
        """Pre-train the method's models before RL (once per run). Default: nothing."""
        if device is not None:
            self.to(device)

    def add_columns(self, data) -> None:
        """Write the method's per-row columns into the data to be stored. Default: nothing."""

    def edit_batch(self, batch: TD3Batch, *, step: int, policy: Callable[[torch.Tensor], torch.Tensor]
                   ) -> tuple[TD3Batch, dict]:
        """The rows the step trains on and metrics. Default: the batch unchanged."""
        return batch, {}

    def critic_terms(self, batch: TD3Batch, q: torch.Tensor) -> CriticTerms:
        """Row weights / extra critic loss from the batch and ``q = Q_k(s, a)`` (``[2, B]``, with gradient)."""
        return CriticTerms()

    def actor_regularizer(self, batch: TD3Batch, action: torch.Tensor,
                          qvalues: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                          ) -> tuple[torch.Tensor | None, dict]:
        """A term added to the actor loss (``action = pi(s)`` with gradient). Default: none."""
        return None, {}


# ----------------------------------------------------------------------------- equations
def td3_target(reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    r"""The clipped double-Q target :math:`y = r + \gamma (1 - d) \min_k Q'_k(s', a')` (TD3, Eq. 10).

    Args:
        reward (torch.Tensor): ``[B]``.
        terminated (torch.Tensor): ``[B]``, ``1`` for terminal transitions.
        next_q (torch.Tensor): ``[K, B]`` target critics at ``(s', a')``.
        gamma (float): discount.

    Examples:
        >>> import torch
        >>> td3_target(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([[4.0, 4.0], [2.0, 9.0]]), 0.5)
        tensor([2., 1.])
    """
    return bellman_target(reward, next_q.amin(0), terminated, gamma)


def masked_td_loss(q: torch.Tensor, target: torch.Tensor, row_weight: torch.Tensor | None = None,
                   coef: float = 1.0) -> torch.Tensor:
    r""":math:`c \sum_k \operatorname{mean}_i\, w_i (Q_k(s_i, a_i) - y_i)^2` over the ``K`` critics.

    The mean runs over **all** rows (a row of weight 0 still counts in the denominator, as BOSA's
    masked TD loss); ``w = 1`` without weights (TD3: ``mse(Q_1, y) + mse(Q_2, y)``).

    Args:
        q (torch.Tensor): ``[K, B]``.
        target (torch.Tensor): ``[B]``.
        row_weight (torch.Tensor, optional): ``[B]``.
        coef (float): ``c``. Defaults to ``1.0``.

    Examples:
        >>> import torch
        >>> q = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
        >>> masked_td_loss(q, torch.tensor([0.0, 1.0]))                        # (1 + 4) / 2 + (0 + 1) / 2
        tensor(3.)
        >>> masked_td_loss(q, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]), coef=0.5)   # 0.5 (1/2 + 0/2)
        tensor(0.2500)
    """
    sq = (q - target.unsqueeze(0)) ** 2
    if row_weight is not None:
        sq = sq * row_weight.unsqueeze(0)
    return coef * sq.mean(-1).sum()


def normalized_q_loss(q: torch.Tensor, coef: float = 1.0, normalize: bool = True) -> torch.Tensor:
    r"""The actor's value term :math:`-c\,\operatorname{mean}(Q) / \operatorname{mean}|Q|` (TD3+BC's scaling).

    The normaliser :math:`\operatorname{mean}|Q|` is detached; ``normalize=False`` gives TD3's
    :math:`-c\,\operatorname{mean}(Q)`.

    Examples:
        >>> import torch
        >>> normalized_q_loss(torch.tensor([2.0, -4.0]), coef=2.5)               # -2.5 (-1) / 3
        tensor(0.8333)
        >>> normalized_q_loss(torch.tensor([2.0, -4.0]), normalize=False)
        tensor(1.)
    """
    loss = -coef * q.mean()
    return loss / q.abs().mean().detach() if normalize else loss


# ----------------------------------------------------------------------------- the loss module
class TD3CrossDomainLoss(nn.Module):
    """TD3 on source, target (and model) rows with a method's hooks (:class:`TD3Method`).

    Holds the actor, the twin critic (one :class:`EnsembleMLP` with ``E = 2``), their target
    copies and the method; its ``state_dict`` is what the recipe checkpoints.

    Args:
        actor (TensorDictModule): :func:`make_td3_actor`.
        critic (EnsembleMLP): ``Q_k([s, a])``, ``E = 2``.
        method (TD3Method): the method's hooks.

    Keyword Args:
        gamma (float): discount. Defaults to ``0.99``.
        policy_noise (float): target-policy noise std (times the action half-width). Defaults to ``0.2``.
        noise_clip (float): its clip (times the half-width). Defaults to ``0.5``.
        target_actor (bool): ``a'`` from a target actor (TD3) or the actor. Defaults to ``True``.
        actor_q (str): ``"first"`` or ``"min"`` (:data:`ACTOR_QS`). Defaults to ``"first"``.
        q_coef (float): ``c`` of :func:`normalized_q_loss`. Defaults to ``1.0``.
        normalize_q (bool): divide by ``mean|Q|``. Defaults to ``False``.
        td_coef (float): ``c`` of :func:`masked_td_loss`. Defaults to ``1.0``.

    Examples:
        >>> import torch
        >>> loss = TD3CrossDomainLoss(make_td3_actor(3, 1, hidden_sizes=(8,)), EnsembleMLP(4, 1, (8,), 2), TD3Method())
        >>> b = TD3Batch(torch.randn(5, 3), torch.rand(5, 1), torch.ones(5), torch.randn(5, 3), torch.zeros(5),
        ...              torch.tensor([0, 0, 0, 1, 1]))
        >>> critic_loss, metrics = loss.critic_loss(b)
        >>> actor_loss, _ = loss.actor_loss(b)
        >>> critic_loss.shape, actor_loss.requires_grad, loss.target_critic.weights[0].requires_grad
        (torch.Size([]), True, False)
    """

    def __init__(self, actor, critic: EnsembleMLP, method: TD3Method, *, gamma: float = 0.99,
                 policy_noise: float = 0.2, noise_clip: float = 0.5, target_actor: bool = True,
                 actor_q: str = "first", q_coef: float = 1.0, normalize_q: bool = False, td_coef: float = 1.0):
        super().__init__()
        if actor_q not in ACTOR_QS:
            raise ValueError(f"TD3CrossDomainLoss: actor_q must be one of {ACTOR_QS}, got {actor_q!r}.")
        if critic.ensemble_size != 2 or critic.out_features != 1:
            raise ValueError("TD3CrossDomainLoss: the critic must be an EnsembleMLP of 2 members with 1 output.")
        self.actor = actor
        self.critic = critic
        self.target_critic = copy.deepcopy(critic).requires_grad_(False)
        self.target_actor = copy.deepcopy(actor).requires_grad_(False) if target_actor else None
        self.method = method
        self.gamma, self.policy_noise, self.noise_clip = float(gamma), float(policy_noise), float(noise_clip)
        self.actor_q, self.q_coef, self.normalize_q = actor_q, float(q_coef), bool(normalize_q)
        self.td_coef = float(td_coef)
        # the last actor loss, reported between actor steps (checkpointed: a resumed run reports the same)
        self.register_buffer("last_actor_loss", torch.zeros(()))

    # the networks as functions of tensors
    def policy(self, observation: torch.Tensor) -> torch.Tensor:
        """``pi(s)`` (with gradient)."""
        return self.actor.module(observation)

    def qvalues(self, observation: torch.Tensor, action: torch.Tensor, *, target: bool = False) -> torch.Tensor:
        """``Q_k(s, a)`` of both critics, ``[2, B]`` (``target=True``: the target critics)."""
        net = self.target_critic if target else self.critic
        return net(torch.cat([observation, action], -1)).squeeze(-1)

    def next_action(self, next_observation: torch.Tensor) -> torch.Tensor:
        """``a'`` of the target: the (target) actor plus clipped Gaussian noise, inside the action box."""
        module = (self.target_actor if self.target_actor is not None else self.actor).module
        a = module(next_observation)
        if self.policy_noise > 0:
            h = module.half_width
            noise = (torch.randn_like(a) * self.policy_noise * h).clamp(-self.noise_clip * h, self.noise_clip * h)
            a = torch.minimum(torch.maximum(a + noise, module.center - h), module.center + h)
        return a

    def critic_loss(self, batch: TD3Batch) -> tuple[torch.Tensor, dict]:
        """:func:`masked_td_loss` at :func:`td3_target` plus the method's :meth:`~TD3Method.critic_terms`."""
        with torch.no_grad():
            a_next = self.next_action(batch.next_observation)
            target = td3_target(batch.reward, batch.terminated,
                                self.qvalues(batch.next_observation, a_next, target=True), self.gamma)
        q = self.qvalues(batch.observation, batch.action)
        terms = self.method.critic_terms(batch, q)
        loss = masked_td_loss(q, target, terms.row_weight, self.td_coef)
        if terms.extra is not None:
            loss = loss + terms.extra
        metrics = {"q_mean": q.detach().mean(), "target_mean": target.mean(), **terms.metrics}
        return loss, metrics

    def actor_loss(self, batch: TD3Batch) -> tuple[torch.Tensor, dict]:
        """:func:`normalized_q_loss` of ``Q(s, pi(s))`` (critic detached) plus the method's regulariser."""
        was = [p.requires_grad for p in self.critic.parameters()]
        self.critic.requires_grad_(False)
        try:
            action = self.policy(batch.observation)
            q = self.qvalues(batch.observation, action)
            q = q[0] if self.actor_q == "first" else q.amin(0)
            loss = normalized_q_loss(q, self.q_coef, self.normalize_q)
            metrics = {"actor_q_mean": q.detach().mean()}
            reg, reg_metrics = self.method.actor_regularizer(batch, action, self._critic_no_grad)
        finally:
            for p, r in zip(self.critic.parameters(), was):
                p.requires_grad_(r)
        if reg is not None:
            loss = loss + reg
        metrics.update(reg_metrics)
        return loss, metrics

    def _critic_no_grad(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.qvalues(observation, action)

    def extra_repr(self) -> str:
        return (f"gamma={self.gamma}, policy_noise={self.policy_noise}, noise_clip={self.noise_clip}, "
                f"target_actor={self.target_actor is not None}, actor_q={self.actor_q!r}, q_coef={self.q_coef}, "
                f"normalize_q={self.normalize_q}, td_coef={self.td_coef}")


class PolyakUpdate:
    """Soft update of the target critics (and target actor) of a :class:`TD3CrossDomainLoss`.

    ``target <- target + tau (online - target)`` for every parameter, in one ``_foreach_lerp_``.

    Examples:
        >>> import torch
        >>> loss = TD3CrossDomainLoss(make_td3_actor(3, 1, hidden_sizes=(4,)), EnsembleMLP(4, 1, (4,), 2), TD3Method())
        >>> with torch.no_grad():
        ...     _ = loss.critic.weights[0].add_(1.0)
        >>> before = loss.target_critic.weights[0].clone()
        >>> PolyakUpdate(loss, tau=0.5).step()
        >>> torch.allclose(loss.target_critic.weights[0], before + 0.5)
        True
    """

    def __init__(self, loss_module: TD3CrossDomainLoss, tau: float = 0.005):
        if not 0.0 < float(tau) <= 1.0:
            raise ValueError(f"PolyakUpdate: tau must lie in (0, 1], got {tau}.")
        self.tau = float(tau)
        pairs = [(loss_module.target_critic, loss_module.critic)]
        if loss_module.target_actor is not None:
            pairs.append((loss_module.target_actor, loss_module.actor))
        self._targets = [t for tgt, _ in pairs for t in tgt.parameters()]
        self._online = [o for _, src in pairs for o in src.parameters()]

    @torch.no_grad()
    def step(self) -> None:
        """One soft update."""
        torch._foreach_lerp_(self._targets, self._online, self.tau)


class TD3Update:
    """One TD3 step on the recipe's buffer: ``update() -> metrics``, as :class:`~tabb_torchrl.pipeline.cql.CQLUpdate`.

    ``rb.sample()`` (source rows then target rows), the method's :meth:`~TD3Method.edit_batch`
    (its step counter tells it when to refresh model rows), a critic step; every
    ``policy_delay``-th step an actor step and the soft update of the targets. The metrics have
    same ``loss_*`` keys at every step (``loss_actor`` repeats the last actor loss between actor steps;
    the actor's other metrics come with actor steps only).

    Args:
        loss_module (TD3CrossDomainLoss): the loss.
        replay_buffer (ReplayBuffer): the source/target buffer.
        optimizers (mapping): ``{"actor": ..., "qvalue": ...}``.
        target_updater (PolyakUpdate): the soft update.

    Keyword Args:
        policy_delay (int): critic steps per actor step. Defaults to ``2``.
        step (int): steps already done (a resumed run continues the schedules). Defaults to ``0``.
        compile (bool): ``torch.compile`` the critic and actor losses. Defaults to ``False``.
        mode (str, optional): ``torch.compile`` mode.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl.data import make_source_target_buffer
        >>> loss = TD3CrossDomainLoss(make_td3_actor(3, 1, hidden_sizes=(8,)), EnsembleMLP(4, 1, (8,), 2), TD3Method())
        >>> def data(n):
        ...     return TensorDict({"observation": torch.randn(n, 3), "action": torch.rand(n, 1) * 2 - 1,
        ...         ("next", "observation"): torch.randn(n, 3), ("next", "reward"): torch.randn(n, 1),
        ...         ("next", "terminated"): torch.zeros(n, 1, dtype=torch.bool)}, [n])
        >>> rb = make_source_target_buffer(data(40), data(20), n_source=4, n_target=4, seed=0)
        >>> opts = {"actor": torch.optim.Adam(loss.actor.parameters()), "qvalue": torch.optim.Adam(loss.critic.parameters())}
        >>> update = TD3Update(loss, rb, opts, PolyakUpdate(loss), policy_delay=2)
        >>> float(update()["actor_updated"]), float(update()["actor_updated"]), update.step_count
        (0.0, 1.0, 2)
    """

    def __init__(self, loss_module: TD3CrossDomainLoss, replay_buffer, optimizers: Mapping[str, torch.optim.Optimizer],
                 target_updater: PolyakUpdate, *, policy_delay: int = 2, step: int = 0, compile: bool = False,
                 mode: str | None = None):
        if int(policy_delay) < 1:
            raise ValueError(f"TD3Update: policy_delay must be >= 1, got {policy_delay}.")
        self.loss_module = loss_module
        self.replay_buffer = replay_buffer
        self.actor_optimizer, self.critic_optimizer = optimizers["actor"], optimizers["qvalue"]
        self.target_updater = target_updater
        self.policy_delay = int(policy_delay)
        self.step_count = int(step)
        self._critic_loss = torch.compile(loss_module.critic_loss, mode=mode) if compile else loss_module.critic_loss
        self._actor_loss = torch.compile(loss_module.actor_loss, mode=mode) if compile else loss_module.actor_loss

    def step(self, batch: TD3Batch, update_actor: bool) -> dict[str, torch.Tensor]:
        """A critic step on ``batch``; with ``update_actor`` an actor step and the soft update."""
        critic_loss, metrics = self._critic_loss(batch)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        metrics = {"loss_qvalue": critic_loss.detach(), **{k: v.detach() for k, v in metrics.items()}}
        if update_actor:
            actor_loss, actor_metrics = self._actor_loss(batch)
            self.actor_optimizer.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_optimizer.step()
            self.target_updater.step()
            self.loss_module.last_actor_loss.copy_(actor_loss.detach())
            metrics.update({k: v.detach() for k, v in actor_metrics.items()})
        metrics["loss_actor"] = self.loss_module.last_actor_loss.clone()
        metrics["actor_updated"] = torch.tensor(float(update_actor))
        return metrics

    def __call__(self) -> dict[str, torch.Tensor]:
        """Sample, let the method edit the batch, run :meth:`step` and count it."""
        lm = self.loss_module
        batch = TD3Batch.from_tensordict(self.replay_buffer.sample(), lm.method.columns)
        batch, edit_metrics = lm.method.edit_batch(batch, step=self.step_count, policy=lm.policy)
        metrics = self.step(batch, update_actor=(self.step_count + 1) % self.policy_delay == 0)
        metrics.update({k: torch.as_tensor(v).detach() for k, v in edit_metrics.items()})
        self.step_count += 1
        return metrics


# ----------------------------------------------------------------------------- from the recipe's config
def td3_config(cfg: Any) -> dict:
    """``algo.td3`` merged over :data:`TD3_DEFAULTS`, checked (unknown keys, ranges, choices).

    Examples:
        >>> td3_config({"algo": {"td3": {"policy_delay": 1}}})["policy_delay"], td3_config({})["noise_clip"]
        (1, 0.5)
        >>> td3_config({"algo": {"td3": {"delay": 1}}})
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: algo.td3 has unknown keys ['delay']; valid: ['actor_q', 'noise_clip', 'normalize_q', 'policy_delay', 'policy_noise', 'q_coef', 'target_actor', 'td_coef']. Fix: remove them (recipes/config/algo/<algo>.yaml lists every key).
    """
    given = _get(cfg, "algo.td3") or {}
    given = dict(given.items()) if hasattr(given, "items") else {}
    unknown = sorted(set(given) - set(TD3_DEFAULTS))
    if unknown:
        raise ConfigError(f"algo.td3 has unknown keys {unknown}; valid: {sorted(TD3_DEFAULTS)}. "
                          "Fix: remove them (recipes/config/algo/<algo>.yaml lists every key).")
    out = {**TD3_DEFAULTS, **given}
    if out["actor_q"] not in ACTOR_QS:
        raise ConfigError(f"algo.td3.actor_q={out['actor_q']!r} is not one of {ACTOR_QS}. Fix: algo.td3.actor_q=first.")
    if not (isinstance(out["policy_delay"], int) and out["policy_delay"] >= 1):
        raise ConfigError(f"algo.td3.policy_delay={out['policy_delay']!r} must be an integer >= 1. "
                          "Fix: algo.td3.policy_delay=2.")
    for key in ("policy_noise", "noise_clip", "td_coef", "q_coef"):
        value = out[key]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"algo.td3.{key}={value!r} must be a number >= 0. Fix: algo.td3.{key}={TD3_DEFAULTS[key]}.")
    return out


def make_td3(cfg: Any, env_id: str, method_factory: Callable[[int, int, float], TD3Method], *,
             device: torch.device | str = "cpu"):
    """The TD3 backbone of an own-backbone algo from ``cfg``: actor, loss, soft update, optimisers.

    Networks: ``model.actor_hidden`` / ``model.qvalue_hidden`` / ``model.activation`` (the recipe's
    2×256 ReLU); the actor's box is the env's action space. Loss: ``algo.td3`` (:func:`td3_config`),
    ``loss.gamma``; soft update ``optim.target_update_tau``; Adam on the actor (``optim.lr_actor``)
    and the critics (``optim.lr_qvalue``), ``optim.weight_decay``. ``method_factory(obs_dim,
    action_dim, max_action)`` builds the method (``max_action``: the largest action bound).

    Returns:
        ``(actor, loss_module, target_updater, optimizers)``, ``optimizers = {"actor", "qvalue"}``.

    Examples:
        >>> cfg = {"model": {"actor_hidden": [8], "qvalue_hidden": [8], "activation": "relu"},
        ...        "loss": {"gamma": 0.99}, "optim": {"target_update_tau": 0.005, "lr_actor": 3e-4,
        ...        "lr_qvalue": 3e-4, "weight_decay": 0.0}, "algo": {"td3": {}}}
        >>> actor, loss, updater, opts = make_td3(cfg, "Hopper-v5", lambda o, a, m: TD3Method())
        >>> type(loss).__name__, sorted(opts), loss.critic.ensemble_size
        ('TD3CrossDomainLoss', ['actor', 'qvalue'], 2)
    """
    from tabb_torchrl.envs import env_spaces

    obs_dim, action_dim, low, high = env_spaces(env_id)
    low, high = torch.as_tensor(low), torch.as_tensor(high)
    c = td3_config(cfg)
    act = str(_get(cfg, "model.activation", "relu"))
    actor = make_td3_actor(obs_dim, action_dim, low, high, hidden_sizes=_get(cfg, "model.actor_hidden"),
                           activation=act)
    critic = EnsembleMLP(obs_dim + action_dim, 1, [int(h) for h in _get(cfg, "model.qvalue_hidden")], 2,
                         activation=act)
    max_action = float(torch.maximum(low.abs(), high.abs()).max())
    loss = TD3CrossDomainLoss(actor, critic, method_factory(obs_dim, action_dim, max_action), gamma=float(_get(cfg, "loss.gamma")),
                              policy_noise=float(c["policy_noise"]), noise_clip=float(c["noise_clip"]),
                              target_actor=bool(c["target_actor"]), actor_q=str(c["actor_q"]),
                              q_coef=float(c["q_coef"]), normalize_q=bool(c["normalize_q"]),
                              td_coef=float(c["td_coef"])).to(device)
    updater = PolyakUpdate(loss, tau=float(_get(cfg, "optim.target_update_tau")))
    wd = float(_get(cfg, "optim.weight_decay", 0.0))
    optimizers = {
        "actor": torch.optim.Adam(loss.actor.parameters(), lr=float(_get(cfg, "optim.lr_actor")), weight_decay=wd),
        "qvalue": torch.optim.Adam(loss.critic.parameters(), lr=float(_get(cfg, "optim.lr_qvalue")), weight_decay=wd),
    }
    return actor, loss, updater, optimizers


def make_td3_update(cfg: Any, loss_module: TD3CrossDomainLoss, replay_buffer, optimizers, target_updater, *,
                    step: int = 0) -> TD3Update:
    """:class:`TD3Update` with ``algo.td3.policy_delay`` and ``compile.*``.

    Examples:
        >>> make_td3_update({"algo": {"td3": {"policy_delay": 0}}}, None, None, {}, None)
        Traceback (most recent call last):
        ...
        tabb_torchrl.pipeline.config.ConfigError: algo.td3.policy_delay=0 must be an integer >= 1. Fix: algo.td3.policy_delay=2.
    """
    c = td3_config(cfg)
    return TD3Update(loss_module, replay_buffer, optimizers, target_updater, policy_delay=int(c["policy_delay"]),
                     step=step, compile=bool(_get(cfg, "compile.enabled", False)), mode=_get(cfg, "compile.mode"))
