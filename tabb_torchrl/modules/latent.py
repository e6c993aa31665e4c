"""The latent model of TABB: state encoder ``f``, state-action encoder ``g`` and target-domain
predictor ``h`` (Liu & Long, arXiv 2605.22376, Eq. 6), pre-trained and then frozen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from tensordict import TensorDictBase
from torch import nn

from tabb_torchrl.modules._layers import _check_last_dim, _mlp

__all__ = ["AvgL1Norm", "StateEncoder", "StateActionEncoder", "TargetDomainPredictor", "LatentModel", "Latents"]


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
