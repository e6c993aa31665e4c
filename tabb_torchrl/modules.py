"""Networks of TABB (Liu & Long, "Target-Aligned Bellman Backup for Cross-domain
Offline Reinforcement Learning", arXiv 2605.22376).

The latent model (state encoder ``f``, state-action encoder ``g`` and
target-domain predictor ``h``) is pre-trained with Eq. 6
(:class:`~tabb_torchrl.objectives.LatentModelLoss`) and then frozen; the RL
networks (twin critic ``Q`` on ``z_sa``, value ``V`` on ``z_s``, actor on the raw
observation) are trained with Eqs. 8-10 (:class:`~tabb_torchrl.objectives.TABBLoss`).

Every size is an argument. The defaults (MLPs of two hidden layers of 256 with
ReLU, ``z_s`` and ``z_sa`` of 128 dimensions, AvgL1Norm on the encoder outputs)
are **[reconstructed]**: the values of the paper's table 5 were lost in
extraction, see ``shared/method/TABB.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, NamedTuple

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from torch import nn

__all__ = [
    "AvgL1Norm",
    "StateEncoder",
    "StateActionEncoder",
    "TargetDomainPredictor",
    "LatentModel",
    "Latents",
    "make_latent_qvalue",
    "make_latent_value",
    "make_actor",
]

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "mish": nn.Mish,
    "silu": nn.SiLU,
}


def _activation_class(activation: str) -> type[nn.Module]:
    try:
        return _ACTIVATIONS[activation.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"Unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}."
        ) from None


def _mlp(
    in_features: int,
    out_features: int | None,
    hidden_sizes: Sequence[int],
    activation: str,
) -> nn.Sequential:
    """Linear/activation stack; ``out_features=None`` ends on the last hidden layer."""
    act = _activation_class(activation)
    layers: list[nn.Module] = []
    last = in_features
    for size in hidden_sizes:
        layers += [nn.Linear(last, int(size)), act()]
        last = int(size)
    if out_features is not None:
        layers.append(nn.Linear(last, out_features))
    return nn.Sequential(*layers)


def _check_last_dim(x: torch.Tensor, expected: int, what: str, owner: str, fix: str) -> None:
    if x.shape[-1] != expected:
        raise ValueError(
            f"{owner} expected {what} with last dimension {expected}, got a tensor of "
            f"shape {tuple(x.shape)}. {fix}"
        )


class AvgL1Norm(nn.Module):
    """AvgL1Norm of MR.Q (Fujimoto et al. 2025): ``x / mean(|x|)`` over the last dim.

    Used on the encoder outputs of TABB (Liu & Long, arXiv 2605.22376, Sec. 4,
    latent model of Eq. 6) so that the latent scale is fixed **[reconstructed]**.

    Keyword Args:
        eps (float): lower bound of the denominator. Defaults to ``1e-8`` (MR.Q).

    Examples:
        >>> import torch
        >>> from tabb_torchrl.modules import AvgL1Norm
        >>> AvgL1Norm()(torch.tensor([[1.0, -3.0]]))
        tensor([[ 0.5000, -1.5000]])
    """

    def __init__(self, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns ``x`` divided by the mean absolute value of its last dimension."""
        return x / x.abs().mean(-1, keepdim=True).clamp_min(self.eps)


