"""The RL networks of the cross-domain core: critic ``Q``, value ``V`` and IQL's Gaussian actor
(Liu & Long, arXiv 2605.22376, Eqs. 8-10)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from torch import nn

from tabb_torchrl.modules._layers import _check_last_dim, _mlp

__all__ = ["make_latent_qvalue", "make_latent_value", "make_actor", "GaussianPolicyHead", "evaluate_value"]


class _CheckedMLP(nn.Module):
    """MLP that checks the size of its input (clear error for wrong latent sizes)."""

    def __init__(self, in_features, out_features, hidden_sizes, activation, owner, fix):
        super().__init__()
        self.in_features = int(in_features)
        self.net = _mlp(self.in_features, out_features, hidden_sizes, activation)
        self._owner = owner
        self._fix = fix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_last_dim(x, self.in_features, "inputs", self._owner, self._fix)
        return self.net(x)


def make_latent_qvalue(
    latent_sa_dim: int,
    *,
    hidden_sizes: Sequence[int] = (256, 256),
    activation: str = "relu",
    in_key="z_sa",
    out_key="state_action_value",
) -> TensorDictModule:
    """Latent critic ``Q(z_sa)`` of TABB (Liu & Long, arXiv 2605.22376, Eq. 8).

    One network; :class:`~tabb_torchrl.objectives.TABBLoss` turns it into a
    vmapped twin ensemble (``convert_to_functional(expand_dim=num_qvalue_nets)``).

    Args:
        latent_sa_dim (int): size of ``z_sa``.

    Keyword Args:
        hidden_sizes (sequence of int): Defaults to ``(256, 256)`` **[reconstructed]**.
        activation (str): Defaults to ``"relu"`` **[reconstructed]**.
        in_key (NestedKey): Defaults to ``"z_sa"``.
        out_key (NestedKey): Defaults to ``"state_action_value"``.

    Returns:
        TensorDictModule: ``in_key -> out_key`` (``[..., 1]``).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl import make_latent_qvalue
        >>> q = make_latent_qvalue(4, hidden_sizes=(8,))
        >>> q(TensorDict({"z_sa": torch.zeros(5, 4)}, [5]))["state_action_value"].shape
        torch.Size([5, 1])
    """
    net = _CheckedMLP(
        latent_sa_dim, 1, hidden_sizes, activation, "latent Q network",
        "Build it with latent_sa_dim equal to the StateActionEncoder's latent_dim.",
    )
    return TensorDictModule(net, in_keys=[in_key], out_keys=[out_key])


def make_latent_value(
    latent_state_dim: int,
    *,
    hidden_sizes: Sequence[int] = (256, 256),
    activation: str = "relu",
    in_key="z_s",
    out_key="state_value",
) -> TensorDictModule:
    """Latent value ``V(z_s)`` of TABB (Liu & Long, arXiv 2605.22376, Eqs. 5, 8, 9).

    Evaluated at encoded states ``f(s')`` and at predicted latents ``z_hat'``;
    also the TBM anchor ``V_anc`` of Eq. 5 by default.

    Args:
        latent_state_dim (int): size of ``z_s``.

    Keyword Args:
        hidden_sizes (sequence of int): Defaults to ``(256, 256)`` **[reconstructed]**.
        activation (str): Defaults to ``"relu"`` **[reconstructed]**.
        in_key (NestedKey): Defaults to ``"z_s"``.
        out_key (NestedKey): Defaults to ``"state_value"``.

    Returns:
        TensorDictModule: ``in_key -> out_key`` (``[..., 1]``).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl import make_latent_value
        >>> v = make_latent_value(4, hidden_sizes=(8,))
        >>> v(TensorDict({"z_s": torch.zeros(5, 4)}, [5]))["state_value"].shape
        torch.Size([5, 1])
    """
    net = _CheckedMLP(
        latent_state_dim, 1, hidden_sizes, activation, "latent value network",
        "Build it with latent_state_dim equal to the StateEncoder's latent_dim.",
    )
    return TensorDictModule(net, in_keys=[in_key], out_keys=[out_key])


class GaussianPolicyHead(nn.Module):
    """IQL's Gaussian policy head: ``loc = max_action * tanh(MLP(s))``, state-independent log-std.

    Built by :func:`make_actor`; the fast update reads its settings (``log_std_min``,
    ``log_std_max``, ``max_action``, ``tanh_mean``) to evaluate the same density on flat tensors.

    Examples:
        >>> import torch
        >>> head = GaussianPolicyHead(3, 2, (8,), "relu", 0.0, -5.0, 2.0, 1.0, True)
        >>> loc, scale = head(torch.zeros(4, 3))
        >>> loc.shape, bool((scale == 1).all())
        (torch.Size([4, 2]), True)
    """

    def __init__(self, obs_dim, action_dim, hidden_sizes, activation, log_std_init,
                 log_std_min, log_std_max, max_action, tanh_mean):
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.net = _mlp(self.obs_dim, action_dim, hidden_sizes, activation)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.max_action = max_action
        self.tanh_mean = tanh_mean

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_last_dim(
            observation, self.obs_dim, "observations", "actor",
            "Build the actor with obs_dim equal to the dataset's observation size.",
        )
        loc = self.net(observation)
        if self.tanh_mean:
            loc = torch.tanh(loc) * self.max_action
        scale = self.log_std.clamp(self.log_std_min, self.log_std_max).exp().expand_as(loc)
        return loc, scale


def make_actor(
    obs_dim: int,
    action_dim: int,
    *,
    hidden_sizes: Sequence[int] = (256, 256),
    activation: str = "relu",
    log_std_init: float = 0.0,
    log_std_min: float = -10.0,
    log_std_max: float = 2.0,
    max_action: float = 1.0,
    tanh_mean: bool = True,
    observation_key="observation",
    action_key="action",
):
    """Actor ``pi(a|s)`` of TABB / IQL (Liu & Long, arXiv 2605.22376, Eq. 10).

    IQL's Gaussian policy: ``N(max_action * tanh(MLP(s)), exp(log_std))`` with a
    state-independent, clamped log-std; Eq. 10 uses the log-probability of the
    dataset action. The deterministic mode (evaluation) is the mean.

    Args:
        obs_dim (int): observation size.
        action_dim (int): action size.

    Keyword Args:
        hidden_sizes (sequence of int): Defaults to ``(256, 256)`` **[reconstructed]**.
        activation (str): Defaults to ``"relu"``.
        log_std_init (float): initial log-std. Defaults to ``0.0`` (IQL).
        log_std_min (float): Defaults to ``-10.0`` (IQL).
        log_std_max (float): Defaults to ``2.0`` (IQL).
        max_action (float): action bound. Defaults to ``1.0``.
        tanh_mean (bool): squash the mean with tanh. Defaults to ``True`` (IQL).
        observation_key (NestedKey): Defaults to ``"observation"``.
        action_key (NestedKey): Defaults to ``"action"``.

    Returns:
        ProbabilisticActor: ``observation -> (loc, scale, action)``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.envs.utils import ExplorationType, set_exploration_type
        >>> from tabb_torchrl import make_actor
        >>> actor = make_actor(3, 2, hidden_sizes=(8,))
        >>> td = TensorDict({"observation": torch.zeros(5, 3)}, [5])
        >>> with set_exploration_type(ExplorationType.DETERMINISTIC):
        ...     a = actor(td)["action"]
        >>> bool((a == td["loc"]).all()), a.shape
        (True, torch.Size([5, 2]))
    """
    from tensordict.nn import InteractionType
    from torchrl.data import Bounded
    from torchrl.modules import ProbabilisticActor
    from torchrl.modules.distributions import IndependentNormal

    head = GaussianPolicyHead(
        obs_dim, action_dim, hidden_sizes, activation, log_std_init,
        log_std_min, log_std_max, max_action, tanh_mean,
    )
    module = TensorDictModule(head, in_keys=[observation_key], out_keys=["loc", "scale"])
    spec = Bounded(-max_action, max_action, shape=(action_dim,))
    return ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        out_keys=[action_key],
        spec=spec,
        distribution_class=IndependentNormal,
        distribution_kwargs={"tanh_loc": False},
        default_interaction_type=InteractionType.DETERMINISTIC,
    )


def evaluate_value(value_network: Callable, latent: torch.Tensor) -> torch.Tensor:
    """Evaluates a latent value network ``V`` on a latent tensor.

    Accepts a TensorDict module (reads its first in-key, returns its first
    out-key, as built by :func:`~tabb_torchrl.make_latent_value`) or any callable
    ``latent -> value``. Used for ``V(f(s'))`` and ``V(z_hat')`` of Eq. 5
    (Liu & Long, arXiv 2605.22376).

    Args:
        value_network (TensorDictModuleBase or callable): ``V``.
        latent (torch.Tensor): ``[N, d]`` latents.

    Returns:
        torch.Tensor: ``[N, 1]`` values.

    Examples:
        >>> import torch
        >>> from tabb_torchrl import make_latent_value
        >>> from tabb_torchrl.modules import evaluate_value
        >>> evaluate_value(make_latent_value(4, hidden_sizes=(8,)), torch.zeros(5, 4)).shape
        torch.Size([5, 1])
    """
    if isinstance(value_network, TensorDictModuleBase):
        td = TensorDict({value_network.in_keys[0]: latent}, batch_size=latent.shape[:-1])
        return value_network(td).get(value_network.out_keys[0])
    return value_network(latent)
