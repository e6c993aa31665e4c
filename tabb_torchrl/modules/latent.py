"""The latent model of TABB: state encoder ``f``, state-action encoder ``g`` and target-domain
predictor ``h`` (Liu & Long, arXiv 2605.22376, Eq. 6), pre-trained and then frozen."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from tensordict import TensorDictBase
from torch import nn

from tabb_torchrl.modules._layers import _check_last_dim, _mlp

__all__ = ["AvgL1Norm", "StateEncoder", "StateActionEncoder", "TargetDomainPredictor", "ResidualPredictor",
           "PREDICTORS", "LatentModel", "Latents"]

#: ``model.predictor`` choices: the paper's MLP ``h`` or :class:`ResidualPredictor` (beyond the paper).
PREDICTORS = ("mlp", "residual")


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


class ResidualPredictor(nn.Module):
    r"""A predictor ``h`` that corrects a source transition's own outcome (beyond the paper; ``model.predictor=residual``).

    TABB's ``h`` predicts the target outcome of a source ``(s, a)`` from ``z_sa`` alone, so off the
    target data it extrapolates. This predictor writes the target dynamics as the source dynamics
    plus a shift,

    .. math::

        h_T(z_{sa}) = h_S(z_{sa}) + \Delta(z_{sa}),

    with ``h_S`` (:attr:`base`) trained on source rows and ``Delta`` (:attr:`shift`) on target rows
    (``LatentModelLoss``), and predicts a source row ``(s, a, r, s')`` as its **own** outcome
    moved by the shift (:meth:`on_transition`)::

        r_hat  = r     + Delta_r(z_sa)
        z_hat' = f(s') + Delta_z(z_sa)

    Where the shift is small (or unlearnt, off the target data) the prediction stays at the
    source's realised outcome instead of an extrapolation. The shift's output heads start at
    zero, so at initialisation ``r_hat = r`` and ``z_hat' = f(s')`` on source rows. (A predictor
    that read ``f(s')`` of the row itself as an input could not learn a shift: on every training
    row its target *is* that ``f(s')``.) Called on ``z_sa`` alone it returns ``h_T``, the
    prediction for target rows, with the signature of :class:`TargetDomainPredictor`.

    Args:
        latent_sa_dim (int): size of ``z_sa``.
        latent_state_dim (int): size of ``z_s``.

    Keyword Args:
        hidden_sizes, activation, termination_head: of both networks, see :class:`TargetDomainPredictor`.

    Examples:
        >>> import torch
        >>> from tabb_torchrl.modules.latent import ResidualPredictor
        >>> h = ResidualPredictor(6, 4, hidden_sizes=(8,))
        >>> z_sa, r, z_next = torch.randn(5, 6), torch.randn(5, 1), torch.randn(5, 4)
        >>> r_hat, z_hat = h.on_transition(z_sa, r, z_next)
        >>> bool((r_hat == r).all()), bool((z_hat == z_next).all())   # zero shift at initialisation
        (True, True)
        >>> torch.equal(h(z_sa)[1], h.base(z_sa)[1])   # h_T = h_S + 0
        True
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
        kw = dict(hidden_sizes=hidden_sizes, activation=activation, termination_head=termination_head)
        self.base = TargetDomainPredictor(latent_sa_dim, latent_state_dim, **kw)
        self.shift = TargetDomainPredictor(latent_sa_dim, latent_state_dim, **kw)
        for head in (self.shift.reward_head, self.shift.next_latent_head, self.shift.termination_head):
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

    @property
    def latent_sa_dim(self) -> int:
        """Size of ``z_sa``."""
        return self.base.latent_sa_dim

    @property
    def latent_state_dim(self) -> int:
        """Size of ``z_s``."""
        return self.base.latent_state_dim

    @property
    def has_termination_head(self) -> bool:
        """Whether the predictor also returns a termination logit."""
        return self.base.has_termination_head

    def components(self, latent_sa: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """``(h_S(z_sa), Delta(z_sa))``, each ``(r, z'[, term_logit])``."""
        return self.base(latent_sa), self.shift(latent_sa)

    def forward(self, latent_sa: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``h_T(z_sa) = h_S(z_sa) + Delta(z_sa)``: ``(r_hat, z_next_hat[, term_logit])`` of target rows."""
        base, shift = self.components(latent_sa)
        return tuple(b + d for b, d in zip(base, shift))

    def on_transition(self, latent_sa: torch.Tensor, reward: torch.Tensor,
                      next_latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A source row's target-domain prediction: ``(r + Delta_r, f(s') + Delta_z[, term_logit of h_T])``."""
        base, shift = self.components(latent_sa)
        out = (reward.reshape(shift[0].shape).to(shift[0].dtype) + shift[0], next_latent + shift[1])
        if len(shift) > 2:
            out = out + (base[2] + shift[2],)
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
        predictor: str = "mlp",
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
            predictor (str): ``"mlp"`` (the paper's ``h``, :class:`TargetDomainPredictor`) or
                ``"residual"`` (:class:`ResidualPredictor`, beyond the paper). Defaults to ``"mlp"``.

        Returns:
            LatentModel: a new, trainable model.

        Examples:
            >>> from tabb_torchrl import LatentModel
            >>> m = LatentModel.from_dims(3, 2, latent_dim=4, hidden_sizes=(8,))
            >>> m.encoder.latent_dim, m.sa_encoder.latent_dim
            (4, 4)
        """
        if predictor not in PREDICTORS:
            raise ValueError(f"Unknown predictor {predictor!r} (model.predictor); choose one of {PREDICTORS}.")
        latent_sa_dim = latent_dim if latent_sa_dim is None else latent_sa_dim
        kw = dict(hidden_sizes=hidden_sizes, activation=activation)
        head_cls = ResidualPredictor if predictor == "residual" else TargetDomainPredictor
        return cls(
            StateEncoder(obs_dim, latent_dim, avg_l1_norm=avg_l1_norm, **kw),
            StateActionEncoder(latent_dim, action_dim, latent_sa_dim, avg_l1_norm=avg_l1_norm, **kw),
            head_cls(latent_sa_dim, latent_dim, termination_head=termination_head, **kw),
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

    @property
    def residual(self) -> bool:
        """Whether ``h`` is a :class:`ResidualPredictor` (source rows predicted from their own ``r, s'``)."""
        return isinstance(self.predictor, ResidualPredictor)

    def predict_rows(self, tensordict: TensorDictBase, latent_sa: torch.Tensor,
                     next_latent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``h``'s prediction for each row of a batch: ``h(z_sa)``, or, with a
        :class:`ResidualPredictor`, its :meth:`~ResidualPredictor.on_transition` on source rows
        (``"domain"`` column ``0``; the reward is read from ``("next", "reward")``).

        Raises:
            KeyError: a residual predictor and no ``"domain"`` column.
        """
        if not self.residual:
            return self.predict(latent_sa)
        from tabb_torchrl.keys import SOURCE

        domain = tensordict.get("domain", None)
        if domain is None:
            raise KeyError(
                "The residual predictor (model.predictor=residual) predicts source rows from their own reward and "
                "next state: the batch needs a 'domain' column (0 source, 1 target) to tell them apart."
            )
        is_source = (domain.reshape(latent_sa.shape[0]) == SOURCE).unsqueeze(-1)
        target_pred = self.predict(latent_sa)
        source_pred = self.predictor.on_transition(latent_sa, self._get(tensordict, ("next", "reward")), next_latent)
        return tuple(torch.where(is_source, sp, tp) for sp, tp in zip(source_pred, target_pred))

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
            if next_z_s is None:
                next_z_s = self.encode_state(
                    self._get(tensordict, ("next", self.observation_key))
                )
            if r_hat is None or z_next_hat is None or need_term:
                pred = self.predict_rows(tensordict, z_sa, next_z_s)
                r_hat = pred[0] if r_hat is None else r_hat
                z_next_hat = pred[1] if z_next_hat is None else z_next_hat
                if need_term:
                    term_hat = torch.sigmoid(pred[2])
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