class StateEncoder(nn.Module):
    """State encoder ``f: s -> z_s`` of TABB (Liu & Long, arXiv 2605.22376, Eq. 6).

    An MLP; its output passes through :class:`AvgL1Norm` by default
    **[reconstructed]**.

    Args:
        obs_dim (int): observation size.
        latent_dim (int): size of ``z_s``. Defaults to ``128`` **[reconstructed]**.

    Keyword Args:
        hidden_sizes (sequence of int): hidden layer sizes. Defaults to ``(256, 256)``
            **[reconstructed]**.
        activation (str): ``"relu"`` (default **[reconstructed]**), ``"elu"``,
            ``"tanh"``, ``"mish"`` or ``"silu"``.
        avg_l1_norm (bool): apply AvgL1Norm to the output. Defaults to ``True``
            **[reconstructed]**.

    Examples:
        >>> import torch
        >>> from tabb_torchrl import StateEncoder
        >>> f = StateEncoder(obs_dim=3, latent_dim=4, hidden_sizes=(8,))
        >>> f(torch.zeros(5, 3)).shape
        torch.Size([5, 4])
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 128,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        avg_l1_norm: bool = True,
    ) -> None:
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.latent_dim = int(latent_dim)
        self.net = _mlp(self.obs_dim, self.latent_dim, hidden_sizes, activation)
        self.norm = AvgL1Norm() if avg_l1_norm else nn.Identity()

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """Encodes observations ``[..., obs_dim]`` into ``z_s`` ``[..., latent_dim]``."""
        _check_last_dim(
            observation,
            self.obs_dim,
            "observations",
            "StateEncoder",
            "Build the encoder with obs_dim equal to the dataset's observation size.",
        )
        return self.norm(self.net(observation))


class StateActionEncoder(nn.Module):
    """State-action encoder ``g: (z_s, a) -> z_sa`` of TABB (arXiv 2605.22376, Eq. 6).

    An MLP on the concatenation ``[z_s, a]`` (as MR.Q), followed by
    :class:`AvgL1Norm` by default **[reconstructed]**.

    Args:
        latent_state_dim (int): size of ``z_s``.
        action_dim (int): action size.
        latent_dim (int): size of ``z_sa``. Defaults to ``128`` **[reconstructed]**.

    Keyword Args:
        hidden_sizes (sequence of int): Defaults to ``(256, 256)`` **[reconstructed]**.
        activation (str): Defaults to ``"relu"`` **[reconstructed]**.
        avg_l1_norm (bool): Defaults to ``True`` **[reconstructed]**.

    Examples:
        >>> import torch
        >>> from tabb_torchrl import StateActionEncoder
        >>> g = StateActionEncoder(latent_state_dim=4, action_dim=2, latent_dim=6, hidden_sizes=(8,))
        >>> g(torch.zeros(5, 4), torch.zeros(5, 2)).shape
        torch.Size([5, 6])
    """

    def __init__(
        self,
        latent_state_dim: int,
        action_dim: int,
        latent_dim: int = 128,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        avg_l1_norm: bool = True,
    ) -> None:
        super().__init__()
        self.latent_state_dim = int(latent_state_dim)
        self.action_dim = int(action_dim)
        self.latent_dim = int(latent_dim)
        self.net = _mlp(
            self.latent_state_dim + self.action_dim, self.latent_dim, hidden_sizes, activation
        )
        self.norm = AvgL1Norm() if avg_l1_norm else nn.Identity()

    def forward(self, latent_state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Encodes ``(z_s [..., ds], a [..., da])`` into ``z_sa [..., latent_dim]``."""
        _check_last_dim(
            latent_state,
            self.latent_state_dim,
            "state latents z_s",
            "StateActionEncoder",
            "Set latent_state_dim to the StateEncoder's latent_dim.",
        )
        _check_last_dim(
            action,
            self.action_dim,
            "actions",
            "StateActionEncoder",
            "Build the encoder with action_dim equal to the dataset's action size.",
        )
        return self.norm(self.net(torch.cat([latent_state, action], -1)))


class TargetDomainPredictor(nn.Module):
    """Target-domain predictor ``h: z_sa -> (r_hat, z_hat')`` of TABB (arXiv 2605.22376, Eq. 6).

    A shared MLP trunk with a reward head and a next-latent head (and, as an
    option, a termination head returning a logit, as MR.Q has; the paper has
    none). With ``hidden_sizes=()`` the heads are linear maps of ``z_sa``.

    Args:
        latent_sa_dim (int): size of ``z_sa``.
        latent_state_dim (int): size of ``z_s`` (and so of ``z_hat'``).

    Keyword Args:
        hidden_sizes (sequence of int): trunk sizes. Defaults to ``(256, 256)``
            **[reconstructed]**.
        activation (str): Defaults to ``"relu"`` **[reconstructed]**.
        termination_head (bool): add a termination-logit head. Defaults to ``False``.

    Examples:
        >>> import torch
        >>> from tabb_torchrl import TargetDomainPredictor
        >>> h = TargetDomainPredictor(latent_sa_dim=6, latent_state_dim=4, hidden_sizes=(8,))
        >>> r_hat, z_next_hat = h(torch.zeros(5, 6))
        >>> r_hat.shape, z_next_hat.shape
        (torch.Size([5, 1]), torch.Size([5, 4]))
    """

    def __init__(
        self,
        latent_sa_dim: int,
        latent_state_dim: int,
        *,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        termination_head: bool = False,
    ) -> None:
        super().__init__()
        self.latent_sa_dim = int(latent_sa_dim)
        self.latent_state_dim = int(latent_state_dim)
        self.trunk = _mlp(self.latent_sa_dim, None, hidden_sizes, activation)
        trunk_out = int(hidden_sizes[-1]) if len(hidden_sizes) else self.latent_sa_dim
        self.reward_head = nn.Linear(trunk_out, 1)
        self.next_latent_head = nn.Linear(trunk_out, self.latent_state_dim)
        self.termination_head = nn.Linear(trunk_out, 1) if termination_head else None

    @property
    def has_termination_head(self) -> bool:
        """Whether the predictor also returns a termination logit."""
        return self.termination_head is not None

    def forward(self, latent_sa: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Returns ``(r_hat [..., 1], z_next_hat [..., ds])`` (``+ (term_logit [..., 1],)``)."""
        _check_last_dim(
            latent_sa,
            self.latent_sa_dim,
            "state-action latents z_sa",
            "TargetDomainPredictor",
            "Set latent_sa_dim to the StateActionEncoder's latent_dim.",
        )
        hidden = self.trunk(latent_sa)
        out = (self.reward_head(hidden), self.next_latent_head(hidden))
        if self.termination_head is not None:
            out = out + (self.termination_head(hidden),)
        return out


class Latents(NamedTuple):
    """All latents of a batch of transitions, as used by Eqs. 5 and 8 of arXiv 2605.22376.

    Returned by :meth:`LatentModel.compute`: ``z_s = f(s)``, ``z_sa = g(z_s, a)``,
    ``next_z_s = f(s')``, ``(r_hat, z_next_hat) = h(z_sa)`` and the predicted
    termination probability ``terminated_hat`` (``None`` without a termination head).

    Examples:
        >>> import torch
        >>> from tabb_torchrl.modules import Latents
        >>> lat = Latents(*(torch.zeros(2, 1) for _ in range(5)), None)
        >>> lat.terminated_hat is None, lat.r_hat.shape
        (True, torch.Size([2, 1]))
    """

    z_s: torch.Tensor
    z_sa: torch.Tensor
    next_z_s: torch.Tensor
    r_hat: torch.Tensor
    z_next_hat: torch.Tensor
    terminated_hat: torch.Tensor | None


class LatentModel(nn.Module):
    """The latent model ``(f, g, h)`` of TABB (Liu & Long, arXiv 2605.22376, Eq. 6).

    Called on a TensorDict of transitions, it writes the cached-latent entries
    that are missing: ``"z_s" = f(s)``, ``"z_sa" = g(f(s), a)``,
    ``("next", "z_s") = f(s')``, ``"r_hat"`` and ``"z_next_hat"`` (``= h(z_sa)``),
    and ``"terminated_hat"`` (predicted termination probability) when the
    predictor has a termination head. After :meth:`freeze` it runs without
    gradient, so the latents of a dataset can be computed once with
    :meth:`cache_latents`.

    Args:
        encoder (StateEncoder): ``f``.
        sa_encoder (StateActionEncoder): ``g``.
        predictor (TargetDomainPredictor): ``h``.

    Keyword Args:
        observation_key (NestedKey): Defaults to ``"observation"``; the next
            observation is read from ``("next", observation_key)``.
        action_key (NestedKey): Defaults to ``"action"``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tabb_torchrl import LatentModel
        >>> model = LatentModel.from_dims(obs_dim=3, action_dim=2, latent_dim=4, hidden_sizes=(8,))
        >>> td = TensorDict({"observation": torch.randn(5, 3), "action": torch.rand(5, 2),
        ...                  ("next", "observation"): torch.randn(5, 3)}, [5])
        >>> _ = model.freeze()
        >>> td = model(td)
        >>> sorted(k if isinstance(k, str) else "/".join(k) for k in td.keys(True, True))
        ['action', 'next/observation', 'next/z_s', 'observation', 'r_hat', 'z_next_hat', 'z_s', 'z_sa']
    """

    #: Keys written by the model (``terminated_hat`` only with a termination head).
    LATENT_KEYS = ("z_s", "z_sa", ("next", "z_s"), "r_hat", "z_next_hat")
    TERMINATED_HAT_KEY = "terminated_hat"

    def __init__(
        self,
        encoder: StateEncoder,
        sa_encoder: StateActionEncoder,
        predictor: TargetDomainPredictor,
        *,
        observation_key="observation",
        action_key="action",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.sa_encoder = sa_encoder
        self.predictor = predictor
        self.observation_key = observation_key
        self.action_key = action_key
        self.frozen = False

    @classmethod
    def from_dims(
        cls,
        obs_dim: int,
        action_dim: int,
        *,
        latent_dim: int = 128,
        latent_sa_dim: int | None = None,
        hidden_sizes: Sequence[int] = (256, 256),
        activation: str = "relu",
        avg_l1_norm: bool = True,
        termination_head: bool = False,
    ) -> LatentModel:
        """Builds ``f``, ``g`` and ``h`` from sizes (defaults **[reconstructed]**, arXiv 2605.22376 Eq. 6).

        Args:
            obs_dim (int): observation size.
            action_dim (int): action size.

        Keyword Args:
            latent_dim (int): size of ``z_s``. Defaults to ``128``.
            latent_sa_dim (int, optional): size of ``z_sa``; defaults to ``latent_dim``.
            hidden_sizes (sequence of int): MLP sizes of all three. Defaults to ``(256, 256)``.
            activation (str): Defaults to ``"relu"``.
            avg_l1_norm (bool): AvgL1Norm on ``f`` and ``g`` outputs. Defaults to ``True``.
            termination_head (bool): termination head on ``h``. Defaults to ``False``.

        Returns:
            LatentModel: a new, trainable model.

        Examples:
            >>> from tabb_torchrl import LatentModel
            >>> m = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,))
            >>> m.encoder.latent_dim, m.sa_encoder.latent_dim
            (4, 4)
        """
        latent_sa_dim = latent_dim if latent_sa_dim is None else latent_sa_dim
        kw = dict(hidden_sizes=hidden_sizes, activation=activation)
        return cls(
            StateEncoder(obs_dim, latent_dim, avg_l1_norm=avg_l1_norm, **kw),
            StateActionEncoder(latent_dim, action_dim, latent_sa_dim, avg_l1_norm=avg_l1_norm, **kw),
            TargetDomainPredictor(latent_sa_dim, latent_dim, termination_head=termination_head, **kw),
        )

    @property
    def latent_state_dim(self) -> int:
        """Size of ``z_s``."""
        return self.encoder.latent_dim

    @property
    def latent_sa_dim(self) -> int:
        """Size of ``z_sa``."""
        return self.sa_encoder.latent_dim

    @property
    def out_keys(self) -> list:
        """Entries :meth:`forward` writes."""
        keys = list(self.LATENT_KEYS)
        if self.predictor.has_termination_head:
            keys.append(self.TERMINATED_HAT_KEY)
        return keys

    def encode_state(self, observation: torch.Tensor) -> torch.Tensor:
        """``z_s = f(s)``."""
        return self.encoder(observation)

    def encode_state_action(self, latent_state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``z_sa = g(z_s, a)``."""
        return self.sa_encoder(latent_state, action)

    def predict(self, latent_sa: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(r_hat, z_next_hat[, term_logit]) = h(z_sa)``."""
        return self.predictor(latent_sa)

    def freeze(self) -> LatentModel:
        """Freezes ``f``, ``g`` and ``h`` (no gradient, eval mode) for the RL phase; returns self."""
        self.requires_grad_(False)
        self.eval()
        self.frozen = True
        return self

    def unfreeze(self) -> LatentModel:
        """Makes the model trainable again; returns self."""
        self.requires_grad_(True)
        self.train()
        self.frozen = False
        return self

    def _get(self, tensordict: TensorDictBase, key):
        value = tensordict.get(key, None)
        if value is None:
            raise KeyError(
                f"LatentModel needs the entry {key!r} in the batch; it is missing. "
                "Pass observation_key=/action_key= to LatentModel if your data names it otherwise."
            )
        return value

    def compute(self, tensordict: TensorDictBase) -> Latents:
        """Computes every latent of a batch, reusing the cached entries present.

        Runs without gradient when the model is frozen.

        Args:
            tensordict (TensorDictBase): transitions with the observation, action
                and next observation (or their cached latents).

        Returns:
            Latents: ``(z_s, z_sa, next_z_s, r_hat, z_next_hat, terminated_hat)``;
            ``terminated_hat`` is ``None`` without a termination head.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import LatentModel
            >>> m = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,)).freeze()
            >>> td = TensorDict({"observation": torch.randn(5, 3), "action": torch.rand(5, 2),
            ...                  ("next", "observation"): torch.randn(5, 3)}, [5])
            >>> m.compute(td).z_next_hat.shape
            torch.Size([5, 4])
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            z_s = tensordict.get("z_s", None)
            z_sa = tensordict.get("z_sa", None)
            r_hat = tensordict.get("r_hat", None)
            z_next_hat = tensordict.get("z_next_hat", None)
            term_hat = tensordict.get(self.TERMINATED_HAT_KEY, None)
            next_z_s = tensordict.get(("next", "z_s"), None)
            need_term = self.predictor.has_termination_head and term_hat is None
            if z_sa is None or (z_s is None):
                if z_s is None:
                    z_s = self.encode_state(self._get(tensordict, self.observation_key))
                if z_sa is None:
                    z_sa = self.encode_state_action(z_s, self._get(tensordict, self.action_key))
            if r_hat is None or z_next_hat is None or need_term:
                pred = self.predict(z_sa)
                r_hat = pred[0] if r_hat is None else r_hat
                z_next_hat = pred[1] if z_next_hat is None else z_next_hat
                if need_term:
                    term_hat = torch.sigmoid(pred[2])
            if next_z_s is None:
                next_z_s = self.encode_state(
                    self._get(tensordict, ("next", self.observation_key))
                )
        return Latents(z_s, z_sa, next_z_s, r_hat, z_next_hat, term_hat)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Writes the missing cached-latent entries into ``tensordict`` and returns it."""
        lat = self.compute(tensordict)
        tensordict.set("z_s", lat.z_s)
        tensordict.set("z_sa", lat.z_sa)
        tensordict.set(("next", "z_s"), lat.next_z_s)
        tensordict.set("r_hat", lat.r_hat)
        tensordict.set("z_next_hat", lat.z_next_hat)
        if lat.terminated_hat is not None:
            tensordict.set(self.TERMINATED_HAT_KEY, lat.terminated_hat)
        return tensordict

    @torch.no_grad()
    def cache_latents(
        self, tensordict: TensorDictBase, *, batch_size: int = 65536, overwrite: bool = True
    ) -> TensorDictBase:
        """Computes the latents of a whole dataset in chunks and writes them in place.

        The model must be frozen first (the latents are constants of the RL
        phase, arXiv 2605.22376 Sec. 4).

        Args:
            tensordict (TensorDictBase): a flat dataset ``[N]`` of transitions.

        Keyword Args:
            batch_size (int): rows per chunk. Defaults to ``65536``.
            overwrite (bool): recompute entries already present. Defaults to ``True``.

        Returns:
            TensorDictBase: ``tensordict``, with the latent entries set.

        Examples:
            >>> import torch
            >>> from tensordict import TensorDict
            >>> from tabb_torchrl import LatentModel
            >>> m = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,)).freeze()
            >>> data = TensorDict({"observation": torch.randn(10, 3), "action": torch.rand(10, 2),
            ...                    ("next", "observation"): torch.randn(10, 3)}, [10])
            >>> m.cache_latents(data, batch_size=4)["z_sa"].shape
            torch.Size([10, 4])
        """
        if not self.frozen:
            raise RuntimeError(
                "cache_latents() needs a frozen model: call latent_model.freeze() first "
                "(cached latents would go stale if f, g or h kept training)."
            )
        if tensordict.ndim != 1:
            raise ValueError(
                f"cache_latents() expects a flat dataset with batch_size [N], got {tensordict.batch_size}."
            )
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        base = tensordict if not overwrite else tensordict.exclude(*self.out_keys)
        n = tensordict.shape[0]
        outs = None
        for start in range(0, n, batch_size):
            chunk = base[start : start + batch_size]
            lat = self.compute(chunk)
            values = dict(zip(self.out_keys, (lat.z_s, lat.z_sa, lat.next_z_s, lat.r_hat, lat.z_next_hat, lat.terminated_hat)))
            if outs is None:
                outs = {
                    k: torch.empty((n, *v.shape[1:]), dtype=v.dtype, device=v.device)
                    for k, v in values.items()
                }
            for k, v in values.items():
                outs[k][start : start + v.shape[0]] = v
        for k, v in (outs or {}).items():
            tensordict.set(k, v)
        return tensordict


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
